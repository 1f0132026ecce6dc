"""Training settings checked before anything is compiled or written: one error naming the key."""

import ml_collections


def check_train_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for the first `train.*` value a run cannot use.

  `*_every_steps = 0` means "only at the end" (checkpoints also at evaluations and on SIGTERM).
  """
  train = config.train

  def require(ok: bool, key: str, what: str) -> None:
    if not ok:
      raise ValueError(f"train.{key}={train[key]!r}: {what}")

  def is_int(key: str) -> bool:
    return isinstance(train[key], int) and not isinstance(train[key], bool)

  require(is_int("steps") and train.steps >= 1, "steps", "must be an integer >= 1")
  require(is_int("batch_size") and train.batch_size >= 1, "batch_size", "must be an integer >= 1")
  for key in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    require(is_int(key) and train[key] >= 0, key, "must be an integer >= 0 (0 = only at the end)")
  require(is_int("keep_checkpoints") and train.keep_checkpoints >= 1, "keep_checkpoints", ">= 1")
  require(0 <= train.ema_decay < 1, "ema_decay", "must be in [0, 1) (0 = no EMA)")
  profile = tuple(train.profile_steps)
  require(
    profile == ()
    or (
      len(profile) == 2
      and all(isinstance(s, int) for s in profile)
      and 1 <= profile[0] <= profile[1]
    ),
    "profile_steps",
    "must be () (off) or (first, last) with 1 <= first <= last",
  )
