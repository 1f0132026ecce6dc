"""The training loop: data -> jitted data-parallel step -> logs, evaluation, orbax checkpoints.

The train state is a plain dict pytree (step, params, model_state, opt_state, rng[, ema_params]) on a
("data",) mesh of every device of every host; batches are split over it. Params are replicated; the
optimiser state and EMA weights are split over the mesh (ZeRO-1, `sharding.state_shardings`).
"""

import json
import os
import time
from typing import Callable

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from sr_jax import (
  checkpointing,
  data,
  evaluate,
  figures,
  losses,
  optim,
  sharding,
  train_logging,
)
from sr_jax import train_state as train_state_lib
from sr_jax.train_state import TrainState

START_RESULTS = "eval_results_start.json"


def ema_decay_at(step: jnp.ndarray, decay: float) -> jnp.ndarray:
  """EMA decay ramped up over the first steps, so short runs are not dominated by the init."""
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def make_train_step(
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  ema_decay: float,
  loss: losses.Loss = losses.Loss(l1_weight=1.0),
  mesh: jax.sharding.Mesh | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
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
    if (
      mesh is not None
    ):  # Each device: its slice of the grads (after the batch mean) and of the params.
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


def make_predictor(graphdef: nnx.GraphDef) -> Callable[[TrainState], evaluate.PredictFn]:
  """state -> full-image SR function, with the EMA weights when there are any.

  One jitted forward for the whole run (it compiles once per input shape, not once per
  evaluation), on one local device: replicated weights would repeat the work on every device.
  """

  @jax.jit
  def forward(params, model_state, lr):
    model = nnx.merge(graphdef, params, model_state)
    model.eval()  # BatchNorm on running statistics, whatever training used
    return model(lr)

  def bind(state: TrainState) -> evaluate.PredictFn:
    # On one local device; the EMA weights may be split over the mesh (sharding.state_shardings).
    params, model_state = sharding.on_one_device(
      (state.get("ema_params", state["params"]), state["model_state"])
    )
    return lambda lr: np.asarray(forward(params, model_state, jnp.asarray(lr)[None]))[0]

  return bind


def _check_finite(history: list[dict], start_step: int) -> None:
  for offset, row in enumerate(history):
    if not np.isfinite(row["loss"]):
      raise FloatingPointError(
        f"non-finite loss {row['loss']} at step {start_step + offset + 1}; training stopped, the last "
        "checkpoint (saved only from finite steps) is intact. Lower optim.learning_rate or "
        "optim.grad_clip_norm, or check the data."
      )


def _evaluate_and_report(predict, eval_sets, config, workdir, step, writer, is_main) -> float:
  """Runs evaluation, writes eval_results.{json,md} and comparison figures; returns mean PSNR-Y."""
  dataset_results = evaluate.evaluate(
    predict, eval_sets, config.data.scale, bucket=config.eval.bucket
  )
  document = evaluate.results_document(step, config.data.scale, dataset_results)
  if is_main:
    table = evaluate.write_results(workdir, document, config.model.name)
    logging.info("step %d evaluation:\n%s", step, table)
    first = eval_sets[0]
    sr = np.clip(predict(first.images[0].lr), 0.0, 1.0)
    figure = figures.comparison_figure(
      first.bicubic[0], sr, first.images[0].hr, config.data.scale, config.model.name
    )
    os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
    figure.save(os.path.join(workdir, "figures", f"comparison_step{step:07d}.png"))
    figure.save(os.path.join(workdir, "comparison.png"))  # the latest
    scalars = {
      f"eval/{name}/{key}": value
      for name, r in dataset_results.items()
      for key, value in r.items()
      if key != "num_images"
    }
    writer.write(step, scalars)
  return float(np.mean([r["psnr_y"] for r in dataset_results.values()]))


def _evaluate_at_start(predict, eval_sets, config, workdir, writer, is_main) -> None:
  """Step-0 evaluation (e.g. a pretrained network before fine-tuning), kept in eval_results_start.json."""
  dataset_results = evaluate.evaluate(
    predict, eval_sets, config.data.scale, bucket=config.eval.bucket
  )
  if is_main:
    with open(os.path.join(workdir, START_RESULTS), "w") as f:
      json.dump(evaluate.results_document(0, config.data.scale, dataset_results), f, indent=2)
    writer.write(
      0,
      {
        f"eval/{name}/{key}": value
        for name, r in dataset_results.items()
        for key, value in r.items()
        if key != "num_images"
      },
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains `config.train.steps` steps, resuming from the latest checkpoint in `workdir`."""
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  mesh = sharding.create_mesh()
  schedule, tx = optim.from_config(config)
  loss, loss_state = losses.create_loss(config.get("loss"))
  graphdef, state = train_state_lib.create_train_state(config, tx, loss_state)
  state = sharding.place_state(
    state, mesh
  )  # ZeRO-1: opt_state and ema_params split, the rest replicated
  train_iter = data.create_train_iterator(
    config.data,
    seed=config.seed,
    local_batch_size=sharding.local_batch_size(config.train.batch_size),
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  eval_sets = evaluate.load_eval_sets(
    config.eval.dirs, config.data.scale, config.eval.datasets, config.eval.data_root
  )

  manager = checkpointing.create_manager(workdir, config.train.keep_checkpoints)
  start_step = 0
  if manager.latest_step() is not None:
    start_step = manager.latest_step()
    state = checkpointing.restore(manager, start_step, train_state_lib.abstract(state), train_iter)
    logging.info("resumed from step %d in %s", start_step, workdir)
  writer = train_logging.MetricWriter(workdir, enabled=is_main, truncate_after_step=start_step)

  replicated = sharding.replicated(mesh)
  train_step = jax.jit(
    make_train_step(graphdef, tx, schedule, config.train.ema_decay, loss, mesh=mesh),
    donate_argnums=(0,),
    out_shardings=(sharding.state_shardings(state, mesh), replicated),
  )
  predictor = make_predictor(graphdef)
  if eval_sets and start_step == 0 and config.train.get("eval_at_start", False):
    _evaluate_at_start(predictor(state), eval_sets, config, workdir, writer, is_main)
  try:
    state = _train_loop(
      config,
      workdir,
      mesh,
      predictor,
      state,
      train_step,
      train_iter,
      eval_sets,
      manager,
      writer,
      start_step,
      is_main,
    )
  finally:  # Also on errors: let an async save finish, so the last good checkpoint is complete.
    manager.wait_until_finished()
    manager.close()
    writer.close()
  if is_main and eval_sets:
    print(_final_table(workdir, config.model.name))
  return state


def _final_table(workdir: str, model_name: str) -> str:
  """The last evaluation, with the model's numbers before training when eval_at_start ran."""
  with open(os.path.join(workdir, "eval_results.json")) as f:
    final = json.load(f)
  lines = [
    f"Evaluation at step {final['step']}, x{final['scale']}, Y channel (BT.601), border {final['scale']} px:",
    "",
    "| dataset | method | PSNR-Y (dB) | SSIM-Y |",
    "|---|---|---|---|",
  ]
  start = None
  if os.path.exists(os.path.join(workdir, START_RESULTS)):
    with open(os.path.join(workdir, START_RESULTS)) as f:
      start = json.load(f)
  for name, r in final["datasets"].items():
    lines.append(f"| {name} | bicubic | {r['bicubic_psnr_y']:.2f} | {r['bicubic_ssim_y']:.4f} |")
    if start and name in start["datasets"]:
      before = start["datasets"][name]
      lines.append(
        f"| {name} | {model_name} at step 0 | {before['psnr_y']:.2f} | {before['ssim_y']:.4f} |"
      )
    lines.append(
      f"| {name} | {model_name} at step {final['step']} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} |"
    )
  return "\n".join(lines) + "\n"


def _train_loop(
  config,
  workdir,
  mesh,
  predictor,
  state,
  train_step,
  train_iter,
  eval_sets,
  manager,
  writer,
  start_step,
  is_main,
) -> TrainState:
  """Steps from `start_step` to `config.train.steps`: logs, evaluates, checkpoints."""
  total_steps = config.train.steps
  pending, last_log_time, last_log_step = [], time.perf_counter(), start_step
  progress = tqdm.tqdm(
    total=total_steps,
    initial=start_step,
    disable=not is_main,
    desc="train",
    unit="step",
    dynamic_ncols=True,
  )
  for step in range(start_step + 1, total_steps + 1):
    batch = sharding.global_batch(next(train_iter), mesh)
    state, step_metrics = train_step(state, batch)
    pending.append(step_metrics)
    progress.update(1)

    is_last = step == total_steps
    should_log = step % config.train.log_every_steps == 0 or is_last
    should_eval = bool(eval_sets) and (step % config.train.eval_every_steps == 0 or is_last)
    should_save = step % config.train.checkpoint_every_steps == 0 or is_last or should_eval
    if should_log or should_save:
      history = jax.device_get(pending)
      _check_finite(history, step - len(history))
      pending = []
      if should_log:
        now = time.perf_counter()
        steps_per_sec = (step - last_log_step) / (now - last_log_time)
        last_log_time, last_log_step = now, step
        row = {k: float(v) for k, v in history[-1].items()}
        row.update(
          steps_per_sec=steps_per_sec, examples_per_sec=steps_per_sec * config.train.batch_size
        )
        writer.write(step, row)
        progress.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['learning_rate']:.2e}")
    eval_metrics = None
    if should_eval:
      eval_metrics = {
        checkpointing.BEST_METRIC: _evaluate_and_report(
          predictor(state), eval_sets, config, workdir, step, writer, is_main
        )
      }
    if should_save:
      checkpointing.save(manager, step, state, train_iter, eval_metrics)
  progress.close()
  return state


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """--mode=eval: evaluates a checkpoint (config.eval.checkpoint: latest|best|STEP) on eval.dirs."""
  graphdef, state, step = train_state_lib.restore_checkpoint(
    config, workdir, config.eval.checkpoint
  )
  eval_sets = evaluate.load_eval_sets(
    config.eval.dirs, config.data.scale, config.eval.datasets, config.eval.data_root
  )
  start = time.perf_counter()
  dataset_results = evaluate.evaluate(
    make_predictor(graphdef)(state), eval_sets, config.data.scale, bucket=config.eval.bucket
  )
  seconds = time.perf_counter() - start
  document = evaluate.results_document(step, config.data.scale, dataset_results)
  if jax.process_index() == 0:
    table = evaluate.write_results(workdir, document, config.model.name)
    num_images = sum(len(s.images) for s in eval_sets)
    print(
      f"checkpoint step {step} ({config.eval.checkpoint}); {num_images} images in {seconds:.1f} s "
      f"({num_images / seconds:.2f} images/s, compile included)\n{table}"
    )
  return document
