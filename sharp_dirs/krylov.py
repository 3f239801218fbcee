"""Lanczos on a symmetric linear operator given as a matvec on pytrees.

The operator is any function ``matvec(v) -> Hv`` on pytree vectors (for us, a Hessian-vector
product). ``lanczos`` builds an orthonormal Krylov basis V = [v_1 .. v_m] and the tridiagonal
T = Vᵀ H V; ``top_k_eigenpairs`` turns the extreme eigenpairs of T (Ritz pairs) into eigenpairs of
H with residual norms ‖Hu − λu‖.

Numerics:
- the Krylov basis, α and β are kept in float64 when ``jax_enable_x64`` is on (float32
  otherwise), whatever the parameters' dtype; the matvec receives and returns vectors in the
  dtypes of ``v0`` (the parameters' dtypes);
- full reorthogonalization is two passes of classical Gram-Schmidt against the whole basis;
- breakdown (β ≈ 0: the Krylov space is an invariant subspace) restarts from a random vector
  orthogonal to the basis and records β = 0, so T becomes block diagonal and no NaN appears;
- with ``tol`` the loop stops as soon as the k wanted Ritz pairs, and ``num_guard`` more, have
  relative residual ≤ tol, so ``num_matvecs`` counts only the Hessian-vector products actually
  spent. A small residual certifies *an* eigenpair, not the k-th largest: an eigenvalue close
  below λ_k may not have entered the Krylov space yet; converged guard pairs make that unlikely;
- a non-finite matvec (NaN or inf, e.g. from a diverged loss) makes every eigenvalue and
  residual that ``top_k_eigenpairs`` returns NaN, never finite-looking numbers.
"""

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sharp_dirs import tree_math as tm
from sharp_dirs.types import MatVec, PyTree

WHICH = ("largest", "magnitude")


class LanczosResult(NamedTuple):
  """The Lanczos decomposition H V = V T + β_m v_{m+1} e_mᵀ.

  alphas: [m] diagonal of T.
  betas: [m-1] off-diagonal of T (0 where the iteration restarted after a breakdown).
  basis: the rows of V, leaves ``[m, *leaf.shape]``, orthonormal (rows past ``num_matvecs``
    are zero when the iteration stopped early).
  residual_norm: β_m, the norm of the last residual ‖H v_m − α_m v_m − β_{m-1} v_{m-1}‖.
  num_matvecs: () int32, matvecs spent (= steps taken).
  """
  alphas: jax.Array
  betas: jax.Array
  basis: PyTree
  residual_norm: jax.Array
  num_matvecs: jax.Array


class Eigenpairs(NamedTuple):
  """k eigenpairs of a symmetric operator.

  eigvals: [k] in descending order.
  eigvecs: pytree with leaves ``[k, *leaf.shape]``; eigvecs[i] is the unit eigenvector of
    eigvals[i].
  residuals: [k] residual norms ‖H u_i − λ_i u_i‖ (Lanczos' estimate |β_m s_{m,i}| unless
    exact residuals were asked for).
  num_matvecs: () int32, the matvecs (Hessian-vector products) spent to compute them.
  """
  eigvals: jax.Array
  eigvecs: PyTree
  residuals: jax.Array
  num_matvecs: jax.Array


def krylov_dtype(v: PyTree):
  """float64 when x64 is enabled, else float32 (never narrower than the vector's leaves)."""
  wide = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  return jnp.result_type(wide, *[jnp.result_type(x) for x in jax.tree.leaves(v)])


def _orthogonalize(w: PyTree, basis: PyTree, passes: int = 2) -> PyTree:
  """w − V Vᵀ w, repeated ``passes`` times (classical Gram-Schmidt twice is stable)."""
  for _ in range(passes):
    w = tm.sub(w, tm.stack_combine(tm.stack_dot(basis, w), basis))
  return w


def _ritz(alphas, betas, last_beta, num_valid, k: int, which: str):
  """Ritz values and vectors (in the Krylov basis) of the leading num_valid × num_valid T.

  Rows past ``num_valid`` are padded with a value below every Ritz value (Gershgorin), so a
  fixed-size eigh serves a dynamic number of steps.

  Returns:
    theta: [k] selected Ritz values, descending.
    s: [m, k] their eigenvectors of T.
    residuals: [k] estimates |β_last s_{num_valid, i}| of ‖H u_i − θ_i u_i‖.
  """
  m = alphas.shape[0]
  valid = jnp.arange(m) < num_valid
  off = jnp.where(valid[1:], betas, 0.0)
  off_left = jnp.concatenate([jnp.zeros(1, off.dtype), off])
  off_right = jnp.concatenate([off, jnp.zeros(1, off.dtype)])
  lower = jnp.min(jnp.where(valid, alphas - jnp.abs(off_left) - jnp.abs(off_right), jnp.inf))
  spread = jnp.max(jnp.where(valid, jnp.abs(alphas) + jnp.abs(off_left) + jnp.abs(off_right), 0))
  diag = jnp.where(valid, alphas, lower - 1.0 - spread)
  t = jnp.diag(diag) + jnp.diag(off, 1) + jnp.diag(off, -1)
  theta, s = jnp.linalg.eigh(t)
  in_krylov = jnp.sum(jnp.where(valid[:, None], s * s, 0.0), axis=0) > 0.5
  score = theta if which == "largest" else jnp.abs(theta)
  _, idx = jax.lax.top_k(jnp.where(in_krylov, score, -jnp.inf), k)
  idx = idx[jnp.argsort(-theta[idx])]
  last_row = jnp.take(s, num_valid - 1, axis=0)
  return theta[idx], s[:, idx], jnp.abs(last_beta * last_row[idx])


def _restart_vector(like: PyTree, step: jax.Array) -> PyTree:
  """A generic vector for restarting after a breakdown, different at every step.

  Entries frac(43758.5453·sin(12.9898·j + 78.233·step)) − ½ look uniform and are cheap: a PRNG
  here would dominate the loop's compile time, and restarts only need a vector with a component
  outside the current Krylov space.
  """
  leaves, treedef = jax.tree.flatten(like)
  offsets = np.cumsum([0] + [x.size for x in leaves])
  out = []
  for x, offset in zip(leaves, offsets):
    j = (offset + jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape)
    u = 43758.5453 * jnp.sin(12.9898 * j + 78.233 * (step + 1).astype(x.dtype))
    out.append(u - jnp.floor(u) - 0.5)
  return jax.tree.unflatten(treedef, out)


def _run(matvec: MatVec, v0: PyTree, num_steps: int, reorthogonalize: bool,
         stop: Optional[Callable] = None) -> LanczosResult:
  """The Lanczos loop; ``stop(alphas, betas, beta, steps_done) -> bool`` may end it early."""
  dtype = krylov_dtype(v0)
  eps = jnp.finfo(dtype).eps
  like = v0
  v0 = tm.astype(v0, dtype)
  v0 = tm.scale(1.0 / tm.norm(v0), v0)
  basis = tm.stack_set(tm.zeros_stack(num_steps, v0, dtype), 0, v0)
  zeros = jnp.zeros(num_steps, dtype)

  def body(state):
    i, basis, alphas, betas, v_prev, beta_prev, scale_est, _ = state
    v = tm.stack_get(basis, i)
    w = tm.astype(matvec(tm.cast(v, like)), dtype)
    alpha = tm.vdot(w, v)
    if reorthogonalize:
      w = _orthogonalize(w, basis)
    else:
      w = tm.sub(w, tm.add(tm.scale(alpha, v), tm.scale(beta_prev, v_prev)))
    beta = tm.norm(w)
    scale_est = jnp.maximum(scale_est, jnp.abs(alpha) + beta + beta_prev)
    broke = beta <= 100 * eps * scale_est
    # On breakdown, continue from a generic vector orthogonal to the basis (T gets β = 0).
    w = jax.lax.cond(broke, lambda: _orthogonalize(_restart_vector(v, i), basis), lambda: w)
    v_next = tm.scale(1.0 / tm.norm(w), w)
    t_beta = jnp.where(broke, 0.0, beta)
    alphas = alphas.at[i].set(alpha)
    betas = betas.at[i].set(t_beta)
    j = jnp.minimum(i + 1, num_steps - 1)
    keep = tm.stack_get(basis, j)
    basis = tm.stack_set(basis, j, jax.tree.map(
        lambda a, b: jnp.where(i + 1 < num_steps, a, b), v_next, keep))
    done = False if stop is None else stop(alphas, betas, beta, i + 1)
    return i + 1, basis, alphas, betas, v, t_beta, scale_est, (beta, done)

  def cond(state):
    i, *_, (_, done) = state
    return jnp.logical_and(i < num_steps, jnp.logical_not(done))

  init = (jnp.int32(0), basis, zeros, zeros, tm.scale(0.0, v0), jnp.zeros((), dtype),
          jnp.zeros((), dtype), (jnp.zeros((), dtype), jnp.bool_(False)))
  steps, basis, alphas, betas, *_, (last_beta, _) = jax.lax.while_loop(cond, body, init)
  return LanczosResult(alphas, betas[:-1], basis, last_beta, steps)


def check_int(value, name: str, minimum: int) -> int:
  """``value`` as an int >= minimum; a TypeError for floats, bools and arrays (they fix shapes)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be a Python int (it fixes array shapes), got {value!r} of type "
                    f"{type(value).__name__}. Pass e.g. {name}=int({name}).")
  if value < minimum:
    raise ValueError(f"{name} must be at least {minimum}, got {value}.")
  return int(value)


def check_tol(tol, num_guard: int) -> None:
  """Raises unless tol is None or a finite number > 0 (or traced), and num_guard an int >= 0."""
  check_int(num_guard, "num_guard", 0)
  if tol is None or isinstance(tol, jax.core.Tracer):
    return
  if np.ndim(tol) != 0 or not math.isfinite(float(tol)) or float(tol) <= 0:
    raise ValueError(f"tol must be None or a finite number > 0 (a relative residual such as "
                     f"1e-3), got {tol!r}.")


def check_steps(v0: PyTree, num_steps: int, k: Optional[int] = None) -> None:
  """Raises unless 1 <= k <= num_steps <= dim(v0), all ints (named errors with the fix)."""
  check_int(num_steps, "num_steps", 1)
  if k is not None:
    check_int(k, "k", 1)
  dim = tm.size(v0)
  if num_steps > dim:
    raise ValueError(
        f"num_steps={num_steps} exceeds the dimension of the operator ({dim}); a Krylov basis "
        f"has at most {dim} orthonormal vectors. Use num_steps <= {dim}.")
  if k is not None and not 1 <= k <= num_steps:
    raise ValueError(
        f"k={k} eigenpairs need 1 <= k <= num_steps, got num_steps={num_steps}; Lanczos finds "
        f"at most num_steps Ritz pairs. Raise num_steps (3k or more is a good default).")


def is_finite_decomposition(result: LanczosResult) -> jax.Array:
  """() bool: T and the last residual norm are finite (False once a matvec returned NaN/inf)."""
  t_finite = jnp.all(jnp.isfinite(result.alphas)) & jnp.all(jnp.isfinite(result.betas))
  return t_finite & jnp.isfinite(result.residual_norm)


def lanczos(matvec: MatVec, v0: PyTree, num_steps: int, *,
            reorthogonalize: bool = True) -> LanczosResult:
  """``num_steps`` Lanczos steps from ``v0`` (any nonzero pytree); jit-able.

  Args:
    matvec: v ↦ Hv for a symmetric H, pytree in and out (same structure as v0).
    v0: starting vector; it is normalized.
    num_steps: m, the number of matvecs (static).
    reorthogonalize: full reorthogonalization against the whole basis (keep it on unless
      you study the loss of orthogonality).

  Returns:
    LanczosResult with T = tridiag(betas, alphas, betas), basis leaves ``[m, *leaf.shape]``.
  """
  check_steps(v0, num_steps)
  return _run(matvec, v0, num_steps, reorthogonalize)


def tridiagonal(result: LanczosResult) -> jax.Array:
  """The dense [m, m] matrix T of a LanczosResult."""
  return (jnp.diag(result.alphas) + jnp.diag(result.betas, 1) + jnp.diag(result.betas, -1))


def top_k_eigenpairs(matvec: MatVec, v0: PyTree, k: int, num_steps: int, *,
                     which: str = "largest", tol: Optional[float] = None, num_guard: int = 2,
                     reorthogonalize: bool = True, exact_residuals: bool = False) -> Eigenpairs:
  """The k largest (algebraic, or by magnitude) eigenpairs of a symmetric operator.

  Args:
    matvec: v ↦ Hv, pytree in and out.
    v0: starting vector (random for a cold start; see ``warm_start_vector``).
    k: number of eigenpairs (static), 1 <= k <= num_steps.
    num_steps: the most Lanczos steps (matvecs) to take.
    which: "largest" for the algebraically largest λ, "magnitude" for the largest |λ| (the
      paper's ARPACK ``which='LM'``).
    tol: stop early once every wanted pair has ‖Hu − λu‖ <= tol·|λ|; None runs all steps.
    num_guard: with ``tol``, so many Ritz pairs beyond the k-th must have converged too
      (fewer when num_steps is smaller), so that the k reported are the top k.
    reorthogonalize: full reorthogonalization (recommended).
    exact_residuals: spend k more matvecs to report exact ‖Hu − λu‖ instead of the estimate.

  Returns:
    Eigenpairs with eigvals [k] descending, eigvecs leaves [k, *leaf.shape] in v0's dtypes.
    If the matvec returned a non-finite value, eigvals and residuals are all NaN (test with
    ``jnp.isfinite``; ``hessian_top_k`` raises outside jit).
  """
  if which not in WHICH:
    raise ValueError(f"which must be one of {WHICH}, got {which!r}.")
  check_steps(v0, num_steps, k)
  check_tol(tol, num_guard)

  stop = None
  if tol is not None:
    watched = min(k + num_guard, num_steps)

    def stop(alphas, betas, beta, steps):
      theta, _, res = _ritz(alphas, betas[:-1], beta, steps, watched, which)
      tiny = jnp.finfo(alphas.dtype).tiny
      converged = jnp.all(res <= tol * jnp.maximum(jnp.abs(theta), tiny))
      return jnp.logical_and(steps >= watched, converged)

  result = _run(matvec, v0, num_steps, reorthogonalize, stop)
  theta, s, residuals = _ritz(result.alphas, result.betas, result.residual_norm,
                              result.num_matvecs, k, which)
  # A non-finite matvec makes every eigenvalue and residual NaN, never finite-looking numbers.
  finite = is_finite_decomposition(result)
  theta = jnp.where(finite, theta, jnp.nan)
  residuals = jnp.where(finite, residuals, jnp.nan)
  eigvecs = tm.stack_combine(s.T, result.basis)
  num_matvecs = result.num_matvecs
  if exact_residuals:
    hu = jax.lax.map(lambda u: matvec(tm.cast(u, v0)), eigvecs)
    residuals = jax.vmap(lambda h, u, t: tm.norm(tm.sub(h, tm.scale(t, u))))(
        tm.astype(hu, theta.dtype), eigvecs, theta)
    num_matvecs = num_matvecs + k
  eigvecs = jax.tree.map(lambda e, x: e.astype(jnp.result_type(x)), eigvecs, v0)
  return Eigenpairs(theta, eigvecs, residuals, num_matvecs)


def warm_start_vector(init: Eigenpairs, key: jax.Array, noise: float = 0.1) -> PyTree:
  """A Lanczos start vector from previous eigenvectors: Σ_i u_i/√k plus a little noise.

  The Krylov space of this vector contains the previous top-k eigenspace after k steps, so a
  refresh after a small parameter change converges in few more matvecs; the random part (of
  relative size ``noise``) lets a direction that newly entered the top-k be found.
  """
  like = tm.stack_get(init.eigvecs, 0)
  return mix_with_noise(init.eigvecs, tm.normal_like(key, like), noise)


def mix_with_noise(eigvecs: PyTree, z: PyTree, noise: float) -> PyTree:
  """Σ_i u_i/√k + noise·(‖Σ_i u_i/√k‖/‖z‖)·z for stacked u_i (leaves [k, ...]) and a draw z."""
  k = jax.tree.leaves(eigvecs)[0].shape[0]
  mean = tm.cast(jax.tree.map(lambda e: jnp.sum(e, axis=0) / np.sqrt(k), eigvecs), z)
  return tm.axpy(noise * tm.norm(mean) / tm.norm(z), z, mean)


# ----------------------------------------------------------------------------------------------
# Block refresh: Rayleigh–Ritz on a block Krylov space seeded with previous eigenvectors.

def _stack_inner(a: PyTree, b: PyTree) -> jax.Array:
  """[na, nb] inner products <a[i], b[j]> of two stacks (leaves [na, ...] and [nb, ...])."""
  dots = jax.tree.leaves(jax.tree.map(
      lambda x, y: jnp.tensordot(x, y.astype(x.dtype),
                                 axes=(tuple(range(1, x.ndim)), tuple(range(1, y.ndim)))), a, b))
  return sum(dots[1:], dots[0])


def _stack_rows_set(stack: PyTree, start, rows: PyTree) -> PyTree:
  """The stack with rows [start, start + len(rows)) replaced by ``rows``."""
  return jax.tree.map(lambda s, x: jax.lax.dynamic_update_slice_in_dim(
      s, x.astype(s.dtype), start, axis=0), stack, rows)


def _orthonormalize_block(w: PyTree, basis: PyTree, salt) -> tuple[PyTree, jax.Array]:
  """An orthonormal block spanning w's part orthogonal to the rows of ``basis``.

  Each row is projected out of the basis (two passes of block Gram-Schmidt) and rescaled to
  unit norm; a row whose remaining norm is below ``sqrt(100·b·eps)`` of its norm counts as
  inside span(basis) and is dropped. The rows are then orthonormalized through the
  eigendecomposition of their Gram matrix, dropping directions with eigenvalue below
  ``100·b·eps`` (linearly dependent rows). Dropped rows are replaced by generic vectors
  (``_restart_vector``) and the whole is done once more (as CholeskyQR2), so the block keeps
  full rank while the operator's dimension allows.
  Returns (block, valid [b] bool: rows that are unit vectors; the others are zero).
  """
  b = jax.tree.leaves(w)[0].shape[0]
  dtype = jax.tree.leaves(w)[0].dtype
  floor = 100 * b * jnp.finfo(dtype).eps

  def row_norms(x):
    return jnp.sqrt(jnp.maximum(jnp.diagonal(_stack_inner(x, x)), 0.0))

  def scale_rows(x, factors):
    return jax.tree.map(lambda y: y * factors.reshape((b,) + (1,) * (y.ndim - 1)).astype(
        y.dtype), x)

  def project_unit(x):
    before = row_norms(x)
    for _ in range(2):
      x = tm.sub(x, tm.stack_combine(_stack_inner(x, basis), basis))
    after = row_norms(x)
    keep = after > jnp.sqrt(floor) * before
    return scale_rows(x, jnp.where(keep, 1.0 / jnp.where(keep, after, 1.0), 0.0))

  def gram_orthonormalize(x):
    c = _stack_inner(x, x)
    e, u = jnp.linalg.eigh((c + c.T) / 2)
    good = e > floor
    coeffs = (u * jnp.where(good, jax.lax.rsqrt(jnp.where(good, e, 1.0)), 0.0)).T
    return tm.stack_combine(coeffs, x), good

  like = tm.stack_get(w, 0)
  w, good = gram_orthonormalize(project_unit(w))
  generic = jax.vmap(lambda s: _restart_vector(like, s))(salt * b + jnp.arange(b))
  w = jax.tree.map(lambda x, g: jnp.where(
      good.reshape((b,) + (1,) * (x.ndim - 1)), x, g.astype(x.dtype)), w, generic)
  return gram_orthonormalize(project_unit(w))


def _block_ritz(g: jax.Array, valid: jax.Array, num: int, which: str):
  """The ``num`` wanted Ritz pairs of the projected matrix g = Qᵀ H Q (rows of Q: ``valid``).

  Rows and columns of basis vectors not yet computed (or zero) are decoupled and pushed below
  every Ritz value (Gershgorin), so a fixed-size eigh serves a basis that grows.
  Returns θ [num] and their eigenvectors s [m, num], ordered by the score (θ, or |θ| for
  "magnitude") descending, so that the first j are the j wanted ones.
  """
  both = valid[:, None] & valid[None, :]
  g = jnp.where(both, (g + g.T) / 2, 0.0)
  spread = jnp.max(jnp.sum(jnp.abs(g), axis=1))
  g = g + jnp.diag(jnp.where(valid, 0.0, -2.0 * spread - 1.0))
  theta, s = jnp.linalg.eigh(g)
  in_space = jnp.sum(jnp.where(valid[:, None], s * s, 0.0), axis=0) > 0.5
  score = theta if which == "largest" else jnp.abs(theta)
  _, idx = jax.lax.top_k(jnp.where(in_space, score, -jnp.inf), num)
  return theta[idx], s[:, idx]


def block_refresh(matvec_block: Callable[[PyTree], PyTree], init_block: PyTree, k: int, *,
                  tol: float, num_guard: int = 2, max_block_steps: int = 4,
                  which: str = "largest", matvec: Optional[MatVec] = None,
                  fallback_steps: int = 0, key: Optional[jax.Array] = None) -> Eigenpairs:
  """Top-k eigenpairs from a block of approximate eigenvectors (a warm refresh); jit-able.

  Block Krylov with Rayleigh–Ritz: the basis grows by one block of b vectors per step (the
  previous eigenvectors first, then the residuals of the current top-b Ritz vectors,
  orthonormalized against the basis), and every step costs one call of ``matvec_block`` on b
  vectors, e.g. b Hessian-vector products run as one vmapped batch. H·Q is kept for the whole
  basis Q, so the Ritz pairs of Qᵀ H Q come with exact residuals ‖Hu − θu‖ at no extra matvec
  (memory: 2·b·max_block_steps vectors). It stops once the k wanted pairs and ``num_guard``
  more have ‖Hu − θu‖ <= tol·|θ| (the stop rule of ``top_k_eigenpairs``).

  Cost: a block spends b matvecs per step, and block Krylov needs more matvecs than single-
  vector Lanczos unless the start block is already close (bench/RESULTS.md, "Warm refreshes":
  2-3x a cold Lanczos solve's HVPs along an SGD run of an MLP, so slower on a CPU); it pays
  where b vmapped matvecs cost about one (an accelerator with a small model).

  If that has not happened after ``max_block_steps`` steps and ``fallback_steps`` > 0, single-
  vector Lanczos (``top_k_eigenpairs`` with the same tol and guards, ``fallback_steps`` at most)
  is run from the block's Ritz vectors with noise, as ``warm_start_vector`` does; its matvecs
  are added to the count. Without a fallback the last Ritz pairs are returned, with their
  (exact) residuals above tol.

  Args:
    matvec_block: V ↦ [H v_1, …, H v_b] on stacks (leaves ``[b, *leaf.shape]``), e.g.
      ``jax.vmap(matvec)``.
    init_block: the b start vectors, leaves ``[b, *leaf.shape]`` (b >= k + num_guard), e.g. the
      previous eigenvectors; linearly dependent or zero rows are replaced by generic vectors.
    k: the wanted eigenpairs (static).
    tol: relative residual of the stop rule.
    num_guard: Ritz pairs beyond the k-th that must converge too.
    max_block_steps: the most block steps (b matvecs each) before the fallback.
    which: "largest" (algebraic) or "magnitude".
    matvec: v ↦ Hv for the fallback (default: ``matvec_block`` on a block of one).
    fallback_steps: the fallback Lanczos' most matvecs; 0: no fallback.
    key: PRNG key of the fallback's noise (default: a fixed generic vector).

  Returns:
    Eigenpairs(eigvals [k] descending, eigvecs leaves [k, *leaf.shape] in init_block's dtypes,
    residuals [k] exact ‖Hu − θu‖ (Lanczos' estimates after a fallback), num_matvecs = the
    vector matvecs spent: b per block step, plus the fallback's). Non-finite matvecs give NaN
    eigenvalues and residuals.
  """
  if which not in WHICH:
    raise ValueError(f"which must be one of {WHICH}, got {which!r}.")
  check_int(k, "k", 1)
  check_int(max_block_steps, "max_block_steps", 1)
  check_int(fallback_steps, "fallback_steps", 0)
  if tol is None:
    raise ValueError("block_refresh needs tol (a relative residual such as 1e-3): it is the "
                     "stop rule, and what decides when to fall back to Lanczos.")
  check_tol(tol, num_guard)
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(init_block)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f"init_block must be a stack of vectors (every leaf [b, ...] with the same "
                     f"b), got leading sizes {sizes}.")
  b = sizes.pop()
  watched = k + num_guard
  like = tm.stack_get(init_block, 0)
  dim = tm.size(like)
  if not watched <= b <= dim:
    raise ValueError(f"the block holds b={b} vectors; it needs k + num_guard = {watched} <= b "
                     f"<= the operator's dimension {dim}. Pass at least k + num_guard start "
                     "vectors (fill with random ones).")
  if matvec is None:
    matvec = lambda v: tm.stack_get(matvec_block(jax.tree.map(lambda x: x[None], v)), 0)  # noqa: E731
  dtype = krylov_dtype(like)
  m = b * max_block_steps
  basis = tm.zeros_stack(m, like, dtype)
  v, v_valid = _orthonormalize_block(tm.astype(init_block, dtype), basis, 0)

  def body(state):
    j, basis, h_basis, g, valid, v, v_valid, *_ = state
    hv = tm.astype(matvec_block(tm.cast(v, init_block)), dtype)
    basis = _stack_rows_set(basis, j * b, v)
    h_basis = _stack_rows_set(h_basis, j * b, hv)
    valid = jax.lax.dynamic_update_slice_in_dim(valid, v_valid, j * b, axis=0)
    new = _stack_inner(basis, hv)  # [m, b]: the new columns of Qᵀ H Q (zero for unused rows)
    g = jax.lax.dynamic_update_slice(g, new, (jnp.int32(0), j * b))
    g = jax.lax.dynamic_update_slice(g, new.T, (j * b, jnp.int32(0)))
    theta, s = _block_ritz(g, valid, b, which)
    u = tm.stack_combine(s.T, basis)
    r = tm.sub(tm.stack_combine(s.T, h_basis),
               jax.tree.map(lambda x: theta.reshape((b,) + (1,) * (x.ndim - 1)) * x, u))
    res = jnp.sqrt(jnp.diagonal(_stack_inner(r, r)))
    tiny = jnp.finfo(dtype).tiny
    done = jnp.all(res[:watched] <= tol * jnp.maximum(jnp.abs(theta[:watched]), tiny))
    v, v_valid = _orthonormalize_block(r, basis, j + 1)
    return j + 1, basis, h_basis, g, valid, v, v_valid, theta, s, res, done

  def cond(state):
    j, *_, done = state
    return jnp.logical_and(j < max_block_steps, jnp.logical_not(done))

  init = (jnp.int32(0), basis, basis, jnp.zeros((m, m), dtype), jnp.zeros(m, bool), v, v_valid,
          jnp.zeros(b, dtype), jnp.zeros((m, b), dtype), jnp.zeros(b, dtype), jnp.bool_(False))
  steps, basis, _, g, _, _, _, theta, s, res, done = jax.lax.while_loop(cond, body, init)
  finite = jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(theta))
  eigvecs = tm.stack_combine(s[:, :watched].T, basis)
  order = jnp.argsort(-theta[:k])  # the k wanted, in descending order of θ
  pairs = Eigenpairs(jnp.where(finite, theta[order], jnp.nan),
                     jax.tree.map(lambda e, x: e[order].astype(x.dtype), eigvecs, init_block),
                     jnp.where(finite, res[order], jnp.nan), steps * b)
  if not fallback_steps:
    return pairs

  def fallback():
    z = (tm.normal_like(key, like) if key is not None
         else _restart_vector(like, jnp.int32(-1)))
    v0 = tm.cast(mix_with_noise(eigvecs, tm.astype(z, dtype), 0.1), like)
    out = top_k_eigenpairs(matvec, v0, k, fallback_steps, which=which, tol=tol,
                           num_guard=num_guard)
    return out._replace(num_matvecs=out.num_matvecs + steps * b,
                        residuals=out.residuals.astype(pairs.residuals.dtype),
                        eigvals=out.eigvals.astype(pairs.eigvals.dtype))

  return jax.lax.cond(done | ~finite, lambda: pairs, fallback)
