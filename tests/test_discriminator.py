"""UNetDiscriminatorSN: parity with BasicSR's architecture (spectral norm's power iteration
included), loading its state dict through the torch-free .pth reader, size checks."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sr_jax.models.discriminator import (
  UNetDiscriminatorSN,
  create_discriminator,
  load_discriminator_weights,
  upsample_bilinear2,
)
from sr_jax.weights.merge import StateMismatchError

# float32 through 10 convs and three power iterations: observed max |diff| ~1e-6 of outputs ~0.1.
ATOL, RTOL = 2e-5, 1e-4


def torch_unet_discriminator(num_feat: int, skip_connection: bool):
  """BasicSR 1.4.2 `basicsr/archs/discriminator_arch.py:UNetDiscriminatorSN`, verbatim."""
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  from torch import nn
  from torch.nn import functional as F
  from torch.nn.utils import spectral_norm

  class Reference(nn.Module):
    def __init__(self, num_in_ch, num_feat=64, skip_connection=True):
      super().__init__()
      self.skip_connection = skip_connection
      norm = spectral_norm
      self.conv0 = nn.Conv2d(num_in_ch, num_feat, kernel_size=3, stride=1, padding=1)
      self.conv1 = norm(nn.Conv2d(num_feat, num_feat * 2, 4, 2, 1, bias=False))
      self.conv2 = norm(nn.Conv2d(num_feat * 2, num_feat * 4, 4, 2, 1, bias=False))
      self.conv3 = norm(nn.Conv2d(num_feat * 4, num_feat * 8, 4, 2, 1, bias=False))
      self.conv4 = norm(nn.Conv2d(num_feat * 8, num_feat * 4, 3, 1, 1, bias=False))
      self.conv5 = norm(nn.Conv2d(num_feat * 4, num_feat * 2, 3, 1, 1, bias=False))
      self.conv6 = norm(nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1, bias=False))
      self.conv7 = norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
      self.conv8 = norm(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
      self.conv9 = nn.Conv2d(num_feat, 1, 3, 1, 1)

    def forward(self, x):
      x0 = F.leaky_relu(self.conv0(x), negative_slope=0.2, inplace=True)
      x1 = F.leaky_relu(self.conv1(x0), negative_slope=0.2, inplace=True)
      x2 = F.leaky_relu(self.conv2(x1), negative_slope=0.2, inplace=True)
      x3 = F.leaky_relu(self.conv3(x2), negative_slope=0.2, inplace=True)
      x3 = F.interpolate(x3, scale_factor=2, mode="bilinear", align_corners=False)
      x4 = F.leaky_relu(self.conv4(x3), negative_slope=0.2, inplace=True)
      if self.skip_connection:
        x4 = x4 + x2
      x4 = F.interpolate(x4, scale_factor=2, mode="bilinear", align_corners=False)
      x5 = F.leaky_relu(self.conv5(x4), negative_slope=0.2, inplace=True)
      if self.skip_connection:
        x5 = x5 + x1
      x5 = F.interpolate(x5, scale_factor=2, mode="bilinear", align_corners=False)
      x6 = F.leaky_relu(self.conv6(x5), negative_slope=0.2, inplace=True)
      if self.skip_connection:
        x6 = x6 + x0
      out = F.leaky_relu(self.conv7(x6), negative_slope=0.2, inplace=True)
      out = F.leaky_relu(self.conv8(out), negative_slope=0.2, inplace=True)
      return self.conv9(out)

  torch.manual_seed(0)
  net = Reference(3, num_feat, skip_connection)
  with torch.no_grad():  # non-trivial statistics: weights away from torch's init scale, biases
    for name, p in net.named_parameters():
      p.mul_(1.0 + 0.5 * torch.rand_like(p)).add_(0.05 * torch.randn_like(p))
    net.conv9.weight.mul_(30.0)  # spectral norm keeps the trunk small: a visible output range
  return net


def nhwc(t) -> np.ndarray:
  return t.detach().numpy().transpose(0, 2, 3, 1)


def jitted(net: nnx.Module):
  """net(x) as one compiled program (eager, every op compiles on its own: minutes); the new
  power-iteration vectors are written back into `net`."""
  graphdef, _ = nnx.split(net)
  step = jax.jit(lambda state, x: (lambda m: (m(x), nnx.state(m)))(nnx.merge(graphdef, state)))

  def call(x: np.ndarray) -> np.ndarray:
    out, state = step(nnx.state(net), jnp.asarray(x.transpose(0, 2, 3, 1)))
    nnx.update(net, state)
    return np.asarray(out)

  return call


@pytest.mark.parametrize("skip_connection", [True, False])
def test_parity_with_basicsr_through_pth(tmp_path, skip_connection):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  ref = torch_unet_discriminator(num_feat=8, skip_connection=skip_connection)
  path = tmp_path / "net_d.pth"
  torch.save({"params": ref.state_dict()}, path)  # BasicSR's saved-network layout
  assert any(k.endswith("weight_orig") for k in ref.state_dict())

  net = UNetDiscriminatorSN(3, 8, skip_connection, rngs=nnx.Rngs(1))
  load_discriminator_weights(net, path)
  forward = jitted(net)
  rng = np.random.default_rng(0)
  # Non-square, sides 24 and 40 (multiples of 8: three stride-2 levels; 3x5 at the bottom).
  images = [rng.normal(0.5, 0.5, (2, 3, 24, 40)).astype(np.float32) for _ in range(3)]

  ref.train()  # every call: one power iteration, buffers updated in place
  for x in images:
    expected = nhwc(ref(torch.from_numpy(x)))
    np.testing.assert_allclose(forward(x), expected, atol=ATOL, rtol=RTOL)
  assert expected.std() > 1e-2  # the comparison is not between near-constant maps
  for i in range(1, 9):
    conv = getattr(net, f"conv{i}")
    np.testing.assert_allclose(
      np.asarray(conv.weight_u[...]), getattr(ref, f"conv{i}").weight_u.numpy(), atol=1e-5
    )
    np.testing.assert_allclose(
      np.asarray(conv.weight_v[...]), getattr(ref, f"conv{i}").weight_v.numpy(), atol=1e-5
    )

  ref.eval()
  net.eval()  # the stored vectors, no iteration
  before = np.asarray(net.conv3.weight_u[...])
  x = images[0]
  np.testing.assert_allclose(
    jitted(net)(x),
    nhwc(ref(torch.from_numpy(x))),
    atol=ATOL,
    rtol=RTOL,
  )
  np.testing.assert_array_equal(np.asarray(net.conv3.weight_u[...]), before)


def test_bilinear_upsample_matches_torch():
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  x = np.random.default_rng(1).normal(size=(2, 3, 5, 7)).astype(np.float32)
  expected = torch.nn.functional.interpolate(
    torch.from_numpy(x), scale_factor=2, mode="bilinear", align_corners=False
  )
  got = upsample_bilinear2(jnp.asarray(x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(np.asarray(got), nhwc(expected), atol=1e-6)


def test_sizes_and_mismatched_files(tmp_path):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  config = ml_collections.ConfigDict({"name": "unet_sn", "num_feat": 4, "skip_connection": True})
  net = create_discriminator(config, nnx.Rngs(0))
  assert net(jnp.zeros((1, 16, 32, 3))).shape == (1, 16, 32, 1)
  with pytest.raises(ValueError, match="multiples of 8.*20x32"):
    net(jnp.zeros((1, 20, 32, 3)))
  path = tmp_path / "wide.pth"
  torch.save(torch_unet_discriminator(num_feat=8, skip_connection=True).state_dict(), path)
  with pytest.raises(ValueError, match="num_feat=8.*num_feat=4"):
    load_discriminator_weights(net, path)
  partial = {k: v for k, v in torch_unet_discriminator(4, True).state_dict().items()}
  del partial["conv5.weight_u"]
  torch.save(partial, tmp_path / "partial.pth")
  with pytest.raises(StateMismatchError, match="conv5.weight_u"):
    load_discriminator_weights(net, tmp_path / "partial.pth")
  with pytest.raises(ValueError, match="gan.discriminator.name='patchgan'"):
    create_discriminator(ml_collections.ConfigDict({"name": "patchgan"}), nnx.Rngs(0))
