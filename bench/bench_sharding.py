r"""Data-parallel scaling: train-step and HVP time on 1, 2, 4, ... devices, and vs Hessian examples.

What is timed is the engine's own code: ``train.make_train_step`` (SGD, the batch split over a
``data`` mesh axis by ``sharp_dirs.engine.distributed.Placement``) and the tracker's matvec
``hessian.dataset_hvp`` (one HVP of the mean loss over N examples, stacked batches
``[N / b, b, ...]`` with each batch split over ``data``, parameters and vector replicated), on
the 784-256-256-10 MLP of the cpu configs with random Fashion-MNIST-shaped inputs. One device
is the engine's single-device path (plain ``jit``, no mesh). Each program is compiled and
called once, then timed ``--repeats`` times and the median kept; the device counts are measured
in ``--rounds`` interleaved rounds and each row keeps its fastest round (so that a change of
load on a shared machine hits every count alike).

Device counts: by default each count runs in its own process (on CPU with
``--xla_force_host_platform_device_count=n``, so 4 "devices" share this machine's cores);
``--in_process`` uses the first n devices of one process (GPUs, TPU chips).

  .venv/bin/python bench/bench_sharding.py                       # CPU: 1, 2, 4 simulated
  .venv/bin/python bench/bench_sharding.py --quick               # tiny smoke run
  python bench/bench_sharding.py --in_process --devices=1,2,4,8 \
      --batch_size=1024 --num_examples=2560,10240,40960          # a multi-GPU or TPU host
"""

import argparse
import json
import os
import platform
import subprocess
import sys

import timing  # bench/timing.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--devices", default="1,2,4", help="device counts, comma-separated")
  p.add_argument("--batch_size", type=int, default=256, help="train batch and Hessian batch b")
  p.add_argument("--num_examples", default="256,1024,4096", help="Hessian examples N")
  p.add_argument("--hidden", default="256,256", help="MLP widths")
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--in_process", action="store_true", help="first n devices of this process")
  p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
  p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.quick:
    args.devices, args.batch_size, args.num_examples = "1,2", 16, "16,32"
    args.hidden, args.repeats, args.rounds = "16", 1, 1
  args.device_counts = [int(x) for x in args.devices.split(",")]
  args.ns = [int(x) for x in args.num_examples.split(",")]
  args.widths = tuple(int(x) for x in args.hidden.split(","))
  return args


def measure(args, n: int) -> list:
  """Rows (devices, what, examples, seconds) on the first n devices of this process."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sharp_dirs.curvature import hessian  # pylint: disable=g-import-not-at-top
  from sharp_dirs.curvature import tree_math as tm  # pylint: disable=g-import-not-at-top
  from sharp_dirs.engine import config as config_lib  # pylint: disable=g-import-not-at-top
  from sharp_dirs.engine import distributed  # pylint: disable=g-import-not-at-top
  from sharp_dirs.engine import train  # pylint: disable=g-import-not-at-top
  from sharp_dirs.models import loss as model_loss  # pylint: disable=g-import-not-at-top

  if jax.device_count() < n:
    raise SystemExit(f"{n} devices asked, {jax.device_count()} present")
  placement = None
  if n > 1:
    mesh = jax.make_mesh((n, 1), distributed.AXES, devices=jax.devices()[:n],
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    placement = distributed.Placement(mesh)
  c = config_lib.default_config()
  c.model, c.model_kwargs = "mlp", config_lib.ConfigDict({"hidden": args.widths})
  c.batch_size = args.batch_size
  rng = np.random.default_rng(0)
  b = args.batch_size
  batch = {"image": rng.normal(size=(b, 28, 28, 1)).astype(np.float32),
           "label": rng.integers(0, 10, size=(b,)).astype(np.int32)}
  model, params, model_state = train.build_model(c, batch)
  tx = train.make_optimizer(c)
  own = jax.tree.map(jax.numpy.copy, params)  # the train step donates its state
  state = train.TrainState(jax.numpy.zeros([], jax.numpy.int32), own, tx.init(own), model_state)
  if placement is not None:
    state = placement.put_tree(state, params)
  step = train.make_train_step(c, model, placement)
  on_device = placement.put_batch(batch) if placement else jax.device_put(batch)
  box = {"state": state}

  def train_step():
    box["state"], metrics = step(box["state"], on_device, None)
    return metrics

  rows = [(n, "train step", b, timing.median_seconds(train_step, repeats=args.repeats))]

  loss_fn = model_loss.make_loss_fn(model, model_state, train=False)

  def hvp(params, sample, v):
    return hessian.dataset_hvp(loss_fn, params, sample)(v)

  for num in args.ns:
    nb = -(-num // b)
    sample = {"image": rng.normal(size=(nb, b, 28, 28, 1)).astype(np.float32),
              "label": rng.integers(0, 10, size=(nb, b)).astype(np.int32)}
    v = tm.normal_like(jax.random.PRNGKey(1), params)
    if placement is None:
      fn, args_ = jax.jit(hvp), (params, jax.device_put(sample), v)
    else:
      fn = placement.jit(hvp, out_shardings_fn=lambda a: placement.replicated)
      args_ = (placement.put_tree(params, params), placement.put_batch(sample, 1),
               placement.put_tree(v, params))
    rows.append((n, "HVP", nb * b, timing.median_seconds(fn, *args_, repeats=args.repeats)))
  return rows


def child_rows(argv: list, n: int) -> list:
  """measure() in a fresh process with n simulated CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={n}").strip(),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, f"--child={n}"],
                       env=env, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f"the {n}-device process failed:\n{out.stderr[-3000:]}")
  return [tuple(r) for r in json.loads(out.stdout.strip().splitlines()[-1])]


def table(rows: list) -> str:
  base = {(what, num): s for n, what, num, s in rows if n == min(r[0] for r in rows)}
  lines = ["| devices | what | examples | ms | speed-up vs fewest devices |",
           "| ---: | --- | ---: | ---: | ---: |"]
  for n, what, num, s in sorted(rows, key=lambda r: (r[1] != "train step", r[2], r[0])):
    lines.append(f"| {n} | {what} | {num} | {1e3 * s:.2f} | {base[(what, num)] / s:.2f}x |")
  return "\n".join(lines)


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse(argv)
  if args.child:
    print(json.dumps(measure(args, args.child)))
    return None
  best = {}
  for _ in range(args.rounds):
    for n in args.device_counts:
      for r in (measure(args, n) if args.in_process else child_rows(argv, n)):
        best[r[:3]] = min(best.get(r[:3], r), r, key=lambda row: row[3])
  rows = list(best.values())
  import jax  # pylint: disable=g-import-not-at-top
  where = (f"{jax.devices()[0].device_kind} ({jax.default_backend()}), devices of one process"
           if args.in_process else "CPU, one process per count with n simulated devices")
  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax "
        f"{jax.__version__}; {where}; MLP {args.widths}, batch {args.batch_size}, median of "
        f"{args.repeats}, best of {args.rounds} rounds")
  print(table(rows))
  return rows


if __name__ == "__main__":
  main()
