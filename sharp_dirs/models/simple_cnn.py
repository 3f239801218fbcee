"""SimpleCNN of the paper (released src/models/simple_cnn.py), sizes 'root' and 'medium'.

  conv(F, k, same) → ReLU → conv(F, k, valid) → ReLU → maxpool 2
  → conv(2F, k, same) → ReLU → conv(2F, k, valid) → ReLU → maxpool 2
  → flatten → dense 128 → ReLU → [dropout] → dense 10
Glorot-uniform kernels, zero biases; optional BN after every conv and the dense 128 (before
the ReLU). root: F=32, k=3 (361,898 params on 32×32×3); medium: F=100, k=5 (2,399,518).
"""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from sharp_dirs.models import layers


class SimpleCNN(nn.Module):
  """x [B, H, W, C] float -> logits [B, num_classes]."""
  features: int = 32
  kernel_size: int = 3
  dense_features: int = 128
  num_classes: int = 10
  dropout: float = 0.0
  use_bn: bool = False
  conv_impl: str = "auto"

  input_key: ClassVar[str] = "image"
  target_key: ClassVar[str] = "label"
  # Keras put l2_reg on conv1..conv4 and dense2, not on the pre-softmax layer.
  l2_exclude: ClassVar[tuple] = ("logits",)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    conv_cls = layers.conv_module(self.conv_impl)
    k = (self.kernel_size, self.kernel_size)
    specs = [(self.features, "SAME"), (self.features, "VALID"),
             (2 * self.features, "SAME"), (2 * self.features, "VALID")]
    for i, (f, pad) in enumerate(specs, start=1):
      x = conv_cls(f, k, padding=pad, kernel_init=layers.glorot_uniform,
                   bias_init=layers.zeros, name=f"conv{i}")(x)
      if self.use_bn:
        x = layers.batch_norm(train, name=f"bn{i}")(x)
      x = nn.relu(x)
      if i % 2 == 0:
        x = layers.max_pool(x, 2)
    x = x.reshape(x.shape[0], -1)
    x = layers.dense(self.dense_features, name="dense")(x)
    if self.use_bn:
      x = layers.batch_norm(train, name="bn5")(x)
    x = nn.relu(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return layers.dense(self.num_classes, name="logits")(x)
