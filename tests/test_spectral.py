"""Hutchinson estimators and stochastic Lanczos quadrature against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np

from sharp_dirs import spectral
from sharp_dirs import tree_math as tm
from conftest import flat, matrix_with_spectrum, split_matvec

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


def test_density_integrates_to_one_and_peaks_at_outliers(x64):
  h, _ = matrix_with_spectrum(SPECTRUM)
  matvec, like = split_matvec(h)
  density = spectral.spectral_density(matvec, like, jax.random.PRNGKey(4), num_draws=5,
                                      num_steps=40)
  # With num_steps = n every node is an exact eigenvalue of H.
  np.testing.assert_allclose(np.sort(density.nodes[0]), np.sort(SPECTRUM), atol=1e-8)
  grid = jnp.linspace(-10, 25, 3501)
  phi = spectral.density_on_grid(density, grid)
  np.testing.assert_allclose(jnp.sum(phi) * (grid[1] - grid[0]), 1.0, rtol=1e-3)
  near = lambda t: phi[jnp.argmin(jnp.abs(grid - t))]
  assert near(20.0) > 10 * near(12.0)
