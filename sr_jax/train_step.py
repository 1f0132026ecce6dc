"""The train step: one jitted, data-parallel optimisation step (loss, gradients, ZeRO-1 update,
EMA) built from a config. Pure functions of (state, batch); the loop lives in `train.py`."""

from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sr_jax import losses, optim, sharding
from sr_jax.train_state import TrainState

StepFn = Callable[[TrainState, dict], tuple[TrainState, dict]]


def ema_decay_at(step: jnp.ndarray, decay: float) -> jnp.ndarray:
  """EMA decay ramped up over the first steps, so short runs are not dominated by the init."""
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def make_train_step(
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  ema_decay: float,
  loss: losses.Loss,
  mesh: jax.sharding.Mesh | None = None,
) -> StepFn:
  """One optimisation step on a global batch; the gradient of the batch-mean loss is global.

  With `mesh` (the state laid out by `sharding.state_shardings`), the update is ZeRO-1 style: the
  gradients are consumed split over the mesh (`sharding.split_shardings`), so each device runs
  grad clipping, AdamW and the EMA on its slice only, and the new params are gathered back to
  replicated for the next forward. Same numbers as without `mesh`, up to float reassociation.
  """

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    def loss_fn(params, model_state):
      # Fresh variables (copy): BatchNorm in training mode updates them inside this trace.
      model = nnx.merge(graphdef, params, model_state, copy=True)
      total, parts = loss(model(batch["lr"]), batch["hr"], state.get("loss_state"))
      return total, (parts, nnx.state(model, nnx.Not(nnx.Param)))

    (total, (parts, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"], state["model_state"]
    )
    params = state["params"]
    if mesh is not None:  # Each device: its slice of the grads (after the batch mean) and params.
      split = sharding.split_shardings(params, mesh)
      grads = jax.lax.with_sharding_constraint(grads, split)
      params = jax.lax.with_sharding_constraint(params, split)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    new_state = dict(state, step=state["step"] + 1, model_state=model_state, opt_state=opt_state)
    if "ema_params" in state:
      decay = ema_decay_at(state["step"].astype(jnp.float32), ema_decay)
      new_state["ema_params"] = jax.tree.map(
        lambda e, p: decay * e + (1.0 - decay) * p, state["ema_params"], params
      )
    if mesh is not None:  # All-gathered: the next forward needs the whole params on every device.
      params = jax.lax.with_sharding_constraint(
        params, jax.tree.map(lambda _: sharding.replicated(mesh), params)
      )
    new_state["params"] = params
    grad_norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
    step_metrics = {
      "loss": total,
      **{f"loss_{k}": v for k, v in parts.items()},
      "grad_norm": grad_norm,
      "learning_rate": schedule(state["step"]),
    }
    return new_state, step_metrics

  return train_step


def make_step_fn(
  config: ml_collections.ConfigDict, graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh | None = None
) -> StepFn:
  """The (unjitted) train step of `config` for the network `graphdef`: its optimizer, schedule,
  EMA and loss (the loss's frozen backbone is built abstractly: its weights are in the state)."""
  schedule, tx = optim.from_config(config)
  loss, _ = losses.create_loss(config.loss, load_weights=False)
  return make_train_step(graphdef, tx, schedule, config.train.ema_decay, loss, mesh=mesh)
