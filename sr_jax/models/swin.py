"""Pieces shared by the Swin-transformer SR networks (SwinIR, Swin2SR), NHWC throughout.

Window partition as reshape/transpose in the reference's window order; the shifted-window mask and
the relative position index are numpy, computed at trace time from static shapes. Containers that
are `nn.Sequential` in PyTorch are `nnx.List`s whose activations are parameter-free modules, so
the official keys (`conv_after_body.0.weight`, `upsample.2.weight`, ...) map one to one.
"""

import functools
import math
import re
from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax.conv import Conv
from sr_jax.models import architecture
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import conv3x3, pixel_shuffle

# The mean DIV2K colour every SwinIR-family network subtracts (RGB inputs only).
RGB_MEAN = (0.4488, 0.4371, 0.4040)


def layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)  # torch's default epsilon


def linear(in_features: int, out_features: int, rngs: nnx.Rngs, use_bias: bool = True):
  # The reference's init: truncated normal (std 0.02) weights, zero biases.
  init = nnx.initializers.truncated_normal(stddev=0.02)
  return nnx.Linear(in_features, out_features, use_bias=use_bias, kernel_init=init, rngs=rngs)


def gelu(x: jnp.ndarray) -> jnp.ndarray:
  return jax.nn.gelu(x, approximate=False)  # torch nn.GELU()


class LeakyReLU(nnx.Module):
  """`nn.LeakyReLU(negative_slope)` as an element of an `nnx.List` (no parameters)."""

  def __init__(self, negative_slope: float = 0.01):
    self.negative_slope = negative_slope

  def __call__(self, x):
    return jax.nn.leaky_relu(x, self.negative_slope)


class PixelShuffle(nnx.Module):
  """`nn.PixelShuffle(scale)` (PyTorch channel order) as an element of an `nnx.List`."""

  def __init__(self, scale: int):
    self.scale = scale

  def __call__(self, x):
    return pixel_shuffle(x, self.scale)


def sequential(layers: nnx.List, x: jnp.ndarray) -> jnp.ndarray:
  for layer in layers:
    x = layer(x)
  return x


def conv_lrelu(in_features: int, out_features: int, rngs: nnx.Rngs) -> nnx.List:
  """`nn.Sequential(nn.Conv2d(in, out, 3, 1, 1), nn.LeakyReLU(inplace=True))` (slope 0.01)."""
  return nnx.List([conv3x3(in_features, out_features, rngs), LeakyReLU(0.01)])


def residual_conv(kind: str, dim: int, rngs: nnx.Rngs):
  """The conv closing each residual group and the body: "1conv" or the cheaper "3conv"."""
  if kind == "1conv":
    return conv3x3(dim, dim, rngs)
  if kind == "3conv":
    return nnx.List(
      [
        conv3x3(dim, dim // 4, rngs),
        LeakyReLU(0.2),
        Conv(dim // 4, dim // 4, (1, 1), padding="VALID", rngs=rngs),
        LeakyReLU(0.2),
        conv3x3(dim // 4, dim, rngs),
      ]
    )
  raise ValueError(f"resi_connection must be '1conv' or '3conv', got {kind!r}")


def apply_residual_conv(conv, x: jnp.ndarray) -> jnp.ndarray:
  return sequential(conv, x) if isinstance(conv, nnx.List) else conv(x)


def upsample(scale: int, num_feat: int, rngs: nnx.Rngs) -> nnx.List:
  """The reference's `Upsample`: (conv to 4x channels, shuffle x2) per factor 2, or one x3."""
  if scale & (scale - 1) == 0:
    layers = []
    for _ in range(int(math.log2(scale))):
      layers += [conv3x3(num_feat, 4 * num_feat, rngs), PixelShuffle(2)]
    return nnx.List(layers)
  if scale == 3:
    return nnx.List([conv3x3(num_feat, 9 * num_feat, rngs), PixelShuffle(3)])
  raise ValueError(f"scale {scale} is not supported: 2^n or 3")


def upsample_one_step(scale: int, num_feat: int, num_out_ch: int, rngs: nnx.Rngs) -> nnx.List:
  """The lightweight `UpsampleOneStep`: one conv to out * scale**2 channels and one shuffle."""
  return nnx.List([conv3x3(num_feat, scale * scale * num_out_ch, rngs), PixelShuffle(scale)])


def upsample_nearest(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """`F.interpolate(scale_factor=factor, mode="nearest")`, NHWC."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def pad_to_multiple(x: jnp.ndarray, multiple: int) -> jnp.ndarray:
  """Reflect-pads NHWC bottom/right to a multiple, as the reference's `check_image_size`."""
  _, h, w, _ = x.shape
  pad_h, pad_w = -h % multiple, -w % multiple
  if pad_h or pad_w:
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
  return x


def input_mean(in_chans: int) -> np.ndarray:
  return np.asarray(RGB_MEAN if in_chans == 3 else (0.0,), np.float32)


# --- windows ------------------------------------------------------------------------------------


def window_partition(x: jnp.ndarray, window: int) -> jnp.ndarray:
  """[B, H, W, C] -> [B, nW, window * window, C], windows in row-major order (as the reference)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // window) * (w // window), window * window, c)


def window_reverse(windows: jnp.ndarray, window: int, h: int, w: int) -> jnp.ndarray:
  """Inverse of `window_partition`."""
  b, c = windows.shape[0], windows.shape[-1]
  x = windows.reshape(b, h // window, w // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


@functools.lru_cache(maxsize=64)
def shift_mask(h: int, w: int, window: int, shift: int) -> np.ndarray:
  """[nW, N, N] additive mask (0 / -100) of shifted windows: tokens from different image
  regions that the cyclic shift brought together do not attend to each other."""
  regions = np.zeros((h, w), np.float32)
  cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
  for i, rows in enumerate(cuts):
    for j, cols in enumerate(cuts):
      regions[rows, cols] = 3 * i + j
  windows = window_partition(regions[None, :, :, None], window)[0, :, :, 0]  # numpy in, numpy out
  mask = windows[:, None, :] - windows[:, :, None]
  return np.where(mask != 0, -100.0, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=16)
def relative_position_index(window: int) -> np.ndarray:
  """[N, N] index into the (2w-1)^2 relative position table, as the reference's buffer."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
  return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def block_windows(
  depth: int, img_size: int, patch_size: int, window_size: int
) -> list[tuple[int, int]]:
  """(window, shift) of each block of a stage: every second block shifts by half a window. The
  reference stops shifting (and shrinks the window) when the training resolution
  `img_size // patch_size` is not larger than the window."""
  resolution = img_size // patch_size
  if resolution <= window_size:
    return [(resolution, 0)] * depth
  return [(window_size, 0 if i % 2 == 0 else window_size // 2) for i in range(depth)]


def shifted_window_attention(x: jnp.ndarray, attend, window: int, shift: int) -> jnp.ndarray:
  """(S)W-MSA on [B, H, W, C]: cyclic shift, windows, `attend(windows, mask)`, and back."""
  _, h, w, _ = x.shape
  if shift:
    x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
  mask = jnp.asarray(shift_mask(h, w, window, shift)) if shift else None
  x = window_reverse(attend(window_partition(x, window), mask), window, h, w)
  if shift:
    x = jnp.roll(x, (shift, shift), axis=(1, 2))
  return x


def softmax_attention(logits, v, mask):
  """logits [B, nW, nH, N, N] (+ mask [nW, N, N]) -> softmax -> [B, nW, N, nH * d], float32."""
  if mask is not None:
    logits = logits + mask[None, :, None]
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  out = jnp.einsum("bwhnm,bwmhd->bwnhd", weights, v.astype(jnp.float32))
  return out.reshape(*out.shape[:3], -1)


class BasicLayer(nnx.Module):
  """A stage of Swin blocks (`residual_group.blocks.N`)."""

  def __init__(self, blocks):
    self.blocks = nnx.List(blocks)

  def __call__(self, x):
    for block in self.blocks:
      x = block(x)
    return x


class Mlp(nnx.Module):
  def __init__(self, dim: int, hidden: int, rngs: nnx.Rngs):
    self.fc1 = linear(dim, hidden, rngs)
    self.fc2 = linear(hidden, dim, rngs)

  def __call__(self, x):
    return self.fc2(gelu(self.fc1(x)))


# --- detection helpers --------------------------------------------------------------------------


def sequence_indices(state: StateDict, prefix: str) -> list[int]:
  """Sorted N of the keys `{prefix}.N.*` (spandrel's `get_seq_len` counts max + 1)."""
  pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
  return sorted({int(m.group(1)) for key in state if (m := pattern.match(key))})


def contiguous_count(state: StateDict, prefix: str) -> int:
  """How many of `{prefix}.0..N-1`; ValueError naming the first missing one (truncated dict)."""
  found = sequence_indices(state, prefix)
  for expected, index in enumerate(found):
    if index != expected:
      raise ValueError(f"missing keys {prefix}.{expected}.* (have {prefix}.{index}.*)")
  return len(found)


def require(state: StateDict, keys) -> None:
  for key in keys:
    architecture.shape(state, key)


def pixelshuffle_params(state: StateDict, prefix: str = "upsample") -> tuple[int, int]:
  """(upscale, num_feat) of an `Upsample` chain, as spandrel's `get_pixelshuffle_params`."""
  upscale, num_feat = 1, 64
  for i in range(0, 10, 2):
    key = f"{prefix}.{i}.weight"
    if key not in state:
      break
    out_ch, num_feat = architecture.shape(state, key)[:2]
    upscale *= math.isqrt(out_ch // num_feat)
  return upscale, num_feat


def residual_conv_kind(state: StateDict, prefix: str) -> str:
  if f"{prefix}.weight" in state:
    return "1conv"
  if f"{prefix}.0.weight" in state:
    require(state, (f"{prefix}.2.weight", f"{prefix}.4.weight"))
    return "3conv"
  raise ValueError(f"missing key {prefix + '.weight'!r} (or {prefix + '.0.weight'!r})")


def detect_stages(
  state: StateDict,
  name: str,
  block_keys: Callable[[str], list[str]],
  heads_key: str,
  heads_axis: int,
  stage_keys: tuple[str, ...] = (),
) -> tuple[list[int], list[int]]:
  """(depths, num_heads) of the stages `{name}.N`, checking the keys of every block
  (`block_keys(prefix)`), each stage's residual conv and its `stage_keys`; a stage's head count is
  axis `heads_axis` of its first block's `heads_key`."""
  depths, num_heads = [], []
  for i in range(contiguous_count(state, name)):
    prefix = f"{name}.{i}.residual_group.blocks"
    depth = contiguous_count(state, prefix)
    if depth == 0:
      raise ValueError(f"missing keys {prefix}.0.*")
    for j in range(depth):
      require(state, block_keys(f"{prefix}.{j}"))
    residual_conv_kind(state, f"{name}.{i}.conv")
    require(state, [f"{name}.{i}.{key}" for key in stage_keys])
    depths.append(depth)
    num_heads.append(architecture.shape(state, f"{prefix}.0.{heads_key}")[heads_axis])
  return depths, num_heads
