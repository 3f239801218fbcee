"""The XLA CPU flag of sharp_dirs.xla_cpu, on and off, side by side.

Run:  .venv/bin/python bench/bench_xla_cpu.py [--rounds 3] [--repeats 5] [--batch 128]
        [--hessian_examples 256] [--quick]

XLA_FLAGS are read once per process, so each setting runs in its own worker process: rounds
alternate "flag on" (the default: ``--xla_cpu_experimental_ynn_fusion_type=``, YNNPACK fusions
off) and "flag off" (``SHARP_DIRS_KEEP_XLA_FLAGS=1``: jaxlib's default, YNNPACK fusions on).
Each worker times, on the same params and batch (bench_conv.median_ms: median of ``--repeats``
after a compile call): forward, gradient and jvp-of-grad HVP of SimpleCNN root with each conv
implementation (``xla`` = flax.linen.Conv, ``im2col``) and of the MLP 784-256-256-10, and one
``hessian_top_k`` solve (k = 1, 6 Lanczos steps, no tol) per HVP on ``--hessian_examples`` in
batches of min(128, --batch) with each conv implementation. ``--quick`` (CI's smoke test):
nn.Conv only, no MLP, 8 images, one round. Prints the median over rounds per setting and
the ratio off / on (> 1: the flag is faster).
"""

import argparse
import json
import os
import subprocess
import statistics
import sys

import timing  # bench/timing.py

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

WORKER_IMPLS = ("xla", "im2col")


def worker(args) -> dict:
  """{label: ms} for every measurement, in this process's XLA setting."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  import sharp_dirs as sd  # pylint: disable=g-import-not-at-top
  from bench import bench_conv  # pylint: disable=g-import-not-at-top
  from sharp_dirs import models  # pylint: disable=g-import-not-at-top

  impls = ("xla",) if args.quick else WORKER_IMPLS
  out = {}
  key_x, key_y = jax.random.split(jax.random.key(42))
  n = args.hessian_examples
  images = jax.random.normal(key_x, (n, 28, 28, 1), jnp.float32)
  labels = jax.random.randint(key_y, (n,), 0, 10, jnp.int32)
  batch = {"image": images[:args.batch], "label": labels[:args.batch]}
  model_list = [("simple_cnn_root", impls)] + ([] if args.quick else [("mlp", (None,))])
  for name, model_impls in model_list:
    timings = bench_conv.model_timings(name, batch, args.repeats, impls=model_impls)
    for impl, row in timings.items():
      label = name if name == "mlp" else f"{name} {impl}"
      out.update({f"{label} {what}": ms for what, ms in row.items()})

  per = min(128, args.batch)
  batches = {"image": images.reshape(n // per, per, 28, 28, 1),
             "label": labels.reshape(n // per, per)}
  for impl in impls:
    model = models.get_model("simple_cnn_root", conv_impl=impl)
    params, state = models.init_model(model, jax.random.key(0), batch)
    loss_fn = models.make_loss_fn(model, state, train=False)
    solve = lambda p: sd.hessian_top_k(loss_fn, p, batches, jax.random.key(1), k=1,  # noqa: E731
                                       num_lanczos_steps=6)
    ms = 1e3 * timing.median_seconds(solve, params, repeats=max(1, args.repeats // 2))
    out[f"simple_cnn_root {impl} hessian_top_k per HVP ({n} examples)"] = ms / 6
  return out


def run_worker(args, flag_on: bool) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "SHARP_DIRS_KEEP_XLA_FLAGS"}
  if not flag_on:
    env["SHARP_DIRS_KEEP_XLA_FLAGS"] = "1"
  cmd = [sys.executable, __file__, "--worker", f"--repeats={args.repeats}",
         f"--batch={args.batch}", f"--hessian_examples={args.hessian_examples}"]
  if args.quick:
    cmd.append("--quick")
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
  """Prints the table; returns {flag on (bool): {label: median ms}}."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--hessian_examples", type=int, default=256)
  parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, one round")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.quick:
    args.rounds, args.repeats, args.batch, args.hessian_examples = 1, 1, 8, 16
  if args.hessian_examples % min(128, args.batch):
    parser.error("--hessian_examples must be a multiple of min(128, --batch)")
  if args.worker:
    print(json.dumps(worker(args)))
    return {}

  import jax  # pylint: disable=g-import-not-at-top
  load_before = os.getloadavg()[0]
  results = {True: [], False: []}
  for _ in range(args.rounds):
    for flag_on in (True, False):
      results[flag_on].append(run_worker(args, flag_on))
  median = {flag_on: {label: statistics.median(r[label] for r in rows) for label in rows[0]}
            for flag_on, rows in results.items()}
  print(f"# YNNPACK fusions off (sharp_dirs' flag) vs on (jaxlib's default), {args.rounds} "
        f"rounds, median of {args.repeats} calls per round; batch {args.batch} × 28×28×1")
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load average {load_before:.1f} → "
        f"{os.getloadavg()[0]:.1f} (1 min)\n")
  print("| measurement | flag on (default) ms | flag off ms | off / on |")
  print("| --- | ---: | ---: | ---: |")
  for label, on in median[True].items():
    off = median[False][label]
    print(f"| {label} | {on:.1f} | {off:.1f} | {off / on:.2f} |")
  return median


if __name__ == "__main__":
  main()
