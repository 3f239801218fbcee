r"""The engine's costs: an NSGD step between refreshes vs an SGD step, and the tracking overhead.

Side by side in one process, on real Fashion-MNIST batches (random ones with --quick):
1. the jitted train step of ``sharp_dirs.engine.train`` with SGD and with NSGD between refreshes (K
   directions from the tracker kept in the optimizer state, as the paper: no HVP in the step),
   interleaved, median of ``--repeats`` timings each (target: NSGD at most 1.2x SGD on the MLP,
   issue 18; bench/bench_nsgd_step.py splits the difference into its pieces);
2. one tracking evaluation at the paper's settings (top-K on N fresh augmented examples,
   warm-started, tol 1e-3, or each of ``--tols``) against one epoch of SGD steps (45k/50k examples), i.e. the fraction
   of run time spent tracking at the paper's per-epoch frequency.

  .venv/bin/python bench/bench_train.py                       # SimpleCNN root and the MLP
  .venv/bin/python bench/bench_train.py --quick               # tiny smoke run (CI)
  .venv/bin/python bench/bench_train.py --models mlp --warm_methods lanczos,block
  .venv/bin/python bench/bench_train.py --models mlp --tols 1e-3,1e-1 --noise_groups 0
"""

import json
import os
import statistics
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from sharp_dirs.engine import config as config_lib
from sharp_dirs.engine import tracking
from sharp_dirs.engine import train

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402  pylint: disable=g-import-not-at-top

_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes: checks the script runs.")
_MODELS = flags.DEFINE_list("models", ["simple_cnn_root", "mlp"], "Models to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed train steps per optimizer.")
_K = flags.DEFINE_integer("k", 5, "Directions (NSGD) and tracked eigenpairs.")
_N = flags.DEFINE_integer("num_examples", 2560, "Hessian examples per tracking evaluation.")
_TRACK_REPEATS = flags.DEFINE_integer("track_repeats", 3, "Warm tracking evaluations timed.")
_WARM_METHODS = flags.DEFINE_list(
    "warm_methods", ["lanczos"],
    "tracking.warm_method values, each a tracker timed side by side (interleaved).")
_LINEARIZE = flags.DEFINE_bool("linearize", False, "tracking.linearize of every tracker.")
_TOLS = flags.DEFINE_list(
    "tols", ["1e-3"], "tracking.tol values, each a tracker per warm method (interleaved); the "
    "sample noise (bench_sample_noise.py) says how coarse a tol the figures can afford.")
_NOISE_GROUPS = flags.DEFINE_integer(
    "noise_groups", None, "tracking.noise_groups of every tracker (None: the config's; 0: no "
    "noise estimate, which costs k HVPs per evaluation).")


def make_config(model: str):
  c = config_lib.default_config()
  c.model = model
  c.tracking.k = _K.value
  c.tracking.num_examples = _N.value
  c.nsgd.num_directions = _K.value
  if _QUICK.value:
    c.num_train_examples = 512
    c.batch_size = 64
    c.tracking.num_examples = 128
    c.tracking.batch_size = 64
    c.tracking.num_lanczos_steps = 10
    if model == "mlp":
      c.model_kwargs = config_lib.ConfigDict({"hidden": (32,)})
  return c


def tracker_variants() -> list[tuple[str, float]]:
  return [(m, float(t)) for t in _TOLS.value for m in _WARM_METHODS.value]


def variant_name(method: str, tol: float) -> str:
  """A tracker's key: "lanczos" at the first tol (as in earlier runs), "lanczos@0.1" else."""
  return method if tol == float(_TOLS.value[0]) else f"{method}@{tol:g}"


def bench_model(model_name: str) -> dict:
  c = make_config(model_name)
  run_data = train.load_run_data(c)
  batches = train.stack_batches(run_data.train, c.batch_size)[0]
  batch = jax.tree.map(lambda x: jnp.asarray(x[0]), batches)
  steps, states = {}, {}
  for name in ("sgd", "nsgd"):
    c.optimizer.name = name
    model, tx, tree = train.initial_tree(c, run_data)
    steps[name] = train.make_train_step(c, model)
    states[name] = tree["state"]
  trackers = {}
  for method, tol in tracker_variants():
    tc = c.copy_and_resolve_references()
    tc.tracking.warm_method = method
    tc.tracking.tol = tol
    tc.tracking.linearize = _LINEARIZE.value
    if _NOISE_GROUPS.value is not None:
      tc.tracking.noise_groups = _NOISE_GROUPS.value
    trackers[variant_name(method, tol)] = tracking.Tracker(tc, model, run_data)
  state = jax.tree.map(jnp.copy, states["sgd"])  # the train steps donate their input states
  for tracker in trackers.values():  # compile, cold
    pairs, _, _ = tracker.evaluate(state.params, state.model_state, 0, 0, 0.01)
  times = {"sgd": [], "nsgd": []}
  for name in times:  # compile: NSGD receives the directions once, then keeps them
    states[name], _ = steps[name](states[name], batch, pairs if name == "nsgd" else None)
    states[name], _ = steps[name](states[name], batch, None)
  for _ in range(_REPEATS.value):
    for name in times:
      seconds, (states[name], _) = timing.timed(steps[name], states[name], batch, None)
      times[name].append(seconds)
  sgd, nsgd = statistics.median(times["sgd"]), statistics.median(times["nsgd"])
  track = {method: [] for method in trackers}
  for i in range(_TRACK_REPEATS.value):
    for method, tracker in trackers.items():
      seconds, (_, values, _) = timing.timed(tracker.evaluate, state.params, state.model_state,
                                             i + 1, i + 1, 0.01)
      track[method].append((seconds, values["hessian/num_hvps"]))
  steps_per_epoch = train.num_examples(run_data.train) // c.batch_size
  out = {
      "model": model_name, "params": int(sum(np.size(x) for x in jax.tree.leaves(
          state.params))),
      "sgd_step_s": sgd, "nsgd_step_s": nsgd, "nsgd_over_sgd": nsgd / sgd,
      "epoch_s": steps_per_epoch * sgd, "steps_per_epoch": steps_per_epoch,
  }
  for j, (method, rows) in enumerate(track.items()):
    track_s = statistics.median(t for t, _ in rows)
    suffix = "" if j == 0 else f"_{method}"  # the first method's keys keep their names
    out.update({
        f"warm_method{suffix}": method,
        f"tracking_s{suffix}": track_s, f"tracking_hvps{suffix}": [h for _, h in rows],
        f"tracking_fraction{suffix}": track_s / (track_s + steps_per_epoch * sgd),
        f"tracking_over_epoch{suffix}": track_s / (steps_per_epoch * sgd)})
  return out


def main(argv):
  del argv
  print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, tracking.linearize "
        f"{_LINEARIZE.value}")
  for model in _MODELS.value:
    r = bench_model(model)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}))
    print(f"{model}: SGD step {r['sgd_step_s'] * 1e3:.1f} ms, NSGD step "
          f"{r['nsgd_step_s'] * 1e3:.1f} ms (x{r['nsgd_over_sgd']:.3f})")
    for j, method in enumerate(variant_name(*v) for v in tracker_variants()):
      sfx = "" if j == 0 else f"_{method}"
      print(f"  {method}: one tracking evaluation {r['tracking_s' + sfx]:.1f} s "
            f"({r['tracking_hvps' + sfx]} HVPs) = {r['tracking_over_epoch' + sfx]:.2f} epochs of "
            f"SGD -> {100 * r['tracking_fraction' + sfx]:.0f}% of run time at one evaluation "
            "per epoch")


if __name__ == "__main__":
  app.run(main)
