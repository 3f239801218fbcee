r"""Regenerates the paper's figures and the NSGD table from run directories (PNG and PDF).

  python experiments/figures.py --figure=noise_grid --runs='runs/grid_cpu/*'
  python experiments/figures.py --figure=nsgd --runs=runs/nsgd_cpu,runs/nsgd_baselines_cpu
  python experiments/figures.py --figure=edge_of_stability \
      --runs=runs/eos_cpu,runs/grid_cpu/optimizer.learning_rate=0.03,batch_size=128,seed=0
  python experiments/figures.py --figure=all --runs_root=runs/

``--runs`` takes run directories, globs and sweep directories (meaning their runs), separated
by commas; a run directory whose name has commas (as sweep.py names them) is found whole. The
figures go to ``--out`` (default ``runs/figures``; ``make figures`` writes the committed gallery
with ``--out=figures``). Figures:
general_shape, noise_grid, step_loss_change, cross_sections, alignment, rescaling, nsgd (also
the K ablation when K varies, and nsgd_table.md/.tex), edge_of_stability, spectral_density
(see ``sharp_dirs.report.figures``). ``all`` draws every figure from every group of runs under
``--runs_root`` that has what it needs; a group is a sweep directory or a single run, and its
name is appended to the figure's (``noise_grid_grid_cpu.png``).
"""

import glob
import os
import sys

from absl import app
from absl import flags
from absl import logging

from sharp_dirs.engine import metrics_io
from sharp_dirs.report import figures

_FIGURE = flags.DEFINE_enum("figure", None, list(figures.FIGURES) + ["all"], "Which figure.")
_RUNS = flags.DEFINE_list("runs", [], "Run directories, globs or sweep directories.")
_RUNS_ROOT = flags.DEFINE_string("runs_root", None, "With --figure=all: where the runs are.")
_OUT = flags.DEFINE_string("out", "runs/figures", "Output directory (make figures: figures).")
_VAL_EPOCH = flags.DEFINE_float("val_epoch", None, "NSGD table: the epoch of the validation "
                                "accuracy column (default min(50, the last epoch)).")
flags.mark_flag_as_required("figure")


def _is_run(path: str) -> bool:
  return os.path.isfile(os.path.join(path, metrics_io.METRICS))


def rejoin(pieces: list[str]) -> list[str]:
  """--runs split at every comma, put back together where a piece alone names nothing: sweep.py
  names a run ``a=1,b=2``, so ``["runs/x/a=1", "b=2"]`` -> ``["runs/x/a=1,b=2"]``."""
  out, i = [], 0
  while i < len(pieces):
    j = i + 1
    while (j < len(pieces) and not glob.glob(os.path.expanduser(",".join(pieces[i:j])))
           and glob.glob(os.path.expanduser(",".join(pieces[i:j + 1])) + "*")):
      j += 1
    out.append(",".join(pieces[i:j]))
    i = j
  return out


def find_runs(patterns: list[str]) -> list[str]:
  """Run directories named by ``patterns`` (paths, globs, or sweep directories; pieces of a
  name with commas are rejoined, ``rejoin``)."""
  found = []
  for pattern in rejoin(patterns):
    matches = sorted(glob.glob(os.path.expanduser(pattern)))
    if not matches:
      raise app.UsageError(f"--runs: nothing matches {pattern!r}")
    for path in matches:
      if _is_run(path):
        found.append(path)
      elif os.path.isdir(path) and any(_is_run(os.path.join(path, c)) for c in os.listdir(path)):
        found += sorted(os.path.join(path, c) for c in os.listdir(path)
                        if _is_run(os.path.join(path, c)))
      elif len(matches) == 1:
        raise app.UsageError(f"--runs: {path!r} is neither a run directory (no "
                             f"{metrics_io.METRICS}) nor a directory of runs")
  return list(dict.fromkeys(found))


def find_groups(root: str) -> dict[str, list[str]]:
  """{group name: run directories} under ``root``: the runs of a sweep directory form a group,
  a run directly under ``root`` its own."""
  groups = {}
  for path, dirs, _ in os.walk(root):
    if _is_run(path):
      dirs[:] = []  # no runs inside runs
      parent = os.path.dirname(os.path.normpath(path))
      anchor = path if os.path.normpath(parent) == os.path.normpath(root) else parent
      groups.setdefault(os.path.relpath(anchor, root), []).append(path)
    else:
      dirs.sort()
  return groups


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _FIGURE.value != "all":
    if not _RUNS.value:
      raise app.UsageError(f"--figure={_FIGURE.value} needs --runs")
    runs = [metrics_io.read_run(d) for d in find_runs(_RUNS.value)]
    try:
      paths = figures.render(_FIGURE.value, runs, _OUT.value, val_epoch=_VAL_EPOCH.value)
    except ValueError as e:
      sys.exit(f"Cannot draw {_FIGURE.value}: {e}")
    print("\n".join(paths))
    return
  if not _RUNS_ROOT.value:
    raise app.UsageError("--figure=all needs --runs_root")
  groups = {name: [metrics_io.read_run(d) for d in dirs]
            for name, dirs in find_groups(_RUNS_ROOT.value).items()}
  if not groups:
    sys.exit(f"No run directories under {_RUNS_ROOT.value!r}.")
  for name, spec in figures.FIGURES.items():
    for group, runs in groups.items():
      selected = spec.select(runs)
      if not selected:
        continue
      try:
        paths = figures.render(name, selected, _OUT.value,
                               stem=f"{name}_{figures.safe_name(group)}",
                               val_epoch=_VAL_EPOCH.value)
      except ValueError as e:
        logging.warning("Skipping %s for %s: %s", name, group, e)
        continue
      print("\n".join(paths))


if __name__ == "__main__":
  app.run(main)
