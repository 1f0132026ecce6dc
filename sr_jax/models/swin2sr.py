"""Swin2SR (Conde et al. 2022): SwinIR with SwinV2 blocks, as the reference spandrel ships.

SwinV2 attention: cosine similarity scaled by a learned, clamped logit scale; the relative position
bias is an MLP (`cpb_mlp`) of log-spaced relative coordinates, squashed to 16 * sigmoid; blocks are
post-norm (x + norm(attn(x))). Variants, detected from the state dict as spandrel does: upsampler
"pixelshuffle" (classical, x2/x3/x4/x8), "pixelshuffle_aux" (compressed-input SR, with a bicubic
branch), "pixelshuffle_hf" (a second, high-frequency trunk; the output is the sum of both),
"pixelshuffledirect" (lightweight), "nearest+conv" (real-world, x4), "" (x1 restoration);
resi_connection "1conv" / "3conv". NHWC float32 in [0, 1] -> NHWC x `scale`, any input size.
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax.conv import Conv
from sr_jax.models import architecture, swin
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import conv3x3
from sr_jax.weights.porting import PortRules

PORT_RULES = PortRules(
  drop=("*.relative_position_index", "*.relative_coords_table", "*.attn_mask"),  # recomputed
)

_MAX_LOGIT_SCALE = float(np.log(np.float32(100.0)))  # the reference clamps at log(1 / 0.01)


@functools.lru_cache(maxsize=16)
def relative_coords_table(window: int) -> np.ndarray:
  """[(2w-1)^2, 2] log-spaced relative coordinates, in [-1, 1] (pretrained_window_size 0)."""
  coords = np.arange(-(window - 1), window, dtype=np.float32)
  table = np.stack(np.meshgrid(coords, coords, indexing="ij"), axis=-1)
  table = table / np.float32(window - 1) * np.float32(8)
  table = np.sign(table) * np.log2(np.abs(table) + np.float32(1)) / np.float32(np.log2(8))
  return table.reshape(-1, 2).astype(np.float32)


class ReLU(nnx.Module):
  def __call__(self, x):
    return jax.nn.relu(x)


class WindowAttention(nnx.Module):
  """SwinV2 W-MSA: cosine attention and a continuous (MLP) relative position bias."""

  def __init__(self, dim, window, num_heads, qkv_bias, *, rngs):
    self.window = window
    self.num_heads = num_heads
    self.logit_scale = nnx.Param(jnp.full((num_heads, 1, 1), np.log(10.0), jnp.float32))
    self.cpb_mlp = nnx.List(
      [swin.linear(2, 512, rngs), ReLU(), swin.linear(512, num_heads, rngs, use_bias=False)]
    )
    self.qkv = swin.linear(dim, 3 * dim, rngs, use_bias=False)
    if qkv_bias:
      self.q_bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
      self.v_bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
    else:
      self.q_bias = self.v_bias = None
    self.proj = swin.linear(dim, dim, rngs)

  def __call__(self, x, mask):
    b, nw, n, c = x.shape
    qkv = self.qkv(x)
    if self.q_bias is not None:  # no key bias
      v_bias = self.v_bias[...]
      qkv = qkv + jnp.concatenate([self.q_bias[...], jnp.zeros_like(v_bias), v_bias])
    qkv = qkv.reshape(b, nw, n, 3, self.num_heads, c // self.num_heads)
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

    def normalize(t):  # F.normalize(dim=-1)
      return t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), 1e-12)

    logits = jnp.einsum("bwnhd,bwmhd->bwhnm", normalize(q), normalize(k))
    logits = logits * jnp.exp(jnp.minimum(self.logit_scale[...], _MAX_LOGIT_SCALE))
    table = swin.sequential(self.cpb_mlp, jnp.asarray(relative_coords_table(self.window)))
    index = swin.relative_position_index(self.window).reshape(-1)
    bias = table[index].reshape(n, n, -1).transpose(2, 0, 1)
    logits = logits + 16 * jax.nn.sigmoid(bias)
    return self.proj(swin.softmax_attention(logits, v, mask))


class SwinTransformerBlock(nnx.Module):
  """Post-norm block: x + norm1(attn(x)), then x + norm2(mlp(x))."""

  def __init__(self, dim, num_heads, window, shift, mlp_ratio, qkv_bias, *, rngs):
    self.window, self.shift = window, shift
    self.attn = WindowAttention(dim, window, num_heads, qkv_bias, rngs=rngs)
    self.norm1 = swin.layer_norm(dim, rngs)
    self.mlp = swin.Mlp(dim, int(dim * mlp_ratio), rngs)
    self.norm2 = swin.layer_norm(dim, rngs)

  def __call__(self, x):
    x = x + self.norm1(swin.shifted_window_attention(x, self.attn, self.window, self.shift))
    return x + self.norm2(self.mlp(x))


class PatchEmbed(nnx.Module):
  """A patch_size x patch_size conv (stride patch_size), then an optional LayerNorm."""

  def __init__(self, dim, patch_size, norm, *, rngs):
    kernel = (patch_size, patch_size)
    self.proj = Conv(dim, dim, kernel, strides=kernel, padding="VALID", rngs=rngs)
    self.norm = swin.layer_norm(dim, rngs) if norm else None

  def __call__(self, x):
    x = self.proj(x)
    return self.norm(x) if self.norm is not None else x


class RSTB(nnx.Module):
  """Residual Swin Transformer Block: blocks, a conv, the patch projection, plus the input."""

  def __init__(self, dim, depth, num_heads, window_size, img_size, patch_size, mlp_ratio,
               qkv_bias, resi_connection, *, rngs):  # fmt: skip
    blocks = [
      SwinTransformerBlock(dim, num_heads, window, shift, mlp_ratio, qkv_bias, rngs=rngs)
      for window, shift in swin.block_windows(depth, img_size, patch_size, window_size)
    ]
    self.residual_group = swin.BasicLayer(blocks)
    self.conv = swin.residual_conv(resi_connection, dim, rngs)
    self.patch_embed = PatchEmbed(dim, patch_size, norm=False, rngs=rngs)

  def __call__(self, x):
    return self.patch_embed(swin.apply_residual_conv(self.conv, self.residual_group(x))) + x


@functools.lru_cache(maxsize=64)
def _torch_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out, in] weights of `F.interpolate(mode="bicubic", align_corners=False, size=...)` along
  one axis: half-pixel source coordinates (not clamped), Keys cubic A = -0.75, border taps
  clamped to the edge pixel."""
  a = -0.75
  matrix = np.zeros((out_size, in_size), np.float64)
  for dst in range(out_size):
    src = (dst + 0.5) * (in_size / out_size) - 0.5
    base = int(np.floor(src))
    t = src - base
    coeffs = (
      ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
      ((a + 2) * t - (a + 3)) * t * t + 1,
      ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
      ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
    )
    for offset, coeff in zip((-1, 0, 1, 2), coeffs):
      matrix[dst, min(max(base + offset, 0), in_size - 1)] += coeff
  return matrix.astype(np.float32)


def resize_bicubic_torch(x: jnp.ndarray, out_h: int, out_w: int) -> jnp.ndarray:
  """NHWC resize as PyTorch's bicubic `F.interpolate(size=(out_h, out_w))`, as two matmuls."""
  _, h, w, _ = x.shape
  hi = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,nhwc->nowc", jnp.asarray(_torch_bicubic_matrix(h, out_h)), x, precision=hi)
  return jnp.einsum("pw,nowc->nopc", jnp.asarray(_torch_bicubic_matrix(w, out_w)), x, precision=hi)


UPSAMPLERS = (
  "pixelshuffle",
  "pixelshuffle_aux",
  "pixelshuffle_hf",
  "pixelshuffledirect",
  "nearest+conv",
  "",
)


class Swin2SR(nnx.Module):
  """Swin2SR; hyperparameters named and defaulted as the reference's constructor."""

  port_rules = PORT_RULES

  def __init__(
    self,
    scale: int = 2,
    img_size: int = 64,
    patch_size: int = 1,
    in_chans: int = 3,
    embed_dim: int = 96,
    depths=(6, 6, 6, 6),
    num_heads=(6, 6, 6, 6),
    window_size: int = 7,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    patch_norm: bool = True,
    img_range: float = 1.0,
    upsampler: str = "",
    resi_connection: str = "1conv",
    num_feat: int = 64,
    *,
    rngs: nnx.Rngs,
  ):
    if len(depths) != len(num_heads):
      raise ValueError(f"Swin2SR: depths {depths} and num_heads {num_heads} differ in length")
    if patch_size != 1:  # the reference's features would not match its token grid either
      raise ValueError(f"Swin2SR: patch_size {patch_size} is unsupported (only 1)")
    if upsampler not in UPSAMPLERS:
      raise ValueError(f"Swin2SR: unknown upsampler {upsampler!r}; known: {UPSAMPLERS}")
    if (upsampler == "") != (scale == 1) or (upsampler == "nearest+conv" and scale != 4):
      raise ValueError(f"Swin2SR: upsampler {upsampler!r} cannot upscale x{scale}")
    self.scale = scale
    self.img_size = img_size
    self.patch_size = patch_size
    self.in_chans = in_chans
    self.embed_dim = embed_dim
    self.depths = tuple(int(d) for d in depths)
    self.num_heads = tuple(int(h) for h in num_heads)
    self.window_size = window_size
    self.mlp_ratio = float(mlp_ratio)
    self.qkv_bias = qkv_bias
    self.patch_norm = patch_norm
    self.img_range = float(img_range)
    self.upsampler = upsampler
    self.resi_connection = resi_connection
    self.num_feat = num_feat

    num_out_ch = in_chans

    def trunk():
      return nnx.List(
        [
          RSTB(
            embed_dim,
            depth,
            heads,
            window_size,
            img_size,
            patch_size,
            mlp_ratio,
            qkv_bias,
            resi_connection,
            rngs=rngs,
          )  # fmt: skip
          for depth, heads in zip(self.depths, self.num_heads)
        ]
      )

    self.conv_first = conv3x3(in_chans, embed_dim, rngs)
    self.patch_embed = PatchEmbed(embed_dim, patch_size, patch_norm, rngs=rngs)
    self.layers = trunk()
    if upsampler == "pixelshuffle_hf":
      self.layers_hf = trunk()
    self.norm = swin.layer_norm(embed_dim, rngs)
    self.conv_after_body = swin.residual_conv(resi_connection, embed_dim, rngs)
    if upsampler in ("pixelshuffle", "pixelshuffle_aux", "pixelshuffle_hf", "nearest+conv"):
      self.conv_before_upsample = swin.conv_lrelu(embed_dim, num_feat, rngs)
    if upsampler in ("pixelshuffle", "pixelshuffle_aux", "pixelshuffle_hf"):
      self.upsample = swin.upsample(scale, num_feat, rngs)
      self.conv_last = conv3x3(num_feat, num_out_ch, rngs)
    if upsampler == "pixelshuffle_aux":
      self.conv_bicubic = conv3x3(in_chans, num_feat, rngs)
      self.conv_aux = conv3x3(num_feat, num_out_ch, rngs)
      self.conv_after_aux = swin.conv_lrelu(3, num_feat, rngs)
    elif upsampler == "pixelshuffle_hf":
      self.upsample_hf = swin.upsample(scale, num_feat, rngs)
      self.conv_first_hf = swin.conv_lrelu(num_feat, embed_dim, rngs)
      self.conv_after_body_hf = conv3x3(embed_dim, embed_dim, rngs)
      self.conv_before_upsample_hf = swin.conv_lrelu(embed_dim, num_feat, rngs)
      self.conv_last_hf = conv3x3(num_feat, num_out_ch, rngs)
    elif upsampler == "pixelshuffledirect":
      self.upsample = swin.upsample_one_step(scale, embed_dim, num_out_ch, rngs)
    elif upsampler == "nearest+conv":
      self.conv_up1 = conv3x3(num_feat, num_feat, rngs)
      self.conv_up2 = conv3x3(num_feat, num_feat, rngs)
      self.conv_hr = conv3x3(num_feat, num_feat, rngs)
      self.conv_last = conv3x3(num_feat, num_out_ch, rngs)
    elif upsampler == "":
      self.conv_last = conv3x3(embed_dim, num_out_ch, rngs)

  def forward_features(self, x, layers):
    x = self.patch_embed(x)
    for layer in layers:
      x = layer(x)
    return self.norm(x)

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    _, h, w, _ = lr.shape
    out_h, out_w = h * self.scale, w * self.scale
    x = swin.pad_to_multiple(lr, self.window_size)
    mean = jnp.asarray(swin.input_mean(self.in_chans))
    x = (x - mean) * self.img_range
    if self.upsampler == "":
      feat = self.conv_first(x)
      x = x + self.conv_last(self._residual_body(feat))
    else:
      feat = self._residual_body(self.conv_first(x))
      x = self._reconstruct(x, feat, out_h, out_w)
    x = x / self.img_range + mean
    return x[:, :out_h, :out_w]

  def _residual_body(self, feat, layers=None, conv_after_body=None):
    layers = self.layers if layers is None else layers
    conv = self.conv_after_body if conv_after_body is None else conv_after_body
    return swin.apply_residual_conv(conv, self.forward_features(feat, layers)) + feat

  def _reconstruct(self, x, feat, out_h, out_w):
    if self.upsampler == "pixelshuffle":
      x = swin.sequential(self.conv_before_upsample, feat)
      return self.conv_last(swin.sequential(self.upsample, x))
    if self.upsampler == "pixelshuffle_aux":
      # The reference resizes the padded input straight to the unpadded output size.
      bicubic = self.conv_bicubic(resize_bicubic_torch(x, out_h, out_w))
      aux = self.conv_aux(swin.sequential(self.conv_before_upsample, feat))
      x = swin.sequential(self.upsample, swin.sequential(self.conv_after_aux, aux))
      return self.conv_last(x[:, :out_h, :out_w] + bicubic)
    if self.upsampler == "pixelshuffle_hf":
      before = swin.sequential(self.conv_before_upsample, feat)
      out = self.conv_last(swin.sequential(self.upsample, before))
      hf = swin.sequential(self.conv_first_hf, before)
      hf = self._residual_body(hf, self.layers_hf, self.conv_after_body_hf)
      hf = swin.sequential(self.conv_before_upsample_hf, hf)
      return out + self.conv_last_hf(swin.sequential(self.upsample_hf, hf))
    if self.upsampler == "pixelshuffledirect":
      return swin.sequential(self.upsample, feat)
    # nearest+conv
    x = swin.sequential(self.conv_before_upsample, feat)
    for conv in (self.conv_up1, self.conv_up2):
      x = jax.nn.leaky_relu(conv(swin.upsample_nearest(x, 2)), 0.2)
    return self.conv_last(jax.nn.leaky_relu(self.conv_hr(x), 0.2))


def _block_keys(prefix: str, qkv_bias: bool) -> list[str]:
  names = ["norm1.weight", "norm1.bias", "attn.logit_scale", "attn.cpb_mlp.0.weight",
           "attn.cpb_mlp.0.bias", "attn.cpb_mlp.2.weight", "attn.qkv.weight", "attn.proj.weight",
           "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
           "mlp.fc2.weight", "mlp.fc2.bias"]  # fmt: skip
  names += ["attn.q_bias", "attn.v_bias"] if qkv_bias else []
  return [f"{prefix}.{name}" for name in names]


def _trunk(state: StateDict, name: str, qkv_bias: bool) -> tuple[list[int], list[int]]:
  """(depths, num_heads) of `layers` / `layers_hf`, checking every block's keys."""
  return swin.detect_stages(
    state,
    name,
    lambda prefix: _block_keys(prefix, qkv_bias),
    heads_key="attn.logit_scale",
    heads_axis=0,
    stage_keys=("patch_embed.proj.weight",),
  )


def detect_swin2sr(state: StateDict) -> dict:
  """Swin2SR hyperparameters from a state dict, as spandrel's Swin2SR detection."""
  if "absolute_pos_embed" in state:
    raise ValueError("absolute_pos_embed: absolute position embeddings (ape=True) are unsupported")
  embed_dim, in_chans = architecture.shape(state, "conv_first.weight")[:2]
  patch_size = architecture.shape(state, "patch_embed.proj.weight")[2]
  if patch_size != 1:
    raise ValueError(f"patch_embed.proj.weight: patch_size {patch_size} is unsupported (only 1)")
  qkv_bias = "layers.0.residual_group.blocks.0.attn.q_bias" in state
  depths, num_heads = _trunk(state, "layers", qkv_bias)
  block0 = "layers.0.residual_group.blocks.0"
  mlp_ratio = float(architecture.shape(state, f"{block0}.mlp.fc1.weight")[0] / embed_dim)

  if "conv_bicubic.weight" in state:
    upsampler = "pixelshuffle_aux"
    swin.require(state, ["conv_aux.weight", "conv_after_aux.0.weight"])
  elif "conv_hr.weight" in state:
    upsampler = "nearest+conv"
    swin.require(state, ["conv_up1.weight", "conv_up2.weight"])
  elif "conv_after_body_hf.weight" in state:
    upsampler = "pixelshuffle_hf"
    if _trunk(state, "layers_hf", qkv_bias) != (depths, num_heads):
      raise ValueError("layers_hf.*: the high-frequency trunk differs from layers.*")
    swin.require(state, ["conv_first_hf.0.weight", "conv_before_upsample_hf.0.weight"])
    swin.require(state, ["conv_last_hf.weight", "upsample_hf.0.weight"])
  elif "conv_before_upsample.0.weight" in state:
    upsampler = "pixelshuffle"
  elif "upsample.0.weight" in state:
    upsampler = "pixelshuffledirect"
  else:
    upsampler = ""

  num_feat = 64
  if "conv_before_upsample.0.weight" in state:
    num_feat = architecture.shape(state, "conv_before_upsample.0.weight")[0]
  if upsampler == "":
    upscale = 1
  elif upsampler == "nearest+conv":
    upscale = 4  # the reference builds only x4
  elif upsampler == "pixelshuffledirect":
    upscale = int(np.sqrt(architecture.shape(state, "upsample.0.weight")[0] // in_chans))
  else:
    upscale, _ = swin.pixelshuffle_params(state, "upsample")
  if upsampler != "pixelshuffledirect":
    swin.require(state, ["conv_last.weight"])

  window_size = int(np.sqrt(architecture.shape(state, f"{block0}.attn.relative_position_index")[0]))
  mask_key = "layers.0.residual_group.blocks.1.attn_mask"
  if mask_key in state:
    resolution = int(np.sqrt(architecture.shape(state, mask_key)[0] * window_size * window_size))
    img_size = resolution * patch_size
  else:
    img_size = patch_size * window_size  # no shifted windows (spandrel's assumption)
  swin.require(state, ["norm.weight", "norm.bias"])
  return dict(
    scale=upscale,
    img_size=img_size,
    patch_size=patch_size,
    in_chans=in_chans,
    embed_dim=embed_dim,
    depths=tuple(depths),
    num_heads=tuple(num_heads),
    window_size=window_size,
    mlp_ratio=mlp_ratio,
    qkv_bias=qkv_bias,
    patch_norm="patch_embed.norm.weight" in state,
    # The JPEG models are the only ones with window 7, and they work in 0..255 (spandrel's rule).
    img_range=255.0 if window_size == 7 else 1.0,
    upsampler=upsampler,
    resi_connection=swin.residual_conv_kind(state, "conv_after_body"),
    num_feat=num_feat,
  )


SWIN2SR = architecture.Architecture(
  name="swin2sr",
  module=Swin2SR,
  signature=(
    "layers.0.residual_group.blocks.0.norm1.weight",
    "patch_embed.proj.weight",
    "conv_first.weight",
    "layers.0.residual_group.blocks.0.mlp.fc1.bias",
    "layers.0.residual_group.blocks.0.attn.relative_position_index",
  ),
  detect=detect_swin2sr,
  config_keys=(
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "mlp_ratio",
    "qkv_bias",
    "patch_norm",
    "img_range",
    "upsampler",
    "resi_connection",
    "num_feat",
  ),
)
