"""Training: config -> train state on a ("data",) mesh -> jitted data-parallel step -> loop with
logging, evaluation and orbax checkpoints; and `--mode=eval` of a checkpoint.

The train state is a plain dict pytree (step, params, model_state, opt_state[, ema_params,
loss_state]) on a ("data",) mesh of every device of every host; batches are split over it. Params
are replicated; the optimiser state and EMA weights are split over the mesh (ZeRO-1,
`sharding.state_shardings`). Pretrained weights are applied once, when a run starts without a
checkpoint; a resumed run builds its state abstractly and restores it.
"""

import contextlib
import functools
import os
import signal
import threading
import time
from typing import Callable, NamedTuple

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from sr_jax import (
  checkpointing,
  config_checks,
  data,
  evaluate,
  inference,
  losses,
  optim,
  sharding,
  train_logging,
  train_step,
  workdirs,
)
from sr_jax import (
  train_state as train_state_lib,
)
from sr_jax.train_state import TrainState


class Trainer(NamedTuple):
  """What a run trains: the network's graph, its train state on the mesh, the jitted step."""

  graphdef: nnx.GraphDef
  state: TrainState  # concrete, or abstract (ShapeDtypeStructs) to restore a checkpoint into
  step: train_step.StepFn  # jitted; donates the state it is given
  predictor: Callable[[TrainState], evaluate.PredictFn]  # state -> full-image SR


def create_trainer(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *, abstract: bool = False
) -> Trainer:
  """The train state of `config` laid out on `mesh` and its jitted train step.

  abstract=False: a fresh state, with the config's pretrained weights loaded (model and feature
  loss). abstract=True: shapes and shardings only, no file read: the template to restore into.
  The one place that assembles the step: training, benchmarks and notebooks all call it.
  """
  _, tx = optim.from_config(config)
  _, loss_state = losses.create_loss(config.loss, load_weights=not abstract)
  if abstract:
    graphdef, state = train_state_lib.abstract_train_state(config, tx, mesh, loss_state)
  else:
    graphdef, state = train_state_lib.create_train_state(config, tx, loss_state)
    state = sharding.place_state(state, mesh)  # ZeRO-1: opt_state, ema_params split
  jitted = jax.jit(
    train_step.make_step_fn(config, graphdef, mesh),
    donate_argnums=(0,),
    out_shardings=(sharding.state_shardings(state, mesh), sharding.replicated(mesh)),
  )
  return Trainer(graphdef, state, jitted, make_predictor(graphdef))


def make_predictor(graphdef: nnx.GraphDef) -> Callable[[TrainState], evaluate.PredictFn]:
  """state -> full-image SR with the state's EMA weights (params without EMA), on one device.

  One jitted forward for the whole run (it compiles once per input shape, not once per
  evaluation), on one local device: replicated weights would repeat the work on every device.
  """
  forward = jax.jit(functools.partial(inference.forward, graphdef))

  def bind(state: TrainState) -> evaluate.PredictFn:
    weights = state.get("ema_params", state["params"])
    on_device = sharding.on_one_device((weights, state["model_state"]))
    return lambda lr: np.asarray(forward(on_device, jnp.asarray(lr)[None]))[0]

  return bind


def _check_finite(history: list[dict], first_step: int) -> None:
  for offset, row in enumerate(history):
    if not np.isfinite(row["loss"]):
      raise FloatingPointError(
        f"non-finite loss {row['loss']} at step {first_step + offset}; training stopped, the "
        "last checkpoint (saved only from finite steps) is intact. Lower optim.learning_rate or "
        "optim.grad_clip_norm, or check the data."
      )


def _load_eval_sets(config: ml_collections.ConfigDict) -> list[evaluate.EvalSet]:
  return evaluate.load_eval_sets(
    config.eval.dirs,
    config.data.scale,
    config.eval.datasets,
    config.eval.data_root,
    evaluate.create_scorer(config.eval),
  )


def _evaluate(config, trainer: Trainer, state: TrainState, eval_sets) -> tuple[dict, dict]:
  """Results on every eval set, and the SR images (for the figures)."""
  outputs = {}
  results = evaluate.evaluate(
    trainer.predictor(state), eval_sets, config.data.scale, config.eval.bucket, outputs
  )
  return results, outputs


class Preempted(Exception):
  """The run stopped on SIGTERM (or the multi-host preemption notice) after saving a checkpoint
  at `step`; the same command continues from it."""

  def __init__(self, step: int, workdir: str):
    super().__init__(
      f"preempted: stopped at step {step} with a checkpoint in {workdir}; rerun the same command "
      "to continue"
    )
    self.step = step


class _PreemptionNotice:
  """Whether to stop after the current step.

  One process: a SIGTERM handler that only sets a flag (a second SIGTERM, e.g. during the save,
  changes nothing). Several processes: `jax.distributed.initialize` installs its own SIGTERM
  notifier (a Python handler would replace it), which tells every host; each asks at every step
  whether all hosts reached the agreed step (orbax's `reached_preemption`).
  """

  def __init__(self, manager):
    self.manager = manager
    self.multihost = jax.process_count() > 1
    self.signalled = False
    self._previous = None
    if not self.multihost and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    if self.signalled:
      logging.warning("SIGTERM again: still finishing the preemption checkpoint")
    else:
      logging.warning("SIGTERM: stopping after the current step, with a checkpoint")
    self.signalled = True

  def reached(self, step: int) -> bool:
    return self.manager.reached_preemption(step) if self.multihost else self.signalled

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _Profiler:
  """A jax.profiler trace of steps first..last of `train.profile_steps` in WORKDIR/profile."""

  def __init__(self, profile_steps: tuple, workdir: str):
    self.steps = tuple(profile_steps)
    self.folder = os.path.join(workdir, "profile")
    if jax.process_count() > 1:  # one folder per process: hosts may share a name
      self.folder = os.path.join(self.folder, f"process_{jax.process_index()}")
    self.active = False

  def before_step(self, step: int) -> None:
    if self.steps and step == self.steps[0]:
      jax.profiler.start_trace(self.folder)
      self.active = True

  def after_step(self, step: int, outputs) -> None:
    if self.active and step == self.steps[1]:
      self.stop(outputs)
      logging.info("profile of steps %d-%d written to %s", *self.steps, self.folder)

  def stop(self, outputs=None) -> None:
    if self.active:
      jax.block_until_ready(outputs)  # the trace includes the device work of the last step
      jax.profiler.stop_trace()
      self.active = False


@contextlib.contextmanager
def _workdir_lock(workdir: str):
  """Process 0 holds WORKDIR/run.lock (the processes of a multi-host run share the workdir on a
  shared filesystem, which orbax needs anyway); every process learns whether it got it."""
  lock, error = None, None
  if jax.process_index() == 0:
    lock = workdirs.WorkdirLock(workdir)
    try:
      lock.acquire()
    except (workdirs.WorkdirLockedError, OSError) as e:
      lock, error = None, e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if failed and error is None:
      error = workdirs.WorkdirLockedError(f"process 0 could not lock {workdir!r}")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def _every(step: int, interval: int) -> bool:
  return interval > 0 and step % interval == 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains `config.train.steps` steps, resuming from the latest good checkpoint in `workdir`.

  Raises:
    Preempted: on SIGTERM, after saving a checkpoint at the current step.
    ValueError: a setting that cannot work, or a workdir holding another network's run.
    workdirs.WorkdirLockedError: another run is writing to `workdir`.
    checkpointing.CheckpointSaveError: a checkpoint could not be written (e.g. a full disk).
  """
  config_checks.check_train_config(config)
  os.makedirs(workdir, exist_ok=True)
  with _workdir_lock(workdir):
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  changed = workdirs.check_resumable(workdir, config)  # before anything is written
  mesh = sharding.create_mesh()
  manager = checkpointing.create_manager(workdir, config.train.keep_checkpoints)
  preemption = _PreemptionNotice(manager)  # from here on, SIGTERM ends with a checkpoint
  try:
    return _resume_and_train(config, workdir, mesh, manager, preemption, changed)
  finally:  # Also on errors: let an async save finish, so the last good checkpoint is complete.
    _close_quietly(manager)
    preemption.close()


def _resume_and_train(
  config, workdir: str, mesh, manager, preemption: _PreemptionNotice, changed: list[str]
) -> TrainState:
  is_main = jax.process_index() == 0
  has_checkpoints = bool(manager.all_steps())
  trainer = create_trainer(config, mesh, abstract=has_checkpoints)
  train_iter = data.create_train_iterator(
    config.data,
    seed=config.seed,
    local_batch_size=sharding.local_batch_size(config.train.batch_size),
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  state, start_step = trainer.state, 0
  if has_checkpoints:  # checks that the checkpoints hold this config's train state
    start_step, state = checkpointing.restore_latest(manager, state, train_iter)
    logging.info("resumed from step %d in %s", start_step, workdir)
    if changed:
      logging.info("resuming %s with changed settings: %s", workdir, "; ".join(changed))
  if is_main:  # only now: a config the checkpoints do not fit never replaces the run's
    workdirs.save_config(config, workdir)
  eval_sets = _load_eval_sets(config)
  writer = train_logging.MetricWriter(workdir, enabled=is_main, truncate_after_step=start_step)
  reporter = evaluate.Reporter(workdir, config.data.scale, config.model.name, writer, is_main)
  if eval_sets and start_step == 0 and config.train.eval_at_start:
    results, outputs = _evaluate(config, trainer, state, eval_sets)
    reporter.report_start(results, eval_sets, outputs)

  train = config.train
  progress = tqdm.tqdm(
    total=train.steps, initial=start_step, disable=not is_main, desc="train", unit="step"
  )
  profiler = _Profiler(train.profile_steps, workdir)
  pending, last_log_time, last_log_step = [], time.perf_counter(), start_step
  try:
    for step in range(start_step + 1, train.steps + 1):
      profiler.before_step(step)
      state, step_metrics = trainer.step(state, sharding.global_batch(next(train_iter), mesh))
      profiler.after_step(step, (state, step_metrics))
      pending.append(step_metrics)
      progress.update(1)
      is_last = step == train.steps
      preempted = preemption.reached(step) and not is_last
      should_eval = bool(eval_sets) and (_every(step, train.eval_every_steps) or is_last)
      should_save = _every(step, train.checkpoint_every_steps) or is_last or should_eval
      should_save = should_save or preempted
      should_log = _every(step, train.log_every_steps) or is_last or preempted
      if should_log or should_save:  # Only here does the host wait for the device.
        history = jax.device_get(pending)
        _check_finite(history, step - len(history) + 1)
        pending = []
        if should_log:
          now = time.perf_counter()
          steps_per_sec = (step - last_log_step) / (now - last_log_time)
          last_log_time, last_log_step = now, step
          row = {k: float(v) for k, v in history[-1].items()}
          row.update(steps_per_sec=steps_per_sec, examples_per_sec=steps_per_sec * train.batch_size)
          writer.write(step, row)
          progress.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['learning_rate']:.2e}")
      eval_metrics = None
      if should_eval:
        results, outputs = _evaluate(config, trainer, state, eval_sets)
        table = reporter.report(step, results, eval_sets, outputs)
        logging.info("step %d evaluation:\n%s", step, table)
        eval_metrics = {checkpointing.BEST_METRIC: evaluate.mean_psnr_y(results)}
      if should_save:
        checkpointing.save(manager, step, state, train_iter, eval_metrics)
      if preempted:
        checkpointing.wait_until_finished(manager)
        logging.warning("preempted at step %d: checkpoint saved in %s", step, workdir)
        raise Preempted(step, workdir)
    checkpointing.wait_until_finished(manager)
  finally:
    profiler.stop()
    progress.close()
    writer.close()
  if is_main and eval_sets:
    print(reporter.final_table())
  return state


def _close_quietly(manager) -> None:
  """Waits for an async save and closes; a save error was raised already (or is on its way)."""
  try:
    manager.wait_until_finished()
    manager.close()
  except Exception as error:  # noqa: BLE001 - the error that stopped the run is the one to see
    logging.warning("closing the checkpoint manager: %s", checkpointing.one_line(error))


def evaluate_checkpoint(config: ml_collections.ConfigDict | None, workdir: str) -> dict:
  """--mode=eval: evaluates checkpoint `eval.checkpoint` (latest|best|STEP) of `workdir` on the
  eval sets of `config` (None: the run's own config.json). The network is the run's, restored for
  inference only (no optimizer); results go to eval/step<N>_<sets>/, never over the run's."""
  run_config = workdirs.load_config(workdir)
  if config is None:
    config = run_config
  else:
    differences = workdirs.config_differences(run_config, config)
    if differences:
      print(
        f"note: --config differs from the run's {workdirs.config_path(workdir)}; the network is "
        f"the run's, the eval sets are --config's. Differences: {'; '.join(differences)}"
      )
  which = str(config.eval.checkpoint)
  model, step, _ = inference.restore_model(workdir, int(which) if which.isdigit() else which)
  graphdef, weights = nnx.split(model)
  forward = jax.jit(functools.partial(inference.forward, graphdef))
  eval_sets = _load_eval_sets(config)
  start = time.perf_counter()
  results = evaluate.evaluate(
    lambda lr: np.asarray(forward(weights, jnp.asarray(lr)[None]))[0],
    eval_sets,
    config.data.scale,
    bucket=config.eval.bucket,
  )
  seconds = time.perf_counter() - start
  if jax.process_index() == 0:
    out = workdirs.eval_dir(workdir, step, [s.name for s in eval_sets])
    document = evaluate.results_document(step, config.data.scale, results)
    table = evaluate.markdown_table(document, run_config.model.name)
    num_images = sum(len(s.images) for s in eval_sets)
    print(
      f"checkpoint step {step} ({which}); {num_images} images in {seconds:.1f} s "
      f"({num_images / seconds:.2f} images/s, compile included)\n{table}",
      flush=True,
    )
    try:  # the results are printed above even where the workdir is read-only
      os.makedirs(out, exist_ok=True)
      evaluate.Reporter(out, config.data.scale, run_config.model.name).report(step, results)
      print(f"written to {out}")
    except OSError as error:
      print(f"note: could not write the results to {out}: {error}")
  return evaluate.results_document(step, config.data.scale, results)
