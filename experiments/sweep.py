r"""Runs a grid of one config: every combination of dotted overrides, one after another.

  python experiments/sweep.py --config=configs/noise_grid.py:cpu --workdir=runs/grid_cpu
  python experiments/sweep.py --config=configs/nsgd.py:cpu --workdir=runs/nsgd_cpu \
      --sweep=nsgd.gamma=1,0.1,0.01 --sweep=seed=0,1,2
  python experiments/sweep.py --config=configs/nsgd.py --workdir=runs/nsgd \
      --sweep=nsgd.gamma=1,0.1,0.01 --print_only     # one train.py command per run (cluster)
  python experiments/sweep.py --config=configs/rescaling.py:cpu --workdir=runs/rescaling \
      --set=init_from=runs/grid_cpu/optimizer.learning_rate=0.01   # the same for every run

Without ``--sweep`` the config module's ``get_sweep(variant)`` gives the grid (the paper's).
Each run writes ``<workdir>/<field=value,...>``; finished runs are skipped, killed ones resume.
"""

import ast
import importlib.util
import itertools
import json
import logging as pylogging
import os
import shlex
import sys

from absl import app
from absl import flags
from absl import logging

_CONFIG = flags.DEFINE_string("config", None, "Config file, configs/<name>.py[:variant].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs.")
_SWEEP = flags.DEFINE_multi_string(
    "sweep", [], "field=v1,v2,... (repeat the flag for a cartesian product).")
_SET = flags.DEFINE_multi_string("set", [], "field=value applied to every run of the grid.")
_PRINT_ONLY = flags.DEFINE_bool("print_only", False, "Print one command per run, run nothing.")
flags.mark_flags_as_required(["config", "workdir"])


def _value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_sweep(specs: list[str]) -> list[dict]:
  """['a=1,2', 'b=x'] -> [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]."""
  axes = []
  for spec in specs:
    field, sep, values = spec.partition("=")
    if not sep or not values:
      raise app.UsageError(f"--sweep={spec!r}: expected field=value1,value2,...")
    axes.append([(field.strip(), _value(v.strip())) for v in values.split(",")])
  return [dict(combo) for combo in itertools.product(*axes)] if axes else []


def load_module(path: str):
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_name(overrides: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"


def set_field(config, dotted: str, value) -> None:
  *parents, last = dotted.split(".")
  node = config
  for p in parents:
    node = node[p]
  if last not in node:
    raise app.UsageError(f"--sweep field {dotted!r} is not a config field.")
  node[last] = value


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  path, _, variant = _CONFIG.value.partition(":")
  module = load_module(path)
  grid = parse_sweep(_SWEEP.value)
  if not grid:
    if not hasattr(module, "get_sweep"):
      raise app.UsageError(f"{path} has no get_sweep(): pass --sweep=field=v1,v2,...")
    grid = module.get_sweep(variant or None)
  fixed = {}
  for spec in _SET.value:
    field, sep, value = spec.partition("=")
    if not sep:
      raise app.UsageError(f"--set={spec!r}: expected field=value")
    fixed[field.strip()] = _value(value.strip())
  train_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
  for overrides in grid:
    workdir = os.path.join(_WORKDIR.value, run_name(overrides))
    if _PRINT_ONLY.value:
      args = [sys.executable, train_py, f"--config={_CONFIG.value}", f"--workdir={workdir}"]
      args += [f"--config.{k}={v}" for k, v in {**fixed, **overrides}.items()]
      print(" ".join(shlex.quote(a) for a in args))
      continue
    status_path = os.path.join(workdir, "status.json")
    if os.path.exists(status_path):
      with open(status_path, encoding="utf-8") as f:
        if json.load(f).get("status") in ("finished", "early_stopped", "diverged"):
          print(f"{workdir}: done already, skipped.", flush=True)
          continue
    from sharp_dirs import train  # pylint: disable=g-import-not-at-top
    config = module.get_config(variant or None)
    for k, v in {**fixed, **overrides}.items():
      set_field(config, k, v)
    print(f"Run {workdir}", flush=True)
    status = train.train_and_evaluate(config, workdir)
    print(json.dumps({"workdir": workdir, "status": status["status"], "step": status["step"]}))


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  pylogging.getLogger("sharp_dirs").setLevel(pylogging.INFO)  # the run's progress
  app.run(main)
