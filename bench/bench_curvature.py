"""Curvature-core benchmark: HVP counts of Lanczos vs power iteration vs eigsh, warm starts,
memory of hessian_top_k, and HVP strategies (jvp of grad vs one linearize).

Run:  .venv/bin/python bench/bench_curvature.py --quick      (about 8 min on 2 loaded cores)
      .venv/bin/python bench/bench_curvature.py              (larger sizes, more refreshes, sweeps)
      .venv/bin/python bench/bench_curvature.py --parts 1,2  (a subset; parts 1..4)

Parts:
1. HVPs to reach 1e-3 relative error on the top-5 eigenvalues: our Lanczos (``top_k_eigenpairs``
   with a residual ``tol``, and the smallest ``num_steps`` that reaches the accuracy) vs power
   iteration with deflation as PyHessian does it (its defaults: 100 iterations, stop when the
   Rayleigh quotient changes by < 1e-3 relatively) vs scipy ``eigsh(k=5, which='LA')``.
   (a) a synthetic operator Q diag(λ) Qᵀ (Q = 4 random Householder reflections) with a few
   outliers over a bulk; (b) an MLP on a real Fashion-MNIST Hessian sample (reference: Lanczos
   in float64 with tiny residuals).
2. Warm vs cold start along an SGD trajectory of the MLP on Fashion-MNIST (same tol, the
   library's ``hessian_top_k(init=...)``), refreshing every 1 and every 10 SGD steps of lr 0.1
   and every 1 step of lr 0.01, plus a prototype warm start that carries the guard pairs. Full
   mode adds that prototype with other noise levels (``--noises``) and LOBPCG refreshes.
3. Peak memory of ``hessian_top_k`` as the Hessian sample grows 10×: XLA's compiled memory
   analysis (SimpleCNN root, compile only) and, in full mode, peak RSS of fresh subprocesses.
4. HVP cost on SimpleCNN root (im2col), batch 128: jvp of grad vs reusing one ``jax.linearize``
   of the gradient, vs a gradient, side by side; plus a vmapped block of 5 HVPs.
HVP counts are exact; times are medians on a machine shared with other jobs.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from scipy.sparse.linalg import LinearOperator, eigsh  # noqa: E402

import sharp_dirs as sd  # noqa: E402
from sharp_dirs.curvature import krylov  # noqa: E402
import timing  # noqa: E402  # bench/timing.py

K = 5
REL_ERR = 1e-3


# ----------------------------------------------------------------------------------------------
# Helpers

def rel_err(vals, ref) -> float:
  """max_i |vals_i − ref_i| / |ref_i| over the top K (both sorted descending)."""
  vals = np.sort(np.asarray(vals, np.float64))[::-1][:K]
  ref = np.sort(np.asarray(ref, np.float64))[::-1][:K]
  return float(np.max(np.abs(vals - ref) / np.abs(ref)))


class Counter:
  """A jitted flat matvec that counts its calls (for the Python-driven methods)."""

  def __init__(self, matvec):
    self.fn = jax.jit(matvec)
    self.count = 0

  def __call__(self, x):
    self.count += 1
    return self.fn(x)


# ----------------------------------------------------------------------------------------------
# The three eigensolvers, counting HVPs

def power_iteration(mv: Counter, dim: int, key, *, k=K, max_iter=100, tol=1e-3, ref=None,
                    cap=2000):
  """PyHessian's ``hessian.eigenvalues`` (deflated power iteration), flat float32 vectors.

  With ``ref`` (reference eigenvalues), each eigenvalue instead iterates until its Rayleigh
  quotient is within ``REL_ERR`` of ref[i] (an oracle stop, at most ``cap`` iterations).
  Returns (eigenvalues, hvps).
  """
  start = mv.count
  found, eigvals = [], []

  @jax.jit
  def deflate(v, basis):
    v = v - basis.T @ (basis @ v)
    return v / jnp.linalg.norm(v)

  for i in range(k):
    v = jax.random.normal(jax.random.fold_in(key, i), (dim,), jnp.float32)
    v = v / jnp.linalg.norm(v)
    basis = jnp.stack(found) if found else jnp.zeros((1, dim), jnp.float32)
    eig = None
    for _ in range(max_iter if ref is None else cap):
      v = deflate(v, basis)                  # PyHessian: orthnormal(v, eigenvectors)
      hv = mv(v)
      tmp = float(v @ hv)
      v = hv / jnp.linalg.norm(hv)
      if ref is not None:
        eig = tmp
        if abs(tmp - ref[i]) / abs(ref[i]) < REL_ERR:
          break
      elif eig is None:
        eig = tmp
      elif abs(eig - tmp) / (abs(eig) + 1e-6) < tol:
        break
      else:
        eig = tmp
    eigvals.append(eig)
    found.append(v)
  return np.array(eigvals), mv.count - start


def run_eigsh(mv: Counter, dim: int, v0, tol: float):
  start = mv.count
  op = LinearOperator((dim, dim), dtype=np.float64, matvec=lambda x: np.asarray(
      mv(jnp.asarray(x.ravel(), jnp.float32)), np.float64))
  vals = eigsh(op, k=K, which="LA", tol=tol, v0=np.asarray(v0, np.float64),
               return_eigenvectors=False)
  return np.sort(vals)[::-1], mv.count - start


def lanczos_prefix_steps(matvec, v0, ref, max_steps: int):
  """Smallest m such that the top-K Ritz values of m Lanczos steps are within REL_ERR.

  With full reorthogonalization the first m steps of a longer run are an m-step run, so one
  run of ``max_steps`` gives the error after every m.
  """
  res = jax.jit(lambda v: sd.lanczos(matvec, v, max_steps))(v0)
  a, b = np.asarray(res.alphas, np.float64), np.asarray(res.betas, np.float64)
  errs = []
  for m in range(K, max_steps + 1):
    t = np.diag(a[:m]) + np.diag(b[:m - 1], 1) + np.diag(b[:m - 1], -1)
    errs.append(rel_err(np.linalg.eigvalsh(t)[::-1][:K], ref))
  errs = np.array(errs)
  ok = np.nonzero(errs <= REL_ERR)[0]
  return (int(ok[0]) + K if ok.size else None), errs


def lanczos_tol(matvec, v0, tol: float, max_steps: int, num_guard: int = 2):
  """top_k_eigenpairs(k=K) with a residual tol (and the library's guard pairs)."""
  fn = jax.jit(lambda v: sd.top_k_eigenpairs(matvec, v, K, max_steps, tol=tol,
                                             num_guard=num_guard))
  out = fn(v0)
  return np.asarray(out.eigvals), int(out.num_matvecs)


def compare_solvers(name, matvec, dim, ref, key, *, max_steps, rows):
  """Part 1 for one operator: appends markdown rows (method, HVPs, achieved error)."""
  mv = Counter(matvec)
  v0 = jax.random.normal(key, (dim,), jnp.float32)
  m, _ = lanczos_prefix_steps(matvec, v0, ref, max_steps)
  start = len(rows)
  rows.append((name, "Lanczos, smallest num_steps reaching 1e-3 (oracle)", m, REL_ERR if m else None))
  for guard, tol in ((2, 1e-2), (2, 1e-3), (0, 1e-3)):
    vals, n = lanczos_tol(matvec, v0, tol, max_steps, guard)
    what = f"num_guard={guard}" + (" (default)" if guard == 2 else " (the old rule)")
    rows.append((name, f"Lanczos top_k_eigenpairs(k={K}, tol={tol:g}, {what})", n,
                 rel_err(vals, ref)))
  for tol in (1e-3, 0.0):
    vals, n = run_eigsh(mv, dim, v0, tol)
    rows.append((name, f"scipy eigsh(k=5, 'LA', ncv=20, tol={tol:g})", n, rel_err(vals, ref)))
  vals, n = power_iteration(mv, dim, key)
  rows.append((name, "power iteration + deflation (PyHessian defaults)", n, rel_err(vals, ref)))
  vals, n = power_iteration(mv, dim, key, ref=ref)
  rows.append((name, "power iteration + deflation, oracle stop at 1e-3", n, rel_err(vals, ref)))
  for r in rows[start:]:
    print("  ", r, flush=True)


# ----------------------------------------------------------------------------------------------
# Operators and models

def synthetic_operator(dim: int, seed: int = 0):
  """(matvec, eigenvalues): Q diag(λ) Qᵀ, Q a product of 4 random Householder reflections.

  λ: 10 outliers (40, 32, 26, 22, 19, 16, 13, 11, 9, 7.5) over a bulk of |Marchenko–Pastur|-like
  values in about [−0.4, 2.5], most near 0, as in measured neural-network Hessians.
  """
  rng = np.random.RandomState(seed)
  outliers = np.array([40, 32, 26, 22, 19, 16, 13, 11, 9, 7.5])
  bulk = rng.gamma(0.5, 0.3, dim - outliers.size)
  bulk = np.minimum(bulk, 2.5) * np.where(rng.rand(bulk.size) < 0.15, -0.15, 1.0)
  lam = np.concatenate([outliers, bulk])
  ws = rng.randn(4, dim)
  ws /= np.linalg.norm(ws, axis=1, keepdims=True)
  lam_j, ws_j = jnp.asarray(lam, jnp.float32), jnp.asarray(ws, jnp.float32)

  def reflect(x, order):
    for i in order:
      x = x - 2.0 * (ws_j[i] @ x) * ws_j[i]
    return x

  def matvec(x):                          # Q diag(λ) Qᵀ x with Q = H0 H1 H2 H3
    return reflect(lam_j * reflect(x, range(4)), reversed(range(4)))

  return matvec, np.sort(lam)[::-1]


def mlp_init(key, hidden=(64, 64), dtype=jnp.float32):
  sizes = (784,) + tuple(hidden) + (10,)
  params = {}
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    key, sub = jax.random.split(key)
    params[f"w{i}"] = (jax.random.normal(sub, (a, b)) * np.sqrt(2.0 / a)).astype(dtype)
    params[f"b{i}"] = jnp.zeros((b,), dtype)
  return params


def mlp_loss(params, batch):
  """Mean softmax cross-entropy of a ReLU MLP on flattened images."""
  x = batch["image"].reshape(batch["image"].shape[0], -1).astype(params["w0"].dtype)
  n = len(params) // 2
  for i in range(n):
    x = x @ params[f"w{i}"] + params[f"b{i}"]
    if i < n - 1:
      x = jax.nn.relu(x)
  logp = jax.nn.log_softmax(x)
  return -jnp.mean(jnp.take_along_axis(logp, batch["label"][:, None], axis=1))


def load_fmnist():
  return sd.data.load_dataset("fashion_mnist")


@jax.jit
def _sgd_steps(params, images, labels, lr):
  def step(p, xy):
    g = jax.grad(mlp_loss)(p, {"image": xy[0], "label": xy[1]})
    return jax.tree.map(lambda a, b: a - lr * b, p, g), None
  return jax.lax.scan(step, params, (images, labels))[0]


def sgd(params, train, rng, num_steps, lr=0.1, batch=128):
  """``num_steps`` SGD steps of the MLP on random training batches."""
  idx = rng.randint(0, len(train["label"]), (num_steps, batch))
  return _sgd_steps(params, jnp.asarray(train["image"][idx]), jnp.asarray(train["label"][idx]),
                    lr)


# ----------------------------------------------------------------------------------------------
# Part 1

def part1(args, ds):
  rows = []
  print(f"\n## 1. HVPs to 1e-3 relative error on the top-{K} eigenvalues", flush=True)
  matvec, lam = synthetic_operator(args.synthetic_dim)
  compare_solvers(f"synthetic n={args.synthetic_dim}", matvec, args.synthetic_dim, lam[:K],
                  jax.random.key(1), max_steps=args.max_steps, rows=rows)

  params = sgd(mlp_init(jax.random.key(0)), ds.train, np.random.RandomState(0), args.pretrain)
  batches = sd.data.hessian_sample(ds.train, num_examples=args.examples, fresh=False)
  flat, unravel = ravel_pytree(params)
  dim = flat.size
  with jax.enable_x64(True):
    p64 = jax.tree.map(lambda x: jnp.asarray(np.asarray(x, np.float64)), params)
    b64 = {"image": jnp.asarray(np.asarray(batches["image"], np.float64)),
           "label": jnp.asarray(batches["label"])}
    ref_pairs = jax.jit(lambda p, b, key: sd.hessian_top_k(
        mlp_loss, p, b, key, k=K, num_lanczos_steps=args.ref_steps,
        exact_residuals=True))(p64, b64, jax.random.key(7))
    ref = np.asarray(ref_pairs.eigvals)
    print(f"  MLP reference (float64, {args.ref_steps} Lanczos steps): λ = {np.round(ref, 5)}, "
          f"max relative residual {float(np.max(ref_pairs.residuals / np.abs(ref))):.1e}",
          flush=True)
  hvp = sd.dataset_hvp(mlp_loss, params, batches)
  mlp_matvec = lambda x: ravel_pytree(hvp(unravel(x)))[0]  # noqa: E731
  t = timing.median_seconds(jax.jit(mlp_matvec), flat, repeats=5)
  compare_solvers(f"MLP 784-64-64-10 ({dim:,} params), Fashion-MNIST N={args.examples}",
                  mlp_matvec, dim, ref, jax.random.key(2), max_steps=args.max_steps, rows=rows)

  print(f"\nOne MLP dataset HVP (N={args.examples}): {1e3 * t:.1f} ms. Reference top-{K} "
        f"eigenvalues: {', '.join(f'{x:.4f}' for x in ref)}; synthetic: "
        f"{', '.join(f'{x:g}' for x in lam[:K + 1])}, … bulk ≤ 2.5.\n")
  print("| operator | method | HVPs | max rel. error of top-5 |")
  print("| --- | --- | ---: | ---: |")
  for op, method, n, err in rows:
    print(f"| {op} | {method} | {n if n is not None else f'> {args.max_steps}'} | "
          f"{'—' if err is None else f'{err:.1e}'} |")
  return rows


# ----------------------------------------------------------------------------------------------
# Part 2

def lobpcg(matmat, x0, tol, max_iter=50):
  """LOBPCG for the top-k (block = x0's columns), float64 Rayleigh-Ritz, counting HVPs.

  Stops when every wanted pair has ‖Hu − θu‖ <= tol·|θ| (the Lanczos ``tol`` rule). The first
  k columns are the wanted ones; extra columns are guard vectors. Returns (θ [k], U [n, k], hvps).
  """
  k = x0.shape[1]
  x = np.linalg.qr(x0)[0]
  ax = matmat(x)
  hvps = k
  p = ap = None
  for _ in range(max_iter):
    g = x.T @ ax
    theta, y = np.linalg.eigh((g + g.T) / 2)
    order = np.argsort(-theta)
    theta, y = theta[order], y[:, order]
    x, ax = x @ y, ax @ y
    r = ax - x * theta
    norms = np.linalg.norm(r, axis=0)
    if np.all(norms[:K] <= tol * np.abs(theta[:K])):
      break
    ar = matmat(r)
    hvps += k
    blocks = [x, r] + ([p] if p is not None else [])
    ablocks = [ax, ar] + ([ap] if ap is not None else [])
    s, a_s = np.concatenate(blocks, 1), np.concatenate(ablocks, 1)
    u, sv, vt = np.linalg.svd(s, full_matrices=False)
    keep = sv > 1e-8 * sv[0]
    c = vt[keep].T / sv[keep]
    q, aq = s @ c, a_s @ c
    g = q.T @ aq
    theta_all, z = np.linalg.eigh((g + g.T) / 2)
    z = z[:, np.argsort(-theta_all)[:k]]
    x_new, ax_new = q @ z, aq @ z
    # P: the part of the new X outside span(X) (LOBPCG's implicit direction).
    coef = x.T @ x_new
    p, ap = x_new - x @ coef, ax_new - ax @ coef
    x, ax = x_new, ax_new
  return theta[:K], x[:, :K], hvps


def track(args, ds, refresh_every, lr=0.1, noises=(), lobpcg_guards=()):
  """Cold vs warm refreshes along one SGD run of the MLP, all with the library's tol stop.

  Rows: cold (random v0); warm (``hessian_top_k(init=previous)``); a prototype that carries the
  guard pairs too (``k=K+2, num_guard=0``: the same 7 watched pairs as the default k=5 with 2
  guards, so the same stop rule, but the warm start vector also spans the previous 6th and 7th
  eigenvectors). ``noises``: the same prototype with its own warm vector and that noise level
  (the library's is 0.1). ``lobpcg_guards``: LOBPCG refreshes.
  Returns ({start: [HVPs per refresh]}, min cosines between consecutive top-K eigenspaces,
  max relative difference of any warm row's top-K eigenvalues from the cold ones,
  max error of LOBPCG).
  """
  rng = np.random.RandomState(1)
  params = sgd(mlp_init(jax.random.key(0)), ds.train, rng, args.pretrain)
  batches = sd.data.hessian_sample(ds.train, num_examples=args.examples, fresh=False)
  steps, tol = args.max_steps, args.track_tol

  def top_k(params, key, init=None, k=K, num_guard=2):
    return sd.hessian_top_k(mlp_loss, params, batches, key, k=k, num_lanczos_steps=steps,
                            tol=tol, num_guard=num_guard, init=init)

  @jax.jit
  def warm_flat(params, v0):
    _, unravel = ravel_pytree(params)
    hvp = sd.dataset_hvp(mlp_loss, params, batches)
    mv = lambda x: ravel_pytree(hvp(unravel(x)))[0]  # noqa: E731
    return sd.top_k_eigenpairs(mv, v0, K + 2, steps, tol=tol, num_guard=0)

  @jax.jit
  def block_hvp(params, xs):
    _, unravel = ravel_pytree(params)
    hvp = sd.dataset_hvp(mlp_loss, params, batches)
    return jax.vmap(lambda x: ravel_pytree(hvp(unravel(x)))[0])(xs)

  def flat_vecs(eig, k=K):
    return jax.vmap(lambda i: ravel_pytree(jax.tree.map(lambda e: e[i], eig.eigvecs))[0])(
        jnp.arange(k))

  COLD, WARM, CARRY = ("cold (random v0)", "warm, library (hessian_top_k(init=previous))",
                       f"prototype: warm, carry the 2 guard pairs (k={K + 2}, num_guard=0)")
  counts = {COLD: [], WARM: [], CARRY: []}
  for nz in noises:
    counts[f"prototype: carry the guard pairs, noise {nz:g}"] = []
  for g in lobpcg_guards:
    counts[f"LOBPCG from previous eigvecs, block {K}+{g}"] = []
  key = jax.random.key(3)
  prev = top_k(params, jax.random.key(99), k=K + 2, num_guard=0)
  prev_carry = prev
  prev_lib = prev_cold = krylov.Eigenpairs(prev.eigvals[:K], jax.tree.map(
      lambda e: e[:K], prev.eigvecs), prev.residuals[:K], prev.num_matvecs)
  prev_flat = {nz: flat_vecs(prev, K + 2) for nz in noises}
  prev_lob = {g: np.asarray(flat_vecs(prev), np.float64).T for g in lobpcg_guards}
  dim = flat_vecs(prev).shape[1]
  overlaps, warm_diff, lob_err = [], [], [0.0]
  for r in range(args.refreshes):
    params = sgd(params, ds.train, rng, refresh_every, lr=lr)
    key, k1, k2, k3, k4 = jax.random.split(key, 5)
    c = top_k(params, k1)
    counts[COLD].append(int(c.num_matvecs))
    overlaps.append(float(jnp.min(jnp.linalg.svd(flat_vecs(prev_cold) @ flat_vecs(c).T,
                                                 compute_uv=False))))
    prev_cold = c
    prev_lib = top_k(params, k2, init=prev_lib)
    counts[WARM].append(int(prev_lib.num_matvecs))
    prev_carry = top_k(params, k4, init=prev_carry, k=K + 2, num_guard=0)
    counts[CARRY].append(int(prev_carry.num_matvecs))
    warm_diff.append(max(rel_err(prev_lib.eigvals, c.eigvals),
                         rel_err(prev_carry.eigvals[:K], c.eigvals)))
    for nz in noises:
      z = jax.random.normal(k3, prev_flat[nz].shape[1:], prev_flat[nz].dtype)
      out = warm_flat(params, krylov.mix_with_noise(prev_flat[nz], z, nz))
      counts[f"prototype: carry the guard pairs, noise {nz:g}"].append(int(out.num_matvecs))
      prev_flat[nz] = flat_vecs(out, K + 2)
      warm_diff[-1] = max(warm_diff[-1], rel_err(out.eigvals, c.eigvals))
    mm = lambda x: np.asarray(block_hvp(params, jnp.asarray(x.T, jnp.float32)), np.float64).T  # noqa
    for g in lobpcg_guards:
      x0 = prev_lob[g]
      if g:
        x0 = np.concatenate([x0[:, :K], np.random.RandomState(r).randn(dim, g)], 1)
      theta, u, n = lobpcg(mm, x0, tol)
      counts[f"LOBPCG from previous eigvecs, block {K}+{g}"].append(n)
      prev_lob[g] = u
      lob_err.append(rel_err(theta, c.eigvals))
    print(f"  every {refresh_every} (lr {lr:g}), refresh {r + 1}: λ = {np.round(np.asarray(c.eigvals), 3)}, "
          f"HVPs {[v[-1] for v in counts.values()]}, min cos {overlaps[-1]:.3f}, "
          f"warm vs cold λ {warm_diff[-1]:.1e}", flush=True)
  return counts, overlaps, max(warm_diff), max(lob_err)


def part2(args, ds):
  print(f"\n## 2. Warm vs cold start along SGD (MLP, Fashion-MNIST N={args.examples}, "
        f"tol={args.track_tol:g}, k={K}, SGD lr 0.1 batch 128, {args.pretrain} SGD steps first)",
        flush=True)
  noises = [float(x) for x in args.noises.split(",") if x]   # the library uses 0.1
  guards = () if args.quick else (0, 3)
  # lr 0.1 is the training run's (λ_1 ≈ 18–20 ≈ 2/lr: the top eigenspace swings every step);
  # lr 0.01 for 1 step is a 10× smaller move, the "parameters moved a little" regime.
  runs = [(1, 0.1, track(args, ds, 1, 0.1, noises, guards)),
          (args.refresh_every, 0.1, track(args, ds, args.refresh_every, 0.1, noises)),
          (1, 0.01, track(args, ds, 1, 0.01, noises))]
  for every, lr, (counts, overlaps, warm_diff, lob_err) in runs:
    cold = counts["cold (random v0)"]
    print(f"\nRefresh every {every} SGD step(s) of lr {lr:g}, {args.refreshes} refreshes; "
          f"smallest principal cosine between consecutive top-{K} eigenspaces (cold runs): "
          f"{', '.join(f'{o:.3f}' for o in overlaps)} (median {statistics.median(overlaps):.3f}); "
          f"warm top-{K} eigenvalues agree with cold to {warm_diff:.1e}"
          + (f"; LOBPCG to {lob_err:.1e}" if lob_err else "") + ".\n")
    print("| start | HVPs per refresh (each refresh) | median | median / cold | total / cold |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, cs in counts.items():
      med = statistics.median(cs)
      print(f"| {name} | {', '.join(map(str, cs))} | {med:g} | "
            f"{med / statistics.median(cold):.2f} | {sum(cs) / sum(cold):.2f} |")


# ----------------------------------------------------------------------------------------------
# Part 3

def memory_child(args):
  """Runs hessian_top_k once in this fresh process and prints JSON (peak RSS, data bytes)."""
  jnp.zeros(1).block_until_ready()
  rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  with np.load(args.mem_file) as f:   # the sample only: loading the data set would set the peak
    batches = {"image": jnp.asarray(f["image"][:args.mem_examples // 128]),
               "label": jnp.asarray(f["label"][:args.mem_examples // 128])}
  data_bytes = sum(x.nbytes for x in jax.tree.leaves(batches))
  if args.mem_model == "mlp":
    params, loss_fn = mlp_init(jax.random.key(0)), mlp_loss
  else:
    from sharp_dirs import models
    model = models.get_model("simple_cnn_root", conv_impl="im2col")
    params, state = models.init_model(model, jax.random.key(0), jax.tree.map(
        lambda x: x[0], batches))
    loss_fn = models.make_loss_fn(model, state, train=False)
  out = sd.hessian_top_k(loss_fn, params, batches, jax.random.key(0), k=K,
                         num_lanczos_steps=args.mem_steps)
  jax.block_until_ready(out)
  print(json.dumps({"examples": args.mem_examples, "data_bytes": data_bytes,
                    "rss_after_load_kb": rss_loaded,
                    "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def compiled_memory(examples, model_name="simple_cnn_root", steps=20):
  from sharp_dirs import models
  model = models.get_model(model_name, conv_impl="im2col")
  nb = -(-examples // 128)
  batch = {"image": jnp.zeros((128, 28, 28, 1), jnp.float32),
           "label": jnp.zeros((128,), jnp.int32)}
  params, state = models.init_model(model, jax.random.key(0), batch)
  loss_fn = models.make_loss_fn(model, state, train=False)
  batches = jax.ShapeDtypeStruct((nb, 128, 28, 28, 1), jnp.float32)
  labels = jax.ShapeDtypeStruct((nb, 128), jnp.int32)
  fn = jax.jit(lambda p, x, y, key: sd.hessian_top_k(
      loss_fn, p, {"image": x, "label": y}, key, k=K, num_lanczos_steps=steps))
  ma = fn.lower(params, batches, labels, jax.random.key(0)).compile().memory_analysis()
  nparams = sum(x.size for x in jax.tree.leaves(params))
  return nb * 128, ma, nparams


def part3(args):
  print("\n## 3. Peak memory of hessian_top_k vs the number of Hessian examples", flush=True)
  sizes = (args.examples_mem, 10 * args.examples_mem)
  rows = []
  models = [m for m in args.mem_models.split(",") if m]   # quick: none (its MLP rows read 0 MiB)
  if models:
    mem_file = os.path.join(tempfile.mkdtemp(), "sample.npz")
    np.savez(mem_file, **sd.data.hessian_sample(load_fmnist().train, num_examples=sizes[-1],
                                                fresh=False))
  for model in models:
    for n in sizes:
      cmd = [sys.executable, __file__, "--_memory_child", "--mem_examples", str(n),
             "--mem_file", mem_file,
             "--mem_model", model, "--mem_steps", str(args.mem_steps)]
      out = subprocess.run(cmd, capture_output=True, text=True, check=True)
      rows.append((model, json.loads(out.stdout.strip().splitlines()[-1])))
      print("  ", rows[-1], flush=True)
  if rows:
    print(f"\nPeak RSS of a fresh process (start jax, load the saved sample, one hessian_top_k, "
          f"k={K}, {args.mem_steps} Lanczos steps):\n")
    print("| model | examples | sample data | peak RSS | peak RSS − RSS of jax started |")
    print("| --- | ---: | ---: | ---: | ---: |")
  for model, r in rows:
    print(f"| {model} | {r['examples']} | {r['data_bytes'] / 2**20:.1f} MiB | "
          f"{r['peak_rss_kb'] / 2**10:.0f} MiB | "
          f"{(r['peak_rss_kb'] - r['rss_after_load_kb']) / 2**10:.0f} MiB |")
  print("\nXLA compiled memory analysis of jit(hessian_top_k) (SimpleCNN root im2col, k=5, "
        "20 Lanczos steps; compile only):\n")
  print("| examples | arguments (params + data) | of which data | temp | output |")
  print("| ---: | ---: | ---: | ---: | ---: |")
  for n in sizes:
    ex, ma, nparams = compiled_memory(n)
    data = ex * (28 * 28 * 4 + 4)
    mib = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
    print(f"| {ex} | {mib(ma.argument_size_in_bytes)} | {mib(data)} | "
          f"{mib(ma.temp_size_in_bytes)} | {mib(ma.output_size_in_bytes)} |", flush=True)


# ----------------------------------------------------------------------------------------------
# Part 4

def part4(args):
  from sharp_dirs import models
  print(f"\n## 4. HVP strategies, SimpleCNN root (im2col), batch {args.hvp_batch}, median of "
        f"{args.repeats}", flush=True)
  model = models.get_model("simple_cnn_root", conv_impl="im2col")
  kx, ky = jax.random.split(jax.random.key(42))
  ds = load_fmnist()
  batch = {"image": jnp.asarray(ds.train["image"][:args.hvp_batch]),
           "label": jnp.asarray(ds.train["label"][:args.hvp_batch])}
  del ds
  params, state = models.init_model(model, jax.random.key(0), batch)
  loss_fn = models.make_loss_fn(model, state, train=False)
  grad_fn = jax.grad(loss_fn)
  v = jax.tree.map(lambda p: jax.random.normal(kx, p.shape, p.dtype), params)
  vs = jax.tree.map(lambda p: jax.random.normal(ky, (K,) + p.shape, p.dtype), params)

  grad = jax.jit(grad_fn)
  hvp_jvp = jax.jit(lambda p, b, v: sd.hvp(loss_fn, p, b, v))
  linearize = jax.jit(lambda p, b: jax.linearize(lambda q: grad_fn(q, b), p)[1])
  apply_lin = jax.jit(lambda lin, v: lin(v))
  block_jvp = jax.jit(lambda p, b, vs: jax.vmap(lambda v: sd.hvp(loss_fn, p, b, v))(vs))

  lin = linearize(params, batch)
  err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(apply_lin(lin, v)), jax.tree.leaves(hvp_jvp(params, batch, v))))
  lin_bytes = sum(x.nbytes for x in jax.tree.leaves(lin))
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  times = {name: [] for name in ("grad", "jvp", "linearize", "apply", "block")}
  for _ in range(args.rounds):   # interleaved rounds: machine load hits all alike
    times["grad"].append(timing.median_seconds(grad, params, batch, repeats=args.repeats))
    times["jvp"].append(timing.median_seconds(hvp_jvp, params, batch, v, repeats=args.repeats))
    times["linearize"].append(
        timing.median_seconds(linearize, params, batch, repeats=args.repeats))
    times["apply"].append(timing.median_seconds(apply_lin, lin, v, repeats=args.repeats))
    times["block"].append(
        timing.median_seconds(block_jvp, params, batch, vs, repeats=args.repeats) / K)
  t = {k: statistics.median(x) for k, x in times.items()}
  print(f"  per-round grad ms {[round(1e3 * x) for x in times['grad']]}, jvp "
        f"{[round(1e3 * x) for x in times['jvp']]}, apply {[round(1e3 * x) for x in times['apply']]}")
  print(f"\nmax |linearize HVP − jvp HVP| = {err:.1e}; params {param_bytes / 2**20:.2f} MiB; "
        f"the linearized gradient holds {lin_bytes / 2**20:.1f} MiB of residuals per batch of "
        f"{args.hvp_batch}.\n")
  print("| strategy | ms per HVP | / grad |")
  print("| --- | ---: | ---: |")
  g = t["grad"]
  for name, val in [("gradient (reference)", t["grad"]), ("jvp of grad (sd.hvp)", t["jvp"]),
                    ("jax.linearize of grad, once", t["linearize"]),
                    ("apply the linearized gradient (each HVP after the first)", t["apply"]),
                    (f"vmap of jvp over a block of {K} vectors, per vector", t["block"])]:
    print(f"| {name} | {1e3 * val:.0f} | {val / g:.2f} |")
  for m in (5, 20, 60):
    print(f"\n{m} HVPs at one point: jvp {m * t['jvp'] / g:.1f} grads, linearize + apply "
          f"{(t['linearize'] + m * t['apply']) / g:.1f} grads", end="")
  print()


# ----------------------------------------------------------------------------------------------

def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="smaller sizes (about 10 min)")
  p.add_argument("--parts", default="1,2,3,4")
  p.add_argument("--_memory_child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--mem_examples", type=int, default=256, help=argparse.SUPPRESS)
  p.add_argument("--mem_model", default="mlp", help=argparse.SUPPRESS)
  p.add_argument("--mem_file", help=argparse.SUPPRESS)
  p.add_argument("--mem_steps", type=int, default=10)
  p.add_argument("--synthetic_dim", type=int)
  p.add_argument("--examples", type=int, help="Hessian examples of parts 1b and 2")
  p.add_argument("--max_steps", type=int, help="Lanczos steps allowed (the basis size)")
  p.add_argument("--ref_steps", type=int)
  p.add_argument("--pretrain", type=int, default=200, help="SGD steps before part 1b/2")
  p.add_argument("--refreshes", type=int)
  p.add_argument("--refresh_every", type=int, default=10)
  p.add_argument("--track_tol", type=float, default=1e-3)
  p.add_argument("--noises", help="part 2: noise levels of the carry-guards prototype, e.g. 0,0.01")
  p.add_argument("--examples_mem", type=int, default=256)
  p.add_argument("--mem_models", help="models of part 3's RSS runs: mlp,cnn (quick: none)")
  p.add_argument("--hvp_batch", type=int, default=128)
  p.add_argument("--repeats", type=int)
  p.add_argument("--rounds", type=int)
  args = p.parse_args()
  quick = dict(synthetic_dim=5_000, examples=256, max_steps=80, refreshes=6, ref_steps=250,
               mem_models="", noises="", repeats=2, rounds=1)
  full = dict(synthetic_dim=100_000, examples=1024, max_steps=200, refreshes=12, ref_steps=400,
              mem_models="mlp,cnn", noises="0,0.01,0.3,1", repeats=5, rounds=3)
  for k, val in (quick if args.quick else full).items():
    if getattr(args, k) is None:
      setattr(args, k, val)
  if args._memory_child:
    memory_child(args)
    return
  parts = {int(x) for x in args.parts.split(",")}
  print(f"# bench_curvature{' --quick' if args.quick else ''}: jax {jax.__version__}, "
        f"backend {jax.default_backend()}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, load average "
        f"{os.getloadavg()[0]:.1f}", flush=True)
  t0 = time.time()
  ds = load_fmnist() if parts & {1, 2} else None
  if 1 in parts:
    part1(args, ds)
  if 2 in parts:
    part2(args, ds)
  if 3 in parts:
    part3(args)
  if 4 in parts:
    part4(args)
  print(f"\nTotal {time.time() - t0:.0f} s, load average now {os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
  main()
