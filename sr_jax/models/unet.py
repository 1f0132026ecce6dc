"""U-Net SR network whose encoder is a pretrained ImageNet backbone (ResNet, EfficientNet-Lite).

LR image -> ImageNet-normalised -> encoder features at strides 2..32 -> decoder that upsamples by
pixel shuffle (ICNR-initialised) and concatenates every encoder stage's skip, back to LR
resolution, where a shallow full-resolution branch joins -> pixel-shuffle upsampler to x scale ->
plus the bicubic upscale of the input (global residual; the last conv starts at zero, so an
untrained network outputs bicubic). Any input size works: it is padded to the encoder's stride
and the output cropped back.
"""

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from sr_jax import utils
from sr_jax.backbones import create_backbone
from sr_jax.models.layers import conv3x3, pixel_shuffle, resize_bicubic


def icnr_init(scale: int, base_init=None):
  """ICNR (Aitken et al. 2017): each output channel's scale**2 sub-kernels start identical, so the
  conv + pixel shuffle starts as nearest-neighbour upsampling, free of checkerboard artefacts."""

  base_init = base_init or nnx.initializers.kaiming_normal()

  def init(key, shape, dtype=jnp.float32):
    *spatial, in_features, out_features = shape
    sub = scale * scale
    base = base_init(key, (*spatial, in_features, out_features // sub), dtype)
    return jnp.repeat(base, sub, axis=-1)  # channel c*sub + k <- base channel c (PyTorch order)

  return init


class PixelShuffleUp(nnx.Module):
  """conv (ICNR) -> pixel shuffle x factor -> ReLU."""

  def __init__(self, in_features: int, out_features: int, factor: int, rngs: nnx.Rngs):
    self.factor = factor
    self.conv = conv3x3(
      in_features, out_features * factor * factor, rngs, kernel_init=icnr_init(factor)
    )

  def __call__(self, x):
    return jax.nn.relu(pixel_shuffle(self.conv(x), self.factor))


class UpBlock(nnx.Module):
  """x2 upsampling, concatenation with the skip, two 3x3 conv + ReLU."""

  def __init__(self, in_features: int, skip_features: int, out_features: int, rngs: nnx.Rngs):
    self.up = PixelShuffleUp(in_features, out_features, 2, rngs)
    self.conv1 = conv3x3(out_features + skip_features, out_features, rngs)
    self.conv2 = conv3x3(out_features, out_features, rngs)

  def __call__(self, x, skip):
    x = jnp.concatenate([self.up(x), skip], axis=-1)
    return jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))


class UNetSR(nnx.Module):
  """U-Net SR with a backbone encoder. `encoder` needs `features(x)` (strides 2, 4, 8, 16, 32),
  `feature_channels` and `feature_strides`; parameters under `encoder` are the pretrained ones."""

  def __init__(
    self,
    scale: int,
    encoder: nnx.Module,
    decoder_features: Sequence[int] = (256, 128, 64, 64, 32),
    shallow_features: int = 32,
    skip_norm: bool = True,
    *,
    rngs: nnx.Rngs,
  ):
    channels = tuple(encoder.feature_channels)
    if tuple(encoder.feature_strides) != (2, 4, 8, 16, 32):
      raise ValueError(f"encoder feature strides {encoder.feature_strides} != (2, 4, 8, 16, 32)")
    if len(decoder_features) != 5:
      raise ValueError(
        f"model.decoder_features needs 5 widths (strides 16, 8, 4, 2, 1), got {decoder_features}"
      )
    self.scale = scale
    self.stride = 32
    self.encoder = encoder
    # Decoder stage k goes from stride 2**(5-k) to 2**(4-k) and takes that stride's skip.
    skips = (*channels[:4][::-1], shallow_features)  # strides 16, 8, 4, 2, then 1 (shallow branch)
    widths = (channels[4], *decoder_features[:-1])
    self.decoder = nnx.List(
      [UpBlock(w, s, d, rngs) for w, s, d in zip(widths, skips, decoder_features)]
    )
    # Pretrained features are large (std ~10 for EfficientNet-Lite0's BN outputs) and random ones
    # tiny; a per-pixel LayerNorm on every skip puts both on the decoder's scale (and stays local,
    # so tiled inference is unaffected).
    self.skip_norms = (
      nnx.List([nnx.LayerNorm(c, rngs=rngs) for c in channels]) if skip_norm else None
    )
    self.shallow1 = conv3x3(3, shallow_features, rngs)
    self.shallow2 = conv3x3(shallow_features, shallow_features, rngs)
    self.upsample = PixelShuffleUp(decoder_features[-1], decoder_features[-1], scale, rngs)
    self.conv_last = conv3x3(
      decoder_features[-1], 3, rngs, kernel_init=nnx.initializers.zeros_init()
    )

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    n, h, w, _ = lr.shape
    pad_h, pad_w = -h % self.stride, -w % self.stride
    padded = jnp.pad(lr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    x = utils.imagenet_normalize(padded)
    features = self.encoder.features(x)
    if self.skip_norms is not None:
      features = [norm(f) for norm, f in zip(self.skip_norms, features)]
    shallow = jax.nn.relu(self.shallow2(jax.nn.relu(self.shallow1(x))))
    skips = (*features[:4][::-1], shallow)
    y = features[4]
    for block, skip in zip(self.decoder, skips):
      y = block(y, skip)
    y = self.conv_last(self.upsample(y))
    y = y[:, : h * self.scale, : w * self.scale]
    return y + resize_bicubic(lr, self.scale)


def encoder_weights(model_config: ml_collections.ConfigDict) -> str | None:
  """`model.encoder.weights` as a path / registry name, or None for a random (scratch) encoder."""
  weights = model_config.encoder.weights or None
  if isinstance(weights, str) and weights.lower() in ("none", "scratch"):  # from the command line
    return None
  return weights


def from_config(model_config: ml_collections.ConfigDict, scale: int, rngs: nnx.Rngs) -> UNetSR:
  """The U-Net of `model.encoder.{name, weights, freeze_bn}`, randomly initialised (no file read).

  Pretrained encoder weights are applied by `sr_jax.models.load_pretrained` at the start of a run.
  freeze_bn None (default): BatchNorm keeps the loaded ImageNet statistics frozen with pretrained
  weights, and trains on batch statistics from scratch (a random encoder with frozen identity
  statistics has vanishing activations: kaiming fan-out init assumes normalisation).
  """
  freeze_bn = model_config.encoder.freeze_bn
  if freeze_bn is None:
    freeze_bn = encoder_weights(model_config) is not None
  # The encoder draws from its own stream, so the decoder's init is the same with or without
  # pretrained weights (the scratch twin differs only in the encoder).
  encoder = create_backbone(
    model_config.encoder.name,
    weights=None,
    head=False,
    rngs=nnx.Rngs(rngs.params()),
    freeze_bn=freeze_bn,
  )
  return UNetSR(
    scale,
    encoder,
    decoder_features=tuple(model_config.decoder_features),
    shallow_features=model_config.shallow_features,
    skip_norm=model_config.skip_norm,
    rngs=rngs,
  )
