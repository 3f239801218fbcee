"""A fully connected ReLU network on flattened inputs: the cheap model of the CPU-scale runs.

x [B, ...] → flatten → (dense h_i → ReLU)* → dense num_classes. Keras-default init (Glorot-uniform
kernels, zero biases) as the paper's models. The default 784-256-256-10 on Fashion-MNIST has
269,322 parameters, close to SimpleCNN root's 361,898, and trains ~20× faster on a CPU.
"""

from typing import ClassVar, Sequence

import flax.linen as nn
import jax

from sharp_dirs.models import layers


class MLP(nn.Module):
  """x [B, ...] float -> logits [B, num_classes]."""
  hidden: Sequence[int] = (256, 256)
  num_classes: int = 10

  input_key: ClassVar[str] = "image"
  target_key: ClassVar[str] = "label"
  l2_exclude: ClassVar[tuple] = ("logits",)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # no dropout or batch norm
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(layers.dense(width, name=f"dense{i + 1}")(x))
    return layers.dense(self.num_classes, name="logits")(x)
