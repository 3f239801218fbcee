"""Nudged SGD as optax transforms: dense references, quadratics with a known spectrum, the
optax battery (chain, extra args, inject_hyperparams, no recompilation, dtypes, checkpoints)."""

import doctest
import pathlib
import re

import flax.serialization
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sharp_dirs
from sharp_dirs import nudge
from sharp_dirs.curvature import krylov



LIKE = {"w": jnp.zeros((4, 5)), "b": jnp.zeros(3)}  # a 23-dimensional pytree
RNG = np.random.default_rng(0)


def _ravel(tree):
  return np.asarray(jax.flatten_util.ravel_pytree(tree)[0], np.float64)


def _unravel(flat, like=LIKE):
  unravel = jax.flatten_util.ravel_pytree(like)[1]
  return unravel(jnp.asarray(flat, jax.tree.leaves(like)[0].dtype))


def _orthonormal(k, n, seed=0):
  """[k, n] orthonormal rows (float64 numpy)."""
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, k)))
  return q.T


def _eigenpairs(e, eigvals=None, like=LIKE):
  """Eigenpairs with the rows of e (dense [k, n]) as eigvecs on the pytree ``like``."""
  k = e.shape[0]
  eigvals = np.arange(k, 0, -1.0) if eigvals is None else eigvals
  vecs = jax.vmap(lambda row: _unravel(row, like))(jnp.asarray(e, jnp.float32))
  return krylov.Eigenpairs(jnp.asarray(eigvals, jnp.float32), vecs, jnp.zeros(k), jnp.int32(0))


def _quadratic(eigvals, seed=0):
  """A = Q diag(λ) Qᵀ (float64 numpy), its eigenvectors Q (columns) and obj(x) = ½ xᵀAx."""
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigvals),) * 2))
  a = (q * np.asarray(eigvals)) @ q.T

  def obj_fn(x):
    return 0.5 * x @ jnp.asarray(a, x.dtype) @ x

  return a, q, obj_fn


SPECTRUM = np.concatenate([[100.0, 80.0], np.linspace(50.0, 10.0, 28)])  # dimension 30


# ---------------------------------------------------------------- exact updates, given pairs


@pytest.mark.parametrize("gamma", [0.1, np.array([0.01, 0.5, 5.0])])
def test_rescale_along_and_scale_by_nudge_match_dense(gamma):
  e = _orthonormal(3, 23)
  g = _unravel(RNG.normal(size=23))
  want = _ravel(g) + e.T @ ((np.asarray(gamma) - 1) * (e @ _ravel(g)))
  pairs = _eigenpairs(e)
  np.testing.assert_allclose(_ravel(sharp_dirs.rescale_along(pairs.eigvecs, g, gamma)), want,
                             rtol=1e-5, atol=1e-5)
  tx = sharp_dirs.scale_by_nudge(3, gamma=gamma)
  u, state = tx.update(g, tx.init(LIKE), LIKE, eigenpairs=pairs)
  np.testing.assert_allclose(_ravel(u), want, rtol=1e-5, atol=1e-5)
  assert int(state.count) == 1
  np.testing.assert_array_equal(state.eigvals, pairs.eigvals)


def test_eigenpairs_extra_arg_uses_only_the_first_num_directions():
  e = _orthonormal(5, 23)
  g = _unravel(RNG.normal(size=23))
  tx = sharp_dirs.scale_by_nudge(2, gamma=0.0)
  u, state = tx.update(g, tx.init(LIKE), eigenpairs=_eigenpairs(e))
  want = _ravel(g) - e[:2].T @ (e[:2] @ _ravel(g))
  np.testing.assert_allclose(_ravel(u), want, rtol=1e-5, atol=1e-5)
  assert state.eigvals.shape == (2,)


@pytest.mark.parametrize("rule, formula", [
    ("remove", lambda g, e: g - e.T @ (e @ g)),
    ("only_top", lambda g, e: e.T @ (e @ g)),
    ("constant", lambda g, e: g - 0.7 * e.T @ (e @ g)),
])
def test_rules_match_dense_formulas(rule, formula):
  e = _orthonormal(3, 23, seed=1)
  g = _unravel(RNG.normal(size=23))
  tx = sharp_dirs.scale_by_nudge(3, gamma=0.3, rule=rule)
  u, _ = tx.update(g, tx.init(LIKE), eigenpairs=_eigenpairs(e))
  np.testing.assert_allclose(_ravel(u), formula(_ravel(g), e), rtol=1e-5, atol=1e-5)


def test_random_rule_uses_orthonormal_directions_redrawn_at_each_refresh():
  tx = sharp_dirs.scale_by_nudge(3, gamma=0.2, rule="random", refresh_every=2, seed=3)
  step = jax.jit(tx.update)
  state = tx.init(LIKE)
  previous = None
  for t in range(5):
    g = _unravel(RNG.normal(size=23))
    u, state = step(g, state, LIKE)  # needs neither obj_fn nor eigenpairs
    r = np.stack([_ravel(jax.tree.map(lambda x: x[i], state.eigvecs)) for i in range(3)])
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(_ravel(u), _ravel(g) - 0.8 * r.T @ (r @ _ravel(g)), atol=1e-5)
    if previous is not None:  # new directions exactly at counts 0, 2, 4
      assert np.allclose(r, previous) == (t % 2 == 1)
    previous = r
  assert int(state.num_refreshes) == 3 and int(state.num_matvecs) == 0
  assert step._cache_size() == 1


def test_stability_rule_caps_the_step_sharpness():
  lr, cap = 0.03, 2.0
  eigvals = np.array([100.0, 80.0, 50.0])  # η·λ = 3, 2.4 (capped) and 1.5 (kept)
  e = _orthonormal(3, 23, seed=2)
  g = _unravel(RNG.normal(size=23))
  tx = sharp_dirs.scale_by_nudge(3, rule="stability", learning_rate=lr, stability_cap=cap)
  u, _ = tx.update(g, tx.init(LIKE), eigenpairs=_eigenpairs(e, eigvals))
  factors = np.array([cap / 3.0, cap / 2.4, 1.0])
  np.testing.assert_allclose(e @ _ravel(u), factors * (e @ _ravel(g)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_ravel(u) - e.T @ (e @ _ravel(u)),
                             _ravel(g) - e.T @ (e @ _ravel(g)), atol=1e-5)
  assert np.all(lr * eigvals * factors <= cap + 1e-6)
  # A schedule is evaluated at the count: η(0) = 0.01 keeps every factor at 1.
  tx = sharp_dirs.scale_by_nudge(3, rule="stability", learning_rate=lambda c: 0.01 * (c + 1),
                                 stability_cap=cap)
  u, _ = tx.update(g, tx.init(LIKE), eigenpairs=_eigenpairs(e, eigvals))
  np.testing.assert_allclose(_ravel(u), _ravel(g), atol=1e-6)


def test_burnin_passes_updates_through_then_nudges():
  e = _orthonormal(2, 23)
  tx = sharp_dirs.scale_by_nudge(2, rule="only_top", burnin_steps=3)
  state = tx.init(LIKE)
  for t in range(5):
    g = _unravel(RNG.normal(size=23))
    u, state = tx.update(g, state, eigenpairs=_eigenpairs(e))
    want = _ravel(g) if t < 3 else e.T @ (e @ _ravel(g))
    np.testing.assert_allclose(_ravel(u), want, atol=1e-5)


# ---------------------------------------------------------------- refresh from obj_fn
# Lanczos inside a jitted step takes several seconds to compile on 2 CPU cores, so the tests
# share a few transforms and their jitted steps.


def _jit_step(tx):
  """step(x, state, a) -> (updates, state) for the quadratic ½ xᵀ a x, obj_fn = the same."""
  @jax.jit
  def step(x, state, a):
    obj_fn = lambda p: 0.5 * p @ a @ p
    return tx.update(jax.grad(obj_fn)(x), state, x, obj_fn=obj_fn)
  return step


PLAIN = sharp_dirs.nudged_sgd(0.03, 2, gamma=0.1, refresh_every=10, burnin_steps=2,
                              num_lanczos_steps=20)
PLAIN_STEP = _jit_step(PLAIN)
BOTH_KWARGS = dict(learning_rate=0.01, num_directions=2, gamma=jnp.array([0.1, 0.5]),
                   momentum=0.9, variant="nudge_both", refresh_every=2, num_lanczos_steps=8)
BOTH = sharp_dirs.nudged_sgd(**BOTH_KWARGS)
BOTH_STEP = _jit_step(BOTH)
A, Q, OBJ_FN = _quadratic(SPECTRUM)
A32 = jnp.asarray(A, jnp.float32)


def test_nsgd_converges_where_sgd_diverges_on_a_quadratic():
  x0 = jnp.asarray(np.random.default_rng(1).normal(size=30), jnp.float32)
  x = x0
  for _ in range(150):
    x = optax.apply_updates(x, -0.03 * (A32 @ x))
  assert not np.isfinite(float(OBJ_FN(x))) or float(OBJ_FN(x)) > 1e10  # η·λ_1 = 3 > 2
  x, state = x0, PLAIN.init(x0)
  for _ in range(150):  # two plain (burn-in) steps, then γ·η·λ_1 = 0.3
    u, state = PLAIN_STEP(x, state, A32)
    x = optax.apply_updates(x, u)
  assert float(OBJ_FN(x)) < 1e-8 * float(OBJ_FN(x0))
  np.testing.assert_allclose(optax.tree.get(state, "eigvals"), [100.0, 80.0], rtol=1e-5)
  assert int(optax.tree.get(state, "num_refreshes")) == 15  # at counts 2, 12, ..., 142
  assert PLAIN_STEP._cache_size() == 1


def _moving_quadratic(t, n=30):
  """diag(λ) with eigenvalue 10 on coordinate t % n, 5 on (t + 1) % n, else 1 (float32)."""
  d = np.ones(n)
  d[t % n], d[(t + 1) % n] = 10.0, 5.0
  return jnp.asarray(np.diag(d), jnp.float32)


def test_refresh_happens_exactly_every_refresh_every_steps_after_burnin():
  x = jnp.asarray(np.random.default_rng(2).normal(size=30), jnp.float32)
  state = PLAIN.init(x)
  last = None
  for t in range(25):  # burnin_steps=2, refresh_every=10: refreshes at counts 2, 12, 22
    a = _moving_quadratic(t)
    u, state = PLAIN_STEP(x, state, a)
    g = np.asarray(a @ x, np.float64)
    assert int(optax.tree.get(state, "count")) == t + 1
    if t < 2:
      assert int(optax.tree.get(state, "num_refreshes")) == 0
      np.testing.assert_allclose(u, -0.03 * g, rtol=1e-6)
      continue
    if (t - 2) % 10 == 0:
      last = t
    assert int(optax.tree.get(state, "num_refreshes")) == (t - 2) // 10 + 1
    assert int(optax.tree.get(state, "num_matvecs")) == 20 * ((t - 2) // 10 + 1)
    eigvecs = np.asarray(optax.tree.get(state, "eigvecs"), np.float64)
    np.testing.assert_allclose(optax.tree.get(state, "eigvals"), [10.0, 5.0], rtol=1e-5)
    np.testing.assert_allclose(np.abs(eigvecs[0, last % 30]), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.abs(eigvecs[1, (last + 1) % 30]), 1.0, atol=1e-4)
    np.testing.assert_allclose(u, -0.03 * (g - 0.9 * eigvecs.T @ (eigvecs @ g)), rtol=1e-4,
                               atol=1e-6)
    x = optax.apply_updates(x, 0.1 * u)


def _counting_step(tx):
  """Like _jit_step, and obj_fn records one host callback per evaluation (= per HVP)."""
  calls = []

  @jax.jit
  def step(x, state, a):
    def obj_fn(p):
      jax.debug.callback(lambda: calls.append(1))
      return 0.5 * p @ a @ p
    return tx.update(a @ x, state, x, obj_fn=obj_fn)

  def run(x, state, a):
    before = len(calls)
    out = step(x, state, a)
    jax.effects_barrier()
    return out, len(calls) - before

  return run


def test_no_hvp_between_refreshes_and_tol_stops_a_refresh_early():
  # Four outliers over a bulk in [1, 10]: the 2 wanted and 2 guard pairs converge quickly.
  a, _, _ = _quadratic(np.concatenate([[100.0, 80.0, 60.0, 50.0], np.linspace(10, 1, 26)]))
  tx = sharp_dirs.scale_by_nudge(2, gamma=0.5, refresh_every=3, num_lanczos_steps=25, tol=1e-4)
  step = _counting_step(tx)
  x = jnp.asarray(np.random.default_rng(3).normal(size=30), jnp.float32)
  state, spent = tx.init(x), []
  for t in range(7):  # refreshes at counts 0, 3, 6
    before = int(state.num_matvecs)
    (u, state), hvps = step(x, state, jnp.asarray(a, jnp.float32))
    assert hvps == int(state.num_matvecs) - before  # the state counts what actually ran
    if t % 3:
      assert hvps == 0
    else:
      spent.append(hvps)
      np.testing.assert_allclose(state.eigvals, [100.0, 80.0], rtol=1e-4)
      assert np.all(state.residuals <= 1e-4 * np.abs(state.eigvals))
    x = optax.apply_updates(x, -0.001 * u)
  assert len(spent) == 3 and all(3 <= n < 25 for n in spent)  # tol: never the full 25 steps


def test_which_magnitude_nudges_a_large_negative_curvature():
  """½xᵀAx with λ = −120 of largest magnitude: 'magnitude' tracks it, 'largest' does not."""
  a, q, _ = _quadratic(np.concatenate([[-120.0], SPECTRUM[:29]]), seed=5)
  a32 = jnp.asarray(a, jnp.float32)
  x = jnp.asarray(np.random.default_rng(4).normal(size=30), jnp.float32)
  g = np.asarray(a32 @ x, np.float64)
  for which, want in (("magnitude", [100.0, -120.0]), ("largest", [100.0, 80.0])):
    tx = sharp_dirs.scale_by_nudge(2, gamma=0.1, which=which, num_lanczos_steps=30)
    u, state = _jit_step(tx)(x, tx.init(x), a32)
    np.testing.assert_allclose(state.eigvals, want, rtol=1e-4)
    negative = q[:, 0]  # the eigenvector of −120
    scale = 0.1 if which == "magnitude" else 1.0
    np.testing.assert_allclose(negative @ np.asarray(u), scale * (negative @ g), rtol=1e-3)


def test_non_finite_refresh_keeps_the_previous_eigenpairs_and_counts_it():
  """The NaN policy: a refresh on a NaN Hessian batch is rejected (previous eigenpairs kept,
  num_failed_refreshes + 1) and the update stays finite."""
  tx = sharp_dirs.scale_by_nudge(2, gamma=0.1, refresh_every=2, num_lanczos_steps=20)

  @jax.jit
  def step(x, state, hessian):  # finite gradients, Hessian batch loss given by `hessian`
    return tx.update(A32 @ x, state, x, obj_fn=lambda p: 0.5 * p @ hessian @ p)

  x = jnp.linspace(-1.0, 1.0, 30)
  nan_a = A32.at[3, 3].set(jnp.nan)
  # Count 0: a NaN Hessian before any success leaves no directions: the update is plain.
  u, state = step(x, tx.init(x), nan_a)
  assert int(state.num_failed_refreshes) == 1 and int(state.num_refreshes) == 0
  np.testing.assert_array_equal(state.eigvals, 0.0)
  np.testing.assert_allclose(u, A32 @ x, rtol=1e-6)
  u, state = step(x, state, A32)  # count 1: no refresh due
  u, state = step(x, state, A32)  # count 2: refresh
  good = state
  np.testing.assert_allclose(good.eigvals, [100.0, 80.0], rtol=1e-4)
  u_good, _ = step(x, state._replace(count=jnp.int32(3)), A32)
  u, state = step(x, state, A32)
  u, state = step(x, state, nan_a)  # count 4: refresh on NaN, rejected
  assert int(state.num_failed_refreshes) == 2 and int(state.num_refreshes) == 1
  assert int(state.num_matvecs) == int(good.num_matvecs) + 20  # spent, and counted
  np.testing.assert_array_equal(state.eigvals, good.eigvals)
  jax.tree.map(np.testing.assert_array_equal, state.eigvecs, good.eigvecs)
  assert np.all(np.isfinite(u))
  np.testing.assert_allclose(u, u_good, rtol=1e-6)  # nudged along the kept directions
  # Given eigenpairs that are not finite are rejected the same way.
  pairs = _eigenpairs(_orthonormal(2, 23))
  nan_pairs = pairs._replace(eigvals=pairs.eigvals.at[1].set(jnp.nan))
  tx = sharp_dirs.scale_by_nudge(2, gamma=0.0)
  grads = _unravel(RNG.normal(size=23))
  _, state = tx.update(grads, tx.init(LIKE), eigenpairs=pairs)
  u, state = tx.update(grads, state, eigenpairs=nan_pairs)
  assert int(state.num_failed_refreshes) == 1
  np.testing.assert_array_equal(state.eigvals, pairs.eigvals)
  e = np.stack([_ravel(jax.tree.map(lambda v: v[i], pairs.eigvecs)) for i in range(2)])
  np.testing.assert_allclose(_ravel(u), _ravel(grads) - e.T @ (e @ _ravel(grads)), atol=1e-5)


# ---------------------------------------------------------------- momentum variants


def _reference_momentum(grads, e, gamma, lr, m, variant, nesterov):
  """Hand-written NSGD with momentum on flat vectors (the paper's correct_g/v/both)."""
  def nudge(x):
    return x + e.T @ ((gamma - 1) * (e @ x))
  v, steps = np.zeros_like(grads[0]), []
  for g in grads:
    inp = nudge(g) if variant in ("nudge_gradient", "nudge_both") else g
    v = m * v + inp
    out = inp + m * v if nesterov else v
    steps.append(-lr * (nudge(out) if variant in ("nudge_velocity", "nudge_both") else out))
  return steps


@pytest.mark.parametrize("variant", nudge.VARIANTS)
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_variants_match_a_reference_loop(variant, nesterov):
  e = _orthonormal(2, 23, seed=4)
  gamma, lr, m = np.array([0.1, 3.0]), 0.05, 0.9
  grads = [RNG.normal(size=23) for _ in range(4)]
  tx = sharp_dirs.nudged_sgd(lr, 2, gamma=gamma, momentum=m, nesterov=nesterov, variant=variant)
  state = tx.init(LIKE)
  want = _reference_momentum(grads, e, gamma, lr, m, variant, nesterov)
  for g, w in zip(grads, want):
    u, state = tx.update(_unravel(g), state, LIKE, eigenpairs=_eigenpairs(e))
    np.testing.assert_allclose(_ravel(u), w, rtol=1e-5, atol=1e-6)


def _run_both(num_steps, x=None):
  x = jnp.linspace(-1.0, 1.0, 30) if x is None else x
  state = BOTH.init(x)
  for _ in range(num_steps):
    u, state = BOTH_STEP(x, state, A32)
    x = optax.apply_updates(x, u)
  return x, state


def test_nudge_both_shares_one_refresh_and_the_second_step_does_not_recompile():
  x, state = _run_both(3)  # refreshes at counts 0 and 2
  assert isinstance(state[0], nudge.NudgeBothState)
  assert int(optax.tree.get(state, "num_refreshes")) == 2  # one ScaleByNudgeState in the tree
  assert int(optax.tree.get(state, "num_matvecs")) == 2 * 8
  np.testing.assert_allclose(optax.tree.get(state, "eigvals"), [100.0, 80.0], rtol=1e-3)
  assert BOTH_STEP._cache_size() == 1


# ---------------------------------------------------------------- optax battery


def test_chain_with_clip_and_weight_decay_forwards_extra_args():
  e = _orthonormal(2, 23, seed=5)
  params = _unravel(RNG.normal(size=23))
  g = _unravel(3 * RNG.normal(size=23))
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-2),
                   sharp_dirs.scale_by_nudge(2, gamma=0.1), optax.scale_by_learning_rate(0.03))
  u, state = tx.update(g, tx.init(params), params, eigenpairs=_eigenpairs(e), unrelated=1.0)
  clipped = _ravel(g) * min(1.0, 1.0 / np.linalg.norm(_ravel(g)))
  decayed = clipped + 1e-2 * _ravel(params)
  want = -0.03 * (decayed - 0.9 * e.T @ (e @ decayed))
  np.testing.assert_allclose(_ravel(u), want, rtol=1e-5, atol=1e-7)
  assert int(state[2].count) == 1
  np.testing.assert_array_equal(state[2].eigvals, [2.0, 1.0])


def _dtypes(tree):
  return jax.tree.map(lambda x: (x.dtype, getattr(x, "weak_type", False)), tree)


def test_dtypes_are_preserved_float32():
  x = jnp.linspace(-1.0, 1.0, 30)
  state = BOTH.init(x)
  u, new_state = BOTH_STEP(x, state, A32)
  assert u.dtype == jnp.float32
  assert _dtypes(new_state) == _dtypes(state)


def test_dtypes_are_preserved_float64():
  with jax.enable_x64(True):
    x = jnp.linspace(-1.0, 1.0, 30, dtype=jnp.float64)
    tx = sharp_dirs.nudged_sgd(**{**BOTH_KWARGS, "num_lanczos_steps": 30})
    state = tx.init(x)
    u, new_state = _jit_step(tx)(x, state, jnp.asarray(A))
    assert u.dtype == jnp.float64
    assert _dtypes(new_state) == _dtypes(state)
    np.testing.assert_allclose(optax.tree.get(new_state, "eigvals"), [100.0, 80.0], rtol=1e-10)


def test_inject_hyperparams_gives_identical_updates():
  injected = optax.inject_hyperparams(sharp_dirs.nudged_sgd, static_args=nudge.STATIC_ARGS)(
      **BOTH_KWARGS)
  step = _jit_step(injected)
  x = jnp.linspace(-1.0, 1.0, 30)
  s_plain, s_inj = BOTH.init(x), injected.init(x)
  for _ in range(3):
    u_plain, s_plain = BOTH_STEP(x, s_plain, A32)
    u_inj, s_inj = step(x, s_inj, A32)
    np.testing.assert_allclose(u_inj, u_plain, rtol=1e-6, atol=1e-7)
    x = optax.apply_updates(x, u_plain)
  jax.tree.map(lambda p, i: np.testing.assert_allclose(p, i, rtol=1e-6, atol=1e-7),
               s_plain, s_inj.inner_state)
  # The injected γ is live state: at γ = 1 the step is plain momentum SGD.
  s_inj.hyperparams["gamma"] = jnp.ones(2)
  trace = s_inj.inner_state[0].trace.trace
  u_inj, _ = step(x, s_inj, A32)
  np.testing.assert_allclose(u_inj, -0.01 * (A32 @ x + 0.9 * trace), rtol=1e-5, atol=1e-7)
  assert step._cache_size() == 1


def test_state_round_trips_through_flax_serialization_and_numpy():
  x, state = _run_both(4)  # count 4: the next update refreshes from the restored eigvecs, key
  restored = flax.serialization.from_bytes(BOTH.init(x), flax.serialization.to_bytes(state))
  restored = jax.tree.map(jnp.asarray, restored)  # numpy leaves would only add a dispatch entry
  from_numpy = jax.tree.map(jnp.asarray, jax.tree.map(np.asarray, state))
  want, _ = BOTH_STEP(x, state, A32)
  for other in (restored, from_numpy):
    assert jax.tree.structure(other) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, other, state)
    got, _ = BOTH_STEP(x, other, A32)
    np.testing.assert_array_equal(got, want)
  assert BOTH_STEP._cache_size() == 1


# ---------------------------------------------------------------- errors


def test_clear_errors():
  g = _unravel(RNG.normal(size=23))
  tx = sharp_dirs.scale_by_nudge(2)
  state = tx.init(LIKE)
  pairs = _eigenpairs(_orthonormal(3, 23))
  with pytest.raises(ValueError, match="obj_fn= .* or eigenpairs="):
    tx.update(g, state, LIKE)
  with pytest.raises(ValueError, match="not both"):
    tx.update(g, state, LIKE, obj_fn=lambda p: 0.0, eigenpairs=pairs)
  with pytest.raises(ValueError, match="needs params"):
    tx.update(g, state, obj_fn=lambda p: 0.0)
  wrong = pairs._replace(eigvecs={"w": pairs.eigvecs["w"]})
  with pytest.raises(ValueError, match="structure"):
    tx.update(g, state, eigenpairs=wrong)
  wrong = pairs._replace(eigvecs={"w": pairs.eigvecs["w"][:, :2], "b": pairs.eigvecs["b"]})
  with pytest.raises(ValueError, match="expected"):
    tx.update(g, state, eigenpairs=wrong)
  wrong = pairs._replace(eigvecs={"w": pairs.eigvecs["w"], "b": pairs.eigvecs["b"][:2]})
  with pytest.raises(ValueError, match=r"same leading axis, got \[2, 3\]"):
    tx.update(g, state, eigenpairs=wrong)
  with pytest.raises(ValueError, match=r"factors must be a scalar or have shape \[3\]"):
    sharp_dirs.rescale_along(pairs.eigvecs, g, jnp.ones(2))
  with pytest.raises(ValueError, match="at least num_directions"):
    sharp_dirs.scale_by_nudge(4).update(g, sharp_dirs.scale_by_nudge(4).init(LIKE),
                                        eigenpairs=pairs)
  with pytest.raises(TypeError, match="Eigenpairs"):
    tx.update(g, state, eigenpairs=(pairs.eigvals, pairs.eigvecs))
  with pytest.raises(ValueError, match="num_lanczos_steps"):
    sharp_dirs.scale_by_nudge(5, num_lanczos_steps=4)
  with pytest.raises(ValueError, match="must not exceed the number of parameters"):
    sharp_dirs.scale_by_nudge(2, num_lanczos_steps=30).init(LIKE)
  with pytest.raises(ValueError, match="rule"):
    sharp_dirs.scale_by_nudge(2, rule="bogus")
  with pytest.raises(ValueError, match="variant"):
    sharp_dirs.nudged_sgd(0.1, 2, momentum=0.9, variant="correct_v")
  with pytest.raises(ValueError, match="one value per direction"):
    sharp_dirs.scale_by_nudge(2, gamma=jnp.ones(3))
  with pytest.raises(ValueError, match="learning_rate"):
    sharp_dirs.scale_by_nudge(2, rule="stability")
  with pytest.raises(TypeError, match="static_args"):
    optax.inject_hyperparams(sharp_dirs.nudged_sgd)(0.1, 2).init(LIKE)
  with pytest.raises(TypeError, match="num_directions must be a Python int"):
    sharp_dirs.scale_by_nudge(2.0)
  with pytest.raises(TypeError, match="num_lanczos_steps must be a Python int"):
    sharp_dirs.scale_by_nudge(2, num_lanczos_steps=10.0)
  with pytest.raises(ValueError, match="num_directions must be at least 1"):
    sharp_dirs.scale_by_nudge(0)
  for bad in (10.0, 2.5, jnp.ones(2, jnp.int32), jnp.float32(10), "10"):
    with pytest.raises(TypeError, match="refresh_every must be an int"):
      sharp_dirs.scale_by_nudge(2, refresh_every=bad)
  with pytest.raises(ValueError, match="refresh_every must be at least 1"):
    sharp_dirs.scale_by_nudge(2, refresh_every=0)
  with pytest.raises(ValueError, match="refresh_every must be at least 1"):
    sharp_dirs.scale_by_nudge(2, refresh_every=jnp.int32(0))
  with pytest.raises(ValueError, match="burnin_steps must be at least 0"):
    sharp_dirs.nudged_sgd(0.1, 2, burnin_steps=-1)
  with pytest.raises(TypeError, match="burnin_steps must be an int"):
    sharp_dirs.nudged_sgd(0.1, 2, burnin_steps=1.5)
  for tol in (0.0, -1e-3, float("nan")):
    with pytest.raises(ValueError, match="tol must be None or a finite number > 0"):
      sharp_dirs.nudged_sgd(0.1, 2, tol=tol)
  with pytest.raises(ValueError, match="which must be one of"):
    sharp_dirs.scale_by_nudge(2, which="LM")
  with pytest.raises(ValueError, match="num_directions=30 exceeds the number of parameters"):
    sharp_dirs.scale_by_nudge(30, rule="random").init(LIKE)
  # Integer step counts as arrays are what optax.inject_hyperparams passes: accepted.
  sharp_dirs.scale_by_nudge(2, refresh_every=jnp.int32(5), burnin_steps=np.int64(0))


# ---------------------------------------------------------------- documentation


def test_docstring_examples_run():
  import inspect  # pylint: disable=g-import-not-at-top
  examples = inspect.getsource(nudge).count(">>> ")
  result = doctest.testmod(nudge, raise_on_error=False)
  assert examples >= 5 and result.attempted == examples
  assert result.failed == 0
