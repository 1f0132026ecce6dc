"""The train state: a plain dict pytree (step, params, model_state, opt_state[, ema_params,
loss_state, discriminator]), built from a config, concrete for a fresh run or abstract (shapes and
shardings only) to restore a checkpoint into.

With gan.weight > 0, `discriminator` = {params, model_state (spectral-norm vectors), opt_state}:
the GAN's discriminator and its own Adam state (no EMA), checkpointed and restored with the rest.
"""

import os
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sr_jax import inference, models, optim, sharding, utils, workdirs
from sr_jax.models import discriminator as discriminator_lib

TrainState = dict[str, Any]


def _model(config: ml_collections.ConfigDict, load_weights: bool) -> nnx.Module:
  model = models.create_model(config.model, config.data.scale, nnx.Rngs(config.seed))
  # The U-Net has no model.weights (its pretrained weights are the encoder's).
  if load_weights and "weights" in config.model and _is_workdir(config.model.weights):
    _load_from_workdir(model, config)
  elif load_weights:
    models.load_pretrained(model, config.model)
  return model


def _is_workdir(weights: str) -> bool:
  return bool(weights) and os.path.isfile(workdirs.config_path(weights))


def _load_from_workdir(model: nnx.Module, config: ml_collections.ConfigDict) -> None:
  """model.weights = a training workdir (e.g. the PSNR stage of the two-stage GAN recipe): its
  latest weights (EMA if kept). Its network must be this config's (model.* except weights)."""
  workdir = config.model.weights
  trained, step, run_config = inference.restore_model(workdir)
  ours = {k: v for k, v in config.model.to_dict().items() if k != "weights"}
  theirs = {k: v for k, v in run_config.model.to_dict().items() if k != "weights"}
  if ours != theirs or run_config.data.scale != config.data.scale:
    differences = [
      f"model.{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here"
      for k in sorted(set(ours) | set(theirs))
      if ours.get(k) != theirs.get(k)
    ]
    if run_config.data.scale != config.data.scale:
      differences.append(f"data.scale: {run_config.data.scale} there, {config.data.scale} here")
    raise ValueError(
      f"config model.weights={workdir!r} is a run of another network: {'; '.join(differences)}"
    )
  nnx.update(model, jax.device_get(nnx.state(trained)))
  logging.info("model %s: weights of %s at step %d loaded", config.model.name, workdir, step)


def discriminator_optimizer(
  config: ml_collections.ConfigDict,
) -> tuple[optax.Schedule, optax.GradientTransformation]:
  """The GAN discriminator's schedule and Adam: `optim.*` (schedule shape, betas, clipping) at
  `gan.learning_rate`."""
  optim_config = ml_collections.ConfigDict(config.optim.to_dict())
  optim_config.learning_rate = config.gan.learning_rate
  optim_config.encoder_lr_mult = 1.0
  schedule = optim.create_schedule(optim_config, config.train.steps)
  return schedule, optim.create_optimizer(optim_config, schedule)


def _discriminator_state(config, init) -> TrainState:
  """The GAN discriminator's part of the state: params, power-iteration vectors, Adam state.
  A fresh one is seeded by `config.seed` and loads `gan.discriminator.weights` if given."""
  d_config = config.gan.discriminator
  if init is _abstract:
    net = discriminator_lib.abstract_discriminator(d_config)
  else:
    rngs = nnx.Rngs(jax.random.fold_in(jax.random.key(config.seed), 1))
    net = discriminator_lib.create_discriminator(d_config, rngs)
    if d_config.weights:
      discriminator_lib.load_discriminator_weights(net, d_config.weights)
  _, params, model_state = nnx.split(net, nnx.Param, ...)
  _, tx = discriminator_optimizer(config)
  opt_state = jax.eval_shape(tx.init, params) if init is _abstract else tx.init(params)
  return {"params": params, "model_state": model_state, "opt_state": opt_state}


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
  if config.gan.weight:
    state["discriminator"] = _discriminator_state(config, init)
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
