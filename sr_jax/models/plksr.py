"""PLKSR and RealPLKSR (Partial Large Kernel CNNs for efficient SR), as spandrel's.

Attribute names follow the official PyTorch modules (`feats.N.channe_mixer.0` (sic),
`feats.N.lk.conv`, `feats.N.attn.f.0`, `to_img.offset`, ...), so official state dicts map key by
key with `PORT_RULES`. Parameter-free entries of the reference's `nn.Sequential`s (activations,
Dropout2d, Sigmoid) are kept as placeholders so the indices line up.
"""

import functools
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax.conv import Conv
from sr_jax.models import architecture
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import ChannelLayerNorm, pixel_shuffle
from sr_jax.weights.porting import PortRules

# DySample's `init_pos` is a constant buffer the module recomputes.
PORT_RULES = PortRules(drop=("to_img.init_pos",))


def conv(in_features, out_features, kernel_size, rngs, dilation=1, use_bias=True) -> nnx.Module:
  """torch's `nn.Conv2d(..., padding=k // 2 * dilation, dilation=dilation)` (any kernel shape)."""
  kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
  padding = ((kh // 2 * dilation,) * 2, (kw // 2 * dilation,) * 2)
  return Conv(
    in_features,
    out_features,
    (kh, kw),
    padding=padding,
    kernel_dilation=dilation,
    use_bias=use_bias,
    rngs=rngs,
  )


class Activation(nnx.Module):
  """A parameter-free layer of a reference `nn.Sequential` (GELU, Mish, Sigmoid, Dropout...)."""

  def __init__(self, kind: str):
    self.kind = kind

  def __call__(self, x):
    if self.kind == "gelu":
      return jax.nn.gelu(x, approximate=False)
    if self.kind == "mish":
      return x * jnp.tanh(jax.nn.softplus(x))
    if self.kind == "sigmoid":
      return jax.nn.sigmoid(x)
    return x  # dropout: a no-op at inference (and in fine-tuning here)


def sequential(layers, x):
  for layer in layers:
    x = layer(x)
  return x


class GroupNorm(nnx.Module):
  """torch's `nn.GroupNorm(groups, channels)` (eps 1e-5, biased variance) on NHWC."""

  def __init__(self, groups: int, channels: int, eps: float = 1e-5):
    self.groups = groups
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

  def __call__(self, x):
    n, h, w, c = x.shape
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # statistics in float32 under bf16
    g = x.reshape(n, h, w, self.groups, c // self.groups)
    mean = g.mean((1, 2, 4), keepdims=True)
    var = jnp.square(g - mean).mean((1, 2, 4), keepdims=True)
    g = (g - mean) / jnp.sqrt(var + self.eps)
    return g.reshape(n, h, w, c) * self.scale[...] + self.bias[...]


class PLKConv2d(nnx.Module):
  """Partial large kernel conv: a `kernel_size` conv on the first `dim` channels only."""

  def __init__(self, dim: int, kernel_size: int, with_idt: bool, rngs: nnx.Rngs):
    self.with_idt = with_idt
    self.conv = conv(dim, dim, kernel_size, rngs)
    self.idx = dim

  def __call__(self, x):
    x1, x2 = x[..., : self.idx], x[..., self.idx :]
    out = self.conv(x1) + x1 if self.with_idt else self.conv(x1)
    return jnp.concatenate([out, x2], -1)


class SparsePLKConv2d(nnx.Module):
  """Dilated convs (and optionally a `max_kernel_size` one) summed, on the first `dim` channels."""

  def __init__(
    self,
    dim: int,
    max_kernel_size: int,
    sub_kernel_sizes: Sequence[int],
    dilations: Sequence[int],
    use_max_kernel: bool,
    with_idt: bool,
    rngs: nnx.Rngs,
  ):
    self.with_idt = with_idt
    self.idx = dim
    max_kernel_size = max(
      [max_kernel_size] + [(k - 1) * d + 1 for k, d in zip(sub_kernel_sizes, dilations)]
    )
    convs = [conv(dim, dim, k, rngs, dilation=d) for k, d in zip(sub_kernel_sizes, dilations)]
    if use_max_kernel:
      convs.append(conv(dim, dim, max_kernel_size, rngs))
    self.convs = nnx.List(convs)

  def __call__(self, x):
    x1, x2 = x[..., : self.idx], x[..., self.idx :]
    out = x1 if self.with_idt else 0.0
    for layer in self.convs:
      out = out + layer(x1)
    return jnp.concatenate([out, x2], -1)


class RectSparsePLKConv2d(nnx.Module):
  """Rectangular (m x m//3, m//3 x m, m//3 x m//3) convs summed, on the first `dim` channels."""

  def __init__(self, dim: int, kernel_size: int, rngs: nnx.Rngs):
    self.idx = dim
    m, n = kernel_size, kernel_size // 3
    self.mn_conv = conv(dim, dim, (m, n), rngs)
    self.nm_conv = conv(dim, dim, (n, m), rngs)
    self.nn_conv = conv(dim, dim, (n, n), rngs)

  def __call__(self, x):
    x1, x2 = x[..., : self.idx], x[..., self.idx :]
    out = self.mn_conv(x1) + self.nm_conv(x1) + self.nn_conv(x1)
    return jnp.concatenate([out, x2], -1)


class EA(nnx.Module):
  """Element-wise attention: x * sigmoid(conv3x3(x))."""

  def __init__(self, dim: int, rngs: nnx.Rngs):
    self.f = nnx.List([conv(dim, dim, 3, rngs), Activation("sigmoid")])

  def __call__(self, x):
    return x * sequential(self.f, x)


# Kernel sizes of the channel mixer's two convs, per `ccm_type`.
_MIXERS = {"CCM": (3, 1), "ICCM": (1, 3), "DCCM": (3, 3)}


class PLKBlock(nnx.Module):
  def __init__(
    self,
    dim: int,
    ccm_type: str,
    max_kernel_size: int,
    split_ratio: float,
    lk_type: str,
    use_max_kernel: bool,
    sparse_kernels: Sequence[int],
    sparse_dilations: Sequence[int],
    with_idt: bool,
    use_ea: bool,
    rngs: nnx.Rngs,
  ):
    if ccm_type not in _MIXERS:
      raise ValueError(f"PLKSR ccm_type={ccm_type!r} is unknown; known: {sorted(_MIXERS)}")
    k1, k2 = _MIXERS[ccm_type]
    self.channe_mixer = nnx.List(
      [conv(dim, dim * 2, k1, rngs), Activation("gelu"), conv(dim * 2, dim, k2, rngs)]
    )
    pdim = int(dim * split_ratio)
    if lk_type == "PLK":
      self.lk = PLKConv2d(pdim, max_kernel_size, with_idt, rngs)
    elif lk_type == "SparsePLK":
      self.lk = SparsePLKConv2d(
        pdim, max_kernel_size, sparse_kernels, sparse_dilations, use_max_kernel, with_idt, rngs
      )
    elif lk_type == "RectSparsePLK":
      self.lk = RectSparsePLKConv2d(pdim, max_kernel_size, rngs)
    else:
      raise ValueError(
        f"PLKSR lk_type={lk_type!r} is unknown; known: PLK, SparsePLK, RectSparsePLK"
      )
    self.attn = EA(dim, rngs) if use_ea else None
    self.refine = conv(dim, dim, 1, rngs)

  def __call__(self, x):
    out = self.lk(sequential(self.channe_mixer, x))
    if self.attn is not None:
      out = self.attn(out)
    return self.refine(out) + x


class PLKSR(nnx.Module):
  """spandrel's PLKSR: conv, `n_blocks` PLK blocks, conv to 3 * scale**2, plus the input
  repeated scale**2 times per channel, pixel shuffle (so the body learns a residual over nearest).

  Args (the reference's; `scale` is its `upscaling_factor`): dim, n_blocks, ccm_type ("CCM",
  "ICCM", "DCCM"), kernel_size, split_ratio (fraction of channels the large kernel sees),
  lk_type ("PLK", "SparsePLK", "RectSparsePLK"), use_max_kernel, sparse_kernels,
  sparse_dilations, with_idt (SparsePLK options), use_ea (element-wise attention).
  """

  port_rules = PORT_RULES

  def __init__(
    self,
    scale: int = 4,
    dim: int = 64,
    n_blocks: int = 28,
    ccm_type: str = "CCM",
    kernel_size: int = 17,
    split_ratio: float = 0.25,
    lk_type: str = "PLK",
    use_max_kernel: bool = False,
    sparse_kernels: Sequence[int] = (5, 5, 5, 5),
    sparse_dilations: Sequence[int] = (1, 2, 3, 4),
    with_idt: bool = False,
    use_ea: bool = True,
    *,
    rngs: nnx.Rngs,
  ):
    self.scale = scale
    self.dim = dim
    self.n_blocks = n_blocks
    self.ccm_type = ccm_type
    self.kernel_size = kernel_size
    self.split_ratio = split_ratio
    self.lk_type = lk_type
    self.use_max_kernel = use_max_kernel
    self.sparse_kernels = tuple(sparse_kernels)
    self.sparse_dilations = tuple(sparse_dilations)
    self.with_idt = with_idt
    self.use_ea = use_ea
    blocks = [
      PLKBlock(
        dim,
        ccm_type,
        kernel_size,
        split_ratio,
        lk_type,
        use_max_kernel,
        self.sparse_kernels,
        self.sparse_dilations,
        with_idt,
        use_ea,
        rngs,
      )
      for _ in range(n_blocks)
    ]
    self.feats = nnx.List([conv(3, dim, 3, rngs), *blocks, conv(dim, 3 * scale**2, 3, rngs)])

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    x = sequential(self.feats, lr) + jnp.repeat(lr, self.scale**2, axis=-1)
    return pixel_shuffle(x, self.scale)


# --- RealPLKSR ---------------------------------------------------------------------------------


class RealPLKBlock(nnx.Module):
  def __init__(
    self,
    dim: int,
    kernel_size: int,
    split_ratio: float,
    use_ea: bool,
    norm_groups: int,
    use_layer_norm: bool,
    rngs: nnx.Rngs,
  ):
    self.layer_norm = ChannelLayerNorm(dim) if use_layer_norm else None
    self.channel_mixer = nnx.List(
      [conv(dim, dim * 2, 3, rngs), Activation("mish"), conv(dim * 2, dim, 3, rngs)]
    )
    self.lk = PLKConv2d(int(dim * split_ratio), kernel_size, False, rngs)
    self.attn = EA(dim, rngs) if use_ea else None
    self.refine = conv(dim, dim, 1, rngs)
    self.norm = None if use_layer_norm else GroupNorm(norm_groups, dim)

  def __call__(self, x):
    out = x if self.layer_norm is None else self.layer_norm(x)
    out = self.lk(sequential(self.channel_mixer, out))
    if self.attn is not None:
      out = self.attn(out)
    out = self.refine(out)
    if self.norm is not None:
      out = self.norm(out)
    return out + x


@functools.lru_cache(maxsize=16)
def _dysample_init_pos(scale: int, groups: int) -> np.ndarray:
  """DySample's `init_pos` buffer, [2 * groups * scale**2] (x offsets, then y offsets)."""
  h = np.arange((-scale + 1) / 2, (scale - 1) / 2 + 1, dtype=np.float32) / np.float32(scale)
  grid = np.stack(np.meshgrid(h, h, indexing="ij")).transpose(0, 2, 1)
  return np.tile(grid, (1, groups, 1)).reshape(-1).astype(np.float32)


class DySample(nnx.Module):
  """DySample upsampler (spandrel's): learned sub-pixel offsets around each LR pixel, then
  bilinear sampling (`grid_sample`, border padding, align_corners=False) per channel group."""

  def __init__(
    self, in_channels: int, out_ch: int, scale: int, groups: int, end_convolution: bool, rngs
  ):
    if in_channels < groups or in_channels % groups:
      raise ValueError(f"DySample: in_channels={in_channels} not a multiple of groups={groups}")
    self.factor = scale
    self.groups = groups
    self.end_conv = conv(in_channels, out_ch, 1, rngs) if end_convolution else None
    self.offset = conv(in_channels, 2 * groups * scale**2, 1, rngs)
    self.scope = conv(in_channels, 2 * groups * scale**2, 1, rngs, use_bias=False)

  def __call__(self, x):
    b, h, w, c = x.shape
    s, g = self.factor, self.groups
    offset = self.offset(x) * jax.nn.sigmoid(self.scope(x)) * 0.5
    offset = offset + jnp.asarray(_dysample_init_pos(s, g))
    # Channels (xy, group * s * s) -> sampling positions in torch's normalised [-1, 1] coordinates.
    offset = offset.reshape(b, h, w, 2, g * s * s)
    base = jnp.stack(
      jnp.meshgrid(jnp.arange(w, dtype=x.dtype) + 0.5, jnp.arange(h, dtype=x.dtype) + 0.5),
      axis=-1,
    )  # [h, w, 2]: (x, y)
    size = jnp.asarray([w, h], x.dtype)
    coords = 2 * (base[:, :, :, None] + offset) / size[:, None] - 1  # [b, h, w, 2, g*s*s]
    coords = pixel_shuffle(coords.reshape(b, h, w, 2 * g * s * s), s)  # [b, sh, sw, 2 * g]
    coords = coords.reshape(b, s * h, s * w, 2, g)
    # grid_sample's unnormalisation (align_corners=False), clipped to the border.
    px = jnp.clip(((coords[:, :, :, 0] + 1) * w - 1) / 2, 0, w - 1)  # [b, sh, sw, g]
    py = jnp.clip(((coords[:, :, :, 1] + 1) * h - 1) / 2, 0, h - 1)
    x0, y0 = jnp.floor(px), jnp.floor(py)
    wx, wy = px - x0, py - y0
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
    groups = x.reshape(b, h * w, g, c // g).transpose(0, 2, 1, 3)  # [b, g, hw, c/g]

    def tap(yi, xi):
      index = (yi * w + xi).transpose(0, 3, 1, 2).reshape(b, g, -1, 1)
      return jnp.take_along_axis(groups, index, axis=2).reshape(b, g, s * h, s * w, c // g)

    def weight(v):
      return v.transpose(0, 3, 1, 2)[..., None]

    out = (
      tap(y0, x0) * weight((1 - wx) * (1 - wy))
      + tap(y0, x1) * weight(wx * (1 - wy))
      + tap(y1, x0) * weight((1 - wx) * wy)
      + tap(y1, x1) * weight(wx * wy)
    )
    out = out.transpose(0, 2, 3, 1, 4).reshape(b, s * h, s * w, c)
    return out if self.end_conv is None else self.end_conv(out)


class PixelShuffle(nnx.Module):
  def __init__(self, scale: int):
    self.factor = scale

  def __call__(self, x):
    return pixel_shuffle(x, self.factor)


class RealPLKSR(nnx.Module):
  """spandrel's RealPLKSR: PLKSR with a DCCM Mish mixer, GroupNorm (or a LayerNorm in front),
  Dropout2d before the last conv (a no-op here), and a pixel-shuffle or DySample upsampler.

  Args (the reference's; `scale` is its `upscaling_factor`): dim, n_blocks, kernel_size,
  split_ratio, use_ea, norm_groups (not in state dicts), dropout (ignored: inference),
  dysample, layer_norm.
  """

  port_rules = PORT_RULES

  def __init__(
    self,
    scale: int = 4,
    dim: int = 64,
    n_blocks: int = 28,
    kernel_size: int = 17,
    split_ratio: float = 0.25,
    use_ea: bool = True,
    norm_groups: int = 4,
    dropout: float = 0.0,
    dysample: bool = False,
    layer_norm: bool = False,
    *,
    rngs: nnx.Rngs,
  ):
    self.scale = scale
    self.dim = dim
    self.n_blocks = n_blocks
    self.kernel_size = kernel_size
    self.split_ratio = split_ratio
    self.use_ea = use_ea
    self.norm_groups = norm_groups
    self.dysample = dysample
    self.layer_norm = layer_norm
    blocks = [
      RealPLKBlock(dim, kernel_size, split_ratio, use_ea, norm_groups, layer_norm, rngs)
      for _ in range(n_blocks)
    ]
    self.feats = nnx.List(
      [conv(3, dim, 3, rngs), *blocks, Activation("dropout"), conv(dim, 3 * scale**2, 3, rngs)]
    )
    if dysample:
      groups = 3 if scale % 2 else 4
      self.to_img = DySample(3 * scale**2, 3, scale, groups, scale != 1, rngs)
    else:
      self.to_img = PixelShuffle(scale)

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    x = sequential(self.feats, lr) + jnp.repeat(lr, self.scale**2, axis=-1)
    return self.to_img(x)


# --- detection from PyTorch state dicts (spandrel's PLKSR detection, split in two) ------------


def _common(state: StateDict) -> tuple[int, int, int]:
  """(dim, len(feats), scale) of a (Real)PLKSR state dict."""
  dim = architecture.shape(state, "feats.0.weight")[0]
  total = architecture.count(state, r"feats\.(\d+)\..+")
  out_channels = architecture.shape(state, f"feats.{total - 1}.weight")[0]
  scale = int(np.sqrt(out_channels // 3))
  if 3 * scale**2 != out_channels:
    raise ValueError(f"feats.{total - 1}.weight has {out_channels} outputs, not 3 * scale**2")
  return dim, total, scale


def _check_blocks(state: StateDict, n_blocks: int) -> None:
  for i in range(1, n_blocks + 1):
    architecture.shape(state, f"feats.{i}.refine.weight")


def detect_plksr(state: StateDict) -> dict:
  dim, total, scale = _common(state)
  n_blocks = total - 2
  _check_blocks(state, n_blocks)
  k1 = architecture.shape(state, "feats.1.channe_mixer.0.weight")[2]
  k2 = architecture.shape(state, "feats.1.channe_mixer.2.weight")[2]
  ccm_type = {kernels: name for name, kernels in _MIXERS.items()}.get((k1, k2))
  if ccm_type is None:
    raise ValueError(f"feats.1.channe_mixer: kernel sizes {k1}, {k2} are no known CCM type")
  kernel_size = 17  # SparsePLK's cannot be read from its convs (spandrel keeps the default)
  if "feats.1.lk.conv.weight" in state:
    lk_type, key = "PLK", "feats.1.lk.conv.weight"
    kernel_size = architecture.shape(state, key)[2]
  elif "feats.1.lk.convs.0.weight" in state:
    lk_type, key = "SparsePLK", "feats.1.lk.convs.0.weight"
  elif "feats.1.lk.mn_conv.weight" in state:
    lk_type, key = "RectSparsePLK", "feats.1.lk.mn_conv.weight"
    kernel_size = architecture.shape(state, key)[2]
  else:
    raise ValueError("no feats.1.lk.conv / convs.0 / mn_conv weight: unknown large-kernel type")
  return dict(
    scale=scale,
    dim=dim,
    n_blocks=n_blocks,
    ccm_type=ccm_type,
    kernel_size=kernel_size,
    split_ratio=architecture.shape(state, key)[0] / dim,
    lk_type=lk_type,
    # Not detectable; spandrel's defaults.
    use_max_kernel=False,
    sparse_kernels=(5, 5, 5, 5),
    sparse_dilations=(1, 2, 3, 4),
    with_idt=False,
    use_ea="feats.1.attn.f.0.weight" in state,
  )


def detect_realplksr(state: StateDict) -> dict:
  dim, total, scale = _common(state)
  n_blocks = total - 3
  _check_blocks(state, n_blocks)
  lk = architecture.shape(state, "feats.1.lk.conv.weight")
  return dict(
    scale=scale,
    dim=dim,
    n_blocks=n_blocks,
    kernel_size=lk[2],
    split_ratio=lk[0] / dim,
    use_ea="feats.1.attn.f.0.weight" in state,
    norm_groups=4,  # not in state dicts
    dysample="to_img.init_pos" in state,
    layer_norm="feats.1.layer_norm.bias" in state,
  )


PLKSR_ARCH = architecture.Architecture(
  name="plksr",
  module=PLKSR,
  signature=("feats.0.weight", "feats.1.refine.weight", "feats.1.channe_mixer.0.weight"),
  detect=detect_plksr,
  config_keys=(
    "dim",
    "n_blocks",
    "ccm_type",
    "kernel_size",
    "split_ratio",
    "lk_type",
    "use_max_kernel",
    "sparse_kernels",
    "sparse_dilations",
    "with_idt",
    "use_ea",
  ),
)
REALPLKSR_ARCH = architecture.Architecture(
  name="realplksr",
  module=RealPLKSR,
  signature=("feats.0.weight", "feats.1.refine.weight", "feats.1.channel_mixer.0.weight"),
  detect=detect_realplksr,
  config_keys=(
    "dim",
    "n_blocks",
    "kernel_size",
    "split_ratio",
    "use_ea",
    "norm_groups",
    "dysample",
    "layer_norm",
  ),
)
