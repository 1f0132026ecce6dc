"""Layers shared by the SR networks: 3x3 conv, pixel (un)shuffle, bicubic upscaling in JAX."""

from flax import nnx
import jax
import jax.numpy as jnp

from sr_jax.conv import Conv


def conv3x3(in_features: int, out_features: int, rngs: nnx.Rngs, **kwargs) -> Conv:
  """A 3x3 "SAME" convolution (`sr_jax.conv.Conv`); `kwargs` go to it (kernel_init, use_bias)."""
  return Conv(in_features, out_features, (3, 3), padding="SAME", rngs=rngs, **kwargs)


def resize_bicubic(lr: jnp.ndarray, scale: int) -> jnp.ndarray:
  """NHWC bicubic upscaling by `scale` in JAX (`jax.image.resize`, no antialiasing).

  The differentiable, jit-able residual path of the networks; the MATLAB-compatible numpy
  resize used for data and evaluation is `sr_jax.data.imresize`.
  """
  n, h, w, c = lr.shape
  return jax.image.resize(lr, (n, h * scale, w * scale, c), method="bicubic")


def pixel_shuffle(x: jnp.ndarray, scale: int) -> jnp.ndarray:
  """NHWC pixel shuffle with PyTorch's channel order.

  Input channel `c * scale**2 + i * scale + j` goes to output channel `c`, offset `(i, j)`,
  exactly as `torch.nn.PixelShuffle` (and ncnn) do, so ported weights need no permutation.
  """
  n, h, w, channels = x.shape
  out_channels = channels // (scale * scale)
  if out_channels * scale * scale != channels:
    raise ValueError(
      f"pixel_shuffle: {channels} channels is not a multiple of scale**2={scale * scale}"
    )
  x = x.reshape(n, h, w, out_channels, scale, scale)
  x = x.transpose(0, 1, 4, 2, 5, 3)  # n, h, i, w, j, c
  return x.reshape(n, h * scale, w * scale, out_channels)


def pixel_unshuffle(x: jnp.ndarray, scale: int) -> jnp.ndarray:
  """Inverse of `pixel_shuffle` (PyTorch `PixelUnshuffle` channel order)."""
  n, h, w, channels = x.shape
  x = x.reshape(n, h // scale, scale, w // scale, scale, channels)
  x = x.transpose(0, 1, 3, 5, 2, 4)  # n, h, w, c, i, j
  return x.reshape(n, h // scale, w // scale, channels * scale * scale)


class ChannelLayerNorm(nnx.Module):
  """LayerNorm over the last (channel) axis of NHWC maps: the references' channels-first
  LayerNorm / `LayerNorm2d` (eps 1e-6) or torch's `nn.LayerNorm` on tokens (eps 1e-5)."""

  def __init__(self, channels: int, eps: float = 1e-6):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

  def __call__(self, x):
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # statistics in float32 under bf16
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + self.eps) * self.scale[...] + self.bias[...]
