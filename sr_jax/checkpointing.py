"""Orbax checkpoints of the train state and the Grain iterator: async, last N + best by PSNR-Y."""

import os
from typing import Any

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "psnr_y"


def create_manager(workdir: str, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  """Keeps the latest `keep` checkpoints and the best one by validation PSNR-Y.

  A plain `best_fn` + `max_to_keep` could delete the latest checkpoint (resume would go back in
  time), hence the explicit preservation policy.
  """
  preservation = policies.AnyPreservationPolicy(
    [
      policies.LatestN(keep),
      policies.BestN(
        get_metric_fn=lambda m: m[BEST_METRIC],
        reverse=False,
        n=1,
        keep_checkpoints_without_metrics=False,
      ),
    ]
  )
  options = ocp.CheckpointManagerOptions(
    preservation_policy=preservation,
    best_fn=lambda m: m[BEST_METRIC],
    best_mode="max",
    enable_async_checkpointing=async_save,
    create=True,
  )
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), "checkpoints"),
    item_names=("state", "data"),
    options=options,
  )


def save(
  manager: ocp.CheckpointManager,
  step: int,
  state: Any,
  data_iterator: Any,
  metrics: dict[str, float] | None = None,
) -> None:
  """Saves asynchronously; the Grain iterator state is saved per process beside the state."""
  args = {"state": ocp.args.StandardSave(state)}
  if data_iterator is not None:
    args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**args), metrics=metrics)


def restore(
  manager: ocp.CheckpointManager, step: int, abstract_state: Any, data_iterator: Any = None
) -> Any:
  """Restores the state (shardings from `abstract_state`) and, if given, the iterator in place."""
  args = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  return manager.restore(step, args=ocp.args.Composite(**args)).state


def restore_subtree(manager: ocp.CheckpointManager, step: int, abstract_subtree: dict) -> dict:
  """Restores only the top-level state entries of `abstract_subtree` (e.g. the weights for
  inference), with its shapes and shardings; nothing else of the checkpoint is read."""
  restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_subtree)
  args = ocp.args.PyTreeRestore(
    item=abstract_subtree, restore_args=restore_args, partial_restore=True
  )
  return manager.restore(step, args=ocp.args.Composite(state=args)).state


def resolve_step(manager: ocp.CheckpointManager, which: str | int) -> int:
  """'latest', 'best' or a step number -> an existing step, or a clear error."""
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}")
  if which == "latest":
    return manager.latest_step()
  if which == "best":
    best = manager.best_step()
    return best if best is not None else manager.latest_step()
  step = int(which)
  if step not in steps:
    raise FileNotFoundError(
      f"no checkpoint for step {step} in {manager.directory}; have {sorted(steps)}"
    )
  return step
