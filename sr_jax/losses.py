"""Training losses: L1, plus an optional feature (perceptual) loss from a frozen pretrained
backbone.

total = loss.l1_weight * L1(sr, hr) + loss.feature_weight * mean over loss.feature_layers of
L1(features(sr), features(hr)), features taken on ImageNet-normalised images. The backbone's weights
live in the train state (`loss_state`) and are never updated.
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
  feature_layers: tuple[int, ...] = ()
  feature_graphdef: Any = None

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
    both = backbone.features(utils.imagenet_normalize(jnp.concatenate([sr, hr], axis=0)))
    n = sr.shape[0]
    per_layer = [jnp.mean(jnp.abs(both[i][:n] - both[i][n:])) for i in self.feature_layers]
    return jnp.mean(jnp.stack(per_layer))


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
  layers = tuple(int(i) for i in loss_config.feature_layers)
  if not layers or max(layers) >= len(backbone.feature_channels):
    raise ValueError(
      f"config loss.feature_layers={layers} must index the backbone's "
      f"{len(backbone.feature_channels)} feature stages"
    )
  graphdef, feature_state = nnx.split(backbone)
  return Loss(loss_config.l1_weight, loss_config.feature_weight, layers, graphdef), feature_state
