r"""Nudged SGD: rescale the update along the sharpest directions of the loss, as optax transforms.

With E = [e_1 .. e_k] the top-k Hessian eigenvectors (orthonormal), Nudged SGD (Jastrzębski et
al., 2019, §6) replaces the gradient g by

.. math::

  u = g + \sum_i (\gamma_i - 1) \langle e_i, g \rangle e_i
    = \gamma \, E E^\top g + (I - E E^\top) g,

so the learning rate is γη along the k sharpest directions and η along their orthogonal
complement. ``scale_by_nudge`` is shaped like ``optax.contrib.scale_by_sophia``: the objective
arrives as the extra argument ``obj_fn`` (the loss on a Hessian batch, a function of the params
only), the eigenpairs live in the state and are refreshed every ``refresh_every`` steps under
``lax.cond``; alternatively the caller passes ``eigenpairs=`` computed on its own schedule.

Factor rules (``rule=``), each giving the factors γ_i along e_i and the factor on the complement:

- ``"constant"``: γ_i = ``gamma`` (scalar or one value per direction), complement 1 (the paper);
- ``"remove"``: γ_i = 0, complement 1 (SGD with the top directions projected out);
- ``"only_top"``: γ_i = 1, complement 0 (u = E Eᵀ g, a step only in the top subspace);
- ``"random"``: γ_i = ``gamma`` along k random orthonormal directions redrawn at each refresh
  (the paper's control; needs neither ``obj_fn`` nor ``eigenpairs``);
- ``"stability"``: γ_i = min(1, c / (η λ_i)) for η λ_i > c (else 1), so the effective step
  along every tracked direction satisfies γ_i η λ_i ≤ c = ``stability_cap`` (c < 2 keeps a
  quadratic stable: the edge-of-stability-aware step).

Non-finite curvature (a NaN or inf loss on the Hessian batch, or non-finite ``eigenpairs=``):
the refresh is rejected, the previous eigenpairs are kept (none before the first success: the
update is then plain SGD), and ``num_failed_refreshes`` in the state counts it. The nudge never
turns finite updates into NaN; read the counter (``optax.tree.get(state,
"num_failed_refreshes")``) to notice a diverging Hessian batch.

``optax.tree.map_params`` works: ``init`` accepts optax's parameter placeholders, and the
state's ``eigvecs`` counts as a params tree (its leaves carry a leading axis of size k).

Layout: ``NudgeOptions`` is the one list of options and ``check_options`` their one check (the
engine's config calls it too); ``rule_factors`` is the rule, a pure function of the eigenvalues;
``_refresh`` computes new directions (Lanczos under ``lax.cond``, random, or given) and
``_apply`` rescales the update along the state's directions, each a function of the options.

References:
  Jastrzębski et al., "On the Relation Between the Sharpest Directions of DNN Loss and the SGD
  Step Length", ICLR 2019. https://arxiv.org/abs/1807.05031
"""

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sharp_dirs.curvature import conv_layout
from sharp_dirs.curvature import krylov
from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.types import PyTree

# The option tuples (sharp_dirs.engine.config imports them from here).
RULES = ("constant", "remove", "only_top", "random", "stability")
VARIANTS = ("nudge_gradient", "nudge_velocity", "nudge_both")
WHICH = krylov.WHICH
STATIC_ARGS = ("num_directions", "num_lanczos_steps")
# update(..., eigenpairs=KEEP): keep the directions in the state (no refresh, no copy).
KEEP = "keep"


class NudgeOptions(NamedTuple):
  """The options of ``scale_by_nudge`` (and of ``nudged_sgd``), with their defaults.

  The one list of them: the public signatures repeat the defaults for the reader and for
  ``optax.inject_hyperparams`` (a test checks they agree), and ``check_options`` validates them.
  """
  num_directions: int  # k (static)
  gamma: jax.typing.ArrayLike = 0.1  # γ, scalar or [k]
  rule: str = "constant"  # one of RULES
  refresh_every: jax.typing.ArrayLike = 100  # steps between refreshes
  burnin_steps: jax.typing.ArrayLike = 0  # plain steps before nudging starts
  num_lanczos_steps: Optional[int] = None  # most HVPs per refresh (static); None = max(20, 3k)
  which: str = "largest"  # one of WHICH
  tol: Optional[float] = None  # relative residual that stops a refresh early
  warm_start_noise: jax.typing.ArrayLike = 0.1  # random part of the warm-start vector
  learning_rate: Optional[optax.ScalarOrSchedule] = None  # η, rule "stability" only
  stability_cap: jax.typing.ArrayLike = 1.0  # c of rule "stability"
  seed: int = 0  # of the PRNG key kept in the state


class ScaleByNudgeState(NamedTuple):
  """State of ``scale_by_nudge``: a pytree of arrays (checkpoint it like any optax state)."""
  count: jax.Array  # shape=(), dtype=jnp.int32: updates seen.
  eigvals: jax.Array  # [k] λ_i of the directions (0 before the first refresh, and for "random").
  eigvecs: optax.Updates  # leaves [k, *param.shape]: the directions e_i (0 before the first).
  residuals: jax.Array  # [k] ‖H e_i − λ_i e_i‖ as reported by Lanczos.
  num_refreshes: jax.Array  # shape=(), dtype=jnp.int32: refreshes done by this transform.
  num_matvecs: jax.Array  # shape=(), dtype=jnp.int32: Hessian-vector products they spent.
  num_failed_refreshes: jax.Array  # shape=(), dtype=jnp.int32: refreshes rejected as non-finite.
  key: jax.Array  # uint32 [2]: PRNG key for Lanczos start vectors and random directions.


# ---------------------------------------------------------------- the options, checked once


def _static_int(value, name: str, minimum: int) -> int:
  try:
    return krylov.check_int(value, name, minimum)
  except TypeError as e:
    raise TypeError(f"{e} Under optax.inject_hyperparams pass "
                    "static_args=sharp_dirs.nudge.STATIC_ARGS.") from None


def _check_step_count(value, name: str, minimum: int) -> None:
  """An int >= minimum, or an integer scalar array (as optax.inject_hyperparams passes it)."""
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    if value < minimum:
      raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return
  dtype = getattr(value, "dtype", None)
  if dtype is None or not jnp.issubdtype(dtype, jnp.integer) or jnp.ndim(value) != 0:
    raise TypeError(f"{name} must be an int (a number of steps), got {value!r}. Pass e.g. "
                    f"{name}=int({name}).")
  if not isinstance(value, jax.core.Tracer) and int(value) < minimum:
    raise ValueError(f"{name} must be at least {minimum}, got {int(value)}.")


def _check_number(value, name: str, *, array_ok: bool = False, minimum: Optional[float] = None,
                  below: Optional[float] = None) -> None:
  """A finite real number (``array_ok``: or an array of them), named in every error.

  Traced values (under ``optax.inject_hyperparams`` or ``jit``) are checked for type only.
  """
  if isinstance(value, bool) or (not isinstance(value, (int, float, np.number, np.ndarray,
                                                        jax.Array))):
    raise TypeError(f"{name} must be a number{' or an array of numbers' if array_ok else ''}, "
                    f"got {value!r} of type {type(value).__name__}.")
  dtype = np.asarray(value).dtype if not isinstance(value, jax.Array) else value.dtype
  if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
    raise TypeError(f"{name} must be a real number, got {value!r} (dtype {dtype}).")
  if jnp.ndim(value) and not array_ok:
    raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}.")
  if isinstance(value, jax.core.Tracer):
    return
  array = np.asarray(value, np.float64)
  if not np.all(np.isfinite(array)):
    raise ValueError(f"{name} must be finite, got {value!r}.")
  if minimum is not None and np.any(array < minimum):
    raise ValueError(f"{name} must be >= {minimum}, got {value!r}.")
  if below is not None and np.any(array >= below):
    raise ValueError(f"{name} must be < {below}, got {value!r}.")


def _check_learning_rate(value) -> None:
  if callable(value) or value is None:
    return
  _check_number(value, "learning_rate")
  if not isinstance(value, jax.core.Tracer) and float(np.asarray(value)) <= 0:
    raise ValueError(f"learning_rate must be > 0, got {value!r}.")


def check_options(options: NudgeOptions, *, variant: Optional[str] = None,
                  momentum: Optional[jax.typing.ArrayLike] = None) -> NudgeOptions:
  """Validates Nudged SGD's options (``variant`` and ``momentum``: those of ``nudged_sgd``).

  The one place they are checked: ``scale_by_nudge``, ``nudged_sgd`` and the engine's config
  call it. Raises a TypeError or ValueError naming the option and the fix; returns the options
  with the static ones (num_directions, num_lanczos_steps) as Python ints.
  """
  o = options
  if variant is not None and variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
  if variant is not None:
    _check_learning_rate(o.learning_rate)
  if momentum is not None:
    _check_number(momentum, "momentum", minimum=0)
  k = _static_int(o.num_directions, "num_directions", 1)
  if o.rule not in RULES:
    raise ValueError(f"rule must be one of {RULES}, got {o.rule!r}.")
  if o.which not in WHICH:
    raise ValueError(f"which must be one of {WHICH}, got {o.which!r}.")
  num_lanczos_steps = o.num_lanczos_steps
  if num_lanczos_steps is not None:
    num_lanczos_steps = _static_int(num_lanczos_steps, "num_lanczos_steps", 1)
    if k > num_lanczos_steps:
      raise ValueError(
          f"num_directions={k} > num_lanczos_steps={num_lanczos_steps}: Lanczos finds at most "
          f"num_lanczos_steps eigenpairs. Use num_lanczos_steps >= {k} (3·k or more is better).")
  _check_number(o.gamma, "gamma", array_ok=True)
  _check_number(o.warm_start_noise, "warm_start_noise", minimum=0)
  _check_number(o.stability_cap, "stability_cap", minimum=0)
  _check_learning_rate(o.learning_rate)
  if isinstance(o.seed, bool) or not isinstance(o.seed, (int, np.integer, jax.Array)):
    raise TypeError(f"seed must be an int, got {o.seed!r} of type {type(o.seed).__name__}.")
  if jnp.ndim(o.gamma) > 1 or (jnp.ndim(o.gamma) == 1 and jnp.shape(o.gamma)[0] != k):
    raise ValueError(
        f"gamma must be a scalar or have one value per direction, shape [{k}]; got shape "
        f"{jnp.shape(o.gamma)}.")
  _check_step_count(o.refresh_every, "refresh_every", 1)
  _check_step_count(o.burnin_steps, "burnin_steps", 0)
  krylov.check_tol(o.tol, num_guard=0)
  if o.rule == "stability" and o.learning_rate is None:
    raise ValueError("rule='stability' caps η·λ_i, so it needs learning_rate= (a scalar or the "
                     "schedule of the optimizer this transform is chained with).")
  return o._replace(num_directions=k, num_lanczos_steps=num_lanczos_steps)


# ---------------------------------------------------------------- the update: pure functions


def _nudge(eigvecs: PyTree, g: PyTree, factors: jax.Array, complement: jax.Array) -> PyTree:
  r"""c·g + Σ_i (f_i − c)⟨e_i, g⟩ e_i: factor f_i along e_i, c on the complement; g's dtypes."""
  coeffs = tm.stack_dot(eigvecs, g)
  delta = tm.stack_combine((factors - complement) * coeffs, eigvecs)
  return jax.tree.map(lambda x, d: (complement * x + d).astype(x.dtype), g, delta)


def _check_stack(eigvecs: PyTree, like: PyTree, name: str) -> int:
  """Checks that ``eigvecs`` is ``like`` with one leading axis; returns that axis' length."""
  if jax.tree.structure(eigvecs) != jax.tree.structure(like):
    raise ValueError(
        f"{name} must have the structure of the updates/params with leaves [k, *leaf.shape]; "
        f"got\n  {name}: {jax.tree.structure(eigvecs)}\n  updates: {jax.tree.structure(like)}")
  sizes = set()
  for path, e, x in zip(jax.tree_util.tree_flatten_with_path(like)[0], jax.tree.leaves(eigvecs),
                        jax.tree.leaves(like)):
    if jnp.ndim(e) != jnp.ndim(x) + 1 or jnp.shape(e)[1:] != jnp.shape(x):
      raise ValueError(
          f"Leaf {jax.tree_util.keystr(path[0])} of {name} has shape {jnp.shape(e)}; expected "
          f"[k, *{jnp.shape(x)}] (one leading axis over the directions).")
    sizes.add(jnp.shape(e)[0])
  if len(sizes) > 1:
    raise ValueError(f"Every leaf of {name} must have the same leading axis, got {sorted(sizes)}.")
  return sizes.pop()


def rescale_along(eigvecs: PyTree, g: PyTree, factors: jax.typing.ArrayLike) -> PyTree:
  r"""Rescales ``g`` by ``factors`` along orthonormal directions, leaving the rest unchanged.

  .. math::

    g + \sum_i (f_i - 1) \langle u_i, g \rangle u_i

  factors = 1 is the identity, 0 projects the u_i out, γ is the paper's NSGD step direction.

  Args:
    eigvecs: orthonormal directions u_i, leaves ``[k, *leaf.shape]`` (g's structure).
    g: the vector to rescale (pytree).
    factors: scalar or [k].

  Returns:
    The rescaled vector, with g's structure and dtypes.
  """
  k = _check_stack(eigvecs, g, "eigvecs")
  factors = jnp.asarray(factors)
  if factors.ndim > 1 or (factors.ndim == 1 and factors.shape[0] != k):
    raise ValueError(f"factors must be a scalar or have shape [{k}], got {factors.shape}.")
  return _nudge(eigvecs, g, jnp.broadcast_to(factors, (k,)), jnp.ones((), factors.dtype))


def rule_factors(rule: str, eigvals: jax.Array, *, gamma: jax.typing.ArrayLike = 1.0,
                 step_size: jax.typing.ArrayLike = 1.0,
                 stability_cap: jax.typing.ArrayLike = 1.0) -> tuple[jax.Array, jax.Array]:
  """The factor rule (module docstring): (f [k] along e_i, c [] on the complement).

  eigvals: [k] λ_i (their dtype is the factors'); step_size: η, read by "stability" only, whose
  f_i = min(1, c / (η λ_i)); gamma: γ of "constant" and "random".
  """
  k, dtype = eigvals.shape[0], eigvals.dtype
  ones = jnp.ones([k], dtype)
  if rule in ("constant", "random"):
    return jnp.broadcast_to(jnp.asarray(gamma, dtype), (k,)), jnp.ones([], dtype)
  if rule == "remove":
    return jnp.zeros([k], dtype), jnp.ones([], dtype)
  if rule == "only_top":
    return ones, jnp.zeros([], dtype)
  step_sharpness = jnp.asarray(step_size, dtype) * eigvals  # stability
  cap = jnp.asarray(stability_cap, dtype)
  over = step_sharpness > cap
  return jnp.where(over, cap / jnp.where(over, step_sharpness, 1), ones), jnp.ones([], dtype)


def _factors(o: NudgeOptions, state: ScaleByNudgeState) -> tuple[jax.Array, jax.Array]:
  """The rule's factors at the state's count: 1 everywhere during the burn-in."""
  step_size = 1.0
  if o.rule == "stability":
    lr = o.learning_rate
    step_size = lr(state.count) if callable(lr) else lr
  factors, complement = rule_factors(o.rule, state.eigvals, gamma=o.gamma, step_size=step_size,
                                     stability_cap=o.stability_cap)
  in_burnin = state.count < o.burnin_steps
  return (jnp.where(in_burnin, jnp.ones_like(factors), factors),
          jnp.where(in_burnin, 1, complement))


def _apply(o: NudgeOptions, state: ScaleByNudgeState, updates: PyTree) -> PyTree:
  """The nudged updates along the state's directions (the count is not advanced)."""
  factors, complement = _factors(o, state)
  return _nudge(state.eigvecs, updates, factors, complement)


# ---------------------------------------------------------------- the state and its refresh


def _has_shapes(params: PyTree) -> bool:
  """False for optax's parameter placeholder (``optax.tree.map_params``: a pytree without
  leaves), True for arrays."""
  leaves = jax.tree.leaves(params)
  return bool(leaves) and all(hasattr(x, "shape") and hasattr(x, "dtype") for x in leaves)


def _lanczos_steps(o: NudgeOptions, like: PyTree) -> int:
  """HVPs per refresh: num_lanczos_steps, default min(max(20, 3k), dim); checked against dim."""
  k, dim = o.num_directions, tm.size(like)
  steps = min(max(20, 3 * k), dim) if o.num_lanczos_steps is None else o.num_lanczos_steps
  if k > dim or steps > dim:
    raise ValueError(
        f"num_directions={k} and num_lanczos_steps={steps} must not exceed the number of "
        f"parameters ({dim}).")
  return steps


def _init(o: NudgeOptions, params: PyTree) -> ScaleByNudgeState:
  k = o.num_directions
  shaped = _has_shapes(params)
  if shaped and o.rule != "random":
    _lanczos_steps(o, params)
  elif shaped and k > tm.size(params):
    raise ValueError(f"num_directions={k} exceeds the number of parameters "
                     f"({tm.size(params)}).")
  # Placeholders (optax.tree.map_params): eigvecs is the params tree, sizes cannot be checked.
  dtype = krylov.krylov_dtype(params if shaped else {})
  return ScaleByNudgeState(
      count=jnp.zeros([], jnp.int32),
      eigvals=jnp.zeros([k], dtype),
      eigvecs=tm.zeros_stack(k, params) if shaped else params,
      residuals=jnp.zeros([k], dtype),
      num_refreshes=jnp.zeros([], jnp.int32),
      num_matvecs=jnp.zeros([], jnp.int32),
      num_failed_refreshes=jnp.zeros([], jnp.int32),
      key=jax.random.PRNGKey(o.seed))


def _due(o: NudgeOptions, count: jax.Array) -> jax.Array:
  """Whether a refresh is due at ``count``: burnin_steps + j·refresh_every, j >= 0."""
  since = count - o.burnin_steps
  return jnp.logical_and(since >= 0, since % o.refresh_every == 0)


def _keep_if_not_finite(new: ScaleByNudgeState, old: ScaleByNudgeState, values: PyTree
                        ) -> ScaleByNudgeState:
  """``new`` if every leaf of ``values`` is finite, else ``old`` with one more failed refresh."""
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(values)]))
  failed = old._replace(num_failed_refreshes=old.num_failed_refreshes + 1,
                        num_matvecs=new.num_matvecs, key=new.key)
  return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, failed)


def _start_vector(eigvecs: PyTree, has_eigvecs: jax.Array, key: jax.Array, noise,
                  like: PyTree) -> PyTree:
  """Lanczos start: ``krylov.warm_start_vector`` once eigvecs exist, else a random vector."""
  z = tm.normal_like(key, like)
  warm = krylov.mix_with_noise(eigvecs, z, noise)
  return jax.tree.map(lambda w, c: jnp.where(has_eigvecs, w, c), warm, z)


def _orthonormal_rows(stack: PyTree) -> PyTree:
  """Orthonormalizes k stacked random vectors by Cholesky QR: rows of L⁻¹Z with ZZᵀ = LLᵀ.

  One pass suffices for Gaussian draws in dimension ≫ k (ZZᵀ is well conditioned).
  """
  gram = jax.vmap(lambda v: tm.stack_dot(stack, v))(stack)  # [k, k]
  chol = jnp.linalg.cholesky(gram)
  inv_chol = jax.scipy.linalg.solve_triangular(chol, jnp.eye(gram.shape[0], dtype=gram.dtype),
                                               lower=True)
  return tm.stack_combine(inv_chol, stack)


def _lanczos_refresh(o: NudgeOptions, state: ScaleByNudgeState, params: PyTree,
                     obj_fn) -> ScaleByNudgeState:
  """The top-k eigenpairs of obj_fn's Hessian at params, warm-started from the state's."""
  key, start_key = jax.random.split(state.key)
  v0 = _start_vector(state.eigvecs, state.num_refreshes > 0, start_key, o.warm_start_noise,
                     params)
  # On CPU the gradient's convolutions are made canonical first: XLA leaves them slow inside
  # this lax.cond and the Lanczos loop (see sharp_dirs.curvature.conv_layout).
  grad_fn = conv_layout.grad(obj_fn)

  def matvec(v):
    return jax.jvp(grad_fn, (params,), (tm.cast(v, params),))[1]

  pairs = krylov.top_k_eigenpairs(matvec, v0, o.num_directions, _lanczos_steps(o, params),
                                  which=o.which, tol=o.tol)
  new = state._replace(
      eigvals=pairs.eigvals.astype(state.eigvals.dtype),
      eigvecs=tm.cast(pairs.eigvecs, state.eigvecs),
      residuals=pairs.residuals.astype(state.residuals.dtype),
      num_refreshes=state.num_refreshes + 1,
      num_matvecs=state.num_matvecs + pairs.num_matvecs.astype(jnp.int32),
      key=key)
  return _keep_if_not_finite(new, state, (new.eigvals, new.eigvecs))


def _random_refresh(o: NudgeOptions, state: ScaleByNudgeState, like: PyTree
                    ) -> ScaleByNudgeState:
  """k random orthonormal directions (rule "random")."""
  key, sub = jax.random.split(state.key)
  draw = tm.normal_like(sub, tm.zeros_stack(o.num_directions, like, state.eigvals.dtype))
  wide = _orthonormal_rows(draw)
  return state._replace(eigvecs=tm.cast(wide, state.eigvecs),
                        num_refreshes=state.num_refreshes + 1, key=key)


def _given_refresh(o: NudgeOptions, state: ScaleByNudgeState, updates: PyTree,
                   eigenpairs: krylov.Eigenpairs) -> ScaleByNudgeState:
  """The first k of eigenpairs computed elsewhere (rejected if non-finite)."""
  k = o.num_directions
  if not isinstance(eigenpairs, krylov.Eigenpairs):
    raise TypeError(f"eigenpairs must be a sharp_dirs Eigenpairs, got "
                    f"{type(eigenpairs).__name__}.")
  n = _check_stack(eigenpairs.eigvecs, updates, "eigenpairs.eigvecs")
  if n < k or jnp.shape(eigenpairs.eigvals) != (n,):
    raise ValueError(
        f"eigenpairs must hold at least num_directions={k} pairs with eigvals of shape [n] "
        f"matching eigvecs' leading axis; got eigvals {jnp.shape(eigenpairs.eigvals)} and "
        f"{n} eigenvectors.")
  residuals = jnp.broadcast_to(jnp.asarray(eigenpairs.residuals), (n,))
  new = state._replace(
      eigvals=jnp.asarray(eigenpairs.eigvals)[:k].astype(state.eigvals.dtype),
      eigvecs=tm.cast(jax.tree.map(lambda e: e[:k], eigenpairs.eigvecs), state.eigvecs),
      residuals=residuals[:k].astype(state.residuals.dtype))
  return _keep_if_not_finite(new, state, (new.eigvals, new.eigvecs))


def _refresh(o: NudgeOptions, state: ScaleByNudgeState, updates: PyTree, params: PyTree,
             obj_fn, eigenpairs) -> ScaleByNudgeState:
  """The state with new directions where due (obj_fn, rule "random") or given (eigenpairs)."""
  if o.rule == "random":
    return jax.lax.cond(_due(o, state.count), lambda s: _random_refresh(o, s, updates),
                        lambda s: s, state)
  if isinstance(eigenpairs, str):
    if eigenpairs != KEEP or obj_fn is not None:
      raise ValueError(f"eigenpairs={eigenpairs!r}: pass an Eigenpairs, or KEEP "
                       f"({KEEP!r}) without obj_fn to keep the current directions.")
    return state
  if obj_fn is None and eigenpairs is None:
    raise ValueError(
        f"scale_by_nudge(rule={o.rule!r}) needs the curvature: pass obj_fn= (a function of the "
        "params returning the scalar loss on a Hessian batch) or eigenpairs= (an Eigenpairs "
        "computed elsewhere) to update(), e.g. tx.update(grads, opt_state, params, "
        "obj_fn=lambda p: loss_fn(p, batch)).")
  if obj_fn is not None and eigenpairs is not None:
    raise ValueError("Pass either obj_fn= or eigenpairs= to scale_by_nudge's update, not both.")
  if eigenpairs is not None:
    return _given_refresh(o, state, updates, eigenpairs)
  if params is None:
    raise ValueError("scale_by_nudge needs params in update(updates, state, params, obj_fn=...)"
                     " to evaluate Hessian-vector products of obj_fn.")
  _check_stack(state.eigvecs, params, "the state's eigvecs (vs params)")
  return jax.lax.cond(_due(o, state.count), lambda s: _lanczos_refresh(o, s, params, obj_fn),
                      lambda s: s, state)


def _advance(state: ScaleByNudgeState) -> ScaleByNudgeState:
  return state._replace(count=optax.safe_int32_increment(state.count))


# ---------------------------------------------------------------- the optax transforms


def _scale_by_nudge(o: NudgeOptions) -> optax.GradientTransformationExtraArgs:
  """scale_by_nudge from checked options: refresh (where due), then rescale, then count."""

  def update_fn(updates, state, params=None, *, obj_fn=None, eigenpairs=None, **extra_args):
    del extra_args
    state = _refresh(o, state, updates, params, obj_fn, eigenpairs)
    return _apply(o, state, updates), _advance(state)

  return optax.GradientTransformationExtraArgs(functools.partial(_init, o), update_fn)



def scale_by_nudge(
    num_directions: int,
    *,
    gamma: jax.typing.ArrayLike = 0.1,
    rule: str = "constant",
    refresh_every: jax.typing.ArrayLike = 100,
    burnin_steps: jax.typing.ArrayLike = 0,
    num_lanczos_steps: Optional[int] = None,
    which: str = "largest",
    tol: Optional[float] = None,
    warm_start_noise: jax.typing.ArrayLike = 0.1,
    learning_rate: Optional[optax.ScalarOrSchedule] = None,
    stability_cap: jax.typing.ArrayLike = 1.0,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates along the top-k Hessian eigenvectors (Nudged SGD's preconditioner).

  .. math::

    u = c\,g + \sum_{i=1}^k (\gamma_i - c) \langle e_i, g \rangle e_i

  with (γ_i, c) given by ``rule`` (module docstring); the default ``"constant"`` rule is the
  paper's γ_i = γ, c = 1. ``update(updates, state, params, *, obj_fn=None, eigenpairs=None)``:

  - ``obj_fn``: params ↦ scalar loss on a Hessian batch (as for ``optax.contrib.sophia``: with
    ``loss_fn(params, batch)``, pass ``obj_fn=lambda p: loss_fn(p, batch)``). At steps
    ``burnin_steps + j·refresh_every`` the top-k eigenpairs of its Hessian at ``params`` are
    recomputed by Lanczos (``lax.cond`` on the count: other steps cost no HVP), warm-started
    from the previous eigenvectors after the first refresh.
  - ``eigenpairs``: an ``Eigenpairs`` computed elsewhere (leaves ``[n >= k, *param.shape]``);
    its first k pairs replace the state's directions. Between refreshes pass
    ``eigenpairs=sharp_dirs.nudge.KEEP`` to keep the state's directions: the step then costs
    only the projection, where passing the same Eigenpairs again copies and checks all k·D
    entries at every step (2× an SGD step for an MLP on a CPU, bench/bench_train.py).

  Exactly one of the two is needed, except with ``rule="random"``, which needs neither (and
  ignores both, so a control run can share the train step). During the first ``burnin_steps``
  updates pass through unchanged (and nothing is refreshed).

  Args:
    num_directions: k, the number of sharpest directions (static).
    gamma: γ, scalar or [k] (rules "constant" and "random"); 1 is plain SGD.
    rule: "constant", "remove", "only_top", "random" or "stability" (module docstring).
    refresh_every: steps between refreshes (the paper: once per epoch).
    burnin_steps: plain steps before nudging starts (the paper's ``burnin``).
    num_lanczos_steps: most HVPs per refresh (static); default max(20, 3k), capped at the
      number of parameters.
    which: "largest" (algebraic) or "magnitude" (the paper's ARPACK 'LM').
    tol: stop a refresh early once every pair has ‖Hu − λu‖ <= tol·|λ| (saves HVPs when warm).
    warm_start_noise: relative size of the random part of the warm-start vector.
    learning_rate: η (scalar or schedule of the count), only for rule "stability".
    stability_cap: c, the cap on γ_i·η·λ_i of rule "stability" (2 is the edge of stability of
      a quadratic; 1 jumps to the minimum along e_i).
    seed: seed of the PRNG key kept in the state.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state ``ScaleByNudgeState``.

  .. note::
    Under ``optax.inject_hyperparams`` pass ``static_args=sharp_dirs.nudge.STATIC_ARGS``:
    ``num_directions`` and ``num_lanczos_steps`` fix array shapes. Under ``vmap`` the
    ``lax.cond`` runs both branches (a refresh at every step).
  """
  return _scale_by_nudge(check_options(NudgeOptions(**locals())))


class NudgeBothState(NamedTuple):
  """State of nudged_sgd's "nudge_both" variant: one nudge shared by gradient and velocity."""
  nudge: ScaleByNudgeState
  trace: optax.TraceState


def _nudge_both(o: NudgeOptions, trace: optax.GradientTransformation
                ) -> optax.GradientTransformationExtraArgs:
  """u = nudge(g), v = trace(u), step direction nudge(v), with one refresh for both nudges."""

  def init_fn(params):
    return NudgeBothState(_init(o, params), trace.init(params))

  def update_fn(updates, state, params=None, *, obj_fn=None, eigenpairs=None, **extra_args):
    del extra_args
    nudge_state = _refresh(o, state.nudge, updates, params, obj_fn, eigenpairs)
    velocity, trace_state = trace.update(_apply(o, nudge_state, updates), state.trace, params)
    updates = _apply(o, nudge_state, velocity)
    return updates, NudgeBothState(_advance(nudge_state), trace_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def nudged_sgd(
    learning_rate: optax.ScalarOrSchedule,
    num_directions: int,
    *,
    gamma: jax.typing.ArrayLike = 0.1,
    momentum: Optional[jax.typing.ArrayLike] = None,
    nesterov: bool = False,
    variant: str = "nudge_velocity",
    rule: str = "constant",
    refresh_every: jax.typing.ArrayLike = 100,
    burnin_steps: jax.typing.ArrayLike = 0,
    num_lanczos_steps: Optional[int] = None,
    which: str = "largest",
    tol: Optional[float] = None,
    warm_start_noise: jax.typing.ArrayLike = 0.1,
    stability_cap: jax.typing.ArrayLike = 1.0,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Nudged SGD: SGD (with optional momentum) whose step is rescaled along e_1..e_k.

  Without momentum, Δθ = −η [γ E Eᵀ g + (I − E Eᵀ) g]. With momentum m (v_0 = 0), the paper's
  three variants (its ``type=``), N(·) being the nudge:

  - ``"nudge_gradient"`` (``correct_g``): v = m v + N(g), Δθ = −η v;
  - ``"nudge_velocity"`` (``correct_v``, the paper's default): v = m v + g is stored and
    Δθ = −η N(v);
  - ``"nudge_both"`` (``correct_both``): v = m v + N(g), Δθ = −η N(v), both nudges sharing one
    refresh.

  Extra arguments (``obj_fn=`` or ``eigenpairs=``) are those of ``scale_by_nudge``; the other
  arguments are too (``learning_rate`` also feeds rule "stability").

  Args:
    learning_rate: η, scalar or schedule.
    num_directions: k (static).
    gamma: γ, scalar or [k].
    momentum: m, or None for plain SGD (then ``variant`` is irrelevant).
    nesterov: Nesterov momentum (``optax.trace``'s; the nudged velocity is its output).
    variant: "nudge_gradient", "nudge_velocity" or "nudge_both".

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``optax.tree.get(opt_state, "eigvals")``
    reads the current eigenvalues in every variant.

  Examples:
    In a train step, ``tx.update(grads, opt_state, params, obj_fn=lambda p: loss_fn(p, batch))``
    (see the README). With the eigenpairs given, e_1 = (1, 0, 0) and λ_1 = 100:

    >>> import jax.numpy as jnp, numpy as np, optax, sharp_dirs
    >>> pairs = sharp_dirs.Eigenpairs(jnp.array([100.]), jnp.array([[1., 0., 0.]]),
    ...                               jnp.zeros(1), jnp.int32(0))
    >>> tx = sharp_dirs.nudged_sgd(0.03, 1, gamma=0.1)
    >>> params = jnp.ones(3)
    >>> grads = jnp.array([100., 1., 1.])
    >>> updates, state = tx.update(grads, tx.init(params), params, eigenpairs=pairs)
    >>> print(np.asarray(optax.apply_updates(params, updates)).round(2))
    [0.7  0.97 0.97]
  """
  args = locals()
  o = check_options(NudgeOptions(**{name: args[name] for name in NudgeOptions._fields}),
                    variant=variant, momentum=momentum)
  lr = optax.scale_by_learning_rate(learning_rate)
  if momentum is None:
    return optax.chain(_scale_by_nudge(o), lr)
  trace = optax.trace(momentum, nesterov)
  if variant == "nudge_gradient":
    return optax.chain(_scale_by_nudge(o), trace, lr)
  if variant == "nudge_velocity":
    return optax.chain(trace, _scale_by_nudge(o), lr)
  return optax.chain(_nudge_both(o, trace), lr)
