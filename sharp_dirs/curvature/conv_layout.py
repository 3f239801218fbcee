"""Convolutions and pools in the form XLA's CPU backend runs fast, inside loops too.

Why: XLA's CPU compiler hands a convolution to its fast library kernels (Eigen / YNNPACK) only
when its dimension numbers are canonical (input NHWC, kernel HWIO, output NHWC). A pass,
``ConvCanonicalization`` (xla/service/cpu/conv_canonicalization.cc), puts every other
convolution in that form with transposes, but it visits only the *entry* computation: a
convolution inside a ``while``/``scan``/``fori_loop`` body or a ``cond`` branch keeps its
dimension numbers and is emitted as a naive loop nest. The forward convolution of ``nn.Conv``
is canonical already; the convolutions that autodiff creates are not (the weight gradient is
``f01b_i01o->01bf``, the input gradient has an ``01oi`` kernel). Measured here (jax 0.10.2,
2 cores): a 32→32 3×3 weight gradient on 64×28×28 images takes 0.08 s in a jitted function and
1.16 s per iteration inside a ``fori_loop``, so a user's flax ``nn.Conv`` model paid ~10× per
Hessian-vector product inside Lanczos (a ``while_loop``), the NSGD refresh (a ``lax.cond``),
the batch scan of ``dataset_hvp`` and the estimators' ``lax.map``.

What: ``canonicalize_convs(fn)`` traces ``fn`` to a jaxpr and evaluates it with every
``conv_general_dilated`` replaced by transpose → canonical convolution → transpose, which is
what that pass does, but at the JAX level, so it holds in any loop body or branch. Same
arithmetic (same convolution, relaid out), so results agree to rounding. Differentiation
*after* the rewrite keeps the form (the JVP of a convolution has its dimension numbers), so
rewriting the gradient makes its ``jax.jvp`` (the HVP) and its ``jax.linearize`` fast too.

Pools: the same rewrite replaces a non-overlapping max (min) pool (``nn.max_pool(x, (2, 2),
(2, 2))``: window == stride, no padding) and its gradient (``select_and_scatter_add``, which
XLA's CPU compiler expands into a reduce-window over index iotas and a scatter) by ``pool`` and
``pool_scatter``: a mask over the windows laid on a trailing axis, elementwise code that
fuses. Same values and derivatives, ties included. Measured here on a user's ``nn.Conv``
SimpleCNN (bench/bench_pool.py): a training step 1.26×, an HVP 1.25×, an HVP inside Lanczos
1.09× faster.
The library's models call ``pool`` directly (``models.layers.max_pool``), so their training
step gets it too.

Where: the library applies it to the gradient whose JVP is the HVP (``hessian.hvp``,
``hessian.dataset_hvp``, ``hessian_top_k``, the NSGD refresh of ``scale_by_nudge``) when the
default backend is CPU; on GPU/TPU nothing changes. Every path stays one jitted program
(``hessian_top_k`` is still a ``while_loop``, callable inside a user's ``jit``). Call
``canonicalize_convs`` yourself on a gradient that your own loops differentiate or run.

Limits: convolutions inside the loss's *own* control flow (a ``lax.scan``/``cond`` in the
model) are left as they are; nested ``jit`` and ``checkpoint`` calls are inlined, custom
JVP/VJP rules are kept (so the library's im2col convolution keeps its rule). Float64
convolutions are never on XLA's fast path on CPU; the rewrite does not change that.
"""

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

# Call-like primitives whose body is inlined when it holds a convolution (their semantics is
# "evaluate this jaxpr"); custom_jvp/custom_vjp calls are bound as they are, keeping their rules.
_INLINED = frozenset({"jit", "pjit", "closed_call", "core_call", "checkpoint", "remat"})


def canonical_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
  """NH..WC input, H..WIO kernel, NH..WC output for ``ndim``-dimensional operands."""
  spatial = tuple(range(1, ndim - 1))
  return lax.ConvDimensionNumbers((0, ndim - 1, *spatial), (ndim - 1, ndim - 2, *range(ndim - 2)),
                                  (0, ndim - 1, *spatial))


def is_canonical(dimension_numbers: lax.ConvDimensionNumbers) -> bool:
  expected = canonical_dimension_numbers(len(dimension_numbers.lhs_spec))
  return all(tuple(a) == tuple(b) for a, b in zip(dimension_numbers, expected))


def canonical_conv(lhs: jax.Array, rhs: jax.Array, *, dimension_numbers, **params) -> jax.Array:
  """``conv_general_dilated_p`` with these params, computed by a canonical convolution.

  ``lax.ConvDimensionNumbers`` list each operand's (batch or out-feature, feature or
  in-feature, spatial...) axes; the operands are transposed so those axes come in canonical
  order (spatial axes keep their order, so strides, padding, dilations and group counts carry
  over unchanged) and the result is transposed back.
  """
  if is_canonical(dimension_numbers):
    return lax.conv_general_dilated_p.bind(lhs, rhs, dimension_numbers=dimension_numbers,
                                           **params)
  lhs_spec, rhs_spec, out_spec = dimension_numbers
  lhs = lax.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
  rhs = lax.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
  out = lax.conv_general_dilated_p.bind(
      lhs, rhs, dimension_numbers=canonical_dimension_numbers(lhs.ndim), **params)
  # Axis i of `out` is axis order[i] of the original result.
  order = (out_spec[0], *out_spec[2:], out_spec[1])
  return lax.transpose(out, tuple(int(i) for i in np.argsort(order)))


# Plain pools (module docstring): the windows on a trailing axis, each window's first chosen
# element marked by a mask, as XLA's select keeps it.
_SELECT_KIND = {lax.ge_p: "max", lax.le_p: "min"}  # select_and_scatter_add's select_prim
_POOL_PRIMITIVES = ("reduce_window_max", "reduce_window_min", "select_and_scatter_add")


def is_plain_pool(window_dimensions, window_strides, padding, base_dilation=None,
                  window_dilation=None, **_) -> bool:
  """Whether the pool's windows tile its operand: window == stride, no padding or dilation."""
  dilations = tuple(base_dilation or ()) + tuple(window_dilation or ())
  return (tuple(window_dimensions) == tuple(window_strides)
          and all(tuple(p) == (0, 0) for p in padding) and all(d == 1 for d in dilations))


def _windows(x: jax.Array, window: tuple) -> jax.Array:
  """x [d_1..d_n] → [d_1 // w_1, ..., d_n // w_n, w_1 ⋯ w_n] (trailing remainders dropped)."""
  out_shape = tuple(d // w for d, w in zip(x.shape, window))
  x = x[tuple(slice(0, o * w) for o, w in zip(out_shape, window))]
  x = x.reshape(tuple(v for o, w in zip(out_shape, window) for v in (o, w)))
  n = len(window)
  x = x.transpose(tuple(range(0, 2 * n, 2)) + tuple(range(1, 2 * n, 2)))
  return x.reshape(out_shape + (int(np.prod(window)),))


def _unwindows(y: jax.Array, window: tuple, shape: tuple) -> jax.Array:
  """Inverse of ``_windows`` back to ``shape``, the dropped remainders filled with zeros."""
  n = len(window)
  out_shape = y.shape[:n]
  y = y.reshape(out_shape + tuple(window))
  y = y.transpose(tuple(v for i in range(n) for v in (i, n + i)))
  y = y.reshape(tuple(o * w for o, w in zip(out_shape, window)))
  return jnp.pad(y, [(0, d - o * w) for d, o, w in zip(shape, out_shape, window)])


def _reduce(windows: jax.Array, kind: str) -> jax.Array:
  return windows.max(axis=-1) if kind == "max" else windows.min(axis=-1)


def _first_choice(windows: jax.Array, kind: str) -> jax.Array:
  """bool [..., W]: in each window, the first element equal to its max (min)."""
  hits = windows == _reduce(windows, kind)[..., None]
  taken = hits[..., 0]
  first = [taken]
  for j in range(1, windows.shape[-1]):  # W is small (4 for 2×2): unrolled, it fuses.
    first.append(hits[..., j] & ~taken)
    taken = taken | hits[..., j]
  return jnp.stack(first, axis=-1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def pool(x: jax.Array, window: tuple, kind: str = "max") -> jax.Array:
  """Max (min) over non-overlapping windows: ``lax.reduce_window`` with strides = ``window``,
  'VALID'. x [d_1..d_n] → [d_1 // w_1, ..., d_n // w_n]; its JVP (and so its gradient) takes
  each window's first maximal (minimal) element, as XLA's select does."""
  return _reduce(_windows(x, window), kind)


@pool.defjvp
def _pool_jvp(window, kind, primals, tangents):
  (x,), (t,) = primals, tangents
  windows = _windows(x, window)
  chosen = jnp.where(_first_choice(windows, kind), _windows(t, window), 0)
  # The value through ``pool`` again, so that derivatives of this rule (an HVP differentiates
  # the gradient) also take the first element, not jnp.max's average over ties.
  return pool(x, window, kind), chosen.sum(axis=-1).astype(t.dtype)


def pool_scatter(source: jax.Array, operand: jax.Array, window: tuple, kind: str) -> jax.Array:
  """``select_and_scatter_add`` of a plain pool: ``source`` [pooled shape] added at each
  window's chosen element of ``operand``, zeros elsewhere."""
  chosen = jnp.where(_first_choice(_windows(operand, window), kind), source[..., None], 0)
  return _unwindows(chosen.astype(source.dtype), window, operand.shape)


def _pool_rewrite(eqn) -> Optional[Callable]:
  """``eqn``'s function by the plain-pool rewrite, or None where it does not apply."""
  name, params = eqn.primitive.name, eqn.params
  if name not in _POOL_PRIMITIVES or not is_plain_pool(**params):
    return None
  if not jnp.issubdtype(eqn.invars[-1].aval.dtype, jnp.floating):
    return None  # integer pools have no derivatives to speed up
  if name in ("reduce_window_max", "reduce_window_min"):
    kind, window = name[len("reduce_window_"):], tuple(params["window_dimensions"])
    return lambda x: pool(x, window, kind)
  if params.get("select_prim") in _SELECT_KIND:  # select_and_scatter_add
    window, kind = tuple(params["window_dimensions"]), _SELECT_KIND[params["select_prim"]]
    return lambda source, operand: pool_scatter(source, operand, window, kind)
  return None


def _inlinable_body(eqn):
  """(jaxpr, consts) of a call-like equation to inline, or None."""
  if eqn.primitive.name not in _INLINED:
    return None
  for name in ("jaxpr", "call_jaxpr"):
    body = eqn.params.get(name)
    if isinstance(body, jcore.ClosedJaxpr):
      return body.jaxpr, body.consts
    if isinstance(body, jcore.Jaxpr) and not body.constvars:
      return body, ()
  return None


def needs_rewrite(jaxpr: jcore.Jaxpr, pools: bool = True) -> bool:
  """Whether a convolution that is not canonical (or, with ``pools``, a plain pool) occurs in
  jaxpr or a sub-jaxpr."""
  for eqn in jaxpr.eqns:
    if eqn.primitive is lax.conv_general_dilated_p:
      if not is_canonical(eqn.params["dimension_numbers"]):
        return True
    elif pools and _pool_rewrite(eqn) is not None:
      return True
    elif any(needs_rewrite(sub, pools) for sub in jcore.jaxprs_in_params(eqn.params)):
      return True
  return False


def _evaluate(jaxpr: jcore.Jaxpr, consts, *args, pools: bool = True) -> list:
  """Evaluates jaxpr on args (under the current trace), convolutions made canonical and, with
  ``pools``, plain pools rewritten."""
  env = {}

  def read(var):
    return var.val if isinstance(var, jcore.Literal) else env[var]

  def write(var, value):
    if not isinstance(var, jcore.DropVar):
      env[var] = value

  for var, value in zip(jaxpr.constvars, consts):
    write(var, value)
  for var, value in zip(jaxpr.invars, args):
    write(var, value)
  for eqn in jaxpr.eqns:
    invals = [read(var) for var in eqn.invars]
    body = _inlinable_body(eqn)
    pool_fn = _pool_rewrite(eqn) if pools else None
    if eqn.primitive is lax.conv_general_dilated_p:
      outvals = [canonical_conv(*invals, **eqn.params)]
    elif pool_fn is not None:
      outvals = [pool_fn(*invals)]
    elif body is not None and needs_rewrite(body[0], pools):
      outvals = _evaluate(body[0], body[1], *invals, pools=pools)
    else:
      with eqn.ctx.manager:
        outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        outvals = [outvals]
    for var, value in zip(eqn.outvars, outvals):
      write(var, value)
  return [read(var) for var in jaxpr.outvars]


def canonicalize_convs(fn: Callable, *, pools: bool = True) -> Callable:
  """``fn`` with every convolution it runs in XLA CPU's canonical layout and, with ``pools``,
  every plain max/min pool and its gradient in elementwise form (module docstring).

  ``fn`` takes and returns pytrees of arrays; the wrapper traces it once per call (at trace
  time under ``jit``), so it composes with ``jit``, ``jvp``, ``linearize``, ``vmap`` and with
  tracers that ``fn`` closes over. Differentiate the wrapped function (wrap the gradient, not
  the loss): autodiff of a convolution creates new, non-canonical ones.
  """

  @functools.wraps(fn)
  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    if not needs_rewrite(closed.jaxpr, pools):
      return fn(*args)
    out = _evaluate(closed.jaxpr, closed.consts, *jax.tree.leaves(args), pools=pools)
    return jax.tree.unflatten(jax.tree.structure(out_shape), out)

  return wrapped


def use_canonical_convs(enable: Optional[bool] = None) -> bool:
  """``enable``, or (None) whether the default backend is the CPU, where loops need it."""
  return jax.default_backend() == "cpu" if enable is None else bool(enable)


def if_enabled(fn: Callable, enable: Optional[bool] = None) -> Callable:
  """``canonicalize_convs(fn)`` when ``use_canonical_convs(enable)``, else ``fn`` itself."""
  return canonicalize_convs(fn) if use_canonical_convs(enable) else fn


def grad(loss_fn: Callable, enable: Optional[bool] = None) -> Callable:
  """``jax.grad(loss_fn)``, with canonical convolutions when ``use_canonical_convs(enable)``."""
  return if_enabled(jax.grad(loss_fn), enable)
