"""The block refresh (block_refresh.block_refresh, hessian_top_k(method="block"), the tracker's
warm_method="block") against known spectra, a dense Hessian and the Lanczos solve."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_dirs.curvature import block_refresh
from sharp_dirs.curvature import hessian
from sharp_dirs.curvature import krylov
from sharp_dirs.curvature import tree_math as tm
from testing import dense_hessian, flat, matrix_with_spectrum, mlp_problem, split_matvec

# Outliers over a bulk, as a network's Hessian: the top 7 (k = 5 and 2 guards) are separated.
SPECTRUM = np.concatenate([[10.0, 8.0, 6.0, 5.0, 4.5, 4.0, 3.5], np.linspace(-1.0, 2.0, 113)])
TOP = np.sort(SPECTRUM)[::-1]


def _problem(seed=0):
  h, q = matrix_with_spectrum(SPECTRUM, seed)
  matvec, like = split_matvec(h)
  return h, q[:, np.argsort(-SPECTRUM)], matvec, like


def _block(rows: np.ndarray) -> dict:
  """Stacked vectors (rows of a [b, n] array) as the pytree of split_matvec: {'b': [b, 3], ...}."""
  return {"b": jnp.asarray(rows[:, :3]), "w": jnp.asarray(rows[:, 3:])}


def _perturbed(q, columns, size, seed=0):
  """The eigenvectors q[:, columns] plus noise of norm about ``size`` each, as rows."""
  noise = np.random.default_rng(seed).normal(size=(len(columns), q.shape[0]))
  return q[:, columns].T + size * noise / np.sqrt(q.shape[0])


def _rows(tree, k):
  return np.stack([flat(tm.stack_get(tree, i)) for i in range(k)])


@pytest.mark.parametrize("noise", [1e-3, 0.1, 0.5])
def test_block_refresh_finds_the_top_k_from_a_perturbed_eigenbasis(x64, noise):
  h, q, matvec, _ = _problem()
  pairs = jax.jit(lambda blk: block_refresh.block_refresh(
      jax.vmap(matvec), blk, 5, tol=1e-8, max_block_steps=12))(_block(_perturbed(q, range(7),
                                                                                  noise)))
  np.testing.assert_allclose(pairs.eigvals, TOP[:5], rtol=1e-9)
  u = _rows(pairs.eigvecs, 5)
  np.testing.assert_allclose(u @ u.T, np.eye(5), atol=1e-10)
  exact = np.linalg.norm(u @ h - np.asarray(pairs.eigvals)[:, None] * u, axis=1)
  np.testing.assert_allclose(pairs.residuals, exact, rtol=1e-4, atol=1e-12)  # exact residuals
  assert np.all(exact <= 1e-8 * TOP[:5])
  assert int(pairs.num_matvecs) % 7 == 0 and 7 <= int(pairs.num_matvecs) <= 7 * 12


def test_an_accurate_start_block_converges_in_one_block_step(x64):
  """With the eigenvectors known to 1e-4, one block of 7 HVPs meets tol=1e-3, where a cold
  Lanczos solve needs about 3k + 5 HVPs: the refresh uses its start."""
  _, q, matvec, like = _problem()
  pairs = block_refresh.block_refresh(jax.vmap(matvec), _block(_perturbed(q, range(7), 1e-4)), 5,
                               tol=1e-3)
  cold = krylov.top_k_eigenpairs(matvec, tm.normal_like(jax.random.PRNGKey(0), like), 5, 60,
                                 tol=1e-3)
  assert int(pairs.num_matvecs) == 7 < int(cold.num_matvecs)
  np.testing.assert_allclose(pairs.eigvals, TOP[:5], rtol=1e-6)


def test_a_direction_new_to_the_top_k_is_found_not_missed(x64):
  """The previous vectors span eigenvectors 2..6 (λ_1 entered the top since): the block's
  random fill and the guard pairs find λ_1 = 10 before the stop rule accepts."""
  _, q, matvec, like = _problem()
  prev = _perturbed(q, range(1, 6), 0.01)  # 5 previous vectors, none near the top eigenvector
  init = krylov.Eigenpairs(jnp.asarray(TOP[1:6]), _block(prev), jnp.zeros(5), jnp.int32(0))
  block = hessian.start_block(init, jax.random.PRNGKey(3), like, 7)
  assert np.abs(_rows(block, 7)[:5] @ q[:, 0]).max() < 0.01
  pairs = block_refresh.block_refresh(jax.vmap(matvec), block, 5, tol=1e-3, max_block_steps=10)
  np.testing.assert_allclose(pairs.eigvals, TOP[:5], rtol=1e-4)


def test_the_fallback_to_lanczos_when_the_block_does_not_converge(x64):
  _, q, matvec, _ = _problem()
  start = _block(_perturbed(q, range(7), 0.5))
  # One block step cannot reach tol=1e-8 from 0.5 noise: without a fallback the Ritz pairs
  # come back with their true (large) residuals...
  rough = block_refresh.block_refresh(jax.vmap(matvec), start, 5, tol=1e-8, max_block_steps=1)
  assert int(rough.num_matvecs) == 7 and np.max(rough.residuals / TOP[:5]) > 1e-8
  # ... and with one, Lanczos finishes the job: right eigenvalues, its HVPs added to the 7.
  pairs = jax.jit(lambda blk: block_refresh.block_refresh(
      jax.vmap(matvec), blk, 5, tol=1e-8, max_block_steps=1, matvec=matvec, fallback_steps=60,
      key=jax.random.PRNGKey(0)))(start)
  np.testing.assert_allclose(pairs.eigvals, TOP[:5], rtol=1e-9)
  assert 7 < int(pairs.num_matvecs) <= 7 + 60
  assert np.all(pairs.residuals <= 1e-8 * TOP[:5])


def test_rank_deficient_start_and_a_block_that_exhausts_the_space(x64):
  """Repeated and zero start vectors are replaced by generic ones; on a 12-dimensional operator
  4 blocks of 7 exceed the dimension, and the basis stays orthonormal (no NaN, exact top-5)."""
  eigvals = np.array([9.0, 7.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0, -4.0])
  h, q = matrix_with_spectrum(eigvals, 2)
  matvec, _ = split_matvec(h)
  rows = np.stack([q[:, 0]] * 3 + [np.zeros(12)] * 4)
  pairs = block_refresh.block_refresh(jax.vmap(matvec), _block(rows), 5, tol=1e-12, max_block_steps=4)
  np.testing.assert_allclose(pairs.eigvals, eigvals[:5], atol=1e-10)
  assert int(pairs.num_matvecs) <= 28


def test_block_hessian_top_k_matches_dense_eigh_on_the_mlp(x64):
  """hessian_top_k(method="block", init=pairs at nearby params) on the testing.mlp_problem MLP (43
  parameters, a clustered top: 0.53, 0.46, 0.44, 0.42, 0.36) equals the dense Hessian's top-k,
  with one linearization (vmapped) or vmapped jvp HVPs; 4 block steps of 5 do not reach
  tol=1e-6 there, so this also runs the fallback inside hessian_top_k."""
  params, batches, loss_fn = mlp_problem()
  moved = jax.tree.map(lambda p: p + 0.05, params)
  expected = np.linalg.eigvalsh(np.asarray(dense_hessian(loss_fn, moved, batches)))[::-1][:3]
  prev = hessian.hessian_top_k(loss_fn, params, batches, jax.random.PRNGKey(0), k=3,
                               num_lanczos_steps=20)
  for linearize in (True, False):
    pairs = hessian.hessian_top_k(loss_fn, moved, batches, jax.random.PRNGKey(1), k=3,
                                  num_lanczos_steps=40, init=prev, tol=1e-6, method="block",
                                  linearize=linearize, max_block_steps=4)
    np.testing.assert_allclose(pairs.eigvals, expected, rtol=1e-9)
    assert np.all(pairs.residuals <= 1e-6 * np.abs(expected))
    assert 20 < int(pairs.num_matvecs) <= 20 + 40


def test_block_magnitude_finds_a_negative_outlier(x64):
  eigvals = np.concatenate([[-12.0, 9.0, -7.0, 6.0, 5.0], np.linspace(-1.0, 1.0, 75)])
  h, q = matrix_with_spectrum(eigvals, 1)
  matvec, _ = split_matvec(h)
  order = np.argsort(-np.abs(eigvals))
  pairs = block_refresh.block_refresh(jax.vmap(matvec), _block(_perturbed(q[:, order], range(5), 0.2)),
                               3, tol=1e-8, which="magnitude", max_block_steps=12)
  np.testing.assert_allclose(pairs.eigvals, [9.0, -7.0, -12.0], rtol=1e-9)


def test_block_inside_a_users_jit_compiles_once_and_gives_nan_not_plausible_numbers():
  params, batches, loss_fn = mlp_problem(dtype=jnp.float32)
  fn = jax.jit(lambda p, b: hessian.hessian_top_k(loss_fn, p, b, jax.random.PRNGKey(0), k=2,
                                                  num_lanczos_steps=10, tol=1e-3,
                                                  method="block"))
  first = fn(params, batches)
  assert np.all(np.isfinite(first.eigvals))
  fn(jax.tree.map(lambda p: p * 1.01, params), batches)
  assert fn._cache_size() == 1
  bad = jax.tree.map(lambda p: p.at[0].set(jnp.nan) if p.ndim == 1 else p, params)
  out = fn(bad, batches)
  assert np.all(np.isnan(out.eigvals)) and np.all(np.isnan(out.residuals))
  with pytest.raises(FloatingPointError):  # outside jit: the library's error
    hessian.hessian_top_k(loss_fn, bad, batches, jax.random.PRNGKey(0), k=2,
                          num_lanczos_steps=10, tol=1e-3, method="block")


def test_bad_block_arguments_are_named():
  _, _, matvec, like = _problem()
  start = _block(np.ones((7, 120)))
  with pytest.raises(ValueError, match="k \\+ num_guard = 7 <= b"):
    block_refresh.block_refresh(jax.vmap(matvec), _block(np.ones((6, 120))), 5, tol=1e-3)
  with pytest.raises(ValueError, match="needs tol"):
    block_refresh.block_refresh(jax.vmap(matvec), start, 5, tol=None)
  with pytest.raises(ValueError, match="which"):
    block_refresh.block_refresh(jax.vmap(matvec), start, 5, tol=1e-3, which="smallest")
  params, batches, loss_fn = mlp_problem(dtype=jnp.float32)
  call = lambda **kw: hessian.hessian_top_k(loss_fn, params, batches, jax.random.PRNGKey(0),  # noqa
                                            k=2, num_lanczos_steps=8, **kw)
  with pytest.raises(ValueError, match="method must be one of"):
    call(method="subspace", tol=1e-3)
  with pytest.raises(ValueError, match="method='block' needs tol"):
    call(method="block")
  with pytest.raises(ValueError, match="block_size must be at least 4"):
    call(method="block", tol=1e-3, block_size=3)


def test_tracker_block_warm_path_matches_the_lanczos_one(tmp_path):
  """Two tracker evaluations (cold, then warm after the parameters moved) with
  warm_method='block' and 'lanczos': the same eigenvalues, which are the dense Hessian's."""
  from sharp_dirs.engine import config as config_lib
  from sharp_dirs.engine import tracking
  from sharp_dirs.engine import train
  c = config_lib.default_config()
  c.model, c.num_train_examples, c.batch_size = "mlp", 256, 64
  c.model_kwargs = config_lib.ConfigDict({"hidden": (2,)})  # 1,600 parameters
  c.tracking.k, c.tracking.num_lanczos_steps = 3, 30
  c.tracking.num_examples, c.tracking.batch_size = 128, 64
  run_data = train.load_run_data(c)
  model, params, model_state = train.build_model(c, jax.tree.map(lambda x: x[:2],
                                                                 run_data.train))
  moved = jax.tree.map(lambda p: p * 1.05, params)
  logged = {}
  for method in ("lanczos", "block"):
    c.tracking.warm_method = method
    config_lib.validate(c)
    tracker = tracking.Tracker(c, model, run_data)
    tracker.evaluate(params, model_state, 0, 0, 0.01)
    _, values, _ = tracker.evaluate(moved, model_state, 1, 1, 0.01)
    assert values["hessian/warm"] == 1
    logged[method] = [values[f"hessian/lambda_{i + 1}"] for i in range(3)]
    assert max(values[f"hessian/rel_residual_{i + 1}"] for i in range(3)) <= 1e-3
  sample = tracker.sample(1, c.tracking.num_examples, c.tracking.batch_size)
  loss_fn = tracking.curvature_loss_fn(model, model_state, c.l2)
  dense = np.linalg.eigvalsh(np.asarray(dense_hessian(loss_fn, moved, sample), np.float64))
  np.testing.assert_allclose(logged["block"], dense[::-1][:3], rtol=2e-3)
  np.testing.assert_allclose(logged["block"], logged["lanczos"], rtol=2e-3)
  c.tracking.tol = 0.0
  with pytest.raises(config_lib.ConfigError, match="warm_method='block'"):
    config_lib.validate(c)


def test_bad_warm_method_is_named():
  from sharp_dirs.engine import config as config_lib
  c = config_lib.default_config()
  assert c.tracking.warm_method == "lanczos"  # the measured faster one (bench/RESULTS.md)
  c.tracking.warm_method = "subspace"
  with pytest.raises(config_lib.ConfigError, match="tracking.warm_method.*allowed: lanczos, "
                     "block"):
    config_lib.validate(c)
