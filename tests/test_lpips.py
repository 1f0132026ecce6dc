"""LPIPS against the `lpips` package: random ImageNet backbones, the wheel's real linear heads."""

import numpy as np
import pytest

from sr_jax.metrics import LPIPS
from sr_jax.weights import registry

TOL = 1e-4  # absolute, float32 (the bound; measured ~1e-8)


def _lpips_reference(net: str):
  """lpips.LPIPS with a random backbone (pnet_rand) and the calibrated heads of its wheel."""
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  lpips = pytest.importorskip("lpips", reason="parity extras not installed: make parity-deps")
  torch.manual_seed(0)
  with torch.no_grad():
    model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
    for name, param in model.net.named_parameters():  # torchvision zero-initialises VGG biases
      if name.endswith("bias"):
        param.copy_(torch.randn(param.shape) * 0.1)
  return torch, model


def _pair(shape, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random(shape, dtype=np.float32)
  y = np.clip(x + 0.15 * rng.standard_normal(shape).astype(np.float32), 0, 1)
  return x, y


def _reference_distance(torch, model, x, y) -> np.ndarray:
  def nchw(a):
    return torch.from_numpy(2 * a - 1).permute(0, 3, 1, 2)

  with torch.no_grad():
    return model(nchw(x), nchw(y)).numpy().reshape(-1)


@pytest.mark.parametrize("net, shape", [("alex", (2, 37, 45, 3)), ("vgg", (2, 23, 19, 3))])
def test_lpips_matches_lpips_package(net, shape, tmp_path):
  torch, model = _lpips_reference(net)
  path = tmp_path / f"lpips_{net}.pth"
  torch.save(model.state_dict(), path)
  x, y = _pair(shape)
  reference = _reference_distance(torch, model, x, y)
  lp = LPIPS(net=net, weights=path)
  d = np.asarray(lp(x, y))
  print(
    f"lpips {net} {shape}: ours {d} lpips {reference}, max diff {np.abs(d - reference).max():.1e}"
  )
  assert d.shape == (shape[0],)
  np.testing.assert_allclose(d, reference, atol=TOL, rtol=0)
  assert np.asarray(lp(x, x)).max() < 1e-9  # ulps: the two batch halves run as one conv
  with pytest.raises(ValueError, match="at least"):
    lp(x[:, :15], y[:, :15])


def test_lpips_heads_from_wheel_and_torchvision_backbone(tmp_path):
  """The route for real use: heads from the lpips wheel, backbone from a torchvision file."""
  torch, model = _lpips_reference("alex")
  # lpips' slices keep torchvision's indices: net.slice2.3.weight is alexnet's features.3.weight.
  features = {f"features.{key.split('.', 1)[1]}": v for key, v in model.net.state_dict().items()}
  torch.save(features, tmp_path / "alexnet.pth")  # a torchvision alexnet file, classifier aside
  x, y = _pair((1, 40, 33, 3), seed=1)
  d = np.asarray(LPIPS(net="alex", backbone=tmp_path / "alexnet.pth")(x, y))  # heads: "lpips:alex"
  np.testing.assert_allclose(d, _reference_distance(torch, model, x, y), atol=TOL, rtol=0)
  assert registry.get("lpips:alex").url == "wheel://lpips/weights/v0.1/alex.pth"


def test_lpips_rejects_wrong_files(tmp_path):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  with pytest.raises(ValueError, match="net='squeeze' is unknown"):
    LPIPS(net="squeeze")
  pytest.importorskip("lpips")
  heads = registry.resolve("lpips:vgg")  # VGG heads (64..512 channels) for an AlexNet LPIPS
  with pytest.raises(ValueError, match=r"widths \(64, 128, 256, 512, 512\); LPIPS\(net='alex'\)"):
    LPIPS(net="alex", weights=heads, backbone=tmp_path / "unused.pth")
  torch.save({"conv.weight": torch.zeros(1, 1, 1, 1)}, tmp_path / "other.pth")
  with pytest.raises(ValueError, match="'conv.weight' is not a key of an lpips.LPIPS"):
    LPIPS(net="alex", weights=tmp_path / "other.pth")
