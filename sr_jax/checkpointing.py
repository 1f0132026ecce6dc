"""Orbax checkpoints of the train state and the Grain iterator: async, last N + best by PSNR-Y.

Damaged checkpoints (a truncated or missing data file, a missing `_METADATA`, a corrupt Grain
iterator file) are reported in one line each and skipped for the newest good one; nothing is ever
deleted: a resumed run moves the damaged ones it passed over into WORKDIR/damaged_checkpoints/.
Save errors (a full disk) come back as one `CheckpointSaveError` line; orbax writes each step into
a temporary folder and renames it only when complete, so the last good checkpoint stays intact.
"""

import json
import logging as std_logging
import os
import re
import shutil
import sys
import time
from typing import Any, Callable
import warnings

from absl import logging
from etils import epath
import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "psnr_y"
DAMAGED_DIR = "damaged_checkpoints"


class CheckpointSaveError(RuntimeError):
  """Writing a checkpoint failed (e.g. a full disk); the previous checkpoints are intact."""


class DamagedCheckpointError(ValueError):
  """No usable checkpoint (the one asked for, or every one of the run, is damaged)."""


def create_manager(
  workdir: str, keep: int, async_save: bool = True, read_only: bool = False
) -> ocp.CheckpointManager:
  """Keeps the latest `keep` checkpoints and the best one by validation PSNR-Y.

  A plain `best_fn` + `max_to_keep` could delete the latest checkpoint (resume would go back in
  time), hence the explicit preservation policy. read_only: for inference and evaluation, creates
  and deletes nothing (a mistyped or read-only workdir stays untouched).
  """
  _quiet_orbax_noise()
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
    create=not read_only,
    read_only=read_only,
    save_interval_steps=0 if read_only else 1,
    # A save cut short (kill, full disk) leaves a *.orbax-checkpoint-tmp folder, never a
    # checkpoint: a writing run removes those leftovers when it starts.
    cleanup_tmp_directories=not read_only,
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
  """Saves asynchronously; the Grain iterator state is saved per process beside the state.

  Raises:
    CheckpointSaveError: this save, or the previous asynchronous one, failed.
  """
  args = {"state": ocp.args.StandardSave(state)}
  if data_iterator is not None:
    args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  with _save_errors(manager):
    manager.save(step, args=ocp.args.Composite(**args), metrics=metrics)


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for an asynchronous save. Raises CheckpointSaveError if it failed."""
  with _save_errors(manager):
    manager.wait_until_finished()


class _save_errors:
  """Turns orbax's save failures (raised from its background threads) into one line."""

  def __init__(self, manager: ocp.CheckpointManager):
    self.manager = manager

  def __enter__(self):
    return self

  def __exit__(self, kind, error, traceback):
    if error is None or not isinstance(error, Exception) or isinstance(error, CheckpointSaveError):
      return False
    self.manager.reload()  # the failed step is not a checkpoint
    last = self.manager.latest_step()
    kept = f"the last complete checkpoint is step {last} (intact)" if last else "none is complete"
    raise CheckpointSaveError(
      f"saving a checkpoint in {self.manager.directory} failed: {one_line(error)}; {kept}. "
      "Free space (or fix the cause) and rerun the same command to continue from it."
    ) from error


def one_line(error: BaseException, limit: int = 300) -> str:
  """The gist of a (tensorstore/orbax) error in one line: without the long JSON spec, and where
  too long, its start and its end (where the OS reason, e.g. "No space left on device", is)."""
  text = re.sub(r" \[(tensorstore_spec|os_error_code)\S*.*$", "", str(error), flags=re.S)
  text = " ".join(text.split()) or type(error).__name__
  if len(text) <= limit:
    return text
  return f"{text[: limit // 2]} ... {text[-limit // 2 :]}"


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


def restore_latest(
  manager: ocp.CheckpointManager, abstract_state: Any, data_iterator: Any = None
) -> tuple[int, Any]:
  """Resume: (step, state) of the newest good checkpoint, the data iterator restored in place.

  Damaged newer checkpoints are reported and moved into WORKDIR/damaged_checkpoints/ (process 0),
  so the resumed run can save those steps again. Raises ValueError when the checkpoints hold
  another train state (a changed network or optimizer), listing the differing entries.
  """
  step, state = _restore_first_good(
    manager,
    "latest",
    abstract_state,
    lambda s: restore(manager, s, abstract_state, data_iterator),
  )
  newer = [s for s in manager.all_steps() if s > step]
  if newer:
    if jax.process_index() == 0:
      _set_aside(manager, newer)
    _sync_processes("sr_jax:set_aside_damaged")
    manager.reload()
  return step, state


def restore_weights(workdir: str, which: str | int, abstract_subtree: dict) -> tuple[int, dict]:
  """Inference: (step, `abstract_subtree`'s entries) of checkpoint latest|best|STEP of
  `workdir`, read-only. A damaged latest (or best) is reported and the newest good one used; a
  damaged explicit STEP is an error."""
  manager = create_manager(workdir, keep=1, read_only=True)
  try:
    return _restore_first_good(
      manager,
      which,
      abstract_subtree,
      lambda s: restore_subtree(manager, s, abstract_subtree),
      partial=True,
    )
  finally:
    manager.close()


def _restore_first_good(
  manager: ocp.CheckpointManager,
  which: str | int,
  abstract_state: Any,
  restore_step: Callable[[int], Any],
  partial: bool = False,
) -> tuple[int, Any]:
  first = resolve_step(manager, which)
  if which in ("latest", "best"):
    candidates = [first] + sorted((s for s in manager.all_steps() if s != first), reverse=True)
  else:
    candidates = [first]
  damaged = []
  for step in candidates:
    try:
      differences = _structure_differences(manager, step, abstract_state, partial)
      if differences:
        raise ValueError(
          f"the checkpoints in {manager.directory} hold another train state than this config "
          f"builds ({'; '.join(differences[:8])}): a changed network or optimizer setting "
          "(e.g. train.ema_decay 0 vs > 0, optim.grad_clip_norm 0 vs > 0); use a new --workdir "
          "or the run's own config"
        )
      _check_data_files(manager, step)
      if jax.process_count() == 1:
        restored = _try_restore(restore_step, step)
      else:  # every process checked the same files above, so all agree on `step`; a failure
        restored = restore_step(step)  # here would leave the others at orbax's barrier
    except _Damaged as error:
      damaged.append(step)
      remaining = [s for s in candidates if s not in damaged]
      logging.warning(
        "checkpoint %d in %s is damaged (%s); %s",
        step,
        manager.directory,
        error.reason,
        f"trying step {remaining[0]}" if remaining else "no other checkpoint",
      )
      continue
    if damaged:
      logging.warning(
        "using checkpoint %d, the newest good one (damaged: %s)", step, ", ".join(map(str, damaged))
      )
    return step, restored
  raise DamagedCheckpointError(
    f"no usable checkpoint in {manager.directory}: "
    f"{'step ' + str(damaged[0]) if len(damaged) == 1 else 'steps ' + str(damaged)} damaged "
    "(see the warnings above); move the damaged step folders away to start over"
  )


class _Damaged(Exception):
  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


def _try_restore(restore_step: Callable[[int], Any], step: int) -> Any:
  try:
    return restore_step(step)
  except Exception as error:  # a data file cut short is only seen when the arrays are read
    raise _Damaged(one_line(error)) from error


def _structure_differences(
  manager: ocp.CheckpointManager, step: int, abstract_state: Any, partial: bool
) -> list[str]:
  """The train-state entries (path: shape) that differ between the checkpoint and the template.

  Reading the array metadata also checks that `_METADATA`, the manifest and the data files'
  headers are readable: a damaged step raises _Damaged.
  """
  handler = ocp.StandardCheckpointHandler()
  try:
    metadata = handler.metadata(epath.Path(manager.directory) / str(step) / "state")
  except Exception as error:
    raise _Damaged(one_line(error)) from error
  finally:
    handler.close()
  if metadata is None or metadata.tree is None:
    raise _Damaged("no train-state metadata")
  saved = _shapes(metadata.tree)
  wanted = _shapes(abstract_state)
  if partial:  # only the top-level entries asked for
    asked = {k.split("/")[0] for k in wanted}
    saved = {k: v for k, v in saved.items() if k.split("/")[0] in asked}
  differences = [
    f"{k}: checkpoint {saved[k]}, config {wanted[k]}"
    for k in sorted(saved.keys() & wanted.keys())
    if saved[k] != wanted[k]
  ]
  differences += [f"{k}: only in the config" for k in sorted(wanted.keys() - saved.keys())]
  if not partial:
    differences += [f"{k}: only in the checkpoint" for k in sorted(saved.keys() - wanted.keys())]
  return differences


def _shapes(tree: Any) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {
    jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape)
    for path, leaf in leaves
  }


def _check_data_files(manager: ocp.CheckpointManager, step: int) -> None:
  """Every process's Grain iterator file of `step` parses (all processes see the same files)."""
  folder = epath.Path(manager.directory) / str(step) / "data"
  if not folder.exists():
    return  # saved without an iterator
  for path in sorted(folder.glob("*.json")):
    try:
      json.loads(path.read_text())
    except (ValueError, OSError) as error:
      raise _Damaged(f"{path.name}: {one_line(error)}") from error


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Moves damaged step folders out of the manager's sight, so their steps can be saved again."""
  directory = os.fspath(manager.directory)
  target_root = os.path.join(os.path.dirname(directory), DAMAGED_DIR)
  os.makedirs(target_root, exist_ok=True)
  for step in steps:
    target = os.path.join(target_root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(os.path.join(directory, str(step)), target)
    logging.warning("moved damaged checkpoint %d to %s (not deleted)", step, target)


def _sync_processes(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


# Orbax warnings that say nothing to act on: a save between evaluations has no PSNR-Y (on
# purpose), and a read-only manager is what inference asks for.
_ORBAX_NOISE = (
  "Requested `tracked_metric`; did not provide metrics.",
  "Given directory is read only",
)


def _quiet_orbax_noise() -> None:
  """Drops _ORBAX_NOISE log lines, asyncio's reports of orbax's failed write tasks, and the
  "RuntimeError: Event loop is closed" unraisable tracebacks (by the hundred) of tensorstore
  callbacks that arrive after orbax closed its event loop in a failed restore or save: they say
  nothing the real error does not. Other unraisable errors still print. Once per process."""
  previous = sys.unraisablehook
  if getattr(previous, "_sr_jax_filter", False):
    return

  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      return
    previous(unraisable)

  hook._sr_jax_filter = True
  sys.unraisablehook = hook
  std_logging.getLogger("absl").addFilter(
    lambda record: not str(record.msg).startswith(_ORBAX_NOISE)
  )
  # A failed save also leaves its asyncio write tasks and futures "never retrieved": the same
  # error again (a _GatheringFuture's message names no orbax file: its traceback does).
  std_logging.getLogger("asyncio").addFilter(lambda record: not _from_orbax(record))
  # ... and, at exit, its write coroutines that the failure left unawaited (sr_jax has none).
  warnings.filterwarnings("ignore", r"coroutine '.*' was never awaited", RuntimeWarning)


def _from_orbax(record: std_logging.LogRecord) -> bool:
  """An asyncio report about orbax's code, or about a write into an orbax temporary folder (the
  futures tensorstore fails carry no Python traceback)."""
  if any(mark in record.getMessage() for mark in ("/orbax/", ".orbax-checkpoint-tmp")):
    return True
  error = record.exc_info[1] if record.exc_info else None
  if error is not None and ".orbax-checkpoint-tmp" in str(error):
    return True
  frame = error.__traceback__ if error is not None else None
  while frame is not None:
    if "/orbax/" in frame.tb_frame.f_code.co_filename:
      return True
    frame = frame.tb_next
  return False
