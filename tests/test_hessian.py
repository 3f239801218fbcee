"""Hessian-vector products and hessian_top_k against dense float64 Hessians and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sharp_dirs.curvature import hessian
from sharp_dirs.curvature import tree_math as tm
from testing import dense_hessian, flat, mlp_problem


def _unravel_like(params):
  return jax.flatten_util.ravel_pytree(params)[1]


def test_hvp_matches_dense_hessian(x64):
  params, batches, loss_fn = mlp_problem()
  batch = hessian.first_batch(batches)
  h = dense_hessian(loss_fn, params, jax.tree.map(lambda x: x[:1], batches))
  v = tm.normal_like(jax.random.PRNGKey(0), params)
  np.testing.assert_allclose(flat(hessian.hvp(loss_fn, params, batch, v)), h @ flat(v),
                             rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("linearize", [False, True])
def test_dataset_hvp_is_the_hessian_of_the_mean_over_all_examples(x64, linearize):
  params, batches, loss_fn = mlp_problem(num_batches=4)
  h = dense_hessian(loss_fn, params, batches)
  matvec = jax.jit(hessian.dataset_hvp(loss_fn, params, batches, linearize=linearize))
  u, v = (tm.normal_like(jax.random.PRNGKey(s), params) for s in (1, 2))
  np.testing.assert_allclose(flat(matvec(v)), h @ flat(v), rtol=1e-10, atol=1e-12)
  # Symmetry: <u, Hv> = <Hu, v>.
  np.testing.assert_allclose(tm.vdot(u, matvec(v)), tm.vdot(matvec(u), v), rtol=1e-12)


def test_linearized_hessian_top_k_equals_the_jvp_one(x64):
  params, batches, loss_fn = mlp_problem()
  solve = lambda linearize: hessian.hessian_top_k(
      loss_fn, params, batches, jax.random.PRNGKey(0), k=3, num_lanczos_steps=15,
      linearize=linearize)
  np.testing.assert_allclose(solve(True).eigvals, solve(False).eigvals, rtol=1e-10)


def test_hessian_top_k_matches_dense_eigh(x64):
  params, batches, loss_fn = mlp_problem()
  h = np.asarray(dense_hessian(loss_fn, params, batches))
  expected, vecs = np.linalg.eigh(h)
  pairs = hessian.hessian_top_k(loss_fn, params, batches, jax.random.PRNGKey(0), k=3,
                                num_lanczos_steps=43, exact_residuals=True)
  np.testing.assert_allclose(pairs.eigvals, expected[::-1][:3], rtol=1e-8, atol=1e-10)
  for i in range(3):
    u = flat(tm.stack_get(pairs.eigvecs, i))
    np.testing.assert_allclose(abs(u @ vecs[:, -1 - i]), 1.0, atol=1e-6)
  assert np.all(pairs.residuals < 1e-6)
  assert int(pairs.num_matvecs) == 43 + 3


def test_magnitude_finds_negative_curvature_of_a_saddle(x64):
  """f = ½ xᵀ diag(d) x with one large negative curvature: 'magnitude' ranks it first."""
  d = jnp.asarray([-9.0, 4.0, 3.0, 1.0, 0.5, 0.1])
  loss_fn = lambda p, batch: 0.5 * jnp.sum(batch["scale"] * d * p["x"] ** 2) / batch["scale"].size
  params = {"x": jnp.ones(6)}
  batches = {"scale": jnp.ones((2, 6))}  # two batches of "examples", equal weight
  largest = hessian.hessian_top_k(loss_fn, params, batches, jax.random.PRNGKey(0), k=2,
                                  num_lanczos_steps=6)
  magnitude = hessian.hessian_top_k(loss_fn, params, batches, jax.random.PRNGKey(0), k=2,
                                    num_lanczos_steps=6, which="magnitude")
  np.testing.assert_allclose(largest.eigvals, np.array([4.0, 3.0]) / 6, rtol=1e-10)
  np.testing.assert_allclose(magnitude.eigvals, np.array([4.0, -9.0]) / 6, rtol=1e-10)


def test_least_squares_closed_form(x64):
  """L(w) = mean_i (x_iᵀ w − y_i)²  has  H = 2 XᵀX / n, whatever w and y."""
  rng = np.random.default_rng(0)
  n, d = 96, 12
  x = rng.normal(size=(n, d)) * np.linspace(3, 0.2, d)  # separated top eigenvalues
  y = rng.normal(size=n)
  batches = {"x": jnp.asarray(x.reshape(4, 24, d)), "y": jnp.asarray(y.reshape(4, 24))}
  loss_fn = lambda p, b: jnp.mean((b["x"] @ p["w"] + p["c"] - b["y"]) ** 2)
  params = {"w": jnp.asarray(rng.normal(size=d)), "c": jnp.zeros(())}
  xa = np.concatenate([np.ones((n, 1)), x], axis=1)  # [c, w] is the flat order
  expected = np.linalg.eigvalsh(2 * xa.T @ xa / n)[::-1]
  pairs = hessian.hessian_top_k(loss_fn, params, batches, jax.random.PRNGKey(3), k=4,
                                num_lanczos_steps=13)
  np.testing.assert_allclose(pairs.eigvals, expected[:4], rtol=1e-10)


def test_warm_start_along_a_trajectory_spends_fewer_hvps(x64):
  params, batches, loss_fn = mlp_problem(num_batches=2)
  key = jax.random.PRNGKey(0)
  # No guard pairs: on this 43-dimensional problem the 4th and 5th pairs sit in a cluster that
  # takes about as long to resolve from any start; here we test the start vector itself.
  solve = lambda p, init=None: hessian.hessian_top_k(loss_fn, p, batches, key, k=3,
                                                     num_lanczos_steps=40, tol=1e-6, num_guard=0,
                                                     init=init)
  first = solve(params)
  grad = jax.grad(loss_fn)(params, hessian.first_batch(batches))
  moved = tm.axpy(-0.01, grad, params)
  cold, warm = solve(moved), solve(moved, first)
  np.testing.assert_allclose(warm.eigvals, cold.eigvals, rtol=1e-5)
  assert int(warm.num_matvecs) < int(cold.num_matvecs)


def test_gauss_newton_vector_product_matches_dense(x64):
  params, batches, _ = mlp_problem()
  batch = hessian.first_batch(batches)

  def predict(p, b):
    return jnp.tanh(b["x"] @ p["dense1"]["kernel"] + p["dense1"]["bias"]) @ p["dense2"][
        "kernel"] + p["dense2"]["bias"]

  def output_loss(z, b):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), b["y"][:, None], axis=1))

  flat_params, unravel = jax.flatten_util.ravel_pytree(params)
  z = predict(params, batch)
  jac = jax.jacobian(lambda f: predict(unravel(f), batch).ravel())(flat_params)  # [B·C, P]
  h_out = jax.hessian(lambda zz: output_loss(zz.reshape(z.shape), batch))(z.ravel())
  gn = jac.T @ h_out @ jac
  v = tm.normal_like(jax.random.PRNGKey(1), params)
  np.testing.assert_allclose(flat(hessian.gnvp(predict, output_loss, params, batch, v)),
                             gn @ flat(v), rtol=1e-10, atol=1e-12)
  assert np.linalg.eigvalsh(gn).min() > -1e-12  # PSD for cross-entropy


def test_default_guarded_tol_stop_matches_dense_eigh_and_counts_its_hvps(x64):
  """tol with the default num_guard=2: the top 3 of the dense Hessian, fewer HVPs than the basis
  allows, and num_matvecs is the number of HVPs actually run (each over every batch)."""
  params, batches, loss_fn = mlp_problem(num_batches=3)
  expected = np.linalg.eigvalsh(np.asarray(dense_hessian(loss_fn, params, batches)))[::-1][:3]
  calls = []

  def counted_loss(p, b):
    jax.debug.callback(lambda: calls.append(1))
    return loss_fn(p, b)

  pairs = hessian.hessian_top_k(counted_loss, params, batches, jax.random.PRNGKey(0), k=3,
                                num_lanczos_steps=43, tol=1e-6)
  jax.effects_barrier()
  np.testing.assert_allclose(pairs.eigvals, expected, rtol=1e-5)
  assert np.all(pairs.residuals <= 1e-6 * np.abs(pairs.eigvals))
  assert 3 + 2 <= int(pairs.num_matvecs) < 43
  # One forward pass per batch per HVP, and one on the first batch (the loss must be finite).
  assert len(calls) == 3 * int(pairs.num_matvecs) + 1


def test_inside_a_users_jit_same_result_and_nan_instead_of_the_error():
  params, batches, loss_fn = mlp_problem(dtype=jnp.float32)
  key = jax.random.PRNGKey(0)
  kwargs = dict(k=2, num_lanczos_steps=8, tol=1e-3)

  @jax.jit
  def user_step(p, b, scale):
    return hessian.hessian_top_k(lambda q, c: scale * loss_fn(q, c), p, b, key, **kwargs)

  outside = hessian.hessian_top_k(loss_fn, params, batches, key, **kwargs)
  inside = user_step(params, batches, 1.0)
  np.testing.assert_allclose(inside.eigvals, outside.eigvals, rtol=1e-5)
  assert int(inside.num_matvecs) == int(outside.num_matvecs)
  # Under jit the FloatingPointError cannot be raised: the eigenvalues are NaN instead.
  assert np.all(np.isnan(user_step(params, batches, jnp.nan).eigvals))


def test_compiled_temp_memory_does_not_grow_with_the_number_of_batches():
  params, _, loss_fn = mlp_problem(dtype=jnp.float32)
  solve = jax.jit(lambda p, b: hessian.hessian_top_k(loss_fn, p, b, jax.random.PRNGKey(0), k=2,
                                                     num_lanczos_steps=6))

  def temp_bytes(num_batches):
    batches = {"x": jax.ShapeDtypeStruct((num_batches, 64, 4), jnp.float32),
               "y": jax.ShapeDtypeStruct((num_batches, 64), jnp.int32)}
    return solve.lower(params, batches).compile().memory_analysis().temp_size_in_bytes

  two, twenty = temp_bytes(2), temp_bytes(20)
  assert two > 0
  assert twenty == two


def test_bad_batches_are_named():
  params, batches, loss_fn = mlp_problem(dtype=jnp.float32)
  key = jax.random.PRNGKey(0)
  solve = lambda b: hessian.hessian_top_k(loss_fn, params, b, key, k=1, num_lanczos_steps=4)
  with pytest.raises(ValueError, match="no batch"):
    solve(jax.tree.map(lambda x: x[:0], batches))
  with pytest.raises(ValueError, match="batch_size 0"):
    solve(jax.tree.map(lambda x: x[:, :0], batches))
  with pytest.raises(ValueError, match=r"same num_batches \(axis 0\) and batch_size \(axis 1\)"):
    solve({"x": batches["x"], "y": batches["y"][:, :5]})
  with pytest.raises(ValueError, match=r"Leaf \['y'\] of batches has shape \(3,\)"):
    solve({"x": batches["x"], "y": batches["y"][:, 0]})
  with pytest.raises(ValueError, match="batches has no arrays"):
    hessian.dataset_hvp(loss_fn, params, {})
  assert hessian.check_batches(batches) == (3, 8)
  with pytest.raises(ValueError, match="same leading .num_batches. axis, got sizes"):
    hessian.num_batches({"x": batches["x"], "y": batches["y"][:2]})
  pairs = solve(batches)
  wrong = pairs._replace(eigvecs={**pairs.eigvecs, "dense2": {
      "bias": pairs.eigvecs["dense2"]["bias"][:, :2], "kernel": pairs.eigvecs["dense2"]["kernel"]}})
  with pytest.raises(ValueError, match=r"Leaf \['dense2'\]\['bias'\] has shape \(1, 3\)"):
    hessian.hessian_top_k(loss_fn, params, batches, key, k=1, num_lanczos_steps=4, init=wrong)


def test_bad_options_are_named():
  params, batches, loss_fn = mlp_problem(dtype=jnp.float32)
  key = jax.random.PRNGKey(0)
  solve = lambda **kw: hessian.hessian_top_k(loss_fn, params, batches, key,
                                             **{"k": 2, "num_lanczos_steps": 6, **kw})
  with pytest.raises(TypeError, match="k must be a Python int"):
    solve(k=2.0)
  with pytest.raises(TypeError, match="num_steps must be a Python int"):
    solve(num_lanczos_steps=6.0)
  with pytest.raises(ValueError, match="num_guard must be at least 0"):
    solve(tol=1e-3, num_guard=-1)
  for tol in (0.0, -1.0, float("nan")):
    with pytest.raises(ValueError, match="tol must be None or a finite number > 0"):
      solve(tol=tol)
  with pytest.raises(ValueError, match="which must be one of"):
    solve(which="LM")
  with pytest.raises(ValueError, match="floating-point scalar"):
    hessian.hessian_top_k(lambda p, b: jnp.int32(1), params, batches, key, k=1,
                          num_lanczos_steps=4)


def test_bad_input_gets_named_errors():
  params, batches, loss_fn = mlp_problem(dtype=jnp.float32)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="must return a scalar"):
    hessian.hessian_top_k(lambda p, b: jnp.zeros(3) + loss_fn(p, b), params, batches, key, k=1,
                          num_lanczos_steps=4)
  with pytest.raises(ValueError, match="k=6 eigenpairs"):
    hessian.hessian_top_k(loss_fn, params, batches, key, k=6, num_lanczos_steps=5)
  with pytest.raises(ValueError, match="same num_batches"):
    hessian.hessian_top_k(loss_fn, params, {"x": batches["x"], "y": batches["y"][:2]}, key, k=1,
                          num_lanczos_steps=4)
  bad_init = hessian.hessian_top_k(loss_fn, params, batches, key, k=2, num_lanczos_steps=4)
  bad_init = bad_init._replace(eigvecs={"dense1": bad_init.eigvecs["dense1"]})
  with pytest.raises(ValueError, match="init.eigvecs"):
    hessian.hessian_top_k(loss_fn, params, batches, key, k=2, num_lanczos_steps=4, init=bad_init)
  with pytest.raises(FloatingPointError, match="non-finite"):
    hessian.hessian_top_k(lambda p, b: loss_fn(p, b) * jnp.inf, params, batches, key, k=1,
                          num_lanczos_steps=4)


def test_second_call_does_not_recompile():
  params, batches, loss_fn = mlp_problem(dtype=jnp.float32)
  before = hessian._hessian_top_k._cache_size()
  for seed in range(2):
    moved = tm.scale(1.0 + seed, params)
    hessian.hessian_top_k(loss_fn, moved, batches, jax.random.PRNGKey(seed), k=2,
                          num_lanczos_steps=6)
  assert hessian._hessian_top_k._cache_size() == before + 1


def test_k_beyond_the_parameter_count_is_named_first():
  """A 3-parameter model asked for k = 5: the error says k exceeds the parameter count (not
  that num_steps does, nor that num_steps should be raised)."""
  params = {"w": jnp.array([1.0, 2.0, 3.0])}
  batches = {"x": jnp.ones((1, 4, 3))}
  loss_fn = lambda p, b: jnp.mean((b["x"] @ p["w"]) ** 2)  # noqa: E731
  for steps in (3, 15):
    with pytest.raises(ValueError, match=r"k=5 eigenpairs exceed the dimension of the operator "
                                         r"\(3: the number of parameters\)"):
      hessian.hessian_top_k(loss_fn, params, batches, jax.random.PRNGKey(0), k=5,
                            num_lanczos_steps=steps)
  top = hessian.hessian_top_k(loss_fn, params, batches, jax.random.PRNGKey(0), k=3,
                              num_lanczos_steps=3)  # k = dim works: the whole spectrum
  x = np.ones((4, 3))
  np.testing.assert_allclose(np.sort(top.eigvals)[::-1],
                             np.sort(np.linalg.eigvalsh(2 * x.T @ x / 4))[::-1], atol=1e-4)
