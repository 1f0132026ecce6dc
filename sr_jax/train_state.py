"""The train state: a plain dict pytree (step, params, model_state, opt_state[, ema_params,
loss_state]), built from a config, concrete for a fresh run or abstract (shapes and shardings
only) to restore a checkpoint into."""

from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sr_jax import models, sharding, utils

TrainState = dict[str, Any]


def _model(config: ml_collections.ConfigDict, load_weights: bool) -> nnx.Module:
  model = models.create_model(config.model, config.data.scale, nnx.Rngs(config.seed))
  if load_weights:
    models.load_pretrained(model, config.model)
  return model


def _state_of(model: nnx.Module, config, tx, loss_state, init) -> tuple[nnx.GraphDef, TrainState]:
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  if not jax.tree.leaves(params):
    raise ValueError(
      f"model.name={config.model.name!r} has no trainable parameters; use --mode=eval"
    )
  state = {"step": init(jnp.zeros((), jnp.int32)), "params": params, "model_state": model_state}
  state["opt_state"] = jax.eval_shape(tx.init, params) if init is _abstract else tx.init(params)
  if config.train.ema_decay:
    state["ema_params"] = jax.tree.map(init, params)
  if loss_state is not None:
    state["loss_state"] = loss_state
  return graphdef, state


def _abstract(x):
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


def create_train_state(
  config: ml_collections.ConfigDict,
  tx: optax.GradientTransformation,
  loss_state: Any = None,
  *,
  load_weights: bool = True,
) -> tuple[nnx.GraphDef, TrainState]:
  """A fresh train state: the model randomly initialised, then (`load_weights`) the pretrained
  weights of the config applied; EMA weights start equal to the params.

  `loss_state`: the frozen weights a loss needs (feature backbone), carried but never trained.
  """
  return _state_of(_model(config, load_weights), config, tx, loss_state, jnp.copy)


def abstract_train_state(
  config: ml_collections.ConfigDict,
  tx: optax.GradientTransformation,
  mesh: jax.sharding.Mesh,
  loss_state: Any = None,
) -> tuple[nnx.GraphDef, TrainState]:
  """Shapes, dtypes and shardings (`sharding.state_shardings`) of the train state: the template a
  checkpoint is restored into. Nothing is initialised and no file is read."""
  model = utils.eval_shape_module(
    lambda rngs: models.create_model(config.model, config.data.scale, rngs)
  )
  graphdef, state = _state_of(model, config, tx, loss_state, _abstract)
  state = jax.tree.map(_abstract, state)
  return graphdef, with_shardings(state, sharding.state_shardings(state, mesh))


def with_shardings(abstract_state: TrainState, shardings: TrainState) -> TrainState:
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings
  )


def abstract(state: TrainState) -> TrainState:
  """Shapes, dtypes and shardings of a concrete state."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
