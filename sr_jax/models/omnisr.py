"""Omni-SR (omni self-attention, CVPR 2023), as spandrel's `OmniSR`.

Attribute names follow the official PyTorch modules (`input`, `residual_layer.N.residual_layer.M
.layer.K.fn.to_qkv`, `residual_layer.N.esa.conv1`, `up.0`, ...), so official state dicts map key
by key with `PORT_RULES`. The reference's parameter-free `nn.Sequential` entries (activations,
einops rearranges) are kept as placeholders so the indices line up. Inputs are zero-padded
(bottom / right) to a multiple of the window size, as the reference does, and cropped back.
"""

import functools

from flax import nnx
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from sr_jax.conv import Conv
from sr_jax.models import architecture
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import ChannelLayerNorm, pixel_shuffle
from sr_jax.weights.porting import PortRules, keep

# nn.Embedding tables keep their layout; thop's profiling counters are no weights (spandrel drops
# them too).
PORT_RULES = PortRules(
  overrides={"*.rel_pos_bias.weight": keep("embedding")},
  drop=("*total_ops", "*total_params"),
)

_HIGHEST = lax.Precision.HIGHEST


def gelu(x):
  return jax.nn.gelu(x, approximate=False)  # torch's nn.GELU() default


class Placeholder(nnx.Module):
  """A parameter-free entry of a reference `nn.Sequential` (activation, rearrange, pooling)."""

  def __call__(self, x):
    return x


def conv(in_features, out_features, kernel_size, rngs, use_bias=True, groups=1) -> nnx.Module:
  """torch's `nn.Conv2d(..., padding=k // 2)` (stride 1)."""
  return Conv(
    in_features,
    out_features,
    (kernel_size, kernel_size),
    padding="SAME",
    use_bias=use_bias,
    feature_group_count=groups,
    rngs=rngs,
  )


class SqueezeExcitation(nnx.Module):
  def __init__(self, dim: int, hidden_dim: int, rngs: nnx.Rngs):
    linear = functools.partial(nnx.Linear, use_bias=False, rngs=rngs)
    self.gate = nnx.List(
      [Placeholder(), linear(dim, hidden_dim), Placeholder(), linear(hidden_dim, dim)]
    )

  def __call__(self, x):
    y = x.mean((1, 2))
    y = self.gate[3](jax.nn.silu(self.gate[1](y)))
    return x * jax.nn.sigmoid(y)[:, None, None, :]


class MBConvResidual(nnx.Module):
  """MBConv with expansion 1: 1x1, GELU, depthwise 3x3, GELU, squeeze-excitation, 1x1; + x."""

  def __init__(self, dim: int, rngs: nnx.Rngs):
    self.fn = nnx.List(
      [
        conv(dim, dim, 1, rngs),
        Placeholder(),
        conv(dim, dim, 3, rngs, groups=dim),
        Placeholder(),
        SqueezeExcitation(dim, int(dim * 0.25), rngs),
        conv(dim, dim, 1, rngs),
      ]
    )

  def __call__(self, x):
    fn = self.fn
    out = fn[4](gelu(fn[2](gelu(fn[0](x)))))
    return fn[5](out) + x


class RelPosBias(nnx.Module):
  """`nn.Embedding((2w - 1)**2, heads)`: one bias per head and relative offset."""

  def __init__(self, window_size: int, heads: int, rngs: nnx.Rngs):
    self.embedding = nnx.Param(
      nnx.initializers.normal(1.0)(rngs.params(), ((2 * window_size - 1) ** 2, heads))
    )


@functools.lru_cache(maxsize=8)
def _rel_pos_indices(window_size: int) -> np.ndarray:
  """[w*w, w*w] index into the bias table of each (query, key) pair of a window."""
  pos = np.arange(window_size)
  grid = np.stack(np.meshgrid(pos, pos, indexing="ij")).reshape(2, -1).T  # (i j) c
  rel = grid[:, None, :] - grid[None, :, :] + window_size - 1
  return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


class Attention(nnx.Module):
  """Multi-head self-attention inside each window ([b, x, y, w1, w2, d] in and out)."""

  def __init__(self, dim: int, dim_head: int, window_size: int, with_pe: bool, rngs: nnx.Rngs):
    self.heads = dim // dim_head
    self.scale = dim_head**-0.5
    self.window_size = window_size
    self.to_qkv = nnx.Linear(dim, dim * 3, use_bias=False, rngs=rngs)
    self.to_out = nnx.List([nnx.Linear(dim, dim, use_bias=False, rngs=rngs)])
    self.rel_pos_bias = RelPosBias(window_size, self.heads, rngs) if with_pe else None

  def __call__(self, x):
    b, nx, ny, w1, w2, d = x.shape
    tokens = x.reshape(b * nx * ny, w1 * w2, d)
    q, k, v = jnp.split(self.to_qkv(tokens), 3, axis=-1)
    q, k, v = (t.reshape(t.shape[0], w1 * w2, self.heads, -1) for t in (q, k, v))
    sim = jnp.einsum("bihd,bjhd->bhij", q * self.scale, k, precision=_HIGHEST)
    if self.rel_pos_bias is not None:
      bias = self.rel_pos_bias.embedding[...][_rel_pos_indices(self.window_size)]  # i j h
      sim = sim + bias.transpose(2, 0, 1)
    attn = jax.nn.softmax(sim, axis=-1)
    out = jnp.einsum("bhij,bjhd->bihd", attn, v, precision=_HIGHEST).reshape(-1, w1, w2, d)
    return self.to_out[0](out).reshape(b, nx, ny, w1, w2, d)


class PreNormResidual(nnx.Module):
  def __init__(self, dim: int, fn: nnx.Module, eps: float):
    self.norm = ChannelLayerNorm(dim, eps)
    self.fn = fn

  def __call__(self, x):
    return self.fn(self.norm(x)) + x


class GatedConvFeedForward(nnx.Module):
  """1x1 to 2 * dim, depthwise 3x3, GELU(first half) * second half, 1x1 back (no biases)."""

  def __init__(self, dim: int, rngs: nnx.Rngs):
    self.project_in = conv(dim, dim * 2, 1, rngs, use_bias=False)
    self.dwconv = conv(dim * 2, dim * 2, 3, rngs, use_bias=False, groups=dim * 2)
    self.project_out = conv(dim, dim, 1, rngs, use_bias=False)

  def __call__(self, x):
    x1, x2 = jnp.split(self.dwconv(self.project_in(x)), 2, axis=-1)
    return self.project_out(gelu(x1) * x2)


def _l2_normalize(x):
  """`F.normalize(x, dim=-1)` (eps 1e-12)."""
  return x / jnp.maximum(jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)), 1e-12)


class ChannelAttention(nnx.Module):
  """Transposed (channel x channel) attention per head; `grid=False`: inside each window (the
  reference's `Channel_Attention`), `grid=True`: across windows, one per window offset
  (`Channel_Attention_grid`)."""

  def __init__(self, dim: int, heads: int, window_size: int, grid: bool, rngs: nnx.Rngs):
    self.heads = heads
    self.ps = window_size
    self.grid = grid
    self.temperature = nnx.Param(jnp.ones((heads, 1, 1), jnp.float32))
    self.qkv = conv(dim, dim * 3, 1, rngs, use_bias=False)
    self.qkv_dwconv = conv(dim * 3, dim * 3, 3, rngs, use_bias=False, groups=dim * 3)
    self.project_out = conv(dim, dim, 1, rngs, use_bias=False)

  def __call__(self, x):
    b, h, w, c = x.shape
    ps, heads = self.ps, self.heads
    nh, nw = h // ps, w // ps
    # [b, nh, ps, nw, ps, head, d] -> [b, groups, head, d, tokens]
    order = (0, 2, 4, 5, 6, 1, 3) if self.grid else (0, 1, 3, 5, 6, 2, 4)

    def split(t):
      t = t.reshape(b, nh, ps, nw, ps, heads, c // heads).transpose(order)
      return t.reshape(b, -1, heads, c // heads, t.shape[-2] * t.shape[-1])

    q, k, v = (split(t) for t in jnp.split(self.qkv_dwconv(self.qkv(x)), 3, axis=-1))
    attn = jnp.einsum("bghdn,bghen->bghde", _l2_normalize(q), _l2_normalize(k), precision=_HIGHEST)
    attn = jax.nn.softmax(attn * self.temperature[...], axis=-1)
    out = jnp.einsum("bghde,bghen->bghdn", attn, v, precision=_HIGHEST)
    if self.grid:
      out = out.reshape(b, ps, ps, heads, c // heads, nh, nw).transpose(0, 5, 1, 6, 2, 3, 4)
    else:
      out = out.reshape(b, nh, nw, heads, c // heads, ps, ps).transpose(0, 1, 5, 2, 6, 3, 4)
    return self.project_out(out.reshape(b, h, w, c))


def _to_windows(x, ps, grid):
  """NHWC -> [b, x, y, w1, w2, d]: `(x w1) (y w2)` blocks, or `(w1 x) (w2 y)` grid."""
  b, h, w, c = x.shape
  if grid:
    return x.reshape(b, ps, h // ps, ps, w // ps, c).transpose(0, 2, 4, 1, 3, 5)
  return x.reshape(b, h // ps, ps, w // ps, ps, c).transpose(0, 1, 3, 2, 4, 5)


def _from_windows(x, grid):
  b, nx, ny, w1, w2, c = x.shape
  order = (0, 3, 1, 4, 2, 5) if grid else (0, 1, 3, 2, 4, 5)
  return x.transpose(order).reshape(b, nx * w1, ny * w2, c)


class OSABlock(nnx.Module):
  """MBConv, then block-window attention, channel attention, grid attention, grid channel
  attention, each followed by a gated feed-forward (`layer.N` indices as the reference)."""

  def __init__(self, dim: int, window_size: int, with_pe: bool, rngs: nnx.Rngs):
    self.window_size = window_size

    def attention():
      return PreNormResidual(dim, Attention(dim, dim // 4, window_size, with_pe, rngs), 1e-5)

    def feed_forward():
      return PreNormResidual(dim, GatedConvFeedForward(dim, rngs), 1e-6)

    def channel_attention(grid):
      return PreNormResidual(dim, ChannelAttention(dim, 4, window_size, grid, rngs), 1e-6)

    self.layer = nnx.List(
      [
        MBConvResidual(dim, rngs),
        Placeholder(),
        attention(),
        Placeholder(),
        feed_forward(),
        channel_attention(False),
        feed_forward(),
        Placeholder(),
        attention(),
        Placeholder(),
        feed_forward(),
        channel_attention(True),
        feed_forward(),
      ]
    )

  def __call__(self, x):
    layer, ps = self.layer, self.window_size
    x = layer[0](x)
    x = _from_windows(layer[2](_to_windows(x, ps, False)), False)
    x = layer[6](layer[5](layer[4](x)))
    x = _from_windows(layer[8](_to_windows(x, ps, True)), True)
    return layer[12](layer[11](layer[10](x)))


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] weights of torch's bilinear resize (align_corners=False) along one axis, with its
  float32 source coordinates."""
  scale = np.float32(in_size) / np.float32(out_size)
  matrix = np.zeros((out_size, in_size), np.float32)
  for dst in range(out_size):
    src = max(scale * (np.float32(dst) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = int(src)
    frac = min(max(src - np.float32(i0), np.float32(0)), np.float32(1))
    i1 = i0 + (1 if i0 < in_size - 1 else 0)
    matrix[dst, i0] += np.float32(1) - frac
    matrix[dst, i1] += frac
  return matrix


def resize_bilinear(x: jnp.ndarray, out_h: int, out_w: int) -> jnp.ndarray:
  """NHWC `F.interpolate(x, (out_h, out_w), mode="bilinear", align_corners=False)`."""
  _, h, w, _ = x.shape
  x = jnp.einsum("oh,nhwc->nowc", jnp.asarray(_bilinear_matrix(h, out_h)), x, precision=_HIGHEST)
  return jnp.einsum("pw,nowc->nopc", jnp.asarray(_bilinear_matrix(w, out_w)), x, precision=_HIGHEST)


class ESA(nnx.Module):
  """Enhanced spatial attention: strided conv, 7x7/3 max pool, conv, bilinear back, sigmoid gate."""

  def __init__(self, esa_channels: int, n_feats: int, rngs: nnx.Rngs):
    f = esa_channels
    self.conv1 = conv(n_feats, f, 1, rngs)
    self.conv_f = conv(f, f, 1, rngs)
    self.conv2 = Conv(f, f, (3, 3), strides=2, padding="VALID", rngs=rngs)
    self.conv3 = conv(f, f, 3, rngs)
    self.conv4 = conv(f, n_feats, 1, rngs)

  def __call__(self, x):
    _, h, w, _ = x.shape
    c1_ = self.conv1(x)
    c1 = self.conv2(c1_)
    v_max = lax.reduce_window(c1, -jnp.inf, lax.max, (1, 7, 7, 1), (1, 3, 3, 1), "VALID")
    c3 = resize_bilinear(self.conv3(v_max), h, w)
    return x * jax.nn.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class OSAG(nnx.Module):
  """`block_num` OSA blocks and a 1x1 conv, plus the input, then ESA."""

  def __init__(self, channels, bias, block_num, window_size, pe, rngs: nnx.Rngs):
    blocks = [OSABlock(channels, window_size, pe, rngs) for _ in range(block_num)]
    self.residual_layer = nnx.List([*blocks, conv(channels, channels, 1, rngs, use_bias=bias)])
    self.esa = ESA(max(channels // 4, 16), channels, rngs)

  def __call__(self, x):
    out = x
    for layer in self.residual_layer:
      out = layer(out)
    return self.esa(out + x)


class PixelShuffle(nnx.Module):
  def __init__(self, scale: int):
    self.factor = scale

  def __call__(self, x):
    return pixel_shuffle(x, self.factor)


class OmniSR(nnx.Module):
  """spandrel's OmniSR: conv, `res_num` OSAGs, conv + long skip, conv + pixel shuffle.

  Args (the reference's; `scale` is its `up_scale`): num_in_ch, num_out_ch, num_feat (a
  multiple of 4: four heads), block_num (OSA blocks per group), pe (relative position bias),
  window_size, res_num (groups), bias (of the input / output / upsampler / group convs).
  After padding, LR sides must be at least 16 (ESA's strided conv and 7x7 pool).
  """

  port_rules = PORT_RULES

  def __init__(
    self,
    scale: int = 4,
    num_in_ch: int = 3,
    num_out_ch: int = 3,
    num_feat: int = 64,
    block_num: int = 1,
    pe: bool = True,
    window_size: int = 8,
    res_num: int = 1,
    bias: bool = True,
    *,
    rngs: nnx.Rngs,
  ):
    if num_feat % 4:
      raise ValueError(f"OmniSR num_feat={num_feat} must be a multiple of 4 (four heads)")
    self.scale = scale
    self.num_in_ch = num_in_ch
    self.num_out_ch = num_out_ch
    self.num_feat = num_feat
    self.block_num = block_num
    self.pe = pe
    self.window_size = window_size
    self.res_num = res_num
    self.bias = bias
    self.residual_layer = nnx.List(
      [OSAG(num_feat, bias, block_num, window_size, pe, rngs) for _ in range(res_num)]
    )
    self.input = conv(num_in_ch, num_feat, 3, rngs, use_bias=bias)
    self.output = conv(num_feat, num_feat, 3, rngs, use_bias=bias)
    self.up = nnx.List(
      [conv(num_feat, num_out_ch * scale**2, 3, rngs, use_bias=bias), PixelShuffle(scale)]
    )

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    _, h, w, _ = lr.shape
    ws = self.window_size
    x = jnp.pad(lr, ((0, 0), (0, -h % ws), (0, -w % ws), (0, 0)))
    if min(x.shape[1:3]) < 16:
      raise ValueError(f"OmniSR: LR size {h}x{w} padded to {x.shape[1:3]}; need 16 or more")
    residual = self.input(x)
    out = residual
    for group in self.residual_layer:
      out = group(out)
    out = self.output(out) + residual
    for layer in self.up:
      out = layer(out)
    return out[:, : h * self.scale, : w * self.scale].astype(lr.dtype)


def detect_omnisr(state: StateDict) -> dict:
  """As spandrel: widths from `input`, scale from `up.0`, groups and blocks counted, window size
  from the relative position table ((2w - 1)**2 rows; 8 when there is none)."""
  num_feat, num_in_ch = architecture.shape(state, "input.weight")[:2]
  scale, num_out_ch = architecture.scale_and_out_channels(state, "up.0.weight", num_in_ch)
  res_num = architecture.count(state, r"residual_layer\.(\d+)\..+")
  block_num = architecture.count(state, r"residual_layer\.0\.residual_layer\.(\d+)\..+") - 1
  for g in range(res_num):
    architecture.shape(state, f"residual_layer.{g}.esa.conv4.weight")
    architecture.shape(state, f"residual_layer.{g}.residual_layer.{block_num}.weight")
    for i in range(block_num):
      architecture.shape(state, f"residual_layer.{g}.residual_layer.{i}.layer.12.fn.dwconv.weight")
  table = "residual_layer.0.residual_layer.0.layer.2.fn.rel_pos_bias.weight"
  pe = table in state
  window_size = int((np.sqrt(architecture.shape(state, table)[0]) + 1) / 2) if pe else 8
  return dict(
    scale=scale,
    num_in_ch=num_in_ch,
    num_out_ch=num_out_ch,
    num_feat=num_feat,
    block_num=block_num,
    pe=pe,
    window_size=window_size,
    res_num=res_num,
    bias="input.bias" in state,
  )


OMNISR_ARCH = architecture.Architecture(
  name="omnisr",
  module=OmniSR,
  signature=(
    "residual_layer.0.residual_layer.0.layer.0.fn.0.weight",
    "input.weight",
    "up.0.weight",
  ),
  detect=detect_omnisr,
  config_keys=(
    "num_in_ch",
    "num_out_ch",
    "num_feat",
    "block_num",
    "pe",
    "window_size",
    "res_num",
    "bias",
  ),
)
