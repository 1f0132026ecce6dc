"""Training losses: L1, plus an optional feature (perceptual) loss from a frozen pretrained backbone.

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

from sr_jax.models.unet import IMAGENET_MEAN, IMAGENET_STD


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
    normalise = lambda x: (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    both = backbone.features(normalise(jnp.concatenate([sr, hr], axis=0)))
    n = sr.shape[0]
    return jnp.mean(
      jnp.stack([jnp.mean(jnp.abs(both[i][:n] - both[i][n:])) for i in self.feature_layers])
    )


def create_loss(loss_config: ml_collections.ConfigDict | None) -> tuple[Loss, Any]:
  """The loss and the frozen feature backbone's state (None without a feature loss)."""
  if loss_config is None:
    return Loss(l1_weight=1.0), None
  if not loss_config.get("feature_weight", 0.0):
    return Loss(l1_weight=loss_config.l1_weight), None
  from sr_jax.backbones import create_backbone

  backbone = create_backbone(
    loss_config.feature_backbone,
    weights=loss_config.feature_weights or None,
    head=False,
    frozen_bn=True,
  )
  layers = tuple(int(i) for i in loss_config.feature_layers)
  if not layers or max(layers) >= len(backbone.feature_channels):
    raise ValueError(
      f"config loss.feature_layers={layers} must index the backbone's "
      f"{len(backbone.feature_channels)} feature stages"
    )
  graphdef, feature_state = nnx.split(backbone)
  return Loss(loss_config.l1_weight, loss_config.feature_weight, layers, graphdef), feature_state
