"""The loss boundary: from a flax model to ``loss_fn(params, batch) -> scalar``.

Every model here is called as ``model.apply(variables, batch[model.input_key], train=...)`` and
scored against ``batch[model.target_key]`` with mean softmax cross-entropy (over examples, or
over examples × time steps for the language model). ``model_state`` is everything in the
variables but 'params': ``{'batch_stats': ...}`` for BN models, ``{}`` otherwise.

Modes:
- inference (train=False): BN uses running statistics, dropout is off. The paper's default for
  curvature.
- training (train=True): BN uses the batch's statistics (and updates the running ones), dropout
  draws its mask from ``rng``.

The optional L2 term is Keras' ``l2(λ)`` regularizer: λ·Σ‖W‖² over the 'kernel' leaves (conv
and dense kernels; not biases, BN, embeddings or LSTM weights) outside ``model.l2_exclude``.
"""

import functools
from typing import Callable, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sharp_dirs.curvature import tree_math as tm
from sharp_dirs.types import PyTree
Batch = Mapping[str, jax.Array]
LossFn = Callable[[PyTree, Batch], jax.Array]


def init_model(model: nn.Module, key: jax.Array, example_batch: Batch) -> Tuple[PyTree, PyTree]:
  """(params, model_state) for inputs shaped like ``example_batch[model.input_key]`` (jitted,
  once per model and input shape)."""
  inputs = example_batch[model.input_key]
  try:
    hash(model)
  except TypeError:  # a module with unhashable fields (e.g. lists) is initialized uncached
    init = jax.jit(functools.partial(_init_variables.__wrapped__, model))
    variables = dict(init(key, inputs))
  else:
    variables = dict(_init_variables(model, key, inputs))
  params = variables.pop("params")
  return params, variables


@functools.partial(jax.jit, static_argnums=0)
def _init_variables(model: nn.Module, key: jax.Array, inputs: jax.Array):
  return model.init({"params": key, "dropout": key}, inputs, train=False)


def param_shapes(model: nn.Module, example_batch: Batch) -> Tuple[PyTree, PyTree]:
  """``init_model`` as jax.ShapeDtypeStruct leaves, without computing anything."""
  return jax.eval_shape(lambda k: init_model(model, k, example_batch), jax.random.key(0))


count_params = tm.size  # Σ over leaves of prod(leaf.shape) (arrays or ShapeDtypeStructs)


def check_labels(logits: jax.Array, labels: jax.Array) -> None:
  """Raises a ValueError unless labels are integer class ids in [0, K) shaped logits[..., 0].

  dtype and shape are checked always (statically, also under jit); the range only when the
  labels are concrete (outside jit), which costs one host transfer of the labels.
  """
  labels_dtype = jnp.result_type(labels)
  if not jnp.issubdtype(labels_dtype, jnp.integer):
    raise ValueError(
        f"labels must be integer class ids, got dtype {labels_dtype}. Cast them with "
        "labels.astype(jnp.int32) (for one-hot or soft targets use optax.softmax_cross_entropy).")
  if jnp.shape(labels) != jnp.shape(logits)[:-1]:
    raise ValueError(f"labels of shape {jnp.shape(labels)} do not match logits of shape "
                     f"{jnp.shape(logits)}; expected labels of shape {jnp.shape(logits)[:-1]}.")
  if not isinstance(labels, jax.core.Tracer) and np.size(labels):
    values = np.asarray(labels)
    num_classes = jnp.shape(logits)[-1]
    if values.min() < 0 or values.max() >= num_classes:
      raise ValueError(f"labels must lie in [0, {num_classes}) for {num_classes} classes, got "
                       f"values from {values.min()} to {values.max()}.")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """mean over all leading axes of −log softmax(logits)[label]. logits [..., K], labels [...] int.

  Labels are checked by ``check_labels``. Under jit the range cannot be checked cheaply: an
  out-of-range label makes the loss NaN (a non-finite loss, which ``hessian_top_k`` and the
  training loop report), never a silently wrapped class (optax alone maps −1 to class K−1).
  """
  check_labels(logits, labels)
  per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  valid = jnp.logical_and(labels >= 0, labels < jnp.shape(logits)[-1])
  return jnp.mean(jnp.where(valid, per_example, jnp.nan))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """mean(argmax(logits, -1) == labels). logits [..., K], labels [...] int."""
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def l2_penalty(params: PyTree, exclude: Sequence[str] = ()) -> jax.Array:
  """Σ w² over leaves named 'kernel' whose path does not start with a name in ``exclude``."""
  total = jnp.zeros((), jnp.float32)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = [getattr(p, "key", None) for p in path]
    if names[-1] == "kernel" and names[0] not in exclude:
      total = total + jnp.sum(jnp.square(leaf))
  return total


def _l2_term(model: nn.Module, params: PyTree, l2: float) -> jax.Array:
  if isinstance(l2, (int, float)) and l2 == 0:
    return jnp.zeros(())
  return l2 * l2_penalty(params, getattr(model, "l2_exclude", ()))


def predict(model: nn.Module, params: PyTree, model_state: PyTree, inputs: jax.Array) -> jax.Array:
  """Inference-mode logits (running BN statistics, no dropout)."""
  return model.apply({"params": params, **model_state}, inputs, train=False)


def train_loss_and_state(model: nn.Module, params: PyTree, model_state: PyTree, batch: Batch,
                         rng: Optional[jax.Array] = None, l2: float = 0.0):
  """Training-mode loss and what the step needs besides it.

  Returns (loss, (new_model_state, logits)): loss = CE + l2·Σ‖W‖²; new_model_state has the
  BN running statistics updated with this batch (equal to model_state without BN). Use
  ``jax.value_and_grad(train_loss_and_state, argnums=1, has_aux=True)``.
  """
  rngs = {} if rng is None else {"dropout": rng}
  mutable = list(model_state.keys())
  out = model.apply({"params": params, **model_state}, batch[model.input_key], train=True,
                    rngs=rngs, mutable=mutable)
  logits, new_state = out
  new_state = {**model_state, **dict(new_state)}
  loss = cross_entropy(logits, batch[model.target_key]) + _l2_term(model, params, l2)
  return loss, (new_state, logits)


def make_loss_fn(model: nn.Module, model_state: PyTree, *, train: bool,
                 rng: Optional[jax.Array] = None, l2: float = 0.0) -> LossFn:
  """``loss_fn(params, batch) -> scalar`` = mean CE (+ l2·Σ‖W‖²) with the mode fixed.

  train=False: running BN statistics, no dropout (rng unused). train=True: batch statistics
  (the updated running statistics are dropped), dropout masks from ``rng`` (the same masks at
  every call, so the loss is a deterministic function of params and batch, as curvature code
  needs).
  """
  if not train:
    def loss_fn(params, batch):
      logits = predict(model, params, model_state, batch[model.input_key])
      return cross_entropy(logits, batch[model.target_key]) + _l2_term(model, params, l2)
    return loss_fn

  def train_loss_fn(params, batch):
    return train_loss_and_state(model, params, model_state, batch, rng, l2)[0]
  return train_loss_fn
