"""AlexNet in Flax NNX, identical to torchvision's `alexnet` (the "one weird trick" variant), NHWC.

Convolutions are named `conv1` ... `conv5`; `AlexNet.port_rules` maps torchvision's
`features.<index>` / `classifier.<index>` onto them. `features(x)` returns the five ReLU
outputs (relu1 ... relu5), the taps LPIPS's AlexNet variant compares. Dropout is not modelled.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from sr_jax.backbones.vgg import HEAD_KEYS, classifier_head
from sr_jax.conv import Conv
from sr_jax.weights.porting import PortRules

__all__ = ["AlexNet", "alexnet"]

# (out channels, kernel, stride, padding, max-pool before the conv) per conv, torchvision's.
_CONVS = (
  (64, 11, 4, 2, False),
  (192, 5, 1, 2, True),
  (384, 3, 1, 1, True),
  (256, 3, 1, 1, False),
  (256, 3, 1, 1, False),
)
_TORCHVISION_NAMES = {
  **{f"features.{i}": f"conv{n}" for n, i in enumerate((0, 3, 6, 8, 10), start=1)},
  "classifier.1": "pre_logits.0",
  "classifier.4": "pre_logits.1",
  "classifier.6": "fc",
}
# PyTorch's default init (kaiming uniform with a=sqrt(5), fan-in uniform bias), as torchvision.
_weight_init = jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _bias_init(fan_in: int):
  bound = 1.0 / fan_in**0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _max_pool(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")  # MaxPool2d(3, 2): floor


class AlexNet(nnx.Module):
  """torchvision AlexNet on NHWC float32 images normalised with ImageNet mean/std.

  `features(x)` returns relu1 ... relu5 (64, 192, 384, 256, 256 channels; strides 4, 8, 16, 16,
  16). `__call__` returns logits, or the globally average-pooled last max-pool output `[N, 256]`
  when built with `head=False`.
  """

  torchvision_names = _TORCHVISION_NAMES
  port_rules = PortRules(rename=lambda path: _TORCHVISION_NAMES.get(path, path))
  head_keys = HEAD_KEYS

  def __init__(self, *, num_classes: int = 1000, head: bool = True, rngs: nnx.Rngs):
    in_features = 3
    for n, (channels, kernel, stride, pad, _) in enumerate(_CONVS, start=1):
      conv = Conv(
        in_features,
        channels,
        (kernel, kernel),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        kernel_init=_weight_init,
        bias_init=_bias_init(in_features * kernel * kernel),
        rngs=rngs,
      )
      setattr(self, f"conv{n}", conv)
      in_features = channels
    self.num_features = in_features
    self.feature_channels = tuple(c[0] for c in _CONVS)
    self.feature_strides = (4, 8, 16, 16, 16)
    if head:

      def linear(i, o):
        return nnx.Linear(i, o, kernel_init=_weight_init, bias_init=_bias_init(i), rngs=rngs)

      self.pre_logits = nnx.List([linear(256 * 6 * 6, 4096), linear(4096, 4096)])
      self.fc = linear(4096, num_classes)
    else:
      self.pre_logits = None
      self.fc = None

  def features(self, x: jax.Array) -> list[jax.Array]:
    """relu1 ... relu5 (strides 4, 8, 16, 16, 16)."""
    outputs = []
    for n, (*_, pool_before) in enumerate(_CONVS, start=1):
      if pool_before:
        x = _max_pool(x)
      x = nnx.relu(getattr(self, f"conv{n}")(x))
      outputs.append(x)
    return outputs

  def __call__(self, x: jax.Array) -> jax.Array:
    return classifier_head(_max_pool(self.features(x)[-1]), self.pre_logits, self.fc, (6, 6))


def alexnet(*, num_classes: int = 1000, head: bool = True, rngs: nnx.Rngs) -> AlexNet:
  """Builds torchvision's AlexNet (random init)."""
  return AlexNet(num_classes=num_classes, head=head, rngs=rngs)
