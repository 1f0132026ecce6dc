"""Learning-rate schedules and the optimiser, built from `config.optim`."""

import ml_collections
import optax


def create_schedule(optim_config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup, then cosine decay to `end_lr_factor * lr`, or step decay, or constant."""
  lr = optim_config.learning_rate
  warmup = min(optim_config.warmup_steps, max(total_steps - 1, 0))
  kind = optim_config.schedule
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else lr, peak_value=lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=lr * optim_config.end_lr_factor)
  if kind == "step":
    boundaries = {int(b * total_steps): optim_config.step_decay_factor for b in optim_config.step_decay_at}
    decay = optax.piecewise_constant_schedule(lr, boundaries)
    if not warmup:
      return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])
  if kind == "constant":
    return optax.constant_schedule(lr)
  raise ValueError(f"config optim.schedule={kind!r} is unknown; use cosine, step or constant")


def create_optimizer(optim_config: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  """Gradient clipping by global norm, then Adam(W) with the schedule."""
  parts = []
  if optim_config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(optim_config.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=optim_config.b1, b2=optim_config.b2,
                           weight_decay=optim_config.weight_decay))
  return optax.chain(*parts)
