"""Training: config -> train state on a ("data",) mesh -> jitted data-parallel step -> loop with
logging, evaluation and orbax checkpoints; and `--mode=eval` of a checkpoint.

The train state is a plain dict pytree (step, params, model_state, opt_state[, ema_params,
loss_state]) on a ("data",) mesh of every device of every host; batches are split over it. Params
are replicated; the optimiser state and EMA weights are split over the mesh (ZeRO-1,
`sharding.state_shardings`). Pretrained weights are applied once, when a run starts without a
checkpoint; a resumed run builds its state abstractly and restores it.
"""

import functools
import os
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
    config.eval.dirs, config.data.scale, config.eval.datasets, config.eval.data_root
  )


def _evaluate(config, trainer: Trainer, state: TrainState, eval_sets) -> tuple[dict, dict]:
  """Results on every eval set, and the SR images (for the figures)."""
  outputs = {}
  results = evaluate.evaluate(
    trainer.predictor(state), eval_sets, config.data.scale, config.eval.bucket, outputs
  )
  return results, outputs


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains `config.train.steps` steps, resuming from the latest checkpoint in `workdir`."""
  is_main = jax.process_index() == 0
  changed = workdirs.check_resumable(workdir, config)  # before anything is written
  if changed:
    logging.info("resuming %s with changed settings: %s", workdir, "; ".join(changed))
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    workdirs.save_config(config, workdir)
  mesh = sharding.create_mesh()
  manager = checkpointing.create_manager(workdir, config.train.keep_checkpoints)
  start_step = manager.latest_step() or 0
  trainer = create_trainer(config, mesh, abstract=start_step > 0)
  train_iter = data.create_train_iterator(
    config.data,
    seed=config.seed,
    local_batch_size=sharding.local_batch_size(config.train.batch_size),
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  state = trainer.state
  if start_step:
    state = checkpointing.restore(manager, start_step, state, train_iter)
    logging.info("resumed from step %d in %s", start_step, workdir)
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
  pending, last_log_time, last_log_step = [], time.perf_counter(), start_step
  try:
    for step in range(start_step + 1, train.steps + 1):
      state, step_metrics = trainer.step(state, sharding.global_batch(next(train_iter), mesh))
      pending.append(step_metrics)
      progress.update(1)
      is_last = step == train.steps
      should_eval = bool(eval_sets) and (step % train.eval_every_steps == 0 or is_last)
      should_save = step % train.checkpoint_every_steps == 0 or is_last or should_eval
      should_log = step % train.log_every_steps == 0 or is_last
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
  finally:  # Also on errors: let an async save finish, so the last good checkpoint is complete.
    progress.close()
    manager.wait_until_finished()
    manager.close()
    writer.close()
  if is_main and eval_sets:
    print(reporter.final_table())
  return state


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
    os.makedirs(out, exist_ok=True)
    table = evaluate.Reporter(out, config.data.scale, run_config.model.name).report(step, results)
    num_images = sum(len(s.images) for s in eval_sets)
    print(
      f"checkpoint step {step} ({which}); {num_images} images in {seconds:.1f} s "
      f"({num_images / seconds:.2f} images/s, compile included); written to {out}\n{table}"
    )
  return evaluate.results_document(step, config.data.scale, results)
