"""SR networks. `create_model(model_config, scale, rngs)` builds the one a config names."""

from typing import Callable

from flax import nnx
import ml_collections

from sr_jax.models import edsr, pretrained, unet
from sr_jax.models.pretrained import load_pretrained_sr

# name -> builder(model_config, scale, rngs) -> nnx.Module with `scale` and `__call__(lr)`.
# A builder that supports pretrained weights loads them when `model_config.pretrained` is set.
_BUILDERS: dict[str, Callable[..., nnx.Module]] = {
  "edsr": edsr.from_config,
  "bicubic": edsr.bicubic_from_config,
  "rrdbnet": pretrained.rrdbnet_from_config,
  "srvgg_compact": pretrained.srvgg_compact_from_config,
  "unet": unet.from_config,  # pretrained backbone encoder: model.encoder.{name, weights, freeze_bn}
}


def create_model(model_config: ml_collections.ConfigDict, scale: int, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the SR network named by `model_config.name` for `scale`."""
  name = model_config.name
  if name not in _BUILDERS:
    raise ValueError(f"config model.name={name!r} is unknown; known: {sorted(_BUILDERS)}")
  return _BUILDERS[name](model_config, scale, rngs)
