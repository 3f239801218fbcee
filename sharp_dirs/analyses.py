r"""The paper's analyses of the sharpest directions, as pure functions of the loss and the point.

The boundary is ``loss_fn(params, batch) -> scalar`` on pytrees (as in ``sharp_dirs.curvature.hessian``).
``batches`` are stacked pytrees with leaves ``[num_batches, batch_size, ...]``; the loss on an
"eval set" is the mean of its per-batch losses, L(θ) = (1/B) Σ_b loss_fn(θ, batch_b), computed
one batch at a time. ``eigvecs`` are stacked directions e_1..e_k, leaves ``[k, *leaf.shape]``
(``krylov.Eigenpairs.eigvecs``), assumed unit norm (and orthonormal where stated).

- ``step_loss_change`` (the paper's F3): the relative loss change after an SGD step restricted to
  e_i, θ' = θ − γη⟨g_b, e_i⟩e_i, for several multipliers γ of the learning rate η.
- ``cross_section`` / ``cross_section_width`` (F4): L(θ + o·s_i·e_i) on a grid of offsets o in
  units of the typical SGD step length s_i = η·mean_b |⟨g_b, e_i⟩| along e_i.
- ``gradient_alignment`` / ``random_alignment_baseline`` (F5): |cos(g_b, e_i)| per minibatch,
  against E|cos| of two random directions.
- ``gradient_fraction_in_subspace``, ``subspace_overlap``, ``mean_squared_principal_cosine``
  (Gur-Ari et al., 2018), ``distance``.

The functions taking ``loss_fn`` are jit-compiled with ``loss_fn`` (and ``chunk_size``) static:
define ``loss_fn`` once, not as a fresh lambda per call, to avoid recompiling. They can also be
called inside a user's ``jit``. Losses at perturbed points are evaluated ``chunk_size`` points at
a time (``lax.map(..., batch_size=chunk_size)``, i.e. vmapped): 1 keeps the memory of a single
loss evaluation, larger values trade memory (× chunk_size activations) for parallelism.

References:
  Jastrzębski et al., "On the Relation Between the Sharpest Directions of DNN Loss and the SGD
  Step Length", ICLR 2019. https://arxiv.org/abs/1807.05031
  Gur-Ari, Roberts, Dyer, "Gradient Descent Happens in a Tiny Subspace", 2018.
  https://arxiv.org/abs/1812.04754
"""

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sharp_dirs.curvature import conv_layout
from sharp_dirs.curvature import hessian
from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.types import LossFn, PyTree

STATIC = ("loss_fn", "chunk_size")
MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)
OFFSETS = (-16., -8., -4., -2., -1., -0.5, -0.25, 0., 0.25, 0.5, 1., 2., 4., 8., 16.)
THRESHOLDS = (1.01, 1.1, 1.5, 2.0)


# ----------------------------------------------------------------------------------------------
# Helpers.


def _num_directions(eigvecs: PyTree, params: PyTree) -> int:
  """Checks that eigvecs is params with one leading [k] axis; returns k."""
  k = jnp.shape(jax.tree.leaves(eigvecs)[0])[0] if jax.tree.leaves(eigvecs) else 0
  like = jax.tree.map(lambda p: jax.ShapeDtypeStruct((k,) + jnp.shape(p), jnp.result_type(p)),
                      params)
  tm.check_same_structure(like, eigvecs, "params (with a leading k axis)", "eigvecs")
  return k


def _check(loss_fn: LossFn, params: PyTree, eigvecs: PyTree, *batch_sets: PyTree) -> int:
  for batches in batch_sets:
    hessian.check_batches(batches)
    hessian.check_scalar_loss(loss_fn, params, hessian.first_batch(batches))
  return _num_directions(eigvecs, params)


def _grad(loss_fn: LossFn, params: PyTree, batch: PyTree) -> PyTree:
  """The minibatch gradient g_b = ∇_θ loss_fn(θ, batch_b); the analyses run it inside
  ``lax.map``/``scan``, so on CPU its convolutions are made canonical (``conv_layout``)."""
  return conv_layout.grad(loss_fn)(params, batch)


def _stack_gram(a: PyTree, b: PyTree) -> jax.Array:
  """[k_a, k_b] inner products ⟨a_i, b_j⟩ of two stacks of vectors."""
  return jax.vmap(lambda bj: tm.stack_dot(a, bj), out_axes=1)(b)


def mean_loss(loss_fn: LossFn, params: PyTree, batches: PyTree) -> jax.Array:
  """L(θ) = (1/B) Σ_b loss_fn(θ, batch_b): the mean loss over stacked batches, one at a time."""
  return jnp.mean(jax.lax.map(lambda batch: loss_fn(params, batch), batches))


def _losses_along(loss_fn: LossFn, params: PyTree, eval_batches: PyTree, vectors: PyTree,
                  coeffs: jax.Array, chunk_size: int) -> jax.Array:
  """[m, J] losses L(θ + coeffs[i, j]·vectors[i]) for stacked vectors (leaves [m, ...])."""
  m, num = coeffs.shape

  def one(idx):
    i, j = idx // num, idx % num
    point = tm.axpy(coeffs[i, j], tm.stack_get(vectors, i), params)
    return mean_loss(loss_fn, point, eval_batches)

  return jax.lax.map(one, jnp.arange(m * num), batch_size=chunk_size).reshape(m, num)


# ----------------------------------------------------------------------------------------------
# F3: loss change of a step restricted to e_i.


class StepLossChange(NamedTuple):
  """Loss change of SGD steps restricted to each direction (``step_loss_change``).

  relative_change: [k + 2, J] mean over trials of 100·(L(θ')/L(θ) − 1), in percent; rows
    e_1..e_k, the random direction, the full SGD step; columns the multipliers γ.
  loss_before: () L(θ) on the eval batches.
  loss_after: [num_trials, k + 2, J] L(θ') for every trial (minibatch), direction, multiplier.
  multipliers: [J] the γ's.
  """
  relative_change: jax.Array
  loss_before: jax.Array
  loss_after: jax.Array
  multipliers: jax.Array


@functools.partial(jax.jit, static_argnames=STATIC)
def step_loss_change(loss_fn: LossFn, params: PyTree, eigvecs: PyTree, grad_batches: PyTree,
                     eval_batches: PyTree, learning_rate: jax.Array, key: jax.Array,
                     multipliers: Sequence[float] = MULTIPLIERS, *,
                     chunk_size: int = 1) -> StepLossChange:
  r"""Loss change after an SGD step along e_i only: is the step too long for the curvature?

  For each minibatch gradient g_b (one per batch of ``grad_batches``: M = num_batches trials),
  each direction d ∈ {e_1, .., e_k, r} and each multiplier γ,

  .. math::  θ' = θ − γη ⟨g_b, d⟩ d,

  and the baseline full step θ' = θ − γη g_b. The loss L is the mean over ``eval_batches``.
  On a quadratic with curvature λ along d the step along d lowers the loss for γηλ < 2 and is
  best at γηλ = 1. The same M minibatches serve every direction and multiplier (common random
  numbers); the paper drew fresh ones (M = 10, S = 128) per direction and multiplier.

  Args:
    loss_fn: (params, batch) -> scalar mean loss of one batch.
    params: θ.
    eigvecs: e_1..e_k, leaves [k, *leaf.shape], unit norm.
    grad_batches: minibatches for g_b, leaves [M, batch_size, ...] (random training batches).
    eval_batches: the eval set for L, leaves [B, batch_size, ...] (the paper: the first 2560
      training examples, training-mode loss with its L2 term).
    learning_rate: η, the current SGD learning rate.
    key: PRNG key for the random baseline direction r = z/‖z‖, z = tm.normal_like(key, params)
      (isotropic; the paper normalized a uniform [−1, 1] draw).
    multipliers: [J] γ's (the paper: 0.25, 0.33, 0.5, 1, 2, 3, 4; plotted 0.5, 1, 2).
    chunk_size: perturbed points evaluated at once (vmapped); see the module docstring.

  Returns:
    StepLossChange(relative_change [k + 2, J], loss_before (), loss_after [M, k + 2, J],
    multipliers [J]).
  """
  _check(loss_fn, params, eigvecs, grad_batches, eval_batches)
  multipliers = jnp.asarray(multipliers)
  z = tm.normal_like(key, params)
  directions = jax.tree.map(lambda e, r: jnp.concatenate([e.astype(r.dtype), r[None]]),
                            eigvecs, tm.scale(1.0 / tm.norm(z), z))  # [k + 1]
  loss_before = mean_loss(loss_fn, params, eval_batches)
  steps = -learning_rate * multipliers  # [J]

  def trial(batch):
    g = _grad(loss_fn, params, batch)
    coeffs = tm.stack_dot(directions, g)  # [k + 1]
    updates = jax.tree.map(  # [k + 2]: ⟨g, d⟩d for every d, then g.
        lambda d, x: jnp.concatenate([
            (coeffs.reshape((-1,) + (1,) * x.ndim) * d).astype(x.dtype), x[None]]),
        directions, g)
    num_rows = coeffs.shape[0] + 1
    return _losses_along(loss_fn, params, eval_batches, updates,
                         jnp.broadcast_to(steps, (num_rows, steps.shape[0])), chunk_size)

  loss_after = jax.lax.map(trial, grad_batches)  # [M, k + 2, J]
  relative = jnp.mean(100.0 * (loss_after / loss_before - 1.0), axis=0)
  return StepLossChange(relative, loss_before, loss_after, multipliers)


# ----------------------------------------------------------------------------------------------
# F4: cross-sections of the loss along e_i.


class CrossSection(NamedTuple):
  """Loss along each direction, in units of the typical SGD step length (``cross_section``).

  offsets: [J] o_j.
  scale: [k] s_i = η·mean_b |⟨g_b, e_i⟩|.
  losses: [k, J] L(θ + o_j·s_i·e_i).
  """
  offsets: jax.Array
  scale: jax.Array
  losses: jax.Array


@functools.partial(jax.jit, static_argnames=STATIC)
def cross_section(loss_fn: LossFn, params: PyTree, eigvecs: PyTree, grad_batches: PyTree,
                  eval_batches: PyTree, learning_rate: jax.Array,
                  offsets: Sequence[float] = OFFSETS, *, chunk_size: int = 1) -> CrossSection:
  r"""The loss on a line through θ along each e_i, measured in SGD step lengths.

  .. math::  s_i = η \frac{1}{M} \sum_b |⟨g_b, e_i⟩|, \qquad
             \mathrm{losses}_{ij} = L(θ + o_j s_i e_i),

  with g_b the gradient on batch b of ``grad_batches`` and L the mean loss over
  ``eval_batches``. On a quadratic the cross-section is the parabola
  L(θ) + o s_i ⟨∇L, e_i⟩ + ½ λ_i s_i² o²; with noise-free gradients (s_i = η|⟨∇L, e_i⟩|) its
  minimum lies 1/(ηλ_i) step lengths away, so the SGD step (|o| = 1) raises the loss along e_i
  when ηλ_i > 2. The paper used e_1, e_3, e_5 (slice ``eigvecs`` for that), M = 10
  random minibatches and the first 1280 training examples with the inference-mode loss.

  Args:
    loss_fn: (params, batch) -> scalar mean loss of one batch.
    params: θ.
    eigvecs: e_1..e_k, leaves [k, *leaf.shape], unit norm.
    grad_batches: minibatches for g_b, leaves [M, batch_size, ...].
    eval_batches: the eval set for L, leaves [B, batch_size, ...].
    learning_rate: η.
    offsets: [J] o_j in units of s_i (include 0 for L(θ)).
    chunk_size: perturbed points evaluated at once (vmapped); see the module docstring.

  Returns:
    CrossSection(offsets [J], scale [k], losses [k, J]).
  """
  _check(loss_fn, params, eigvecs, grad_batches, eval_batches)
  offsets = jnp.asarray(offsets)
  coeffs = jax.lax.map(lambda batch: tm.stack_dot(eigvecs, _grad(loss_fn, params, batch)),
                       grad_batches)  # [M, k]
  scale = learning_rate * jnp.mean(jnp.abs(coeffs), axis=0)
  losses = _losses_along(loss_fn, params, eval_batches, tm.cast(eigvecs, params),
                         scale[:, None] * offsets[None, :], chunk_size)
  return CrossSection(offsets, scale, losses)


class CrossSectionWidth(NamedTuple):
  """Widths of the cross-sections (``cross_section_width``), numpy arrays [k, T].

  width: max(left, right): the basin's half-width on its wider side.
  left: smallest |o| with o < 0 where the loss reaches t·L_0; np.inf if it never does.
  right: the same for o > 0.
  """
  width: np.ndarray
  left: np.ndarray
  right: np.ndarray


def _first_crossing(abs_offsets: np.ndarray, losses: np.ndarray, limits: np.ndarray):
  """[k, T] smallest |o| (over one side's offsets) with loss ≥ limit; np.inf if none."""
  if abs_offsets.size == 0:
    return np.full(limits.shape, np.inf)
  order = np.argsort(abs_offsets)
  abs_offsets, losses = abs_offsets[order], losses[:, order]  # [J'], [k, J']
  above = losses[:, None, :] >= limits[:, :, None]  # [k, T, J']
  first = np.argmax(above, axis=-1)
  found = np.any(above, axis=-1)
  return np.where(found, abs_offsets[first], np.inf)


def _width_inputs(offsets, losses, loss_at_zero, thresholds):
  offsets = np.asarray(offsets, np.float64)
  losses = np.asarray(losses, np.float64)
  if losses.ndim == 1:
    losses = losses[None]
  if losses.shape[-1] != offsets.shape[0]:
    raise ValueError(f"losses {losses.shape} must be [k, J] with J = len(offsets) = "
                     f"{offsets.shape[0]}.")
  ref = np.broadcast_to(np.asarray(loss_at_zero, np.float64), losses.shape[:1])
  limits = ref[:, None] * np.asarray(thresholds, np.float64)[None, :]  # [k, T]
  return offsets, losses, limits


def cross_section_width(offsets, losses, loss_at_zero, thresholds=THRESHOLDS
                        ) -> CrossSectionWidth:
  """Basin widths of cross-sections, in units of the SGD step length (numpy, on the host).

  For each direction i and threshold t: left/right = the smallest |o| on that side of the grid
  at which losses[i] ≥ t·loss_at_zero (the paper's comparison), width = max(left, right).
  A side that never reaches the threshold within the grid reports np.inf (the crossing lies
  beyond max |o|), and so does the width; ``np.isfinite`` flags the widths resolved by the grid.
  Grid values, not interpolated: a width is an upper bound on the crossing, to grid resolution.

  Args:
    offsets: [J] the grid o_j (``CrossSection.offsets``).
    losses: [k, J] (or [J]) the cross-sections (``CrossSection.losses``).
    loss_at_zero: reference L_0, scalar or [k] (the paper: the training loss; or
      ``losses[:, offsets == 0]``).
    thresholds: [T] the factors t.

  Returns:
    CrossSectionWidth(width, left, right), each [k, T] float64.
  """
  offsets, losses, limits = _width_inputs(offsets, losses, loss_at_zero, thresholds)
  left = _first_crossing(-offsets[offsets < 0], losses[:, offsets < 0], limits)
  right = _first_crossing(offsets[offsets > 0], losses[:, offsets > 0], limits)
  return CrossSectionWidth(np.maximum(left, right), left, right)


def cross_section_width_as_in_paper(offsets, losses, loss_at_zero, thresholds=THRESHOLDS
                                    ) -> np.ndarray:
  """[k, T] the width the authors' ``estimate_width`` computed, quirks included (numpy).

  Their code takes max(first right offset, first *signed* left offset) with the left offsets
  ascending, so the left value is negative and the result is the right-side width (the
  smallest o > 0 with loss ≥ t·L_0); and it records 0 when either side never reaches the
  threshold. Use ``cross_section_width`` for the documented definition.
  """
  both = cross_section_width(offsets, losses, loss_at_zero, thresholds)
  return np.where(np.isfinite(both.width), both.right, 0.0)


# ----------------------------------------------------------------------------------------------
# F5: gradient alignment with the top eigenvectors.


class GradientAlignment(NamedTuple):
  """Cosines between gradients and directions (``gradient_alignment``).

  abs_cos: [B, k] |cos(g_b, e_i)| for every minibatch b.
  mean_abs_cos: [k] mean over minibatches of abs_cos (the paper's ``alig/i_abs_mean``).
  full_batch_cos: [k] cos(ḡ, e_i), signed, with ḡ = (1/B) Σ_b g_b the full-batch gradient.
  grad_norms: [B] ‖g_b‖.
  full_batch_grad_norm: () ‖ḡ‖.
  """
  abs_cos: jax.Array
  mean_abs_cos: jax.Array
  full_batch_cos: jax.Array
  grad_norms: jax.Array
  full_batch_grad_norm: jax.Array


def _cos(dots: jax.Array, norm_a: jax.Array, norm_b: jax.Array) -> jax.Array:
  """⟨a, b⟩/(‖a‖‖b‖), and 0 where a norm is 0."""
  denom = norm_a * norm_b
  return jnp.where(denom > 0, dots / jnp.where(denom > 0, denom, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def gradient_alignment(loss_fn: LossFn, params: PyTree, eigvecs: PyTree,
                       batches: PyTree) -> GradientAlignment:
  r"""How much each minibatch gradient points along each e_i: |cos(g_b, e_i)|.

  .. math::  \cos(g_b, e_i) = \frac{⟨g_b, e_i⟩}{‖g_b‖ ‖e_i‖}

  for g_b the gradient on batch b, and the same for the full-batch gradient ḡ = (1/B) Σ_b g_b.
  Batches are streamed (``lax.scan``): memory holds ḡ and one gradient. Compare with
  ``random_alignment_baseline(tm.size(params))``.

  Args:
    loss_fn: (params, batch) -> scalar mean loss of one batch.
    params: θ.
    eigvecs: e_1..e_k, leaves [k, *leaf.shape].
    batches: leaves [B, batch_size, ...] (the paper: the training set in batches of 128).

  Returns:
    GradientAlignment(abs_cos [B, k], mean_abs_cos [k], full_batch_cos [k], grad_norms [B],
    full_batch_grad_norm ()).
  """
  _check(loss_fn, params, eigvecs, batches)
  eig_norms = jax.vmap(tm.norm)(eigvecs)  # [k]

  def step(total, batch):
    g = _grad(loss_fn, params, batch)
    return tm.add(total, g), (tm.stack_dot(eigvecs, g), tm.norm(g))

  total, (dots, norms) = jax.lax.scan(step, tm.scale(0.0, params), batches)
  full = tm.scale(1.0 / norms.shape[0], total)
  full_norm = tm.norm(full)
  abs_cos = jnp.abs(_cos(dots, norms[:, None], eig_norms[None, :]))
  full_cos = _cos(tm.stack_dot(eigvecs, full), full_norm, eig_norms)
  return GradientAlignment(abs_cos, jnp.mean(abs_cos, axis=0), full_cos, norms, full_norm)


def random_alignment_baseline(dim: int) -> float:
  r"""E|cos(u, v)| for independent uniformly random directions u, v in R^dim.

  .. math::  E|\cos| = \frac{Γ(n/2)}{\sqrt{π}\, Γ((n+1)/2)} ≈ \sqrt{2/(π n)}  (large n),

  computed with ``lgamma`` (exact for every n: 1 for n = 1, 2/π for n = 2, 1/2 for n = 3). For a
  model, dim = tm.size(params); the paper's D = 350,000 gives ≈ 0.00135.
  """
  n = int(dim)
  if n < 1:
    raise ValueError(f"dim must be a positive integer, got {dim}.")
  return math.exp(math.lgamma(n / 2) - math.lgamma((n + 1) / 2)) / math.sqrt(math.pi)


# ----------------------------------------------------------------------------------------------
# Subspaces and distances.


def gradient_fraction_in_subspace(g: PyTree, eigvecs: PyTree) -> jax.Array:
  r"""‖Eᵀg‖²/‖g‖²: the fraction of g's squared norm inside span(e_1..e_k).

  ``eigvecs`` must be orthonormal (then the value is in [0, 1]); Gur-Ari et al.'s overlap of the
  gradient with the top-k Hessian subspace.
  """
  coeffs = tm.stack_dot(eigvecs, g)
  return jnp.sum(coeffs * coeffs) / tm.vdot(g, g)


def subspace_overlap(eigvecs_a: PyTree, eigvecs_b: PyTree) -> jax.Array:
  r"""Principal cosines between span(E_a) and span(E_b): singular values of E_aᵀE_b.

  Both stacks orthonormal (leaves [k_a, ...] and [k_b, ...]). Returns [min(k_a, k_b)] in
  descending order, each in [0, 1]: 1 for a shared direction, 0 for orthogonal ones; cos of the
  principal angles, so it does not depend on the bases chosen within the subspaces.
  """
  return jnp.linalg.svd(_stack_gram(eigvecs_a, eigvecs_b), compute_uv=False)


def mean_squared_principal_cosine(eigvecs_a: PyTree, eigvecs_b: PyTree) -> jax.Array:
  r"""‖E_aᵀE_b‖_F² / min(k_a, k_b): the mean squared principal cosine, a scalar in [0, 1].

  For k_a = k_b = k this is tr(P_a P_b)/k with P the orthogonal projectors: 1 iff the
  subspaces coincide, k/n on average for random k-dim subspaces of R^n.
  """
  gram = _stack_gram(eigvecs_a, eigvecs_b)
  return jnp.sum(gram * gram) / min(gram.shape)


def distance(params_a: PyTree, params_b: PyTree) -> jax.Array:
  """‖θ_a − θ_b‖ over all leaves (e.g. the paper's "Dist." ‖θ − θ_init‖)."""
  return tm.norm(tm.sub(params_a, params_b))
