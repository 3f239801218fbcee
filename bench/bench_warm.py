"""Warm refreshes vs cold solves along a real SGD trajectory: wall time and HVPs, same accuracy.

The MLP of ``sharp_dirs.models`` ('mlp', 784-256-256-10) trained by plain SGD (batch 128) on
real Fashion-MNIST; at each refresh a fresh Hessian sample of N training examples is drawn and
the top-k eigenpairs of its Hessian are computed by every method below, side by side in one
process, each method warm-starting from its own previous result (cold methods from a random
vector). Every solve uses tol (default 1e-3) on k pairs + 2 guard pairs. Refresh regimes: every
``--every`` SGD steps, and every epoch (one pass over the training set).

Methods (``hessian_top_k`` options):
  cold                    random start, jvp HVPs (the library's default)
  cold-linearize          random start, one linearization reused (``linearize=True``)
  warm-lanczos            ``init=previous`` (single-vector Lanczos from Σ u_i + noise)
  warm-lanczos-linearize  the same with ``linearize=True``
  warm-block              ``method="block"``: block Krylov–Rayleigh–Ritz from the previous
                          k vectors (+ random up to k + 2), its HVPs a vmapped batch over one
                          linearization, Lanczos fallback after ``--block_steps`` steps
  warm-block-jvp          the same with vmapped jvp HVPs streamed by batch (memory flat)
  warm-block-carry        warm-block that also carries the 2 guard vectors: k+2 pairs solved
  warm-lanczos-carry      and kept with num_guard=0 (the same 7 watched pairs, the same stop
                          rule), so the block starts from 7 previous vectors, not 5 + 2 random
Fixed-sample mode (``--fixed_sample``, as ``tracking.fixed_sample=True``): every refresh uses the
same N examples (``hessian_sample(fresh=False)``), so consecutive Hessians differ only by the
SGD steps between them, the case where a warm start can pay (issue 18 item 4; target: a warm
refresh at most 0.5x a cold solve's wall time).
Accuracy: the largest relative difference of the top-k eigenvalues from the cold solve of the
same refresh (a missed eigenvalue shows as a jump by the gap to the next one).

  .venv/bin/python bench/bench_warm.py                 # N=2560, 6 refreshes every 10 steps, 3 epochs
  .venv/bin/python bench/bench_warm.py --examples 1024
  .venv/bin/python bench/bench_warm.py --fixed_sample --methods warm-lanczos,warm-block-carry
  .venv/bin/python bench/bench_warm.py --quick         # tiny smoke run (CI), random data
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import sharp_dirs as sd  # noqa: E402
from sharp_dirs import models  # noqa: E402
import timing  # noqa: E402

METHODS = {  # name: hessian_top_k options; "warm": start from the method's previous result
    "cold": dict(warm=False),
    "cold-linearize": dict(warm=False, linearize=True),
    "warm-lanczos": dict(warm=True),
    "warm-lanczos-linearize": dict(warm=True, linearize=True),
    "warm-block": dict(warm=True, method="block", linearize=True),
    "warm-block-jvp": dict(warm=True, method="block"),
    "warm-block-carry": dict(warm=True, method="block", linearize=True, carry=True),
    "warm-lanczos-carry": dict(warm=True, carry=True),
}
QUICK_METHODS = "warm-lanczos,warm-block,warm-block-carry"


def load(args):
  if args.quick:
    rng = np.random.RandomState(0)
    n = 1024
    train = {"image": rng.randn(n, 28, 28, 1).astype(np.float32),
             "label": rng.randint(0, 10, n).astype(np.int32)}
    return train
  return sd.data.load_dataset("fashion_mnist").train


def make_sgd(loss_fn, lr):
  @jax.jit
  def sgd(params, images, labels):
    def step(p, xy):
      g = jax.grad(loss_fn)(p, {"image": xy[0], "label": xy[1]})
      return jax.tree.map(lambda a, b: a - lr * b, p, g), None
    return jax.lax.scan(step, params, (images, labels))[0]
  return sgd


class Trajectory:
  """Plain SGD over shuffled epochs of the training set (batch 128), in chunks of steps."""

  def __init__(self, train, sgd, batch=128, seed=0):
    self.train, self.sgd, self.batch = train, sgd, batch
    self.rng = np.random.RandomState(seed)
    self.order = np.zeros(0, np.int64)
    self.steps_per_epoch = len(train["label"]) // batch

  def run(self, params, num_steps, chunk=50):
    done = 0
    while done < num_steps:
      m = min(chunk, num_steps - done)
      need = m * self.batch
      while len(self.order) < need:
        self.order = np.concatenate([self.order, self.rng.permutation(len(self.train["label"]))])
      idx, self.order = self.order[:need].reshape(m, self.batch), self.order[need:]
      params = self.sgd(params, jnp.asarray(self.train["image"][idx]),
                        jnp.asarray(self.train["label"][idx]))
      done += m
    return params


def solve(loss_fn, params, sample, key, args, prev, opts):
  opts = dict(opts)
  warm = opts.pop("warm")
  k = args.k + 2 if opts.pop("carry", False) else args.k
  if k > args.k:
    opts["num_guard"] = 0
  if opts.get("method") == "block":
    opts["max_block_steps"] = args.block_steps
  seconds, out = timing.timed(
      lambda: sd.hessian_top_k(loss_fn, params, sample, key, k=k,
                               num_lanczos_steps=args.max_steps, tol=args.tol,
                               init=prev if warm else None, **opts))
  return out, seconds


def regime(name, loss_fn, params, traj, train, args, methods, num_refreshes, every):
  """Refreshes after every ``every`` SGD steps; returns rows {method: [(s, hvps, diff)]}."""
  print(f"\n### {name}: {num_refreshes} refreshes, one every {every} SGD steps", flush=True)
  key = jax.random.key(11)

  def sample(i):  # fixed: the same examples at every refresh (the key is ignored)
    return sd.data.hessian_sample(train, jax.random.fold_in(key, i), num_examples=args.examples,
                                  batch_size=args.batch_size, fresh=not args.fixed_sample,
                                  augment=False)

  first = sample(0)
  prev = {}
  for m, opts in methods.items():  # compile every program, and the chains' first results
    out, _ = solve(loss_fn, params, first, jax.random.key(0), args, None,
                   dict(opts, warm=False))
    if opts["warm"]:
      solve(loss_fn, params, first, jax.random.key(0), args, out, opts)
    prev[m] = out
  rows = {m: [] for m in methods}
  for r in range(num_refreshes):
    params = traj.run(params, every)
    s = sample(r + 1)
    kr = jax.random.fold_in(jax.random.key(1), r)
    res = {}
    names = list(methods)
    for m in names[r % len(names):] + names[:r % len(names)]:  # rotated: no method always first
      res[m] = solve(loss_fn, params, s, kr, args, prev[m], methods[m])
      prev[m] = res[m][0]
    cold = np.asarray(res["cold"][0].eigvals, np.float64)
    for m, (out, sec) in res.items():
      lam = np.asarray(out.eigvals, np.float64)[:args.k]
      diff = float(np.max(np.abs(lam - cold) / np.abs(cold)))
      rows[m].append((sec, int(out.num_matvecs), diff))
    print(f"  refresh {r + 1}: λ = {np.round(cold, 3)}, cold {res['cold'][1]:.2f} s; "
          + ", ".join(f"{m} {res[m][1] / res['cold'][1]:.2f}x/{int(res[m][0].num_matvecs)}"
                      for m in methods if m != "cold"), flush=True)
  return params, rows


def table(rows):
  cold = rows["cold"]
  print("\n| method | HVPs per refresh | median s | median of (s / cold s) | total s / cold | "
        "max rel. diff of λ from cold |")
  print("| --- | --- | ---: | ---: | ---: | ---: |")
  out = []
  for m, rs in rows.items():
    ratio = statistics.median(r[0] / c[0] for r, c in zip(rs, cold))
    total = sum(r[0] for r in rs) / sum(c[0] for c in cold)
    diff = max(r[2] for r in rs)
    print(f"| {m} | {', '.join(str(r[1]) for r in rs)} | {statistics.median(r[0] for r in rs):.2f} "
          f"| {ratio:.2f} | {total:.2f} | {diff:.1e} |")
    out.append((m, ratio, total, diff, [r[1] for r in rs]))
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny sizes, random data (smoke test)")
  p.add_argument("--examples", type=int, default=2560, help="N, Hessian examples per refresh")
  p.add_argument("--batch_size", type=int, default=128, help="Hessian sample batch size")
  p.add_argument("--k", type=int, default=5)
  p.add_argument("--tol", type=float, default=1e-3)
  p.add_argument("--max_steps", type=int, default=40, help="Lanczos steps (and fallback) at most")
  p.add_argument("--block_steps", type=int, default=6, help="block steps before the fallback")
  p.add_argument("--lr", type=float, default=0.1)
  p.add_argument("--pretrain_epochs", type=float, default=1.0)
  p.add_argument("--every", type=int, default=10, help="SGD steps between refreshes (regime A)")
  p.add_argument("--refreshes", type=int, default=6, help="refreshes in regime A")
  p.add_argument("--epochs", type=int, default=3, help="refreshes in regime B (one per epoch)")
  p.add_argument("--methods", default=",".join(METHODS))
  p.add_argument("--fixed_sample", action="store_true",
                 help="the same N examples at every refresh (tracking.fixed_sample=True)")
  args = p.parse_args(argv)
  if args.quick:
    args.examples, args.batch_size, args.k, args.max_steps = 64, 32, 2, 12
    args.block_steps, args.pretrain_epochs, args.refreshes, args.epochs = 2, 0.1, 1, 1
    if args.methods == ",".join(METHODS):
      args.methods = QUICK_METHODS
    jax.config.update("jax_disable_most_optimizations", True)
  methods = {m: METHODS[m] for m in ["cold"] + [m for m in args.methods.split(",")
                                                 if m and m != "cold"]}
  load_before = os.getloadavg()[0]
  print(f"# bench_warm{' --quick' if args.quick else ''}: jax {jax.__version__}, backend "
        f"{jax.default_backend()}, {os.cpu_count()} CPUs, load average {load_before:.1f}; "
        f"MLP {'(16,)' if args.quick else '784-256-256-10'} on "
        f"{'random data' if args.quick else 'Fashion-MNIST'}, SGD lr {args.lr:g} batch 128, "
        f"N={args.examples} ({'fixed' if args.fixed_sample else 'fresh'} sample), k={args.k}, tol={args.tol:g} (+2 guard pairs), "
        f"num_lanczos_steps={args.max_steps}, max_block_steps={args.block_steps}", flush=True)
  t0 = time.time()
  train = load(args)
  model = models.get_model("mlp", **({"hidden": (16,)} if args.quick else {}))
  params, state = models.init_model(model, jax.random.key(0), jax.tree.map(
      lambda x: jnp.asarray(x[:2]), train))
  loss_fn = models.make_loss_fn(model, state, train=False)
  traj = Trajectory(train, make_sgd(loss_fn, args.lr))
  params = traj.run(params, int(args.pretrain_epochs * traj.steps_per_epoch))
  results = {}
  params, rows = regime(f"A. every {args.every} SGD steps", loss_fn, params, traj, train, args,
                        methods, args.refreshes, args.every)
  results["A"] = table(rows)
  params, rows = regime("B. every epoch", loss_fn, params, traj, train, args, methods,
                        args.epochs, traj.steps_per_epoch)
  results["B"] = table(rows)
  for name, rows_ in results.items():
    best = min((r for r in rows_ if METHODS[r[0]]["warm"]), key=lambda r: r[1], default=None)
    if best:
      print(f"Regime {name}: best warm method {best[0]}, median {best[1]:.2f}x cold (target <= "
            f"0.5: {'met' if best[1] <= 0.5 else 'missed'}), largest λ difference "
            f"{max(r[3] for r in rows_):.1e}")
  print(f"\nTotal {time.time() - t0:.0f} s; load average before {load_before:.1f}, after "
        f"{os.getloadavg()[0]:.1f}.")
  return results


if __name__ == "__main__":
  main()
