"""Wall time and compiled memory of one hessian_top_k solve: jvp HVPs vs one reused linearization.

SimpleCNN root on a real Fashion-MNIST Hessian sample, fixed number of Lanczos steps, the two
strategies interleaved in one process (medians of --repeats solves after a compile):

  .venv/bin/python bench/bench_hessian_solve.py --examples 256 --steps 20 --repeats 3
"""

import argparse
import os
import statistics
import time

import jax

import sharp_dirs
from sharp_dirs import data
from sharp_dirs import models
from sharp_dirs.curvature import conv_layout
from sharp_dirs.curvature import hessian


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--examples", type=int, default=256)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--k", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--features", type=int, default=32,
                      help="SimpleCNN width (32: the root; the smoke test's tiny run uses 2)")
  args = parser.parse_args()

  dataset = data.load_dataset("fashion_mnist")
  model = models.get_model("simple_cnn_root", features=args.features)
  key = jax.random.PRNGKey(0)
  params, state = models.init_model(model, key, jax.tree.map(lambda x: x[:2], dataset.train))
  loss_fn = models.make_loss_fn(model, state, train=False)
  sample = data.hessian_sample(dataset.train, key, num_examples=args.examples)
  solve = {
      name: (lambda linearize: lambda: jax.block_until_ready(sharp_dirs.hessian_top_k(
          loss_fn, params, sample, key, k=args.k, num_lanczos_steps=args.steps,
          linearize=linearize)))(linearize)
      for name, linearize in (("jvp", False), ("linearize", True))}
  print(f"jax {jax.__version__}, {jax.default_backend()}, load average {os.getloadavg()[0]:.1f};"
        f" SimpleCNN root (features {args.features}), {args.examples} examples, {args.steps}"
        f" Lanczos steps, k={args.k}")
  temp = {}
  for name, linearize in (("jvp", False), ("linearize", True)):
    compiled = hessian._hessian_top_k.lower(
        loss_fn, params, sample, key, None, k=args.k, num_lanczos_steps=args.steps,
        which="largest", tol=None, num_guard=2, exact_residuals=False,
        linearize=linearize, canonical_convs=conv_layout.use_canonical_convs(None)).compile()
    temp[name] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    solve[name]()  # compile the jitted call
  times = {name: [] for name in solve}
  for _ in range(args.repeats):
    for name, fn in solve.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  base = statistics.median(times["jvp"])
  print("| HVP strategy | solve s (median) | / jvp | compiled temp MiB |")
  print("| --- | ---: | ---: | ---: |")
  for name in solve:
    t = statistics.median(times[name])
    print(f"| {name} | {t:.1f} | {t / base:.2f} | {temp[name]:.0f} |")


if __name__ == "__main__":
  main()
