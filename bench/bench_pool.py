"""A user's max pools on CPU: XLA's select_and_scatter vs sharp_dirs' elementwise pool rewrite.

Run:  .venv/bin/python bench/bench_pool.py [--batch 128] [--train-batch 512] [--num-batches 2]
        [--steps 5] [--rounds 5] [--quick]

The model is bench_user_conv's UserSimpleCNN (flax ``nn.Conv`` and ``nn.max_pool(x, (2, 2),
(2, 2))``, the paper's SimpleCNN root shapes) on Fashion-MNIST-shaped random images. Each path
runs twice on the same params and batches, differing only in the pool:

- "xla": the gradient rewritten with ``canonicalize_convs(..., pools=False)`` (convolutions in
  XLA CPU's fast layout, pools left to XLA: ``reduce_window`` forward, ``select_and_scatter``
  gradient, which XLA expands into a reduce-window over index iotas and a scatter);
- "rewrite": ``canonicalize_convs(...)`` (the library's default on CPU): the pools and their
  derivatives as masks over the windows (``conv_layout.pool``, ``pool_scatter``).

Paths: one SGD training step (value and gradient) on ``--train-batch`` images; one
forward-over-reverse HVP on ``--batch`` images; and Lanczos (``top_k_eigenpairs``, a
``while_loop``) over ``--num-batches`` batches of ``--batch`` (``hessian.batch_mean``, a
``scan``), time per HVP: what ``hessian_top_k`` runs. Every program is compiled and called once
first; then ``--rounds`` interleaved rounds, minimum kept. Prints ms and the ratio xla / rewrite
(> 1: the rewrite is faster). ``--quick``: tiny sizes, for CI's smoke test.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import sharp_dirs  # noqa: E402
from sharp_dirs.curvature import conv_layout  # noqa: E402
from sharp_dirs.curvature import hessian  # noqa: E402
from sharp_dirs.curvature import tree_math as tm  # noqa: E402
from bench.bench_user_conv import UserSimpleCNN  # noqa: E402
import timing  # noqa: E402  # bench/timing.py

VARIANTS = {"xla": False, "rewrite": True}   # canonicalize_convs(pools=...)


def programs(loss_fn, params, batch, train_batch, batches, steps, pools):
  """{path: (compiled program, its args, HVPs per call)} for one pool variant."""
  grad = conv_layout.canonicalize_convs(jax.grad(loss_fn), pools=pools)
  value_and_grad = conv_layout.canonicalize_convs(jax.value_and_grad(loss_fn), pools=pools)

  def train_step(p, b):
    loss, g = value_and_grad(p, b)
    return jax.tree.map(lambda w, d: w - 0.01 * d, p, g), loss

  def hvp(p, b, v):
    return jax.jvp(lambda q: grad(q, b), (p,), (v,))[1]

  def lanczos(p, bs, v0):
    matvec = lambda v: hessian.batch_mean(lambda b: hvp(p, b, v), v, bs)
    return sharp_dirs.top_k_eigenpairs(matvec, v0, 1, steps, num_guard=0).eigvals

  v = tm.normal_like(jax.random.PRNGKey(3), params)
  jobs = {"train step": (train_step, (params, train_batch), 1),
          "HVP": (hvp, (params, batch, v), 1),
          "HVP in Lanczos": (lanczos, (params, batches, v), steps)}
  return {path: (jax.jit(fn).lower(*args).compile(), args, n) for path, (fn, args, n)
          in jobs.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--train-batch", type=int, default=512)
  parser.add_argument("--num-batches", type=int, default=2)
  parser.add_argument("--steps", type=int, default=5, help="Lanczos steps (HVPs)")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args(argv)
  if args.quick:
    args.batch, args.train_batch, args.num_batches, args.steps, args.rounds = 8, 8, 2, 2, 1
  model = UserSimpleCNN()
  n = max(args.train_batch, args.batch * args.num_batches)
  images = jax.random.normal(jax.random.PRNGKey(0), (n, 28, 28, 1))
  labels = jax.random.randint(jax.random.PRNGKey(1), (n,), 0, 10)
  params = model.init(jax.random.PRNGKey(2), images[:2])["params"]

  def loss_fn(p, b):
    logits = model.apply({"params": p}, b["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]).mean()

  take = lambda m: {"x": images[:m], "y": labels[:m]}
  per = args.batch * args.num_batches
  batches = {"x": images[:per].reshape(args.num_batches, args.batch, 28, 28, 1),
             "y": labels[:per].reshape(args.num_batches, args.batch)}
  compiled = {name: programs(loss_fn, params, take(args.batch), take(args.train_batch), batches,
                             args.steps, pools) for name, pools in VARIANTS.items()}
  for jobs in compiled.values():
    for exe, call_args, _ in jobs.values():
      timing.timed(exe, *call_args)[0]   # warm-up
  best = {(name, path): float("inf") for name, jobs in compiled.items() for path in jobs}
  for _ in range(args.rounds):
    for name, jobs in compiled.items():
      for path, (exe, call_args, hvps) in jobs.items():
        best[name, path] = min(best[name, path], timing.timed(exe, *call_args)[0] / hvps)
  print(f"jax {jax.__version__}, load average {os.getloadavg()[0]:.1f}; UserSimpleCNN, "
        f"HVP batch {args.batch}, train batch {args.train_batch}, Lanczos over "
        f"{args.num_batches} batches × {args.steps} steps; min of {args.rounds} rounds")
  print("| path | XLA's pool (ms) | pool rewrite (ms) | XLA / rewrite |")
  print("| --- | ---: | ---: | ---: |")
  rows = []
  for path in compiled["xla"]:
    xla, rewrite = 1e3 * best["xla", path], 1e3 * best["rewrite", path]
    rows.append((path, xla, rewrite, xla / rewrite))
    print(f"| {path}{' (per HVP)' if path == 'HVP in Lanczos' else ''} | {xla:.1f} | "
          f"{rewrite:.1f} | {xla / rewrite:.2f} |")
  return rows


if __name__ == "__main__":
  main()
