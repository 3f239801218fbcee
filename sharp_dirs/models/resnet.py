"""Pre-activation ResNet-32 of the paper (released src/models/resnet.py, 'cifar10_resnet32*').

  first conv 3×3 (C → 16)
  3 stages × n blocks, widths 16·2^stage; block (He et al. 2016 full pre-activation):
    y = conv3×3(drop(ReLU([BN] conv3×3_s(ReLU([BN] x)))));  out = y + shortcut(x)
    shortcut = identity, or a 1×1 conv with stride 2 on the raw x in the first block of
    stages 2 and 3 (where the first 3×3 conv has stride 2)
  head: [BN] → ReLU → avgpool 8 → flatten → dense 10
Convs have biases and He-normal init scaled by init_scale (Var = 2·init_scale/fan_in); the dense
layer is Glorot-uniform. The paper's ResNet ('nobn_nodrop_3'): no BN, no dropout,
init_scale = 1/15 (465,674 params); 'resnet32_bn' ('cifar10_resnet32'): BN, init_scale = 1.
"""

from typing import Callable, ClassVar, Sequence

import flax.linen as nn
import jax

from sharp_dirs.models import layers


class PreActBlock(nn.Module):
  """x [B, H, W, C] -> [B, H/s, W/s, features]."""
  features: int
  strides: int
  conv: Callable
  use_bn: bool
  dropout: float

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = x
    if self.use_bn:
      y = layers.batch_norm(train, name="bn1")(y)
    y = self.conv(self.features, (3, 3), strides=self.strides, name="conv1")(nn.relu(y))
    if self.use_bn:
      y = layers.batch_norm(train, name="bn2")(y)
    y = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(y))
    y = self.conv(self.features, (3, 3), name="conv2")(y)
    if self.strides > 1 or x.shape[-1] != self.features:
      x = self.conv(self.features, (1, 1), strides=self.strides, name="shortcut")(x)
    return y + x


class ResNet(nn.Module):
  """x [B, 32, 32, C] -> logits [B, num_classes]; depth 6·blocks_per_stage + 2."""
  blocks_per_stage: int = 5
  widths: Sequence[int] = (16, 32, 64)
  init_scale: float = 1.0 / 15
  init_distribution: str = "truncated_normal"
  use_bn: bool = False
  dropout: float = 0.0
  pool_size: int = 8
  num_classes: int = 10
  conv_impl: str = "auto"

  input_key: ClassVar[str] = "image"
  target_key: ClassVar[str] = "label"
  l2_exclude: ClassVar[tuple] = ()   # Keras regularized every conv and the dense kernel

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    # Each stage after the first halves the size (rounding up); the head pools pool_size².
    downsample = 2 ** (len(self.widths) - 1)
    layers.check_min_spatial(
        "ResNet", x, downsample * (self.pool_size - 1) + 1,
        f"Its head average-pools {self.pool_size}×{self.pool_size} after a {downsample}× "
        f"downsampling (the paper's CIFAR 32×32). Pad smaller images (28×28 → 32×32: "
        f"jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))) or pass a smaller pool_size (7 fits "
        f"28×28).")
    conv_cls = layers.conv_module(self.conv_impl)
    init = layers.he_normal_scaled(self.init_scale, self.init_distribution)

    def conv(features, kernel_size, strides=1, name=None):
      return conv_cls(features, kernel_size, strides=strides, padding="SAME",
                      kernel_init=init, bias_init=layers.zeros, name=name)

    x = conv(self.widths[0], (3, 3), name="first_conv")(x)
    for stage, width in enumerate(self.widths):
      for i in range(self.blocks_per_stage):
        strides = 2 if (stage > 0 and i == 0) else 1
        x = PreActBlock(width, strides, conv, self.use_bn, self.dropout,
                        name=f"stage{stage}_block{i}")(x, train=train)
    if self.use_bn:
      x = layers.batch_norm(train, name="post_bn")(x)
    x = nn.relu(x)
    x = nn.avg_pool(x, (self.pool_size, self.pool_size), strides=(self.pool_size,) * 2,
                    padding="VALID")
    x = x.reshape(x.shape[0], -1)
    return layers.dense(self.num_classes, name="logits")(x)
