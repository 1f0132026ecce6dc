"""Real-CUGAN (bilibili's cascaded U-Nets for anime SR), as spandrel's `UpCunet*` (eval forward).

One class for the four networks spandrel loads: `UpCunet2x`, `UpCunet3x`, `UpCunet4x` (each also
"pro": another input range) and `UpCunet2x_fast` (`fast=True`, on a pixel-unshuffled input).
Attribute names mirror the PyTorch modules (`unet1.conv1.conv.0`, `unet2.conv3.seblock.conv1`,
`conv_final`), so state dicts port key by key; the transposed convs' `[in, out, kh, kw]` weights
become `[kh, kw, in, out]` kernels. The forward is the reference's untiled one: reflect padding to
the U-Nets' margins, every crop, and the final crop back to `scale` x the input size.
"""

import math

from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype
import jax
import jax.numpy as jnp

from sr_jax import conv as sr_conv
from sr_jax.conv import Conv
from sr_jax.models import architecture
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import pixel_shuffle, pixel_unshuffle
from sr_jax.models.realesrgan import upsample_nearest
from sr_jax.weights.porting import PortRules

_NHWC = ("NHWC", "HWIO", "NHWC")


def _transposed_kernel(array):
  return "kernel", array.transpose(2, 3, 0, 1)  # torch [in, out, kh, kw] -> [kh, kw, in, out]


PORT_RULES = PortRules(
  overrides={
    "*.conv2_up.weight": _transposed_kernel,
    "*.conv3_up.weight": _transposed_kernel,
    "*.conv4_up.weight": _transposed_kernel,
    "unet1.conv_bottom.weight": _transposed_kernel,  # unet2's conv_bottom is a plain conv
  },
  drop=("pro",),  # the "pro" marker buffer: a hyperparameter, not a weight
)


def lrelu(x):
  return jax.nn.leaky_relu(x, negative_slope=0.1)


def crop(x, margin: int):
  """`F.pad(x, (-m, -m, -m, -m))` on NHWC."""
  return x[:, margin:-margin, margin:-margin]


def valid_conv(in_features, out_features, kernel_size, rngs, stride=1):
  return Conv(
    in_features, out_features, (kernel_size,) * 2, strides=stride, padding="VALID", rngs=rngs
  )


class ConvTranspose(nnx.Module):
  """`nn.ConvTranspose2d(in, out, k, stride, padding)`, computed as one stride-1 conv to
  stride**2 phases, a pixel shuffle and a crop (no zero-dilated input).

  Output side `(n - 1) * stride + k - 2 * padding`, as PyTorch's.
  """

  def __init__(self, in_features, out_features, kernel_size, stride, padding, rngs: nnx.Rngs):
    self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
    self.dtype = None  # compute dtype, as Flax layers' (None: that of the input and weights)
    init = nnx.initializers.lecun_normal()
    shape = (kernel_size, kernel_size, in_features, out_features)
    self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))

  def __call__(self, x):
    k, s, p = self.kernel_size, self.stride, self.padding
    taps = math.ceil(k / s)
    x, kernel, bias = promote_dtype((x, self.kernel[...], self.bias[...]), dtype=self.dtype)
    _, _, cin, cout = kernel.shape
    # Tap t = q * s + r of the transposed conv feeds phase r; per phase, a correlation with the
    # taps q flipped over the input padded by taps - 1 ("full").
    kernel = jnp.pad(kernel, ((0, taps * s - k), (0, taps * s - k), (0, 0), (0, 0)))
    kernel = kernel.reshape(taps, s, taps, s, cin, cout)[::-1, :, ::-1]
    kernel = kernel.transpose(0, 2, 4, 5, 1, 3).reshape(taps, taps, cin, cout * s * s)
    pads = ((taps - 1, taps - 1), (taps - 1, taps - 1))
    y = sr_conv.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_NHWC)
    y = pixel_shuffle(y, s)  # channel o * s * s + r_h * s + r_w -> offset (r_h, r_w)
    _, h, w, _ = x.shape
    out_h, out_w = (h - 1) * s + k - 2 * p, (w - 1) * s + k - 2 * p
    return y[:, p : p + out_h, p : p + out_w] + bias


class SEBlock(nnx.Module):
  def __init__(self, in_channels: int, rngs: nnx.Rngs, reduction: int = 8):
    self.conv1 = valid_conv(in_channels, in_channels // reduction, 1, rngs)
    self.conv2 = valid_conv(in_channels // reduction, in_channels, 1, rngs)

  def __call__(self, x):
    x0 = jnp.mean(x, axis=(1, 2), keepdims=True)
    return x * jax.nn.sigmoid(self.conv2(jax.nn.relu(self.conv1(x0))))


class LeakyReLU(nnx.Module):
  def __call__(self, x):
    return lrelu(x)


class UNetConv(nnx.Module):
  """Two unpadded 3x3 convs with LeakyReLU(0.1), then squeeze-excitation if `se`."""

  def __init__(self, in_channels, mid_channels, out_channels, se: bool, rngs: nnx.Rngs):
    self.conv = nnx.List(
      [
        valid_conv(in_channels, mid_channels, 3, rngs),
        LeakyReLU(),
        valid_conv(mid_channels, out_channels, 3, rngs),
        LeakyReLU(),
      ]
    )
    self.seblock = SEBlock(out_channels, rngs) if se else None

  def __call__(self, x):
    for layer in self.conv:
      x = layer(x)
    return x if self.seblock is None else self.seblock(x)


class UNet1(nnx.Module):
  """The first U-Net (one level); its transposed `conv_bottom` upsamples x2 (x3: `UNet1x3`)."""

  def __init__(self, in_channels, out_channels, rngs: nnx.Rngs, x3: bool = False):
    self.conv1 = UNetConv(in_channels, 32, 64, False, rngs)
    self.conv1_down = valid_conv(64, 64, 2, rngs, stride=2)
    self.conv2 = UNetConv(64, 128, 64, True, rngs)
    self.conv2_up = ConvTranspose(64, 64, 2, 2, 0, rngs)
    self.conv3 = valid_conv(64, 64, 3, rngs)
    bottom = (5, 3, 2) if x3 else (4, 2, 3)
    self.conv_bottom = ConvTranspose(64, out_channels, *bottom, rngs)

  def __call__(self, x):
    x1 = self.conv1(x)
    x2 = self.conv2(lrelu(self.conv1_down(x1)))
    x2 = lrelu(self.conv2_up(x2))
    x3 = lrelu(self.conv3(crop(x1, 4) + x2))
    return self.conv_bottom(x3)


class UNet2(nnx.Module):
  """The second U-Net (two levels), same size in and out (minus its margins)."""

  def __init__(self, in_channels, out_channels, rngs: nnx.Rngs):
    self.conv1 = UNetConv(in_channels, 32, 64, False, rngs)
    self.conv1_down = valid_conv(64, 64, 2, rngs, stride=2)
    self.conv2 = UNetConv(64, 64, 128, True, rngs)
    self.conv2_down = valid_conv(128, 128, 2, rngs, stride=2)
    self.conv3 = UNetConv(128, 256, 128, True, rngs)
    self.conv3_up = ConvTranspose(128, 128, 2, 2, 0, rngs)
    self.conv4 = UNetConv(128, 64, 64, True, rngs)
    self.conv4_up = ConvTranspose(64, 64, 2, 2, 0, rngs)
    self.conv5 = valid_conv(64, 64, 3, rngs)
    self.conv_bottom = valid_conv(64, out_channels, 3, rngs)

  def __call__(self, x):
    x1 = self.conv1(x)
    x2 = self.conv2(lrelu(self.conv1_down(x1)))
    x3 = self.conv3(lrelu(self.conv2_down(x2)))
    x3 = lrelu(self.conv3_up(x3))
    x4 = self.conv4(crop(x2, 4) + x3)
    x4 = lrelu(self.conv4_up(x4))
    x5 = lrelu(self.conv5(crop(x1, 16) + x4))
    return self.conv_bottom(x5)


class RealCUGAN(nnx.Module):
  """Real-CUGAN `UpCunet{scale}x` (or `UpCunet2x_fast` with `fast`): NHWC [0, 1] in, x`scale` out.

  Args:
    scale: 2, 3 or 4 (`fast`: 2).
    in_channels, out_channels: image channels.
    pro: the "pro" models, which work on `x * 0.7 + 0.15` and map back after.
    fast: UpCunet2x_fast (pixel-unshuffled input, pixel-shuffled output, no pro).
  """

  port_rules = PORT_RULES

  def __init__(
    self,
    scale: int = 2,
    in_channels: int = 3,
    out_channels: int = 3,
    pro: bool = False,
    fast: bool = False,
    *,
    rngs: nnx.Rngs,
  ):
    if scale not in (2, 3, 4) or (fast and (scale != 2 or pro)):
      raise ValueError(f"RealCUGAN: no scale={scale} fast={fast} pro={pro} variant")
    self.scale = scale
    self.in_channels = in_channels
    self.out_channels = out_channels
    self.pro = pro
    self.fast = fast
    if fast:
      self.unet1 = UNet1(4 * in_channels, 64, rngs)
      self.unet2 = UNet2(64, 64, rngs)
    elif scale == 4:
      self.unet1 = UNet1(in_channels, 64, rngs)
      self.unet2 = UNet2(64, 64, rngs)
    else:
      self.unet1 = UNet1(in_channels, out_channels, rngs, x3=scale == 3)
      self.unet2 = UNet2(in_channels, out_channels, rngs)
    if fast or scale == 4:
      self.conv_final = valid_conv(64, 4 * out_channels, 3, rngs)
    # Input margin (each side) and the multiple the padded size is rounded up to.
    self.margin, self.multiple = {
      (2, False): (18, 2),
      (3, False): (14, 4),
      (4, False): (19, 2),
    }.get((scale, fast), (38, 2))

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    _, h0, w0, _ = lr.shape
    x = lr * 0.7 + 0.15 if self.pro else lr
    m, mult = self.margin, self.multiple
    pads = ((0, 0), (m, m + -h0 % mult), (m, m + -w0 % mult), (0, 0))
    x_pad = jnp.pad(x, pads, mode="reflect")
    if self.fast:
      x_pad = pixel_unshuffle(x_pad, 2)
    y = self.unet1(x_pad)
    y = self.unet2(y) + crop(y, 20)
    if self.fast or self.scale == 4:
      y = pixel_shuffle(crop(self.conv_final(y), 1), 2)
    y = y[:, : h0 * self.scale, : w0 * self.scale].astype(lr.dtype)
    if self.fast or self.scale == 4:
      y = y + upsample_nearest(x, self.scale)
    return (y - 0.15) / 0.7 if self.pro else y


# --- detection from PyTorch state dicts (spandrel's) -------------------------------------------

_UNET_CONVS = {
  "unet1": (
    ("conv1", False),
    ("conv2", True),
    "conv1_down",
    "conv2_up",
    "conv3",
    "conv_bottom",
  ),
  "unet2": (
    ("conv1", False),
    ("conv2", True),
    ("conv3", True),
    ("conv4", True),
    "conv1_down",
    "conv2_down",
    "conv3_up",
    "conv4_up",
    "conv5",
    "conv_bottom",
  ),
}


def _weight_keys(final: bool) -> list[str]:
  layers = []
  for unet, convs in _UNET_CONVS.items():
    for conv in convs:
      if isinstance(conv, tuple):
        name, se = conv
        layers += [f"{unet}.{name}.conv.0", f"{unet}.{name}.conv.2"]
        layers += [f"{unet}.{name}.seblock.conv1", f"{unet}.{name}.seblock.conv2"] if se else []
      else:
        layers.append(f"{unet}.{conv}")
  layers += ["conv_final"] if final else []
  return [f"{layer}.{leaf}" for layer in layers for leaf in ("weight", "bias")]


def detect_realcugan(state: StateDict) -> dict:
  """spandrel's rules: `conv_final` marks x4 / 2x_fast (fast when conv_final's outputs are 4 x
  out = the input channels), a 5x5 unet1 bottom x3, else x2; a `pro` buffer the pro models."""
  in_channels = architecture.shape(state, "unet1.conv1.conv.0.weight")[1]
  pro = "pro" in state
  fast = False
  if "conv_final.weight" in state:
    out_channels = architecture.shape(state, "conv_final.weight")[0] // 4
    # UpCunet4x(in=4k) and UpCunet2x_fast(in=k) have the same shapes: spandrel picks fast.
    fast = out_channels * 4 == in_channels
    scale = 2 if fast else 4
    in_channels = in_channels // 4 if fast else in_channels
    pro = pro and not fast
  else:
    out_channels = architecture.shape(state, "unet2.conv_bottom.weight")[0]
    scale = 3 if architecture.shape(state, "unet1.conv_bottom.weight")[2] == 5 else 2
  for key in _weight_keys(final=fast or scale == 4):
    architecture.shape(state, key)
  return dict(scale=scale, in_channels=in_channels, out_channels=out_channels, pro=pro, fast=fast)


REALCUGAN_ARCH = architecture.Architecture(
  name="realcugan",
  module=RealCUGAN,
  signature=(
    "unet1.conv1.conv.0.weight",
    "unet1.conv1_down.weight",
    "unet2.conv1.conv.0.weight",
    "unet2.conv_bottom.weight",
  ),
  detect=detect_realcugan,
  config_keys=("in_channels", "out_channels", "pro", "fast"),
)
