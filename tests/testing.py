"""Helpers the tests import: small problems whose Hessians are known exactly, config and HLO
helpers, the XLA flags of the test session."""

import re

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

# XLA's CPU fusion emitters compile these many small programs about 40% slower than the older
# elemental emitters (the same math: the tests' references are independent of it), and codegen
# split over threads is ~5% slower than one piece when the workers already use every core. Set
# before jax starts its CPU backend; subprocesses inherit them (``with_test_xla_flags``).
TEST_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"


def with_test_xla_flags(flags: str = "") -> str:
  """``flags`` (an XLA_FLAGS value) followed by the test session's compile-speed flags."""
  return f"{flags} {TEST_XLA_FLAGS}".strip()



def set_field(config, dotted: str, value) -> None:
  """config.a.b = value for dotted = "a.b" (a ConfigDict or nested dict)."""
  *parents, last = dotted.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[last] = value


CANONICAL_2D = "[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]"


def conv_layouts(lowered_text: str) -> set:
  """The dimension numbers of every convolution in a lowered (StableHLO) module."""
  found = re.findall(r"dim_numbers = (\[[^\]]*\]x\[[^\]]*\]->\[[^\]]*\])", lowered_text)
  assert found, "no convolution in the module"
  return set(found)


def matrix_with_spectrum(eigvals, seed=0):
  """(H, Q) with H = Q diag(eigvals) Qᵀ for a random orthogonal Q (float64 numpy)."""
  eigvals = np.asarray(eigvals, np.float64)
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigvals),) * 2))
  return (q * eigvals) @ q.T, q


def split_matvec(h):
  """A matvec on the pytree {'b': [3], 'w': [n-3]} for the dense matrix h (n × n).

  The flat vector is [b, w], the order of ``flat`` (jax sorts dict keys).
  """
  n = h.shape[0]
  h = jnp.asarray(h)

  def matvec(v):
    hv = h @ jnp.concatenate([v["b"], v["w"]]).astype(h.dtype)
    return {"b": hv[:3], "w": hv[3:]}

  like = {"w": jnp.zeros(n - 3, h.dtype), "b": jnp.zeros(3, h.dtype)}
  return matvec, like


def flat(tree):
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def mlp_problem(seed=0, num_batches=3, batch_size=8, dtype=jnp.float64):
  """A tanh MLP with softmax cross-entropy: params, stacked batches and loss_fn(params, batch)."""
  rng = np.random.default_rng(seed)
  params = {
      "dense1": {"kernel": jnp.asarray(rng.normal(size=(4, 5)) / 2, dtype),
                 "bias": jnp.asarray(rng.normal(size=(5,)) / 4, dtype)},
      "dense2": {"kernel": jnp.asarray(rng.normal(size=(5, 3)) / 2, dtype),
                 "bias": jnp.zeros(3, dtype)},
  }
  batches = {"x": jnp.asarray(rng.normal(size=(num_batches, batch_size, 4)), dtype),
             "y": jnp.asarray(rng.integers(0, 3, size=(num_batches, batch_size)), jnp.int32)}

  def loss_fn(p, batch):
    h = jnp.tanh(batch["x"] @ p["dense1"]["kernel"] + p["dense1"]["bias"])
    logits = h @ p["dense2"]["kernel"] + p["dense2"]["bias"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, batch["y"][:, None], axis=1))

  return params, batches, loss_fn


def dense_hessian(loss_fn, params, batches):
  """The dense Hessian of the mean loss over all examples (all batches merged into one)."""
  merged = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batches)
  flat_params, unravel = jax.flatten_util.ravel_pytree(params)
  return jax.hessian(lambda f: loss_fn(unravel(f), merged))(flat_params)
