"""conv_layout: canonical convolutions give the same values, and every HVP path emits only them.

Speed itself is a benchmark (bench/bench_user_conv.py); these tests check the mechanism: that no
convolution outside XLA CPU's canonical layout (which XLA leaves slow inside loops) reaches the
compiler from hessian_top_k, dataset_hvp under the estimators, gnvp and the NSGD refresh.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import sharp_dirs
from sharp_dirs.curvature import conv_layout
from sharp_dirs.curvature import hessian
from sharp_dirs.curvature import tree_math as tm
from testing import CANONICAL_2D, conv_layouts, dense_hessian, flat


class TinyUserCNN(nn.Module):
  """A user's model, written with flax's own layers (SimpleCNN's layer kinds, tiny sizes)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(2, (3, 3), padding="SAME")(x))
    x = nn.relu(nn.Conv(3, (3, 3), padding="VALID")(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def conv_problem(dtype=jnp.float32, num_batches=2, batch_size=4):
  model = TinyUserCNN()
  rng = np.random.default_rng(0)
  batches = {"x": jnp.asarray(rng.normal(size=(num_batches, batch_size, 6, 6, 1)), dtype),
             "y": jnp.asarray(rng.integers(0, 3, (num_batches, batch_size)), jnp.int32)}
  params = model.init(jax.random.PRNGKey(0), batches["x"][0])["params"]
  params = jax.tree.map(lambda p: p.astype(dtype), params)

  def loss_fn(p, batch):
    logits = model.apply({"params": p}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

  return params, batches, loss_fn


CONFIGS = [
    # (lhs shape, rhs shape, dimension_numbers, extra params)
    ((2, 5, 7, 3), (3, 2, 3, 4), ("NHWC", "HWIO", "NHWC"), {}),
    ((2, 3, 7, 5), (4, 3, 2, 3), ("NCHW", "OIHW", "NCHW"), dict(window_strides=(2, 1))),
    ((3, 7, 5, 2), (3, 2, 3, 4), ("CHWN", "IHWO", "NHWC"),
     dict(padding=((1, 2), (0, 1)), rhs_dilation=(2, 1))),
    ((2, 8, 4), (3, 2, 6), ("NWC", "WIO", "NCW"),
     dict(feature_group_count=2, lhs_dilation=(2,), padding=((1, 1),))),
    ((4, 5, 5, 2), (3, 3, 2, 6), ("NHWC", "HWIO", "NHWC"), dict(batch_group_count=2)),
    ((1, 2, 4, 4, 3), (2, 2, 2, 2, 2), ("NCDHW", "OIDHW", "NDHWC"), dict(padding="SAME")),
]


@pytest.mark.parametrize("lhs_shape,rhs_shape,dnums,extra", CONFIGS)
def test_canonical_conv_equals_lax_conv(x64, lhs_shape, rhs_shape, dnums, extra):
  rng = np.random.default_rng(1)
  lhs = jnp.asarray(rng.normal(size=lhs_shape))
  rhs = jnp.asarray(rng.normal(size=rhs_shape))
  ndim = len(lhs_shape)
  kwargs = dict(window_strides=(1,) * (ndim - 2), padding="VALID")
  kwargs.update(extra)
  conv = lambda a, b: lax.conv_general_dilated(a, b, dimension_numbers=dnums, **kwargs)
  expected = conv(lhs, rhs)
  got = conv_layout.canonicalize_convs(conv)(lhs, rhs)
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
  closed = jax.make_jaxpr(conv_layout.canonicalize_convs(conv))(lhs, rhs)
  assert not conv_layout.needs_rewrite(closed.jaxpr)
  # Derivatives of the rewritten function stay canonical and equal.
  vjp_fn = lambda a, b, t: jax.vjp(conv, a, b)[1](t)
  t = jnp.asarray(rng.normal(size=expected.shape))
  rewritten = conv_layout.canonicalize_convs(vjp_fn)
  for g, e in zip(rewritten(lhs, rhs, t), vjp_fn(lhs, rhs, t)):
    np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
  assert conv_layout.needs_rewrite(jax.make_jaxpr(vjp_fn)(lhs, rhs, t).jaxpr)
  assert not conv_layout.needs_rewrite(jax.make_jaxpr(rewritten)(lhs, rhs, t).jaxpr)


def test_user_cnn_gradient_and_hvp_match_and_hvp_matches_dense_hessian(x64):
  params, batches, loss_fn = conv_problem(jnp.float64)
  batch = hessian.first_batch(batches)
  v = tm.normal_like(jax.random.PRNGKey(1), params)
  grad = jax.jit(hessian.mean_grad, static_argnums=0, static_argnames="canonical_convs")
  grads = [grad(loss_fn, params, batches, canonical_convs=c) for c in (True, False)]
  np.testing.assert_allclose(flat(grads[0]), flat(grads[1]), rtol=1e-12, atol=1e-14)
  hvp = jax.jit(hessian.hvp, static_argnums=0, static_argnames="canonical_convs")
  hv = [hvp(loss_fn, params, batch, v, canonical_convs=c) for c in (True, False)]
  np.testing.assert_allclose(flat(hv[0]), flat(hv[1]), rtol=1e-10, atol=1e-12)
  h = jax.jit(dense_hessian, static_argnums=0)(loss_fn, params,
                                                jax.tree.map(lambda x: x[:1], batches))
  np.testing.assert_allclose(flat(hv[0]), h @ flat(v), rtol=1e-9, atol=1e-10)


def test_hessian_top_k_same_eigenpairs_and_matvecs_with_and_without_rewrite(x64):
  """Same maths: eigenvalues, vectors and the tol stop's HVP count agree (float64)."""
  params, batches, loss_fn = conv_problem(jnp.float64)
  a, b = (hessian.hessian_top_k(loss_fn, params, batches, jax.random.PRNGKey(0), k=2,
                                num_lanczos_steps=40, tol=1e-6, canonical_convs=c)
          for c in (True, False))
  assert int(a.num_matvecs) == int(b.num_matvecs) < 40     # the tol stop fired, at one step
  np.testing.assert_allclose(a.eigvals, b.eigvals, rtol=1e-9)
  for i in range(2):
    np.testing.assert_allclose(
        abs(tm.vdot(tm.stack_get(a.eigvecs, i), tm.stack_get(b.eigvecs, i))), 1.0, atol=1e-6)
  h = jax.jit(dense_hessian, static_argnums=0)(loss_fn, params, batches)
  np.testing.assert_allclose(a.eigvals, np.linalg.eigvalsh(np.asarray(h))[::-1][:2], rtol=1e-5)


def test_every_hvp_path_emits_only_canonical_convolutions():
  """hessian_top_k (while_loop), linearize, the estimators' lax.map, gnvp in a scan, the
  analyses' gradients in lax.map/scan, inside a user's jit; and with canonical_convs=False the weight gradients are not canonical (the test
  can fail)."""
  params, batches, loss_fn = conv_problem()
  key = jax.random.PRNGKey(0)
  model = TinyUserCNN()

  def solve(c, linearize=False):
    return jax.jit(lambda p, b: hessian.hessian_top_k(
        loss_fn, p, b, key, k=1, num_lanczos_steps=3, canonical_convs=c,
        linearize=linearize)).lower(params, batches).as_text()

  def estimators(p, b):
    matvec = hessian.dataset_hvp(loss_fn, p, b)
    return (sharp_dirs.hutchinson_trace(matvec, p, key, 2).value,
            sharp_dirs.spectral_density(matvec, p, key, num_draws=1, num_steps=2).nodes)

  def gnvp_scan(p, b):
    predict = lambda q, batch: model.apply({"params": q}, batch["x"])
    out_loss = lambda z, batch: optax.softmax_cross_entropy_with_integer_labels(
        z, batch["y"]).mean()
    return hessian.batch_mean(lambda batch: hessian.gnvp(predict, out_loss, p, batch, p), p, b)

  eigvecs = jax.tree.map(lambda p: p[None], params)
  analyses = (  # gradients inside lax.map / scan
      lambda p, b: sharp_dirs.step_loss_change(loss_fn, p, eigvecs, b, b, 0.1, key),
      lambda p, b: sharp_dirs.cross_section(loss_fn, p, eigvecs, b, b, 0.1),
      lambda p, b: sharp_dirs.gradient_alignment(loss_fn, p, eigvecs, b))
  for text in (solve(None), solve(True, linearize=True), jax.jit(estimators).lower(
      params, batches).as_text(), jax.jit(gnvp_scan).lower(params, batches).as_text(),
               *(jax.jit(f).lower(params, batches).as_text() for f in analyses)):
    assert conv_layouts(text) == {CANONICAL_2D}
  assert conv_layouts(solve(False)) != {CANONICAL_2D}


def test_nsgd_refresh_in_a_jitted_train_step_emits_only_canonical_convolutions():
  params, batches, loss_fn = conv_problem()
  batch = hessian.first_batch(batches)
  tx = sharp_dirs.nudged_sgd(0.1, 1, num_lanczos_steps=3, refresh_every=2)

  @jax.jit
  def train_step(params, opt_state, batch):
    grads = jax.grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params,
                                   obj_fn=lambda p: loss_fn(p, batch))
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  text = train_step.lower(params, opt_state, batch).as_text()
  # The user's own gradient (outside any loop) is XLA's to canonicalize; the refresh's are ours.
  refresh = text[text.index("stablehlo.while"):]
  assert conv_layouts(refresh) == {CANONICAL_2D}
  _, opt_state = train_step(params, opt_state, batch)
  eigval = optax.tree.get(opt_state, "eigvals")
  top = np.linalg.eigvalsh(np.asarray(jax.jit(dense_hessian, static_argnums=0)(
      loss_fn, params, jax.tree.map(lambda x: x[:1], batches))))[-1]
  # Three Lanczos steps of the refresh underestimate λ₁ a little, never exceed it.
  assert 0.5 * top < float(eigval[0]) <= 1.0001 * top


def test_nested_jit_is_inlined_and_functions_without_convs_are_untouched():
  w = jnp.ones((3, 3, 1, 2))

  @jax.jit
  def inner(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO",
                                                                             "NHWC"))

  loss = lambda w, x: jnp.sum(inner(x, w) ** 2)
  x = jnp.ones((2, 4, 4, 1))
  rewritten = conv_layout.canonicalize_convs(jax.grad(loss))
  assert conv_layout.needs_rewrite(jax.make_jaxpr(jax.grad(loss))(w, x).jaxpr)
  assert not conv_layout.needs_rewrite(jax.make_jaxpr(rewritten)(w, x).jaxpr)
  np.testing.assert_allclose(rewritten(w, x), jax.grad(loss)(w, x), rtol=1e-6)
  f = lambda a: {"y": jnp.sin(a) * 2}
  assert jax.make_jaxpr(conv_layout.canonicalize_convs(f))(1.0).eqns == jax.make_jaxpr(f)(
      1.0).eqns or str(jax.make_jaxpr(conv_layout.canonicalize_convs(f))(1.0)) == str(
          jax.make_jaxpr(f)(1.0))


def test_default_is_cpu_only():
  assert conv_layout.use_canonical_convs(None) == (jax.default_backend() == "cpu")
  assert conv_layout.use_canonical_convs(False) is False
  g = conv_layout.grad(lambda p: jnp.sum(p ** 2), False)
  assert float(g(jnp.ones(2))[0]) == 2.0


POOLS = [
    # (operand shape, window == stride): 2×2 with odd sizes (remainders dropped), 3×3, 1-D.
    ((3, 7, 9, 2), (1, 2, 2, 1)),
    ((2, 6, 6, 3), (1, 3, 3, 1)),
    ((2, 8, 3), (1, 2, 1)),
]


def tied(shape, seed):
  """Values on a coarse grid, so that many windows hold ties (the select's first-element rule)."""
  return jnp.asarray(np.round(np.random.default_rng(seed).normal(size=shape) * 2) / 2)


@pytest.mark.parametrize("shape,window", POOLS)
@pytest.mark.parametrize("kind", ["max", "min"])
def test_pool_rewrite_equals_reduce_window_with_ties(x64, shape, window, kind):
  op, init = (lax.max, -jnp.inf) if kind == "max" else (lax.min, jnp.inf)
  loss = lambda x: jnp.sum(jnp.sin(lax.reduce_window(x, init, op, window, window, "VALID")) ** 2)
  x, v = tied(shape, 0), jnp.asarray(np.random.default_rng(1).normal(size=shape))
  grad, rewritten = jax.grad(loss), conv_layout.canonicalize_convs(jax.grad(loss))
  assert conv_layout.needs_rewrite(jax.make_jaxpr(grad)(x).jaxpr)
  assert not conv_layout.needs_rewrite(jax.make_jaxpr(rewritten)(x).jaxpr)
  # Exactly XLA's values: the same element of each window is chosen, ties included.
  np.testing.assert_array_equal(rewritten(x), grad(x))
  np.testing.assert_array_equal(jax.jvp(rewritten, (x,), (v,))[1], jax.jvp(grad, (x,), (v,))[1])
  np.testing.assert_array_equal(jax.linearize(rewritten, x)[1](v), jax.jvp(grad, (x,), (v,))[1])
  # conv_layout.pool directly: same value and gradient as reduce_window.
  direct = lambda x: jnp.sum(jnp.sin(conv_layout.pool(x, window, kind)) ** 2)
  np.testing.assert_array_equal(direct(x), loss(x))
  np.testing.assert_array_equal(jax.grad(direct)(x), grad(x))


def test_pool_gradient_compiles_without_select_and_scatter():
  x = jnp.ones((2, 6, 6, 3))
  loss = lambda x: jnp.sum(nn.max_pool(x, (2, 2), (2, 2)) ** 2)
  text = lambda f: jax.jit(f).lower(x).as_text()
  assert "select_and_scatter" in text(jax.grad(loss))  # the control: XLA's slow form
  assert "select_and_scatter" not in text(conv_layout.canonicalize_convs(jax.grad(loss)))
  assert "select_and_scatter" not in text(jax.grad(
      lambda x: jnp.sum(conv_layout.pool(x, (1, 2, 2, 1)) ** 2)))


def test_overlapping_padded_and_integer_pools_are_left_to_xla(x64):
  ints = jnp.arange(32).reshape(1, 4, 4, 2)
  assert not conv_layout.needs_rewrite(jax.make_jaxpr(
      lambda n: nn.max_pool(n, (2, 2), (2, 2)))(ints).jaxpr)
  x = tied((2, 7, 7, 2), 2)
  for pool in (lambda x: nn.max_pool(x, (3, 3), (2, 2)),
               lambda x: nn.max_pool(x, (2, 2), (2, 2), padding="SAME")):
    grad = jax.grad(lambda x: jnp.sum(pool(x) ** 2))
    jaxpr = jax.make_jaxpr(grad)(x).jaxpr
    assert not conv_layout.needs_rewrite(jaxpr)
    np.testing.assert_array_equal(conv_layout.canonicalize_convs(grad)(x), grad(x))
