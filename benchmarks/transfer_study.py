"""What does each transfer route buy? Every route trained with the same budget (steps, batch,
data), for several seeds, evaluated on held-out HR images during training; mean ± std over seeds.

  python benchmarks/transfer_study.py --eval_dir=DIR --out=OUT [--seeds=3] [--steps=N]
      [--routes=a,b,...] (and transfer_vs_scratch.py's flags: --batch_size, --patch_size, ...)

Routes (x4; LR by MATLAB bicubic; trained on --train_dir unless said otherwise):
  scratch                 Real-ESRGAN's compact net (SRVGGNetCompact, 16 convs), random init
  finetune_sr             the same net from pretrained realesr-animevideov3 (offline weights),
                          at a fifth of the learning rate
  x2_to_x4                the compact net trained at x2 for half the steps, then its body (every
                          layer but the last) at x4 for the other half
  self_adapt              realesr-animevideov3 adapted to the held-out LR images themselves
                          (sr_jax/adapt.py; no HR, no training data), --steps steps
  unet_imagenet / unet_scratch                  U-Net with an EfficientNet-Lite0 encoder,
                                                ImageNet weights or random (transfer_vs_scratch)
  unet_imagenet_feature / unet_scratch_feature  + feature loss (loss.feature_weight=0.1)
  unet_imagenet_p64 / unet_scratch_p64          2x larger LR patches (the deepest features of a
                                                32-pixel patch are 1x1)
Each route is compared with its baseline (scratch for the compact routes and self_adapt, the
scratch twin for the U-Net routes) seed by seed: gain = mean of the per-seed differences of the
final PSNR-Y, spread = their standard deviation; a gain within the spread is reported as none.
"Steps to reach": the first step (linear between evaluations) where the route's mean curve reaches
its baseline's final PSNR-Y.

Writes OUT/transfer_study.json, transfer_study.md (the table), transfer_study_steps.png and
transfer_study_seconds.png (mean PSNR-Y vs step and vs training seconds, ± std bands). Each run's
workdir is OUT/<route>/seed<k> (rerunning resumes; finished runs are reused from their
metrics.jsonl).
"""

import json
import os
import shutil

from absl import app, flags, logging
from flax import nnx
import jax
import ml_collections
import numpy as np
import transfer_vs_scratch as tvs  # its flags and training machinery (same folder)

from configs import default, finetune_realesrgan_compact_x4
from sr_jax import (
  adapt,
  checkpointing,
  data,
  evaluate,
  models,
  sharding,
  train,
  train_logging,
  workdirs,
)

FLAGS = flags.FLAGS
flags.DEFINE_integer("seeds", 3, "Seeds per route (0, 1, ...).")
flags.DEFINE_list("routes", None, "Routes to run (default: all, in the order of ROUTES).")
FLAGS.set_default("steps", 120)
FLAGS.set_default("eval_every", 30)
FLAGS.set_default("eval_at_start", True)

PRETRAINED_SR = "ncnn:realesrgan-animevideov3-x4"
FEATURE_WEIGHT = 0.1
MIN_REPORTED_DB = 0.01
FINETUNE_LR_FACTOR = 0.2  # fine-tuning a pretrained network: a smaller step than from scratch
# route -> its baseline (None: a baseline itself)
ROUTES = {
  "scratch": None,
  "finetune_sr": "scratch",
  "x2_to_x4": "scratch",
  "self_adapt": "scratch",
  "unet_scratch": None,
  "unet_imagenet": "unet_scratch",
  "unet_scratch_feature": None,
  "unet_imagenet_feature": "unet_scratch_feature",
  "unet_scratch_p64": None,
  "unet_imagenet_p64": "unet_scratch_p64",
}


def compact_config(seed: int, scale: int = 4, weights: str = "") -> ml_collections.ConfigDict:
  """The compact net at `scale` with the flags' budget; `weights` "" = random init."""
  config = tvs.apply_budget(finetune_realesrgan_compact_x4.get_config())
  config.seed = seed
  config.model.weights = weights
  config.model.upscale = config.data.scale = scale
  config.optim.learning_rate = FLAGS.learning_rate * (FINETUNE_LR_FACTOR if weights else 1.0)
  return config


def unet_config(route: str, seed: int) -> ml_collections.ConfigDict:
  """transfer_vs_scratch's twin for `route` (encoder weights, feature loss, patch size)."""
  pretrained = route.startswith("unet_imagenet")
  config = tvs.twin_config(FLAGS.weights if pretrained else None)
  config.seed = seed
  if route.endswith("_feature"):
    config.loss.feature_weight = FEATURE_WEIGHT
  if route.endswith("_p64"):
    config.data.patch_size = 2 * FLAGS.patch_size
  return config


def transplant(target: dict, source: dict) -> dict:
  """`target` params with every leaf of `source` that has the same path and shape."""
  flat_source = dict(jax.tree_util.tree_leaves_with_path(source))
  return jax.tree_util.tree_map_with_path(
    lambda path, x: (
      flat_source[path] if path in flat_source and flat_source[path].shape == x.shape else x
    ),
    target,
  )


def run_x2_to_x4(seed: int, workdir: str) -> dict:
  """Half the steps at x2 (no evaluation); the x4 run then starts at that step from the x2
  body (the last conv, whose width depends on the scale, stays randomly initialised)."""
  half = FLAGS.steps // 2
  config_x2 = compact_config(seed, scale=2)
  config_x2.train.steps = half
  config_x2.train.eval_at_start = False
  config_x2.eval.dirs = ()
  config_x4 = compact_config(seed)
  workdir_x2, workdir_x4 = os.path.join(workdir, "x2"), os.path.join(workdir, "x4")
  manager = checkpointing.create_manager(workdir_x4, config_x4.train.keep_checkpoints)
  if manager.latest_step() is None:
    x2_state = jax.device_get(train.train_and_evaluate(config_x2, workdir_x2))
    mesh = sharding.create_mesh()
    state = dict(train.create_trainer(config_x4, mesh).state)
    state["step"] = state["step"] + half
    for key in ("params", "ema_params"):
      state[key] = transplant(jax.device_get(state[key]), x2_state[key])
    iterator = data.create_train_iterator(
      config_x4.data, seed, sharding.local_batch_size(config_x4.train.batch_size)
    )
    workdirs.save_config(config_x4, workdir_x4)
    checkpointing.save(manager, half, sharding.place_state(state, mesh), iterator)
    manager.wait_until_finished()
  manager.close()
  if not FLAGS.keep_checkpoints:
    shutil.rmtree(os.path.join(workdir_x2, "checkpoints"), ignore_errors=True)
  x2_rows = train_logging.read_jsonl(os.path.join(workdir_x2, "metrics.jsonl"))
  x2_seconds = max(tvs.training_seconds(x2_rows).values())
  x4 = tvs.train_run(config_x4, workdir_x4, start_step=half)
  x4["train_seconds"] = [None if t is None else t + x2_seconds for t in x4["train_seconds"]]
  x4["seconds"] += x2_seconds
  return x4


def run_self_adapt(seed: int, eval_sets: list) -> dict:
  """realesr-animevideov3 adapted to the held-out LR images (only they reach `adapt`)."""
  model = models.load_pretrained_sr(PRETRAINED_SR)
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  predictor = train.make_predictor(graphdef)
  recipe = default.get_config().adapt
  recipe.steps, recipe.seed = FLAGS.steps, seed
  # The held-out LR images (8-bit levels already) and nothing else: their HR stays here.
  lr_images = [np.rint(im.lr * 255).astype(np.uint8) for s in eval_sets for im in s.images]
  result = {"steps": [], "psnr_y": [], "ssim_y": [], "train_seconds": []}

  def record(step, seconds, state):
    scores = evaluate.evaluate(predictor(state), eval_sets, 4, bucket=16)
    result["steps"].append(step)
    result["train_seconds"].append(seconds)
    for key in ("psnr_y", "ssim_y"):
      result[key].append(float(np.mean([scores[s.name][key] for s in eval_sets])))
    result["bicubic_psnr_y"] = float(np.mean([scores[s.name]["bicubic_psnr_y"] for s in eval_sets]))

  if FLAGS.eval_at_start:
    record(0, 0.0, {"params": params, "model_state": model_state})
  losses = []

  def on_step(step, row, state):
    losses.append(row["loss"])
    if step % FLAGS.eval_every == 0 or step == FLAGS.steps:
      record(step, row["seconds"], state)

  adapt.adapt(model, lr_images, recipe, on_step=on_step)
  result["loss_steps"] = list(range(1, len(losses) + 1))
  result["loss"] = losses
  result["seconds"] = result["train_seconds"][-1]
  return result


def run_route(route: str, seed: int, eval_sets: list) -> dict:
  workdir = os.path.join(FLAGS.out, route, f"seed{seed}")
  done = os.path.join(workdir, "curves.json")
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  if route == "self_adapt":
    result = run_self_adapt(seed, eval_sets)
  elif route == "x2_to_x4":
    result = run_x2_to_x4(seed, workdir)
  elif route.startswith("unet_"):
    result = tvs.train_run(unet_config(route, seed), workdir)
  else:
    weights = PRETRAINED_SR if route == "finetune_sr" else ""
    result = tvs.train_run(compact_config(seed, weights=weights), workdir)
  os.makedirs(workdir, exist_ok=True)
  with open(done, "w") as f:
    json.dump(result, f)
  print(
    f"{route} seed {seed}: {FLAGS.steps} steps, {result['seconds']:.0f} s, held-out PSNR-Y "
    f"{result['psnr_y'][-1]:.2f} dB (bicubic {result['bicubic_psnr_y']:.2f})",
    flush=True,
  )
  return result


def first_step_reaching(steps: list, values: list, target: float) -> float | None:
  """The first step where the piecewise-linear curve reaches `target` (None: never)."""
  for i, (step, value) in enumerate(zip(steps, values)):
    if value >= target:
      if i == 0:
        return float(step)
      s0, v0 = steps[i - 1], values[i - 1]
      return float(s0 + (step - s0) * (target - v0) / (value - v0))
  return None


def verdict(gain: float, spread: float) -> str:
  """A gain or loss only where it exceeds the seed-to-seed spread of the differences (and the
  0.01 dB the table shows)."""
  margin = max(spread, MIN_REPORTED_DB)
  if gain > margin:
    return "gain"
  return "loss" if gain < -margin else "no gain (within spread)"


def summarize(runs: dict[str, list[dict]]) -> dict:
  """Per route: mean ± std curves and final PSNR-Y, and the gain over its baseline."""
  summary = {}
  for route, seeds in runs.items():
    # The evaluations every seed has (a run resumed with another --eval_every has more).
    steps = sorted(set.intersection(*(set(r["steps"]) for r in seeds)))

    def at_steps(run, key):
      values = dict(zip(run["steps"], run[key]))
      return [np.nan if values[step] is None else values[step] for step in steps]

    psnr = np.asarray([at_steps(r, "psnr_y") for r in seeds])  # [seeds, evaluations]
    seconds = np.asarray([at_steps(r, "train_seconds") for r in seeds])
    seconds[:, np.asarray(steps) == 0] = 0.0  # before the first step: no training time yet
    final = psnr[:, -1]
    summary[route] = {
      "steps": steps,
      "psnr_y_mean": psnr.mean(0).tolist(),
      "psnr_y_std": psnr.std(0, ddof=1).tolist() if len(seeds) > 1 else [0.0] * len(steps),
      # Median: the first seed of a route also compiles, unless the compilation cache is warm.
      "train_seconds_median": [
        float(np.median(column[np.isfinite(column)])) if np.isfinite(column).any() else None
        for column in seconds.T
      ],
      "final_psnr_y": final.tolist(),
      "final_mean": float(final.mean()),
      "final_std": float(final.std(ddof=1)) if len(seeds) > 1 else 0.0,
      "wall_seconds_mean": float(np.mean([r["seconds"] for r in seeds])),
      "bicubic_psnr_y": seeds[0]["bicubic_psnr_y"],
    }
  for route, row in summary.items():
    baseline = ROUTES[route]
    if baseline is None or baseline not in summary:
      continue
    base = summary[baseline]
    n = min(len(row["final_psnr_y"]), len(base["final_psnr_y"]))
    differences = np.asarray(row["final_psnr_y"][:n]) - np.asarray(base["final_psnr_y"][:n])
    gain = float(differences.mean())
    spread = float(differences.std(ddof=1)) if n > 1 else float("nan")
    row.update(
      baseline=baseline,
      gain=gain,
      gain_spread=spread,
      verdict="gain"
      if gain > spread
      else ("loss" if gain < -spread else "no gain (within spread)"),
      steps_to_baseline_final=first_step_reaching(
        row["steps"], row["psnr_y_mean"], base["final_mean"]
      ),
    )
  return summary


def markdown(summary: dict, settings: dict) -> str:
  lines = [
    "| route | final PSNR-Y (dB) | vs baseline | gain (dB) | verdict | steps to baseline's final "
    "| train s (median) |",
    "|---|---|---|---|---|---|---|",
  ]
  for route, row in summary.items():
    baseline = row.get("baseline")
    if baseline:
      gain = f"{row['gain']:+.2f} ± {row['gain_spread']:.2f}"
      reach = row["steps_to_baseline_final"]
      reach = "never" if reach is None else f"{reach:.0f}"
      verdict = row["verdict"]
    else:
      baseline, gain, reach, verdict = "—", "—", "—", "baseline"
    lines.append(
      f"| {route} | {row['final_mean']:.2f} ± {row['final_std']:.2f} | {baseline} | {gain} "
      f"| {verdict} | {reach} | {row['train_seconds_median'][-1]:.0f} |"
    )
  bicubic = next(iter(summary.values()))["bicubic_psnr_y"]
  lines.append(
    f"\nMean ± std over {settings['seeds']} seeds; bicubic {bicubic:.2f} dB. Gain: mean of the "
    "per-seed differences to the baseline ± their std. Settings: " + json.dumps(settings)
  )
  return "\n".join(lines) + "\n"


def plot(summary: dict, path: str, x_key: str, x_label: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(8, 5))
  for route, row in summary.items():
    x = np.asarray([np.nan if value is None else value for value in row[x_key]], np.float64)
    mean, std = np.asarray(row["psnr_y_mean"]), np.asarray(row["psnr_y_std"])
    keep = np.isfinite(x)
    (line,) = ax.plot(x[keep], mean[keep], marker=".", label=route)
    ax.fill_between(
      x[keep], (mean - std)[keep], (mean + std)[keep], alpha=0.15, color=line.get_color()
    )
  ax.axhline(next(iter(summary.values()))["bicubic_psnr_y"], color="gray", ls="--", label="bicubic")
  ax.set(xlabel=x_label, ylabel="held-out PSNR-Y (dB), mean ± std over seeds")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  routes = FLAGS.routes or list(ROUTES)
  unknown = sorted(set(routes) - set(ROUTES))
  if unknown:
    raise app.UsageError(f"--routes: unknown {unknown}; known: {list(ROUTES)}")
  if FLAGS.scale != 4:
    raise app.UsageError("--scale: the study is x4 (its pretrained networks are)")
  os.makedirs(FLAGS.out, exist_ok=True)
  eval_sets = evaluate.load_eval_sets((FLAGS.eval_dir,), 4)
  runs = {r: [run_route(r, seed, eval_sets) for seed in range(FLAGS.seeds)] for r in routes}
  summary = summarize(runs)
  settings = {k: FLAGS[k].value for k in (*tvs.SETTINGS, "seeds", "routes")}
  result = {"settings": settings, "summary": summary, "runs": runs}
  with open(os.path.join(FLAGS.out, "transfer_study.json"), "w") as f:
    json.dump(result, f, indent=1)
  table = markdown(summary, settings)
  with open(os.path.join(FLAGS.out, "transfer_study.md"), "w") as f:
    f.write(table)
  plot(summary, os.path.join(FLAGS.out, "transfer_study_steps.png"), "steps", "training step")
  plot(
    summary,
    os.path.join(FLAGS.out, "transfer_study_seconds.png"),
    "train_seconds_median",
    "training seconds, median over seeds (compilation included, evaluation not)",
  )
  print(table)


if __name__ == "__main__":
  app.run(main)
