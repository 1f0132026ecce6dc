"""The train step: one jitted, data-parallel optimisation step (loss, gradients, ZeRO-1 update,
EMA) built from a config. Pure functions of (state, batch); the loop lives in `train.py`."""

from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sr_jax import losses, optim, sharding
from sr_jax.models import precision
from sr_jax.train_state import TrainState

StepFn = Callable[[TrainState, dict], tuple[TrainState, dict]]


def ema_decay_at(step: jnp.ndarray, decay: float) -> jnp.ndarray:
  """EMA decay ramped up over the first steps, so short runs are not dominated by the init."""
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def split_micro_batches(batch: dict, steps: int, mesh: jax.sharding.Mesh | None = None) -> dict:
  """[B, ...] -> [steps, B / steps, ...], micro-batch j = examples j, j + steps, j + 2 * steps...

  Strided, not contiguous: each device's block of the data-sharded batch holds B / (steps *
  devices) examples of every micro-batch, so the split moves no data between devices.
  """

  def split(x):
    if x.shape[0] % steps:
      raise ValueError(
        f"a batch of {x.shape[0]} examples does not split into train.grad_accum_steps={steps} "
        "equal micro-batches"
      )
    x = x.reshape(x.shape[0] // steps, steps, *x.shape[1:]).swapaxes(0, 1)
    if mesh is not None:
      spec = jax.P(None, sharding.DATA_AXIS)
      x = jax.lax.with_sharding_constraint(x, jax.NamedSharding(mesh, spec))
    return x

  return jax.tree.map(split, batch)


def apply_gradients(
  state: TrainState,
  grads,
  model_state,
  tx: optax.GradientTransformation,
  ema_decay: float,
  mesh: jax.sharding.Mesh | None = None,
) -> TrainState:
  """The state after one update of `state["params"]` with the global `grads`: optimizer, EMA,
  new model state, step + 1. With `mesh`, ZeRO-1: each device updates its slice (grads, params,
  optimizer state and EMA split by `sharding.split_shardings`); the new params are gathered back
  to replicated for the next forward."""
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
  return new_state


def make_train_step(
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  ema_decay: float,
  loss: losses.Loss,
  mesh: jax.sharding.Mesh | None = None,
  *,
  compute_dtype=jnp.float32,
  grad_accum_steps: int = 1,
) -> StepFn:
  """One optimisation step on a global batch; the gradient of the batch-mean loss is global.

  With `mesh` (the state laid out by `sharding.state_shardings`), the update is ZeRO-1 style: the
  gradients are consumed split over the mesh (`sharding.split_shardings`), so each device runs
  grad clipping, AdamW and the EMA on its slice only, and the new params are gathered back to
  replicated for the next forward. Same numbers as without `mesh`, up to float reassociation.

  compute_dtype: what the network computes in (`sr_jax.models.precision`): float32, or bfloat16
    for mixed precision (weights, gradients, optimizer state and EMA stay float32; the network's
    output is cast to float32 before the loss).
  grad_accum_steps: k > 1 runs the batch as k micro-batches of B / k examples one after the other
    (`lax.scan`: the activations of one micro-batch at a time) and applies one update with the
    mean of their gradients, which is the gradient of the whole batch (the loss is a batch mean).
    BatchNorm layers in training mode normalise each micro-batch with its own statistics and
    update their running statistics once per micro-batch, as PyTorch's gradient accumulation
    does; every other network matches the k = 1 update to float tolerance.
  """
  if grad_accum_steps < 1:
    raise ValueError(f"train.grad_accum_steps={grad_accum_steps} must be >= 1")

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    def loss_fn(params, model_state, batch):
      # Fresh variables (copy): BatchNorm in training mode updates them inside this trace.
      model = nnx.merge(graphdef, params, model_state, copy=True)
      precision.set_compute_dtype(model, compute_dtype)
      sr = model(batch["lr"]).astype(jnp.float32)
      total, parts = loss(sr, batch["hr"], state.get("loss_state"))
      return total, (parts, nnx.state(model, nnx.Not(nnx.Param)))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    params = state["params"]
    split = sharding.split_shardings(params, mesh) if mesh is not None else None
    if grad_accum_steps == 1:
      (total, (parts, model_state)), grads = grad_fn(params, state["model_state"], batch)
    else:

      def micro_step(carry, micro_batch):
        grads_sum, model_state = carry
        (total, (parts, model_state)), grads = grad_fn(params, model_state, micro_batch)
        grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
        if split is not None:  # Summed as ZeRO-1 consumes them: each device its slice.
          grads_sum = jax.lax.with_sharding_constraint(grads_sum, split)
        return (grads_sum, model_state), (total, parts)

      zeros = jax.tree.map(jnp.zeros_like, params)
      if split is not None:
        zeros = jax.lax.with_sharding_constraint(zeros, split)
      (grads, model_state), (totals, parts) = jax.lax.scan(
        micro_step,
        (zeros, state["model_state"]),
        split_micro_batches(batch, grad_accum_steps, mesh),
      )
      grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
      total, parts = jnp.mean(totals), jax.tree.map(jnp.mean, parts)
    new_state = apply_gradients(state, grads, model_state, tx, ema_decay, mesh)
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
  EMA and loss (the loss's frozen backbone is built abstractly: its weights are in the state).
  With gan.weight > 0, the GAN step of `sr_jax.gan` (network, then discriminator)."""
  if config.gan.weight:
    from sr_jax import gan  # Imported here: the GAN step builds on this module.

    return gan.make_step_fn(config, graphdef, mesh)
  schedule, tx = optim.from_config(config)
  loss, _ = losses.create_loss(config.loss, load_weights=False)
  check_batch_size(config, mesh.size if mesh is not None else 1)
  return make_train_step(
    graphdef,
    tx,
    schedule,
    config.train.ema_decay,
    loss,
    mesh=mesh,
    compute_dtype=precision.compute_dtype(config.train.compute_dtype),
    grad_accum_steps=config.train.grad_accum_steps,
  )


def check_batch_size(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """train.batch_size must split into grad_accum_steps micro-batches, each even over devices."""
  batch_size, steps = config.train.batch_size, config.train.grad_accum_steps
  if steps < 1:
    raise ValueError(f"train.grad_accum_steps={steps} must be >= 1")
  if batch_size % (steps * num_devices):
    raise ValueError(
      f"train.batch_size={batch_size} must be divisible by train.grad_accum_steps={steps} x "
      f"{num_devices} devices = {steps * num_devices} (each micro-batch splits evenly over the "
      "devices)"
    )
