"""Vector arithmetic on pytrees: parameters, gradients and Krylov vectors share one shape.

What ``optax.tree`` has (vdot, add, sub, cast) is taken from there; what is here keeps each
leaf's dtype (scale, axpy), computes sizes and norms where optax's do not fit, draws random
vectors in one op, or works on stacks.

A "vector" here is any pytree of arrays (for example a flax params dict); a "stack" of vectors
is the same pytree whose leaves carry one extra leading axis ``[n, *leaf.shape]``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sharp_dirs.types import PyTree


# The operations optax.tree already provides, used from there: <a, b> summed over leaves (each
# leaf's vdot at the highest precision), a + b, a − b, and each leaf cast to the dtype of the
# matching leaf of a reference tree (cast) or to one dtype (astype).
vdot = optax.tree.vdot
add = optax.tree.add
sub = optax.tree.sub
cast = optax.tree.cast_like
astype = optax.tree.cast


def norm(a: PyTree) -> jax.Array:
  """Euclidean norm ‖a‖ of the concatenation of all leaves. Not ``optax.tree.norm``, which
  fails on parameters sharded over a mesh with explicit axes (tests/test_distributed.py)."""
  return jnp.sqrt(vdot(a, a))


def size(a: PyTree) -> int:
  """Total number of scalars, a static Python int; leaves may be arrays or ShapeDtypeStructs
  (``optax.tree.size`` warns on the latter)."""
  return int(sum(np.prod(np.shape(x), dtype=np.int64) for x in jax.tree.leaves(a)))


def scale(s: jax.Array, a: PyTree) -> PyTree:
  """s · a, keeping each leaf's dtype."""
  return jax.tree.map(lambda x: (s * x).astype(x.dtype), a)


def axpy(s: jax.Array, x: PyTree, y: PyTree) -> PyTree:
  """s · x + y, keeping y's dtypes."""
  return jax.tree.map(lambda xi, yi: (s * xi + yi).astype(yi.dtype), x, y)


def _draw_like(sample, key: jax.Array, a: PyTree) -> PyTree:
  """One draw of ``sample(key, [size(a)], dtype)`` split into a's leaves.

  A single random op (not one per leaf) keeps compile time flat in the number of leaves.
  """
  leaves, treedef = jax.tree.flatten(a)
  dtype = jnp.result_type(*[jnp.result_type(x) for x in leaves])
  draw = sample(key, (size(a),), dtype)
  cuts = np.cumsum([np.size(x) for x in leaves])[:-1]
  parts = jnp.split(draw, cuts)
  return jax.tree.unflatten(treedef, [
      p.reshape(jnp.shape(x)).astype(jnp.result_type(x)) for p, x in zip(parts, leaves)])


def normal_like(key: jax.Array, a: PyTree) -> PyTree:
  """A standard normal draw with the structure, shapes and dtypes of ``a``."""
  return _draw_like(jax.random.normal, key, a)


def rademacher_like(key: jax.Array, a: PyTree) -> PyTree:
  """Independent ±1 entries with the structure, shapes and dtypes of ``a``."""
  return _draw_like(jax.random.rademacher, key, a)


def stack_dot(stack: PyTree, v: PyTree) -> jax.Array:
  """[n] inner products <stack[i], v> of each stacked vector with ``v``."""
  dots = jax.tree.leaves(jax.tree.map(
      lambda s, x: jnp.tensordot(s, x.astype(s.dtype), axes=x.ndim), stack, v))
  return sum(dots[1:], dots[0])


def stack_combine(coeffs: jax.Array, stack: PyTree) -> PyTree:
  """Σ_i coeffs[..., i] · stack[i]: coeffs ``[n]`` gives one vector, ``[m, n]`` a stack of m."""
  return jax.tree.map(lambda s: jnp.tensordot(coeffs.astype(s.dtype), s, axes=1), stack)


def stack_set(stack: PyTree, i: jax.Array, v: PyTree) -> PyTree:
  """The stack with row i replaced by v (cast to the stack's dtypes)."""
  return jax.tree.map(lambda s, x: s.at[i].set(x.astype(s.dtype)), stack, v)


def stack_get(stack: PyTree, i) -> PyTree:
  return jax.tree.map(lambda s: s[i], stack)


def zeros_stack(n: int, like: PyTree, dtype=None) -> PyTree:
  """n zero vectors shaped like ``like``: leaves ``[n, *leaf.shape]``."""
  return jax.tree.map(lambda x: jnp.zeros((n,) + jnp.shape(x), dtype or jnp.result_type(x)), like)


def check_same_structure(a: PyTree, b: PyTree, a_name: str, b_name: str) -> None:
  """Raises a ValueError naming both arguments when their structures or leaf shapes differ."""
  ta, tb = jax.tree.structure(a), jax.tree.structure(b)
  if ta != tb:
    raise ValueError(
        f"{a_name} and {b_name} must be pytrees of the same structure; got\n  {a_name}: {ta}\n"
        f"  {b_name}: {tb}\nBuild {b_name} from {a_name}, e.g. with jax.tree.map.")
  for path_a, (x, y) in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                            zip(jax.tree.leaves(a), jax.tree.leaves(b))):
    if jnp.shape(x) != jnp.shape(y):
      raise ValueError(
          f"Leaf {jax.tree_util.keystr(path_a[0])} has shape {jnp.shape(x)} in {a_name} but "
          f"{jnp.shape(y)} in {b_name}; the two pytrees must have identical leaf shapes.")
