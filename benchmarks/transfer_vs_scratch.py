"""What do pretrained ImageNet weights buy? Trains the U-Net SR twins (pretrained vs scratch
encoder) with the same budget (steps, batch, seed, data) and evaluates both on a held-out folder
during training.

  python benchmarks/transfer_vs_scratch.py --eval_dir=DIR --out=OUTDIR [--steps=N] [--train_dir=DIR]

Each twin is configs/unet_effnetlite0_x4.py with the flags' settings and its encoder weights
(--weights, or none), trained by `sr_jax.train.train_and_evaluate` in OUTDIR/pretrained and
OUTDIR/scratch. Writes OUTDIR/transfer_vs_scratch.json
  {"bicubic_psnr_y": f, "pretrained": {"steps": [..], "psnr_y": [..], "ssim_y": [..],
   "loss_steps": [..], "loss": [..], ...}, "scratch": {...}, "settings": {...}}
plus transfer_vs_scratch.md (table) and transfer_vs_scratch.png (PSNR-Y vs steps with the bicubic
line; training-loss gap). The defaults fit 2 CPU cores in under 20 minutes; scale
--steps/--batch_size/--patch_size up on GPU/TPU. notebooks/transfer_learning.ipynb runs it small.
"""

import json
import os
import shutil
import time

from absl import app, flags, logging
import ml_collections

from configs import unet_effnetlite0_x4
from sr_jax import evaluate, train, train_logging

FLAGS = flags.FLAGS
flags.DEFINE_string("eval_dir", None, "Folder of held-out HR images.", required=True)
flags.DEFINE_string("out", None, "Output folder (also holds both runs' workdirs).", required=True)
flags.DEFINE_string("train_dir", "embedded:train", "Folder of HR training images.")
flags.DEFINE_integer("steps", 240, "Training steps for each twin.")
flags.DEFINE_integer("eval_every", 60, "Evaluate every this many steps.")
flags.DEFINE_bool("eval_at_start", False, "Also evaluate before the first step (step 0).")
flags.DEFINE_integer(
  "log_every", 0, "Log the training loss every this many steps (0: eval_every/4)."
)
flags.DEFINE_integer("batch_size", 8, "Global batch size.")
flags.DEFINE_integer("patch_size", 32, "LR patch side.")
flags.DEFINE_integer("scale", 4, "Upscaling factor.")
flags.DEFINE_string("encoder", "efficientnet_lite0", "Backbone name (create_backbone).")
flags.DEFINE_string(
  "weights", "efficientnet_lite0", "Pretrained encoder weights: path or registry name."
)
flags.DEFINE_list("decoder_features", None, "U-Net decoder widths (default: the config's).")
flags.DEFINE_integer("shallow_features", 0, "U-Net shallow-branch width (0: the config's).")
flags.DEFINE_float("learning_rate", 5e-4, "Peak learning rate (decoder).")
flags.DEFINE_float("encoder_lr_mult", 1.0, "Encoder learning-rate factor (both twins).")
flags.DEFINE_integer("freeze_encoder_steps", 0, "Encoder frozen for this many steps (both twins).")
flags.DEFINE_integer("seed", 0, "Seed shared by both twins.")
flags.DEFINE_bool("keep_checkpoints", False, "Keep each twin's checkpoints (default: removed).")

SETTINGS = (
  "train_dir",
  "eval_dir",
  "steps",
  "eval_every",
  "batch_size",
  "patch_size",
  "scale",
  "encoder",
  "weights",
  "learning_rate",
  "encoder_lr_mult",
  "freeze_encoder_steps",
  "seed",
  "eval_at_start",
  "log_every",
  "decoder_features",
  "shallow_features",
)


def apply_budget(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The flags' budget and data on `config` (any network): seed, training folder, scale, patch
  size, learning rate and warmup, batch, steps, evaluation and logging cadence, eval folder."""
  config.seed = FLAGS.seed
  config.data.train_dirs = (FLAGS.train_dir,)
  config.data.scale = FLAGS.scale
  config.data.patch_size = FLAGS.patch_size
  config.optim.learning_rate = FLAGS.learning_rate
  config.optim.warmup_steps = max(FLAGS.steps // 20, 1)
  config.train.batch_size = FLAGS.batch_size
  config.train.steps = FLAGS.steps
  config.train.eval_at_start = FLAGS.eval_at_start
  config.train.log_every_steps = FLAGS.log_every or max(FLAGS.eval_every // 4, 1)
  config.train.eval_every_steps = FLAGS.eval_every
  config.train.checkpoint_every_steps = FLAGS.eval_every
  config.eval.dirs = (FLAGS.eval_dir,)
  return config


def twin_config(weights: str | None) -> ml_collections.ConfigDict:
  """One twin's U-Net config: the flags' settings, encoder weights `weights` (None: scratch)."""
  config = apply_budget(unet_effnetlite0_x4.get_config())
  config.model.encoder.name = FLAGS.encoder
  config.model.encoder.weights = weights
  if FLAGS.decoder_features:
    config.model.decoder_features = tuple(int(width) for width in FLAGS.decoder_features)
  if FLAGS.shallow_features:
    config.model.shallow_features = FLAGS.shallow_features
  config.optim.encoder_lr_mult = FLAGS.encoder_lr_mult
  config.train.freeze_encoder_steps = FLAGS.freeze_encoder_steps
  return config


def training_seconds(rows: list[dict], start_step: int = 0) -> dict[int, float]:
  """{logged step: training time up to it} (compilation included, evaluations and saves not),
  from the steps_per_sec of the logged rows."""
  elapsed, last_step, at_step = 0.0, start_step, {}
  for row in rows:
    if "steps_per_sec" in row:
      elapsed += (row["step"] - last_step) / row["steps_per_sec"]
      last_step = row["step"]
      at_step[row["step"]] = elapsed
  return at_step


def curves(workdir: str, eval_dir: str, start_step: int = 0) -> dict:
  """The held-out evaluations and the training loss that a run logged in its metrics.jsonl
  (`start_step`: the step the run's log starts after)."""
  prefix = f"eval/{evaluate.dataset_name(eval_dir)}/"
  rows = train_logging.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  evals = [r for r in rows if f"{prefix}psnr_y" in r]
  losses = [r for r in rows if "loss" in r]
  seconds = training_seconds(rows, start_step)
  return {
    "steps": [r["step"] for r in evals],
    "train_seconds": [seconds.get(r["step"]) for r in evals],  # None: a step not logged
    "psnr_y": [r[f"{prefix}psnr_y"] for r in evals],
    "ssim_y": [r[f"{prefix}ssim_y"] for r in evals],
    "bicubic_psnr_y": evals[-1][f"{prefix}bicubic_psnr_y"],
    "loss_steps": [r["step"] for r in losses],
    "loss": [r["loss"] for r in losses],
  }


def train_run(config: ml_collections.ConfigDict, workdir: str, start_step: int = 0) -> dict:
  """Trains `config` in `workdir` (resuming if it has checkpoints); returns its curves and wall
  seconds. Checkpoints are removed afterwards unless --keep_checkpoints."""
  start = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  result = {**curves(workdir, FLAGS.eval_dir, start_step), "seconds": time.perf_counter() - start}
  if not FLAGS.keep_checkpoints:  # ~40 MB each; the curves are in metrics.jsonl
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
  return result


def run_twin(name: str, weights: str | None) -> dict:
  """Trains one twin (resuming if its workdir has checkpoints); returns its curves."""
  result = train_run(twin_config(weights), os.path.join(FLAGS.out, name))
  print(
    f"{name} encoder: {FLAGS.steps} steps in {result['seconds']:.0f} s, held-out PSNR-Y "
    f"{result['psnr_y'][-1]:.2f} dB (bicubic {result['bicubic_psnr_y']:.2f})",
    flush=True,
  )
  return result


def markdown(result: dict) -> str:
  pretrained, scratch = result["pretrained"], result["scratch"]
  lines = ["| step | pretrained PSNR-Y | scratch PSNR-Y | gain (dB) |", "|---|---|---|---|"]
  for step, p, s in zip(pretrained["steps"], pretrained["psnr_y"], scratch["psnr_y"]):
    lines.append(f"| {step} | {p:.2f} | {s:.2f} | {p - s:+.2f} |")
  lines.append(
    f"\nBicubic PSNR-Y: {result['bicubic_psnr_y']:.2f} dB. "
    f"Settings: {json.dumps(result['settings'])}"
  )
  return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> None:
  """Left: held-out PSNR-Y vs steps, bicubic dashed. Right: training loss, pretrained - scratch
  (same seed, same batches: the batch noise cancels), as a running mean of up to 10 logged steps."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker
  import numpy as np

  fig, (ax_psnr, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
  for name in ("pretrained", "scratch"):
    ax_psnr.plot(result[name]["steps"], result[name]["psnr_y"], marker="o", label=f"{name} encoder")
  ax_psnr.axhline(result["bicubic_psnr_y"], color="gray", linestyle="--", label="bicubic")
  ax_psnr.set(
    xlabel="training step",
    ylabel="held-out PSNR-Y (dB)",
    title=f"U-Net x{FLAGS.scale}, {FLAGS.encoder} encoder: pretrained vs scratch",
  )
  ax_psnr.ticklabel_format(axis="y", useOffset=False)
  ax_psnr.legend()
  gap = np.asarray(result["pretrained"]["loss"]) - np.asarray(result["scratch"]["loss"])
  window = min(10, len(gap))
  ax_loss.plot(
    result["pretrained"]["loss_steps"][window - 1 :],
    np.convolve(gap, np.ones(window) / window, "valid"),
    marker="." if window < 10 else None,
  )
  ax_loss.axhline(0.0, color="gray", linestyle="--")
  ax_loss.set(
    xlabel="training step",
    ylabel="L1 loss: pretrained - scratch",
    title=f"loss gap, mean of {window} logged steps",
  )
  settings = result["settings"]
  fig.suptitle(
    f"{settings['steps']} steps, batch {settings['batch_size']}, {settings['patch_size']}px LR "
    f"patches, lr {settings['learning_rate']:g} (encoder x{settings['encoder_lr_mult']:g}), "
    f"seed {settings['seed']}",
    fontsize=9,
  )
  ax_psnr.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # a line per twin, not orbax's per-save INFO lines
  os.makedirs(FLAGS.out, exist_ok=True)
  pretrained = run_twin("pretrained", FLAGS.weights)
  scratch = run_twin("scratch", None)
  result = {
    "bicubic_psnr_y": pretrained["bicubic_psnr_y"],
    "pretrained": pretrained,
    "scratch": scratch,
    "settings": {k: FLAGS[k].value for k in SETTINGS},
  }
  with open(os.path.join(FLAGS.out, "transfer_vs_scratch.json"), "w") as f:
    json.dump(result, f, indent=2)
  table = markdown(result)
  with open(os.path.join(FLAGS.out, "transfer_vs_scratch.md"), "w") as f:
    f.write(table)
  plot(result, os.path.join(FLAGS.out, "transfer_vs_scratch.png"))
  print(table)


if __name__ == "__main__":
  app.run(main)
