"""ResNet-18/34/50/101/152 in Flax NNX, identical to torchvision's (v1.5), NHWC.

v1.5: the bottleneck's stride sits on its 3x3 conv (torchvision), not on the first 1x1 (the
original paper / Caffe). Submodule names follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`,
`layer1.0.downsample.0`, `fc`), so a torchvision or timm state dict maps onto this module with
only the generic PyTorch -> NNX layout change (`ResNet.port_rules`: no renaming).
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from sr_jax.conv import Conv
from sr_jax.weights.porting import PortRules

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "RESNET_CONFIGS", "resnet"]

# torchvision's init: kaiming normal (fan_out) convs; PyTorch's default Linear init.
_conv_init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_linear_init = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _conv(
  in_features: int, out_features: int, kernel: int, stride: int, rngs: nnx.Rngs
) -> nnx.Conv:
  pad = kernel // 2  # torchvision pads symmetrically (not TF "SAME")
  return Conv(
    in_features,
    out_features,
    (kernel, kernel),
    strides=stride,
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    kernel_init=_conv_init,
    rngs=rngs,
  )


def _bn(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # torch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (= Flax 0.9); frozen stats by default.
  return nnx.BatchNorm(channels, use_running_average=True, momentum=0.9, epsilon=1e-5, rngs=rngs)


def _downsample(
  in_features: int, out_features: int, stride: int, rngs: nnx.Rngs
) -> nnx.List | None:
  if stride == 1 and in_features == out_features:
    return None
  # A list (not named attributes) so keys read `downsample.0/1` exactly as in torchvision.
  return nnx.List([_conv(in_features, out_features, 1, stride, rngs), _bn(out_features, rngs)])


def _shortcut(downsample: nnx.List | None, x: jax.Array) -> jax.Array:
  return x if downsample is None else downsample[1](downsample[0](x))


class BasicBlock(nnx.Module):
  """Two 3x3 convs (ResNet-18/34)."""

  expansion = 1
  conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("downsample.0", "downsample.1"))

  def __init__(self, in_features: int, channels: int, stride: int, *, rngs: nnx.Rngs):
    self.conv1 = _conv(in_features, channels, 3, stride, rngs)
    self.bn1 = _bn(channels, rngs)
    self.conv2 = _conv(channels, channels, 3, 1, rngs)
    self.bn2 = _bn(channels, rngs)
    self.downsample = _downsample(in_features, channels, stride, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return nnx.relu(y + _shortcut(self.downsample, x))


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand x4 (ResNet-50/101/152)."""

  expansion = 4
  conv_bn_pairs = (
    ("conv1", "bn1"),
    ("conv2", "bn2"),
    ("conv3", "bn3"),
    ("downsample.0", "downsample.1"),
  )

  def __init__(self, in_features: int, channels: int, stride: int, *, rngs: nnx.Rngs):
    out_features = channels * self.expansion
    self.conv1 = _conv(in_features, channels, 1, 1, rngs)
    self.bn1 = _bn(channels, rngs)
    self.conv2 = _conv(channels, channels, 3, stride, rngs)
    self.bn2 = _bn(channels, rngs)
    self.conv3 = _conv(channels, out_features, 1, 1, rngs)
    self.bn3 = _bn(out_features, rngs)
    self.downsample = _downsample(in_features, out_features, stride, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return nnx.relu(y + _shortcut(self.downsample, x))


RESNET_CONFIGS: dict[str, tuple[type[nnx.Module], tuple[int, int, int, int]]] = {
  "resnet18": (BasicBlock, (2, 2, 2, 2)),
  "resnet34": (BasicBlock, (3, 4, 6, 3)),
  "resnet50": (Bottleneck, (3, 4, 6, 3)),
  "resnet101": (Bottleneck, (3, 4, 23, 3)),
  "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nnx.Module):
  """torchvision ResNet on NHWC float32 images normalised with ImageNet mean/std.

  `features(x)` returns 5 maps: the stem (after ReLU, before max-pool; stride 2, 64 channels)
  and layer1..layer4 (strides 4, 8, 16, 32). `__call__` returns logits `[N, num_classes]`, or
  the globally average-pooled layer4 features `[N, C]` when built with `head=False`.
  """

  conv_bn_pairs = (("conv1", "bn1"),)
  port_rules = PortRules()  # torchvision / timm names are ours

  def __init__(
    self,
    block: type[nnx.Module],
    layers: Sequence[int],
    *,
    num_classes: int = 1000,
    head: bool = True,
    rngs: nnx.Rngs,
  ):
    self.conv1 = Conv(
      3,
      64,
      (7, 7),
      strides=2,
      padding=((3, 3), (3, 3)),
      use_bias=False,
      kernel_init=_conv_init,
      rngs=rngs,
    )
    self.bn1 = _bn(64, rngs)
    in_features = 64
    for index, (count, channels) in enumerate(zip(layers, (64, 128, 256, 512))):
      stride = 1 if index == 0 else 2
      blocks = []
      for b in range(count):
        blocks.append(block(in_features, channels, stride if b == 0 else 1, rngs=rngs))
        in_features = channels * block.expansion
      setattr(self, f"layer{index + 1}", nnx.List(blocks))
    self.num_features = in_features
    self.feature_channels = (64, *(c * block.expansion for c in (64, 128, 256, 512)))
    self.feature_strides = (2, 4, 8, 16, 32)
    self.fc = (
      nnx.Linear(
        in_features,
        num_classes,
        kernel_init=_linear_init,
        bias_init=_fan_in_uniform_bias(in_features),
        rngs=rngs,
      )
      if head
      else None
    )

  def stem(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn1(self.conv1(x)))

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The stem and the four stage outputs, at strides 2, 4, 8, 16, 32."""
    x = self.stem(x)
    outputs = [x]
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pads with -inf
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in layer:
        x = block(x)
      outputs.append(x)
    return outputs

  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(self.features(x)[-1], axis=(1, 2))
    return pooled if self.fc is None else self.fc(pooled)


def _fan_in_uniform_bias(fan_in: int):
  bound = 1.0 / fan_in**0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def resnet(name: str, *, num_classes: int = 1000, head: bool = True, rngs: nnx.Rngs) -> ResNet:
  """Builds `resnet18`, `resnet34`, `resnet50`, `resnet101` or `resnet152` (random init)."""
  if name not in RESNET_CONFIGS:
    raise ValueError(f"unknown ResNet {name!r}; choose from {sorted(RESNET_CONFIGS)}")
  block, layers = RESNET_CONFIGS[name]
  return ResNet(block, layers, num_classes=num_classes, head=head, rngs=rngs)
