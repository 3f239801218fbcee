"""Hutchinson estimators and stochastic Lanczos quadrature against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_dirs.curvature import spectral
from sharp_dirs.curvature import tree_math as tm
from testing import flat, matrix_with_spectrum, split_matvec

SPECTRUM = np.concatenate([[20.0, -6.0, 5.0], np.linspace(-1, 2, 37)])


def test_rademacher_trace_is_exact_for_a_diagonal_operator(x64):
  d = jnp.asarray(SPECTRUM)
  est = spectral.hutchinson_trace(lambda v: {"x": d * v["x"]}, {"x": d}, jax.random.PRNGKey(0),
                                  num_samples=3)
  np.testing.assert_allclose(est.value, np.sum(SPECTRUM), rtol=1e-12)  # zᵀDz = tr D when z²=1
  np.testing.assert_allclose(est.stderr, 0.0, atol=1e-10)


def test_trace_and_frobenius_estimates_are_unbiased(x64):
  h, _ = matrix_with_spectrum(SPECTRUM)
  matvec, like = split_matvec(h)
  key = jax.random.PRNGKey(1)
  trace = spectral.hutchinson_trace(matvec, like, key, num_samples=2000)
  assert abs(trace.value - np.trace(h)) < 4 * trace.stderr
  assert trace.stderr < 1.0
  fro = spectral.frobenius_norm(matvec, like, key, num_samples=2000)
  np.testing.assert_allclose(fro, np.linalg.norm(h), rtol=0.05)


def test_paper_frobenius_variant_is_sqrt_of_mean_unsquared_norms(x64):
  """For H = c·I in n dimensions ‖Hz‖ = c‖z‖ ≈ c√n, so the paper's number ≈ sqrt(c√n)."""
  c, n = 4.0, 10_000
  like = {"x": jnp.zeros(n)}
  value = spectral.frobenius_norm_as_in_paper(lambda v: tm.scale(c, v), like, jax.random.PRNGKey(2))
  np.testing.assert_allclose(value, np.sqrt(c * np.sqrt(n)), rtol=0.01)
  true = spectral.frobenius_norm(lambda v: tm.scale(c, v), like, jax.random.PRNGKey(2), 50)
  np.testing.assert_allclose(true, c * np.sqrt(n), rtol=0.01)


def test_slq_quadrature_is_exact_for_low_degree_moments(x64):
  """m-step Gauss quadrature integrates polynomials of degree ≤ 2m−1 exactly: Σ w θᵖ = v̂ᵀHᵖv̂."""
  h, _ = matrix_with_spectrum(SPECTRUM)
  matvec, like = split_matvec(h)
  key = jax.random.PRNGKey(3)
  m = 4
  density = spectral.spectral_density(matvec, like, key, num_draws=3, num_steps=m)
  np.testing.assert_allclose(jnp.sum(density.weights, axis=1), 1.0, rtol=1e-12)
  means = []
  for draw, k in enumerate(jax.random.split(key, 3)):
    v = np.array(flat(tm.normal_like(k, like)))
    v /= np.linalg.norm(v)
    means.append(v @ h @ v)
    for p in range(2 * m):
      moment = v @ np.linalg.matrix_power(h, p) @ v
      np.testing.assert_allclose(
          np.sum(density.weights[draw] * density.nodes[draw] ** p), moment, rtol=1e-8,
          atol=1e-8 * 20.0 ** p)
  np.testing.assert_allclose(spectral.slq_expectation(density, lambda t: t), np.mean(means),
                             rtol=1e-10)


def _probes(key, like, num_draws):
  """The unit probes spectral_density draws: normal_like of each split key, normalized."""
  vs = [np.array(flat(tm.normal_like(k, like))) for k in jax.random.split(key, num_draws)]
  return np.stack([v / np.linalg.norm(v) for v in vs])


def test_density_is_the_exact_smoothed_density_and_outliers_carry_their_overlap(x64):
  """With num_steps = n, SLQ is exact: nodes are the eigenvalues λ_i and weights the squared
  overlaps (q_iᵀv̂)² of each probe, so φ(t) = mean_d Σ_i (q_iᵀv̂_d)² N(t; λ_i, σ²) exactly."""
  h, q = matrix_with_spectrum(SPECTRUM)
  matvec, like = split_matvec(h)
  key = jax.random.PRNGKey(4)
  density = spectral.spectral_density(matvec, like, key, num_draws=5, num_steps=40)
  overlaps = (_probes(key, like, 5) @ q) ** 2  # [draws, n], column i ↔ SPECTRUM[i]
  sigma = 0.25
  grid = np.linspace(-10, 25, 3501)
  phi = np.asarray(spectral.density_on_grid(density, jnp.asarray(grid), sigma))
  kernel = np.exp(-0.5 * ((grid[:, None] - SPECTRUM[None]) / sigma) ** 2) / (
      sigma * np.sqrt(2 * np.pi))
  exact = np.mean(overlaps @ kernel.T, axis=0)
  np.testing.assert_allclose(phi, exact, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(np.sum(phi) * (grid[1] - grid[0]), 1.0, rtol=1e-6)
  # The outlier at 20 is isolated: the mass within ±1 of it is its mean squared overlap.
  near = np.abs(grid - 20.0) <= 1.0
  np.testing.assert_allclose(np.sum(phi[near]) * (grid[1] - grid[0]), overlaps[:, 0].mean(),
                             rtol=1e-4)


def test_few_steps_already_resolve_the_outlier_node_and_weight(x64):
  """Lanczos finds the isolated λ = 20 first: after 12 of 40 steps each draw's largest node is
  20 and its Gauss weight is that probe's squared overlap with the eigenvector."""
  h, q = matrix_with_spectrum(SPECTRUM)
  matvec, like = split_matvec(h)
  key = jax.random.PRNGKey(5)
  density = spectral.spectral_density(matvec, like, key, num_draws=4, num_steps=12)
  overlaps = (_probes(key, like, 4) @ q) ** 2
  top = np.argmax(np.asarray(density.nodes), axis=1)
  np.testing.assert_allclose(np.asarray(density.nodes)[np.arange(4), top], 20.0, rtol=1e-8)
  np.testing.assert_allclose(np.asarray(density.weights)[np.arange(4), top], overlaps[:, 0],
                             rtol=1e-6)


def test_non_finite_matvec_gives_nan_estimates_and_bad_counts_are_named():
  like = {"x": jnp.zeros(10)}
  d = jnp.linspace(0.0, 1.0, 10).at[4].set(jnp.nan)
  matvec = lambda v: {"x": d * v["x"]}  # noqa: E731
  key = jax.random.PRNGKey(0)
  assert np.isnan(spectral.hutchinson_trace(matvec, like, key, 3).value)
  assert np.isnan(spectral.frobenius_norm(matvec, like, key, 3))
  density = spectral.spectral_density(matvec, like, key, num_draws=2, num_steps=4)
  assert np.all(np.isnan(density.nodes))
  ok = lambda v: v  # noqa: E731
  with pytest.raises(ValueError, match="num_samples must be at least 1"):
    spectral.hutchinson_trace(ok, like, key, 0)
  with pytest.raises(ValueError, match="num_draws must be at least 1"):
    spectral.spectral_density(ok, like, key, num_draws=0, num_steps=4)
  with pytest.raises(ValueError, match="exceeds the dimension"):
    spectral.spectral_density(ok, like, key, num_draws=1, num_steps=11)
