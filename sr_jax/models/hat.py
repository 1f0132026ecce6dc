"""HAT, the Hybrid Attention Transformer (Chen et al., "Activating More Pixels in Image
Super-Resolution Transformer"), as spandrel's / XPixelGroup's `HAT`: HAT-S, HAT and HAT-L.

Parameter names follow the official state dicts 1:1 (`layers.N.residual_group.blocks.M.attn...`,
`...overlap_attn...`, `conv_block.cab.K...`), so `HAT.port_rules` maps a `.pth` onto the module.
The official releases use window 16, overlap 0.5, mlp_ratio 2, num_feat 64 and
  HAT-S: embed_dim 144, depths / num_heads 6 x 6, compress_ratio 24, squeeze_factor 24;
  HAT:   embed_dim 180, depths / num_heads 6 x 6, compress_ratio 3, squeeze_factor 30;
  HAT-L: embed_dim 180, depths / num_heads 12 x 6, compress_ratio 3, squeeze_factor 30;
at scales 2, 3, 4 (pixel-shuffle upsampler; scale 1 has none). `detect_hat` reads all of these
from a state dict, as spandrel does.
"""

import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax.conv import Conv
from sr_jax.models import architecture
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import conv3x3, pixel_shuffle
from sr_jax.weights.porting import PortRules, keep

__all__ = ["HAT", "HAT_ARCH", "detect_hat"]

_RGB_MEAN = (0.4488, 0.4371, 0.4040)
_LINEAR_INIT = nnx.initializers.truncated_normal(stddev=0.02)


def _gelu(x: jnp.ndarray) -> jnp.ndarray:
  return jax.nn.gelu(x, approximate=False)  # torch nn.GELU() is exact


def _layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)


def _linear(in_features: int, out_features: int, rngs: nnx.Rngs, use_bias: bool = True):
  return nnx.Linear(
    in_features, out_features, use_bias=use_bias, kernel_init=_LINEAR_INIT, rngs=rngs
  )


# --- window bookkeeping (numpy, at trace time) --------------------------------------------------


def relative_position_index_sa(window_size: int) -> np.ndarray:
  """[ws*ws, ws*ws] indices into the (2ws-1)^2 bias table (HAT.calculate_rpi_sa)."""
  coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij"))
  coords = coords.reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window_size - 1)
  return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def relative_position_index_oca(window_size: int, overlap_win_size: int) -> np.ndarray:
  """[ws*ws, ows*ows] indices into the (ws+ows-1)^2 bias table (HAT.calculate_rpi_oca)."""

  def flat_coords(size):
    return np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij")).reshape(2, -1)

  ori, ext = flat_coords(window_size), flat_coords(overlap_win_size)
  rel = (ext[:, None, :] - ori[:, :, None]).transpose(1, 2, 0)
  rel = rel + (window_size - overlap_win_size + 1)
  return rel[..., 0] * (window_size + overlap_win_size - 1) + rel[..., 1]


def shifted_window_regions(h: int, w: int, window_size: int, shift_size: int) -> np.ndarray:
  """[num_windows, ws*ws] region ids of the shifted windows (HAT.calculate_mask): pixels of one
  window attend to each other only within a region. Ids, not the [num_windows, n, n] mask, are
  the constant: the mask of a large image would weigh hundreds of MB."""
  img_mask = np.zeros((h, w), np.int8)
  spans = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
  region = 0
  for rows in spans:
    for cols in spans:
      img_mask[rows, cols] = region
      region += 1
  return window_partition(img_mask[None, :, :, None], window_size).reshape(-1, window_size**2)


def window_partition(x, window_size: int):
  """[b, h, w, c] -> [b * num_windows, ws, ws, c], windows row-major (numpy or jax)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window_size, window_size, w // window_size, window_size, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


def window_reverse(windows, window_size: int, h: int, w: int):
  """Inverse of `window_partition`: [b * num_windows, ws, ws, c] -> [b, h, w, c]."""
  c = windows.shape[-1]
  x = windows.reshape(-1, h // window_size, w // window_size, window_size, window_size, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def _attend(q, k, v, bias, regions=None):
  """Softmax attention in float32. q [B, nh, nq, d] (scaled), k/v [B, nh, n, d], bias [nh, nq, n],
  regions [num_windows, n] (q = k: shifted windows; B = batch * num_windows) -> [B, nq, nh * d]."""
  dtype = q.dtype
  q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
  attn = jnp.einsum("bhqd,bhkd->bhqk", q, k) + bias[None].astype(jnp.float32)
  if regions is not None:
    regions = jnp.asarray(regions)
    mask = jnp.where(regions[:, None, :] != regions[:, :, None], -100.0, 0.0)
    attn = attn.reshape(-1, regions.shape[0], *attn.shape[1:]) + mask[None, :, None]
    attn = attn.reshape(-1, *attn.shape[2:])
  attn = jax.nn.softmax(attn, axis=-1)
  out = jnp.einsum("bhqk,bhkd->bqhd", attn, v)
  return out.reshape(*out.shape[:2], -1).astype(dtype)


def _split_heads(x, num_heads: int):
  """[B, n, c] -> [B, heads, n, c / heads]."""
  b, n, c = x.shape
  return x.reshape(b, n, num_heads, c // num_heads).transpose(0, 2, 1, 3)


# --- blocks -------------------------------------------------------------------------------------


class Mlp(nnx.Module):
  def __init__(self, in_features: int, hidden_features: int, rngs: nnx.Rngs):
    self.fc1 = _linear(in_features, hidden_features, rngs)
    self.fc2 = _linear(hidden_features, in_features, rngs)

  def __call__(self, x):
    return self.fc2(_gelu(self.fc1(x)))


class ChannelAttention(nnx.Module):
  """RCAN's channel attention; `attention`: torch's Sequential(pool, conv, relu, conv, sigmoid)."""

  def __init__(self, num_feat: int, squeeze_factor, rngs: nnx.Rngs):
    squeezed = int(num_feat // squeeze_factor)
    self.attention = nnx.List(
      [
        None,
        Conv(num_feat, squeezed, (1, 1), padding="VALID", rngs=rngs),
        None,
        Conv(squeezed, num_feat, (1, 1), padding="VALID", rngs=rngs),
      ]
    )

  def __call__(self, x):
    y = jnp.mean(x, axis=(1, 2), keepdims=True)
    y = jax.nn.relu(self.attention[1](y))
    return x * jax.nn.sigmoid(self.attention[3](y))


class CAB(nnx.Module):
  """Channel attention block: `cab` is torch's Sequential(conv, GELU, conv, ChannelAttention)."""

  def __init__(self, num_feat: int, compress_ratio, squeeze_factor, rngs: nnx.Rngs):
    compressed = int(num_feat // compress_ratio)
    self.cab = nnx.List(
      [
        conv3x3(num_feat, compressed, rngs),
        None,
        conv3x3(compressed, num_feat, rngs),
        ChannelAttention(num_feat, squeeze_factor, rngs),
      ]
    )

  def __call__(self, x):
    x = self.cab[2](_gelu(self.cab[0](x)))
    return self.cab[3](x)


class WindowAttention(nnx.Module):
  """Window self-attention with relative position bias (the shift is the caller's)."""

  def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool, rngs: nnx.Rngs):
    self.window_size = window_size
    self.num_heads = num_heads
    self.scale = (dim // num_heads) ** -0.5
    table = ((2 * window_size - 1) ** 2, num_heads)
    self.relative_position_bias_table = nnx.Param(_LINEAR_INIT(rngs.params(), table))
    self.qkv = _linear(dim, dim * 3, rngs, use_bias=qkv_bias)
    self.proj = _linear(dim, dim, rngs)

  def __call__(self, x, regions=None):
    """x [b * num_windows, ws*ws, c]; regions: `shifted_window_regions` or None."""
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, c)
    q, k, v = (_split_heads(qkv[:, :, i], self.num_heads) for i in range(3))
    rpi = relative_position_index_sa(self.window_size)
    bias = self.relative_position_bias_table[...][rpi].transpose(2, 0, 1)
    return self.proj(_attend(q * self.scale, k, v, bias, regions))


class HAB(nnx.Module):
  """Hybrid attention block: (shifted) window attention + a scaled channel-attention conv branch."""

  def __init__(
    self,
    dim: int,
    num_heads: int,
    window_size: int,
    shift_size: int,
    compress_ratio,
    squeeze_factor,
    conv_scale: float,
    mlp_ratio: float,
    qkv_bias: bool,
    rngs: nnx.Rngs,
  ):
    self.window_size = window_size
    self.shift_size = shift_size
    self.conv_scale = conv_scale
    self.norm1 = _layer_norm(dim, rngs)
    self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, rngs)
    self.conv_block = CAB(dim, compress_ratio, squeeze_factor, rngs)
    self.norm2 = _layer_norm(dim, rngs)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs)

  def __call__(self, x):
    b, h, w, c = x.shape
    ws, shift = self.window_size, self.shift_size
    y = self.norm1(x)
    conv_x = self.conv_block(y)
    regions = None
    if shift > 0:
      y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
      regions = shifted_window_regions(h, w, ws, shift)
    windows = window_partition(y, ws).reshape(-1, ws * ws, c)
    attn_x = window_reverse(self.attn(windows, regions).reshape(-1, ws, ws, c), ws, h, w)
    if shift > 0:
      attn_x = jnp.roll(attn_x, (shift, shift), axis=(1, 2))
    x = x + attn_x + conv_x * self.conv_scale
    return x + self.mlp(self.norm2(x))


class OCAB(nnx.Module):
  """Overlapping cross-attention: queries from windows, keys / values from larger overlapping
  windows (torch's `nn.Unfold` with zero padding), one per query window."""

  def __init__(
    self,
    dim: int,
    window_size: int,
    overlap_ratio: float,
    num_heads: int,
    qkv_bias: bool,
    mlp_ratio: float,
    rngs: nnx.Rngs,
  ):
    self.window_size = window_size
    self.num_heads = num_heads
    self.scale = (dim // num_heads) ** -0.5
    self.overlap_win_size = int(window_size * overlap_ratio) + window_size
    if (self.overlap_win_size - window_size) % 2:
      # torch's Unfold then yields one window fewer per side than there are query windows.
      raise ValueError(
        f"HAT: window_size={window_size}, overlap_ratio={overlap_ratio} give an overlap window "
        f"of {self.overlap_win_size}; the reference needs (overlap window - window) even"
      )
    self.norm1 = _layer_norm(dim, rngs)
    self.qkv = _linear(dim, dim * 3, rngs, use_bias=qkv_bias)
    table = ((window_size + self.overlap_win_size - 1) ** 2, num_heads)
    self.relative_position_bias_table = nnx.Param(_LINEAR_INIT(rngs.params(), table))
    self.proj = _linear(dim, dim, rngs)
    self.norm2 = _layer_norm(dim, rngs)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs)

  def _overlapping_windows(self, kv):
    """[b, h, w, 2c] -> [b * num_windows, ows*ows, 2c]: torch's Unfold(ows, stride ws, padding)."""
    b, h, w, c2 = kv.shape
    ws, ows = self.window_size, self.overlap_win_size
    pad = (ows - ws) // 2
    kv = jnp.pad(kv, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = (np.arange(h // ws)[:, None] * ws + np.arange(ows)[None]).reshape(-1)
    cols = (np.arange(w // ws)[:, None] * ws + np.arange(ows)[None]).reshape(-1)
    kv = jnp.take(jnp.take(kv, rows, axis=1), cols, axis=2)
    kv = kv.reshape(b, h // ws, ows, w // ws, ows, c2).transpose(0, 1, 3, 2, 4, 5)
    return kv.reshape(-1, ows * ows, c2)

  def __call__(self, x):
    b, h, w, c = x.shape
    ws = self.window_size
    qkv = self.qkv(self.norm1(x))
    q = window_partition(qkv[..., :c], ws).reshape(-1, ws * ws, c)
    kv = self._overlapping_windows(qkv[..., c:])
    k, v = kv[..., :c], kv[..., c:]
    q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
    rpi = relative_position_index_oca(ws, self.overlap_win_size)
    bias = self.relative_position_bias_table[...][rpi].transpose(2, 0, 1)
    out = _attend(q * self.scale, k, v, bias)
    x = x + self.proj(window_reverse(out.reshape(-1, ws, ws, c), ws, h, w))
    return x + self.mlp(self.norm2(x))


class AttenBlocks(nnx.Module):
  def __init__(self, dim, depth, num_heads, window_size, no_shift, overlap_ratio, rngs, **kwargs):
    mlp_ratio, qkv_bias = kwargs["mlp_ratio"], kwargs["qkv_bias"]
    self.blocks = nnx.List(
      [
        HAB(
          dim,
          num_heads,
          window_size,
          0 if i % 2 == 0 or no_shift else window_size // 2,
          rngs=rngs,
          **kwargs,
        )
        for i in range(depth)
      ]
    )
    self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, qkv_bias, mlp_ratio, rngs)

  def __call__(self, x):
    for block in self.blocks:
      x = block(x)
    return self.overlap_attn(x)


class RHAG(nnx.Module):
  """Residual hybrid attention group: blocks, overlapping cross-attention, conv, residual."""

  def __init__(self, dim: int, resi_connection: str, rngs: nnx.Rngs, **kwargs):
    self.residual_group = AttenBlocks(dim, rngs=rngs, **kwargs)
    self.conv = conv3x3(dim, dim, rngs) if resi_connection == "1conv" else None

  def __call__(self, x):
    y = self.residual_group(x)
    if self.conv is not None:
      y = self.conv(y)
    return y + x


class PatchEmbed(nnx.Module):
  """Tokens are the NHWC feature map itself; only the optional LayerNorm has weights."""

  def __init__(self, dim: int, patch_norm: bool, rngs: nnx.Rngs):
    self.norm = _layer_norm(dim, rngs) if patch_norm else None

  def __call__(self, x):
    return x if self.norm is None else self.norm(x)


# --- the network --------------------------------------------------------------------------------


class HAT(nnx.Module):
  """Hybrid Attention Transformer, NHWC float32 in [0, 1] -> NHWC x `scale`.

  Hyperparameters are named and defaulted as the reference constructor's (`upscale` is `scale`);
  dropout / drop-path / qk_scale are left out (inference no-ops; None in every release). Any input
  size: reflect-padded (bottom / right) to a multiple of `window_size`, output cropped back.
  """

  port_rules = PortRules(
    overrides={
      "*relative_position_bias_table": keep("relative_position_bias_table"),
      "absolute_pos_embed": keep("absolute_pos_embed"),
    },
    # Buffers the module recomputes from the window sizes and the input shape.
    drop=(
      "relative_position_index_SA",
      "relative_position_index_OCA",
      "*relative_position_index",
      "*attn_mask",
    ),
  )

  def __init__(
    self,
    scale: int = 1,
    *,
    img_size: int = 64,
    patch_size: int = 1,
    in_chans: int = 3,
    embed_dim: int = 96,
    depths=(6, 6, 6, 6),
    num_heads=(6, 6, 6, 6),
    window_size: int = 7,
    compress_ratio=3,
    squeeze_factor=30,
    conv_scale: float = 0.01,
    overlap_ratio: float = 0.5,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    ape: bool = False,
    patch_norm: bool = True,
    img_range: float = 1.0,
    resi_connection: str = "1conv",
    num_feat: int = 64,
    rngs: nnx.Rngs,
  ):
    if resi_connection not in ("1conv", "identity"):
      raise ValueError(f"HAT: resi_connection={resi_connection!r}, not '1conv' or 'identity'")
    if scale & (scale - 1) and scale != 3:
      raise ValueError(f"HAT: scale {scale} is not supported (1, 2, 3, 4, 8, ...: 2^n and 3)")
    depths, num_heads = tuple(depths), tuple(num_heads)
    if len(depths) != len(num_heads):
      raise ValueError(f"HAT: depths {depths} and num_heads {num_heads} differ in length")
    resolution = img_size // patch_size
    if resolution < window_size:
      raise ValueError(f"HAT: img_size // patch_size = {resolution} < window_size {window_size}")
    self.scale = scale
    self.upscale = scale
    self.img_size = img_size
    self.patch_size = patch_size
    self.in_chans = in_chans
    self.embed_dim = embed_dim
    self.depths = depths
    self.num_heads = num_heads
    self.window_size = window_size
    self.compress_ratio = compress_ratio
    self.squeeze_factor = squeeze_factor
    self.conv_scale = conv_scale
    self.overlap_ratio = overlap_ratio
    self.mlp_ratio = mlp_ratio
    self.qkv_bias = qkv_bias
    self.ape = ape
    self.patch_norm = patch_norm
    self.img_range = img_range
    self.resi_connection = resi_connection
    self.num_feat = num_feat
    self.upsampler = "pixelshuffle"

    self.conv_first = conv3x3(in_chans, embed_dim, rngs)
    self.patch_embed = PatchEmbed(embed_dim, patch_norm, rngs)
    if ape:
      self.absolute_pos_embed = nnx.Param(
        _LINEAR_INIT(rngs.params(), (1, resolution * resolution, embed_dim))
      )
    self.layers = nnx.List(
      [
        RHAG(
          embed_dim,
          resi_connection,
          rngs,
          depth=depth,
          num_heads=heads,
          window_size=window_size,
          # The reference does not shift when its nominal input is no larger than a window.
          no_shift=resolution <= window_size,
          overlap_ratio=overlap_ratio,
          compress_ratio=compress_ratio,
          squeeze_factor=squeeze_factor,
          conv_scale=conv_scale,
          mlp_ratio=mlp_ratio,
          qkv_bias=qkv_bias,
        )
        for depth, heads in zip(depths, num_heads)
      ]
    )
    self.norm = _layer_norm(embed_dim, rngs)
    self.conv_after_body = (
      conv3x3(embed_dim, embed_dim, rngs) if resi_connection == "1conv" else None
    )
    self.conv_before_upsample = nnx.List([conv3x3(embed_dim, num_feat, rngs)])
    if scale == 3:
      upsample = [conv3x3(num_feat, 9 * num_feat, rngs), None]
    else:
      upsample = [
        layer
        for _ in range(int(math.log2(scale)))
        for layer in (conv3x3(num_feat, 4 * num_feat, rngs), None)
      ]
    self.upsample = nnx.List(upsample)
    self.conv_last = conv3x3(num_feat, in_chans, rngs)

  def forward_features(self, x):
    x = self.patch_embed(x)
    if self.ape:
      _, h, w, c = x.shape
      pos = self.absolute_pos_embed[...]
      if pos.shape[1] != h * w:
        raise ValueError(
          f"HAT with ape: the padded input is {h}x{w}, the position embedding {pos.shape[1]} "
          "pixels (img_size**2)"
        )
      x = x + pos.reshape(1, h, w, c)
    for layer in self.layers:
      x = layer(x)
    return self.norm(x)

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    _, h, w, _ = lr.shape
    mean = jnp.asarray(_RGB_MEAN if self.in_chans == 3 else (0.0,), lr.dtype)
    x = (lr - mean) * self.img_range
    ws = self.window_size
    pad_h, pad_w = -h % ws, -w % ws
    if pad_h or pad_w:
      x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    x = self.conv_first(x)
    features = self.forward_features(x)
    if self.conv_after_body is not None:
      features = self.conv_after_body(features)
    x = nnx.leaky_relu(self.conv_before_upsample[0](features + x), 0.01)
    for conv in self.upsample:
      if conv is not None:
        x = pixel_shuffle(conv(x), 3 if self.scale == 3 else 2)
    x = self.conv_last(x)
    x = x / self.img_range + mean
    return x[:, : h * self.scale, : w * self.scale]


# --- detection ----------------------------------------------------------------------------------


def _overlap_ratio(window_size: int, overlap_win_size: int) -> float:
  """The "nice" ratio r with int(ws + ws * r) == ows, as spandrel picks it."""
  for ratio in (0, 1, 0.5, 0.25, 0.75, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9):
    if int(window_size + window_size * ratio) == overlap_win_size:
      return ratio
  return (overlap_win_size - window_size) / window_size + 0.01


def _inv_int_div(a: int, c: int, key: str):
  """A number b with a // b == c (spandrel's `_inv_int_div`: compress_ratio, squeeze_factor)."""
  b = a / c
  if b.is_integer():
    return int(b)
  for candidate in (math.ceil(b), math.floor(b), b, b - 0.01, b + 0.01):
    if candidate > 0 and a // candidate == c:
      return candidate
  raise ValueError(f"{key}: no ratio r with {a} // r == {c}")


def _isqrt_exact(n: int, key: str) -> int:
  root = math.isqrt(n)
  if root * root != n:
    raise ValueError(f"{key} has {n} rows, not a square")
  return root


def _block_keys(prefix: str, qkv_bias: bool) -> list[str]:
  keys = [
    f"{prefix}.norm1.weight",
    f"{prefix}.attn.relative_position_bias_table",
    f"{prefix}.attn.qkv.weight",
    f"{prefix}.attn.proj.weight",
    f"{prefix}.conv_block.cab.0.weight",
    f"{prefix}.conv_block.cab.2.weight",
    f"{prefix}.conv_block.cab.3.attention.1.weight",
    f"{prefix}.conv_block.cab.3.attention.3.weight",
    f"{prefix}.norm2.weight",
    f"{prefix}.mlp.fc1.weight",
    f"{prefix}.mlp.fc2.weight",
  ]
  return keys + ([f"{prefix}.attn.qkv.bias"] if qkv_bias else [])


def detect_hat(state: StateDict) -> dict:
  """HAT hyperparameters (scale included) from a state dict, as spandrel's HATArch.load.

  Window sizes come from the `relative_position_index_SA` / `_OCA` buffers as in spandrel, or,
  in a dict saved without buffers, from the bias tables. Every block the counts imply must be
  complete (a truncated dict is a ValueError naming the first missing key).
  """
  shape = architecture.shape
  in_chans, embed_dim = shape(state, "conv_first.weight")[1], shape(state, "conv_first.weight")[0]
  num_feat = shape(state, "conv_last.weight")[1]
  scale = 1
  for i in range(0, 10, 2):
    key = f"upsample.{i}.weight"
    if key not in state:
      break
    out_channels, in_channels = shape(state, key)[:2]
    scale *= math.isqrt(out_channels // in_channels)

  if "relative_position_index_SA" in state:
    window_size = math.isqrt(shape(state, "relative_position_index_SA")[0])
  else:
    key = "layers.0.residual_group.blocks.0.attn.relative_position_bias_table"
    window_size = (_isqrt_exact(shape(state, key)[0], key) + 1) // 2
  if "relative_position_index_OCA" in state:
    overlap_win_size = math.isqrt(shape(state, "relative_position_index_OCA")[1])
  else:
    key = "layers.0.residual_group.overlap_attn.relative_position_bias_table"
    overlap_win_size = _isqrt_exact(shape(state, key)[0], key) - window_size + 1

  num_layers = architecture.count(state, r"layers\.(\d+)\..*")
  depths = tuple(
    architecture.count(state, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\..*")
    for i in range(num_layers)
  )
  num_heads = tuple(
    shape(state, f"layers.{i}.residual_group.overlap_attn.relative_position_bias_table")[1]
    for i in range(num_layers)
  )
  resi_connection = "1conv" if "conv_after_body.weight" in state else "identity"
  cab = "layers.0.residual_group.blocks.0.conv_block.cab"
  compress_ratio = _inv_int_div(embed_dim, shape(state, f"{cab}.0.weight")[0], f"{cab}.0.weight")
  key = f"{cab}.3.attention.1.weight"
  squeeze_factor = _inv_int_div(embed_dim, shape(state, key)[0], key)
  qkv_bias = "layers.0.residual_group.blocks.0.attn.qkv.bias" in state
  patch_norm = "patch_embed.norm.weight" in state
  ape = "absolute_pos_embed" in state
  mlp_hidden = shape(state, "layers.0.residual_group.blocks.0.mlp.fc1.weight")[0]
  img_size = math.isqrt(shape(state, "absolute_pos_embed")[1]) if ape else 64

  # Everything the counts imply must be there: a gap is a truncated or damaged file.
  required = ["norm.weight", "conv_before_upsample.0.weight"]
  required += [f"upsample.{2 * i}.weight" for i in range(max(int(math.log2(scale)), 0))]
  for i, depth in enumerate(depths):
    group = f"layers.{i}.residual_group"
    if depth == 0:
      raise ValueError(f"missing key '{group}.blocks.0.*' (layer {i} has no blocks)")
    for j in range(depth):
      required += _block_keys(f"{group}.blocks.{j}", qkv_bias)
    required += [
      f"{group}.overlap_attn.{name}"
      for name in ("norm1.weight", "qkv.weight", "proj.weight", "norm2.weight", "mlp.fc1.weight")
    ]
    required += [f"{group}.overlap_attn.mlp.fc2.weight"]
    if resi_connection == "1conv":
      required.append(f"layers.{i}.conv.weight")
  for key in required:
    shape(state, key)

  return dict(
    scale=scale,
    img_size=img_size,
    patch_size=1,
    in_chans=in_chans,
    embed_dim=embed_dim,
    depths=depths,
    num_heads=num_heads,
    window_size=window_size,
    compress_ratio=compress_ratio,
    squeeze_factor=squeeze_factor,
    overlap_ratio=_overlap_ratio(window_size, overlap_win_size),
    mlp_ratio=mlp_hidden / embed_dim,
    qkv_bias=qkv_bias,
    ape=ape,
    patch_norm=patch_norm,
    resi_connection=resi_connection,
    num_feat=num_feat,
  )


HAT_ARCH = architecture.Architecture(
  name="hat",
  module=HAT,
  signature=(
    "conv_first.weight",
    "layers.0.residual_group.blocks.0.conv_block.cab.0.weight",
    "layers.0.residual_group.overlap_attn.relative_position_bias_table",
    "conv_last.weight",
  ),
  detect=detect_hat,
  config_keys=(
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "compress_ratio",
    "squeeze_factor",
    "conv_scale",
    "overlap_ratio",
    "mlp_ratio",
    "qkv_bias",
    "ape",
    "patch_norm",
    "img_range",
    "resi_connection",
    "num_feat",
  ),
)
