"""A user's own flax model: time per HVP inside the library's loops vs a standalone jitted HVP.

Run:  .venv/bin/python bench/bench_user_conv.py [--batch 64] [--num-batches 2] [--steps 5]
        [--probes 3] [--repeats 3] [--models user_cnn,mlp] [--image 28] [--paths ...]
        [--quick]

The models are written as a user would (flax ``nn.Conv``/``nn.Dense``, not the library's im2col
layers): the paper's SimpleCNN root shapes (conv32 same, conv32 valid, maxpool, conv64 same,
conv64 valid, maxpool, dense128, dense10) and a 784-256-256-10 ReLU MLP, on
Fashion-MNIST-shaped random inputs. One process, same params and batches for every path; each
program is compiled first (``jit(...).lower(...).compile()``) and called once; then the paths
are timed in ``--repeats`` interleaved rounds (so that a change of load on a shared machine hits
them alike) and the minimum is kept. Rows, in seconds per HVP over all ``--num-batches`` batches:

- standalone: the user's plain HVP (``jax.jvp`` of ``jax.grad``) jitted on one batch, called
  per batch and summed on the host: no XLA loop, so XLA canonicalizes its convolutions (the
  reference of every ratio); ``standalone_lib``: the same with ``sharp_dirs.hvp``;
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
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import sharp_dirs  # noqa: E402
from sharp_dirs.curvature import tree_math as tm  # noqa: E402
import timing  # noqa: E402  # bench/timing.py


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
  batch_list = [jax.tree.map(lambda x, i=i: x[i], batches) for i in range(args.num_batches)]
  batch0 = batch_list[0]

  def loss_fn(p, batch):
    logits = model.apply({"params": p}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

  def user_hvp(p, batch, v):  # what a user writes: forward-over-reverse, nothing else
    return jax.jvp(lambda q: jax.grad(loss_fn)(q, batch), (p,), (v,))[1]

  def summed(exe):  # one jitted call per batch (no XLA loop), summed on the host
    def call():
      total = exe(params, batch_list[0], v)
      for b in batch_list[1:]:
        total = tm.add(total, exe(params, b, v))
      return total
    return call

  # Every program is compiled, then called once (warm-up), before any timing.
  hvp_exe = compiled(user_hvp, params, batch0, v)
  jobs = {"standalone": summed(hvp_exe),
          "standalone_one": lambda: hvp_exe(params, batch0, v)}
  hvps = {"standalone": 1, "standalone_one": 1}
  notes = {}
  if "standalone_lib" in args.paths:
    lib = lambda p, b, v: sharp_dirs.hvp(loss_fn, p, b, v)
    jobs["standalone_lib"], hvps["standalone_lib"] = summed(compiled(lib, params, batch0, v)), 1
  for path, canonical in (("top_k", None), ("top_k_off", False)):
    if path in args.paths:
      solve = lambda p, b, canonical=canonical: sharp_dirs.hessian_top_k(
          loss_fn, p, b, key, k=1, num_lanczos_steps=args.steps, canonical_convs=canonical)
      exe = compiled(solve, params, batches)
      jobs[path], hvps[path] = (lambda exe=exe: exe(params, batches)), args.steps
      notes[path] = conv_layouts(exe)
  if "hutchinson" in args.paths:
    hutchinson = lambda p, b: sharp_dirs.hutchinson_trace(
        sharp_dirs.dataset_hvp(loss_fn, p, b), p, key, args.probes).value
    exe = compiled(hutchinson, params, batches)
    jobs["hutchinson"], hvps["hutchinson"] = (lambda exe=exe: exe(params, batches)), args.probes
  if "slq" in args.paths:
    slq = lambda p, b: sharp_dirs.spectral_density(
        sharp_dirs.dataset_hvp(loss_fn, p, b), p, key, num_draws=1, num_steps=args.steps).nodes
    exe = compiled(slq, params, batches)
    jobs["slq"], hvps["slq"] = (lambda exe=exe: exe(params, batches)), args.steps
  if "nsgd" in args.paths:
    # A train step whose NSGD refresh is due (count 0: every call refreshes) and the same step
    # with optax.sgd (the nudge between refreshes is a k = 1 projection).
    def make_step(tx):
      def step(p, opt_state, batch):
        grads = jax.grad(loss_fn)(p, batch)
        updates, opt_state = tx.update(grads, opt_state, p,
                                       obj_fn=lambda q: loss_fn(q, batch))
        return optax.apply_updates(p, updates), opt_state
      return step

    for path, tx in (("nsgd", sharp_dirs.nudged_sgd(0.01, 1, num_lanczos_steps=args.steps)),
                     ("sgd", optax.sgd(0.01))):
      state = tx.init(params)
      exe = compiled(make_step(tx), params, state, batch0)
      jobs[path] = lambda exe=exe, state=state: exe(params, state, batch0)
    hvps["nsgd"] = int(optax.tree.get(jobs["nsgd"]()[1], "num_matvecs"))
    hvps["sgd"] = 1

  # The slow path (XLA's layouts in loops) once, after its warm-up; the others interleaved in
  # rounds, so that a change of load hits them alike; the minimum over rounds.
  best = {}
  slow = [p for p in ("top_k_off",) if p in jobs]
  for path in slow:
    timing.timed(jobs[path])
    best[path] = timing.timed(jobs[path])[0]
  fast = [p for p in jobs if p not in slow]
  for path in fast:
    timing.timed(jobs[path])
  for _ in range(args.repeats):
    for path in fast:
      best[path] = min(best.get(path, float("inf")), timing.timed(jobs[path])[0])

  ref, ref_one = best["standalone"], best["standalone_one"]
  labels = {
      "standalone": "standalone: the user's jitted HVP, per batch, summed",
      "standalone_lib": "standalone: jitted sharp_dirs.hvp (canonical convs), per batch, summed",
      "top_k": "hessian_top_k, default (CPU: canonical_convs on)",
      "top_k_off": "hessian_top_k, canonical_convs=False (XLA's layouts; before)",
      "hutchinson": "hutchinson_trace, per probe",
      "slq": "spectral_density (SLQ), per HVP",
  }
  rows = []
  for path, label in labels.items():
    if path in best:
      per = best[path] / hvps[path]
      rows.append((name, label, per, per / ref, notes.get(path, "")))
  if "nsgd" in best:
    per = max(best["nsgd"] - best["sgd"], 0.0) / hvps["nsgd"]
    rows.append((name, "NSGD refresh in a jitted train step, per HVP (its one batch)", per,
                 per / ref_one, f"(step − SGD step) / {hvps['nsgd']} HVPs, vs one-batch "
                 f"standalone HVP {ref_one:.4f} s"))
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
        f"{args.steps} Lanczos steps, {args.probes} Hutchinson probes, "
        f"min of {args.repeats} interleaved rounds after a warm-up (canonical_convs=False: one call)"
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
