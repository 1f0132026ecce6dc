"""Pretrained ImageNet backbones in Flax NNX: torchvision ResNets, VGG-16/19 and AlexNet, and
EfficientNet-Lite0.

    from sr_jax.backbones import create_backbone
    net = create_backbone("resnet50", weights="/path/resnet50.pth", head=True)
    logits = net(images)          # float32 NHWC, ImageNet mean/std normalised -> [N, 1000]
    feats = net.features(images)  # 5 maps at strides 2, 4, 8, 16, 32 (ResNet, EfficientNet)

VGG's `features` are the last ReLU of each stage (strides 1..16, LPIPS's taps) and
`named_features(x, ["conv5_4", ...])` returns layers by BasicSR name (the Real-ESRGAN
perceptual loss); AlexNet's are relu1..relu5. `net.feature_strides` says which.

`weights` is None (random init), a local file (torchvision `.pth`, timm `.safetensors`, or an
sr_jax-converted `.safetensors`), or a registry name such as "torchvision:resnet50" (see
`sr_jax.weights.registry`); "imagenet" picks the default entry for the architecture.

Building and loading are two steps when the backbone is part of a bigger network:

    encoder = create_backbone("resnet50", head=False, rngs=rngs, freeze_bn=True)  # no file read
    ...
    load_backbone_weights(encoder, "resnet50", "imagenet")  # once, at the start of a fresh run
"""

from __future__ import annotations

import os
from typing import Iterable

from absl import logging
from flax import nnx

from sr_jax import utils
from sr_jax.backbones.alexnet import AlexNet, alexnet
from sr_jax.backbones.batchnorm import Identity, fold_batchnorm, set_bn_frozen
from sr_jax.backbones.efficientnet_lite import EfficientNetLite, efficientnet_lite0
from sr_jax.backbones.resnet import RESNET_CONFIGS, ResNet, resnet
from sr_jax.backbones.vgg import VGG, VGG_CLASSES, VGG_CONFIGS, vgg
from sr_jax.weights import porting, registry
from sr_jax.weights.checkpoint import read_checkpoint
from sr_jax.weights.merge import LoadReport, init_abstract, load_state

__all__ = [
  "BACKBONES",
  "create_backbone",
  "load_backbone_weights",
  "backbone_arrays",
  "detect_backbone",
  "fold_batchnorm",
  "set_bn_frozen",
  "Identity",
  "ResNet",
  "EfficientNetLite",
  "VGG",
  "AlexNet",
]

BACKBONES = (*RESNET_CONFIGS, "efficientnet_lite0", *VGG_CONFIGS, "alexnet")
# Default registry entry per architecture, for weights="imagenet".
_IMAGENET = {
  **{name: f"torchvision:{name}" for name in RESNET_CONFIGS},
  "efficientnet_lite0": "efficientnet_lite0",
  **{name: f"torchvision:{name}" for name in (*VGG_CONFIGS, "alexnet")},
}
# The class of each backbone; its `port_rules` map PyTorch names onto it.
_CLASSES: dict[str, type[nnx.Module]] = {
  **{name: ResNet for name in RESNET_CONFIGS},
  "efficientnet_lite0": EfficientNetLite,
  **VGG_CLASSES,
  "alexnet": AlexNet,
}


def detect_backbone(torch_keys) -> str | None:
  """Guesses the architecture of a PyTorch-named state dict (None if not a known backbone)."""
  keys = set(torch_keys)
  if "_conv_stem.weight" in keys and "_blocks.15._project_conv.weight" in keys:
    return "efficientnet_lite0"
  if "features.0.weight" in keys and "layer1.0.conv1.weight" not in keys:
    return _detect_vgg_or_alexnet(keys)
  if "layer1.0.conv1.weight" not in keys:
    return None
  bottleneck = "layer1.0.conv3.weight" in keys
  depths = tuple(
    len({k.split(".")[1] for k in keys if k.startswith(f"layer{i}.")}) for i in range(1, 5)
  )
  for name, (block, layers) in RESNET_CONFIGS.items():
    if tuple(layers) == depths and (block.expansion == 4) == bottleneck:
      return name
  return None


def _detect_vgg_or_alexnet(keys: set) -> str | None:
  convs = {k.rpartition(".")[0] for k in keys if k.startswith("features.")}
  for name, cls in {**VGG_CLASSES, "alexnet": AlexNet}.items():
    if convs == {path for path in cls.torchvision_names if path.startswith("features.")}:
      return name
  return None


def _build(name: str, *, num_classes: int, head: bool, rngs: nnx.Rngs) -> nnx.Module:
  if name in RESNET_CONFIGS:
    return resnet(name, num_classes=num_classes, head=head, rngs=rngs)
  if name == "efficientnet_lite0":
    return efficientnet_lite0(num_classes=num_classes, head=head, rngs=rngs)
  if name in VGG_CONFIGS:
    return vgg(name, num_classes=num_classes, head=head, rngs=rngs)
  if name == "alexnet":
    return alexnet(num_classes=num_classes, head=head, rngs=rngs)
  raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")


def _weights_file(name: str, weights: str | os.PathLike, cache_dir) -> str:
  weights = os.fspath(weights)
  if weights == "imagenet":
    weights = _IMAGENET[name]
  if weights in registry.names() and registry.get(weights).arch not in (None, name):
    raise ValueError(f"{weights} holds a {registry.get(weights).arch}, not a {name}")
  return os.fspath(registry.resolve(weights, cache_dir=cache_dir))


def backbone_arrays(name: str, path: str | os.PathLike) -> dict:
  """Reads a checkpoint file as NNX-layout arrays keyed like the `name` backbone's state."""
  if name not in _CLASSES:
    raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
  checkpoint = read_checkpoint(path)
  if checkpoint.arch and checkpoint.arch != name:
    raise ValueError(f"{path}: a checkpoint of {checkpoint.arch!r}, not of {name!r}")
  if checkpoint.layout == "nnx":
    return checkpoint.arrays
  return porting.torch_to_nnx(checkpoint.arrays, _CLASSES[name].port_rules)


def load_backbone_weights(
  net: nnx.Module,
  name: str,
  weights: str | os.PathLike,
  *,
  strict: bool = True,
  dont_load: Iterable[str] = (),
  cache_dir: str | os.PathLike | None = None,
) -> LoadReport:
  """Loads `weights` (path, registry name or "imagenet") into the `name` backbone `net`, in place.

  `net` may be initialised or abstract (`nnx.eval_shape`); its BatchNorm mode (`freeze_bn`) is
  left as it was built. The classifier (`fc.*`) is skipped automatically when `net` has no head
  or a head whose shape differs from the checkpoint's. Returns the `LoadReport` (strict mode
  raises on any missing / unexpected / mismatched key, listing all of them).
  """
  path = _weights_file(name, weights, cache_dir)
  arrays = backbone_arrays(name, path)
  dont_load = list(dont_load)
  fc = getattr(net, "fc", None)
  if fc is None:  # no head: leave out the whole classifier (VGG / AlexNet: pre_logits too)
    dont_load.extend(getattr(net, "head_keys", ("fc.*",)))
  elif "fc.kernel" in arrays and arrays["fc.kernel"].shape != fc.kernel.shape:
    dont_load.append("fc.*")
  report = load_state(net, arrays, dont_load=dont_load, strict=strict, source=path)
  if report.ok:
    logging.info("%s", report.summary())
  else:
    logging.warning("%s", report)
  return report


def create_backbone(
  name: str,
  weights: str | os.PathLike | None = None,
  head: bool = True,
  *,
  num_classes: int = 1000,
  rngs: nnx.Rngs | int | None = None,
  seed: int = 0,
  strict: bool = True,
  dont_load: Iterable[str] = (),
  freeze_bn: bool = True,
  cache_dir: str | os.PathLike | None = None,
) -> nnx.Module:
  """Builds a backbone and optionally loads pretrained weights.

  Args:
    name: one of `resnet18`, `resnet34`, `resnet50`, `resnet101`, `resnet152`,
      `efficientnet_lite0`, `vgg16`, `vgg19`, `alexnet`.
    weights: None (random init), a local file, a registry name ("torchvision:resnet50",
      "efficientnet_lite0", ...) or "imagenet" (the architecture's default entry).
    head: keep the ImageNet classifier; without it `net(x)` returns pooled features.
    num_classes: classifier width; a width other than the checkpoint's is left at init.
    rngs: `nnx.Rngs` or an int seed for the random init (default: `seed`).
    seed: seed used when `rngs` is None.
    strict: raise if the checkpoint does not match (apart from `dont_load` and a dropped head).
    dont_load: extra glob/regex patterns of keys to leave at init.
    freeze_bn: BatchNorm uses (and never updates) the running statistics, so `net(x)` matches
      torch `.eval()`; False trains on batch statistics (`set_bn_frozen(net, ...)` switches).
    cache_dir: download cache for registry names (default `$SR_JAX_CACHE` or ~/.cache/sr_jax).

  Returns:
    The `nnx.Module`, with `features(x)` (at `feature_strides`: 2..32 for ResNet and
    EfficientNet, 1..16 for VGG, 4..16 for AlexNet), `feature_channels`,
    `feature_strides` and `num_features`.
  """
  if rngs is None:
    rngs = nnx.Rngs(seed)
  elif isinstance(rngs, int):
    rngs = nnx.Rngs(rngs)
  if weights is None:
    net = _build(name, num_classes=num_classes, head=head, rngs=rngs)
  else:
    # Build abstractly, load, then initialise only what the checkpoint did not provide:
    # random init compiles one program per weight shape (seconds on CPU), loading does not.
    net = utils.eval_shape_module(
      lambda rngs: _build(name, num_classes=num_classes, head=head, rngs=rngs)
    )
    load_backbone_weights(
      net, name, weights, strict=strict, dont_load=dont_load, cache_dir=cache_dir
    )
    init_abstract(net, rngs)
  set_bn_frozen(net, freeze_bn)
  return net
