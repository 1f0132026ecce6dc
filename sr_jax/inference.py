"""Inference: the one forward pass, and trained or pretrained networks loaded for it.

`restore_model(workdir)` builds the network abstractly from the run's config.json and restores
only what inference needs from its checkpoint (the EMA weights, or the params, and the model
state such as BatchNorm statistics): no optimizer, no loss, no pretrained file is touched.
"""

import os
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from sr_jax import checkpointing, models, utils, workdirs
from sr_jax.models import precision


def forward(graphdef: nnx.GraphDef, state: Any, lr: jax.Array, dtype=None) -> jax.Array:
  """The network's SR output for an NHWC LR batch, in inference mode (BatchNorm on its running
  statistics, whatever training used), as float32. Jit it (`dtype` static); `state` is
  `nnx.split(model)[1]` or `(params, model_state)`.

  dtype: what the network computes in, "float32" | "bfloat16" (`sr_jax.models.precision`); the
  weights are used as stored (float32). None: as the network was set (`load_model(dtype=...)`).
  """
  states = state if isinstance(state, tuple) else (state,)
  model = nnx.merge(graphdef, *states)
  model.eval()
  if dtype is not None:
    precision.set_compute_dtype(model, dtype)
  return model(lr).astype(jnp.float32)


def inference_weights_key(config: ml_collections.ConfigDict) -> str:
  """Which weights of the train state inference uses: the EMA when the run kept one."""
  return "ema_params" if config.train.ema_decay else "params"


def restore_model(
  workdir: str, checkpoint: str | int = "latest", device: jax.Device | None = None
) -> tuple[nnx.Module, int, ml_collections.ConfigDict]:
  """The trained network of `workdir` at checkpoint latest|best|STEP, in eval mode.

  Returns (model on `device` (default: the first local one), step, the run's config).
  """
  config = workdirs.load_config(workdir)
  model = utils.eval_shape_module(
    lambda rngs: models.create_model(config.model, config.data.scale, rngs)
  )
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  one_device = jax.sharding.SingleDeviceSharding(device or jax.local_devices()[0])
  template = {inference_weights_key(config): params, "model_state": model_state}
  template = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device), template
  )
  # Read-only; a damaged latest/best checkpoint is reported and the newest good one used.
  step, restored = checkpointing.restore_weights(workdir, checkpoint, template)
  model = nnx.merge(graphdef, restored[inference_weights_key(config)], restored["model_state"])
  model.eval()
  return model, step, config


def load_model(
  workdir: str | None = None,
  weights: str | None = None,
  model_name: str | None = None,
  scale: int | None = None,
  checkpoint: str = "latest",
  dtype: str = "float32",
) -> tuple[nnx.Module, str]:
  """The SR network named by exactly one of `workdir`, `weights` or `model_name`.

  Args:
    workdir: a training workdir: its config.json and checkpoint `checkpoint` (EMA weights if kept).
    weights: a pretrained weights file or registry name (`sr_jax.models.load_pretrained_sr`).
    model_name: a parameter-free model of `sr_jax.models.create_model` (e.g. "bicubic"); needs
      `scale`.
    scale: required with `model_name`; otherwise, if given, must match the network.
    checkpoint: "latest", "best" or a step number (with `workdir`).
    dtype: what the network computes in, "float32" | "bfloat16" (weights stay float32).

  Returns:
    (nnx.Module with `.scale`, a short description for logs and captions).
  """
  if sum(x is not None for x in (workdir, weights, model_name)) != 1:
    raise ValueError("give exactly one of --workdir, --weights or --model")
  if workdir is not None:
    which = int(checkpoint) if str(checkpoint).isdigit() else checkpoint
    model, step, config = restore_model(workdir, which)
    description = f"{config.model.name} step {step}"
  elif weights is not None:
    model = models.load_pretrained_sr(weights)
    description = os.path.basename(os.fspath(weights))
  else:
    if scale is None:
      raise ValueError(f"--model={model_name} needs --scale")
    model_config = ml_collections.ConfigDict({"name": model_name})
    # Shapes only: refusing a network with (untrained) parameters should not cost initialising it.
    try:
      abstract = utils.eval_shape_module(lambda r: models.create_model(model_config, scale, r))
    except AttributeError:  # a network whose config has hyperparameters: not parameter-free
      abstract = None
    if abstract is None or jax.tree.leaves(nnx.state(abstract, nnx.Param)):
      raise ValueError(
        f"--model={model_name} has untrained weights; use --workdir or --weights for a "
        "trained network (--model is for parameter-free ones such as bicubic)"
      )
    model = models.create_model(model_config, scale, nnx.Rngs(0))
    description = model_name
  if scale is not None and model.scale != scale:
    raise ValueError(f"the network is x{model.scale}, but --scale={scale}")
  return precision.set_compute_dtype(model, dtype), description
