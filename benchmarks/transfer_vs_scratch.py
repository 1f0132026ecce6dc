"""What do pretrained ImageNet weights buy? Trains the U-Net SR twins (pretrained vs scratch encoder)
with the same budget (steps, batch, seed, data) and evaluates both on a held-out folder during training.

  python benchmarks/transfer_vs_scratch.py --eval_dir=DIR --out=OUTDIR [--steps=N] [--train_dir=DIR]

Writes OUTDIR/transfer_vs_scratch.json
  {"bicubic_psnr_y": f, "pretrained": {"steps": [..], "psnr_y": [..]}, "scratch": {"steps": [..], "psnr_y": [..]}}
plus transfer_vs_scratch.md (table) and transfer_vs_scratch.png (PSNR-Y vs steps, bicubic line).
The defaults fit 2 CPU cores in under 20 minutes; scale --steps/--batch_size/--patch_size up on GPU/TPU.
"""

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import unet_effnetlite0_x4
from sr_jax import (
  evaluate,
  train,
  train_logging,
)

FLAGS = flags.FLAGS
flags.DEFINE_string("eval_dir", None, "Folder of held-out HR images.", required=True)
flags.DEFINE_string("out", None, "Output folder (also holds both runs' workdirs).", required=True)
flags.DEFINE_string("train_dir", "embedded:train", "Folder of HR training images.")
flags.DEFINE_integer("steps", 240, "Training steps for each twin.")
flags.DEFINE_integer("eval_every", 60, "Evaluate every this many steps.")
flags.DEFINE_integer("batch_size", 8, "Global batch size.")
flags.DEFINE_integer("patch_size", 32, "LR patch side.")
flags.DEFINE_integer("scale", 4, "Upscaling factor.")
flags.DEFINE_string("encoder", "efficientnet_lite0", "Backbone name (create_backbone).")
flags.DEFINE_string(
  "weights", "efficientnet_lite0", "Pretrained encoder weights: path or registry name."
)
flags.DEFINE_float("learning_rate", 5e-4, "Peak learning rate (decoder).")
flags.DEFINE_float("encoder_lr_mult", 1.0, "Encoder learning-rate factor (both twins).")
flags.DEFINE_integer("freeze_encoder_steps", 0, "Encoder frozen for this many steps (both twins).")
flags.DEFINE_integer("seed", 0, "Seed shared by both twins.")


def twin_config(weights):
  config = unet_effnetlite0_x4.get_config()
  config.seed = FLAGS.seed
  config.model.encoder.name = FLAGS.encoder
  config.model.encoder.weights = weights
  config.data.train_dirs = (FLAGS.train_dir,)
  config.data.scale = FLAGS.scale
  config.data.patch_size = FLAGS.patch_size
  config.optim.learning_rate = FLAGS.learning_rate
  config.optim.warmup_steps = max(FLAGS.steps // 20, 1)
  config.optim.encoder_lr_mult = FLAGS.encoder_lr_mult
  config.train.freeze_encoder_steps = FLAGS.freeze_encoder_steps
  config.train.batch_size = FLAGS.batch_size
  config.train.steps = FLAGS.steps
  config.train.log_every_steps = max(FLAGS.eval_every // 4, 1)
  config.train.eval_every_steps = FLAGS.eval_every
  config.train.checkpoint_every_steps = FLAGS.eval_every
  config.eval.dirs = (FLAGS.eval_dir,)
  return config


def run_twin(name, weights):
  """Trains one twin (resuming if its workdir has checkpoints); returns its eval curve."""
  workdir = os.path.join(FLAGS.out, name)
  start = time.perf_counter()
  train.train_and_evaluate(twin_config(weights), workdir)
  dataset = evaluate.dataset_name(FLAGS.eval_dir)
  rows = [
    r
    for r in train_logging.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    if f"eval/{dataset}/psnr_y" in r
  ]
  return {
    "steps": [r["step"] for r in rows],
    "psnr_y": [r[f"eval/{dataset}/psnr_y"] for r in rows],
    "ssim_y": [r[f"eval/{dataset}/ssim_y"] for r in rows],
    "bicubic_psnr_y": rows[-1][f"eval/{dataset}/bicubic_psnr_y"],
    "seconds": time.perf_counter() - start,
  }


def markdown(result) -> str:
  lines = ["| step | pretrained PSNR-Y | scratch PSNR-Y | gain (dB) |", "|---|---|---|---|"]
  for step, p, s in zip(
    result["pretrained"]["steps"], result["pretrained"]["psnr_y"], result["scratch"]["psnr_y"]
  ):
    lines.append(f"| {step} | {p:.2f} | {s:.2f} | {p - s:+.2f} |")
  lines.append(
    f"\nBicubic PSNR-Y: {result['bicubic_psnr_y']:.2f} dB. Settings: {json.dumps(result['settings'])}"
  )
  return "\n".join(lines) + "\n"


def plot(result, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for name in ("pretrained", "scratch"):
    ax.plot(result[name]["steps"], result[name]["psnr_y"], marker="o", label=f"{name} encoder")
  ax.axhline(result["bicubic_psnr_y"], color="gray", linestyle="--", label="bicubic")
  ax.set_xlabel("training step")
  ax.set_ylabel("held-out PSNR-Y (dB)")
  ax.set_title(f"U-Net x{FLAGS.scale}, {FLAGS.encoder} encoder: pretrained vs scratch")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  os.makedirs(FLAGS.out, exist_ok=True)
  pretrained = run_twin("pretrained", FLAGS.weights)
  scratch = run_twin("scratch", None)
  result = {
    "bicubic_psnr_y": pretrained["bicubic_psnr_y"],
    "pretrained": pretrained,
    "scratch": scratch,
    "settings": {
      k: FLAGS[k].value
      for k in (
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
      )
    },
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
