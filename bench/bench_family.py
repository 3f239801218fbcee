r"""A family's sweep in one process: its compilations, their seconds, and its wall time.

  python bench/bench_family.py --config=configs/nsgd.py:cpu --epochs 2 \
      --sweep nsgd.gamma=0.01,0.1,1.0,5.0 --sweep seed=0,1 --out /tmp/family_new.json
  (cd OLD_CHECKOUT && PYTHONPATH=. python /path/to/bench/bench_family.py ... --out old.json)

Runs every point of the grid one after another in this process, as experiments/sweep.py does,
with a fresh (empty) persistent compilation cache, and counts jax's traces and XLA compiles
with its own ``jax.monitoring`` listener (so it measures any checkout of the engine, before or
after runs of a family shared their programs). Prints a progress line per run and writes
{"runs": [{"name", "seconds", "traces", "compiles", "compile_seconds", "trace_seconds"}],
"total": {...}} to --out.
"""

import argparse
import itertools
import json
import logging
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACE = "/jax/core/compile/jaxpr_trace_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"


def parse_axes(specs):
  axes = []
  for spec in specs:
    field, _, values = spec.partition("=")
    axes.append([(field, eval(v)) for v in values.split(",")])  # pylint: disable=eval-used
  return [dict(c) for c in itertools.product(*axes)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/nsgd.py:cpu")
  parser.add_argument("--sweep", action="append", default=[], help="field=v1,v2 (repeatable)")
  parser.add_argument("--epochs", type=int, default=0, help="num_epochs of every run (0: the "
                      "config's)")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()

  logging.basicConfig(level=logging.WARNING, format="%(message)s")
  logging.getLogger("sharp_dirs").setLevel(logging.INFO)  # a run's progress lines (every 30 s)
  cache = tempfile.mkdtemp(prefix="bench_family_cache_")
  import jax  # pylint: disable=import-outside-toplevel
  import sharp_dirs  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import sweep  # pylint: disable=import-outside-toplevel
  from sharp_dirs.engine import train  # pylint: disable=import-outside-toplevel

  counts = {"traces": 0, "compiles": 0, "compile_seconds": 0.0, "trace_seconds": 0.0}

  def listener(event, seconds, **kwargs):
    del kwargs
    if event == TRACE:
      counts["traces"] += 1
      counts["trace_seconds"] += seconds
    elif event == COMPILE:
      counts["compiles"] += 1
      counts["compile_seconds"] += seconds
  jax.monitoring.register_event_duration_secs_listener(listener)

  path, _, variant = args.config.partition(":")
  module = sweep.load_module(path)
  base = module.get_config(variant or None)
  if args.epochs:
    base.num_epochs = args.epochs
  grid = parse_axes(args.sweep) if args.sweep else module.get_sweep(variant or None)
  runs = sweep.build_configs(base, grid)
  workdir = tempfile.mkdtemp(prefix="bench_family_runs_")
  rows, started = [], time.perf_counter()
  for i, (overrides, config) in enumerate(runs):
    before, start = dict(counts), time.perf_counter()
    status = train.train_and_evaluate(config, os.path.join(workdir, sweep.run_name(overrides)))
    row = {"name": sweep.run_name(overrides), "status": status["status"],
           "seconds": time.perf_counter() - start,
           **{k: counts[k] - before[k] for k in counts}}
    rows.append(row)
    elapsed = time.perf_counter() - started
    print(f"run {i + 1}/{len(runs)} {row['name']}: {row['seconds']:.1f} s, {row['traces']} "
          f"traces, {row['compiles']} compiles ({row['compile_seconds']:.1f} s); "
          f"{elapsed / 60:.1f} min in, about {elapsed / (i + 1) * (len(runs) - i - 1) / 60:.1f}"
          " min left", flush=True)
  total = {"seconds": time.perf_counter() - started, **counts, "runs": len(rows)}
  print(json.dumps(total), flush=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump({"config": args.config, "sweep": args.sweep, "epochs": args.epochs,
               "runs": rows, "total": total}, f, indent=1)


if __name__ == "__main__":
  main()
