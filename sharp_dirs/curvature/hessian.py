"""Hessian-vector products of a loss over a dataset, and its top-k eigenpairs.

The boundary is a pure scalar loss ``loss_fn(params, batch) -> ()``: model state, dropout rngs and
batch-norm statistics are closed over by the caller. ``batches`` is one pytree whose leaves are
stacked ``[num_batches, batch_size, ...]``; every batch has the same size, so the mean of the
per-batch mean losses is the mean loss over all examples, and

    H v = (1/B) Σ_b ∇²L_b(θ) v,     L_b = mean loss of batch b,

is the Hessian of the mean loss over all B·S examples. Batches are streamed with ``lax.scan``:
memory does not grow with the number of batches. The batch axis (axis 1 of every leaf) may be
sharded over devices; the same code then runs data-parallel.

On the CPU backend every gradient differentiated here is first rewritten so that its
convolutions are in the layout XLA's fast CPU kernels accept (``conv_layout``): XLA only does
that for convolutions outside loops, and the HVPs here run inside ``scan``/``while_loop``.
``canonical_convs=`` (None: on CPU only) sets it; the results are the same either way.
"""

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from sharp_dirs.curvature import block_refresh
from sharp_dirs.curvature import conv_layout
from sharp_dirs.curvature import krylov as lz
from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.types import LossFn, PyTree

METHODS = ("lanczos", "block")


def check_scalar_loss(loss_fn: LossFn, params: PyTree, batch: PyTree) -> None:
  """Raises a ValueError unless ``loss_fn(params, batch)`` is a real scalar."""
  out = jax.eval_shape(loss_fn, params, batch)
  if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
    shape = getattr(out, "shape", type(out).__name__)
    raise ValueError(
        f"loss_fn(params, batch) must return a scalar, got {shape}. Reduce it with a mean over "
        "the batch, and close over auxiliary outputs (e.g. lambda p, b: f(p, b)[0]).")
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ValueError(f"loss_fn must return a floating-point scalar, got dtype {out.dtype}.")


def hvp(loss_fn: LossFn, params: PyTree, batch: PyTree, v: PyTree, *,
        canonical_convs: Optional[bool] = None) -> PyTree:
  """∇²_θ loss_fn(θ, batch) · v at θ = params, by forward-over-reverse (jvp of grad).

  ``canonical_convs``: rewrite the gradient's convolutions for XLA's CPU kernels (None: when
  the default backend is CPU; see ``conv_layout``); same values, fast inside loops.
  """
  grad_fn = conv_layout.grad(loss_fn, canonical_convs)
  return jax.jvp(lambda p: grad_fn(p, batch), (params,), (v,))[1]


def first_batch(batches: PyTree) -> PyTree:
  return jax.tree.map(lambda x: x[0], batches)


def num_batches(batches: PyTree) -> int:
  sizes = {jnp.shape(x)[0] for x in jax.tree.leaves(batches)}
  if len(sizes) != 1:
    raise ValueError(
        f"Every leaf of batches must have the same leading (num_batches) axis, got sizes {sizes}. "
        "Stack batches as leaves [num_batches, batch_size, ...].")
  return sizes.pop()


def check_batches(batches: PyTree) -> tuple[int, int]:
  """(num_batches, batch_size) of stacked batches, or a ValueError naming what disagrees.

  Every leaf must be ``[num_batches, batch_size, ...]`` with the same two leading sizes, both
  at least 1 (shapes only: works on tracers and ShapeDtypeStructs).
  """
  leaves = jax.tree_util.tree_flatten_with_path(batches)[0]
  if not leaves:
    raise ValueError("batches has no arrays; pass a pytree with leaves [num_batches, batch_size, "
                     "...], e.g. {'x': x.reshape(num_batches, batch_size, ...)}.")
  lead = {}
  for path, x in leaves:
    name = jax.tree_util.keystr(path) or "batches"
    if jnp.ndim(x) < 2:
      raise ValueError(
          f"Leaf {name} of batches has shape {jnp.shape(x)}; stacked batches need leaves "
          "[num_batches, batch_size, ...] (for a single batch add the axis: x[None]).")
    lead[name] = tuple(jnp.shape(x)[:2])
  if len(set(lead.values())) != 1:
    raise ValueError(
        "Every leaf of batches must have the same num_batches (axis 0) and batch_size (axis 1), "
        f"got {lead}. Stack equal-size batches as leaves [num_batches, batch_size, ...].")
  num, size = lead.popitem()[1]
  if num == 0:
    raise ValueError("batches holds no batch (num_batches = 0); the mean loss over no examples "
                     "has no Hessian. Pass at least one batch.")
  if size == 0:
    raise ValueError("batches have batch_size 0 (axis 1); the mean loss over an empty batch is "
                     "NaN. Pass at least one example per batch.")
  return num, size


def batch_mean(fn: Callable[[PyTree], PyTree], like: PyTree, batches: PyTree) -> PyTree:
  """(1/B) Σ_b fn(batch_b) for a pytree-valued fn shaped like ``like``, one batch at a time."""
  def accumulate(total, batch):
    return tm.add(total, fn(batch)), None

  total, _ = jax.lax.scan(accumulate, tm.scale(0.0, like), batches)
  return tm.scale(1.0 / num_batches(batches), total)


def mean_grad(loss_fn: LossFn, params: PyTree, batches: PyTree, *,
              canonical_convs: Optional[bool] = None) -> PyTree:
  """∇ of the mean loss over all stacked batches, one batch at a time (``lax.scan``)."""
  grad_fn = conv_layout.grad(loss_fn, canonical_convs)
  return batch_mean(lambda batch: grad_fn(params, batch), params, batches)


def dataset_hvp(loss_fn: LossFn, params: PyTree, batches: PyTree, *, linearize: bool = False,
                canonical_convs: Optional[bool] = None) -> Callable[[PyTree], PyTree]:
  """The matvec v ↦ H v for the Hessian of the mean loss over all stacked batches.

  Args:
    loss_fn: (params, batch) -> scalar mean loss of one batch.
    params: the point θ.
    batches: leaves ``[num_batches, batch_size, ...]``, streamed one batch at a time.
    linearize: False: each product is a fresh ``jvp`` of the gradient, batch by batch, in
      memory independent of the number of batches (about 2× a gradient's time). True: the
      gradient is linearized once (``jax.linearize``) and every product reuses it (about 1×
      a gradient each, after a first pass of about 1.4×), at the price of storing the
      linearization's residuals for every batch (hundreds of MiB per batch of 128 images for
      a CNN): for many products on a few batches, as in Lanczos on a small Hessian sample.
    canonical_convs: rewrite the gradient's convolutions into the layout of XLA's fast CPU
      kernels, which XLA itself skips inside loops (None: when the default backend is CPU;
      see ``conv_layout``). Same values; on CPU an ``nn.Conv`` model's HVP inside Lanczos
      costs about a standalone HVP instead of ~10× one.

  Returns:
    A function of a pytree v shaped like params, returning (1/B) Σ_b ∇²L_b v in params' dtypes.
  """
  check_batches(batches)
  if linearize:
    _, linear = jax.linearize(
        lambda p: mean_grad(loss_fn, p, batches, canonical_convs=canonical_convs), params)
    return lambda v: linear(tm.cast(v, params))

  def matvec(v):
    v = tm.cast(v, params)
    return batch_mean(
        lambda batch: hvp(loss_fn, params, batch, v, canonical_convs=canonical_convs), v,
        batches)

  return matvec


def gnvp(predict_fn: Callable[[PyTree, PyTree], jax.Array],
         output_loss_fn: Callable[[jax.Array, PyTree], jax.Array],
         params: PyTree, batch: PyTree, v: PyTree, *,
         canonical_convs: Optional[bool] = None) -> PyTree:
  """Gauss-Newton-vector product G v = Jᵀ H_out J v.

  Args:
    predict_fn: (params, batch) -> outputs z (e.g. logits [B, C]).
    output_loss_fn: (z, batch) -> scalar loss of the outputs; H_out = ∇²_z of it (convex for
      cross-entropy and squared error, so G is positive semi-definite).
    params, batch, v: the point, the data and a vector shaped like params.
    canonical_convs: as for ``hvp`` (the transposed Jacobian's convolutions).
  """
  def product(params, batch, v):
    z, jv = jax.jvp(lambda p: predict_fn(p, batch), (params,), (v,))
    h_jv = jax.jvp(lambda out: jax.grad(output_loss_fn)(out, batch), (z,), (jv,))[1]
    _, vjp = jax.vjp(lambda p: predict_fn(p, batch), params)
    return vjp(h_jv)[0]

  return conv_layout.if_enabled(product, canonical_convs)(params, batch, v)


def start_block(init: Optional[lz.Eigenpairs], key: jax.Array, params: PyTree,
                size: int) -> PyTree:
  """``size`` start vectors for ``block_refresh.block_refresh``: init's eigenvectors first (at most
  ``size``), then standard normal draws; leaves ``[size, *leaf.shape]`` in params' dtypes."""
  have = 0 if init is None else min(init.eigvals.shape[0], size)
  if have < size:
    draws = jax.vmap(lambda k: tm.normal_like(k, params))(jax.random.split(key, size - have))
  if not have:
    return draws
  prev = jax.tree.map(lambda e, p: e[:have].astype(p.dtype), init.eigvecs, params)
  if have == size:
    return prev
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), prev, draws)


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "k", "num_lanczos_steps", "which", "tol", "num_guard",
                              "exact_residuals", "linearize", "canonical_convs", "method",
                              "block_size", "max_block_steps"))
def _hessian_top_k(loss_fn, params, batches, key, init, *, k, num_lanczos_steps, which, tol,
                   num_guard, exact_residuals, linearize, canonical_convs, method="lanczos",
                   block_size=None, max_block_steps=4):
  matvec = dataset_hvp(loss_fn, params, batches, linearize=linearize,
                       canonical_convs=canonical_convs)
  if method == "block":
    block_key, noise_key = jax.random.split(key)
    block = start_block(init, block_key, params, block_size or k + num_guard)
    return _nan_unless_finite(block_refresh.block_refresh(
        jax.vmap(matvec), block, k, tol=tol, num_guard=num_guard,
        max_block_steps=max_block_steps, which=which, matvec=matvec,
        fallback_steps=num_lanczos_steps, key=noise_key), loss_fn, params, batches)
  if init is None:
    v0 = tm.normal_like(key, params)
  else:
    v0 = tm.cast(lz.warm_start_vector(init, key), params)
  return _nan_unless_finite(lz.top_k_eigenpairs(
      matvec, v0, k, num_lanczos_steps, which=which, tol=tol, num_guard=num_guard,
      exact_residuals=exact_residuals), loss_fn, params, batches)


def _finite_point(loss_fn, params, batches) -> jax.Array:
  """() bool: every parameter and the loss on the first batch are finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  loss = loss_fn(params, first_batch(batches))
  return jnp.all(jnp.stack(leaves + [jnp.isfinite(loss)]))


def _nan_unless_finite(result: lz.Eigenpairs, loss_fn, params, batches) -> lz.Eigenpairs:
  """The eigenvalues and residuals NaN at a non-finite point (an infinite parameter can give
  finite-looking zero curvature, e.g. through a saturated ReLU or clip)."""
  finite = _finite_point(loss_fn, params, batches)
  return result._replace(eigvals=jnp.where(finite, result.eigvals, jnp.nan),
                         residuals=jnp.where(finite, result.residuals, jnp.nan))


def hessian_top_k(loss_fn: LossFn, params: PyTree, batches: PyTree, key: jax.Array, *, k: int,
                  num_lanczos_steps: int, init: Optional[lz.Eigenpairs] = None,
                  which: str = "largest", tol: Optional[float] = None, num_guard: int = 2,
                  exact_residuals: bool = False, linearize: bool = False,
                  canonical_convs: Optional[bool] = None, method: str = "lanczos",
                  block_size: Optional[int] = None,
                  max_block_steps: int = 4) -> lz.Eigenpairs:
  """Top-k eigenpairs of the Hessian of the mean loss over all examples in ``batches``.

  Jit-compiled; ``loss_fn`` is a static argument, so define it once (not a fresh lambda per
  call) to avoid recompiling. Also callable inside a user's ``jit``.

  Args:
    loss_fn: (params, batch) -> scalar mean loss of one batch.
    params: the point θ (pytree).
    batches: leaves ``[num_batches, batch_size, ...]``; the Hessian is of the mean over all.
    key: PRNG key for the start vector.
    k: number of eigenpairs.
    num_lanczos_steps: the most Hessian-vector products (each over all batches) to spend.
    init: previous Eigenpairs (same params structure) for a warm start along a trajectory.
    which: "largest" (algebraic) or "magnitude" (the paper's ARPACK 'LM').
    tol: stop once all k pairs have ‖Hu − λu‖ <= tol·|λ| (recommended with ``init``).
    num_guard: with ``tol``, Ritz pairs beyond the k-th that must converge too (see
      ``krylov.top_k_eigenpairs``).
    exact_residuals: spend k more HVPs for exact residual norms.
    linearize: reuse one linearization of the gradient for every HVP (faster per HVP, memory
      grows with the number of batches; see ``dataset_hvp``).
    canonical_convs: rewrite the convolutions of the gradient into the layout of XLA's fast
      CPU kernels, which XLA skips inside the Lanczos loop (None: when the default backend is
      CPU; False keeps XLA's own; see ``conv_layout``). Same results.
    method: "lanczos" (single-vector Lanczos from a random or, with ``init``, a warm start
      vector) or "block" (``block_refresh.block_refresh``: Rayleigh–Ritz on a block Krylov space
      seeded with ``init``'s eigenvectors, filled with random vectors up to ``block_size``,
      its HVPs run as one vmapped batch over one linearization when ``linearize``; needs
      ``tol``; falls back to Lanczos with at most ``num_lanczos_steps`` HVPs when the block
      has not converged after ``max_block_steps`` steps, so no eigenvalue is missed).
      ``num_matvecs`` counts vector HVPs either way.
    block_size: vectors per block (default k + num_guard; at least that).
    max_block_steps: block steps before the Lanczos fallback.

  Returns:
    Eigenpairs(eigvals [k] descending, eigvecs leaves [k, *leaf.shape], residuals [k],
    num_matvecs).

  Raises:
    ValueError: bad k / num_lanczos_steps / tol / num_guard, batches that are empty or whose
      leaves disagree on axes 0 and 1, a non-scalar loss, or ``init`` of another structure.
    TypeError: k or num_lanczos_steps not a Python int.
    FloatingPointError: a parameter, the loss (on the first batch) or the Hessian-vector
      products were not finite (checked when called outside jit; inside a jit the eigenvalues
      and residuals are NaN instead, never finite-looking values).
  """
  check_batches(batches)
  check_scalar_loss(loss_fn, params, first_batch(batches))
  lz.check_steps(params, num_lanczos_steps, k)
  lz.check_tol(tol, num_guard)
  if which not in lz.WHICH:
    raise ValueError(f"which must be one of {lz.WHICH}, got {which!r}.")
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
  if method == "block":
    if tol is None:
      raise ValueError("method='block' needs tol (e.g. tol=1e-3): the block's stop rule and "
                       "its fallback to Lanczos depend on it.")
    if block_size is not None:
      lz.check_int(block_size, "block_size", k + num_guard)
    lz.check_int(max_block_steps, "max_block_steps", 1)
  if init is not None:
    like = jax.tree.map(lambda p: jax.ShapeDtypeStruct((init.eigvals.shape[0],) + p.shape,
                                                       p.dtype), params)
    tm.check_same_structure(like, init.eigvecs, "params (with a leading k axis)", "init.eigvecs")
  result = _hessian_top_k(loss_fn, params, batches, key, init, k=k,
                          num_lanczos_steps=num_lanczos_steps, which=which, tol=tol,
                          num_guard=num_guard, exact_residuals=exact_residuals,
                          linearize=linearize,
                          canonical_convs=conv_layout.use_canonical_convs(canonical_convs),
                          method=method, block_size=block_size,
                          max_block_steps=max_block_steps)
  if not isinstance(result.eigvals, jax.core.Tracer) and not bool(
      jnp.all(jnp.isfinite(result.eigvals))):
    bad = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(params)
           if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x)))]
    if bad:
      raise FloatingPointError(
          f"params hold non-finite values (NaN or inf in leaves {', '.join(bad[:5])}): the "
          "Hessian is not defined there (a diverged run?); the eigenvalues are NaN.")
    loss = loss_fn(params, first_batch(batches))
    if not isinstance(loss, jax.core.Tracer) and not bool(jnp.isfinite(loss)):
      raise FloatingPointError(
          f"the loss at params is non-finite ({float(loss)} on the first batch): its Hessian is "
          "not defined (a diverged run, a log of zero, an inf in the data); the eigenvalues are "
          "NaN.")
    raise FloatingPointError(
        "Hessian-vector products produced non-finite values (eigenvalues "
        f"{result.eigvals}). Check that the loss is finite at these params and on every batch "
        "(a diverged run, a log of zero, an inf in the data).")
  return result
