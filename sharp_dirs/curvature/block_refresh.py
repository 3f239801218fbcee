"""The block refresh: top-k eigenpairs from a block of approximate eigenvectors (a warm start).

Rayleigh–Ritz on a block Krylov space [Q, HQ, H²Q, ...] seeded with the previous eigenvectors Q
[b, ...]: each block step costs b matvecs (one vmapped ``matvec_block`` call), and the projected
matrix QᵀHQ is diagonalized with a fixed-size eigh so the whole refresh is one jitted program.
Used by ``hessian.hessian_top_k(method="block")``, the tracker's warm evaluations and the NSGD
refresh.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from sharp_dirs.curvature import krylov
from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.types import MatVec, PyTree


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
  (``krylov.restart_vector``) and the whole is done once more (as CholeskyQR2), so the block keeps
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
  generic = jax.vmap(lambda s: krylov.restart_vector(like, s))(salt * b + jnp.arange(b))
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
                  fallback_steps: int = 0, key: Optional[jax.Array] = None) -> krylov.Eigenpairs:
  """Top-k eigenpairs from a block of approximate eigenvectors (a warm refresh); jit-able.

  Block Krylov with Rayleigh–Ritz: the basis grows by one block of b vectors per step (the
  previous eigenvectors first, then the residuals of the current top-b Ritz vectors,
  orthonormalized against the basis), and every step costs one call of ``matvec_block`` on b
  vectors, e.g. b Hessian-vector products run as one vmapped batch. H·Q is kept for the whole
  basis Q, so the Ritz pairs of Qᵀ H Q come with exact residuals ‖Hu − θu‖ at no extra matvec
  (memory: 2·b·max_block_steps vectors). It stops once the k wanted pairs and ``num_guard``
  more have ‖Hu − θu‖ <= tol·|θ| (the stop rule of ``krylov.top_k_eigenpairs``).

  Cost: a block spends b matvecs per step, and block Krylov needs more matvecs than single-
  vector Lanczos unless the start block is already close (bench/RESULTS.md, "Warm refreshes":
  2-3x a cold Lanczos solve's HVPs along an SGD run of an MLP, so slower on a CPU); it pays
  where b vmapped matvecs cost about one (an accelerator with a small model).

  If that has not happened after ``max_block_steps`` steps and ``fallback_steps`` > 0, single-
  vector Lanczos (``krylov.top_k_eigenpairs`` with the same tol and guards, ``fallback_steps`` at most)
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
    krylov.Eigenpairs(eigvals [k] descending, eigvecs leaves [k, *leaf.shape] in init_block's dtypes,
    residuals [k] exact ‖Hu − θu‖ (Lanczos' estimates after a fallback), num_matvecs = the
    vector matvecs spent: b per block step, plus the fallback's). Non-finite matvecs give NaN
    eigenvalues and residuals.
  """
  if which not in krylov.WHICH:
    raise ValueError(f"which must be one of {krylov.WHICH}, got {which!r}.")
  krylov.check_int(k, "k", 1)
  krylov.check_int(max_block_steps, "max_block_steps", 1)
  krylov.check_int(fallback_steps, "fallback_steps", 0)
  if tol is None:
    raise ValueError("block_refresh needs tol (a relative residual such as 1e-3): it is the "
                     "stop rule, and what decides when to fall back to Lanczos.")
  krylov.check_tol(tol, num_guard)
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
  dtype = krylov.krylov_dtype(like)
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
  pairs = krylov.Eigenpairs(jnp.where(finite, theta[order], jnp.nan),
                     jax.tree.map(lambda e, x: e[order].astype(x.dtype), eigvecs, init_block),
                     jnp.where(finite, res[order], jnp.nan), steps * b)
  if not fallback_steps:
    return pairs

  def fallback():
    z = (tm.normal_like(key, like) if key is not None
         else krylov.restart_vector(like, jnp.int32(-1)))
    v0 = tm.cast(krylov.mix_with_noise(eigvecs, tm.astype(z, dtype), 0.1), like)
    out = krylov.top_k_eigenpairs(matvec, v0, k, fallback_steps, which=which, tol=tol,
                           num_guard=num_guard)
    return out._replace(num_matvecs=out.num_matvecs + steps * b,
                        residuals=out.residuals.astype(pairs.residuals.dtype),
                        eigvals=out.eigvals.astype(pairs.eigvals.dtype))

  return jax.lax.cond(done | ~finite, lambda: pairs, fallback)
