"""SwinIR (Liang et al. 2021), as the reference implementation spandrel ships.

Variants (all loadable from their official state dicts, detected as spandrel does):
- classical SR: `upsampler="pixelshuffle"` (x2, x3, x4, x8),
- lightweight SR: `"pixelshuffledirect"` (one conv + pixel shuffle),
- real-world SR: `"nearest+conv"` (x2, x4, x8),
- denoising / JPEG artefact removal: `""` (x1; the JPEG models have window 7 and `img_range=255`),
- `resi_connection` "1conv" or "3conv"; `start_unshuffle` > 1 (files whose first conv is
  `conv_first.1`, after a pixel unshuffle).
NHWC float32 in [0, 1] -> NHWC x `scale`; any input size (reflect-padded to the window, cropped).
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax.models import architecture, swin
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import conv3x3, pixel_unshuffle
from sr_jax.weights.porting import PortRules


def _rename(module_path: str) -> str:
  # Files with a pixel-unshuffled input hold their first conv as `conv_first.1` (Sequential).
  return "conv_first" if module_path == "conv_first.1" else module_path


PORT_RULES = PortRules(
  rename=_rename,
  drop=("*.relative_position_index", "*.attn_mask"),  # recomputed from the input size
)


class WindowAttention(nnx.Module):
  """W-MSA with a learned relative position bias table (Swin V1)."""

  def __init__(self, dim, window, num_heads, qkv_bias, qk_scale, *, rngs):
    self.window = window
    self.num_heads = num_heads
    self.qk_scale = qk_scale or (dim // num_heads) ** -0.5
    table = nnx.initializers.truncated_normal(0.02)(
      rngs.params(), ((2 * window - 1) ** 2, num_heads)
    )
    self.relative_position_bias_table = nnx.Param(table)
    self.qkv = swin.linear(dim, 3 * dim, rngs, use_bias=qkv_bias)
    self.proj = swin.linear(dim, dim, rngs)

  def __call__(self, x, mask):
    b, nw, n, c = x.shape
    qkv = self.qkv(x).reshape(b, nw, n, 3, self.num_heads, c // self.num_heads)
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    logits = jnp.einsum("bwnhd,bwmhd->bwhnm", q * self.qk_scale, k)
    index = swin.relative_position_index(self.window).reshape(-1)
    bias = self.relative_position_bias_table[...][index].reshape(n, n, -1).transpose(2, 0, 1)
    return self.proj(swin.softmax_attention(logits + bias, v, mask))


class SwinTransformerBlock(nnx.Module):
  """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

  def __init__(self, dim, num_heads, window, shift, mlp_ratio, qkv_bias, qk_scale, *, rngs):
    self.window, self.shift = window, shift
    self.norm1 = swin.layer_norm(dim, rngs)
    self.attn = WindowAttention(dim, window, num_heads, qkv_bias, qk_scale, rngs=rngs)
    self.norm2 = swin.layer_norm(dim, rngs)
    self.mlp = swin.Mlp(dim, int(dim * mlp_ratio), rngs)

  def __call__(self, x):
    x = x + swin.shifted_window_attention(self.norm1(x), self.attn, self.window, self.shift)
    return x + self.mlp(self.norm2(x))


class RSTB(nnx.Module):
  """Residual Swin Transformer Block: blocks, a conv, plus the input."""

  def __init__(self, dim, depth, num_heads, window_size, img_size, mlp_ratio, qkv_bias, qk_scale,
               resi_connection, *, rngs):  # fmt: skip
    blocks = [
      SwinTransformerBlock(dim, num_heads, window, shift, mlp_ratio, qkv_bias, qk_scale, rngs=rngs)
      for window, shift in swin.block_windows(depth, img_size, 1, window_size)
    ]
    self.residual_group = swin.BasicLayer(blocks)
    self.conv = swin.residual_conv(resi_connection, dim, rngs)

  def __call__(self, x):
    return swin.apply_residual_conv(self.conv, self.residual_group(x)) + x


class PatchEmbed(nnx.Module):
  """Only a LayerNorm of the tokens (patch size 1), or nothing."""

  def __init__(self, dim, patch_norm, *, rngs):
    self.norm = swin.layer_norm(dim, rngs) if patch_norm else None

  def __call__(self, x):
    return self.norm(x) if self.norm is not None else x


class SwinIR(nnx.Module):
  """SwinIR; hyperparameters named and defaulted as the reference's constructor."""

  port_rules = PORT_RULES

  def __init__(
    self,
    scale: int = 1,
    img_size: int = 64,
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
    start_unshuffle: int = 1,
    num_feat: int = 64,
    *,
    rngs: nnx.Rngs,
  ):
    if len(depths) != len(num_heads):
      raise ValueError(f"SwinIR: depths {depths} and num_heads {num_heads} differ in length")
    self.scale = scale
    self.img_size = img_size
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
    self.start_unshuffle = start_unshuffle
    self.num_feat = num_feat
    self.upscale = scale * start_unshuffle  # what the trunk upsamples by
    if upsampler == "nearest+conv" and self.upscale not in (2, 4, 8):
      raise ValueError(f"SwinIR nearest+conv upsamples x2, x4 or x8, not x{self.upscale}")
    if upsampler == "" and self.upscale != 1:
      raise ValueError(f"SwinIR upsampler='' (denoising / JPEG) is x1, not x{self.upscale}")
    if upsampler not in ("pixelshuffle", "pixelshuffledirect", "nearest+conv", ""):
      raise ValueError(f"SwinIR: unknown upsampler {upsampler!r}")

    num_out_ch = in_chans
    self.conv_first = conv3x3(in_chans * start_unshuffle**2, embed_dim, rngs)
    self.patch_embed = PatchEmbed(embed_dim, patch_norm, rngs=rngs)
    self.layers = nnx.List(
      [
        RSTB(
          embed_dim,
          depth,
          heads,
          window_size,
          img_size,
          mlp_ratio,
          qkv_bias,
          None,
          resi_connection,
          rngs=rngs,
        )  # fmt: skip
        for depth, heads in zip(self.depths, self.num_heads)
      ]
    )
    self.norm = swin.layer_norm(embed_dim, rngs)
    self.conv_after_body = swin.residual_conv(resi_connection, embed_dim, rngs)
    if upsampler in ("pixelshuffle", "nearest+conv"):
      self.conv_before_upsample = swin.conv_lrelu(embed_dim, num_feat, rngs)
    if upsampler == "pixelshuffle":
      self.upsample = swin.upsample(self.upscale, num_feat, rngs)
      self.conv_last = conv3x3(num_feat, num_out_ch, rngs)
    elif upsampler == "pixelshuffledirect":
      self.upsample = swin.upsample_one_step(self.upscale, embed_dim, num_out_ch, rngs)
    elif upsampler == "nearest+conv":
      self.conv_up1 = conv3x3(num_feat, num_feat, rngs)
      if self.upscale >= 4:
        self.conv_up2 = conv3x3(num_feat, num_feat, rngs)
      if self.upscale == 8:
        self.conv_up3 = conv3x3(num_feat, num_feat, rngs)
      self.conv_hr = conv3x3(num_feat, num_feat, rngs)
      self.conv_last = conv3x3(num_feat, num_out_ch, rngs)
    else:
      self.conv_last = conv3x3(embed_dim, num_out_ch, rngs)

  def forward_features(self, x):
    x = self.patch_embed(x)
    for layer in self.layers:
      x = layer(x)
    return self.norm(x)

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    _, h, w, _ = lr.shape
    # The windows tile the trunk's features, which are pixel-unshuffled when start_unshuffle > 1.
    x = swin.pad_to_multiple(lr, self.window_size * self.start_unshuffle)
    mean = jnp.asarray(swin.input_mean(self.in_chans))
    x = (x - mean) * self.img_range
    if self.start_unshuffle > 1:
      x = pixel_unshuffle(x, self.start_unshuffle)
    feat = self.conv_first(x)
    feat = swin.apply_residual_conv(self.conv_after_body, self.forward_features(feat)) + feat
    if self.upsampler == "pixelshuffle":
      x = swin.sequential(self.conv_before_upsample, feat)
      x = self.conv_last(swin.sequential(self.upsample, x))
    elif self.upsampler == "pixelshuffledirect":
      x = swin.sequential(self.upsample, feat)
    elif self.upsampler == "nearest+conv":
      x = swin.sequential(self.conv_before_upsample, feat)
      convs = [self.conv_up1] + ([self.conv_up2] if self.upscale >= 4 else [])
      convs += [self.conv_up3] if self.upscale == 8 else []
      for conv in convs:
        x = lrelu(conv(swin.upsample_nearest(x, 2)))
      x = self.conv_last(lrelu(self.conv_hr(x)))
    else:
      x = x + self.conv_last(feat)
    x = x / self.img_range + mean
    return x[:, : h * self.scale, : w * self.scale]


def lrelu(x):
  return jax.nn.leaky_relu(x, 0.2)


def _block_keys(prefix: str, qkv_bias: bool) -> list[str]:
  names = ["norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.qkv.weight",
           "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight",
           "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]  # fmt: skip
  names += ["attn.qkv.bias"] if qkv_bias else []
  return [f"{prefix}.{name}" for name in names]


def detect_swinir(state: StateDict) -> dict:
  """SwinIR hyperparameters from a state dict, as spandrel's SwinIR detection."""
  if "absolute_pos_embed" in state:
    raise ValueError("absolute_pos_embed: absolute position embeddings (ape=True) are unsupported")
  if "conv_before_upsample.0.weight" in state:
    upsampler = "nearest+conv" if "conv_up1.weight" in state else "pixelshuffle"
  elif "upsample.0.weight" in state:
    upsampler = "pixelshuffledirect"
  else:
    upsampler = ""

  start_unshuffle = 1
  if "conv_first.1.weight" in state:
    first = architecture.shape(state, "conv_first.1.weight")
    start_unshuffle = round(np.sqrt(first[1] // 3))
  else:
    first = architecture.shape(state, "conv_first.weight")
  embed_dim, num_in_ch = first[0], first[1]
  in_chans = num_in_ch // start_unshuffle**2
  num_out_ch = (
    architecture.shape(state, "conv_last.weight")[0] if "conv_last.weight" in state else num_in_ch
  )

  num_feat = 64
  if upsampler == "nearest+conv":
    upscale = 2 ** sum(1 for key in state if "conv_up" in key and "bias" not in key)
    num_feat = architecture.shape(state, "conv_before_upsample.0.weight")[0]
    swin.require(state, ["conv_hr.weight", "conv_last.weight"])
  elif upsampler == "pixelshuffle":
    upscale, num_feat = swin.pixelshuffle_params(state, "upsample")
    swin.require(state, ["conv_last.weight"])
  elif upsampler == "pixelshuffledirect":
    upscale = int(np.sqrt(architecture.shape(state, "upsample.0.bias")[0] // num_out_ch))
  else:
    upscale = 1
    swin.require(state, ["conv_last.weight"])
  if upscale % start_unshuffle:
    raise ValueError(f"conv_first.1.weight: unshuffle x{start_unshuffle} but upscale x{upscale}")

  block0 = "layers.0.residual_group.blocks.0"
  mlp_ratio = float(architecture.shape(state, f"{block0}.mlp.fc1.bias")[0] / embed_dim)
  window_size = int(np.sqrt(architecture.shape(state, f"{block0}.attn.relative_position_index")[0]))
  img_size = 64
  mask_key = "layers.0.residual_group.blocks.1.attn_mask"
  if mask_key in state:
    img_size = int(np.sqrt(architecture.shape(state, mask_key)[0]) * window_size)
  elif "layers.0.residual_group.blocks.1.attn.relative_position_index" in state:
    # Buffers saved but no shift mask: trained at img_size <= window, where no block shifts
    # (spandrel assumes 64 here, and shifts).
    img_size = window_size
  qkv_bias = f"{block0}.attn.qkv.bias" in state

  depths, num_heads = swin.detect_stages(
    state,
    "layers",
    lambda prefix: _block_keys(prefix, qkv_bias),
    heads_key="attn.relative_position_bias_table",
    heads_axis=1,
  )
  swin.require(state, ["norm.weight", "norm.bias"])
  return dict(
    scale=upscale // start_unshuffle,
    img_size=img_size,
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
    start_unshuffle=start_unshuffle,
    num_feat=num_feat,
  )


SWINIR = architecture.Architecture(
  name="swinir",
  module=SwinIR,
  signature=(
    "layers.0.residual_group.blocks.0.norm1.weight",
    "layers.0.residual_group.blocks.0.mlp.fc1.bias",
    "layers.0.residual_group.blocks.0.attn.relative_position_index",
  ),
  detect=detect_swinir,
  config_keys=(
    "img_size",
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
    "start_unshuffle",
    "num_feat",
  ),
)
