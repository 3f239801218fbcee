"""The paper's analyses (F3, F4, F5) and subspace measures against closed forms and loop references.

Most tests use a quadratic with known eigenvectors whose per-batch gradients are exact:

  loss_fn(θ, batch) = ½ δᵀHδ + c + ⟨mean(batch["s"]), δ⟩,    δ = θ − θ*,

so g_b = Hδ + s̄_b, and eval batches whose shifts cancel make the eval loss the pure quadratic.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_dirs import analyses
from sharp_dirs.curvature import tree_math as tm
from testing import dense_hessian, flat, matrix_with_spectrum, mlp_problem

SPECTRUM = np.array([10.0, 4.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05])
C = 0.3


def _tree(v):
  """Flat [..., n] -> {"b": [..., 3], "w": [..., n-3]} (the order of testing.flat)."""
  v = jnp.asarray(v)
  return {"b": v[..., :3], "w": v[..., 3:]}


class Quadratic:
  """½ δᵀHδ + c + ⟨s̄_b, δ⟩ with H = Q diag(SPECTRUM) Qᵀ; numpy references in float64."""

  def __init__(self, seed=0, num_grad_batches=4, offset_scale=1.0):
    rng = np.random.default_rng(seed)
    self.h, self.q = matrix_with_spectrum(SPECTRUM, seed)
    n = len(SPECTRUM)
    self.theta_star = rng.normal(size=n)
    self.theta = self.theta_star + offset_scale * rng.normal(size=n)
    self.shifts = rng.normal(size=(num_grad_batches, 5, n))  # s̄_b = mean over the 5 rows.
    v = rng.normal(size=(3, n))
    self.eval_shifts = np.stack([v, -v])  # mean over batches of ⟨s̄_b, δ⟩ = 0.
    h, theta_star = jnp.asarray(self.h), jnp.asarray(self.theta_star)

    def loss_fn(params, batch):
      delta = flat(params) - theta_star
      return 0.5 * delta @ h @ delta + C + jnp.mean(batch["s"], axis=0) @ delta

    self.loss_fn = loss_fn
    self.params = _tree(self.theta)
    self.grad_batches = {"s": jnp.asarray(self.shifts)}
    self.eval_batches = {"s": jnp.asarray(self.eval_shifts)}

  def eigvecs(self, k):
    return _tree(self.q[:, :k].T)

  def loss(self, theta):
    delta = theta - self.theta_star
    return 0.5 * delta @ self.h @ delta + C

  def grads(self):
    """[M, n] exact minibatch gradients Hδ + s̄_b."""
    return self.h @ (self.theta - self.theta_star) + self.shifts.mean(axis=1)


def test_step_loss_change_matches_the_quadratic_in_closed_form(x64):
  quad = Quadratic()
  k, lr, key = 3, 0.1, jax.random.PRNGKey(7)
  multipliers = (0.25, 0.5, 1.0, 2.0, 4.0)
  out = analyses.step_loss_change(quad.loss_fn, quad.params, quad.eigvecs(k), quad.grad_batches,
                                  quad.eval_batches, lr, key, multipliers)
  z = np.asarray(flat(tm.normal_like(key, quad.params)))
  directions = np.concatenate([quad.q[:, :k].T, (z / np.linalg.norm(z))[None]])
  before = quad.loss(quad.theta)
  expected = np.zeros((k + 2, len(multipliers)))
  for g in quad.grads():
    updates = [(g @ d) * d for d in directions] + [g]
    for i, u in enumerate(updates):
      for j, gamma in enumerate(multipliers):
        after = quad.loss(quad.theta - gamma * lr * u)
        expected[i, j] += 100 * (after / before - 1) / len(quad.grads())
  np.testing.assert_allclose(out.loss_before, before, rtol=1e-12)
  np.testing.assert_allclose(out.relative_change, expected, rtol=1e-9, atol=1e-10)
  assert out.loss_after.shape == (4, k + 2, len(multipliers))
  np.testing.assert_allclose(out.multipliers, multipliers)
  # Evaluating several points at once (5 does not divide the 25 points) changes nothing.
  chunked = analyses.step_loss_change(quad.loss_fn, quad.params, quad.eigvecs(k),
                                      quad.grad_batches, quad.eval_batches, lr, key, multipliers,
                                      chunk_size=4)
  np.testing.assert_allclose(chunked.loss_after, out.loss_after, rtol=1e-12)


def test_step_along_e_i_overshoots_exactly_when_gamma_eta_lambda_exceeds_two(x64):
  """Noise-free gradients: ΔL_i = ½λ_i(γηa_i)² − γηa_i², zero at γηλ_i = 2, least at 1."""
  quad = Quadratic()
  quad.shifts[:] = 0.0
  quad.grad_batches = {"s": jnp.zeros(quad.shifts.shape)}
  lr = 1.0 / SPECTRUM[0]  # γ = 1 is the exact 1-D minimum along e_1, γ = 2 returns to L(θ).
  multipliers = (0.5, 1.0, 2.0, 4.0)
  out = analyses.step_loss_change(quad.loss_fn, quad.params, quad.eigvecs(2), quad.grad_batches,
                                  quad.eval_batches, lr, jax.random.PRNGKey(0), multipliers)
  change = np.asarray(out.relative_change)
  a = quad.q[:, :2].T @ quad.grads()[0]
  for i in range(2):
    for j, gamma in enumerate(multipliers):
      t = gamma * lr * a[i]
      delta = 0.5 * SPECTRUM[i] * t ** 2 - t * a[i]
      np.testing.assert_allclose(change[i, j], 100 * delta / out.loss_before, rtol=1e-9,
                                 atol=1e-9)
  np.testing.assert_allclose(change[0, 2], 0.0, atol=1e-9)  # γηλ_1 = 2: back to L(θ).
  assert np.argmin(change[0]) == 1 and change[0, 3] > 0  # best at γ = 1, overshoot at γ = 4.
  assert np.all(change[1] < 0)  # γηλ_2 ≤ 1.6 < 2: every step along e_2 helps.


def test_cross_section_is_the_parabola_of_the_quadratic(x64):
  quad = Quadratic()
  k, lr = 3, 0.05
  out = analyses.cross_section(quad.loss_fn, quad.params, quad.eigvecs(k), quad.grad_batches,
                               quad.eval_batches, lr)
  e = quad.q[:, :k].T
  scale = lr * np.mean(np.abs(quad.grads() @ e.T), axis=0)
  np.testing.assert_allclose(out.scale, scale, rtol=1e-12)
  offsets = np.asarray(analyses.OFFSETS)
  np.testing.assert_allclose(out.offsets, offsets)
  expected = [[quad.loss(quad.theta + o * s * ei) for o in offsets] for s, ei in zip(scale, e)]
  np.testing.assert_allclose(out.losses, expected, rtol=1e-12)
  # Curvature of the cross-section: second differences give λ_i s_i² at every offset.
  zero = int(np.flatnonzero(offsets == 0)[0])
  losses = np.asarray(out.losses)
  for j in range(zero + 1, len(offsets)):
    o = offsets[j]
    curvature = (losses[:, j] + losses[:, 2 * zero - j] - 2 * losses[:, zero]) / o ** 2
    np.testing.assert_allclose(curvature, SPECTRUM[:k] * scale ** 2, rtol=1e-8)


def test_widths_of_parabolic_cross_sections_at_the_minimum(x64):
  """At θ*, c + ½λ_i s_i² o²: width(t) = the first grid |o| ≥ √(2c(t − 1)/(λ_i s_i²))."""
  quad = Quadratic()
  quad.theta = quad.theta_star
  quad.params = _tree(quad.theta_star)
  section = analyses.cross_section(quad.loss_fn, quad.params, quad.eigvecs(3), quad.grad_batches,
                                   quad.eval_batches, 0.05)
  thresholds = (1.01, 1.1, 1.5, 2.0)
  widths = analyses.cross_section_width(section.offsets, section.losses, C, thresholds)
  grid = np.asarray(analyses.OFFSETS)
  grid = grid[grid > 0]
  s = np.asarray(section.scale)
  for i in range(3):
    for j, t in enumerate(thresholds):
      crossing = np.sqrt(2 * C * (t - 1) / (SPECTRUM[i] * s[i] ** 2))
      beyond = grid[grid >= crossing]
      expected = beyond[0] if beyond.size else np.inf
      assert widths.left[i, j] == widths.right[i, j] == widths.width[i, j] == expected


def test_cross_section_width_takes_the_wider_side_and_marks_unresolved_sides():
  offsets = np.asarray(analyses.OFFSETS)
  narrow, wide = 1 + 0.048 * offsets ** 2, 1 + 0.012 * offsets ** 2  # crossings ×2 apart.
  losses = np.stack([
      np.where(offsets < 0, narrow, wide),  # wider on the right.
      np.where(offsets < 0, wide, narrow),  # wider on the left.
      np.where(offsets < 0, 1.0, narrow),  # flat on the left: never crosses.
      1 + 0 * offsets])  # flat.
  out = analyses.cross_section_width(offsets, losses, 1.0)
  # 0.012 o² ≥ t − 1 first on the grid at |o| = 1, 4, 8, 16; 0.048 o² at 0.5, 2, 4, 8.
  wide_w, narrow_w = np.array([1.0, 4, 8, 16]), np.array([0.5, 2, 4, 8])
  np.testing.assert_array_equal(out.right, [wide_w, narrow_w, narrow_w, [np.inf] * 4])
  np.testing.assert_array_equal(out.left, [narrow_w, wide_w, [np.inf] * 4, [np.inf] * 4])
  np.testing.assert_array_equal(out.width, [wide_w, wide_w, [np.inf] * 4, [np.inf] * 4])
  # The authors' estimate: the right side, and 0 when a side never crosses.
  paper = analyses.cross_section_width_as_in_paper(offsets, losses, 1.0)
  np.testing.assert_array_equal(paper, [wide_w, narrow_w, [0.0] * 4, [0.0] * 4])
  # A per-direction reference loss and a single cross-section.
  single = analyses.cross_section_width(offsets, 2 * losses[0], 2.0)
  np.testing.assert_array_equal(single.width, [wide_w])
  per_direction = analyses.cross_section_width(offsets, losses[:2] * [[1.0], [3.0]], [1.0, 3.0])
  np.testing.assert_array_equal(per_direction.width, [wide_w, wide_w])


def test_gradient_alignment_matches_the_exact_minibatch_gradients(x64):
  quad = Quadratic(num_grad_batches=6)
  k = 3
  out = analyses.gradient_alignment(quad.loss_fn, quad.params, quad.eigvecs(k),
                                    quad.grad_batches)
  g = quad.grads()
  e = quad.q[:, :k].T
  cos = (g @ e.T) / np.linalg.norm(g, axis=1)[:, None]
  np.testing.assert_allclose(out.abs_cos, np.abs(cos), rtol=1e-10)
  np.testing.assert_allclose(out.mean_abs_cos, np.abs(cos).mean(axis=0), rtol=1e-10)
  full = g.mean(axis=0)
  np.testing.assert_allclose(out.full_batch_cos, e @ full / np.linalg.norm(full), rtol=1e-10)
  np.testing.assert_allclose(out.grad_norms, np.linalg.norm(g, axis=1), rtol=1e-12)
  np.testing.assert_allclose(out.full_batch_grad_norm, np.linalg.norm(full), rtol=1e-12)


def test_gradients_along_e1_are_fully_aligned_with_it(x64):
  """At θ* with s̄_b = α_b e_1, every g_b = α_b e_1: |cos| = 1 with e_1, 0 with the others."""
  quad = Quadratic()
  alphas = np.array([2.0, -0.5, 3.0])
  shifts = np.repeat(alphas[:, None, None] * quad.q[:, 0][None, None, :], 5, axis=1)
  out = analyses.gradient_alignment(quad.loss_fn, _tree(quad.theta_star), quad.eigvecs(3),
                                    {"s": jnp.asarray(shifts)})
  np.testing.assert_allclose(out.abs_cos, [[1.0, 0, 0]] * 3, atol=1e-12)
  np.testing.assert_allclose(out.full_batch_cos, [1.0, 0, 0], atol=1e-12)  # mean α > 0.


def test_random_alignment_baseline_closed_form_and_monte_carlo():
  assert analyses.random_alignment_baseline(1) == pytest.approx(1.0, rel=1e-14)
  assert analyses.random_alignment_baseline(2) == pytest.approx(2 / np.pi, rel=1e-14)
  assert analyses.random_alignment_baseline(3) == pytest.approx(0.5, rel=1e-14)
  n = 350_000  # the paper's D: ≈ 0.00135, and Γ-ratio = sqrt(2/(πn))·(1 + O(1/n)).
  assert analyses.random_alignment_baseline(n) == pytest.approx(np.sqrt(2 / (np.pi * n)),
                                                                rel=1e-5)
  assert analyses.random_alignment_baseline(n) == pytest.approx(0.00135, abs=5e-6)
  rng = np.random.default_rng(0)
  u, v = rng.normal(size=(2, 100_000, 7))
  samples = np.abs(np.sum(u * v, 1)) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
  stderr = samples.std() / np.sqrt(samples.size)
  assert abs(analyses.random_alignment_baseline(7) - samples.mean()) < 4 * stderr
  with pytest.raises(ValueError, match="positive"):
    analyses.random_alignment_baseline(0)


def test_subspace_overlap_recovers_known_principal_angles(x64):
  q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(20, 20)))
  angles = np.array([1.2, 0.1, 0.5])
  a = q[:, :3].T
  b = np.cos(angles)[:, None] * a + np.sin(angles)[:, None] * q[:, 3:6].T
  rotation, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))
  b = rotation @ b  # another orthonormal basis of the same subspace.
  ea, eb = _tree(a), _tree(b)
  np.testing.assert_allclose(analyses.subspace_overlap(ea, eb), np.sort(np.cos(angles))[::-1],
                             rtol=1e-12)
  np.testing.assert_allclose(analyses.mean_squared_principal_cosine(ea, eb),
                             np.mean(np.cos(angles) ** 2), rtol=1e-12)
  np.testing.assert_allclose(analyses.subspace_overlap(ea, _tree(rotation @ a)), 1.0, rtol=1e-12)
  # A 2-dim subspace inside a 4-dim one: both principal cosines 1; orthogonal ones: 0.
  np.testing.assert_allclose(analyses.subspace_overlap(_tree(a[:2]), _tree(q[:, :4].T)), 1.0,
                             rtol=1e-12)
  np.testing.assert_allclose(
      analyses.mean_squared_principal_cosine(_tree(a[:2]), _tree(q[:, :4].T)), 1.0, rtol=1e-12)
  np.testing.assert_allclose(analyses.subspace_overlap(ea, _tree(q[:, 5:9].T)), 0.0, atol=1e-12)


def test_gradient_fraction_in_subspace_of_known_components(x64):
  q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(10, 10)))
  g = 3.0 * q[:, 0] - 4.0 * q[:, 2] + 2.0 * q[:, 6] + 1.0 * q[:, 9]
  fraction = analyses.gradient_fraction_in_subspace(_tree(g), _tree(q[:, :4].T))
  np.testing.assert_allclose(fraction, (9 + 16) / (9 + 16 + 4 + 1), rtol=1e-12)
  np.testing.assert_allclose(analyses.gradient_fraction_in_subspace(_tree(g), _tree(q.T)), 1.0,
                             rtol=1e-12)


def test_distance_is_the_euclidean_norm_of_the_difference(x64):
  rng = np.random.default_rng(6)
  a, b = rng.normal(size=(2, 11))
  np.testing.assert_allclose(analyses.distance(_tree(a), _tree(b)), np.linalg.norm(a - b),
                             rtol=1e-12)
  assert analyses.distance(_tree(a), _tree(a)) == 0.0


def test_mismatched_eigvecs_are_rejected(x64):
  quad = Quadratic()
  bad = {"b": jnp.zeros((2, 3)), "w": jnp.zeros((2, 4))}
  with pytest.raises(ValueError, match="eigvecs"):
    analyses.gradient_alignment(quad.loss_fn, quad.params, bad, quad.grad_batches)


def test_analyses_of_a_tiny_mlp_match_a_loop_reference(x64):
  """All three analyses on the testing.mlp_problem MLP against per-point Python loops on flat vectors."""
  params, grad_batches, loss_fn = mlp_problem(num_batches=3, batch_size=8)
  eval_batches = mlp_problem(seed=1, num_batches=2, batch_size=8)[1]
  flat0, unravel = jax.flatten_util.ravel_pytree(params)
  flat0 = np.asarray(flat0)
  hessian = jax.jit(lambda p, b: dense_hessian(loss_fn, p, b))(params, grad_batches)
  evals, vecs = np.linalg.eigh(np.asarray(hessian))
  e = vecs[:, np.argsort(evals)[::-1][:3]].T  # [3, n]
  eigvecs = jax.vmap(unravel)(jnp.asarray(e))
  lr, key, multipliers = 0.5, jax.random.PRNGKey(3), (0.5, 1.0, 2.0)

  unstack = lambda batches, b: jax.tree.map(lambda x: x[b], batches)
  eval_loss = jax.jit(lambda f: sum(loss_fn(unravel(f), unstack(eval_batches, b))
                                    for b in range(2)) / 2)
  grad = jax.jit(lambda b: flat(jax.grad(loss_fn)(params, unstack(grad_batches, b))))
  grads = np.stack([np.asarray(grad(b)) for b in range(3)])

  # F3.
  out = analyses.step_loss_change(loss_fn, params, eigvecs, grad_batches, eval_batches, lr, key,
                                  multipliers)
  z = np.asarray(flat(tm.normal_like(key, params)))
  directions = np.concatenate([e, (z / np.linalg.norm(z))[None]])
  before = float(eval_loss(flat0))
  expected = np.zeros((5, 3))
  for g in grads:
    for i, u in enumerate([(g @ d) * d for d in directions] + [g]):
      for j, gamma in enumerate(multipliers):
        expected[i, j] += 100 * (eval_loss(flat0 - gamma * lr * u) / before - 1) / 3
  np.testing.assert_allclose(out.loss_before, before, rtol=1e-12)
  np.testing.assert_allclose(out.relative_change, expected, rtol=1e-8, atol=1e-10)

  # F4.
  offsets = (-2.0, -0.5, 0.0, 1.0, 4.0)
  section = analyses.cross_section(loss_fn, params, eigvecs, grad_batches, eval_batches, lr,
                                   offsets)
  scale = lr * np.mean(np.abs(grads @ e.T), axis=0)
  np.testing.assert_allclose(section.scale, scale, rtol=1e-10)
  expected = [[eval_loss(flat0 + o * s * d) for o in offsets] for s, d in zip(scale, e)]
  np.testing.assert_allclose(section.losses, expected, rtol=1e-10)

  # F5, also inside a user's jit.
  align = jax.jit(lambda p: analyses.gradient_alignment(loss_fn, p, eigvecs, grad_batches))(
      params)
  cos = np.abs(grads @ e.T) / np.linalg.norm(grads, axis=1)[:, None]
  np.testing.assert_allclose(align.abs_cos, cos, rtol=1e-10)
  full = grads.mean(axis=0)
  np.testing.assert_allclose(align.full_batch_cos, e @ full / np.linalg.norm(full), rtol=1e-10)


def test_float32_params_stay_float32():
  params, batches, loss_fn = mlp_problem(dtype=jnp.float32)
  eigvecs = jax.tree.map(lambda p: jnp.stack([jnp.ones_like(p), -jnp.ones_like(p)]) / 8.0,
                         params)
  out = analyses.step_loss_change(loss_fn, params, eigvecs, batches, batches, 0.1,
                                  jax.random.PRNGKey(0), (1.0,))
  assert out.relative_change.dtype == jnp.float32 and out.loss_after.shape == (3, 4, 1)
  assert np.all(np.isfinite(out.relative_change))
