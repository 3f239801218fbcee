r"""R runs as one vmapped program against R separate programs: does batching seeds pay on CPU?

The question behind the sweeps' "seeds together" option (issue 25, item 2): for R runs of one
family that share their shapes, is one ``jax.vmap``ped train step (and one vmapped tracker
solve) over the R runs' stacked parameters faster than R calls of the single-run program?
Measured on the two pieces a cpu run spends its time in, for R = 1, 2, 5:

- the SGD train step (value and grad of the mean cross-entropy on a batch of S = 128, one
  update), R separate jitted calls vs one vmapped call over R parameter sets and R batches;
- the tracker's solve: ``hessian_top_k`` (k = 2, 20 Lanczos steps, no early stop, so every
  run does the same number of HVPs) on N = 512 examples (2 batches of 256), R calls vs one
  vmapped call over R parameter sets and samples.

On the CPU-scale SimpleCNN (F = 8) and the 784-256-256-10 MLP, random inputs of Fashion-MNIST's
shape (throughput does not depend on the values). Prints a markdown table: milliseconds per R
runs, separate and vmapped, and the speed-up (separate / vmapped); median of ``--repeats``;
a progress line on stderr after every timed call.

  .venv/bin/python bench/bench_vmap_runs.py
  .venv/bin/python bench/bench_vmap_runs.py --runs=1,2 --repeats=2 --models=mlp   # smoke
"""

import functools
import statistics
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import optax

import timing
from sharp_dirs.curvature import hessian
from sharp_dirs.models import loss as model_loss
from sharp_dirs.models import registry

_RUNS = flags.DEFINE_list("runs", ["1", "2", "5"], "R values.")
_MODELS = flags.DEFINE_list("models", ["scnn8", "mlp"], "Models: scnn8, mlp.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per point (median).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "S of the train step.")
_HESSIAN = flags.DEFINE_integer("hessian_examples", 512, "N of the solve (batches of 256).")
_STEPS = flags.DEFINE_integer("lanczos_steps", 20, "HVPs per solve.")

MODELS = {"scnn8": ("simple_cnn_root", {"features": 8}), "mlp": ("mlp", {"hidden": (256, 256)})}


def images(key, shape):
  k1, k2 = jax.random.split(key)
  return {"image": jax.random.normal(k1, shape + (28, 28, 1)),
          "label": jax.random.randint(k2, shape, 0, 10)}


def stacked(fn, keys):
  """The pytree fn(key) for each key, stacked on a new leading axis [R, ...]."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *[fn(k) for k in keys])


def run_point(name: str, r: int) -> dict:
  model = registry.get_model(MODELS[name][0], **MODELS[name][1])
  example = images(jax.random.PRNGKey(0), (2,))
  params_r = stacked(lambda k: model_loss.init_model(model, k, example)[0],
                     list(jax.random.split(jax.random.PRNGKey(1), r)))
  loss_fn = model_loss.make_loss_fn(model, {}, train=False)

  def sgd_step(params, batch):
    grads = jax.grad(loss_fn)(params, batch)
    return optax.apply_updates(params, jax.tree.map(lambda g: -0.03 * g, grads))

  def solve(params, sample, key):
    return hessian.hessian_top_k(loss_fn, params, sample, key, k=2,
                                 num_lanczos_steps=_STEPS.value).eigvals

  batches = stacked(lambda k: images(k, (_BATCH.value,)),
                    list(jax.random.split(jax.random.PRNGKey(2), r)))
  samples = stacked(lambda k: images(k, (_HESSIAN.value // 256, 256)),
                    list(jax.random.split(jax.random.PRNGKey(3), r)))
  keys = jax.random.split(jax.random.PRNGKey(4), r)
  one = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
  step_one, step_all = jax.jit(sgd_step), jax.jit(jax.vmap(sgd_step))
  solve_one, solve_all = jax.jit(solve), jax.jit(jax.vmap(solve))

  def separate(fn, *trees):
    return [fn(*(one(t, i) for t in trees)) for i in range(r)]

  out = {}
  for what, single, batched, args in (("train step", step_one, step_all, (params_r, batches)),
                                      ("solve", solve_one, solve_all, (params_r, samples, keys))):
    out[what] = tuple(median_with_progress(f"{name} R={r} {what} {how}", fn, args)
                      for how, fn in (("separate", functools.partial(separate, single)),
                                      ("vmapped", batched)))
  return out


def median_with_progress(label: str, fn, args) -> float:
  """``timing.median_seconds`` of fn(*args) over --repeats calls, a line on stderr after the
  compile and after each call (a SimpleCNN point at R = 5 takes minutes)."""
  seconds, _ = timing.timed(fn, *args)
  print(f"  {label}: compiled and ran once in {seconds:.1f} s", file=sys.stderr, flush=True)
  times = []
  for i in range(_REPEATS.value):
    times.append(timing.timed(fn, *args)[0])
    print(f"  {label}: call {i + 1} of {_REPEATS.value}, {times[-1]:.2f} s", file=sys.stderr,
          flush=True)
  return statistics.median(times)


def main(argv):
  del argv
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{jax.device_count()} device(s)\n")
  print("| model | R | piece | R separate (ms) | one vmapped (ms) | speed-up |")
  print("| --- | ---: | --- | ---: | ---: | ---: |")
  for name in _MODELS.value:
    for r in map(int, _RUNS.value):
      for what, (sep, vm) in run_point(name, r).items():
        print(f"| {name} | {r} | {what} | {1e3 * sep:.1f} | {1e3 * vm:.1f} | {sep / vm:.2f}× |",
              flush=True)


if __name__ == "__main__":
  app.run(main)
