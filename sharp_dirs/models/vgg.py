"""VGG-11 with batch norm, as released (src/models/vgg.py, 'vgg11_no_dropout').

  BN on the raw input
  features [64,M,128,M,256,256,M,512,512,M,512,512,M]: conv3×3 same → BN → ReLU; M = maxpool 2
  flatten → 2 × (dropout → dense 512 → BN → ReLU) → dense 10
Glorot-uniform, zero biases. The released config's key typo ('droput_2') leaves the classifier
dropout at 0.5, so that is the default here. 9,758,480 params on 32×32×3.
"""

from typing import ClassVar, Sequence, Union

import flax.linen as nn
import jax

from sharp_dirs.models import layers

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
  """x [B, 32, 32, C] -> logits [B, num_classes]."""
  cfg: Sequence[Union[int, str]] = VGG11
  dense_features: int = 512
  dropout: float = 0.5
  num_classes: int = 10
  conv_impl: str = "auto"

  input_key: ClassVar[str] = "image"
  target_key: ClassVar[str] = "label"
  l2_exclude: ClassVar[tuple] = ()   # the released VGG has no regularizer; l2 defaults to 0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    num_pools = sum(1 for item in self.cfg if item == "M")
    layers.check_min_spatial(
        "VGG", x, 2 ** num_pools,
        f"Its {num_pools} 2×2 max-pools need that much (the paper's CIFAR 32×32); pad smaller "
        "images (28×28 → 32×32: jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))).")
    conv_cls = layers.conv_module(self.conv_impl)
    x = layers.batch_norm(train, name="input_bn")(x)
    n = 0
    for item in self.cfg:
      if item == "M":
        x = layers.max_pool(x, 2)
        continue
      n += 1
      x = conv_cls(item, (3, 3), padding="SAME", kernel_init=layers.glorot_uniform,
                   bias_init=layers.zeros, name=f"conv{n}")(x)
      x = nn.relu(layers.batch_norm(train, name=f"conv{n}_bn")(x))
    x = x.reshape(x.shape[0], -1)
    for i in range(2):
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = layers.dense(self.dense_features, name=f"dense{i}")(x)
      x = nn.relu(layers.batch_norm(train, name=f"dense{i}_bn")(x))
    return layers.dense(self.num_classes, name="logits")(x)
