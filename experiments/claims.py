r"""The claims report: each claim of the paper judged from run directories, verdicts that can fail.

  python experiments/claims.py --runs=runs/cpu --out=figures     # after `make figures`

``--runs`` is a directory with one sub-directory of runs per family (noise_grid,
sharp_analysis, nsgd, rescaling, edge_of_stability), as `make figures` writes them; a family
that is missing makes its claims inconclusive. Writes ``claims.md`` and ``claims.json`` to
``--out`` and prints the Markdown. The statistics, thresholds and verdict rules are in
``sharp_dirs/report/claims.py``.
"""

import os
import sys

from absl import app
from absl import flags

from sharp_dirs.engine import metrics_io
from sharp_dirs.report import claims

_RUNS = flags.DEFINE_string("runs", "runs/cpu", "Directory of the families' run directories.")
_OUT = flags.DEFINE_string("out", "figures", "Where claims.md and claims.json go.")


DONE = ("finished", "early_stopped", "diverged")


def read_family(path: str) -> tuple[list, list]:
  """(the ended runs directly under ``path``, the names of those still unfinished)."""
  if not os.path.isdir(path):
    return [], []
  dirs = sorted(os.path.join(path, d) for d in os.listdir(path))
  runs = [metrics_io.read_run(d) for d in dirs
          if os.path.isfile(os.path.join(d, metrics_io.METRICS))]
  return ([r for r in runs if r.status.get("status") in DONE],
          [r.name for r in runs if r.status.get("status") not in DONE])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not os.path.isdir(_RUNS.value):
    sys.exit(f"--runs={_RUNS.value!r} is not a directory: run `make figures` first (it writes "
             "runs/cpu/<family>/...).")
  families, unfinished = {}, []
  for family in dict.fromkeys(f for _, f, _ in claims.FAMILIES):
    families[family], waiting = read_family(os.path.join(_RUNS.value, family))
    unfinished += [f"{family}/{name}" for name in waiting]
  verdicts = claims.report(families)
  note = (f"Not judged, unfinished: {', '.join(unfinished)}.\n\n" if unfinished else "")
  os.makedirs(_OUT.value, exist_ok=True)
  text = (f"# Claims report\n\nFrom the runs under `{_RUNS.value}` "
          f"(`python experiments/claims.py --runs={_RUNS.value}`). Verdict rules and thresholds: "
          "`sharp_dirs/report/claims.py`.\n\n" + note + claims.to_markdown(verdicts))
  with open(os.path.join(_OUT.value, "claims.md"), "w", encoding="utf-8") as f:
    f.write(text)
  with open(os.path.join(_OUT.value, "claims.json"), "w", encoding="utf-8") as f:
    f.write(claims.to_json(verdicts))
  print(text)


if __name__ == "__main__":
  app.run(main)
