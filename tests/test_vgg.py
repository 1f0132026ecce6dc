"""VGG-19 and AlexNet: parity with torchvision on random weights, BasicSR layer names, heads."""

from flax import nnx
import numpy as np
import pytest

from sr_jax import utils
from sr_jax.backbones import create_backbone, detect_backbone, load_backbone_weights
from sr_jax.backbones.vgg import layer_names
from sr_jax.weights import registry
from tests.test_backbones import TOL, _nhwc, _rel

# Real-ESRGAN's perceptual loss taps (BasicSR VGGFeatureExtractor, before the ReLU).
PERCEPTUAL_LAYERS = ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")


def _randomize_biases(torch, model, seed):
  """torchvision zero-initialises conv biases: random ones check that they are ported too."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
        module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)


@pytest.fixture(scope="module")
def vgg19_case(tmp_path_factory):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  torchvision = pytest.importorskip("torchvision", reason="parity extras not installed")
  torch.manual_seed(0)
  # torchvision's vgg19 without the classifier (its 120M weights take seconds to initialise).
  model = torch.nn.Module()
  model.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
  _randomize_biases(torch, model, 1)
  path = tmp_path_factory.mktemp("vgg19") / "vgg19.pth"
  torch.save(model.state_dict(), path)
  images = torch.randn(2, 3, 35, 45, generator=torch.Generator().manual_seed(2))
  names = layer_names((2, 2, 4, 4, 4))
  taps = {}
  with torch.no_grad():  # BasicSR VGGFeatureExtractor.forward: clone each tap (ReLUs are in place)
    x = images
    for name, layer in zip(names, model.features):
      x = layer(x)
      taps[name] = _nhwc(x.clone())
  return path, _nhwc(images), taps


def test_vgg19_matches_torchvision_by_basicsr_name(vgg19_case):
  path, images, taps = vgg19_case
  net = create_backbone("vgg19", weights=path, head=False)
  assert net.fc is None and net.feature_strides == (1, 2, 4, 8, 16)
  names = (*PERCEPTUAL_LAYERS, "relu3_1", "pool5")  # stage 5 runs at 2x2
  ours = nnx.jit(lambda net, x: net.named_features(x, names))(net, images)
  assert sorted(ours) == sorted(names)
  errors = {name: _rel(ours[name], taps[name]) for name in names}
  print(
    "vgg19 vs torchvision (35x45), rel max abs diff: "
    + ", ".join(f"{k} {e:.1e}" for k, e in errors.items())
  )
  assert max(errors.values()) < TOL, errors
  assert np.min(taps["conv5_4"]) < 0  # the taps really are before the ReLU
  features = nnx.jit(lambda net, x: net.features(x))(net, images)
  stage_ends = ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")
  assert [f.shape[-1] for f in features] == list(net.feature_channels)
  for feature, name in zip(features, stage_ends):
    assert _rel(feature, taps[name]) < TOL, name
  with pytest.raises(ValueError, match="conv5_5"):
    net.named_features(images, ["conv5_5"])


def test_vgg19_detected_and_wrong_depth_rejected(vgg19_case):
  from sr_jax.weights.checkpoint import read_checkpoint

  path, _, _ = vgg19_case
  assert detect_backbone(read_checkpoint(path).arrays) == "vgg19"
  net = utils.eval_shape_module(lambda rngs: create_backbone("vgg16", head=False, rngs=rngs))
  with pytest.raises(Exception, match="conv3_4|unexpected"):
    load_backbone_weights(net, "vgg16", path)


def test_alexnet_matches_torchvision_with_head(tmp_path):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  torchvision = pytest.importorskip("torchvision", reason="parity extras not installed")
  torch.manual_seed(0)
  model = torchvision.models.alexnet(num_classes=10).eval()
  path = tmp_path / "alexnet.pth"
  torch.save(model.state_dict(), path)
  # 190 x 215: 4x5 after the last max-pool, so the adaptive 6x6 bins overlap.
  images = torch.randn(2, 3, 190, 215, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    logits = model(images).numpy()
    taps, x = [], images
    for index, layer in enumerate(model.features):
      x = layer(x)
      if index in (1, 4, 7, 9, 11):
        taps.append(_nhwc(x.clone()))
  net = create_backbone("alexnet", weights=path, num_classes=10)
  assert detect_backbone(torch.load(path)) == "alexnet"
  ours_logits, ours_taps = nnx.jit(lambda net, x: (net(x), net.features(x)))(net, _nhwc(images))
  errors = [_rel(ours_logits, logits)] + [_rel(o, t) for o, t in zip(ours_taps, taps)]
  print(
    "alexnet vs torchvision (190x215), rel max abs diff: logits, relu1..5: "
    + ", ".join(f"{e:.1e}" for e in errors)
  )
  assert max(errors) < TOL, errors
  no_head = create_backbone("alexnet", weights=path, head=False)  # classifier skipped
  assert no_head.fc is None and no_head.pre_logits is None


def test_registry_entries():
  for arch, prefix in (("vgg16", "397923af"), ("vgg19", "dcbb9e9d"), ("alexnet", "7be5be79")):
    entry = registry.get(f"torchvision:{arch}")
    assert entry.arch == arch and len(entry.sha256) == 64
    assert entry.sha256.startswith(prefix) and prefix in entry.url and entry.filename in entry.url
