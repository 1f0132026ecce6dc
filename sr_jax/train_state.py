"""The train state: a plain dict pytree (step, params, model_state, opt_state, rng[, ema_params]).

Built from a config, so that training, evaluation and inference restore checkpoints the same way.
"""

import json
import os
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sr_jax import checkpointing, losses, models, optim, sharding

TrainState = dict[str, Any]


def create_train_state(
  config: ml_collections.ConfigDict, tx: optax.GradientTransformation, loss_state: Any = None
) -> tuple[nnx.GraphDef, TrainState]:
  """Builds the model (with any pretrained weights) and its train state.

  `loss_state`: the frozen weights a loss needs (feature backbone), carried but never trained.
  """
  model = models.create_model(config.model, config.data.scale, nnx.Rngs(config.seed))
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  if not jax.tree.leaves(params):
    raise ValueError(
      f"model.name={config.model.name!r} has no trainable parameters; use --mode=eval"
    )
  state = {
    "step": jnp.zeros((), jnp.int32),
    "params": params,
    "model_state": model_state,
    "opt_state": tx.init(params),
    "rng": jax.random.PRNGKey(config.seed),
  }
  if config.train.ema_decay:
    state["ema_params"] = jax.tree.map(jnp.copy, params)
  if loss_state is not None:
    state["loss_state"] = loss_state
  return graphdef, state


def abstract(state: TrainState) -> TrainState:
  """Shapes, dtypes and shardings of a state: the template orbax restores into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in its workdir (config.json)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_checkpoint(
  config: ml_collections.ConfigDict, workdir: str, which: str | int = "latest"
) -> tuple[nnx.GraphDef, TrainState, int]:
  """Restores the train state of checkpoint `which` (latest|best|STEP) in `workdir`.

  Laid out as training lays it out (`sharding.state_shardings`: params replicated, opt_state and
  ema_params split over the mesh), whatever layout or device count the checkpoint was saved with.
  """
  mesh = sharding.create_mesh()
  _, loss_state = losses.create_loss(config.get("loss"))
  graphdef, state = create_train_state(config, optim.from_config(config)[1], loss_state)
  state = sharding.place_state(state, mesh)
  manager = checkpointing.create_manager(workdir, config.train.keep_checkpoints)
  try:
    step = checkpointing.resolve_step(manager, which)
    state = checkpointing.restore(manager, step, abstract(state))
  finally:
    manager.close()
  return graphdef, state, step


def inference_model(graphdef: nnx.GraphDef, state: TrainState) -> nnx.Module:
  """The trained network, with the EMA weights when the run kept them."""
  # Replicated, as the params: the EMA weights are split over the mesh in the train state.
  weights = sharding.gather_replicated(state.get("ema_params", state["params"]))
  model = nnx.merge(graphdef, weights, state["model_state"])
  model.eval()  # BatchNorm on running statistics
  return model
