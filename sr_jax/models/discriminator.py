"""Real-ESRGAN's U-Net discriminator with spectral normalisation (BasicSR `UNetDiscriminatorSN`).

Attribute names are BasicSR's (`conv0` ... `conv9`; the spectrally normalised convs keep torch's
`weight_orig`, `weight_u`, `weight_v`), so a released discriminator (`RealESRGAN_x4plus_netD.pth`)
loads key by key with `load_discriminator_weights`. `weight_orig` is stored in NNX conv layout
(HWIO); `weight_u` / `weight_v` are torch's power-iteration vectors, `weight_v` in the order of
torch's flattened `[out, in * kh * kw]` weight matrix, so they load unchanged.

Spectral normalisation as `torch.nn.utils.spectral_norm` (one power iteration, eps 1e-12): in
training mode (`use_running_average=False`, the default, like a torch module after construction)
every call runs one power iteration and stores the new `weight_u` / `weight_v` (a `PowerIteration`
variable: model state, not a parameter); `model.eval()` uses the stored vectors. The kernel is
divided by sigma = u^T W v, with u and v constants of the gradient, as in torch.
"""

import os

from flax import nnx
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from sr_jax import utils
from sr_jax.conv import Conv, conv_general_dilated
from sr_jax.weights import porting
from sr_jax.weights.checkpoint import read_checkpoint
from sr_jax.weights.merge import LoadReport, load_state

_EPS = 1e-12  # torch spectral_norm's eps
# torch's default conv init (kaiming_uniform with a = sqrt(5)): uniform, variance 1 / (3 fan_in).
_TORCH_CONV_INIT = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class PowerIteration(nnx.Variable):
  """Spectral norm's power-iteration vectors (torch buffers `weight_u`, `weight_v`): updated by
  the forward pass in training mode, never by the optimizer."""


def _normalize(x: jnp.ndarray) -> jnp.ndarray:
  return x / jnp.maximum(jnp.linalg.norm(x), _EPS)  # torch.nn.functional.normalize


class SpectralNormConv(nnx.Module):
  """A bias-free conv with `torch.nn.utils.spectral_norm` on its weight (BasicSR's `norm(...)`)."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int,
    stride: int,
    padding: int,
    *,
    rngs: nnx.Rngs,
  ):
    shape = (kernel_size, kernel_size, in_features, out_features)
    self.weight_orig = nnx.Param(_TORCH_CONV_INIT(rngs.params(), shape, jnp.float32))
    # torch: u, v drawn from N(0, 1) and normalised (`_SpectralNorm.apply`).
    num_in = in_features * kernel_size * kernel_size
    self.weight_u = PowerIteration(_normalize(jax.random.normal(rngs.params(), (out_features,))))
    self.weight_v = PowerIteration(_normalize(jax.random.normal(rngs.params(), (num_in,))))
    self.stride = stride
    self.padding = padding
    self.use_running_average = False

  def weight_matrix(self) -> jnp.ndarray:
    """The kernel as torch's `[out, in * kh * kw]` matrix."""
    kernel = self.weight_orig[...]
    return jnp.transpose(kernel, (3, 2, 0, 1)).reshape(kernel.shape[3], -1)

  def normalized_kernel(self) -> jnp.ndarray:
    matrix = self.weight_matrix()
    u, v = self.weight_u[...], self.weight_v[...]
    if not self.use_running_average:
      frozen = lax.stop_gradient(matrix)
      v = _normalize(frozen.T @ u)
      u = _normalize(frozen @ v)
      self.weight_u[...] = u
      self.weight_v[...] = v
    sigma = jnp.dot(u, matrix @ v)
    return self.weight_orig[...] / sigma

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    pad = ((self.padding, self.padding),) * 2
    return conv_general_dilated(
      x,
      self.normalized_kernel(),
      (self.stride, self.stride),
      pad,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def _lrelu(x: jnp.ndarray) -> jnp.ndarray:
  return jax.nn.leaky_relu(x, negative_slope=0.2)


def upsample_bilinear2(x: jnp.ndarray) -> jnp.ndarray:
  """NHWC x2 bilinear upsampling as `F.interpolate(scale_factor=2, mode='bilinear',
  align_corners=False)`: each output pixel is 3/4 of its source pixel and 1/4 of the neighbour
  on its side, the edge pixel repeated beyond the border."""

  def along(x, axis):
    n = x.shape[axis]
    before = jnp.concatenate([lax.slice_in_dim(x, 0, 1, axis=axis), x], axis)
    after = jnp.concatenate([x, lax.slice_in_dim(x, n - 1, n, axis=axis)], axis)
    even = 0.75 * x + 0.25 * lax.slice_in_dim(before, 0, n, axis=axis)
    odd = 0.75 * x + 0.25 * lax.slice_in_dim(after, 1, n + 1, axis=axis)
    stacked = jnp.stack([even, odd], axis=axis + 1)
    return stacked.reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 1 :])

  return along(along(x, 1), 2)


class UNetDiscriminatorSN(nnx.Module):
  """Real-ESRGAN's discriminator: a U-Net of spectrally normalised convs giving a realness logit
  per pixel. `net(images)`: float32 NHWC in [0, 1], sides multiples of 8 -> logits [N, H, W, 1].

  Args:
    num_in_ch: input channels (3).
    num_feat: channels of the first level (64 in Real-ESRGAN); levels have 1, 2, 4, 8 times it.
    skip_connection: add the encoder's features to the decoder's (Real-ESRGAN: True).
  """

  port_rules = porting.PortRules(
    overrides={"*.weight_orig": lambda a: ("weight_orig", porting.as_kernel(a)[1])}
  )

  def __init__(
    self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True, *, rngs: nnx.Rngs
  ):
    self.num_in_ch = num_in_ch
    self.num_feat = num_feat
    self.skip_connection = skip_connection
    f = num_feat
    init = {"kernel_init": _TORCH_CONV_INIT, "rngs": rngs}
    self.conv0 = Conv(num_in_ch, f, (3, 3), padding=((1, 1), (1, 1)), **init)
    self.conv1 = SpectralNormConv(f, f * 2, 4, 2, 1, rngs=rngs)
    self.conv2 = SpectralNormConv(f * 2, f * 4, 4, 2, 1, rngs=rngs)
    self.conv3 = SpectralNormConv(f * 4, f * 8, 4, 2, 1, rngs=rngs)
    self.conv4 = SpectralNormConv(f * 8, f * 4, 3, 1, 1, rngs=rngs)
    self.conv5 = SpectralNormConv(f * 4, f * 2, 3, 1, 1, rngs=rngs)
    self.conv6 = SpectralNormConv(f * 2, f, 3, 1, 1, rngs=rngs)
    self.conv7 = SpectralNormConv(f, f, 3, 1, 1, rngs=rngs)
    self.conv8 = SpectralNormConv(f, f, 3, 1, 1, rngs=rngs)
    self.conv9 = Conv(f, 1, (3, 3), padding=((1, 1), (1, 1)), **init)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if x.shape[1] % 8 or x.shape[2] % 8:
      raise ValueError(
        f"UNetDiscriminatorSN needs image sides that are multiples of 8 (three stride-2 levels "
        f"and back), got {x.shape[1]}x{x.shape[2]}"
      )
    x0 = _lrelu(self.conv0(x))
    x1 = _lrelu(self.conv1(x0))
    x2 = _lrelu(self.conv2(x1))
    x3 = _lrelu(self.conv3(x2))
    x4 = _lrelu(self.conv4(upsample_bilinear2(x3)))
    if self.skip_connection:
      x4 = x4 + x2
    x5 = _lrelu(self.conv5(upsample_bilinear2(x4)))
    if self.skip_connection:
      x5 = x5 + x1
    x6 = _lrelu(self.conv6(upsample_bilinear2(x5)))
    if self.skip_connection:
      x6 = x6 + x0
    out = _lrelu(self.conv7(x6))
    out = _lrelu(self.conv8(out))
    return self.conv9(out)


DISCRIMINATORS = {"unet_sn": UNetDiscriminatorSN}


def create_discriminator(discriminator_config, rngs: nnx.Rngs) -> nnx.Module:
  """The discriminator of `gan.discriminator` (name, num_feat, skip_connection), randomly
  initialised; reads no file (weights: `load_discriminator_weights`)."""
  name = discriminator_config.name
  if name not in DISCRIMINATORS:
    raise ValueError(
      f"config gan.discriminator.name={name!r} is unknown; known: {sorted(DISCRIMINATORS)}"
    )
  return DISCRIMINATORS[name](
    num_feat=discriminator_config.num_feat,
    skip_connection=discriminator_config.skip_connection,
    rngs=rngs,
  )


def abstract_discriminator(discriminator_config) -> nnx.Module:
  """`create_discriminator`'s module, shapes only (nothing computed)."""
  return utils.eval_shape_module(lambda rngs: create_discriminator(discriminator_config, rngs))


def load_discriminator_weights(net: UNetDiscriminatorSN, path: str | os.PathLike) -> LoadReport:
  """Loads a BasicSR discriminator checkpoint (`.pth`, torch-free reader; a `{"params": ...}`
  wrapper is unwrapped) into `net` in place, strictly: every key must fit, power-iteration
  vectors included."""
  checkpoint = read_checkpoint(path)
  arrays = checkpoint.arrays
  if checkpoint.layout != "nnx":
    arrays = porting.torch_to_nnx(arrays, net.port_rules)
  width = np.shape(arrays.get("conv0.kernel", ()))
  if len(width) == 4 and width[-1] != net.num_feat:
    raise ValueError(
      f"{path}: a discriminator with num_feat={width[-1]}, but gan.discriminator.num_feat="
      f"{net.num_feat}"
    )
  return load_state(net, arrays, strict=True, source=os.fspath(path))
