"""Layers shared by the models: an im2col convolution, Keras-style LSTM, Keras initializers.

``Im2colConv`` computes the same function as ``flax.linen.Conv`` (stride s, 'SAME'/'VALID' or
explicit padding, no dilation, no groups, 1-D/2-D/3-D) with its derivatives written as
im2col by slicing: k₁·…·k_n shifted slices of the padded input concatenated along channels and
one matmul,

  patches[b, p, (o, c)] = x_pad[b, s·p + o, c]        o ∈ kernel offsets (row-major), c < C
  y[b, p, f] = Σ_{o,c} patches[b, p, (o, c)] · kernel[o, c, f] + bias[f]

By default the value itself comes from XLA's convolution (fast forward on CPU) and only the JVP
rule is the matmul form, so gradients (dW = patchesᵀ dy, one matmul instead of XLA's slow
convolution-backprop-filter on CPU) and forward-over-reverse HVPs avoid XLA's convolution
derivatives; ``im2col_forward=True`` uses the matmul form for the value too. Its parameters
have nn.Conv's names, shapes and initializers (``kernel [*k, C, F]``, ``bias [F]``), so the two
are interchangeable on the same params. See bench/bench_conv.py and bench/RESULTS.md.
"""

import functools
import itertools
from typing import Any, Callable, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from sharp_dirs.curvature import conv_layout

CONV_IMPLS = ("auto", "xla", "im2col", "im2col_full")

glorot_uniform = nn.initializers.glorot_uniform()
zeros = nn.initializers.zeros


def keras_uniform(scale: float = 0.05) -> Callable:
  """Keras' Embedding default: U(−scale, scale)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


def he_normal_scaled(init_scale: float, distribution: str = "truncated_normal") -> Callable:
  """Keras VarianceScaling(scale=2·init_scale, mode='fan_in'): Var(w) = 2·init_scale / fan_in.

  Keras' 'normal' distribution draws a truncated normal rescaled to that variance, which is
  jax's 'truncated_normal'; pass distribution='normal' for an untruncated Gaussian.
  """
  return nn.initializers.variance_scaling(2.0 * init_scale, "fan_in", distribution)


def max_pool(x: jax.Array, size: int = 2) -> jax.Array:
  """Non-overlapping size×size max pool, x [B, H, W, C] → [B, H // size, W // size, C].

  The values and derivatives of ``nn.max_pool(x, (size, size), (size, size))`` ('VALID'; ties:
  the first element of the window), computed as ``conv_layout.pool``: elementwise over the
  windows, which XLA's CPU backend runs faster than reduce_window's select_and_scatter gradient.
  """
  return conv_layout.pool(x, (1, size, size, 1), "max")


def hard_sigmoid(x: jax.Array) -> jax.Array:
  """Keras' hard sigmoid: clip(0.2·x + 0.5, 0, 1)."""
  return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


def _tuple(v: Union[int, Sequence[int]], n: int) -> tuple:
  return (v,) * n if isinstance(v, int) else tuple(v)


def conv_padding(in_shape: Sequence[int], kernel_size: Sequence[int], strides: Sequence[int],
                 padding: Union[str, Sequence[tuple]]) -> list:
  """[(lo, hi)] per spatial dim, TF/flax convention for 'SAME' (extra pad at the end)."""
  if isinstance(padding, str):
    return [tuple(p) for p in lax.padtype_to_pads(in_shape, kernel_size, strides, padding.upper())]
  return [tuple(p) for p in padding]


def im2col(x: jax.Array, kernel_size: Sequence[int], strides: Sequence[int],
           padding: Union[str, Sequence[tuple]]) -> jax.Array:
  """Patches [B, *out_spatial, prod(kernel_size)·C] of x [B, *spatial, C] by shifted slices.

  The last axis is ordered (kernel offset row-major, channel), matching
  ``kernel.reshape(-1, F)`` for a kernel [*kernel_size, C, F].
  """
  spatial = x.shape[1:-1]
  pads = conv_padding(spatial, kernel_size, strides, padding)
  x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
  padded = x.shape[1:-1]
  out = [(n - k) // s + 1 for n, k, s in zip(padded, kernel_size, strides)]
  cols = []
  for offs in itertools.product(*[range(k) for k in kernel_size]):
    start = (0, *offs, 0)
    limit = (x.shape[0], *[o + s * (m - 1) + 1 for o, s, m in zip(offs, strides, out)], x.shape[-1])
    cols.append(lax.slice(x, start, limit, (1, *strides, 1)))
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def conv_by_matmul(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                   padding: Union[str, Sequence[tuple]]) -> jax.Array:
  """Convolution x [B, *spatial, C] ⋆ kernel [*k, C, F] -> [B, *out, F] as im2col(x) @ W."""
  patches = im2col(x, kernel.shape[:-2], strides, padding)
  return patches @ kernel.reshape(-1, kernel.shape[-1])


def _xla_conv(x, kernel, strides, padding):
  n = x.ndim - 2
  spec = "".join("DHW"[3 - n:])
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=(f"N{spec}C", f"{spec}IO", f"N{spec}C"))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv_im2col_jvp(x: jax.Array, kernel: jax.Array, strides: tuple, padding: tuple) -> jax.Array:
  """XLA's convolution for the value, im2col matmuls for every derivative.

  JVP rule: d(x ⋆ W) = im2col(dx) @ W + im2col(x) @ dW, so reverse mode (the transpose:
  dW = im2col(x)ᵀ dy, dx = col2im(dy Wᵀ)) and forward-over-reverse HVPs run as matmuls, while
  a plain forward pass keeps XLA's fast convolution. strides, padding: static tuples.
  """
  return _xla_conv(x, kernel, strides, padding)


def _conv_im2col_jvp_rule(strides, padding, primals, tangents):
  x, kernel = primals
  dx, dkernel = tangents
  y = conv_im2col_jvp(x, kernel, strides, padding)
  terms = []
  if not isinstance(dx, SymbolicZero):
    terms.append(conv_by_matmul(dx, kernel, strides, padding))
  if not isinstance(dkernel, SymbolicZero):
    terms.append(conv_by_matmul(x, dkernel, strides, padding))
  return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


conv_im2col_jvp.defjvp(_conv_im2col_jvp_rule, symbolic_zeros=True)


class Im2colConv(nn.Module):
  """Drop-in for ``nn.Conv`` (same params) whose derivatives are im2col matmuls.

  x [B, *spatial, C] -> y [B, *out_spatial, features]. im2col_forward: compute the value as
  im2col @ W too (slower forward on CPU; the derivatives are the same either way).
  """
  features: int
  kernel_size: Sequence[int]
  strides: Union[int, Sequence[int]] = 1
  padding: Union[str, Sequence[tuple]] = "SAME"
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = zeros
  dtype: Any = None
  param_dtype: Any = jnp.float32
  im2col_forward: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ks = tuple(self.kernel_size)
    strides = _tuple(self.strides, len(ks))
    kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if self.im2col_forward:
      y = conv_by_matmul(x, kernel, strides, self.padding)
    else:
      pads = tuple(conv_padding(x.shape[1:-1], ks, strides, self.padding))
      y = conv_im2col_jvp(x, kernel, strides, pads)
    return y if bias is None else y + bias


def conv_module(impl: str) -> Callable[..., nn.Module]:
  """The conv class for ``impl`` ∈ CONV_IMPLS (all take nn.Conv's arguments, same params).

  'xla': nn.Conv. 'im2col': Im2colConv (XLA value, im2col derivatives). 'im2col_full':
  Im2colConv with the value as im2col @ W too. 'auto' (resolved when the model is traced):
  'xla', except 'im2col' on a CPU backend whose YNNPACK fusions are on (``sharp_dirs.xla_cpu``
  turns them off at import; with them on, im2col's gradients and HVPs are the faster ones).
  Measured in bench/RESULTS.md (bench_conv.py, bench_xla_cpu.py).
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
  if impl == "auto":
    from sharp_dirs import xla_cpu  # pylint: disable=g-import-not-at-top
    slow_xla_derivatives = jax.default_backend() == "cpu" and not xla_cpu.ynn_fusions_disabled()
    impl = "im2col" if slow_xla_derivatives else "xla"
  if impl == "xla":
    return nn.Conv
  return functools.partial(Im2colConv, im2col_forward=(impl == "im2col_full"))


class KerasLSTM(nn.Module):
  """Keras 2.2 LSTM layer over a sequence, gates ordered (i, f, c̃, o).

  x [B, T, D] -> (h [B, T, H], final carry (c [B, H], h [B, H])).
    z_t = x_t W + h_{t-1} U + b                W [D, 4H] glorot, U [H, 4H] orthogonal, b = 0
    i, f, o = σ(z_i), σ(z_f), σ(z_o);  c_t = f c_{t-1} + i tanh(z_c);  h_t = o tanh(c_t)
  σ is Keras 2.2's default ``hard_sigmoid`` unless recurrent_activation='sigmoid';
  ``unit_forget_bias=False`` as in the released PTB model (forget bias starts at 0).
  Params are named input_kernel / recurrent_kernel / bias so that the Keras-style L2 on
  'kernel' leaves (conv and dense only) leaves them out.
  """
  features: int
  recurrent_activation: str = "hard_sigmoid"

  @nn.compact
  def __call__(self, x: jax.Array, carry=None):
    h_dim = self.features
    w = self.param("input_kernel", glorot_uniform, (x.shape[-1], 4 * h_dim))
    u = self.param("recurrent_kernel", nn.initializers.orthogonal(), (h_dim, 4 * h_dim))
    b = self.param("bias", zeros, (4 * h_dim,))
    sigma = {"hard_sigmoid": hard_sigmoid, "sigmoid": jax.nn.sigmoid}[self.recurrent_activation]
    if carry is None:
      carry = (jnp.zeros((x.shape[0], h_dim), x.dtype),) * 2
    xw = jnp.einsum("btd,dg->tbg", x, w) + b          # [T, B, 4H], input part hoisted

    def step(carry, xw_t):
      c, h = carry
      z = xw_t + h @ u
      zi, zf, zc, zo = jnp.split(z, 4, axis=-1)
      c = sigma(zf) * c + sigma(zi) * jnp.tanh(zc)
      h = sigma(zo) * jnp.tanh(c)
      return (c, h), h

    carry, hs = lax.scan(step, carry, xw)
    return jnp.swapaxes(hs, 0, 1), carry


def check_min_spatial(model: str, x: jax.Array, minimum: int, fix: str) -> None:
  """Raises a ValueError naming the input size ``model`` needs when x [B, H, W, C] is smaller."""
  height, width = x.shape[1:3]
  if height < minimum or width < minimum:
    raise ValueError(f"{model} needs images of at least {minimum}×{minimum} pixels, got "
                     f"{height}×{width} (input shape {tuple(x.shape)}). {fix}")


def dense(features: int, name: str = None, **kw) -> nn.Dense:
  """Keras' Dense default: Glorot-uniform kernel, zero bias."""
  return nn.Dense(features, kernel_init=glorot_uniform, bias_init=zeros, name=name, **kw)


def batch_norm(train: bool, name: str = None) -> nn.BatchNorm:
  """Keras' BatchNormalization defaults: momentum 0.99, ε = 1e-3, scale and center."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3, name=name)

