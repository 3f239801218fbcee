"""Run directories that survive faults (issue 19): kills at chosen moments of a checkpoint write,
relaunches with another config, two writers, damaged metrics lines and checkpoint bytes, bad
values, and the launchers' one-line errors. Tiny runs on real Fashion-MNIST (6 steps)."""

import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testing import set_field
from sharp_dirs import nudge
from sharp_dirs.curvature import hessian
from sharp_dirs.engine import checkpoint as checkpoint_lib
from sharp_dirs.engine import cli
from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import metrics_io
from sharp_dirs.engine import rundir
from sharp_dirs.engine import train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def import_script(name):
  """experiments/<name>.py as a module, its absl flags unregistered again (the launchers
  define flags of the same names)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  before = set(flags.FLAGS)
  spec = importlib.util.spec_from_file_location(f"script_{name}",
                                                ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  finally:
    for flag in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, flag)
  return module


class Killed(BaseException):
  """What a kill looks like from inside the process: nothing after it runs."""


def tiny(epochs=3):
  """A tiny MLP run (independent of configs/): 2 steps per epoch, checkpoints at 2, 4, 6."""
  c = config_lib.default_config()
  c.model = "mlp"
  c.model_kwargs = config_lib.ConfigDict({"hidden": (16,)})
  c.num_train_examples = 256
  c.batch_size = 64
  c.epoch_size = 128
  c.num_epochs = epochs
  c.optimizer.learning_rate = 0.05
  t = c.tracking
  t.k, t.num_lanczos_steps, t.num_examples, t.batch_size, t.zoom_epochs = 2, 6, 128, 64, 0.0
  c.eval.num_train_examples = c.eval.max_examples = 128
  c.eval.batch_size = 64
  c.log_every_steps = 2
  return c


def comparable(workdir):
  return [{k: v for k, v in r.items() if "seconds" not in k}
          for r in metrics_io.read_run(str(workdir)).rows]


def best_steps(workdir):
  ck = checkpoint_lib.Checkpoints(str(workdir), read_only=True)
  try:
    return ck.best_steps()
  finally:
    ck.close()


def assert_same_run(a, b):
  assert comparable(a) == comparable(b)
  *_, step_a, tree_a = train.restore_run(str(a))
  *_, step_b, tree_b = train.restore_run(str(b))
  assert step_a == step_b
  jax.tree.map(np.testing.assert_array_equal, tree_a, tree_b)
  assert best_steps(a) == best_steps(b)
  *_, best_a = train.restore_run(str(a), "best")
  *_, best_b = train.restore_run(str(b), "best")
  jax.tree.map(np.testing.assert_array_equal, best_a, best_b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run, and the step of its last best checkpoint (after the first
  checkpoint, so that a kill there has a checkpoint to resume from)."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  assert train.train_and_evaluate(tiny(), str(workdir))["status"] == "finished"
  rows = [r for r in metrics_io.read_run(str(workdir)).rows if "valid/accuracy" in r]
  steps, accs = [r["step"] for r in rows], [r["valid/accuracy"] for r in rows]
  best = [s for i, s in enumerate(steps) if accs[i] > max(accs[:i], default=-1)]
  assert steps == [0, 2, 4, 6]  # evaluations and checkpoints every 2 steps
  assert best[-1] >= 4, f"the test needs a best checkpoint after step 2: {best}"
  return workdir, best[-1]


# ------------------------------------------------------------------------------------------
# 1. Kills during checkpoint writes

@pytest.mark.parametrize("moment", ["after_latest_before_best", "best_without_latest",
                                    "inside_latest_save"])
def test_a_kill_at_any_moment_of_a_checkpoint_write_resumes_to_the_same_run(
    tmp_path, reference, monkeypatch, moment, caplog):
  ref, best_step = reference
  original = checkpoint_lib.Checkpoints._save

  def killing_save(manager, step, tree, meta):
    ck_dir = str(manager.directory)
    is_best = os.path.basename(ck_dir) == "best"
    if step == best_step:
      if moment == "after_latest_before_best" and is_best:
        raise Killed()
      if moment == "best_without_latest" and not is_best:
        # The order before the fix: best/<s> first, then a kill before checkpoints/<s>.
        original(killing_save.best, step, {"params": tree["state"].params,
                                           "model_state": tree["state"].model_state}, {})
        raise Killed()
      if moment == "inside_latest_save" and not is_best:
        os.makedirs(os.path.join(ck_dir, f"{step}.orbax-checkpoint-tmp-1234", "tree"))
        os.makedirs(os.path.join(os.path.dirname(ck_dir), "best",
                                 f"{step}.orbax-checkpoint-tmp-5678"))
        raise Killed()
    return original(manager, step, tree, meta)

  real_init = checkpoint_lib.Checkpoints.__init__

  def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    killing_save.best = self.best

  monkeypatch.setattr(checkpoint_lib.Checkpoints, "__init__", init)
  monkeypatch.setattr(checkpoint_lib.Checkpoints, "_save", staticmethod(killing_save))
  with pytest.raises(Killed):
    train.train_and_evaluate(tiny(), str(tmp_path))
  monkeypatch.undo()
  if moment == "after_latest_before_best":
    assert os.path.isdir(tmp_path / "checkpoints" / str(best_step))
    assert best_step not in best_steps(tmp_path)
  elif moment == "best_without_latest":
    assert best_steps(tmp_path) == [best_step]
    assert not os.path.isdir(tmp_path / "checkpoints" / str(best_step))
  with caplog.at_level(logging.WARNING):
    status = train.train_and_evaluate(tiny(), str(tmp_path))
  assert status["status"] == "finished"
  assert_same_run(ref, tmp_path)
  assert not list(tmp_path.glob("*/*orbax-checkpoint-tmp*"))
  if moment == "inside_latest_save":
    assert "interrupted save" in caplog.text


# ------------------------------------------------------------------------------------------
# 2. Identity

def test_a_relaunch_with_another_config_is_refused_naming_the_fields(reference, tmp_path):
  ref, _ = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref, workdir)
  before = (workdir / "config.json").read_text()
  c = tiny()
  c.optimizer.learning_rate = 0.5
  c.model_kwargs.hidden = (32,)
  with pytest.raises(rundir.ConfigMismatch) as e:
    train.train_and_evaluate(c, str(workdir))
  message = str(e.value)
  lr = tiny().optimizer.learning_rate
  assert f"optimizer.learning_rate: {lr!r} in the run, 0.5 now" in message, message
  assert "model_kwargs.hidden: [16] in the run, [32] now" in message, message
  assert isinstance(e.value, config_lib.ConfigError)
  assert (workdir / "config.json").read_text() == before
  assert rundir.config_differences(c, str(workdir)) == [
      ("model_kwargs.hidden", [16], [32]), ("optimizer.learning_rate", lr, 0.5)]
  assert rundir.config_differences(tiny(), str(workdir)) == []
  # More epochs: refused without the flag (which the message names), taken with it.
  with pytest.raises(rundir.ConfigMismatch, match="--allow_changes"):
    train.train_and_evaluate(tiny(epochs=4), str(workdir))
  c = tiny(epochs=4)
  c.optimizer.learning_rate = 0.5
  with pytest.raises(rundir.ConfigMismatch, match="optimizer.learning_rate"):
    train.train_and_evaluate(c, str(workdir), allow_changes=True)


def test_more_epochs_with_allow_changes_continue_the_run_as_if_planned(reference, tmp_path):
  ref, _ = reference
  short = tmp_path / "short"
  assert train.train_and_evaluate(tiny(epochs=2), str(short))["status"] == "finished"
  train.train_and_evaluate(tiny(epochs=3), str(short), allow_changes=True)
  assert comparable(short) == comparable(ref)
  assert json.loads((short / "config.json").read_text())["num_epochs"] == 3
  change, = [json.loads(line) for line in (short / rundir.CHANGES).read_text().splitlines()]
  assert change["step"] == 4 and change["changes"] == {"num_epochs": [2, 3]}


def test_fields_added_to_the_schema_later_do_not_break_identity(tmp_path):
  c = config_lib.default_config()
  stored = c.to_dict()
  del stored["tracking"]["warm_method"]  # a run made before the field existed
  (tmp_path / "config.json").write_text(json.dumps(stored))
  assert rundir.config_differences(c, str(tmp_path)) == []
  c.tracking.warm_method = "block"
  assert rundir.config_differences(c, str(tmp_path)) == [
      ("tracking.warm_method", "(absent)", "block")]
  c = config_lib.default_config()
  c.data_dir = "/elsewhere"  # where the data is stored is not the run's identity
  assert rundir.config_differences(c, str(tmp_path)) == []


# ------------------------------------------------------------------------------------------
# 3. One writer

def test_a_second_writer_is_refused_naming_the_first(tmp_path):
  with rundir.RunLock(str(tmp_path)):
    with pytest.raises(rundir.RunDirLocked) as e:
      train.train_and_evaluate(tiny(), str(tmp_path))
    assert f"process {os.getpid()} on host" in str(e.value), str(e.value)
    assert rundir.holder(str(tmp_path)).startswith(f"process {os.getpid()}")
  assert not (tmp_path / "metrics.jsonl").exists()
  assert rundir.holder(str(tmp_path)) is None


def test_a_killed_writer_does_not_leave_the_lock_stuck(tmp_path):
  child = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from sharp_dirs.engine import rundir; "
       "lock = rundir.RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(600)",
       str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
  try:
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(rundir.RunDirLocked, match=f"process {child.pid} on host"):
      rundir.RunLock(str(tmp_path)).acquire()
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  with rundir.RunLock(str(tmp_path)):  # free again: the kernel released it with the process
    pass


# ------------------------------------------------------------------------------------------
# 4. metrics.jsonl

def write_rows(path, steps):
  with open(path, "w", encoding="utf-8") as f:
    for s in steps:
      f.write(json.dumps({"step": s, "x": float(s)}) + "\n")


def test_a_damaged_line_is_reported_with_its_number_and_reading_goes_on(tmp_path):
  path = tmp_path / "metrics.jsonl"
  write_rows(path, range(10))
  lines = path.read_text().splitlines(keepends=True)
  lines[3] = lines[3][:7] + "\x00garbage\n"
  lines.append('{"step": 10, "x"')  # a torn last line (a kill): ignored without a warning
  path.write_text("".join(lines))
  with pytest.warns(metrics_io.DamagedMetricsWarning, match="line 4: damaged") as record:
    rows = metrics_io.read_rows(str(path))
  assert len(record) == 1
  assert [r["step"] for r in rows] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
  (tmp_path / "config.json").write_text("{}")
  with pytest.warns(metrics_io.DamagedMetricsWarning):
    assert len(metrics_io.read_run(str(tmp_path)).rows) == 9


def test_a_fresh_start_keeps_the_old_rows_and_a_resume_says_what_it_drops(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  write_rows(path, range(0, 12, 2))
  os.makedirs(tmp_path / "arrays" / "curve")
  np.savez(tmp_path / "arrays" / "curve" / "000000010.npz", a=np.ones(2))
  with caplog.at_level(logging.WARNING):
    metrics_io.MetricWriter(str(tmp_path), resume_step=4).close()
  assert "dropping 3 rows logged after step 4" in caplog.text
  assert [r["step"] for r in metrics_io.read_rows(str(path))] == [0, 2, 4]
  assert not (tmp_path / "arrays" / "curve" / "000000010.npz").exists()
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    metrics_io.MetricWriter(str(tmp_path)).close()  # no checkpoint: the run starts over
  backup, = tmp_path.glob("metrics.jsonl.*.bak")
  assert [r["step"] for r in metrics_io.read_rows(str(backup))] == [0, 2, 4]
  assert metrics_io.read_rows(str(path)) == []
  assert str(backup) in caplog.text and "3 earlier rows" in caplog.text


def test_a_resume_over_a_damaged_line_keeps_the_file_as_it_was(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  write_rows(path, range(6))
  text = path.read_text().replace('{"step": 2', '{"stop": 2')
  path.write_text(text)
  with pytest.warns(metrics_io.DamagedMetricsWarning, match="line 3"):
    with caplog.at_level(logging.WARNING):
      metrics_io.MetricWriter(str(tmp_path), resume_step=10).close()
  backup, = tmp_path.glob("metrics.jsonl.*.bak")
  assert backup.read_text() == text
  assert [r["step"] for r in metrics_io.read_rows(str(path))] == [0, 1, 3, 4, 5]


# ------------------------------------------------------------------------------------------
# 5. Damaged checkpoints

def flip_bytes(folder):
  """Flips 16 bytes in the middle of the largest file under ``folder``."""
  files = [p for p in pathlib.Path(folder).rglob("*") if p.is_file()]
  target = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  middle = len(data) // 2
  for i in range(middle, middle + 16):
    data[i] ^= 0xFF
  target.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_detected_and_the_run_resumes_from_an_earlier_one(
    reference, tmp_path, caplog):
  ref, _ = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref, workdir)
  flip_bytes(workdir / "checkpoints" / "6")
  with pytest.raises(checkpoint_lib.DamagedCheckpoint) as e:
    train.restore_run(str(workdir))
  message = str(e.value)
  assert "checkpoints/6" in message and "earlier checkpoint at step 4" in message, message
  (workdir / "status.json").unlink()
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(tiny(), str(workdir))
  assert "resuming from the earlier checkpoint at step 4" in caplog.text
  assert len(list((workdir / "damaged").iterdir())) == 1
  assert_same_run(ref, workdir)


def test_verify_without_checksums_rejects_non_finite_arrays_and_wrong_shapes():
  target = {"w": jnp.zeros((2, 3)), "n": jnp.zeros((), jnp.int32)}
  good = {"w": jnp.ones((2, 3)), "n": jnp.ones((), jnp.int32)}
  assert checkpoint_lib.verify(good, {}, target) == []
  bad = {"w": jnp.ones((2, 3)).at[0, 1].set(jnp.inf), "n": jnp.ones((), jnp.int32)}
  assert checkpoint_lib.verify(bad, {}, target) == ["['w'] holds non-finite values"]
  meta = {checkpoint_lib.INTEGRITY: checkpoint_lib.integrity(good)}
  assert checkpoint_lib.verify(good, meta, target) == []
  changed = {"w": jnp.ones((2, 3)).at[1, 2].set(1.0000001), "n": jnp.ones((), jnp.int32)}
  assert checkpoint_lib.verify(changed, meta, target) == ["['w'] does not match its checksum"]


# ------------------------------------------------------------------------------------------
# 1b. The sweep reports runs that cannot run and goes on

def test_the_sweep_reports_runs_that_cannot_run_and_goes_on(tmp_path, capsys):
  sweep = import_script("sweep")
  runs = sweep.build_configs(tiny(), [{"seed": 0}, {"seed": 1}])
  other = tiny()
  other.seed = 0
  other.optimizer.learning_rate = 0.3
  os.makedirs(tmp_path / "seed=0")
  rundir.record_config(other, str(tmp_path / "seed=0"), None)
  os.makedirs(tmp_path / "seed=1")
  with rundir.RunLock(str(tmp_path / "seed=1")):
    failures = sweep.run_grid(runs, str(tmp_path))
  assert len(failures) == 2
  lr = tiny().optimizer.learning_rate
  assert f"optimizer.learning_rate: 0.3 in the run, {lr!r} now" in failures[0], failures
  assert "is being written by another process" in failures[1]
  with pytest.raises(sweep.SweepError, match="config.batch_size = 'big'"):
    sweep.build_configs(tiny(), [{"batch_size": "big"}])
  with pytest.raises(sweep.SweepError, match="'nope' is not a config field"):
    sweep.build_configs(tiny(), [{"nope": 1}])
  with pytest.raises(sweep.SweepError, match="config.optimizer.learning_rate = nan"):
    sweep.build_configs(tiny(), [{"optimizer.learning_rate": float("nan")}])


# ------------------------------------------------------------------------------------------
# 6. Bad values

@pytest.mark.parametrize("field, value, message", [
    ("optimizer.learning_rate", float("nan"), "must be a finite number"),
    ("optimizer.learning_rate", float("inf"), "must be a finite number"),
    ("tracking.tol", float("nan"), "must be a finite number"),
    ("nsgd.gamma", float("inf"), "must be a finite number"),
    ("plateau.factor", float("nan"), "must be a finite number"),
    ("analyses.cross_section.offsets", (0.0, float("nan")), "must be a finite number"),
    ("model_kwargs.hidden", (8,), "model 'simple_cnn_root' takes no argument 'hidden'"),
    ("optimizer.kwargs.b1", 0.9, "optimizer 'sgd' takes no optax kwargs"),
])
def test_non_finite_and_misplaced_config_values_are_named(field, value, message):
  c = config_lib.default_config()
  set_field(c, field, value)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  assert f"config.{field}" in str(e.value) and message in str(e.value), str(e.value)


def test_optimizer_kwargs_from_the_command_line_reach_optax():
  c = config_lib.default_config()
  c.optimizer.name = "adam"
  c.optimizer.kwargs.b1 = 0.5  # a placeholder: settable as --config.optimizer.kwargs.b1=0.5
  config_lib.validate(c)
  assert config_lib.given_kwargs(c.optimizer.kwargs) == {"b1": 0.5}
  c.optimizer.kwargs.decay = 0.9
  with pytest.raises(config_lib.ConfigError, match="optax.adam takes no argument 'decay'"):
    config_lib.validate(c)
  c = config_lib.default_config()
  c.model = "resnet32"
  c.model_kwargs = config_lib.ConfigDict({"hidden": None})  # --config.model_kwargs.hidden=None
  config_lib.validate(c)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(gamma=float("nan")), ValueError, "gamma must be finite"),
    (dict(gamma="a"), TypeError, "gamma must be a number"),
    (dict(gamma=jnp.array([0.1, jnp.inf])), ValueError, "gamma must be finite"),
    (dict(momentum="a"), TypeError, "momentum must be a number"),
    (dict(seed="a"), TypeError, "seed must be an int"),
    (dict(stability_cap=float("nan")), ValueError, "stability_cap must be finite"),
    (dict(learning_rate=float("inf")), ValueError, "learning_rate must be finite"),
    (dict(num_directions=2.0), TypeError, "num_directions must be a Python int"),
    (dict(refresh_every=2.5), TypeError, "refresh_every must be an int"),
])
def test_nudged_sgd_names_the_bad_argument(kwargs, error, message):
  args = {"learning_rate": 0.1, "num_directions": 2, **kwargs}
  with pytest.raises(error, match=message):
    nudge.nudged_sgd(args.pop("learning_rate"), args.pop("num_directions"), **args)


def test_hessian_top_k_at_an_infinite_point_raises_instead_of_finite_zeros():
  params = {"w": jnp.array([jnp.inf, 1.0, 2.0])}
  batches = {"x": jnp.ones((2, 4, 3))}

  def loss_fn(p, batch):  # a ReLU: zero curvature everywhere, an infinite loss at w[0] = inf
    return jnp.mean(jnp.maximum(batch["x"] @ p["w"], 0.0))

  with pytest.raises(FloatingPointError,
                     match=r"params hold non-finite values \(NaN or inf in leaves \['w'\]"):
    hessian.hessian_top_k(loss_fn, params, batches, jax.random.PRNGKey(0), k=2,
                          num_lanczos_steps=3)
  inside = jax.jit(lambda p: hessian.hessian_top_k(loss_fn, p, batches, jax.random.PRNGKey(0),
                                                   k=2, num_lanczos_steps=3).eigvals)(params)
  assert np.all(np.isnan(inside))


# ------------------------------------------------------------------------------------------
# 7. One line, not a traceback

def run_script(*args):
  return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                        timeout=300, cwd=ROOT)


def one_line(out):
  lines = [line for line in out.stderr.splitlines() if line.strip()
           and "Warning" not in line and not line.startswith(" ")]
  assert out.returncode != 0
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  assert len(lines) == 1, out.stderr[-3000:]
  return lines[0]


def test_the_train_launcher_says_what_is_wrong_in_one_line(tmp_path):
  line = one_line(run_script("experiments/train.py", "--config=configs/noise_grid.py:cpu",
                             f"--workdir={tmp_path}", "--config.nope=1"))
  assert "--config.nope: the config has no field 'nope'" in line, line
  (tmp_path / "file").write_text("")
  line = one_line(run_script("experiments/train.py", "--config=configs/noise_grid.py:cpu",
                             f"--workdir={tmp_path / 'file'}", "--config.model=resnet32"))
  assert "config.model_kwargs." in line and "model 'resnet32' takes no argument" in line, line
  assert "=None" in line, line
  line = one_line(run_script("experiments/train.py", "--config=configs/noise_grid.py:cpu",
                             f"--workdir={tmp_path / 'file'}"))
  assert "is a file, not a directory" in line, line


def test_flag_errors_are_described_in_one_line():
  from absl import flags
  from ml_collections import config_flags

  def describe(*argv):
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
    saved, sys.argv = sys.argv, ["prog", *argv]  # config_flags reads overrides from sys.argv
    try:
      values(["prog", *argv])
      getattr(values["config"].value, "to_dict", None)  # raises late, as cli.parse_flags forces
    except Exception as e:  # pylint: disable=broad-except
      return cli.describe_flag_error(e, ["prog", *argv])
    finally:
      sys.argv = saved
    describe.values = values
    return None

  assert describe("--config=configs/nope.py").startswith(
      "--config: cannot load configs/nope.py: no such file")
  message = describe("--config=configs/noise_grid.py:cpu", "--config.optimizer.kwargs.foo=1")
  assert "--config.optimizer.kwargs.foo: the config has no field 'foo'" in message
  assert "--config.optimizer.kwargs=\"{'foo': value}\"" in message
  assert "unknown config variant" in describe("--config=configs/noise_grid.py:nope")
  # A typo: ml_collections' suggestion, once, without its escaping or newline.
  for flag, suggestion in (("--config.optimizer.learnig_rate=0.1", "'learning_rate'"),
                           ("--config.optimizr.learning_rate=0.1", "'optimizer'")):
    message = describe("--config=configs/noise_grid.py:cpu", flag)
    field = flag.split("=")[0].rpartition(".")[2] if "learnig" in flag else "optimizr"
    assert message == (f"{flag.split('=')[0]}: the config has no field '{field}'; did you mean "
                       f"{suggestion}?"), message
  assert describe("--config=configs/noise_grid.py:cpu", "--config.optimizer.kwargs.b1=0.95",
                  "--config.optimizer.name=adam") is None
  assert describe.values["config"].value.optimizer.kwargs.b1 == 0.95


def test_evaluate_says_what_is_missing(reference, tmp_path):
  ref, _ = reference
  evaluate = import_script("evaluate")
  with pytest.raises(rundir.RunDirError, match="not a run directory"):
    train.restore_run(str(tmp_path))
  workdir = tmp_path / "run"
  shutil.copytree(ref, workdir)
  shutil.rmtree(workdir / "checkpoints")
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match="has no latest checkpoint .*best/ has one"):
    evaluate.evaluate_checkpoint(str(workdir), "best", k=2, num_examples=64, num_probes=2,
                                 seed=0)
  with pytest.raises(evaluate.EvaluationError, match="--num_examples=100000 needs"):
    evaluate.evaluate_checkpoint(str(ref), "last", k=2, num_examples=100_000, num_probes=2,
                                 seed=0)
  line = one_line(run_script("experiments/evaluate.py", f"--workdir={tmp_path / 'empty*'}"))
  assert "no run directory matches" in line
  os.makedirs(tmp_path / "empty")
  line = one_line(run_script("experiments/evaluate.py", f"--workdir={tmp_path / 'empty'}"))
  assert "it is not a run directory" in line


def test_a_killed_run_leaves_its_checkpointed_rows_in_tensorboard_and_a_running_status(
    tmp_path, reference, monkeypatch):
  """Killed during its checkpoint at step 6: TensorBoard's reader already sees every row up to
  the checkpoint at step 4 (the writer flushes at each checkpoint, not only every 30 s), and
  status.json says the run is running, from step 4. The resumed run's TensorBoard then shows
  each step of metrics.jsonl once."""
  from tensorboard.backend.event_processing import event_accumulator  # the test extras'
  ref, _ = reference
  original = checkpoint_lib.Checkpoints._save

  def killing_save(manager, step, tree, meta):
    if step == 6:
      raise Killed()
    return original(manager, step, tree, meta)

  monkeypatch.setattr(checkpoint_lib.Checkpoints, "_save", staticmethod(killing_save))
  with pytest.raises(Killed):
    train.train_and_evaluate(tiny(), str(tmp_path))
  monkeypatch.undo()

  def tensorboard_steps(tag):
    acc = event_accumulator.EventAccumulator(
        str(tmp_path / "tensorboard"), size_guidance={event_accumulator.SCALARS: 0}).Reload()
    return [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []

  logged = [r["step"] for r in metrics_io.read_run(str(tmp_path)).rows if "valid/accuracy" in r]
  assert [s for s in tensorboard_steps("valid/accuracy") if s <= 4] == [
      s for s in logged if s <= 4] == [0, 2, 4]
  status = json.loads((tmp_path / "status.json").read_text())
  assert status["status"] == "running" and status["step"] == 4 and status["total_steps"] == 6
  assert train.train_and_evaluate(tiny(), str(tmp_path))["status"] == "finished"
  assert json.loads((tmp_path / "status.json").read_text())["status"] == "finished"
  rows = metrics_io.read_run(str(tmp_path)).rows
  assert tensorboard_steps("valid/accuracy") == [r["step"] for r in rows if "valid/accuracy" in r]
  assert_same_run(ref, tmp_path)
