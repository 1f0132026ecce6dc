"""Layers shared by the SR networks: pixel (un)shuffle (convolutions: sr_jax.conv)."""

import jax.numpy as jnp


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
