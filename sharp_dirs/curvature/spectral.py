"""Whole-spectrum summaries from matvecs: Hutchinson estimators and spectral density (SLQ).

All functions take ``matvec: v ↦ Hv`` on pytrees (e.g. ``hessian.dataset_hvp(...)``) and a
pytree ``like`` giving the shapes and dtypes of v.

Non-finite values: if the matvec returns NaN or inf for a probe, the estimate is NaN (the SLQ
nodes of that draw too), never a finite-looking number; check ``jnp.isfinite`` on the result.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sharp_dirs.curvature import krylov
from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.types import MatVec, PyTree


class Estimate(NamedTuple):
  """A Monte-Carlo estimate and its standard error (std of the samples / √num_samples)."""
  value: jax.Array
  stderr: jax.Array


def _mean_and_stderr(samples: jax.Array) -> Estimate:
  n = samples.shape[0]
  return Estimate(jnp.mean(samples), jnp.std(samples, ddof=1) / np.sqrt(n) if n > 1 else 0.0)


def _probe(matvec: MatVec, like: PyTree, key: jax.Array, num_samples: int, draw, stat):
  """[num_samples] values stat(z, Hz) for independent probes z = draw(key_i, like)."""
  krylov.check_int(num_samples, "num_samples", 1)
  def one(k):
    z = draw(k, like)
    return stat(z, matvec(z))
  return jax.lax.map(one, jax.random.split(key, num_samples))


def hutchinson_trace(matvec: MatVec, like: PyTree, key: jax.Array, num_samples: int) -> Estimate:
  """tr(H) ≈ mean_m z_mᵀ H z_m with Rademacher z_m (unbiased; the lowest-variance probe)."""
  return _mean_and_stderr(_probe(matvec, like, key, num_samples, tm.rademacher_like, tm.vdot))


def frobenius_norm(matvec: MatVec, like: PyTree, key: jax.Array, num_samples: int) -> jax.Array:
  """‖H‖_F ≈ sqrt(mean_m ‖H z_m‖²) with Gaussian z_m, since E‖Hz‖² = tr(H²) = ‖H‖_F²."""
  sq = _probe(matvec, like, key, num_samples, tm.normal_like, lambda z, hz: tm.vdot(hz, hz))
  return jnp.sqrt(jnp.mean(sq))


def frobenius_norm_as_in_paper(matvec: MatVec, like: PyTree, key: jax.Array,
                               num_samples: int = 50) -> jax.Array:
  """The quantity the paper's NSGD table reports as ‖H‖_F: sqrt(mean_m ‖H z_m‖), z_m Gaussian.

  Not an estimator of ‖H‖_F (it averages unsquared norms, so it is ≈ sqrt(‖H‖_F) for large
  dimension); kept to reproduce the table's column. Use ``frobenius_norm`` for the real value.
  """
  norms = _probe(matvec, like, key, num_samples, tm.normal_like, lambda z, hz: tm.norm(hz))
  return jnp.sqrt(jnp.mean(norms))


class SpectralDensity(NamedTuple):
  """Stochastic Lanczos quadrature.

  nodes: [num_draws, num_steps] Ritz values θ_j of each draw's tridiagonal T.
  weights: [num_draws, num_steps] squared first components of T's eigenvectors (sum to 1 per
    draw): the Gauss quadrature of the spectral measure seen from the probe.
  """
  nodes: jax.Array
  weights: jax.Array


def spectral_density(matvec: MatVec, like: PyTree, key: jax.Array, *, num_draws: int = 10,
                     num_steps: int = 80) -> SpectralDensity:
  """Stochastic Lanczos quadrature (Ghorbani et al., 2019; Golub & Meurant).

  For a random unit v, vᵀ f(H) v ≈ Σ_j w_j f(θ_j) with (θ_j, w_j) from ``num_steps`` Lanczos
  steps; averaging over draws estimates (1/n) tr f(H) = ∫ f dμ for the spectral measure μ.
  Cost: num_draws × num_steps matvecs.
  """
  krylov.check_steps(like, num_steps)
  krylov.check_int(num_draws, "num_draws", 1)

  def one(k):
    r = krylov.lanczos(matvec, tm.normal_like(k, like), num_steps)
    theta, s = jnp.linalg.eigh(krylov.tridiagonal(r))
    return jnp.where(krylov.is_finite_decomposition(r), theta, jnp.nan), s[0] ** 2

  nodes, weights = jax.lax.map(one, jax.random.split(key, num_draws))
  return SpectralDensity(nodes, weights)


def density_on_grid(density: SpectralDensity, grid: jax.Array, sigma: float = None) -> jax.Array:
  """The Gaussian-smoothed density φ(t) = mean_draws Σ_j w_j N(t; θ_j, σ²) on ``grid`` [G].

  σ defaults to 1% of the spectrum's width (max θ − min θ), as in google/spectral-density up
  to the choice of constant.
  """
  nodes, weights = density.nodes, density.weights
  if sigma is None:
    sigma = 0.01 * jnp.maximum(jnp.max(nodes) - jnp.min(nodes), 1e-12)
  diff = grid[:, None, None] - nodes[None]
  kernel = jnp.exp(-0.5 * (diff / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
  return jnp.mean(jnp.sum(weights[None] * kernel, axis=-1), axis=-1)


def slq_expectation(density: SpectralDensity, f: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """(1/n) tr f(H) ≈ mean_draws Σ_j w_j f(θ_j); e.g. f = identity gives tr(H)/n."""
  return jnp.mean(jnp.sum(density.weights * f(density.nodes), axis=-1))
