r"""Runs a grid of one config: every combination of the sweep axes, one run after another.

  python experiments/sweep.py --config=configs/noise_grid.py:cpu --workdir=runs/grid_cpu
  python experiments/sweep.py --config=configs/nsgd.py:cpu --workdir=runs/nsgd_cpu \
      --sweep=nsgd.gamma=1,0.1,0.01 --sweep=seed=0,1,2
  python experiments/sweep.py --config=configs/nsgd.py --workdir=runs/nsgd \
      --sweep=nsgd.gamma=1,0.1,0.01 --print_only     # one train.py command per run (cluster)
  python experiments/sweep.py --config=configs/rescaling.py:cpu --workdir=runs/rescaling \
      --config.init_from=runs/grid_cpu/optimizer.learning_rate=0.01   # the same for every run

``--config.a.b=value`` overrides a field of every run, as in experiments/train.py (ml_collections'
``config_flags``); ``--sweep=field=v1,v2,...`` is one axis of the grid (repeat it for a
cartesian product; values are Python literals, anything else a string). Without ``--sweep`` the
config module's ``get_sweep(variant)`` gives the grid (the paper's). Each run writes
``<workdir>/<field=value,...>`` (the axes only, as given); finished runs are skipped, killed ones
resume. Every run's config is built and validated before the first run starts (a bad field,
value or type is one line); a run that cannot run (its directory locked by another process,
made with another config, damaged beyond repair) is reported in one line and the sweep goes on
to the next; the exit status is 1 when any run failed.
"""

import ast
import copy
import importlib.util
import itertools
import json
import logging as pylogging
import os
import shlex
import sys
import time
import traceback

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from sharp_dirs.engine import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, configs/<name>.py[:variant]; --config.a.b=value overrides a "
    "field of every run.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs.")
_SWEEP = flags.DEFINE_multi_string(
    "sweep", [], "field=v1,v2,... (repeat the flag for a cartesian product).")
_PRINT_ONLY = flags.DEFINE_bool("print_only", False, "Print one command per run, run nothing.")
_ALLOW_CHANGES = flags.DEFINE_bool(
    "allow_changes", False, "Resumed runs may take the changes of "
    "sharp_dirs.engine.rundir.RESUMABLE_CHANGES (e.g. more epochs).")
flags.mark_flags_as_required(["config", "workdir"])


def _value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


class SweepError(ValueError):
  """A bad --sweep axis or grid: the message names the field."""


def parse_sweep(specs: list[str]) -> list[dict]:
  """['a=1,2', 'b=x'] -> [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]."""
  axes = []
  for spec in specs:
    field, sep, values = spec.partition("=")
    if not sep or not values or not field.strip():
      raise SweepError(f"--sweep={spec!r}: expected field=value1,value2,...")
    axes.append([(field.strip(), _value(v.strip())) for v in values.split(",")])
  return [dict(combo) for combo in itertools.product(*axes)] if axes else []


def load_module(path: str):
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def default_grid(config_file: str) -> list[dict]:
  """The grid of ``get_sweep(variant)`` in the config module of ``path[:variant]``."""
  path, _, variant = config_file.partition(":")
  module = load_module(path)
  if not hasattr(module, "get_sweep"):
    raise SweepError(f"{path} has no get_sweep(): pass --sweep=field=v1,v2,...")
  return module.get_sweep(variant or None)


def run_name(overrides: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"


def set_field(config, dotted: str, value) -> None:
  """config.<dotted> = value, or SweepError naming the field (unknown field, wrong type)."""
  *parents, last = dotted.split(".")
  node = config
  for p in parents:
    if not hasattr(node, "keys") or p not in node:
      raise SweepError(f"{dotted!r} is not a config field (sharp_dirs/engine/config.py lists them).")
    node = node[p]
  if not hasattr(node, "keys") or last not in node:
    raise SweepError(f"{dotted!r} is not a config field (sharp_dirs/engine/config.py lists them).")
  try:
    node[last] = value
  except (TypeError, ValueError) as e:
    raise SweepError(f"config.{dotted} = {value!r}: {str(e).splitlines()[0]} (the field holds "
                     f"{type(node[last]).__name__} values)") from None


def build_configs(base, grid: list[dict]) -> list:
  """[(overrides, config)]: a copy of ``base`` per point of the grid, with the point's fields
  set, every config validated: SweepError (one line) before any run starts."""
  from sharp_dirs.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  out = []
  for overrides in grid:
    config = copy.deepcopy(base)
    for k, v in overrides.items():
      set_field(config, k, v)
    try:
      config_lib.validate(config)
    except config_lib.ConfigError as e:
      raise SweepError(f"run {run_name(overrides)}: {e}") from None
    out.append((overrides, config))
  return out


def train_commands(config_file: str, workdir: str, fixed: dict, grid: list[dict]) -> list[str]:
  """One experiments/train.py command line per run: the --config.a.b overrides, then the axes."""
  train_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
  lines = []
  for overrides in grid:
    args = [sys.executable, train_py, f"--config={config_file}",
            f"--workdir={os.path.join(workdir, run_name(overrides))}"]
    args += [f"--config.{k}={v}" for k, v in {**fixed, **overrides}.items()]
    lines.append(" ".join(shlex.quote(a) for a in args))
  return lines


def run_grid(runs: list, workdir: str, *, allow_changes: bool = False) -> list[str]:
  """Trains each (overrides, config) of ``runs`` in ``<workdir>/<run name>``, one after the
  other; returns one line per run that could not run (the others go on)."""
  from sharp_dirs.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  from sharp_dirs.engine import rundir  # pylint: disable=g-import-not-at-top
  from sharp_dirs.engine import train  # pylint: disable=g-import-not-at-top
  failures, started, trained = [], time.perf_counter(), 0
  for i, (overrides, config) in enumerate(runs):
    run_dir = os.path.join(workdir, run_name(overrides))
    status_path = os.path.join(run_dir, "status.json")
    if os.path.exists(status_path):
      try:
        with open(status_path, encoding="utf-8") as f:
          done = json.load(f).get("status") in ("finished", "early_stopped", "diverged")
      except ValueError:
        done = False  # a damaged status.json: the run resumes and writes it again
      if done and not rundir.config_differences(config, run_dir):
        print(f"{run_dir}: done already, skipped.", flush=True)
        continue
    elapsed = time.perf_counter() - started
    left = (f", about {elapsed / trained * (len(runs) - i) / 60:.1f} min left" if trained
            else "")
    print(f"Run {i + 1} of {len(runs)} ({elapsed / 60:.1f} min in{left}): {run_dir}", flush=True)
    trained += 1
    try:
      status = train.train_and_evaluate(config, run_dir, allow_changes=allow_changes)
    except (config_lib.ConfigError, rundir.RunDirError) as e:
      failures.append(f"{run_dir}: {e}")
      print(f"Cannot run {run_dir}: {e}", file=sys.stderr, flush=True)
      continue
    except Exception as e:  # pylint: disable=broad-except  (a bug: shown whole, then go on)
      traceback.print_exc()
      failures.append(f"{run_dir}: {type(e).__name__}: {e}")
      continue
    print(json.dumps({"workdir": run_dir, "status": status["status"], "step": status["step"]}),
          flush=True)
  return failures


def parse_flags(argv: list) -> list:
  """cli.parse_flags, with the fix for the ``--set`` flag this script used to take."""
  for arg in argv[1:]:
    if arg.startswith("--set=") or arg == "--set":
      field = arg.partition("=")[2] or "a.b=value"
      sys.exit(f"Bad flag: {arg}: --set is gone; write --config.{field} (as train.py).")
  return cli.parse_flags(argv)


def main(argv):
  if len(argv) > 1:
    sys.exit(f"Unexpected arguments: {argv[1:]}")
  config_file = config_flags.get_config_filename(flags.FLAGS["config"])
  fixed = dict(config_flags.get_override_values(flags.FLAGS["config"]))
  try:
    grid = parse_sweep(_SWEEP.value) or default_grid(config_file)
    runs = build_configs(_CONFIG.value, grid)
  except SweepError as e:
    sys.exit(f"Bad sweep: {e}")
  if _PRINT_ONLY.value:
    print("\n".join(train_commands(config_file, _WORKDIR.value, fixed, grid)))
    return
  failures = run_grid(runs, _WORKDIR.value, allow_changes=_ALLOW_CHANGES.value)
  if failures:
    sys.exit(f"{len(failures)} of {len(runs)} runs could not run:\n" + "\n".join(failures))


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  pylogging.getLogger("sharp_dirs").setLevel(pylogging.INFO)  # the run's progress
  app.run(main, flags_parser=parse_flags)
