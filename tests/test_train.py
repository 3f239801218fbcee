"""The experiment engine end to end on real Fashion-MNIST (tiny settings): every config's cpu
variant runs and logs what its figures need, a killed run resumes to the same metrics, and bad
configs are rejected by name before anything compiles."""

import importlib.util
import json
import math
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import metrics_io
from sharp_dirs.engine import tracking
from sharp_dirs.engine import train
from testing import CANONICAL_2D, conv_layouts, set_field

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_config(name: str, variant: str = "cpu"):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, module.get_config(variant)


def shrink(c, *, epochs=2):
  """A cpu config made tiny: 256 examples, batches of 64, samples of 64; its structure kept.

  Small samples matter here: a SimpleCNN of 2 filters costs about as much per example as one of
  8 (XLA's CPU convolutions with few channels are bound by loop overhead, not arithmetic)."""
  c.num_train_examples = 256
  c.num_epochs = epochs
  if c.full_batch:
    c.batch_size = 128
  else:
    c.batch_size = 64
    # Short epochs stay short; the cpu scale's epochs of 2,560 become the 256 examples.
    c.epoch_size = min(c.epoch_size, 128) if 0 < c.epoch_size < 2560 else 0
  if c.model == "mlp":
    c.model_kwargs = config_lib.ConfigDict({"hidden": (16,)})
  elif c.model.startswith("simple_cnn"):  # the cpu scale's SimpleCNN, narrower still
    c.model_kwargs = config_lib.ConfigDict({"features": 2, "dense_features": 16})
  c.tracking.k = min(c.tracking.k, 3)
  c.tracking.num_lanczos_steps = 8
  c.tracking.num_examples = 64  # two batches: the noise estimate's split-half
  c.tracking.batch_size = 32
  c.tracking.zoom_epochs = min(c.tracking.zoom_epochs, 0.5)
  c.tracking.every_epochs = 1
  c.nsgd.num_directions = min(c.nsgd.num_directions, c.tracking.k)
  c.analyses.step_loss_change.num_trials = 2
  c.analyses.step_loss_change.num_examples = 64
  c.analyses.cross_section.num_trials = 2
  c.analyses.cross_section.num_examples = 64
  c.analyses.cross_section.directions = (0, 2)
  c.analyses.alignment.num_batches = 2
  c.analyses.frobenius.num_samples = 2
  c.analyses.frobenius.every = 1
  c.analyses.spectral_density.num_draws = 1
  c.analyses.spectral_density.num_steps = 6
  c.eval.every_epochs = 1
  c.eval.num_train_examples = 64
  c.eval.max_examples = 64
  c.eval.batch_size = 64
  c.log_every_steps = 2
  return c


def finite_series(run, key):
  steps, values = run.series(key)
  assert len(values) > 0, f"{key} was never logged; keys: {run.keys()}"
  assert np.all(np.isfinite(values)), (key, values)
  return steps, values


@pytest.mark.parametrize("name, variant, keys", [
    # noise_grid: checked on the run of test_tracking_schedule_zooms_then_goes_per_epoch
    ("general_shape", "cpu", ["hessian/lambda_3", "train/accuracy", "valid/accuracy"]),
    ("sharp_analysis", "cpu", ["step_loss_change/e1/x1", "step_loss_change/full_step/x0.5",
                               "cross_section/width_e1"]),
    ("alignment", "cpu", ["alignment/mean_abs_cos", "alignment/random_baseline",
                          "train/accuracy"]),
    # nsgd: checked on the full run of test_a_killed_run_resumes_to_the_same_metrics_and_params
    ("edge_of_stability", "cpu", ["eos/eta_lambda_max", "train/batch_loss"]),
    ("rescaling", "only_top,cpu", ["hessian/lambda_1", "train/loss"]),
])
def test_cpu_variant_runs_and_logs_what_its_figures_need(tmp_path, name, variant, keys):
  _, c = load_config(name, variant)
  status = train.train_and_evaluate(shrink(c), str(tmp_path))
  assert status["status"] == "finished", status
  run = check_variant_run(str(tmp_path), c, keys)
  if name == "sharp_analysis":
    (step, arrays), *_ = run.arrays("cross_section")
    assert arrays["losses"].shape == (2, len(c.analyses.cross_section.offsets))
    (_, change), *_ = run.arrays("step_loss_change")
    assert change["relative_change"].shape == (c.tracking.k + 2, 5)


def check_variant_run(workdir: str, c, keys) -> metrics_io.Run:
  """A finished run of config c logged finite ``keys`` (and λ_1, the validation loss) and
  timed each part of its loop; returns the run read."""
  run = metrics_io.read_run(workdir)
  for key in keys + ["hessian/lambda_1", "valid/loss"]:
    if key.startswith("cross_section/width"):  # inf: the loss does not rise within the grid
      assert not np.isnan(run.series(key)[1]).any() and run.series(key)[1].size, key
    else:
      finite_series(run, key)
  assert run.config["model"] == c.model
  assert run.status["status"] == "finished"
  seconds = run.status["seconds"]  # each part of the loop timed, within the run's wall time
  assert seconds["train"] > 0 and seconds["track"] > 0 and seconds["evaluate"] > 0
  assert sum(v for k, v in seconds.items() if k != "total") <= seconds["total"]
  return run


def test_tracking_schedule_zooms_then_goes_per_epoch(tmp_path):
  _, c = load_config("noise_grid")
  c = shrink(c, epochs=3)
  c.tracking.zoom_epochs = 1.0
  c.tracking.zoom_every_examples = 128  # every 2 steps of 64 during the first epoch
  train.train_and_evaluate(c, str(tmp_path))
  # The noise_grid cpu variant's keys (its case of test_cpu_variant_runs_and_logs_...).
  run = check_variant_run(str(tmp_path), c, ["hessian/lambda_2", "eos/eta_lambda_max",
                                             "hessian/grad_fraction_batch",
                                             "hessian/overlap_previous"])
  steps, lam = finite_series(run, "hessian/lambda_1")
  np.testing.assert_array_equal(steps, [0, 2, 4, 8, 12])  # 4 steps per epoch of 256
  _, warm = run.series("hessian/warm")
  np.testing.assert_array_equal(warm, [0, 1, 1, 1, 1])


@pytest.mark.parametrize("spe,total,zoom_steps,zoom_every,every", [
    (20, 200, 20, 2, 1), (5, 320, 5, 1, 4), (20, 480, 0, 1, 2), (7, 50, 30, 4, 3),
    (1, 400, 0, 1, 5), (20, 10, 20, 2, 1)])
def test_schedule_counts_what_is_still_due_as_its_predicates_say(spe, total, zoom_steps,
                                                                  zoom_every, every):
  """The counts behind the progress lines' time left, against the predicates step by step."""
  schedule = train.Schedule(spe, total, zoom_steps, zoom_every)
  for after in sorted({0, 1, zoom_steps - 1, zoom_steps, total // 2, total - 1, total}):
    if after < 0:
      continue
    steps = range(after + 1, total + 1)
    assert schedule.count_tracking(after, every) == sum(
        schedule.tracking_due(s, every) for s in steps), after
    assert schedule.count_every_epochs(after, every) == sum(
        schedule.every_epochs(s, every) for s in steps), after


def test_time_left_counts_each_part_by_its_calls_to_come():
  """A run whose zoom tracked densely at the start: the time left is the train steps at their
  own pace plus the tracking evaluations still due at theirs, not elapsed / steps_done."""
  loop = train.Loop.__new__(train.Loop)  # only what seconds_left reads
  loop.config = config_lib.default_config()
  loop.config.tracking.every_epochs, loop.config.eval.every_epochs = 1, 1
  loop.schedule = train.Schedule(20, 200, 20, 2)  # zoom: every 2 steps over the first 20
  loop.step = 3
  loop.timer = train.PartTimer()
  loop.timer.seconds.update(train=0.3, track=10.0, evaluate=1.0, checkpoint=0.03)
  loop.timer.calls.update(train=3, track=2, evaluate=1, checkpoint=3)
  tracks_left = loop.schedule.count_tracking(3, 1)
  assert tracks_left == 8 + 10  # zoom steps 4..18, then steps 20, 40, ..., 200
  expected = 0.1 * 197 + 5.0 * tracks_left + 1.0 * 10 + 0.01 * 197
  assert loop.seconds_left() == pytest.approx(expected)


def test_tracked_eigenvalues_match_a_dense_solve_on_the_same_sample(tmp_path):
  """λ_1..λ_k logged at step 0 equal the dense Hessian's on the tracker's own sample."""
  _, c = load_config("noise_grid")
  c = shrink(c, epochs=1)
  c.model = "mlp"
  c.model_kwargs = config_lib.ConfigDict({"hidden": (2,)})  # 1,600 parameters: a dense Hessian
  c.tracking.num_lanczos_steps = 30
  c.tracking.tol = 0.0
  train.train_and_evaluate(c, str(tmp_path))
  run = metrics_io.read_run(str(tmp_path))
  logged = [run.series(f"hessian/lambda_{i + 1}")[1][0] for i in range(c.tracking.k)]

  run_data = train.load_run_data(c)
  model, params, model_state = train.build_model(c, jax.tree.map(lambda x: x[:2],
                                                                 run_data.train))
  from sharp_dirs.engine import tracking
  tracker = tracking.Tracker(c, model, run_data)
  sample = tracker.sample(0, c.tracking.num_examples, c.tracking.batch_size)
  loss_fn = tracking.curvature_loss_fn(model, model_state, c.l2)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  merged = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), sample)
  dense = jax.hessian(lambda f: loss_fn(unravel(f), merged))(flat)
  expected = np.linalg.eigvalsh(np.asarray(dense, np.float64))[::-1][:c.tracking.k]
  np.testing.assert_allclose(logged, expected, rtol=2e-3)


def test_a_killed_run_resumes_to_the_same_metrics_and_params(tmp_path):
  _, c = load_config("nsgd")  # NSGD from the tracker, plateau and early-stopping counters
  c = shrink(c, epochs=3)
  c.plateau.patience = 1
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  train.train_and_evaluate(c, full)
  # The nsgd cpu variant's keys (its case of test_cpu_variant_runs_and_logs_what_its_figures_need).
  check_variant_run(full, c, ["hessian/frobenius", "hessian/frobenius_as_in_paper",
                              "test/accuracy", "distance_from_init"])
  # Killed mid-epoch 2 (after its checkpoint at step 4, before the one at step 8): rows and
  # arrays logged after step 4 must be replaced by the resumed run's.
  assert train.train_and_evaluate(c, killed, stop_at_step=6)["status"] == "stopped"
  loop = train.Loop(c, killed)  # the resumed loop's progress lines show the last λ_1, not "—"
  steps, logged = metrics_io.read_run(killed).series("hessian/lambda_1")
  assert loop.resumed_at == 4  # the checkpoint before the stop
  assert loop.lam_text == f"{logged[steps <= 4][-1]:.3g}"
  loop.writer.close()
  loop.checkpoints.close()
  train.train_and_evaluate(c, killed)

  def comparable(run):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in run.rows]
  a, b = metrics_io.read_run(full), metrics_io.read_run(killed)
  assert comparable(a) == comparable(b)
  assert any("hessian/frobenius" in r for r in a.rows)
  *_, step_a, tree_a = train.restore_run(full)
  *_, step_b, tree_b = train.restore_run(killed)
  assert step_a == step_b == 12
  jax.tree.map(np.testing.assert_array_equal, tree_a, tree_b)


def test_a_diverging_run_stops_with_the_reason_and_step(tmp_path):
  _, c = load_config("noise_grid")
  c = shrink(c, epochs=2)
  c.optimizer.learning_rate = 1e4
  status = train.train_and_evaluate(c, str(tmp_path))
  assert status["status"] == "diverged"
  assert "non-finite training loss" in status["reason"]
  assert "lower the learning rate" in status["reason"]
  run = metrics_io.read_run(str(tmp_path))
  steps, _ = run.series("diverged")
  assert len(steps) == 1 and 1 <= steps[0] < 8
  assert json.load(open(tmp_path / "status.json"))["step"] == steps[0]


def test_plateau_reduces_the_learning_rate_and_early_stopping_stops():
  c = config_lib.default_config()
  c.plateau.enabled, c.plateau.patience, c.plateau.factor = True, 2, 0.5
  c.early_stopping.enabled, c.early_stopping.patience = True, 3
  loop = train.LoopState()
  history = []
  for step, (loss, acc) in enumerate([(1.0, 0.5), (0.9, 0.6), (0.95, 0.6), (0.97, 0.55),
                                      (0.99, 0.58)]):
    loop, is_best, stop = train.update_protocol(loop, c, step, loss, acc)
    history.append((loop.lr_multiplier, is_best, stop))
  assert [h[0] for h in history] == [1.0, 1.0, 1.0, 0.5, 0.5]
  assert [h[1] for h in history] == [True, True, False, False, False]
  assert [h[2] for h in history] == [False, False, False, False, True]
  assert loop.best_step == 1


@pytest.mark.parametrize("variant", ["cpu", "simple_cnn"])
def test_full_batch_gradient_is_the_mean_over_the_training_set(variant):
  """One GD step moves the params by −η ∇L(whole training set); a conv net's convolutions in the
  batch loop are all in XLA CPU's fast canonical layout (conv_layout)."""
  _, c = load_config("edge_of_stability", variant)
  c = shrink(c, epochs=1)
  if variant == "simple_cnn":
    c.model_kwargs = config_lib.ConfigDict({"features": 2, "dense_features": 8})
  c.tracking.enabled = False
  run_data = train.load_run_data(c)
  model, params, model_state = train.build_model(c, jax.tree.map(lambda x: x[:2],
                                                                 run_data.train))
  tx = train.make_optimizer(c)
  state = train.TrainState(jnp.zeros([], jnp.int32), params, tx.init(params), model_state)
  before = jax.tree.map(jnp.copy, params)
  batches = train.stack_batches(run_data.train, c.batch_size)[0]
  step = train.make_train_step(c, model)
  if variant == "simple_cnn":
    assert conv_layouts(step.lower(state, batches, None).as_text()) == {CANONICAL_2D}
  state, metrics = step(state, batches, None)
  from sharp_dirs.models import loss as model_loss
  loss_fn = model_loss.make_loss_fn(model, model_state, train=False)
  whole = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batches)
  grad = jax.grad(loss_fn)(before, whole)
  expected = jax.tree.map(lambda p, g: p - c.optimizer.learning_rate * g, before, grad)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), state.params, expected)
  np.testing.assert_allclose(metrics["loss"], loss_fn(before, whole), rtol=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("model", "resnet33", "allowed: mlp, simple_cnn_root"),
    ("dataset", "mnist", "allowed: fashion_mnist"),
    ("model", "lstm_lm", "it takes lm data but dataset 'fashion_mnist' is image data"),
    ("optimizer.name", "adamax2", "allowed: sgd, nsgd"),
    ("optimizer.learning_rate", 0.0, "must be > 0"),
    ("optimizer.momentum", 1.0, "must be in [0, 1)"),
    ("tracking.k", 50, "must be <= tracking.num_lanczos_steps = 40"),
    ("tracking.which", "smallest", "allowed: largest, magnitude"),
    ("eval.every_epochs", 300, "or the run never evaluates"),
    ("tracking.every_epochs", 300, "tracked only at initialization"),
    ("batch_size", 0, "must be > 0"),
    ("plateau.factor", 1.5, "must be in (0, 1)"),
])
def test_bad_config_fields_are_named_with_what_is_allowed(field, value, message):
  c = config_lib.default_config()
  set_field(c, field, value)
  with pytest.raises(config_lib.ConfigError, match=None) as e:
    config_lib.validate(c)
  assert f"config.{field}" in str(e.value) and message in str(e.value), str(e.value)


def test_full_batch_refuses_a_batch_norm_model_naming_those_without():
  c = config_lib.default_config()
  c.model, c.full_batch = "resnet32_bn", True
  with pytest.raises(config_lib.ConfigError, match="needs a model without batch norm") as e:
    config_lib.validate(c)
  assert "mlp" in str(e.value) and "vgg11" not in str(e.value).split("allowed:")[1]


def test_wrong_types_are_rejected_by_name():
  c = config_lib.default_config()
  with pytest.raises(TypeError):
    c.batch_size = 12.5  # ml_collections' type safety on assignment
  c = config_lib.default_config()
  c.tracking.tol = -1.0
  with pytest.raises(config_lib.ConfigError, match="config.tracking.tol"):
    config_lib.validate(c)


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 100_000}, "config.batch_size = 100000 is not valid: must be <= the 50000"),
    ({"tracking.num_examples": 60_000}, "config.tracking.num_examples"),
    ({"num_train_examples": 70_000}, "only 50000 examples"),
    ({"model": "resnet32"}, "cannot take inputs of shape (28, 28, 1)"),
    ({"model": "vgg11"}, "cannot take inputs of shape (28, 28, 1)"),
    ({"optimizer.name": "nsgd", "nsgd.num_directions": 6}, "must be <= tracking.k = 5"),
    ({"full_batch": True, "num_train_examples": 1000, "batch_size": 300}, "use a divisor of 1000"),
])
def test_configs_that_do_not_fit_the_data_are_rejected_before_training(tmp_path, overrides,
                                                                      message):
  c = config_lib.default_config()
  for field, value in overrides.items():
    set_field(c, field, value)
  with pytest.raises(config_lib.ConfigError) as e:
    train.train_and_evaluate(c, str(tmp_path))
  assert message in str(e.value), str(e.value)
  assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_every_config_module_builds_and_validates_each_variant():
  for path in sorted(CONFIGS.glob("*.py")):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "python experiments/" in module.__doc__, f"{path.name}: no launch command"
    for variant in (None,) + tuple(getattr(module, "VARIANTS", ())):
      config_lib.validate(module.get_config(variant))
    with pytest.raises(config_lib.ConfigError, match="unknown config variant"):
      module.get_config("no_such_variant")
    if hasattr(module, "get_sweep"):
      assert module.get_sweep(None)


ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_script(*args, timeout=600):
  import subprocess
  import sys
  return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT)


TINY = ["--config.num_train_examples=256", "--config.batch_size=64", "--config.num_epochs=1",
        "--config.model_kwargs.features=2", "--config.epoch_size=0",
        "--config.tracking.num_examples=64",
        "--config.tracking.batch_size=32", "--config.tracking.num_lanczos_steps=6",
        "--config.tracking.k=2", "--config.tracking.zoom_epochs=0.0",
        "--config.eval.num_train_examples=64", "--config.eval.max_examples=64",
        "--config.eval.batch_size=64"]


def test_sweep_prints_one_train_command_per_run_of_the_grid():
  out = run_script("experiments/sweep.py", "--config=configs/nsgd.py:cpu", "--workdir=runs/x",
                   "--sweep=nsgd.gamma=1,0.1", "--sweep=seed=0,1", "--print_only")
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 4
  assert "--workdir=runs/x/nsgd.gamma=0.1,seed=1" in lines[3]
  assert "--config.nsgd.gamma=0.1" in lines[3] and "--config.seed=1" in lines[3]
  out = run_script("experiments/sweep.py", "--config=configs/noise_grid.py:cpu",
                   "--workdir=runs/g", "--print_only")
  assert len(out.stdout.strip().splitlines()) == 10  # the η and S grids' 5 points, 2 seeds


def test_train_script_rejects_a_bad_override_by_name(tmp_path):
  out = run_script("experiments/train.py", "--config=configs/noise_grid.py:cpu",
                   f"--workdir={tmp_path}", "--config.tracking.which=smallest")
  assert out.returncode != 0
  assert "config.tracking.which = 'smallest'" in out.stderr and "largest" in out.stderr


def test_train_evaluate_scripts_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  out = run_script("experiments/train.py", "--config=configs/noise_grid.py:cpu",
                   f"--workdir={workdir}", *TINY)
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads(out.stdout.strip().splitlines()[-1])["status"] == "finished"
  out = run_script("experiments/evaluate.py", f"--workdir={workdir}", "--k=3",
                   "--num_examples=64", "--num_probes=3",
                   "--max_examples=64")  # the test examples the run evaluated
  assert out.returncode == 0, out.stderr[-3000:]
  assert "[1–2 of 2, " in out.stdout, out.stdout  # progress
  results = {w: json.load(open(workdir / f"evaluation_{w}.json")) for w in ("best", "last")}
  solves = out.stdout.count("top-3 Hessian eigenpairs on 64 examples")
  same_step = results["best"]["step"] == results["last"]["step"]
  assert solves == (1 if same_step else 2), out.stdout  # one evaluation per distinct step
  assert ("evaluated once" in out.stdout) == same_step
  for which, result in results.items():
    assert result["checkpoint"] == which
    assert len(result["lambda"]) == 3 and result["lambda"][0] >= result["lambda"][2]
    assert result["frobenius"] >= result["lambda"][0] > 0  # ‖H‖_F >= λ_max (to MC noise)
    assert math.isfinite(result["frobenius_as_in_paper"])
  run = metrics_io.read_run(str(workdir))
  last = json.load(open(workdir / "evaluation_last.json"))
  _, logged = run.series("test/accuracy")
  assert last["test/accuracy"] == pytest.approx(logged[-1], abs=1e-6)
  _, dist = run.series("distance_from_init")
  assert last["distance_from_init"] == pytest.approx(dist[-1], rel=1e-5)
  # At its defaults it takes the run's own k and N (the tracker's).
  out = run_script("experiments/evaluate.py", f"--workdir={workdir}", "--checkpoint=last",
                   "--num_probes=2", "--max_examples=64", "--overwrite")
  assert out.returncode == 0, out.stderr[-3000:]
  config = config_lib.from_stored(json.load(open(workdir / "config.json")))
  assert (f"top-{config.tracking.k} Hessian eigenpairs on {config.tracking.num_examples} "
          "examples") in out.stdout, out.stdout


def test_evaluate_heartbeat_speaks_during_a_long_phase():
  from test_faults import import_script  # pylint: disable=g-import-not-at-top
  evaluate = import_script("evaluate")  # its absl flags unregistered again
  heard = []
  with evaluate.heartbeat(heard.append, "solving", every=0.05):
    time.sleep(0.28)
  count = len(heard)
  time.sleep(0.12)
  assert 3 <= count <= 6 and len(heard) == count  # it speaks while the block runs, then stops
  assert heard[0].startswith("  ... still solving, ")


def test_optimizers_by_name_with_clipping_and_the_plateau_multiplier():
  """make_optimizer: optax.<name> with its kwargs, global-norm clipping first, then the
  reduce-on-plateau multiplier scaling the step."""
  import optax
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([30.0, 40.0, 0.0])}  # global norm 50
  c = config_lib.default_config()
  c.optimizer.name, c.optimizer.learning_rate = "adam", 0.1
  c.optimizer.kwargs = config_lib.ConfigDict({"b1": 0.5})
  c.optimizer.grad_clip_norm = 5.0
  tx = train.make_optimizer(c)
  updates, state = tx.update(grads, tx.init(params), params)
  ref = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(0.1, b1=0.5))
  expected, _ = ref.update(grads, ref.init(params), params)
  np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)
  state = train.set_lr_multiplier(state, 0.1)
  halved, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(halved["w"], 0.1 * np.asarray(updates["w"]), rtol=1e-5)
  c.optimizer.name, c.optimizer.grad_clip_norm, c.optimizer.momentum = "sgd", 0.0, 0.9
  tx = train.make_optimizer(c)
  u1, s = tx.update(grads, tx.init(params), params)
  u2, _ = tx.update(grads, s, params)
  np.testing.assert_allclose(u2["w"], -0.1 * (1 + 0.9) * np.asarray(grads["w"]), rtol=1e-6)


def test_init_from_reads_params_from_a_run_of_another_config(tmp_path):
  """The rescaling ablation starts from another run's checkpoint (other optimizer, other k)."""
  _, source = load_config("nsgd")
  source = shrink(source, epochs=1)
  train.train_and_evaluate(source, str(tmp_path / "source"))
  *_, source_tree = train.restore_run(str(tmp_path / "source"))
  _, c = load_config("rescaling", "remove_top,cpu")
  c = shrink(c, epochs=1)
  c.init_from = str(tmp_path / "source")
  c.tracking.enabled = False
  c.optimizer.name = "sgd"
  train.train_and_evaluate(c, str(tmp_path / "ablation"))
  run = metrics_io.read_run(str(tmp_path / "ablation"))
  _, dist = run.series("distance_from_init")
  assert dist[0] == 0.0  # init_params are the source's params
  _, loss = run.series("train/loss")
  source_run = metrics_io.read_run(str(tmp_path / "source"))
  _, source_loss = source_run.series("train/loss")
  assert loss[0] == pytest.approx(source_loss[-1], rel=1e-6)
  with pytest.raises(FileNotFoundError, match="has no checkpoint"):
    c.init_from = str(tmp_path / "nowhere")
    train.train_and_evaluate(c, str(tmp_path / "ablation2"))


def test_init_from_a_chosen_step_or_epoch(tmp_path):
  """F6 starts from the checkpoint just past a run's peak, not from its latest."""
  _, source = load_config("noise_grid")
  source = shrink(source, epochs=3)
  source.tracking.enabled = False
  source.keep_checkpoints = 10
  train.train_and_evaluate(source, str(tmp_path / "source"))
  _, losses = metrics_io.read_run(str(tmp_path / "source")).series("train/loss")  # epochs 0..3
  spe = 256 // 64  # steps per epoch of the shrunk run (an epoch is its 256 examples)
  _, c = load_config("rescaling", "cpu")
  c = shrink(c, epochs=1)
  c.init_from, c.tracking.enabled, c.optimizer.name = str(tmp_path / "source"), False, "sgd"
  for i, (field, value, epoch) in enumerate((("init_from_step", spe, 1),
                                             ("init_from_epoch", 2.5, 2))):
    c.init_from_step, c.init_from_epoch = -1, -1.0
    c[field] = value
    train.train_and_evaluate(c, str(tmp_path / f"ablation{i}"))
    _, loss = metrics_io.read_run(str(tmp_path / f"ablation{i}")).series("train/loss")
    assert loss[0] == pytest.approx(losses[epoch], rel=1e-6), field
  c.init_from_step, c.init_from_epoch = 3, -1.0
  with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 3 .*steps \[4, 8, 12\]"):
    train.train_and_evaluate(c, str(tmp_path / "ablation_bad"))
  c.init_from_step, c.init_from_epoch = 4, 1.0
  with pytest.raises(config_lib.ConfigError, match="not both"):
    train.train_and_evaluate(c, str(tmp_path / "ablation_both"))


def test_fixed_sample_tracks_the_same_examples_every_time():
  _, c = load_config("rescaling", "cpu")
  c = shrink(c)
  run_data = train.load_run_data(c)
  model, _, _ = train.initial_tree(c, run_data)
  samples = {}
  for fixed in (False, True):
    c.tracking.fixed_sample = fixed
    tracker = tracking.Tracker(c, model, run_data)
    samples[fixed] = [tracker.sample(step, 128, 64) for step in (0, 7)]
  fresh, fixed = samples[False], samples[True]
  assert not np.array_equal(fresh[0]["image"], fresh[1]["image"])
  np.testing.assert_array_equal(fixed[0]["image"], fixed[1]["image"])
  np.testing.assert_array_equal(fixed[0]["label"], fixed[1]["label"])
