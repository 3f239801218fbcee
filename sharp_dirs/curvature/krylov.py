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

from sharp_dirs.curvature import tree_math as tm
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


def restart_vector(like: PyTree, step: jax.Array) -> PyTree:
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
    w = jax.lax.cond(broke, lambda: _orthogonalize(restart_vector(v, i), basis), lambda: w)
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
  """Raises unless 1 <= k <= num_steps <= dim(v0), all ints (named errors with the fix; k
  beyond dim(v0) is named first, since no num_steps can then be right)."""
  check_int(num_steps, "num_steps", 1)
  if k is not None:
    check_int(k, "k", 1)
  dim = tm.size(v0)
  if k is not None and k > dim:
    raise ValueError(
        f"k={k} eigenpairs exceed the dimension of the operator ({dim}: the number of "
        f"parameters); an operator of dimension {dim} has {dim} eigenpairs. Use k <= {dim} "
        f"(and num_steps between k and {dim}).")
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
