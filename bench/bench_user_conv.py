"""A user's own flax model: time per HVP inside the library's loops vs a standalone jitted HVP.

Run:  .venv/bin/python bench/bench_user_conv.py [--batch 64] [--num-batches 2] [--steps 5]
        [--probes 3] [--repeats 3] [--models user_cnn,mlp] [--image 28] [--paths ...]
        [--quick]

The models are written as a user would (flax ``nn.Conv``/``nn.Dense``, not the library's im2col
layers): the paper's SimpleCNN root shapes (conv32 same, conv32 valid, maxpool, conv64 same,
conv64 valid, maxpool, dense128, dense10) and a 784-256-256-10 ReLU MLP, on
Fashion-MNIST-shaped random inputs. One process, same params and batches for every path; each
program is compiled first (``jit(...).lower(...).compile()``), called once, then timed as the
median of ``--repeats`` calls. Rows, in seconds per HVP over all ``--num-batches`` batches:

- standalone: ``jit`` of the user's plain HVP (``jax.jvp`` of ``jax.grad``), batches summed by
  an unrolled Python loop inside the jit: no XLA loop, so XLA canonicalizes its convolutions
  (the reference of every ratio); ``standalone_lib``: the same with ``sharp_dirs.hvp``;
- ``top_k``/``top_k_off``: the library's jitted Lanczos (``while_loop`` over steps, ``scan``
  over batches) with the default ``canonical_convs`` (on CPU: on) and with
  ``canonical_convs=False`` (the behaviour before: XLA's layouts inside the loop; timed once),
  time / num_matvecs;
- ``hutchinson``/``slq``: ``hutchinson_trace`` (``lax.map`` over probes) and
  ``spectral_density`` on ``dataset_hvp``, time / HVPs;
- ``nsgd``: a jitted train step whose ``nudged_sgd`` refresh is due, minus the same step with
  ``optax.sgd``, / the refresh's HVPs, against a standalone HVP on its one batch.

The hessian_top_k rows also list the convolution layouts in XLA's compiled program
(``b01f_01io->b01f`` is the fast canonical form). ``--quick``: tiny sizes, for CI's smoke test.
"""

import argparse
import os
import platform
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import sharp_dirs  # noqa: E402
from sharp_dirs import tree_math as tm  # noqa: E402


class UserSimpleCNN(nn.Module):
  """The paper's SimpleCNN root, as a user writes it with flax's layers."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(32, (3, 3), padding="SAME")(x))
    x = nn.relu(nn.Conv(32, (3, 3), padding="VALID")(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(64, (3, 3), padding="SAME")(x))
    x = nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128)(x))
    return nn.Dense(10)(x)


class UserMLP(nn.Module):
  """784-256-256-10 ReLU MLP (on 28×28 inputs)."""

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(256)(x))
    x = nn.relu(nn.Dense(256)(x))
    return nn.Dense(10)(x)


MODELS = {"user_cnn": UserSimpleCNN, "mlp": UserMLP}


def load() -> str:
  return f"{os.getloadavg()[0]:.1f}"


def compiled(fn, *args):
  """The compiled executable of jit(fn) on args (compile time excluded from timings)."""
  return jax.jit(fn).lower(*args).compile()


def median_s(fn, *args, repeats: int):
  """(median seconds, last output) of fn(*args) over ``repeats`` calls after a warm-up call."""
  out = jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def conv_layouts(executable) -> str:
  """Counts of the convolution layouts in a compiled XLA program, e.g. 'b01f_01io->b01f: 9'."""
  labels = re.findall(r"convolution\([^)]*\), window=\{[^}]*\}, dim_labels=(\S+?),",
                      executable.as_text())
  counts = {label: labels.count(label) for label in sorted(set(labels))}
  return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "no convolution"


def bench_model(name: str, args) -> list:
  model = MODELS[name]()
  key = jax.random.PRNGKey(0)
  shape = (args.num_batches, args.batch, args.image, args.image, 1)
  batches = {"x": jax.random.normal(key, shape),
             "y": jax.random.randint(jax.random.PRNGKey(1), shape[:2], 0, 10)}
  params = model.init(jax.random.PRNGKey(2), batches["x"][0])["params"]
  v = tm.normal_like(jax.random.PRNGKey(3), params)
  batch0 = jax.tree.map(lambda x: x[0], batches)

  def loss_fn(p, batch):
    logits = model.apply({"params": p}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

  def user_hvp(p, batch, v):  # what a user writes: forward-over-reverse, nothing else
    return jax.jvp(lambda q: jax.grad(loss_fn)(q, batch), (p,), (v,))[1]

  def standalone(p, batches, v, hvp=user_hvp):  # over all batches, unrolled: no XLA loop
    total = tm.scale(0.0, v)
    for i in range(args.num_batches):
      total = tm.add(total, hvp(p, jax.tree.map(lambda x: x[i], batches), v))
    return tm.scale(1.0 / args.num_batches, total)

  rows = []
  r = args.repeats
  t_alone, _ = median_s(compiled(standalone, params, batches, v), params, batches, v, repeats=r)
  rows.append((name, "standalone jitted HVP (all batches)", t_alone, 1.0, ""))

  if "standalone_lib" in args.paths:
    lib = lambda p, b, v: standalone(p, b, v, hvp=lambda *a: sharp_dirs.hvp(loss_fn, *a))
    t, _ = median_s(compiled(lib, params, batches, v), params, batches, v, repeats=r)
    rows.append((name, "standalone jitted sharp_dirs.hvp (canonical convs)", t, t / t_alone, ""))

  for path, canonical, repeats in (("top_k", None, r), ("top_k_off", False, 1)):
    if path not in args.paths:
      continue

    def solve(p, b, canonical=canonical):
      return sharp_dirs.hessian_top_k(loss_fn, p, b, key, k=1, num_lanczos_steps=args.steps,
                                      canonical_convs=canonical)

    exe = compiled(solve, params, batches)
    t, pairs = median_s(exe, params, batches, repeats=repeats)
    per = t / int(pairs.num_matvecs)
    label = "default (CPU: canonical convs)" if canonical is None else "canonical_convs=False"
    rows.append((name, f"hessian_top_k, {label}", per, per / t_alone, conv_layouts(exe)))

  if "hutchinson" in args.paths:
    def hutchinson(p, b):
      return sharp_dirs.hutchinson_trace(sharp_dirs.dataset_hvp(loss_fn, p, b), p, key,
                                         args.probes).value

    t, _ = median_s(compiled(hutchinson, params, batches), params, batches, repeats=r)
    rows.append((name, "hutchinson_trace, per probe", t / args.probes,
                 t / args.probes / t_alone, ""))

  if "slq" in args.paths:
    def slq(p, b):
      return sharp_dirs.spectral_density(sharp_dirs.dataset_hvp(loss_fn, p, b), p, key,
                                         num_draws=1, num_steps=args.steps).nodes

    t, _ = median_s(compiled(slq, params, batches), params, batches, repeats=r)
    rows.append((name, "spectral_density (SLQ), per HVP", t / args.steps,
                 t / args.steps / t_alone, ""))

  if "nsgd" in args.paths:
    # A train step whose NSGD refresh is due (count 0) minus the same step with plain SGD (the
    # nudge between refreshes is a k = 1 projection), per HVP of the refresh, against a
    # standalone HVP on the same one batch.
    def make_step(tx):
      def step(p, opt_state, batch):
        grads = jax.grad(loss_fn)(p, batch)
        updates, opt_state = tx.update(grads, opt_state, p,
                                       obj_fn=lambda q: loss_fn(q, batch))
        return optax.apply_updates(p, updates), opt_state
      return step

    times = {}
    for kind, tx in (("refresh", sharp_dirs.nudged_sgd(0.01, 1, num_lanczos_steps=args.steps)),
                     ("sgd", optax.sgd(0.01))):
      state = tx.init(params)
      times[kind], out = median_s(compiled(make_step(tx), params, state, batch0), params, state,
                                  batch0, repeats=r)
      if kind == "refresh":
        matvecs = int(optax.tree.get(out[1], "num_matvecs"))
    t_alone1, _ = median_s(compiled(user_hvp, params, batch0, v), params, batch0, v, repeats=r)
    per = max(times["refresh"] - times["sgd"], 0.0) / matvecs
    rows.append((name, "NSGD refresh in a jitted train step, per HVP (one batch)", per,
                 per / t_alone1, f"vs standalone one-batch HVP {t_alone1:.4f} s"))
  return rows


PATHS = ("standalone_lib", "top_k", "top_k_off", "hutchinson", "slq", "nsgd")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--num-batches", type=int, default=2)
  parser.add_argument("--steps", type=int, default=5, help="Lanczos steps (HVPs) per solve")
  parser.add_argument("--probes", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--image", type=int, default=28)
  parser.add_argument("--models", default="user_cnn,mlp")
  parser.add_argument("--paths", default=",".join(PATHS),
                      help=f"comma-separated subset of {PATHS} (the standalone HVP always runs)")
  parser.add_argument("--quick", action="store_true",
                      help="tiny sizes (batch 4, 12×12 images, 2 steps, 1 repeat) and most XLA "
                      "optimizations off: a smoke test, its numbers are not to be read")
  args = parser.parse_args(argv)
  args.paths = args.paths.split(",")
  unknown = set(args.paths) - set(PATHS)
  if unknown:
    parser.error(f"unknown --paths {sorted(unknown)}; choose from {PATHS}")
  if args.quick:
    args.batch, args.image, args.steps, args.probes, args.repeats = 4, 12, 2, 1, 1
    jax.config.update("jax_disable_most_optimizations", True)
  print(f"# user models: time per HVP inside the library's loops vs standalone")
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, "
        f"{platform.machine()}, load average before: {load()} (1 min)")
  print(f"batches {args.num_batches} × {args.batch} × ({args.image}, {args.image}, 1), "
        f"{args.steps} Lanczos steps, {args.probes} Hutchinson probes, median of "
        f"{args.repeats} after a warm-up (canonical_convs=False: 1)"
        f"{'; QUICK: XLA optimizations off, numbers not meaningful' if args.quick else ''}\n")
  print("| model | path | s per HVP | / standalone | XLA conv layouts / note |")
  print("| --- | --- | ---: | ---: | --- |")
  rows = []
  for name in args.models.split(","):
    for row in bench_model(name, args):
      rows.append(row)
      print(f"| {row[0]} | {row[1]} | {row[2]:.4f} | {row[3]:.2f} | {row[4]} |", flush=True)
  print(f"\nload average after: {load()} (1 min)")
  return rows


if __name__ == "__main__":
  main()
