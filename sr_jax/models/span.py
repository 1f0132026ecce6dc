"""SPAN (Swift Parameter-free Attention Network, NTIRE 2024 efficient SR), as spandrel's `SPAN`.

Attribute names follow the official PyTorch modules (`conv_1.sk`, `block_1.c1_r.conv.0`, ...), so
official state dicts map key by key with `PORT_RULES`. Each `Conv3XC` keeps its training-form
parameters (a 1x1 skip conv and a 1x1 -> 3x3 -> 1x1 chain) and convolves with the single 3x3
kernel they fuse into, as the reference's eval forward does (it refuses the stored `eval_conv` and
recomputes it from the same parameters on every call).
"""

from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype
import jax
from jax import lax
import jax.numpy as jnp

from sr_jax import conv
from sr_jax.conv import Conv
from sr_jax.models import architecture
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import pixel_shuffle
from sr_jax.weights.porting import PortRules

# `eval_conv` is recomputed from the training-form parameters; `no_norm` is a flag buffer (its
# presence is `norm=False`, which detection reads).
PORT_RULES = PortRules(drop=("*.eval_conv.weight", "*.eval_conv.bias", "no_norm"))

_HIGHEST = lax.Precision.HIGHEST


class Conv3XC(nnx.Module):
  """A 3x3 conv reparameterised as skip 1x1 + (1x1 -> 3x3 -> 1x1) with `gain` times the width."""

  def __init__(self, c_in: int, c_out: int, gain: int, relu: bool, rngs: nnx.Rngs):
    self.has_relu = relu
    self.dtype = None  # compute dtype, as Flax layers' (None: that of the input and weights)
    self.sk = Conv(c_in, c_out, (1, 1), padding="VALID", rngs=rngs)
    self.conv = nnx.List(
      [
        Conv(c_in, c_in * gain, (1, 1), padding="VALID", rngs=rngs),
        Conv(c_in * gain, c_out * gain, (3, 3), padding="VALID", rngs=rngs),
        Conv(c_out * gain, c_out, (1, 1), padding="VALID", rngs=rngs),
      ]
    )

  def fused(self) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(3x3 HWIO kernel, bias) of the whole block: the reference's `update_params`."""
    w1 = self.conv[0].kernel[...][0, 0]  # [in, mid]
    w2 = self.conv[1].kernel[...]  # [3, 3, mid, mid_out]
    w3 = self.conv[2].kernel[...][0, 0]  # [mid_out, out]
    b1, b2, b3 = (c.bias[...] for c in self.conv)
    kernel = jnp.einsum("im,hwmn,no->hwio", w1, w2, w3, precision=_HIGHEST)
    # conv.0's bias also reaches the padded border (1x1 conv of zeros), so it enters every tap.
    b = jnp.einsum("m,hwmn->n", b1, w2, precision=_HIGHEST) + b2
    bias = jnp.einsum("n,no->o", b, w3, precision=_HIGHEST) + b3
    kernel = kernel.at[1, 1].add(self.sk.kernel[...][0, 0])
    return kernel, bias + self.sk.bias[...]

  def __call__(self, x):
    x, kernel, bias = promote_dtype((x, *self.fused()), dtype=self.dtype)
    out = conv.conv_general_dilated(
      x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    out = out + bias
    if self.has_relu:
      out = jax.nn.leaky_relu(out, negative_slope=0.05)
    return out


class SPAB(nnx.Module):
  """Swift parameter-free attention block: three Conv3XC, attention = sigmoid(out3) - 0.5."""

  def __init__(self, channels: int, rngs: nnx.Rngs):
    self.c1_r = Conv3XC(channels, channels, 2, False, rngs)
    self.c2_r = Conv3XC(channels, channels, 2, False, rngs)
    self.c3_r = Conv3XC(channels, channels, 2, False, rngs)

  def __call__(self, x):
    # The reference's SiLU is in place, so the out1 it returns (used by block_6) is activated.
    out1 = jax.nn.silu(self.c1_r(x))
    out2 = jax.nn.silu(self.c2_r(out1))
    out3 = self.c3_r(out2)
    sim_att = jax.nn.sigmoid(out3) - 0.5
    return (out3 + x) * sim_att, out1


class SPAN(nnx.Module):
  """spandrel's SPAN: six SPABs, a 1x1 fusion of four taps, a pixel-shuffle upsampler.

  Args:
    scale: the upscaling factor (the reference's `upscale`).
    num_in_ch, num_out_ch: image channels.
    feature_channels: width of the body.
    bias: unused by the reference (kept for its signature).
    norm: subtract `rgb_mean` and multiply by `img_range` first (False when the state dict holds
      the `no_norm` buffer).
    img_range, rgb_mean: the input normalisation (not stored in state dicts).
  """

  port_rules = PORT_RULES

  def __init__(
    self,
    scale: int = 4,
    num_in_ch: int = 3,
    num_out_ch: int = 3,
    feature_channels: int = 48,
    bias: bool = True,
    norm: bool = True,
    img_range: float = 255.0,
    rgb_mean: tuple[float, ...] = (0.4488, 0.4371, 0.4040),
    *,
    rngs: nnx.Rngs,
  ):
    self.scale = scale
    self.num_in_ch = num_in_ch
    self.num_out_ch = num_out_ch
    self.feature_channels = feature_channels
    self.norm = norm
    self.img_range = img_range
    self.rgb_mean = tuple(rgb_mean)
    c = feature_channels
    self.conv_1 = Conv3XC(num_in_ch, c, 2, False, rngs)
    self.block_1 = SPAB(c, rngs)
    self.block_2 = SPAB(c, rngs)
    self.block_3 = SPAB(c, rngs)
    self.block_4 = SPAB(c, rngs)
    self.block_5 = SPAB(c, rngs)
    self.block_6 = SPAB(c, rngs)
    self.conv_cat = Conv(4 * c, c, (1, 1), padding="VALID", rngs=rngs)
    self.conv_2 = Conv3XC(c, c, 2, False, rngs)
    self.upsampler = nnx.List([Conv(c, num_out_ch * scale**2, (3, 3), padding="SAME", rngs=rngs)])

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    x = lr
    if self.norm:
      x = (x - jnp.asarray(self.rgb_mean, x.dtype)) * self.img_range
    feature = self.conv_1(x)
    b1, _ = self.block_1(feature)
    b2, _ = self.block_2(b1)
    b3, _ = self.block_3(b2)
    b4, _ = self.block_4(b3)
    b5, _ = self.block_5(b4)
    b6, b5_2 = self.block_6(b5)
    b6 = self.conv_2(b6)
    out = self.conv_cat(jnp.concatenate([feature, b6, b1, b5_2], -1))
    return pixel_shuffle(self.upsampler[0](out), self.scale).astype(lr.dtype)


def detect_span(state: StateDict) -> dict:
  """As spandrel: widths from `conv_1.sk`, scale and output channels from `upsampler.0`."""
  out_channels, num_in_ch = architecture.shape(state, "conv_1.sk.weight")[:2]
  for key in ("block_6.c3_r.sk.weight", "conv_2.conv.2.weight", "conv_cat.weight"):
    architecture.shape(state, key)
  scale, num_out_ch = architecture.scale_and_out_channels(state, "upsampler.0.weight", num_in_ch)
  return dict(
    scale=scale,
    num_in_ch=num_in_ch,
    num_out_ch=num_out_ch,
    feature_channels=out_channels,
    norm="no_norm" not in state,
  )


SPAN_ARCH = architecture.Architecture(
  name="span",
  module=SPAN,
  signature=("conv_1.sk.weight", "block_1.c1_r.sk.weight", "conv_cat.weight", "upsampler.0.weight"),
  detect=detect_span,
  config_keys=("num_in_ch", "num_out_ch", "feature_channels", "norm"),
)
