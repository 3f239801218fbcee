r"""Runs shrunk configs and compares their metrics row by row with another checkout's.

  python bench/compare_runs.py --out /tmp/new                  # runs here, writes run dirs
  (cd OTHER_CHECKOUT && python /path/to/bench/compare_runs.py --out /tmp/old)
  python bench/compare_runs.py --compare /tmp/old /tmp/new     # the largest differences

The cases are the cpu configs of the NSGD and noise-grid families shrunk as the tests shrink
them (tests/test_train.py ``shrink``): a refactor of the engine that changes no number gives
the same rows, key by key, within float32 rounding. ``--compare`` prints, for each case, the
largest relative difference of any logged value and the key and step where it is, and exits 1
when a row or key is missing on one side.
"""

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {  # name: (config module, variant, overrides)
    "nsgd": ("nsgd", "cpu", {"plateau.patience": 1}),
    "noise_grid": ("noise_grid", "cpu", {"optimizer.learning_rate": 0.1, "seed": 1}),
    "edge_of_stability": ("edge_of_stability", "cpu", {}),
}
IGNORED = ("seconds", "time")


def run_cases(out: str) -> None:
  sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
  from test_train import load_config, shrink  # pylint: disable=import-outside-toplevel
  from sharp_dirs.engine import train  # pylint: disable=import-outside-toplevel
  for name, (module, variant, overrides) in CASES.items():
    _, c = load_config(module, variant)
    c = shrink(c, epochs=3)
    for dotted, value in overrides.items():
      *parents, last = dotted.split(".")
      node = c
      for p in parents:
        node = node[p]
      node[last] = value
    print(f"{name}: running", flush=True)
    status = train.train_and_evaluate(c, os.path.join(out, name))
    print(f"{name}: {status['status']} at step {status['step']}", flush=True)


def read_rows(path: str) -> list:
  with open(os.path.join(path, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def compare(a: str, b: str) -> int:
  bad = 0
  for name in CASES:
    rows_a, rows_b = read_rows(os.path.join(a, name)), read_rows(os.path.join(b, name))
    if len(rows_a) != len(rows_b):
      print(f"{name}: {len(rows_a)} rows vs {len(rows_b)}")
      bad = 1
      continue
    worst = (0.0, None, None)
    for ra, rb in zip(rows_a, rows_b):
      keys_a = {k for k in ra if not any(i in k for i in IGNORED)}
      keys_b = {k for k in rb if not any(i in k for i in IGNORED)}
      if keys_a != keys_b:
        print(f"{name}: step {ra.get('step')}: keys differ: {sorted(keys_a ^ keys_b)}")
        bad = 1
      for k in keys_a & keys_b:
        x, y = ra[k], rb[k]
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
          continue
        if np.isnan(x) and np.isnan(y):
          continue
        rel = abs(x - y) / max(abs(x), abs(y), 1e-30)
        if rel > worst[0]:
          worst = (rel, k, ra.get("step"))
    print(f"{name}: {len(rows_a)} rows; largest relative difference {worst[0]:.2e}"
          + (f" ({worst[1]} at step {worst[2]})" if worst[1] else ""))
  return bad


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="write the cases' run directories here")
  parser.add_argument("--compare", nargs=2, metavar=("A", "B"))
  args = parser.parse_args()
  if args.compare:
    sys.exit(compare(*args.compare))
  run_cases(args.out)


if __name__ == "__main__":
  main()
