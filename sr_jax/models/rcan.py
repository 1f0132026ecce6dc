"""RCAN (Zhang et al. 2018, residual channel attention network), as spandrel's `RCAN`.

Attribute names and `nnx.List` indices mirror the PyTorch `nn.Sequential`s (`head.0`,
`body.G.body.B.body.3.conv_du.0`, `tail.0.0`, `tail.1`, `sub_mean`, `add_mean`), so state dicts
port key by key with the generic rules. Parameterless layers (ReLU, pixel shuffle) hold their
index, as in PyTorch. Scales 1 (no upsampler), 2, 3, 4, 8; `unshuffle_mod` nets (x1 / x2 from a
x4 trunk on a pixel-unshuffled input) pad the input by reflection to a multiple of the unshuffle
and crop the output back, as the reference does.
"""

import math

from flax import nnx
import jax
import jax.numpy as jnp

from sr_jax.conv import Conv
from sr_jax.models import architecture
from sr_jax.models.architecture import StateDict
from sr_jax.models.layers import pixel_shuffle, pixel_unshuffle
from sr_jax.weights.porting import PortRules

_ACTIVATIONS = {
  "relu": jax.nn.relu,
  "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.2),
  "elu": jax.nn.elu,
  "silu": jax.nn.silu,
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
  "none": lambda x: x,
}
# DIV2K's RGB mean, the reference's MeanShift (std 1).
_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class Activation(nnx.Module):
  def __init__(self, kind: str):
    if kind not in _ACTIVATIONS:
      raise ValueError(f"RCAN act_mode={kind!r} is unknown; known: {sorted(_ACTIVATIONS)}")
    self.kind = kind

  def __call__(self, x):
    return _ACTIVATIONS[self.kind](x)


class Sigmoid(nnx.Module):
  def __call__(self, x):
    return jax.nn.sigmoid(x)


class PixelShuffle(nnx.Module):
  def __init__(self, factor: int):
    self.factor = factor

  def __call__(self, x):
    return pixel_shuffle(x, self.factor)


class PixelUnshuffle(nnx.Module):
  def __init__(self, factor: int):
    self.factor = factor

  def __call__(self, x):
    return pixel_unshuffle(x, self.factor)


def _run(layers: nnx.List, x: jnp.ndarray) -> jnp.ndarray:
  for layer in layers:
    x = _run(layer, x) if isinstance(layer, nnx.List) else layer(x)  # nested nn.Sequential
  return x


def conv(in_features: int, out_features: int, kernel_size: int, rngs: nnx.Rngs) -> Conv:
  """The reference's `default_conv`: "same" padding kernel_size // 2, with bias."""
  return Conv(in_features, out_features, (kernel_size,) * 2, padding=kernel_size // 2, rngs=rngs)


class CALayer(nnx.Module):
  """Channel attention: global average pool -> 1x1 conv, ReLU, 1x1 conv, sigmoid -> scale."""

  def __init__(self, channel: int, reduction: int, rngs: nnx.Rngs):
    self.conv_du = nnx.List(
      [
        conv(channel, channel // reduction, 1, rngs),
        Activation("relu"),
        conv(channel // reduction, channel, 1, rngs),
        Sigmoid(),
      ]
    )

  def __call__(self, x):
    return x * _run(self.conv_du, jnp.mean(x, axis=(1, 2), keepdims=True))


class RCAB(nnx.Module):
  """Residual channel attention block: conv, act, conv, CA, plus the input (no res_scale: the
  reference's forward leaves it out)."""

  def __init__(self, n_feat, kernel_size, reduction, act_mode, rngs: nnx.Rngs):
    self.body = nnx.List(
      [
        conv(n_feat, n_feat, kernel_size, rngs),
        Activation(act_mode),
        conv(n_feat, n_feat, kernel_size, rngs),
        CALayer(n_feat, reduction, rngs),
      ]
    )

  def __call__(self, x):
    return _run(self.body, x) + x


class ResidualGroup(nnx.Module):
  def __init__(self, n_feat, kernel_size, reduction, act_mode, n_resblocks, rngs: nnx.Rngs):
    blocks = [RCAB(n_feat, kernel_size, reduction, act_mode, rngs) for _ in range(n_resblocks)]
    self.body = nnx.List([*blocks, conv(n_feat, n_feat, kernel_size, rngs)])

  def __call__(self, x):
    return _run(self.body, x) + x


def upsampler(scale: int, n_feat: int, rngs: nnx.Rngs) -> nnx.List:
  """(conv to 4 * n_feat, pixel shuffle 2) per factor 2, or one x3 stage (the reference's)."""
  if scale == 3:
    return nnx.List([conv(n_feat, 9 * n_feat, 3, rngs), PixelShuffle(3)])
  if scale & (scale - 1):
    raise ValueError(f"RCAN upsamples by 2**n or 3, not {scale}")
  layers = []
  for _ in range(int(math.log2(scale))):
    layers += [conv(n_feat, 4 * n_feat, 3, rngs), PixelShuffle(2)]
  return nnx.List(layers)


def mean_shift(rgb_range: float, sign: float, rngs: nnx.Rngs) -> Conv:
  """The reference's MeanShift: a 1x1 conv starting at identity, bias `sign * range * mean`.

  Trainable, as in PyTorch (its `requires_grad = False` on the module sets no parameter's flag).
  """
  layer = Conv(3, 3, (1, 1), rngs=rngs)
  layer.kernel[...] = jnp.eye(3, dtype=jnp.float32)[None, None]
  layer.bias[...] = sign * rgb_range * jnp.asarray(_RGB_MEAN, jnp.float32)
  return layer


class RCAN(nnx.Module):
  """RCAN: head conv, residual groups of RCABs (+ conv, + long skip), pixel-shuffle tail.

  Args (the reference's names):
    scale: output factor; with `unshuffle_mod` and scale 1 / 2 the input is pixel-unshuffled by
      4 / 2 and the tail upsamples x4.
    n_resgroups, n_resblocks, n_feats, reduction, kernel_size: the network's size.
    n_colors: image channels. norm: subtract / add the DIV2K mean (`sub_mean` / `add_mean`) on
      the [0, rgb_range] scale; without it rgb_range is 1, as in the reference.
    res_scale: kept for the reference's signature; its blocks do not use it.
  """

  port_rules = PortRules()

  def __init__(
    self,
    scale: int = 4,
    n_resgroups: int = 10,
    n_resblocks: int = 20,
    n_feats: int = 64,
    n_colors: int = 3,
    rgb_range: float = 255,
    norm: bool = True,
    kernel_size: int = 3,
    reduction: int = 16,
    res_scale: float = 1,
    act_mode: str = "relu",
    unshuffle_mod: bool = False,
    *,
    rngs: nnx.Rngs,
  ):
    self.scale = scale
    self.n_resgroups = n_resgroups
    self.n_resblocks = n_resblocks
    self.n_feats = n_feats
    self.n_colors = n_colors
    self.norm = norm
    self.kernel_size = kernel_size
    self.reduction = reduction
    self.res_scale = res_scale
    self.act_mode = act_mode
    self.unshuffle_mod = unshuffle_mod
    self.rgb_range = rgb_range if norm else 1
    if norm:
      self.sub_mean = mean_shift(self.rgb_range, -1.0, rngs)
      self.add_mean = mean_shift(self.rgb_range, 1.0, rngs)
    # As the reference: unshuffling only for scale 1 / 2, then a x4 tail.
    self.downscale_factor = 4 // scale if unshuffle_mod and scale <= 2 else 1
    self.unshuffle = self.downscale_factor  # what `sr_jax.tiling` aligns tile windows to
    trunk_scale = scale * self.downscale_factor
    if self.downscale_factor > 1:
      in_channels = n_colors * self.downscale_factor**2
      head = [PixelUnshuffle(self.downscale_factor), conv(in_channels, n_feats, kernel_size, rngs)]
    else:
      head = [conv(n_colors, n_feats, kernel_size, rngs)]
    self.head = nnx.List(head)
    groups = [
      ResidualGroup(n_feats, kernel_size, reduction, act_mode, n_resblocks, rngs)
      for _ in range(n_resgroups)
    ]
    self.body = nnx.List([*groups, conv(n_feats, n_feats, kernel_size, rngs)])
    self.tail = nnx.List(
      [upsampler(trunk_scale, n_feats, rngs), conv(n_feats, n_colors, kernel_size, rngs)]
    )

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    _, h, w, _ = lr.shape
    factor = self.downscale_factor
    x = jnp.pad(lr, ((0, 0), (0, -h % factor), (0, -w % factor), (0, 0)), mode="reflect")
    x = x * self.rgb_range
    if self.norm:
      x = self.sub_mean(x)
    x = _run(self.head, x)
    x = _run(self.tail, _run(self.body, x) + x)
    if self.norm:
      x = self.add_mean(x)
    return (x / self.rgb_range)[:, : h * self.scale, : w * self.scale].astype(lr.dtype)


# --- detection from PyTorch state dicts (spandrel's) -------------------------------------------


def detect_rcan(state: StateDict) -> dict:
  """Groups / blocks from the `body` sequences, scale from the tail's pixel-shuffle convs (or the
  head's unshuffle), reduction from the channel attention's squeeze conv."""
  n_resgroups = architecture.count(state, r"body\.(\d+)\..*") - 1
  n_resblocks = architecture.count(state, r"body\.0\.body\.(\d+)\..*") - 1
  n_colors = architecture.shape(state, "tail.1.weight")[0]
  unshuffle_mod = architecture.count(state, r"head\.(\d+)\..*") > 1
  head = "head.1.weight" if unshuffle_mod else "head.0.weight"
  n_feats, head_in, kernel_size, _ = architecture.shape(state, head)
  scale = 1
  for i in range(0, 10, 2):  # tail.0: (conv, pixel shuffle) stages
    if f"tail.0.{i}.weight" not in state:
      break
    out_channels, in_channels = architecture.shape(state, f"tail.0.{i}.weight")[:2]
    scale *= math.isqrt(out_channels // in_channels)
  if unshuffle_mod:
    downscale = math.isqrt(head_in // n_colors)
    if downscale not in (2, 4) or scale != 4:
      raise ValueError(f"{head} has {head_in} inputs: not a x1 / x2 unshuffle of a x4 tail")
    scale = 4 // downscale
  if scale not in (1, 2, 3, 4, 8):
    raise ValueError(f"tail.0 upsamples by {scale}, not 1, 2, 3, 4 or 8")
  squeeze = "body.0.body.0.body.3.conv_du.0.weight"
  reduction = n_feats // architecture.shape(state, squeeze)[0]
  for g in range(n_resgroups):
    for b in range(n_resblocks):
      block = f"body.{g}.body.{b}.body"
      for key in ("0", "2", "3.conv_du.0", "3.conv_du.2"):
        architecture.shape(state, f"{block}.{key}.weight")
    architecture.shape(state, f"body.{g}.body.{n_resblocks}.weight")
  architecture.shape(state, f"body.{n_resgroups}.weight")
  return dict(
    scale=scale,
    n_resgroups=n_resgroups,
    n_resblocks=n_resblocks,
    n_feats=n_feats,
    n_colors=n_colors,
    norm="sub_mean.weight" in state,
    kernel_size=kernel_size,
    reduction=reduction,
    unshuffle_mod=unshuffle_mod,
  )


RCAN_ARCH = architecture.Architecture(
  name="rcan",
  module=RCAN,
  signature=(
    "tail.1.weight",
    "body.0.body.0.body.0.weight",
    "body.0.body.0.body.3.conv_du.0.weight",
  ),
  detect=detect_rcan,
  config_keys=(
    "n_resgroups",
    "n_resblocks",
    "n_feats",
    "reduction",
    "kernel_size",
    "norm",
    "unshuffle_mod",
  ),
)
