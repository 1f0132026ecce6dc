"""SAFMN (Spatially-Adaptive Feature Modulation Network, ICCV 2023), as spandrel's `SAFMN`.

Attribute names follow the official PyTorch modules (`to_feat`, `feats.N.safm.mfr.M`,
`feats.N.ccm.ccm.0`, `to_img.0`), so official state dicts map key by key with the generic rules
(the only 1-D weights are LayerNorm scales). Parameter-free entries of the reference's
`nn.Sequential`s (GELU, PixelShuffle) are kept as placeholders so the indices line up.
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax.conv import Conv
from sr_jax.models import architecture
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import ChannelLayerNorm, pixel_shuffle
from sr_jax.weights.porting import PortRules

PORT_RULES = PortRules()


def gelu(x):
  return jax.nn.gelu(x, approximate=False)  # torch's nn.GELU() default


class GELU(nnx.Module):
  def __call__(self, x):
    return gelu(x)


@functools.lru_cache(maxsize=256)
def _adaptive_bins(size: int, out: int) -> np.ndarray:
  """[out, k] input indices of `F.adaptive_max_pool2d`'s bins along one axis: bin i is
  [floor(i * size / out), ceil((i + 1) * size / out)), padded with its last index (max is
  unchanged by a repeat)."""
  starts = [(i * size) // out for i in range(out)]
  ends = [-((-(i + 1) * size) // out) for i in range(out)]
  k = max(e - s for s, e in zip(starts, ends))
  return np.array([[min(s + j, e - 1) for j in range(k)] for s, e in zip(starts, ends)])


def adaptive_max_pool(x: jnp.ndarray, out_h: int, out_w: int) -> jnp.ndarray:
  """NHWC `F.adaptive_max_pool2d(x, (out_h, out_w))`, any sizes (separable: rows, then columns)."""
  _, h, w, _ = x.shape
  x = jnp.take(x, jnp.asarray(_adaptive_bins(h, out_h)), axis=1).max(axis=2)
  return jnp.take(x, jnp.asarray(_adaptive_bins(w, out_w)), axis=2).max(axis=3)


@functools.lru_cache(maxsize=256)
def _nearest_indices(size: int, out: int) -> np.ndarray:
  """Source indices of `F.interpolate(mode="nearest", size=...)`: torch's float32
  `floor(dst * (size / out))`, with its exact cases (same size, twice the size)."""
  if out == size:
    return np.arange(out)
  if out == 2 * size:
    return np.arange(out) >> 1
  ratio = np.float32(size) / np.float32(out)
  src = np.floor(np.arange(out, dtype=np.float32) * ratio).astype(np.int64)
  return np.minimum(src, size - 1)


def resize_nearest(x: jnp.ndarray, out_h: int, out_w: int) -> jnp.ndarray:
  """NHWC `F.interpolate(x, size=(out_h, out_w), mode="nearest")`."""
  _, h, w, _ = x.shape
  x = jnp.take(x, jnp.asarray(_nearest_indices(h, out_h)), axis=1)
  return jnp.take(x, jnp.asarray(_nearest_indices(w, out_w)), axis=2)


class SAFM(nnx.Module):
  """Spatially-adaptive feature modulation: four channel chunks, chunk i max-pooled by 2**i,
  depthwise-convolved and upsampled back; a 1x1 aggregation, GELU, times the input."""

  def __init__(self, dim: int, rngs: nnx.Rngs, n_levels: int = 4):
    self.n_levels = n_levels
    chunk = dim // n_levels
    self.mfr = nnx.List(
      [
        Conv(chunk, chunk, (3, 3), padding="SAME", feature_group_count=chunk, rngs=rngs)
        for _ in range(n_levels)
      ]
    )
    self.aggr = Conv(dim, dim, (1, 1), padding="VALID", rngs=rngs)

  def __call__(self, x):
    _, h, w, _ = x.shape
    chunks = jnp.split(x, self.n_levels, axis=-1)
    out = []
    for i, (chunk, conv) in enumerate(zip(chunks, self.mfr)):
      if i > 0:
        s = adaptive_max_pool(chunk, h // 2**i, w // 2**i)
        out.append(resize_nearest(conv(s), h, w))
      else:
        out.append(conv(chunk))
    return gelu(self.aggr(jnp.concatenate(out, -1))) * x


class CCM(nnx.Module):
  """Convolutional channel mixer: 3x3 conv to `hidden_dim`, GELU, 1x1 conv back."""

  def __init__(self, dim: int, hidden_dim: int, rngs: nnx.Rngs):
    self.ccm = nnx.List(
      [
        Conv(dim, hidden_dim, (3, 3), padding="SAME", rngs=rngs),
        GELU(),
        Conv(hidden_dim, dim, (1, 1), padding="VALID", rngs=rngs),
      ]
    )

  def __call__(self, x):
    for layer in self.ccm:
      x = layer(x)
    return x


class AttBlock(nnx.Module):
  def __init__(self, dim: int, hidden_dim: int, rngs: nnx.Rngs):
    self.norm1 = ChannelLayerNorm(dim)
    self.norm2 = ChannelLayerNorm(dim)
    self.safm = SAFM(dim, rngs)
    self.ccm = CCM(dim, hidden_dim, rngs)

  def __call__(self, x):
    x = self.safm(self.norm1(x)) + x
    return self.ccm(self.norm2(x)) + x


class PixelShuffle(nnx.Module):
  def __init__(self, scale: int):
    self.factor = scale

  def __call__(self, x):
    return pixel_shuffle(x, self.factor)


class SAFMN(nnx.Module):
  """spandrel's SAFMN: conv, `n_blocks` attention blocks (+ a long skip), conv + pixel shuffle.

  Args:
    scale: the upscaling factor (the reference's `upscaling_factor`).
    dim: width of the body (a multiple of 4: SAFM splits it in four).
    n_blocks: attention blocks.
    ffn_scale: the channel mixer's hidden width is `int(dim * ffn_scale)`.

  No padding, as the reference: LR sides must be at least 8 (SAFM pools by 8).
  """

  port_rules = PORT_RULES

  def __init__(
    self,
    scale: int = 4,
    dim: int = 36,
    n_blocks: int = 8,
    ffn_scale: float = 2.0,
    *,
    rngs: nnx.Rngs,
  ):
    if dim % 4:
      raise ValueError(f"SAFMN dim={dim} must be a multiple of 4 (SAFM's four chunks)")
    self.scale = scale
    self.dim = dim
    self.n_blocks = n_blocks
    self.ffn_scale = ffn_scale
    hidden_dim = int(dim * ffn_scale)
    self.to_feat = Conv(3, dim, (3, 3), padding="SAME", rngs=rngs)
    self.feats = nnx.List([AttBlock(dim, hidden_dim, rngs) for _ in range(n_blocks)])
    self.to_img = nnx.List(
      [Conv(dim, 3 * scale**2, (3, 3), padding="SAME", rngs=rngs), PixelShuffle(scale)]
    )

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    _, h, w, _ = lr.shape
    if min(h, w) < 8:
      raise ValueError(f"SAFMN: LR size {h}x{w}; each side must be at least 8")
    x = self.to_feat(lr)
    feat = x
    for block in self.feats:
      feat = block(feat)
    x = feat + x
    for layer in self.to_img:
      x = layer(x)
    return x.astype(lr.dtype)


def detect_safmn(state: StateDict) -> dict:
  """As spandrel: dim from `to_feat`, blocks counted, ffn_scale from the mixer's hidden width,
  scale from `to_img.0` (3 * scale**2 outputs)."""
  dim = architecture.shape(state, "to_feat.weight")[0]
  n_blocks = architecture.count(state, r"feats\.(\d+)\..+")
  hidden_dim = architecture.shape(state, "feats.0.ccm.ccm.0.weight")[0]
  for i in range(n_blocks):
    architecture.shape(state, f"feats.{i}.ccm.ccm.2.weight")
  out_channels = architecture.shape(state, "to_img.0.weight")[0]
  scale = int(np.sqrt(out_channels / 3))
  if 3 * scale**2 != out_channels:
    raise ValueError(f"to_img.0.weight has {out_channels} outputs, not 3 * scale**2")
  return dict(scale=scale, dim=dim, n_blocks=n_blocks, ffn_scale=hidden_dim / dim)


SAFMN_ARCH = architecture.Architecture(
  name="safmn",
  module=SAFMN,
  signature=("to_feat.weight", "feats.0.safm.mfr.0.weight", "feats.0.ccm.ccm.0.weight"),
  detect=detect_safmn,
  config_keys=("dim", "n_blocks", "ffn_scale"),
)
