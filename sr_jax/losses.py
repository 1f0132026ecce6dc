"""Training losses: L1, plus an optional feature (perceptual) loss from a frozen pretrained
backbone.

total = loss.l1_weight * L1(sr, hr) + loss.feature_weight * sum over loss.feature_layers of
w_layer * L1(features(sr), features(hr)), features taken on ImageNet-normalised images, with w from
loss.feature_layer_weights (empty: 1 / number of layers, the mean). Layers are stage indices of a
backbone's `features` (EfficientNet-Lite0, ResNets: 0, 1, 2 = strides 2, 4, 8) or, for VGG,
BasicSR's layer names (`named_features`): Real-ESRGAN's perceptual loss is VGG19 with conv1_2,
conv2_2, conv3_4, conv4_4, conv5_4 (before the ReLU) weighted 0.1, 0.1, 1, 1, 1
(configs/finetune_realesrgan_x4plus_gan.py). The backbone's weights live in the train state
(`loss_state`) and are never updated. The GAN term is added by `sr_jax.gan`.
"""

import dataclasses
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from sr_jax import utils
from sr_jax.backbones import create_backbone


@dataclasses.dataclass(frozen=True)
class Loss:
  l1_weight: float
  feature_weight: float = 0.0
  feature_layers: tuple[int | str, ...] = ()
  feature_graphdef: Any = None
  feature_layer_weights: tuple[float, ...] = ()  # one per layer; () = the mean over layers

  def __call__(
    self, sr: jnp.ndarray, hr: jnp.ndarray, feature_state: Any = None
  ) -> tuple[jnp.ndarray, dict]:
    parts = {"l1": jnp.mean(jnp.abs(sr - hr))}
    total = self.l1_weight * parts["l1"]
    if self.feature_weight:
      parts["feature"] = self.feature_loss(sr, hr, feature_state)
      total = total + self.feature_weight * parts["feature"]
    return total, parts

  def feature_loss(self, sr, hr, feature_state) -> jnp.ndarray:
    backbone = nnx.merge(self.feature_graphdef, jax.lax.stop_gradient(feature_state))
    images = utils.imagenet_normalize(jnp.concatenate([sr, hr], axis=0))
    if isinstance(self.feature_layers[0], str):
      both = backbone.named_features(images, self.feature_layers)
    else:
      both = backbone.features(images)
    n = sr.shape[0]
    # BasicSR's PerceptualLoss detaches the HR features; the frozen backbone alone does not.
    per_layer = jnp.stack(
      [
        jnp.mean(jnp.abs(both[i][:n] - jax.lax.stop_gradient(both[i][n:])))
        for i in self.feature_layers
      ]
    )
    if not self.feature_layer_weights:
      return jnp.mean(per_layer)
    return jnp.sum(per_layer * jnp.asarray(self.feature_layer_weights, per_layer.dtype))


def create_loss(
  loss_config: ml_collections.ConfigDict, load_weights: bool = True
) -> tuple[Loss, Any]:
  """The loss and the frozen feature backbone's state (None without a feature loss).

  With `load_weights=False` the backbone state is abstract (shapes only, no file read): the
  weights are then restored from a checkpoint that holds them.
  """
  if not loss_config.feature_weight:
    return Loss(l1_weight=loss_config.l1_weight), None
  backbone_config = loss_config.feature_backbone

  def build(weights):
    return create_backbone(backbone_config.name, weights=weights, head=False, freeze_bn=True)

  if load_weights:
    backbone = build(backbone_config.weights or None)
  else:
    backbone = nnx.eval_shape(lambda: build(None))
  layers = _feature_layers(loss_config, backbone)
  weights = tuple(float(w) for w in loss_config.feature_layer_weights)
  if weights and len(weights) != len(layers):
    raise ValueError(
      f"config loss.feature_layer_weights={weights} needs one weight per loss.feature_layers "
      f"entry {layers} (or none: the mean)"
    )
  graphdef, feature_state = nnx.split(backbone)
  loss = Loss(loss_config.l1_weight, loss_config.feature_weight, layers, graphdef, weights)
  return loss, feature_state


def _feature_layers(loss_config: ml_collections.ConfigDict, backbone) -> tuple[int | str, ...]:
  """`loss.feature_layers`: stage indices, or layer names for a backbone with `named_features`."""
  layers = tuple(loss_config.feature_layers)
  backbone_name = loss_config.feature_backbone.name
  if layers and all(isinstance(x, str) for x in layers):
    names = getattr(backbone, "layer_names", ())
    unknown = [x for x in layers if x not in names]
    if unknown:
      raise ValueError(
        f"config loss.feature_layers: {unknown} are not layers of {backbone_name!r}"
        + (f"; choose from {', '.join(names)}" if names else " (it has stage indices only)")
      )
    return layers
  if not layers or not all(isinstance(x, int) for x in layers):
    raise ValueError(
      f"config loss.feature_layers={layers} must be stage indices or layer names, not empty"
    )
  if max(layers) >= len(backbone.feature_channels):
    raise ValueError(
      f"config loss.feature_layers={layers} must index the backbone's "
      f"{len(backbone.feature_channels)} feature stages"
    )
  return layers
