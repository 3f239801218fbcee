"""Examples/s of the augmented input pipeline (batch 128), Fashion-MNIST and CIFAR shapes.

Measures, per shape, after one warm-up call:
- augment: ``augment_batch`` (jit: edge-padded shifts + flips) on a device-resident batch;
- pipeline: the full ``epoch_batches(..., augment=True)`` step: host gather of a shuffled batch
  from the in-memory train arrays, transfer, augmentation (what a training loop consumes);
- hessian: ``hessian_sample`` of 2560 fresh augmented examples (20 × 128).
Synthetic arrays of the real sizes (50k / 45k training images) are used, so no data is needed.

  python bench/bench_input_pipeline.py [--steps 200]
"""

import argparse
import platform
import time

import jax
import numpy as np

from sharp_dirs.data import augment
from sharp_dirs.data import pipeline


def _time(fn, repeats):
  jax.block_until_ready(fn(0))  # compile / warm up
  start = time.perf_counter()
  for i in range(1, repeats + 1):
    out = fn(i)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def bench(name, num_train, shape, batch_size, steps):
  images = np.random.RandomState(0).randn(num_train, *shape).astype(np.float32)
  split = {"image": images, "label": np.zeros(num_train, np.int32)}
  device_batch = jax.device_put(images[:batch_size])
  t_aug = _time(lambda i: augment.augment_batch(jax.random.PRNGKey(i), device_batch), steps)
  t_sub = _time(lambda i: augment.augment_batch(jax.random.PRNGKey(i), device_batch,
                                                subpixel=True), steps)
  batches = pipeline.batch_stream(split, batch_size, seed=0, augment=True)
  t_pipe = _time(lambda i: next(batches)[2]["image"], steps)
  t_hess = _time(lambda i: pipeline.hessian_sample(split, jax.random.PRNGKey(i))["image"],
                 max(3, steps // 20))
  rows = [("augment_batch (integer shifts)", t_aug, batch_size),
          ("augment_batch (subpixel=True)", t_sub, batch_size),
          ("epoch_batches step (gather+augment)", t_pipe, batch_size),
          ("hessian_sample N=2560", t_hess, 2560)]
  for what, t, n in rows:
    print(f"| {name} {shape} | {what} | {t * 1e3:8.2f} ms | {n / t:12,.0f} examples/s |")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=200)
  args = parser.parse_args()
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{jax.devices()[0].device_kind}, {platform.processor() or platform.machine()}")
  print("| shape | stage | time per call | throughput |")
  print("| --- | --- | --- | --- |")
  bench("Fashion-MNIST", 50_000, (28, 28, 1), 128, args.steps)
  bench("CIFAR", 45_000, (32, 32, 3), 128, args.steps)


if __name__ == "__main__":
  main()
