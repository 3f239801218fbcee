"""The paper's image preprocessing ("center") and augmentation (shifts + horizontal flips).

Center: x ↦ (x − μ) / σ with μ the per-pixel mean image [H, W, C] and σ one global scalar std,
both over the training split only (45k CIFAR / 50k Fashion-MNIST images).

Augmentation, after centering as in Keras' ``ImageDataGenerator(width_shift_range=0.125,
height_shift_range=0.125, horizontal_flip=True)`` with its default ``fill_mode='nearest'``:
each image is shifted by its own random (dy, dx) with the border pixels repeated outward
(edge fill, not zeros), then flipped left-right with probability 1/2.
- Default (``subpixel=False``): integer shifts, uniform on {−s..s} with s = ⌊0.125·size⌋: 4 px on
  32 px images, 3 px on 28 px ones (⌊3.5⌋, so a shift never exceeds Keras' 3.5 px maximum).
- ``subpixel=True`` reproduces Keras 2.2 exactly in distribution: a continuous shift uniform on
  [−0.125·size, 0.125·size] with bilinear interpolation (its ``order=1`` affine transform).
Everything is one jit-compiled, vectorized function of a PRNG key and a batch: pad with
``mode='edge'`` and take a ``dynamic_slice`` per example under ``vmap``.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SHIFT_RANGE = 0.125  # Keras width/height_shift_range of the paper


def center_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, float]:
  """Per-pixel mean μ [H, W, C] (float32) and global std σ of ``images`` [N, H, W, C].

  σ² = mean(x²) − mean(x)² over all N·H·W·C values, accumulated in float64 chunk by chunk so a
  uint8 CIFAR train set is never copied whole into float64.
  """
  n = len(images)
  total = np.zeros(images.shape[1:], np.float64)
  total_sq = 0.0
  for start in range(0, n, chunk):
    x = np.asarray(images[start:start + chunk], np.float64)
    total += x.sum(axis=0)
    total_sq += float(np.square(x).sum())
  mean = total / n
  grand_mean = float(mean.mean())
  var = total_sq / (n * mean.size) - grand_mean**2
  return mean.astype(np.float32), float(np.sqrt(max(var, 0.0)))


def center(images: np.ndarray, mean: np.ndarray, std: float, chunk: int = 4096) -> np.ndarray:
  """(images − mean) / std as float32 [N, H, W, C], chunk by chunk."""
  out = np.empty(images.shape, np.float32)
  for start in range(0, len(images), chunk):
    out[start:start + chunk] = (np.asarray(images[start:start + chunk], np.float32) - mean) / std
  return out


def max_shifts(image_shape: Sequence[int], shift_range: float = SHIFT_RANGE) -> tuple[int, int]:
  """(⌊shift_range·H⌋, ⌊shift_range·W⌋) for an image shape (H, W, C): (4, 4) on 32×32."""
  return int(shift_range * image_shape[0]), int(shift_range * image_shape[1])


def shift_images(images: jax.Array, shifts: jax.Array, max_shift: tuple[int, int]) -> jax.Array:
  """Integer translation with edge fill: out[b, i, j] = images[b, clip(i − dy_b), clip(j − dx_b)].

  Args:
    images: [B, H, W, C].
    shifts: int [B, 2] of (dy, dx), |dy| ≤ max_shift[0], |dx| ≤ max_shift[1]; positive moves the
      content down / right.
    max_shift: static (sy, sx), the padding.

  Returns:
    [B, H, W, C], same dtype as ``images``.
  """
  sy, sx = max_shift
  _, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (sy, sy), (sx, sx), (0, 0)), mode="edge")

  def crop(image, shift):
    return jax.lax.dynamic_slice(image, (sy - shift[0], sx - shift[1], 0), (h, w, c))

  return jax.vmap(crop)(padded, shifts.astype(jnp.int32))


def subpixel_shift_images(images: jax.Array, shifts: jax.Array,
                          max_shift: tuple[int, int]) -> jax.Array:
  """Real-valued translation, bilinear with edge fill (scipy ``order=1, mode='nearest'``).

  For t = k + f (k = ⌊t⌋) along one axis, out = (1 − f)·shift_k + f·shift_{k+1}; the two axes
  are separable.

  Args:
    images: [B, H, W, C] float.
    shifts: float [B, 2] of (dy, dx) with |dy| ≤ max_shift[0], |dx| ≤ max_shift[1].
    max_shift: static integer bounds.
  """
  sy, sx = max_shift
  k = jnp.floor(shifts)
  f = (shifts - k).astype(images.dtype)
  k = k.astype(jnp.int32)
  zero = jnp.zeros_like(k[:, :1])
  fy, fx = f[:, 0, None, None, None], f[:, 1, None, None, None]
  pad = (sy + 1, sx + 1)
  ky = jnp.concatenate([k[:, :1], zero], axis=1)
  kx = jnp.concatenate([zero, k[:, 1:]], axis=1)
  rows = ((1 - fy) * shift_images(images, ky, pad)
          + fy * shift_images(images, ky + jnp.array([1, 0]), pad))
  return ((1 - fx) * shift_images(rows, kx, pad)
          + fx * shift_images(rows, kx + jnp.array([0, 1]), pad))


@functools.partial(jax.jit, static_argnames=("shift_range", "flip", "subpixel"))
def augment_batch(key: jax.Array, images: jax.Array, *, shift_range: float = SHIFT_RANGE,
                  flip: bool = True, subpixel: bool = False) -> jax.Array:
  """Random shifts with edge fill, then random horizontal flips; deterministic given ``key``.

  Args:
    key: PRNG key.
    images: [B, H, W, C] (already centered).
    shift_range: fraction of the size (Keras' width/height_shift_range); 0 disables shifts.
    flip: flip each image left-right with probability 1/2.
    subpixel: continuous shifts with bilinear interpolation (Keras-exact) instead of integers.

  Returns:
    [B, H, W, C] float32.
  """
  images = jnp.asarray(images, jnp.float32)
  b = images.shape[0]
  # One threefry call for all draws: rows 0, 1 give (dy, dx), row 2 the flips. The modulo
  # bias of an integer in [0, 2s] from 32 random bits is below 1e-8.
  bits = jax.random.bits(key, (3, b), jnp.uint32)
  sy, sx = max_shifts(images.shape[1:], shift_range)
  if subpixel:
    ry, rx = shift_range * images.shape[1], shift_range * images.shape[2]
    u = (bits[:2] >> 8).astype(jnp.float32) * (2.0**-24)  # uniform on [0, 1)
    shifts = ((2 * u - 1) * jnp.array([[ry], [rx]], jnp.float32)).T
    images = subpixel_shift_images(images, shifts, (int(np.ceil(ry)), int(np.ceil(rx))))
  elif sy or sx:
    sizes = jnp.array([[2 * sy + 1], [2 * sx + 1]], jnp.uint32)
    shifts = ((bits[:2] % sizes).astype(jnp.int32) - jnp.array([[sy], [sx]], jnp.int32)).T
    images = shift_images(images, shifts, (sy, sx))
  if flip:
    flips = (bits[2] & 1).astype(bool)
    images = jnp.where(flips[:, None, None, None], images[:, :, ::-1, :], images)
  return images
