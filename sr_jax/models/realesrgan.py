"""The Real-ESRGAN generators: `RRDBNet` (BasicSR) and `SRVGGNetCompact` (Real-ESRGAN).

Attribute names follow the official PyTorch modules (`conv_first`, `body.N.rdb1.conv1`, ...;
`body.N` for the compact net) so official checkpoints map key by key with `PORT_RULES`: conv
`weight` -> `kernel` (transposed), PReLU `weight` -> `slope`. Each network also keeps its
hyperparameters as attributes of the same names as its constructor arguments (`scale`,
`num_feat`, ...), which is what loading checks a file against. Loaders: `sr_jax.models.pretrained`.
"""

import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax.conv import Conv
from sr_jax.models import architecture
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import conv3x3, pixel_shuffle, pixel_unshuffle
from sr_jax.weights.porting import PortRules

# Official key names need no renaming; the only 1-D `weight`s are PReLU slopes (no norm layers).
PORT_RULES = PortRules(vector_weight="slope")

# BasicSR's `default_init_weights(..., scale=0.1)`: Kaiming-normal (fan-in, gain sqrt(2)) times 0.1,
# which keeps the 23-block residual stack near identity at the start of training.
_RDB_KERNEL_INIT = nnx.initializers.variance_scaling(2.0 * 0.1**2, "fan_in", "normal")


def upsample_nearest(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """NHWC nearest-neighbour upsampling by an integer factor (`F.interpolate(mode='nearest')`)."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def lrelu(x: jnp.ndarray) -> jnp.ndarray:
  return jax.nn.leaky_relu(x, negative_slope=0.2)


class ResidualDenseBlock(nnx.Module):
  """Five densely connected convs; the output is scaled by 0.2 and added to the input."""

  def __init__(self, num_feat: int, num_grow_ch: int, rngs: nnx.Rngs, plus: bool = False):
    grow = num_grow_ch
    init = _RDB_KERNEL_INIT
    # ESRGAN+: a bias-free 1x1 conv adds two more residual paths.
    self.conv1x1 = (
      Conv(num_feat, grow, (1, 1), use_bias=False, rngs=rngs, kernel_init=init) if plus else None
    )
    self.conv1 = conv3x3(num_feat, grow, rngs, kernel_init=init)
    self.conv2 = conv3x3(num_feat + grow, grow, rngs, kernel_init=init)
    self.conv3 = conv3x3(num_feat + 2 * grow, grow, rngs, kernel_init=init)
    self.conv4 = conv3x3(num_feat + 3 * grow, grow, rngs, kernel_init=init)
    self.conv5 = conv3x3(num_feat + 4 * grow, num_feat, rngs, kernel_init=init)

  def __call__(self, x):
    # Channel order of each concat matches torch.cat((x, x1, ...), 1), so kernels port unchanged.
    x1 = lrelu(self.conv1(x))
    x2 = lrelu(self.conv2(jnp.concatenate([x, x1], -1)))
    if self.conv1x1 is not None:
      x2 = x2 + self.conv1x1(x)
    x3 = lrelu(self.conv3(jnp.concatenate([x, x1, x2], -1)))
    x4 = lrelu(self.conv4(jnp.concatenate([x, x1, x2, x3], -1)))
    if self.conv1x1 is not None:
      x4 = x4 + x2
    x5 = self.conv5(jnp.concatenate([x, x1, x2, x3, x4], -1))
    return x5 * 0.2 + x


class RRDB(nnx.Module):
  """Residual-in-residual dense block: three RDBs, scaled by 0.2, plus the input."""

  def __init__(self, num_feat: int, num_grow_ch: int, rngs: nnx.Rngs, plus: bool = False):
    self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch, rngs, plus)
    self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch, rngs, plus)
    self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch, rngs, plus)

  def __call__(self, x):
    return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nnx.Module):
  """ESRGAN / Real-ESRGAN generator, as BasicSR's `RRDBNet`.

  `RRDBNet(4, num_block=23)` is RealESRGAN_x4plus, `RRDBNet(4, num_block=6)` x4plus_anime_6B.
  The trunk upsamples by `scale * shuffle_factor` (nearest x2 stages `conv_up1`, `conv_up2`, ...):
  x4 by default, x8 for scale 8; for scale 2 / 1 the input is first pixel-unshuffled by 2 / 4, as
  in BasicSR (RealESRGAN_x2plus). Community ESRGAN files also hold x2 / x1 nets without unshuffle
  (`shuffle_factor=1`: one / no upsampling stage) and ESRGAN+ (`plus`).

  Args:
    shuffle_factor: pixel-unshuffle of the input (1 = none); default BasicSR's (2 for scale 2, 4
      for scale 1, else 1). Any LR size: reflect-padded to a multiple of it, cropped back, as
      spandrel does.
    plus: ESRGAN+ residual dense blocks (an extra 1x1 conv each).
  """

  port_rules = PORT_RULES

  def __init__(
    self,
    scale: int = 4,
    num_feat: int = 64,
    num_block: int = 23,
    num_grow_ch: int = 32,
    num_in_ch: int = 3,
    num_out_ch: int = 3,
    shuffle_factor: int | None = None,
    plus: bool = False,
    *,
    rngs: nnx.Rngs,
  ):
    if shuffle_factor is None:
      shuffle_factor = {2: 2, 1: 4}.get(scale, 1)
    num_upsample = math.log2(scale * shuffle_factor)
    if scale < 1 or shuffle_factor not in (1, 2, 4) or not num_upsample.is_integer():
      raise ValueError(
        f"RRDBNet: scale={scale} with shuffle_factor={shuffle_factor} is not a power-of-two trunk"
      )
    self.scale = scale
    self.num_feat = num_feat
    self.num_block = num_block
    self.num_grow_ch = num_grow_ch
    self.num_in_ch = num_in_ch
    self.num_out_ch = num_out_ch
    self.shuffle_factor = shuffle_factor
    self.unshuffle = shuffle_factor  # what `sr_jax.tiling` aligns tile windows to
    self.plus = plus
    self.num_upsample = int(num_upsample)
    self.conv_first = conv3x3(num_in_ch * shuffle_factor**2, num_feat, rngs)
    self.body = nnx.List([RRDB(num_feat, num_grow_ch, rngs, plus) for _ in range(num_block)])
    self.conv_body = conv3x3(num_feat, num_feat, rngs)
    for i in range(1, self.num_upsample + 1):
      setattr(self, f"conv_up{i}", conv3x3(num_feat, num_feat, rngs))
    self.conv_hr = conv3x3(num_feat, num_feat, rngs)
    self.conv_last = conv3x3(num_feat, num_out_ch, rngs)

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    _, h, w, _ = lr.shape
    x = lr
    factor = self.shuffle_factor
    if factor > 1:
      # Reflect-pad bottom / right to a multiple of the unshuffle (spandrel's pad_to_multiple).
      pad_h, pad_w = -h % factor, -w % factor
      x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
      x = pixel_unshuffle(x, factor)
    feat = self.conv_first(x)
    body = feat
    for block in self.body:
      body = block(body)
    feat = feat + self.conv_body(body)
    for i in range(1, self.num_upsample + 1):
      feat = lrelu(getattr(self, f"conv_up{i}")(upsample_nearest(feat, 2)))
    out = self.conv_last(lrelu(self.conv_hr(feat)))
    return out[:, : h * self.scale, : w * self.scale].astype(lr.dtype)


class PReLU(nnx.Module):
  """Per-channel PReLU (`torch.nn.PReLU(num_parameters=C)`, slopes start at 0.25)."""

  def __init__(self, num_channels: int):
    self.slope = nnx.Param(jnp.full((num_channels,), 0.25, jnp.float32))

  def __call__(self, x):
    # = jnp.where(x >= 0, x, x * slope), with x once as a factor: its backward is one multiply (not
    # two selects and an add). Compact net's CPU train step: ~9% faster (benchmarks/RESULTS.md).
    return x * jnp.where(x >= 0, 1.0, self.slope[...].astype(x.dtype))


class ReLU(nnx.Module):
  def __call__(self, x):
    return jax.nn.relu(x)


class LeakyReLU(nnx.Module):
  """LeakyReLU(0.1), the compact net's `act_type='leakyrelu'`."""

  def __call__(self, x):
    return jax.nn.leaky_relu(x, negative_slope=0.1)


class SRVGGNetCompact(nnx.Module):
  """Real-ESRGAN's compact VGG-style net: convs + activations at LR size, one pixel shuffle,
  and the nearest-upsampled input added (so the body learns a residual).

  `SRVGGNetCompact(4, num_conv=16)` is realesr-animevideov3, `num_conv=32` realesr-general-x4v3.
  `body` mirrors the official `nn.ModuleList` (conv, act, conv, act, ..., conv) index by index.

  Args:
    scale: output scale (default `upscale`, else 4).
    num_feat: channels of the body.
    num_conv: convs between the first and the last one.
    act_type: 'prelu' (official models), 'relu' or 'leakyrelu'.
    upscale: the network's own factor (pixel shuffle and input upsampling), default `scale`.
      When it differs from `scale`, the x`upscale` output is
      bicubic-resized to x`scale` exactly as ncnn's Interp does; that is how the official ncnn
      realesr-animevideov3 x2 / x3 models are built (the x4 net plus a downscale).
  """

  port_rules = PORT_RULES

  def __init__(
    self,
    scale: int | None = None,
    num_feat: int = 64,
    num_conv: int = 16,
    num_in_ch: int = 3,
    num_out_ch: int = 3,
    act_type: str = "prelu",
    upscale: int | None = None,
    *,
    rngs: nnx.Rngs,
  ):
    activations = {"prelu": lambda: PReLU(num_feat), "relu": ReLU, "leakyrelu": LeakyReLU}
    if act_type not in activations:
      raise ValueError(
        f"SRVGGNetCompact act_type={act_type!r} is unknown; known: {sorted(activations)}"
      )
    self.scale = scale or upscale or 4
    self.upscale = upscale or self.scale
    upscale = self.upscale
    self.num_feat = num_feat
    self.num_conv = num_conv
    self.act_type = act_type
    layers = [conv3x3(num_in_ch, num_feat, rngs), activations[act_type]()]
    for _ in range(num_conv):
      layers += [conv3x3(num_feat, num_feat, rngs), activations[act_type]()]
    layers.append(conv3x3(num_feat, num_out_ch * upscale * upscale, rngs))
    self.body = nnx.List(layers)

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    out = lr
    for layer in self.body:
      out = layer(out)
    out = pixel_shuffle(out, self.upscale) + upsample_nearest(lr, self.upscale)
    if self.scale != self.upscale:
      _, h, w, _ = lr.shape
      out = resize_bicubic_ncnn(out, h * self.scale, w * self.scale)
    return out


@functools.lru_cache(maxsize=64)
def _ncnn_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] weights of ncnn's bicubic Interp along one axis.

  ncnn: half-pixel source coordinate computed in double then rounded to float, Keys cubic with
  A = -0.75, no antialiasing, and taps past the border folded onto the edge pixel (replicate).
  """
  a = np.float32(-0.75)
  matrix = np.zeros((out_size, in_size), np.float64)
  for dst in range(out_size):
    fx = np.float32((dst + 0.5) * (in_size / out_size) - 0.5)
    sx = int(np.floor(fx))
    t = np.float32(fx - np.float32(sx))
    t0, t1, t2 = t + np.float32(1), t, np.float32(1) - t
    c0 = a * t0 * t0 * t0 - 5 * a * t0 * t0 + 8 * a * t0 - 4 * a
    c1 = (a + 2) * t1 * t1 * t1 - (a + 3) * t1 * t1 + 1
    c2 = (a + 2) * t2 * t2 * t2 - (a + 3) * t2 * t2 + 1
    c3 = np.float32(1) - c0 - c1 - c2
    for offset, coeff in zip((-1, 0, 1, 2), (c0, c1, c2, c3)):
      matrix[dst, min(max(sx + offset, 0), in_size - 1)] += coeff
  return matrix.astype(np.float32)


def resize_bicubic_ncnn(x: jnp.ndarray, out_h: int, out_w: int) -> jnp.ndarray:
  """NHWC bicubic resize matching ncnn's `Interp` resize_type=3 (separable, as two matmuls)."""
  _, h, w, _ = x.shape
  rows = jnp.asarray(_ncnn_bicubic_matrix(h, out_h))
  cols = jnp.asarray(_ncnn_bicubic_matrix(w, out_w))
  hi = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,nhwc->nowc", rows, x, precision=hi)
  return jnp.einsum("pw,nowc->nopc", cols, x, precision=hi)


# --- detection from PyTorch state dicts (see sr_jax.models.architecture) --------------------


def detect_rrdbnet(state: StateDict) -> dict:
  """BasicSR RRDBNet: the scale from conv_first's input channels (pixel-unshuffled x2 / x1) and
  the upsampling stages (x8: conv_up3)."""
  in_channels = architecture.shape(state, "conv_first.weight")[1]
  shuffle_factors = {3: 1, 12: 2, 48: 4}
  if in_channels not in shuffle_factors:
    raise ValueError(f"conv_first.weight has {in_channels} input channels, not 3, 12 or 48")
  # BasicSR's two upsampling stages; x8 nets (conv_up3) have three.
  num_upsample = architecture.count(state, r"conv_up(\d+)\.weight") - 1
  if num_upsample not in (2, 3) or (num_upsample == 3 and in_channels != 3):
    raise ValueError(f"conv_up1..conv_up{num_upsample}: neither BasicSR x1/x2/x4 nor x8")
  return dict(
    scale=2**num_upsample // shuffle_factors[in_channels],
    num_feat=architecture.shape(state, "conv_first.weight")[0],
    num_block=architecture.count(state, r"body\.(\d+)\.rdb1\.conv1\.weight"),
    num_grow_ch=architecture.shape(state, "body.0.rdb1.conv1.weight")[0],
  )


def detect_srvgg_compact(state: StateDict) -> dict:
  """Real-ESRGAN SRVGGNetCompact: body.0 conv, then (act, conv) pairs; last conv 3 * upscale**2."""
  convs = [
    i
    for i in architecture.indices(state, r"body\.(\d+)\.weight")
    if np.ndim(state[f"body.{i}.weight"]) == 4
  ]
  out_channels = architecture.shape(state, f"body.{convs[-1]}.weight")[0]
  upscale = math.isqrt(out_channels // 3)
  if 3 * upscale * upscale != out_channels:
    raise ValueError(f"body.{convs[-1]}.weight has {out_channels} outputs, not 3 * upscale**2")
  # relu / leakyrelu compact nets have no activation weights; only prelu ones are released.
  act_type = "prelu" if "body.1.weight" in state else "relu"
  return dict(
    scale=upscale,
    upscale=upscale,
    num_feat=architecture.shape(state, "body.0.weight")[0],
    num_conv=convs[-1] // 2 - 1,
    act_type=act_type,
  )


RRDBNET = architecture.Architecture(
  name="rrdbnet",
  module=RRDBNet,
  signature=("conv_first.weight", "body.0.rdb1.conv1.weight"),
  detect=detect_rrdbnet,
  config_keys=("num_feat", "num_block", "num_grow_ch"),
)
SRVGG_COMPACT = architecture.Architecture(
  name="srvgg_compact",
  module=SRVGGNetCompact,
  signature=("body.0.weight", "body.0.bias"),
  detect=detect_srvgg_compact,
  config_keys=("num_feat", "num_conv", "act_type", "upscale"),
)
