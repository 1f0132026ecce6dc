"""SR networks: `create_model` builds one from its config (no file read); `load_pretrained` applies
the pretrained weights the config names, once, at the start of a fresh training run."""

import functools
from typing import Callable

from absl import logging
from flax import nnx
import ml_collections

from sr_jax.backbones import load_backbone_weights
from sr_jax.models import edsr, pretrained, unet
from sr_jax.models.pretrained import load_pretrained_sr

__all__ = ["create_model", "load_pretrained", "load_pretrained_sr", "pretrained_weights"]

# name -> builder(model_config, scale, rngs) -> nnx.Module with `scale` and `__call__(lr)`; every
# architecture of `pretrained.ARCHITECTURES` (those pretrained files hold) is built from its
# `config_keys`.
_BUILDERS: dict[str, Callable[..., nnx.Module]] = {
  "edsr": edsr.from_config,
  "bicubic": edsr.bicubic_from_config,
  "unet": unet.from_config,  # backbone encoder: model.encoder.{name, weights, freeze_bn}
  **{
    name: functools.partial(pretrained.build_from_config, name) for name in pretrained.ARCHITECTURES
  },
}


def create_model(model_config: ml_collections.ConfigDict, scale: int, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the SR network named by `model_config.name` for `scale`, randomly initialised.

  Pure: shapes and random values only, so `nnx.eval_shape(lambda: create_model(...))` is free.
  """
  name = model_config.name
  if name not in _BUILDERS:
    raise ValueError(f"config model.name={name!r} is unknown; known: {sorted(_BUILDERS)}")
  return _BUILDERS[name](model_config, scale, rngs)


def pretrained_weights(model_config: ml_collections.ConfigDict) -> str | None:
  """The pretrained file / registry name the config starts from (None: from scratch)."""
  if model_config.name == "unet":
    return unet.encoder_weights(model_config)
  return model_config.weights or None


def load_pretrained(model: nnx.Module, model_config: ml_collections.ConfigDict) -> None:
  """Loads the config's pretrained weights into `model` (from `create_model`) in place.

  `model.weights` for the SR networks (the whole network, strictly; the file's architecture must
  match the config's), `model.encoder.weights` for the U-Net's backbone encoder. No-op when the
  config names none.
  """
  weights = pretrained_weights(model_config)
  if weights is None:
    return
  if model_config.name == "unet":
    load_backbone_weights(model.encoder, model_config.encoder.name, weights)
  elif model_config.name in pretrained.ARCHITECTURES:
    pretrained.load_sr_weights(model, weights)
  else:
    raise ValueError(
      f"config model.weights={weights!r}: model.name={model_config.name!r} has no pretrained "
      f"weights loader; known: unet (model.encoder.weights), {sorted(pretrained.ARCHITECTURES)}"
    )
  logging.info("model %s: pretrained weights loaded from %s", model_config.name, weights)
