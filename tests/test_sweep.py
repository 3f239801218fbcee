"""experiments/sweep.py on ml_collections' config_flags: ``--config.a.b=value`` reaches every run
of the grid, a bad field is one line naming it, the sweep axes name the run directories."""

import importlib.util
import json
import pathlib
import subprocess
import sys

from sharp_dirs.engine import rundir

ROOT = pathlib.Path(__file__).resolve().parents[1]
NSGD = "configs/nsgd.py:cpu"
GRID = "configs/noise_grid.py:cpu"


def sweep(*args):
  return subprocess.run([sys.executable, "experiments/sweep.py", *map(str, args)],
                        capture_output=True, text=True, timeout=600, cwd=ROOT)


def noise_grid_cpu_config():
  spec = importlib.util.spec_from_file_location("grid_config", ROOT / "configs" / "noise_grid.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("cpu")


def finished_run(workdir, config):
  """A run directory that the sweep skips if, and only if, it builds exactly ``config``."""
  workdir.mkdir(parents=True)
  rundir.record_config(config, str(workdir), None)
  (workdir / "status.json").write_text(json.dumps({"status": "finished"}))


def test_config_overrides_reach_every_run_of_the_grid(tmp_path):
  for seed in (0, 1):
    config = noise_grid_cpu_config()
    config.tracking.k = 3
    config.seed = seed
    finished_run(tmp_path / f"seed={seed}", config)
  out = sweep(f"--config={GRID}", f"--workdir={tmp_path}", "--config.tracking.k=3",
              "--sweep=seed=0,1")
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.count("done already, skipped") == 2, out.stdout
  # Without the override the built configs differ from the runs' (tracking.k): each run is
  # refused in one line, the sweep goes on to the next and exits 1 at the end.
  out = sweep(f"--config={GRID}", f"--workdir={tmp_path}", "--sweep=seed=0,1")
  assert out.returncode == 1
  assert "Run 1 of 2" in out.stdout and "Run 2 of 2" in out.stdout, out.stdout
  refused = [line for line in out.stderr.splitlines() if line.startswith("Cannot run")]
  assert len(refused) == 2 and all("tracking.k: 3 in the run" in r for r in refused), out.stderr
  assert "2 of 2 runs could not run" in out.stderr


def one_line_error(*args):
  out = sweep(f"--config={NSGD}", "--workdir=runs/never_written", *args, "--print_only")
  assert out.returncode == 1 and not out.stdout, (out.stdout, out.stderr)
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr
  return lines[0]


def test_a_bad_field_is_one_line_naming_it():
  line = one_line_error("--config.tracking.kk=3")
  assert "--config.tracking.kk" in line and "no field 'kk'" in line, line
  line = one_line_error("--sweep=tracking.kk=1,2")
  assert line.startswith("Bad sweep:") and "'tracking.kk' is not a config field" in line, line
  line = one_line_error("--config.tracking.k=three")
  assert "config.tracking.k" in line, line
  line = one_line_error("--set=seed=1")  # the flag this script took before config_flags
  assert "--config.seed=1" in line, line


NOISE_GRID_RUNS = [  # the names of the runs under runs/cpu/noise_grid (issue 26's lengths)
    "optimizer.learning_rate=0.01,batch_size=128,num_epochs=24,seed=0",
    "optimizer.learning_rate=0.01,batch_size=128,num_epochs=24,seed=1",
    "optimizer.learning_rate=0.03,batch_size=128,num_epochs=10,seed=0",
    "optimizer.learning_rate=0.03,batch_size=128,num_epochs=10,seed=1",
    "optimizer.learning_rate=0.1,batch_size=128,num_epochs=10,seed=0",
    "optimizer.learning_rate=0.1,batch_size=128,num_epochs=10,seed=1",
    "optimizer.learning_rate=0.03,batch_size=32,num_epochs=10,seed=0",
    "optimizer.learning_rate=0.03,batch_size=32,num_epochs=10,seed=1",
    "optimizer.learning_rate=0.03,batch_size=512,num_epochs=64,tracking.every_epochs=4,seed=0",
    "optimizer.learning_rate=0.03,batch_size=512,num_epochs=64,tracking.every_epochs=4,seed=1",
]


def workdirs(out):
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  return [line.split("--workdir=")[1].split()[0].strip("'") for line in lines], lines


def test_sweep_axes_name_the_runs():
  names, lines = workdirs(sweep(f"--config={NSGD}", "--workdir=w", "--sweep=nsgd.gamma=1,0.1",
                                "--sweep=seed=0,1", "--config.tracking.k=6", "--print_only"))
  assert names == ["w/nsgd.gamma=1,seed=0", "w/nsgd.gamma=1,seed=1",
                   "w/nsgd.gamma=0.1,seed=0", "w/nsgd.gamma=0.1,seed=1"]
  assert all(" --config.tracking.k=6 " in line for line in lines), lines[0]
  assert lines[3].endswith("--config.nsgd.gamma=0.1 --config.seed=1"), lines[3]
  names, _ = workdirs(sweep("--config=configs/noise_grid.py:cpu", "--workdir=g", "--print_only"))
  assert names == [f"g/{name}" for name in NOISE_GRID_RUNS]
