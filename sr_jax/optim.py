"""Learning-rate schedules and the optimiser, built from `config.optim`.

Transfer learning: parameters under a top-level `encoder` (a pretrained backbone) can get their own
learning rate (`optim.encoder_lr_mult`) and stay frozen for the first `freeze_encoder_steps`.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

ENCODER = "encoder"


def create_schedule(optim_config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup, then cosine decay to `end_lr_factor * lr`, or step decay, or constant."""
  lr = optim_config.learning_rate
  warmup = min(optim_config.warmup_steps, max(total_steps - 1, 0))
  kind = optim_config.schedule
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup else lr,
      peak_value=lr,
      warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=lr * optim_config.end_lr_factor,
    )
  if kind == "step":
    boundaries = {
      int(b * total_steps): optim_config.step_decay_factor for b in optim_config.step_decay_at
    }
    decay = optax.piecewise_constant_schedule(lr, boundaries)
    if not warmup:
      return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])
  if kind == "constant":
    return optax.constant_schedule(lr)
  raise ValueError(f"config optim.schedule={kind!r} is unknown; use cosine, step or constant")


def encoder_schedule(schedule: optax.Schedule, lr_mult: float, freeze_steps: int) -> optax.Schedule:
  """The encoder's schedule: zero while frozen, then `lr_mult` times the main one."""
  return lambda step: jnp.where(step < freeze_steps, 0.0, lr_mult * schedule(step))


def param_group(path) -> str:
  """'encoder' for parameters of the pretrained encoder, 'rest' for the others."""
  first = path[0]
  name = getattr(first, "key", getattr(first, "name", None))
  return ENCODER if name == ENCODER else "rest"


def param_groups(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: param_group(path), params)


def create_optimizer(
  optim_config: ml_collections.ConfigDict, schedule: optax.Schedule, freeze_encoder_steps: int = 0
) -> optax.GradientTransformation:
  """Gradient clipping by global norm, then Adam(W); encoder params on their own schedule."""

  def adamw(learning_rate):
    return optax.adamw(
      learning_rate, b1=optim_config.b1, b2=optim_config.b2, weight_decay=optim_config.weight_decay
    )

  lr_mult = optim_config.encoder_lr_mult
  if lr_mult == 1.0 and not freeze_encoder_steps:
    update = adamw(schedule)
  else:
    update = optax.multi_transform(
      {
        ENCODER: adamw(encoder_schedule(schedule, lr_mult, freeze_encoder_steps)),
        "rest": adamw(schedule),
      },
      param_groups,
    )
  if optim_config.grad_clip_norm:
    return optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), update)
  return update


def from_config(
  config: ml_collections.ConfigDict,
) -> tuple[optax.Schedule, optax.GradientTransformation]:
  """The schedule and optimiser of a config (optim.*, train.steps, train.freeze_encoder_steps)."""
  schedule = create_schedule(config.optim, config.train.steps)
  return schedule, create_optimizer(config.optim, schedule, config.train.freeze_encoder_steps)
