"""DAT, the Dual Aggregation Transformer (Chen et al., ICCV 2023): DAT, DAT-S, DAT-2, DAT-light.

A port of the reference implementation as spandrel 0.4.2 ships it (`spandrel.architectures.DAT`).
Residual groups alternate spatial-window blocks (two half-channel branches with transposed
rectangular windows, a dynamic position-bias MLP, shifted windows in some blocks) and channel
blocks (attention across channels); each block mixes its attention with a depthwise-conv branch
(the adaptive interaction module) and ends with a spatial-gate FFN.

Attribute names follow the PyTorch modules, `nn.Sequential` indices included (activation slots
are `None` in an `nnx.List`), so state dicts map key by key: only recomputed buffers (window
masks, relative position tables) are dropped. BatchNorm layers use their running statistics, in
training too (as a fine-tuned pretrained net is evaluated; the reference trains them on batch
statistics).

Any input size: as the reference, the spatial attention zero-pads q, k, v (after their
projection) at the bottom / right to a multiple of the larger split size and crops back; the
network itself pads nothing.
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
from sr_jax.weights.porting import PortRules

_RGB_MEAN = (0.4488, 0.4371, 0.4040)
_NUM_FEAT = 64  # fixed in the reference's pixelshuffle reconstruction
_LINEAR_INIT = nnx.initializers.truncated_normal(stddev=0.02)  # the reference's _init_weights


def gelu(x: jnp.ndarray) -> jnp.ndarray:
  return jax.nn.gelu(x, approximate=False)  # torch nn.GELU(): exact


def linear(in_features: int, out_features: int, rngs: nnx.Rngs, use_bias: bool = True):
  return nnx.Linear(
    in_features, out_features, use_bias=use_bias, kernel_init=_LINEAR_INIT, rngs=rngs
  )


def layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=1e-5, use_fast_variance=False, rngs=rngs)


def batch_norm(dim: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # torch BatchNorm2d: eps 1e-5, momentum 0.1 (= Flax 0.9).
  return nnx.BatchNorm(dim, use_running_average=True, momentum=0.9, epsilon=1e-5, rngs=rngs)


def conv1x1(in_features: int, out_features: int, rngs: nnx.Rngs) -> nnx.Conv:
  return Conv(in_features, out_features, (1, 1), rngs=rngs)


def depthwise3x3(dim: int, rngs: nnx.Rngs) -> nnx.Conv:
  return Conv(dim, dim, (3, 3), padding="SAME", feature_group_count=dim, rngs=rngs)


def is_shifted(rg_idx: int, b_idx: int) -> bool:
  """Whether spatial block `b_idx` of residual group `rg_idx` shifts its windows (reference)."""
  return (rg_idx % 2 == 0 and b_idx > 0 and (b_idx - 2) % 4 == 0) or (
    rg_idx % 2 != 0 and b_idx % 4 == 0
  )


def shifted_window_masks(
  height: int, width: int, split_size: tuple[int, int], shift_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
  """The reference's `calculate_mask`: (nW, N, N) additive masks (0 / -100) of both branches;
  branch 1 has the transposed window (split_size[1] x split_size[0])."""

  def mask(window: tuple[int, int], shift: tuple[int, int]) -> np.ndarray:
    (wh, ww), (sh, sw) = window, shift
    regions = np.zeros((height, width), np.float32)
    h_slices = (slice(0, -wh), slice(-wh, -sh), slice(-sh, None))
    w_slices = (slice(0, -ww), slice(-ww, -sw), slice(-sw, None))
    for index, (h, w) in enumerate((h, w) for h in h_slices for w in w_slices):
      regions[h, w] = index
    windows = regions.reshape(height // wh, wh, width // ww, ww).transpose(0, 2, 1, 3)
    windows = windows.reshape(-1, wh * ww)
    diff = windows[:, None, :] - windows[:, :, None]
    return np.where(diff != 0, -100.0, 0.0).astype(np.float32)

  window_1 = (split_size[1], split_size[0])
  shift_1 = (shift_size[1], shift_size[0])
  return mask(tuple(split_size), tuple(shift_size)), mask(window_1, shift_1)


def relative_position_tables(window_h: int, window_w: int) -> tuple[np.ndarray, np.ndarray]:
  """(rpe_biases [(2h-1)(2w-1), 2], relative_position_index [N, N]) of an h x w window, as the
  reference's buffers."""
  dh, dw = np.meshgrid(
    np.arange(1 - window_h, window_h), np.arange(1 - window_w, window_w), indexing="ij"
  )
  biases = np.stack([dh.ravel(), dw.ravel()], axis=1).astype(np.float32)
  ch, cw = np.meshgrid(np.arange(window_h), np.arange(window_w), indexing="ij")
  coords = np.stack([ch.ravel(), cw.ravel()])  # 2, N
  relative = coords[:, :, None] - coords[:, None, :]  # 2, N, N
  index = (relative[0] + window_h - 1) * (2 * window_w - 1) + relative[1] + window_w - 1
  return biases, index


class DynamicPosBias(nnx.Module):
  """MLP from a relative offset (dy, dx) to one bias per head (non-residual, as DAT uses it)."""

  def __init__(self, dim: int, num_heads: int, rngs: nnx.Rngs):
    pos_dim = dim // 4
    self.pos_proj = linear(2, pos_dim, rngs)
    self.pos1 = nnx.List([layer_norm(pos_dim, rngs), None, linear(pos_dim, pos_dim, rngs)])
    self.pos2 = nnx.List([layer_norm(pos_dim, rngs), None, linear(pos_dim, pos_dim, rngs)])
    self.pos3 = nnx.List([layer_norm(pos_dim, rngs), None, linear(pos_dim, num_heads, rngs)])

  def __call__(self, biases: jnp.ndarray) -> jnp.ndarray:
    pos = self.pos_proj(biases)
    for norm, _, dense in (self.pos1, self.pos2, self.pos3):
      pos = dense(jax.nn.relu(norm(pos)))
    return pos


class SpatialAttention(nnx.Module):
  """Window attention of one branch: idx 0 uses split_size (h, w) windows, idx 1 (w, h)."""

  def __init__(self, dim: int, idx: int, split_size: tuple[int, int], num_heads: int, rngs):
    self.num_heads = num_heads
    self.qk_scale = (dim // num_heads) ** -0.5
    self.window = (split_size[0], split_size[1]) if idx == 0 else (split_size[1], split_size[0])
    self.pos = DynamicPosBias(dim // 4, num_heads, rngs)

  def __call__(self, qkv: jnp.ndarray, mask: np.ndarray | None) -> jnp.ndarray:
    """qkv: (3, B, H, W, C), H and W multiples of the window -> (B, H, W, C)."""
    _, b, h, w, c = qkv.shape
    wh, ww = self.window
    heads, n = self.num_heads, wh * ww
    qkv = qkv.reshape(3, b, h // wh, wh, w // ww, ww, heads, c // heads)
    qkv = qkv.transpose(0, 1, 2, 4, 6, 3, 5, 7).reshape(3, b, -1, heads, n, c // heads)
    q, k, v = qkv.astype(jnp.float32)  # attention in float32
    attn = jnp.einsum("bwhnd,bwhmd->bwhnm", q * self.qk_scale, k)
    biases, index = relative_position_tables(wh, ww)
    pos = self.pos(jnp.asarray(biases))  # (2h-1)(2w-1), heads
    attn = attn + pos[index.reshape(-1)].reshape(n, n, heads).transpose(2, 0, 1)
    if mask is not None:
      attn = attn + jnp.asarray(mask)[None, :, None]
    attn = jax.nn.softmax(attn, axis=-1)
    out = jnp.einsum("bwhnm,bwhmd->bwhnd", attn, v).astype(qkv.dtype)
    out = out.reshape(b, h // wh, w // ww, heads, wh, ww, c // heads)
    return out.transpose(0, 1, 4, 2, 5, 3, 6).reshape(b, h, w, c)


class AdaptiveInteraction(nnx.Module):
  """The depthwise-conv branch and the two gates of both attention kinds (adaptive interaction
  module); attributes of each attention module, as in the reference."""

  def _init_interaction(self, dim: int, rngs: nnx.Rngs):
    self.dwconv = nnx.List([depthwise3x3(dim, rngs), batch_norm(dim, rngs)])
    self.channel_interaction = nnx.List(
      [
        None,
        conv1x1(dim, dim // 8, rngs),
        batch_norm(dim // 8, rngs),
        None,
        conv1x1(dim // 8, dim, rngs),
      ]
    )
    self.spatial_interaction = nnx.List(
      [
        conv1x1(dim, dim // 16, rngs),
        batch_norm(dim // 16, rngs),
        None,
        conv1x1(dim // 16, 1, rngs),
      ]
    )

  def _conv_branch(self, x: jnp.ndarray) -> jnp.ndarray:
    conv, bn = self.dwconv
    return gelu(bn(conv(x)))

  def _channel_map(self, x: jnp.ndarray) -> jnp.ndarray:
    _, conv1, bn, _, conv2 = self.channel_interaction
    return conv2(gelu(bn(conv1(jnp.mean(x, axis=(1, 2), keepdims=True)))))

  def _spatial_map(self, x: jnp.ndarray) -> jnp.ndarray:
    conv1, bn, _, conv2 = self.spatial_interaction
    return conv2(gelu(bn(conv1(x))))


class AdaptiveSpatialAttention(AdaptiveInteraction):
  """Spatial-window self-attention on two half-channel branches, plus the conv branch."""

  def __init__(
    self,
    dim: int,
    num_heads: int,
    split_size: tuple[int, int],
    qkv_bias: bool,
    rg_idx: int,
    b_idx: int,
    rngs: nnx.Rngs,
  ):
    self.split_size = split_size
    self.shift_size = (split_size[0] // 2, split_size[1] // 2)
    self.shifted = is_shifted(rg_idx, b_idx)
    self.qkv = linear(dim, 3 * dim, rngs, use_bias=qkv_bias)
    self.proj = linear(dim, dim, rngs)
    self.attns = nnx.List(
      [SpatialAttention(dim // 2, i, split_size, num_heads // 2, rngs) for i in range(2)]
    )
    self._init_interaction(dim, rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    qkv = self.qkv(x).reshape(b, h, w, 3, c).transpose(3, 0, 1, 2, 4)  # 3, B, H, W, C
    v = qkv[2]
    # Zero padding after the projection, as the reference: padded tokens have q = k = v = 0.
    size = max(self.split_size)
    qkv = jnp.pad(qkv, ((0, 0), (0, 0), (0, -h % size), (0, -w % size), (0, 0)))
    half = c // 2
    s0, s1 = self.shift_size
    branch_0, branch_1 = qkv[..., :half], qkv[..., half:]
    if self.shifted:
      mask_0, mask_1 = shifted_window_masks(qkv.shape[2], qkv.shape[3], self.split_size, (s0, s1))
      x1 = self.attns[0](jnp.roll(branch_0, (-s0, -s1), axis=(2, 3)), mask_0)
      x2 = self.attns[1](jnp.roll(branch_1, (-s1, -s0), axis=(2, 3)), mask_1)
      x1 = jnp.roll(x1, (s0, s1), axis=(1, 2))
      x2 = jnp.roll(x2, (s1, s0), axis=(1, 2))
    else:
      x1 = self.attns[0](branch_0, None)
      x2 = self.attns[1](branch_1, None)
    attended = jnp.concatenate([x1[:, :h, :w], x2[:, :h, :w]], axis=-1)
    conv_x = self._conv_branch(v)
    spatial_map = self._spatial_map(attended)
    attended = attended * jax.nn.sigmoid(self._channel_map(conv_x))
    conv_x = jax.nn.sigmoid(spatial_map) * conv_x
    return self.proj(attended + conv_x)


class AdaptiveChannelAttention(AdaptiveInteraction):
  """Channel self-attention (XCiT-style, per head), plus the conv branch."""

  def __init__(self, dim: int, num_heads: int, qkv_bias: bool, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.temperature = nnx.Param(jnp.ones((num_heads, 1, 1), jnp.float32))
    self.qkv = linear(dim, 3 * dim, rngs, use_bias=qkv_bias)
    self.proj = linear(dim, dim, rngs)
    self._init_interaction(dim, rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    heads = self.num_heads
    qkv = self.qkv(x).reshape(b, h * w, 3, heads, c // heads)
    v_image = qkv[:, :, 2].reshape(b, h, w, c)
    q, k, v = qkv.astype(jnp.float32).transpose(2, 0, 3, 4, 1)  # each B, heads, d, N

    def normalize(t):  # F.normalize over tokens
      return t / jnp.maximum(jnp.sqrt(jnp.sum(t * t, axis=-1, keepdims=True)), 1e-12)

    attn = jnp.einsum("bhdn,bhen->bhde", normalize(q), normalize(k)) * self.temperature[...]
    attn = jax.nn.softmax(attn, axis=-1)
    attended = jnp.einsum("bhde,bhen->bnhd", attn, v).reshape(b, h, w, c).astype(x.dtype)
    conv_x = self._conv_branch(v_image)
    channel_map = self._channel_map(attended)
    attended = attended * jax.nn.sigmoid(self._spatial_map(conv_x))
    conv_x = conv_x * jax.nn.sigmoid(channel_map)
    return self.proj(attended + conv_x)


class SpatialGate(nnx.Module):
  def __init__(self, dim: int, rngs: nnx.Rngs):
    self.norm = layer_norm(dim, rngs)
    self.conv = depthwise3x3(dim, rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x1 * self.conv(self.norm(x2))


class SGFN(nnx.Module):
  """Spatial-gate feed-forward network."""

  def __init__(self, dim: int, hidden: int, rngs: nnx.Rngs):
    self.fc1 = linear(dim, hidden, rngs)
    self.sg = SpatialGate(hidden // 2, rngs)
    self.fc2 = linear(hidden // 2, dim, rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return self.fc2(self.sg(gelu(self.fc1(x))))


class DATB(nnx.Module):
  """Dual aggregation block: spatial attention at even `b_idx`, channel attention at odd."""

  def __init__(self, dim, num_heads, split_size, expansion_factor, qkv_bias, rg_idx, b_idx, rngs):
    self.norm1 = layer_norm(dim, rngs)
    if b_idx % 2 == 0:
      self.attn = AdaptiveSpatialAttention(
        dim, num_heads, split_size, qkv_bias, rg_idx, b_idx, rngs
      )
    else:
      self.attn = AdaptiveChannelAttention(dim, num_heads, qkv_bias, rngs)
    self.ffn = SGFN(dim, int(dim * expansion_factor), rngs)
    self.norm2 = layer_norm(dim, rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x + self.attn(self.norm1(x))
    return x + self.ffn(self.norm2(x))


def residual_conv(dim: int, resi_connection: str, rngs: nnx.Rngs):
  """The conv closing the body of a group / the network: one 3x3, or 3x3-1x1-3x3 at dim / 4."""
  if resi_connection == "1conv":
    return conv3x3(dim, dim, rngs)
  if resi_connection == "3conv":
    quarter = dim // 4
    return nnx.List(
      [
        conv3x3(dim, quarter, rngs),
        None,
        conv1x1(quarter, quarter, rngs),
        None,
        conv3x3(quarter, dim, rngs),
      ]
    )
  raise ValueError(f"resi_connection must be '1conv' or '3conv', got {resi_connection!r}")


def apply_residual_conv(conv, x: jnp.ndarray) -> jnp.ndarray:
  if isinstance(conv, nnx.List):
    lrelu = lambda t: jax.nn.leaky_relu(t, negative_slope=0.2)  # noqa: E731
    return conv[4](lrelu(conv[2](lrelu(conv[0](x)))))
  return conv(x)


class ResidualGroup(nnx.Module):
  def __init__(
    self,
    dim,
    num_heads,
    split_size,
    expansion_factor,
    qkv_bias,
    depth,
    resi_connection,
    rg_idx,
    rngs,
  ):
    self.blocks = nnx.List(
      [
        DATB(dim, num_heads, split_size, expansion_factor, qkv_bias, rg_idx, i, rngs)
        for i in range(depth)
      ]
    )
    self.conv = residual_conv(dim, resi_connection, rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    res = x
    for block in self.blocks:
      x = block(x)
    return res + apply_residual_conv(self.conv, x)


class DAT(nnx.Module):
  """Dual Aggregation Transformer, as spandrel's `DAT` (hyperparameters of the same names).

  DAT: embed_dim 180, depth (6,) * 6, num_heads (6,) * 6, split_size (8, 32), expansion 4.
  DAT-S: the same with split_size (8, 16); DAT-2: expansion 2; DAT-light: embed_dim 60,
  depth (18,), num_heads (6,), expansion 2, resi_connection "3conv", upsampler
  "pixelshuffledirect". `net(lr)`: NHWC float32 in [0, 1] -> NHWC x `scale`.
  """

  port_rules = PortRules(
    drop=("*.rpe_biases", "*.relative_position_index", "*.attn_mask_0", "*.attn_mask_1")
  )

  def __init__(
    self,
    scale: int = 2,
    in_chans: int = 3,
    embed_dim: int = 180,
    split_size: tuple[int, int] = (2, 4),
    depth: tuple[int, ...] = (2, 2, 2, 2),
    num_heads: tuple[int, ...] = (2, 2, 2, 2),
    expansion_factor: float = 4.0,
    qkv_bias: bool = True,
    img_range: float = 1.0,
    resi_connection: str = "1conv",
    upsampler: str = "pixelshuffle",
    *,
    rngs: nnx.Rngs,
  ):
    if upsampler not in ("pixelshuffle", "pixelshuffledirect"):
      raise ValueError(
        f"upsampler must be 'pixelshuffle' or 'pixelshuffledirect', got {upsampler!r}"
      )
    if len(depth) != len(num_heads):
      raise ValueError(f"depth {depth} and num_heads {num_heads} differ in length")
    self.scale = scale
    self.in_chans = in_chans
    self.embed_dim = embed_dim
    self.split_size = tuple(int(s) for s in split_size)
    self.depth = tuple(int(d) for d in depth)
    self.num_heads = tuple(int(h) for h in num_heads)
    self.expansion_factor = float(expansion_factor)
    self.qkv_bias = bool(qkv_bias)
    self.img_range = img_range
    self.resi_connection = resi_connection
    self.upsampler = upsampler
    self.mean = _RGB_MEAN if in_chans == 3 else (0.0,)

    self.conv_first = conv3x3(in_chans, embed_dim, rngs)
    self.before_RG = nnx.List([None, layer_norm(embed_dim, rngs)])
    self.layers = nnx.List(
      [
        ResidualGroup(
          embed_dim,
          heads,
          self.split_size,
          self.expansion_factor,
          self.qkv_bias,
          blocks,
          resi_connection,
          i,
          rngs,
        )
        for i, (blocks, heads) in enumerate(zip(self.depth, self.num_heads))
      ]
    )
    self.norm = layer_norm(embed_dim, rngs)
    self.conv_after_body = residual_conv(embed_dim, resi_connection, rngs)
    if upsampler == "pixelshuffle":
      self.conv_before_upsample = nnx.List([conv3x3(embed_dim, _NUM_FEAT, rngs), None])
      self.upsample = nnx.List(upsample_convs(scale, _NUM_FEAT, rngs))
      self.conv_last = conv3x3(_NUM_FEAT, in_chans, rngs)
    else:
      self.upsample = nnx.List([conv3x3(embed_dim, scale * scale * in_chans, rngs), None])

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    mean = jnp.asarray(self.mean, lr.dtype)
    x = self.conv_first((lr - mean) * self.img_range)
    features = self.before_RG[1](x)
    for layer in self.layers:
      features = layer(features)
    x = apply_residual_conv(self.conv_after_body, self.norm(features)) + x
    if self.upsampler == "pixelshuffle":
      x = jax.nn.leaky_relu(self.conv_before_upsample[0](x), negative_slope=0.01)
      for conv in self.upsample:
        if conv is None:  # the PixelShuffle slot
          continue
        factor = math.isqrt(conv.out_features // conv.in_features)
        x = pixel_shuffle(conv(x), factor)
      x = self.conv_last(x)
    else:
      x = pixel_shuffle(self.upsample[0](x), self.scale)
    return x / self.img_range + mean


def upsample_convs(scale: int, num_feat: int, rngs: nnx.Rngs) -> list:
  """The reference's `Upsample`: (conv, PixelShuffle) x log2(scale), or one x3 stage."""
  if scale & (scale - 1) == 0:
    stages = [2] * (scale.bit_length() - 1)
  elif scale == 3:
    stages = [3]
  else:
    raise ValueError(f"scale {scale} is not supported: 2^n or 3")
  layers = []
  for factor in stages:
    layers += [conv3x3(num_feat, factor * factor * num_feat, rngs), None]
  return layers


# --- detection ----------------------------------------------------------------------------------

# spandrel's key condition for DAT; the signature below is the DAT-specific part of it.
_BLOCK_KEYS = (
  "norm1.weight",
  "norm2.weight",
  "ffn.fc1.weight",
  "ffn.sg.norm.weight",
  "ffn.sg.conv.weight",
  "ffn.fc2.weight",
  "attn.qkv.weight",
  "attn.proj.weight",
  "attn.dwconv.0.weight",
  "attn.dwconv.1.running_mean",
  "attn.channel_interaction.1.weight",
  "attn.channel_interaction.2.running_mean",
  "attn.channel_interaction.4.weight",
  "attn.spatial_interaction.0.weight",
  "attn.spatial_interaction.1.running_mean",
  "attn.spatial_interaction.3.weight",
  "attn.attns.0.rpe_biases",
  "attn.attns.0.relative_position_index",
  "attn.attns.0.pos.pos_proj.weight",
  "attn.attns.0.pos.pos1.0.weight",
  "attn.attns.0.pos.pos3.0.weight",
)
_REQUIRED = (
  "conv_first.weight",
  "before_RG.1.weight",
  "before_RG.1.bias",
  *(f"layers.0.blocks.0.{key}" for key in _BLOCK_KEYS),
  "norm.weight",
)


def _require(state: StateDict, key: str) -> np.ndarray:
  if key not in state:
    raise ValueError(f"missing key {key!r}")
  return np.asarray(state[key])


def detect_dat(state: StateDict) -> dict:
  """spandrel's DAT detection: widths from conv_first, depth per group from the block keys, heads
  from the channel blocks' temperature (or twice the spatial branch's), split size from the
  position-bias table, upsampler and residual conv kind from which keys exist."""
  for key in _REQUIRED:
    _require(state, key)
  if "conv_after_body.weight" in state:
    resi_connection = "1conv"
  elif "conv_after_body.4.weight" in state:
    resi_connection = "3conv"
  else:
    raise ValueError("missing key 'conv_after_body.weight' (or 'conv_after_body.4.weight')")
  embed_dim, in_chans = architecture.shape(state, "conv_first.weight")[:2]
  num_layers = architecture.count(state, r"layers\.(\d+)\..*")
  depth, num_heads = [], []
  for i in range(num_layers):
    blocks = architecture.count(state, rf"layers\.{i}\.blocks\.(\d+)\..*")
    if blocks == 0:
      raise ValueError(f"missing key 'layers.{i}.blocks.0.norm1.weight'")
    depth.append(blocks)
    if blocks >= 2:
      num_heads.append(architecture.shape(state, f"layers.{i}.blocks.1.attn.temperature")[0])
    else:  # only even head counts can be told from the spatial branch (num_heads // 2 each)
      key = f"layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight"
      num_heads.append(2 * architecture.shape(state, key)[0])

  if "conv_last.weight" in state:
    upsampler = "pixelshuffle"
    if "conv_before_upsample.0.weight" not in state and "upsample.0.weight" not in state:
      raise ValueError("missing key 'conv_before_upsample.0.weight'")
    scale = 1
    for i in range(0, 10, 2):  # spandrel's get_pixelshuffle_params
      key = f"upsample.{i}.weight"
      if key not in state:
        break
      out_channels, num_feat = architecture.shape(state, key)[:2]
      if num_feat != _NUM_FEAT or out_channels not in (4 * num_feat, 9 * num_feat):
        raise ValueError(f"{key} has shape {architecture.shape(state, key)}, not (4|9 * 64, 64)")
      scale *= math.isqrt(out_channels // num_feat)
  else:
    upsampler = "pixelshuffledirect"
    if "conv_before_upsample.0.weight" in state:
      raise ValueError("missing key 'conv_last.weight'")
    out_channels = architecture.shape(state, "upsample.0.weight")[0]
    scale = math.isqrt(out_channels // in_chans)
    if scale * scale * in_chans != out_channels:
      raise ValueError(f"upsample.0.weight has {out_channels} outputs, not in_chans * scale**2")

  fc1 = architecture.shape(state, "layers.0.blocks.0.ffn.fc1.weight")[0]
  last_offset = _require(state, "layers.0.blocks.0.attn.attns.0.rpe_biases")[-1]
  return dict(
    scale=scale,
    in_chans=in_chans,
    embed_dim=embed_dim,
    split_size=tuple(int(s) + 1 for s in last_offset),
    depth=tuple(depth),
    num_heads=tuple(num_heads),
    expansion_factor=float(fc1 / embed_dim),
    qkv_bias="layers.0.blocks.0.attn.qkv.bias" in state,
    resi_connection=resi_connection,
    upsampler=upsampler,
  )


DAT_ARCH = architecture.Architecture(
  name="dat",
  module=DAT,
  signature=(
    "before_RG.1.weight",
    "layers.0.blocks.0.attn.attns.0.pos.pos_proj.weight",
    "layers.0.blocks.0.ffn.sg.conv.weight",
  ),
  detect=detect_dat,
  config_keys=(
    "in_chans",
    "embed_dim",
    "split_size",
    "depth",
    "num_heads",
    "expansion_factor",
    "qkv_bias",
    "resi_connection",
    "upsampler",
  ),
)
