"""optax's common battery for contributed optimizers (optax/contrib/_common_test.py, 0.2.8),
adapted to every transformation sharp_dirs exports: nudged_sgd (plain and with momentum, each
variant) and scale_by_nudge (chained with a learning rate, and its random and stability rules).

The curvature arrives as ``obj_fn`` (as optax's battery passes it to sophia). Adaptations: the
optimization runs 20,000 steps (Rosenbrock) or 2,000 (the quadratics) instead of 30,000, with a
learning rate per target, and a tree_map_params test that casts the state as well.
"""

import functools
import inspect

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sharp_dirs
from sharp_dirs import nudge

_NUDGE = dict(num_directions=1, gamma=0.5, refresh_every=10)


def _scale_by_nudge_sgd(learning_rate: optax.ScalarOrSchedule, num_directions: int, *,
                        gamma=0.5, rule="constant", refresh_every=10, stability_cap=1.0):
  """scale_by_nudge in a chain with a learning rate (rule 'stability' needs the rate too)."""
  nudge_lr = learning_rate if rule == "stability" else None
  return optax.chain(
      sharp_dirs.scale_by_nudge(num_directions, gamma=gamma, rule=rule,
                                refresh_every=refresh_every, learning_rate=nudge_lr,
                                stability_cap=stability_cap),
      optax.scale_by_learning_rate(learning_rate))


# name -> (factory(learning_rate=..., **kwargs), kwargs)
OPTIMIZERS = {
    "nudged_sgd": (sharp_dirs.nudged_sgd, _NUDGE),
    "nudged_sgd_nudge_velocity": (sharp_dirs.nudged_sgd,
                                  dict(_NUDGE, momentum=0.9, variant="nudge_velocity")),
    "nudged_sgd_nudge_gradient": (sharp_dirs.nudged_sgd,
                                  dict(_NUDGE, momentum=0.9, variant="nudge_gradient")),
    "nudged_sgd_nudge_both": (sharp_dirs.nudged_sgd,
                              dict(_NUDGE, momentum=0.9, variant="nudge_both", nesterov=True)),
    "scale_by_nudge": (_scale_by_nudge_sgd, _NUDGE),
    "scale_by_nudge_random": (_scale_by_nudge_sgd, dict(_NUDGE, rule="random")),
    "scale_by_nudge_stability": (_scale_by_nudge_sgd,
                                 dict(_NUDGE, rule="stability", stability_cap=1.0)),
}
NAMES = sorted(OPTIMIZERS)


def _make(name, learning_rate):
  factory, kwargs = OPTIMIZERS[name]
  return factory(learning_rate=learning_rate, **kwargs)


def _setup_parabola(dtype):
  initial = jnp.array([-1.0, 10.0, 1.0], dtype=dtype)
  final = jnp.array([1.0, -1.0, 1.0], dtype=dtype)
  return initial, final, lambda p: jnp.sum(jnp.square(p - final))


def _setup_rosenbrock(dtype):
  a, b = 1.0, 100.0
  initial = jnp.array([0.0, 0.0], dtype=dtype)
  final = jnp.array([a, a**2], dtype=dtype)
  return initial, final, lambda p: jnp.square(a - p[0]) + b * jnp.square(p[1] - p[0] ** 2)


def _setup_matrix_parabola(dtype):
  initial = jnp.zeros((2, 2), dtype=dtype)
  final = jnp.array([[3.0, -2.0], [1.0, 4.0]], dtype=dtype)
  return initial, final, lambda p: jnp.sum(jnp.square(p - final))


def _setup_mixed_tensor_target(dtype):
  final = (jnp.array([1.0, -1.0, 2.0], dtype=dtype),
           jnp.array([[1.0, 0.0], [-1.0, 1.0]], dtype=dtype))
  initial = (jnp.zeros((3,), dtype=dtype), jnp.zeros((2, 2), dtype=dtype))

  def obj_fn(params):
    return sum(jnp.sum(jnp.square(p - f)) for p, f in zip(params, final))

  return initial, final, obj_fn


# target -> (setup, learning rate, steps). Rosenbrock's Hessian reaches λ ≈ 1000 at the optimum,
# so the rate keeps η·λ ≤ 1.5 even on a step whose nudge directions are 10 steps old.
TARGETS = {
    "parabola": (_setup_parabola, 0.1, 2_000),
    "rosenbrock": (_setup_rosenbrock, 1.5e-3, 20_000),
    "matrix_parabola": (_setup_matrix_parabola, 0.1, 2_000),
    "mixed_tensor_target": (_setup_mixed_tensor_target, 0.1, 2_000),
}


@pytest.mark.parametrize("name", NAMES)
def test_accepts_extra_args_and_does_not_recompile(name):
  opt = _make(name, 1e-3)
  initial, _, objective = _setup_rosenbrock(jnp.float32)

  @jax.jit
  def step(params, state):
    updates = jax.grad(objective)(params)
    updates, state = opt.update(updates, state, params, obj_fn=objective,
                                unexpected_extra_args_your_optimizer_doesnt_expect=1)
    return optax.apply_updates(params, updates), state

  params, state = initial, opt.init(initial)
  for _ in range(2):
    params, state = step(params, state)
  assert step._cache_size() == 1, "the optimizer recompiles on the second call to update"
  assert np.all(np.isfinite(params))


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", NAMES)
def test_tree_map_params_then_convergence(name, target):
  setup, learning_rate, num_steps = TARGETS[target]
  opt = _make(name, learning_rate)
  initial, final, obj_fn = setup(jnp.float32)

  def step(carry, _):
    params, state = carry
    updates, state = opt.update(jax.grad(obj_fn)(params), state, params, obj_fn=obj_fn)
    return (optax.apply_updates(params, updates), state), None

  state = opt.init(initial)
  state = optax.tree.map_params(opt, lambda v: v, state)  # a no-op change, as in optax
  run = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), length=num_steps)[0])
  params, state = run(initial, state)
  jax.tree.map(lambda p, f: np.testing.assert_allclose(p, f, rtol=3e-2, atol=3e-2),
               params, final)
  if "random" not in name:  # the tracked direction is the Hessian's top eigenvector
    flat, unravel = jax.flatten_util.ravel_pytree(final)
    top = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda f: obj_fn(unravel(f)))(flat)))[-1]
    assert float(optax.tree.get(state, "eigvals")[0]) == pytest.approx(top, rel=1e-2)


@pytest.mark.parametrize("name", NAMES)
def test_tree_map_params_casts_the_params_trees_of_the_state(name):
  """map_params (how users cast or shard optimizer state) reaches the eigvecs and the trace."""
  opt = _make(name, 0.1)
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  state = opt.init(params)
  cast = optax.tree.map_params(opt, lambda v: v.astype(jnp.bfloat16), state)
  assert jax.tree.structure(cast) == jax.tree.structure(state)
  eigvecs = optax.tree.get(cast, "eigvecs")
  assert all(x.dtype == jnp.bfloat16 and x.shape[0] == 1 for x in jax.tree.leaves(eigvecs))
  assert optax.tree.get(cast, "eigvals").dtype == jnp.float32  # not a params tree: unchanged
  obj_fn = lambda p: optax.tree.norm(p, squared=True)  # noqa: E731
  updates, _ = opt.update(params, cast, params, obj_fn=obj_fn)
  assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def _factory_and_hparams(name):
  factory, kwargs = OPTIMIZERS[name]
  return factory, dict(kwargs, learning_rate=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_can_be_wrapped_in_inject_hyperparams(name):
  factory, hparams = _factory_and_hparams(name)
  opt = factory(**hparams)
  static = tuple(a for a in nudge.STATIC_ARGS + ("rule", "variant", "nesterov")
                 if a in inspect.signature(factory).parameters)
  opt_inject = optax.inject_hyperparams(factory, static_args=static)(**hparams)
  params = [jnp.negative(jnp.ones((2, 3))), jnp.ones((2, 5, 2))]
  grads = [jnp.ones((2, 3)), jnp.negative(jnp.ones((2, 5, 2)))]
  obj_fn = lambda x: optax.tree.norm(x, squared=True)  # noqa: E731
  updates, new_state = jax.jit(functools.partial(opt.update, obj_fn=obj_fn))(
      grads, jax.jit(opt.init)(params), params)
  updates_inject, new_state_inject = jax.jit(functools.partial(opt_inject.update, obj_fn=obj_fn))(
      grads, jax.jit(opt_inject.init)(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), updates_inject, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               new_state_inject.inner_state, new_state)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_preserve_dtype(name, dtype):
  opt = _make(name, 0.1)
  fun = lambda x: jnp.sum(x**2)  # noqa: E731
  params = jnp.array([1.0, 2.0], dtype=jnp.dtype(dtype))
  grads = jax.grad(fun)(params)
  updates, _ = jax.jit(functools.partial(opt.update, obj_fn=fun))(
      grads, jax.jit(opt.init)(params), params)
  assert updates.dtype == params.dtype


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_gradient_accumulation(name, dtype):
  """Usable inside optax.MultiSteps: the first of 4 accumulated steps updates nothing."""
  opt = _make(name, 0.1)
  fun = lambda x: jnp.sum(x**2)  # noqa: E731
  opt = optax.GradientTransformationExtraArgs(opt.init, functools.partial(opt.update, obj_fn=fun))
  opt = optax.MultiSteps(opt, every_k_schedule=4)
  params = jnp.array([1.0, 2.0], dtype=jnp.dtype(dtype))
  grads = jax.grad(fun)(params)
  updates, _ = jax.jit(opt.update)(grads, jax.jit(opt.init)(params), params)
  np.testing.assert_array_equal(updates, jnp.zeros_like(grads))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", NAMES)
def test_state_shape_dtype_stability_under_cond(name, dtype):
  with jax.enable_x64(dtype == jnp.float64):
    opt = _make(name, 0.1)
    initial, _, objective = _setup_parabola(dtype)

    @jax.jit
    def step(params, state):
      updates = jax.grad(objective)(params)
      cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0  # defeats constant folding
      updates, state = jax.lax.cond(
          cond, lambda: opt.update(updates, state, params, obj_fn=objective),
          lambda: (params, state))
      return optax.apply_updates(params, updates), state

    params, state = initial, opt.init(initial)
    for _ in range(2):
      params, new_state = step(params, state)
      assert jax.tree.leaves(params)[0].dtype == dtype
      cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
      state = jax.lax.cond(cond, lambda: state, lambda: new_state)  # noqa: B023


@pytest.mark.parametrize("name", NAMES)
def test_learning_rate_schedule_equals_the_constant(name):
  factory, _ = OPTIMIZERS[name]
  annotation = inspect.signature(factory).parameters["learning_rate"].annotation
  assert annotation in (optax.ScalarOrSchedule, optax.Schedule)
  initial, _, obj_fn = _setup_parabola(jnp.float32)

  def run(opt):
    def step(carry, _):
      params, state = carry
      updates, state = opt.update(jax.grad(obj_fn)(params), state, params, obj_fn=obj_fn)
      return (optax.apply_updates(params, updates), state), None

    scan = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), length=10)[0][0])
    return scan(initial, opt.init(initial))

  with_schedule = run(_make(name, optax.constant_schedule(1e-3)))
  with_lr = run(_make(name, 1e-3))
  np.testing.assert_allclose(with_schedule, with_lr, rtol=1e-6)
  assert not np.allclose(with_lr, initial)
