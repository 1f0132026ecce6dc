"""VGG-16 and VGG-19 in Flax NNX, identical to torchvision's `vgg16` / `vgg19` (no BatchNorm), NHWC.

Layers carry BasicSR's names (`conv1_1` ... `conv5_4`, as in `basicsr.archs.vgg_arch.NAMES`);
`VGG.port_rules` maps torchvision's `features.<index>` / `classifier.<index>` onto them.
`named_features(x, names)` returns any of BasicSR's taps by name: `convI_J` (before the ReLU),
`reluI_J`, `poolI`, which is what BasicSR's `VGGFeatureExtractor` (the Real-ESRGAN perceptual
loss) returns, up to its input normalisation: inputs here are already ImageNet mean/std
normalised (`sr_jax.utils.imagenet_normalize`), as for every backbone.

The classifier (`pre_logits.0`, `pre_logits.1`, `fc`) is torchvision's, after its adaptive
average pooling to 7x7 and a flatten in PyTorch's channel-first order. Dropout is not modelled
(this port is for inference and feature extraction).
"""

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax.conv import Conv
from sr_jax.weights.porting import PortRules

__all__ = [
  "VGG",
  "VGG16",
  "VGG19",
  "VGG_CONFIGS",
  "vgg",
  "adaptive_avg_pool",
  "classifier_head",
  "layer_names",
]

STAGE_CHANNELS = (64, 128, 256, 512, 512)
# Convolutions per stage (torchvision configs "D" and "E").
VGG_CONFIGS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
HEAD_KEYS = ("fc.*", "pre_logits.*")

# torchvision's init: kaiming normal (fan_out, ReLU) convs with zero bias; N(0, 0.01) linears.
_conv_init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_linear_init = jax.nn.initializers.normal(0.01)


def layer_names(depths) -> tuple[str, ...]:
  """BasicSR's layer names in forward order: conv1_1, relu1_1, ..., pool1, conv2_1, ..."""
  names = []
  for stage, count in enumerate(depths, start=1):
    for j in range(1, count + 1):
      names += [f"conv{stage}_{j}", f"relu{stage}_{j}"]
    names.append(f"pool{stage}")
  return tuple(names)


def _torchvision_names(depths) -> dict[str, str]:
  """torchvision module paths -> ours: `features.<i>` for each conv, `classifier.<i>`."""
  rename = {"classifier.0": "pre_logits.0", "classifier.3": "pre_logits.1", "classifier.6": "fc"}
  for index, name in enumerate(layer_names(depths)):  # one torchvision module per BasicSR name
    if name.startswith("conv"):
      rename[f"features.{index}"] = name
  return rename


def adaptive_avg_pool(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """PyTorch `AdaptiveAvgPool2d(size)` on NHWC: bin i covers [floor(i*H/n), ceil((i+1)*H/n))."""

  def bins(length: int, count: int) -> np.ndarray:
    weights = np.zeros((count, length), np.float32)
    for i in range(count):
      start, end = (i * length) // count, math.ceil((i + 1) * length / count)
      weights[i, start:end] = 1.0 / (end - start)
    return weights

  rows, cols = bins(x.shape[1], size[0]), bins(x.shape[2], size[1])
  return jnp.einsum("oh,nhwc,pw->nopc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)


def classifier_head(x: jax.Array, pre_logits, fc, pool_size: tuple[int, int]) -> jax.Array:
  """torchvision's VGG / AlexNet classifier on the last max-pool's output: adaptive average
  pooling to `pool_size`, flatten in PyTorch's C, H, W order, two ReLU linears, `fc`. Without a
  head (`fc` None): the globally average-pooled features."""
  if fc is None:
    return jnp.mean(x, axis=(1, 2))
  x = adaptive_avg_pool(x, pool_size)
  x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
  for linear in pre_logits:
    x = nnx.relu(linear(x))
  return fc(x)


class VGG(nnx.Module):
  """torchvision VGG on NHWC float32 images normalised with ImageNet mean/std.

  `features(x)` returns the last ReLU output of each stage, before its max-pool (vgg19:
  relu1_2, relu2_2, relu3_4, relu4_4, relu5_4; strides 1, 2, 4, 8, 16; the taps LPIPS uses
  for vgg16). `named_features(x, names)` returns BasicSR-named taps. `__call__` returns logits,
  or the globally average-pooled pool5 output `[N, 512]` when built with `head=False`.
  """

  depths: tuple[int, ...] = ()
  torchvision_names: dict[str, str] = {}  # torchvision module path -> ours
  port_rules = PortRules()
  head_keys = HEAD_KEYS

  def __init__(self, *, num_classes: int = 1000, head: bool = True, rngs: nnx.Rngs):
    in_features = 3
    for stage, (count, channels) in enumerate(zip(self.depths, STAGE_CHANNELS), start=1):
      for j in range(1, count + 1):
        conv = Conv(
          in_features,
          channels,
          (3, 3),
          padding=((1, 1), (1, 1)),
          kernel_init=_conv_init,
          bias_init=nnx.initializers.zeros_init(),
          rngs=rngs,
        )
        setattr(self, f"conv{stage}_{j}", conv)
        in_features = channels
    self.layer_names = layer_names(self.depths)
    self.num_features = in_features
    self.feature_channels = STAGE_CHANNELS
    self.feature_strides = (1, 2, 4, 8, 16)
    self.feature_names = tuple(f"relu{s}_{n}" for s, n in enumerate(self.depths, start=1))
    if head:

      def linear(i, o):
        return nnx.Linear(
          i, o, kernel_init=_linear_init, bias_init=nnx.initializers.zeros_init(), rngs=rngs
        )

      self.pre_logits = nnx.List([linear(512 * 7 * 7, 4096), linear(4096, 4096)])
      self.fc = linear(4096, num_classes)
    else:
      self.pre_logits = None
      self.fc = None

  def named_features(self, x: jax.Array, names) -> dict[str, jax.Array]:
    """The outputs of the BasicSR-named layers in `names` (e.g. "conv5_4"; see `layer_names`).

    Runs the network only up to the deepest layer asked for, as BasicSR's extractor does.
    """
    wanted = set(names)
    unknown = wanted.difference(self.layer_names)
    if unknown:
      raise ValueError(
        f"unknown VGG layer names {sorted(unknown)}; choose from {', '.join(self.layer_names)}"
      )
    outputs = {}
    for name in self.layer_names:
      if not wanted.difference(outputs):
        break
      if name.startswith("conv"):
        x = getattr(self, name)(x)
      elif name.startswith("relu"):
        x = nnx.relu(x)
      else:  # torchvision's MaxPool2d(2, 2): floor, no padding
        x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      if name in wanted:
        outputs[name] = x
    return outputs

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The last ReLU of each stage, before its max-pool (strides 1, 2, 4, 8, 16)."""
    outputs = self.named_features(x, self.feature_names)
    return [outputs[name] for name in self.feature_names]

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.named_features(x, ("pool5",))["pool5"]
    return classifier_head(x, self.pre_logits, self.fc, (7, 7))


def _port_rules(torchvision_names: dict[str, str]) -> PortRules:
  return PortRules(rename=lambda path: torchvision_names.get(path, path))


class VGG16(VGG):
  """torchvision `vgg16` (configuration "D")."""

  depths = VGG_CONFIGS["vgg16"]
  torchvision_names = _torchvision_names(depths)
  port_rules = _port_rules(torchvision_names)


class VGG19(VGG):
  """torchvision `vgg19` (configuration "E")."""

  depths = VGG_CONFIGS["vgg19"]
  torchvision_names = _torchvision_names(depths)
  port_rules = _port_rules(torchvision_names)


VGG_CLASSES = {"vgg16": VGG16, "vgg19": VGG19}


def vgg(name: str, *, num_classes: int = 1000, head: bool = True, rngs: nnx.Rngs) -> VGG:
  """Builds `vgg16` or `vgg19` (random init)."""
  return VGG_CLASSES[name](num_classes=num_classes, head=head, rngs=rngs)
