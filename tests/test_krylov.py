"""Lanczos and top-k eigenpairs against matrices with a prescribed spectrum and scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg

from sharp_dirs.curvature import krylov
from sharp_dirs.curvature import tree_math as tm
from testing import flat, matrix_with_spectrum, split_matvec

SPECTRA = {
    "negative": np.concatenate([[-30.0, 12.0, 7.0], np.linspace(-2, 2, 37)]),
    "clustered": np.concatenate([[5.0, 4.999, 4.998, 1.0], np.linspace(-0.5, 0.5, 36)]),
    "repeated": np.concatenate([[3.0, 3.0, 3.0, 2.0], np.linspace(-1, 1, 36)]),
}


def _start(like, seed=1):
  return tm.normal_like(jax.random.PRNGKey(seed), like)


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_full_lanczos_recovers_the_spectrum(x64, name):
  eigvals = SPECTRA[name]
  h, _ = matrix_with_spectrum(eigvals)
  matvec, like = split_matvec(h)
  result = krylov.lanczos(matvec, _start(like), len(eigvals))
  ritz = np.linalg.eigvalsh(np.asarray(krylov.tridiagonal(result)))
  # A single start vector sees a repeated eigenvalue once; the breakdown restart finds the rest.
  np.testing.assert_allclose(np.sort(ritz), np.sort(eigvals), atol=1e-8)


@pytest.mark.parametrize("name", sorted(SPECTRA))
@pytest.mark.parametrize("which", ["largest", "magnitude"])
def test_top_k_matches_dense_eigh(x64, name, which):
  eigvals = SPECTRA[name]
  h, _ = matrix_with_spectrum(eigvals)
  matvec, like = split_matvec(h)
  k = 3
  pairs = krylov.top_k_eigenpairs(matvec, _start(like), k, 40, which=which, exact_residuals=True)
  key = eigvals if which == "largest" else np.abs(eigvals)
  expected = np.sort(eigvals[np.argsort(-key)[:k]])[::-1]
  np.testing.assert_allclose(pairs.eigvals, expected, atol=1e-8)
  u = np.stack([flat(tm.stack_get(pairs.eigvecs, i)) for i in range(k)])
  np.testing.assert_allclose(u @ u.T, np.eye(k), atol=1e-8)
  np.testing.assert_allclose(u @ h, pairs.eigvals[:, None] * u, atol=1e-7)
  assert np.all(pairs.residuals < 1e-7)
  assert int(pairs.num_matvecs) == 40 + k


def test_residual_estimate_equals_exact_residual(x64):
  h, _ = matrix_with_spectrum(SPECTRA["negative"])
  matvec, like = split_matvec(h)
  estimate = krylov.top_k_eigenpairs(matvec, _start(like), 4, 12)
  exact = krylov.top_k_eigenpairs(matvec, _start(like), 4, 12, exact_residuals=True)
  assert np.max(exact.residuals) > 1e-6  # 12 steps are not enough to converge all four
  np.testing.assert_allclose(estimate.residuals, exact.residuals, rtol=1e-5, atol=1e-10)


def test_krylov_relation_and_orthonormal_basis(x64):
  h, _ = matrix_with_spectrum(SPECTRA["clustered"])
  matvec, like = split_matvec(h)
  m = 15
  result = krylov.lanczos(matvec, _start(like), m)
  v = np.stack([flat(tm.stack_get(result.basis, i)) for i in range(m)])  # [m, n]
  np.testing.assert_allclose(v @ v.T, np.eye(m), atol=1e-12)
  t = np.asarray(krylov.tridiagonal(result))
  # H V = V T + β_m v_{m+1} e_mᵀ: the residual is confined to the last column, of norm β_m.
  r = h @ v.T - v.T @ t
  np.testing.assert_allclose(r[:, :-1], 0, atol=1e-10)
  np.testing.assert_allclose(np.linalg.norm(r[:, -1]), result.residual_norm, rtol=1e-8)


def test_without_reorthogonalization_orthogonality_is_lost_but_tridiagonal_is_consistent(x64):
  h, _ = matrix_with_spectrum(np.concatenate([[100.0], np.linspace(0, 1, 39)]))
  matvec, like = split_matvec(h)
  plain = krylov.lanczos(matvec, _start(like), 30, reorthogonalize=False)
  full = krylov.lanczos(matvec, _start(like), 30)
  gram = lambda r: np.stack([flat(tm.stack_get(r.basis, i)) for i in range(30)])
  lost = np.abs(gram(plain) @ gram(plain).T - np.eye(30)).max()
  kept = np.abs(gram(full) @ gram(full).T - np.eye(30)).max()
  assert kept < 1e-12 < 1e-3 < lost
  np.testing.assert_allclose(plain.alphas[:5], full.alphas[:5], rtol=1e-8)


def test_breakdown_gives_no_nan_and_restarts(x64):
  """A start vector inside a 2-dimensional invariant subspace breaks down after 2 steps."""
  h, q = matrix_with_spectrum(np.concatenate([[4.0, 2.0, 1.0], np.zeros(37)]))
  matvec, like = split_matvec(h)
  v0 = {"b": jnp.asarray(q[:3, 0] + q[:3, 1]), "w": jnp.asarray(q[3:, 0] + q[3:, 1])}
  result = krylov.lanczos(matvec, v0, 6)
  assert np.all(np.isfinite(result.alphas)) and np.all(np.isfinite(result.betas))
  assert result.betas[1] == 0.0  # the breakdown is recorded, T becomes block diagonal
  pairs = krylov.top_k_eigenpairs(matvec, v0, 3, 6)
  np.testing.assert_allclose(pairs.eigvals, [4.0, 2.0, 1.0], atol=1e-10)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(pairs))


def test_matches_scipy_eigsh_on_the_same_operator(x64):
  eigvals = SPECTRA["negative"]
  h, _ = matrix_with_spectrum(eigvals, seed=3)
  matvec, like = split_matvec(h)
  op = scipy.sparse.linalg.LinearOperator(
      h.shape, matvec=lambda x: np.asarray(flat(matvec(
          {"b": jnp.asarray(x.ravel()[:3]), "w": jnp.asarray(x.ravel()[3:])}))),
      dtype=np.float64)
  reference = np.sort(scipy.sparse.linalg.eigsh(op, k=3, which="LM")[0])[::-1]
  pairs = krylov.top_k_eigenpairs(matvec, _start(like), 3, 40, which="magnitude")
  np.testing.assert_allclose(pairs.eigvals, reference, atol=1e-8)


@pytest.mark.parametrize("num_guard, distinct", [(2, 5), (0, 3)])
def test_tol_stops_exactly_when_the_krylov_space_is_invariant(x64, num_guard, distinct):
  """With d distinct eigenvalues the Krylov space of a generic v0 has dimension d: Ritz pairs
  are exact at step d and not before, unless the watched k + num_guard pairs are converged
  sooner. Watching d − 1 pairs of a d-dimensional space, the stop is at step d exactly."""
  eigvals = np.concatenate([[50.0, 20.0, 5.0, 1.0][:distinct - 1], np.zeros(41 - distinct)])
  h, _ = matrix_with_spectrum(eigvals)
  matvec, like = split_matvec(h)
  calls = []

  def counting(v):
    jax.debug.callback(lambda: calls.append(1))
    return matvec(v)

  k = distinct - 1 - num_guard
  pairs = krylov.top_k_eigenpairs(counting, _start(like), k, 40, tol=1e-6, num_guard=num_guard)
  jax.effects_barrier()
  assert int(pairs.num_matvecs) == distinct
  assert len(calls) == distinct
  np.testing.assert_allclose(pairs.eigvals, eigvals[:k], rtol=1e-10)
  assert np.all(pairs.residuals <= 1e-6 * np.abs(pairs.eigvals))


def test_tol_stop_on_outliers_needs_the_guard_pairs(x64):
  """Two outliers over a bulk: without guards they converge in a few steps; guard pairs in the
  bulk [0, 1] cost more, but never the whole basis."""
  h, _ = matrix_with_spectrum(np.concatenate([[50.0, 20.0], np.linspace(0, 1, 38)]))
  matvec, like = split_matvec(h)
  bare = krylov.top_k_eigenpairs(matvec, _start(like), 2, 40, tol=1e-6, num_guard=0)
  guarded = krylov.top_k_eigenpairs(matvec, _start(like), 2, 40, tol=1e-6)
  # Kaniel–Paige: tan∠(u_1, K_m) ≤ tan∠(u_1, v0) / T_{m−1}(1 + 2γ), γ = (50 − 20)/(20 − 0);
  # with tan∠(u_1, v0) ≈ √39 that is below 1e-6 (residual ≤ 1e-6·λ_1) for m ≥ 9, and λ_2
  # (γ = 19) needs m ≥ 6; 3 steps are the fewest that can certify 2 pairs.
  assert 3 <= int(bare.num_matvecs) <= 10
  assert int(bare.num_matvecs) < int(guarded.num_matvecs) < 40
  for pairs in (bare, guarded):
    np.testing.assert_allclose(pairs.eigvals, [50.0, 20.0], rtol=1e-6)


def test_warm_start_needs_fewer_matvecs_than_cold(x64):
  eigvals = np.concatenate([[10.0, 8.0, 6.0], np.linspace(0, 4, 37)])
  h, _ = matrix_with_spectrum(eigvals)
  matvec, like = split_matvec(h)
  cold = krylov.top_k_eigenpairs(matvec, _start(like), 3, 40, tol=1e-8)
  h2 = h + 1e-3 * matrix_with_spectrum(np.linspace(-1, 1, 40), seed=7)[0]
  matvec2, _ = split_matvec(h2)
  key = jax.random.PRNGKey(5)
  warm = krylov.top_k_eigenpairs(matvec2, krylov.warm_start_vector(cold, key), 3, 40, tol=1e-8)
  recold = krylov.top_k_eigenpairs(matvec2, _start(like, 9), 3, 40, tol=1e-8)
  np.testing.assert_allclose(warm.eigvals, np.linalg.eigvalsh(h2)[::-1][:3], rtol=1e-7)
  assert int(warm.num_matvecs) < int(recold.num_matvecs)


def test_float32_parameters_with_float64_krylov(x64):
  h, _ = matrix_with_spectrum(SPECTRA["negative"])
  matvec, like = split_matvec(h.astype(np.float32))
  assert krylov.krylov_dtype(like) == jnp.float64
  pairs = krylov.top_k_eigenpairs(matvec, _start(like), 2, 40)
  assert pairs.eigvals.dtype == jnp.float64
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(pairs.eigvecs))
  np.testing.assert_allclose(pairs.eigvals, [12.0, 7.0], rtol=1e-5)


def test_bad_arguments_are_named():
  h, _ = matrix_with_spectrum(np.linspace(0, 1, 10))
  matvec, like = split_matvec(h)
  with pytest.raises(ValueError, match="k=5 eigenpairs"):
    krylov.top_k_eigenpairs(matvec, like, 5, 4)
  with pytest.raises(ValueError, match="exceeds the dimension"):
    krylov.lanczos(matvec, like, 11)
  with pytest.raises(ValueError, match="num_steps must be at least 1"):
    krylov.lanczos(matvec, like, 0)
  with pytest.raises(ValueError, match="k must be at least 1"):
    krylov.top_k_eigenpairs(matvec, like, 0, 4)
  with pytest.raises(ValueError, match="which must be one of"):
    krylov.top_k_eigenpairs(matvec, like, 1, 4, which="LM")
  with pytest.raises(TypeError, match="k must be a Python int"):
    krylov.top_k_eigenpairs(matvec, like, 2.0, 4)
  with pytest.raises(TypeError, match="num_steps must be a Python int"):
    krylov.top_k_eigenpairs(matvec, like, 2, 4.0)
  with pytest.raises(TypeError, match="num_steps must be a Python int"):
    krylov.lanczos(matvec, like, np.float64(4))
  with pytest.raises(ValueError, match="num_guard must be at least 0"):
    krylov.top_k_eigenpairs(matvec, like, 2, 4, tol=1e-3, num_guard=-1)
  for tol in (0.0, -1e-3, float("nan"), float("inf"), np.ones(2)):
    with pytest.raises(ValueError, match="tol must be None or a finite number > 0"):
      krylov.top_k_eigenpairs(matvec, like, 2, 4, tol=tol)


def test_non_finite_matvec_gives_nan_eigenpairs_not_plausible_numbers():
  """The policy: a NaN/inf anywhere in the matvec makes every eigenvalue and residual NaN."""
  d = jnp.linspace(0.0, 1.0, 10)
  like = {"x": jnp.zeros(10)}
  for bad in (jnp.nan, jnp.inf):
    matvec = lambda v, bad=bad: {"x": d.at[7].set(bad) * v["x"]}  # noqa: E731
    for tol in (None, 1e-3):
      pairs = krylov.top_k_eigenpairs(matvec, _start(like), 2, 6, tol=tol)
      assert np.all(np.isnan(pairs.eigvals)) and np.all(np.isnan(pairs.residuals))
  # Finite matvecs keep finite results (the check does not fire on a breakdown's β = 0).
  pairs = krylov.top_k_eigenpairs(lambda v: {"x": d * v["x"]}, _start(like), 2, 10)
  np.testing.assert_allclose(pairs.eigvals, [1.0, d[8]], rtol=1e-5)


def test_jitted_call_does_not_recompile(x64):
  h, _ = matrix_with_spectrum(SPECTRA["clustered"])
  matvec, like = split_matvec(h)
  solve = jax.jit(lambda v0: krylov.top_k_eigenpairs(matvec, v0, 3, 20))
  solve(_start(like, 1))
  solve(_start(like, 2))
  assert solve._cache_size() == 1


def test_guard_pairs_keep_the_stop_from_skipping_a_late_eigenvalue(x64):
  """λ_5 = 6.05 is almost absent from v0: a stop on k converged pairs reports λ_6 = 6.0 instead."""
  eigvals = np.concatenate([[10.0, 9.0, 8.0, 7.0, 6.05, 6.0], np.linspace(0, 1, 34)])
  h, q = matrix_with_spectrum(eigvals)
  matvec, like = split_matvec(h)
  weights = np.ones(40)
  weights[4] = 1e-7
  v = q @ weights
  v0 = {"b": jnp.asarray(v[:3]), "w": jnp.asarray(v[3:])}
  unguarded = krylov.top_k_eigenpairs(matvec, v0, 5, 40, tol=1e-6, num_guard=0)
  guarded = krylov.top_k_eigenpairs(matvec, v0, 5, 40, tol=1e-6)
  assert abs(unguarded.eigvals[4] - 6.0) < 1e-6  # an eigenpair, but not the 5th
  np.testing.assert_allclose(guarded.eigvals, eigvals[:5], rtol=1e-8)
  assert int(guarded.num_matvecs) > int(unguarded.num_matvecs)
