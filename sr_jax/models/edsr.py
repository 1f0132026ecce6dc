"""EDSR (Lim et al. 2017) as BasicSR defines it: conv, residual blocks without BN, pixel-shuffle
upsampler.

Layer names follow BasicSR's `EDSR` (conv_first, body, conv_after_body, upsample, conv_last) so its
PyTorch weights can be mapped key by key.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from sr_jax.models.layers import conv3x3, pixel_shuffle, resize_bicubic

# DIV2K RGB mean, as in BasicSR's EDSR (img_range 255).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class ResidualBlockNoBN(nnx.Module):
  """conv-relu-conv with residual scaling, no BatchNorm."""

  def __init__(self, features: int, res_scale: float, rngs: nnx.Rngs):
    self.conv1 = conv3x3(features, features, rngs)
    self.conv2 = conv3x3(features, features, rngs)
    self.res_scale = res_scale

  def __call__(self, x):
    return x + self.res_scale * self.conv2(jax.nn.relu(self.conv1(x)))


class Upsample(nnx.Module):
  """conv + pixel shuffle stages: log2(scale) x2-stages for powers of two, one x3 stage for 3."""

  def __init__(self, scale: int, features: int, rngs: nnx.Rngs):
    if scale & (scale - 1) == 0:
      factors = [2] * (scale.bit_length() - 1)
    elif scale == 3:
      factors = [3]
    else:
      raise ValueError(f"EDSR upsampler supports scale 2^n or 3, got scale={scale}")
    self.factors = factors
    self.convs = nnx.List([conv3x3(features, features * f * f, rngs) for f in factors])

  def __call__(self, x):
    for factor, conv in zip(self.factors, self.convs):
      x = pixel_shuffle(conv(x), factor)
    return x


class EDSR(nnx.Module):
  """EDSR; `EDSR(scale, 64, 16, 1.0)` is EDSR-baseline.

  With `bicubic_residual=True` the network predicts a correction to the bicubic upsampled input
  (and starts as bicubic because conv_last is zero-initialised), which trains much faster from
  scratch; the default is the original EDSR.
  """

  def __init__(
    self,
    scale: int,
    num_feat: int = 64,
    num_block: int = 16,
    res_scale: float = 1.0,
    img_range: float = 255.0,
    bicubic_residual: bool = False,
    *,
    rngs: nnx.Rngs,
  ):
    self.scale = scale
    self.img_range = img_range
    self.bicubic_residual = bicubic_residual
    self.conv_first = conv3x3(3, num_feat, rngs)
    self.body = nnx.List([ResidualBlockNoBN(num_feat, res_scale, rngs) for _ in range(num_block)])
    self.conv_after_body = conv3x3(num_feat, num_feat, rngs)
    self.upsample = Upsample(scale, num_feat, rngs)
    # Zero-initialised with a bicubic residual, so training starts from bicubic's output.
    kernel_init = (
      nnx.initializers.zeros_init() if bicubic_residual else nnx.initializers.lecun_normal()
    )
    self.conv_last = conv3x3(num_feat, 3, rngs, kernel_init=kernel_init)

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    mean = jnp.asarray(DIV2K_RGB_MEAN, lr.dtype)
    x = (lr - mean) * self.img_range
    x = self.conv_first(x)
    res = x
    for block in self.body:
      res = block(res)
    x = self.conv_after_body(res) + x
    x = self.conv_last(self.upsample(x))
    if self.bicubic_residual:
      return x / self.img_range + resize_bicubic(lr, self.scale)
    return x / self.img_range + mean


class Bicubic(nnx.Module):
  """The model-free baseline: bicubic upsampling, no parameters."""

  def __init__(self, scale: int):
    self.scale = scale

  def __call__(self, lr: jnp.ndarray) -> jnp.ndarray:
    return resize_bicubic(lr, self.scale)


def from_config(model_config: ml_collections.ConfigDict, scale: int, rngs: nnx.Rngs) -> EDSR:
  return EDSR(
    scale,
    num_feat=model_config.num_feat,
    num_block=model_config.num_block,
    res_scale=model_config.res_scale,
    bicubic_residual=model_config.bicubic_residual,
    rngs=rngs,
  )


def bicubic_from_config(
  model_config: ml_collections.ConfigDict, scale: int, rngs: nnx.Rngs
) -> Bicubic:
  del model_config, rngs
  return Bicubic(scale)
