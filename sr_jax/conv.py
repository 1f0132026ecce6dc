"""Convolutions that are fast on XLA:CPU too, and the same as `lax.conv_general_dilated` elsewhere.

`Conv(...)` is `nnx.Conv` with `conv_general_dilated` below; every network in sr_jax builds its
convolutions with it. Parameter names, shapes and values are those of `nnx.Conv`.
"""

import functools

from flax import nnx
import jax
from jax import lax
import jax.numpy as jnp

_NHWC = ("NHWC", "HWIO", "NHWC")

# Convolutions that are fast on XLA:CPU too: `conv_general_dilated`, a drop-in for
# `nnx.Conv(conv_general_dilated=...)`, computes the same values and gradients as
# `lax.conv_general_dilated` but, on CPU only, routes three cases around slow XLA:CPU kernels
# (measurements: benchmarks/RESULTS.md):
# - Tiny images (at most _TINY_OUTPUT_PIXELS output pixels, e.g. a U-Net's stride-32 level on a
#   64x64 patch): XLA swaps the operands of a conv whose kernel is larger than its input and the
#   swapped conv runs at <1 GFLOP/s on CPU (0.3-1.4 s for one 2x2 conv). As patches x matrix it
#   takes milliseconds.
# - Depthwise convs (EfficientNet): XLA:CPU's grouped conv is 10-40x slower than the same sum of
#   shifted images times per-channel weights, which XLA fuses into one loop.
# - The kernel gradient of stride-1 convs on images of 32x32 and more: XLA:CPU computes it as one
#   convolution whose window is the whole image, which runs at 20-60 GFLOP/s on large images (the
#   forward runs at 200-300). Summing it image by image is 1.4-4x faster.
# GPU and TPU programs keep XLA's own convolutions (`lax.platform_dependent`).

# The platforms whose programs use each rewrite: the public switch of this module. `()` turns a
# rewrite off everywhere, all `()` makes every conv XLA's own (benchmarks/ablate.py measures the
# rewrites that way, and widens them to measure them on GPU/TPU). Set before networks are traced.
REWRITE_PLATFORMS = {
  "kernel_grad_by_image": ("cpu",),
  "tiny_as_matmul": ("cpu",),
  "depthwise_as_taps": ("cpu",),
}


def _per_platform(name, rewrite, xla_conv, *args):
  """`rewrite(*args)` in programs for REWRITE_PLATFORMS[name], `xla_conv(*args)` in the others."""
  platforms = REWRITE_PLATFORMS[name]
  return lax.platform_dependent(
    *args, **{platform: rewrite for platform in platforms}, default=xla_conv
  )


_TINY_OUTPUT_PIXELS = 16
_MIN_PIXELS_FOR_KERNEL_GRAD_BY_IMAGE = 32 * 32  # below, XLA's own kernel gradient is as fast
_MAX_KERNEL_GRAD_CHUNKS = 16  # per-image pieces at most; more images share a piece


def _explicit_pads(padding, kernel_hw, image_hw, strides) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(image_hw, kernel_hw, strides, padding)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _conv(x, kernel, pads, precision):
  return lax.conv_general_dilated(
    x, kernel, (1, 1), pads, dimension_numbers=_NHWC, precision=precision
  )


def _taps(x, kernel_hw, strides, pads) -> list[jnp.ndarray]:
  """The kh * kw shifted (strided) views of the padded image that a conv window reads."""
  _, h, w, _ = x.shape
  (kh, kw), (sh, sw), ((top, bottom), (left, right)) = kernel_hw, strides, pads
  out_h, out_w = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
  x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  return [
    x[:, i : i + (out_h - 1) * sh + 1 : sh, j : j + (out_w - 1) * sw + 1 : sw]
    for i in range(kh)
    for j in range(kw)
  ]


def conv_as_matmul(x, kernel, strides, pads, precision=None):
  """Ungrouped NHWC/HWIO conv as (image patches) x (kernel matrix); for tiny images only (the
  patches are kernel-area times the input)."""
  kh, kw, c, o = kernel.shape
  patches = jnp.stack(_taps(x, (kh, kw), strides, pads), axis=3)  # n, out_h, out_w, taps, c
  return jnp.einsum("nhwtc,tco->nhwo", patches, kernel.reshape(kh * kw, c, o), precision=precision)


def depthwise_conv_as_taps(x, kernel, strides, pads):
  """Depthwise NHWC conv (kernel [kh, kw, 1, c * multiplier]) as a sum of shifted images times
  per-channel weights: one fused elementwise loop, where XLA:CPU's grouped conv is 10-40x slower."""
  kh, kw, _, o = kernel.shape
  multiplier = o // x.shape[-1]
  if multiplier > 1:  # Output channel k reads input channel k // multiplier.
    x = jnp.repeat(x, multiplier, axis=-1)
  weights = kernel.reshape(kh * kw, o)
  return functools.reduce(
    jnp.add, [tap * weights[t] for t, tap in enumerate(_taps(x, (kh, kw), strides, pads))]
  )


def _xla_kernel_grad(x, dy, kernel_shape, pads, precision):
  zeros = jnp.zeros(kernel_shape, x.dtype)
  return jax.vjp(lambda kernel: _conv(x, kernel, pads, precision), zeros)[1](dy)[0]


def _swapped_kernel_grad(x, dy, kernel_shape, pads, precision):
  """The same gradient from the conv of `dy` mapping back onto `x`: faster for few outputs."""
  kh, kw, c, o = kernel_shape
  swapped_pads = tuple((hi, lo) for lo, hi in pads)
  g = _xla_kernel_grad(dy, x, (kh, kw, o, c), swapped_pads, precision)
  return jnp.flip(g, (0, 1)).transpose(0, 1, 3, 2)


def _batch_shards(x) -> int:
  """How many devices the batch of `x` is split over: all of them when it divides evenly (as
  sr_jax.sharding splits batches), 1 when it is explicitly sharded (that layout is left to XLA)."""
  sharding = getattr(jax.typeof(x), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if spec and spec[0] is not None:
    return 0
  shards = jax.device_count()
  return shards if x.shape[0] % shards == 0 else 1


def _kernel_grad_by_image(x, dy, kernel_shape, pads, precision):
  """Sum of kernel gradients over pieces of the batch that hold one image (or a few) per device:
  many small XLA:CPU convs beat one big one. Pieces take the same position from every device's
  block of the batch, so a data-parallel step stays local to each device."""
  grad = _swapped_kernel_grad if kernel_shape[3] < min(16, kernel_shape[2]) else _xla_kernel_grad
  shards = _batch_shards(x)
  if not shards:
    return _xla_kernel_grad(x, dy, kernel_shape, pads, precision)
  per_shard = x.shape[0] // shards
  chunk = -(-per_shard // _MAX_KERNEL_GRAD_CHUNKS)

  def piece(a, start):
    a = a.reshape(shards, per_shard, *a.shape[1:])[:, start : start + chunk]
    return a.reshape(-1, *a.shape[2:])

  parts = [
    grad(piece(x, i), piece(dy, i), kernel_shape, pads, precision)
    for i in range(0, per_shard, chunk)
  ]
  return functools.reduce(jnp.add, parts)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_fast_kernel_grad(x, kernel, pads, precision):
  return _conv(x, kernel, pads, precision)


def _conv_fwd(x, kernel, pads, precision):
  return _conv(x, kernel, pads, precision), (x, kernel)


def _conv_bwd(pads, precision, residuals, dy):
  x, kernel = residuals
  dx = jax.vjp(lambda x: _conv(x, kernel, pads, precision), x)[1](dy)[0]
  grad_args = (kernel.shape, pads, precision)
  dkernel = _per_platform(
    "kernel_grad_by_image",
    lambda x, dy: _kernel_grad_by_image(x, dy, *grad_args),
    lambda x, dy: _xla_kernel_grad(x, dy, *grad_args),
    x,
    dy,
  )
  return dx, dkernel


_conv_fast_kernel_grad.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  batch_group_count=1,
  precision=None,
  preferred_element_type=None,
  **kwargs,
):
  """`lax.conv_general_dilated`, fast on CPU too (see above), for
  `nnx.Conv(conv_general_dilated=...)`.

  Undilated NHWC/HWIO convs: depthwise ones become a sum of shifted images, ungrouped ones on tiny
  images become patches x matrix, stride-1 ungrouped ones that keep the image size (e.g. 3x3
  "SAME") get the image-by-image kernel gradient on CPU; any other conv goes to
  `lax.conv_general_dilated` unchanged.
  """

  def xla_conv(lhs, rhs):
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
      batch_group_count,
      precision,
      preferred_element_type,
      **kwargs,
    )

  if not any(REWRITE_PLATFORMS.values()):
    return xla_conv(lhs, rhs)
  undilated = lhs_dilation in (None, (1, 1)) and rhs_dilation in (None, (1, 1))
  plain = (
    lhs.ndim == 4
    and undilated
    and batch_group_count == 1
    and preferred_element_type is None
    and kwargs.get("out_sharding") is None
    and lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    == lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  )
  if not plain:
    return xla_conv(lhs, rhs)
  strides = tuple(window_strides)
  kernel_hw, image_hw = rhs.shape[:2], lhs.shape[1:3]
  pads = _explicit_pads(padding, kernel_hw, image_hw, strides)
  if feature_group_count == lhs.shape[-1] and feature_group_count > 1:
    return _per_platform(
      "depthwise_as_taps",
      lambda x, k: depthwise_conv_as_taps(x, k, strides, pads),
      xla_conv,
      lhs,
      rhs,
    )
  if feature_group_count != 1:
    return xla_conv(lhs, rhs)
  out_hw = [
    (size + lo + hi - k) // s + 1
    for size, (lo, hi), k, s in zip(image_hw, pads, kernel_hw, strides)
  ]
  if out_hw[0] * out_hw[1] <= _TINY_OUTPUT_PIXELS:
    return _per_platform(
      "tiny_as_matmul",
      lambda x, k: conv_as_matmul(x, k, strides, pads, precision),
      xla_conv,
      lhs,
      rhs,
    )
  same_size = all(lo + hi == k - 1 for (lo, hi), k in zip(pads, kernel_hw))
  large = image_hw[0] * image_hw[1] >= _MIN_PIXELS_FOR_KERNEL_GRAD_BY_IMAGE
  if strides == (1, 1) and same_size and large and tuple(kernel_hw) != (1, 1):
    return _conv_fast_kernel_grad(lhs, rhs, pads, precision)  # Chooses the CPU gradient itself.
  return xla_conv(lhs, rhs)


def Conv(in_features: int, out_features: int, kernel_size, **kwargs) -> nnx.Conv:
  """`nnx.Conv` convolving with `conv_general_dilated` above (fast on CPU, XLA's elsewhere)."""
  return nnx.Conv(
    in_features, out_features, kernel_size, conv_general_dilated=conv_general_dilated, **kwargs
  )
