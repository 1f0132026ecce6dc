"""Is the input pipeline the bottleneck? Examples/s of the pipeline alone vs. the train step's appetite.

  python benchmarks/input_pipeline.py [--batch_size=16 --patch_size=48 --scale=4]
      [--batches=20 --train_steps=3 --num_threads=2 --train_dir=embedded:train]

Prints one row per pipeline variant (folder with decoded images in memory + bicubic / realesrgan;
folder re-decoding whole files per example; TFDS sub-images stored as PNG or raw + bicubic; raw +
realesrgan), each timed over --batches batches after a warm-up batch,
then the jitted EDSR-baseline train step (configs/default.py model, Adam, L1) on this machine's
devices, timed over --train_steps steps after compilation, as examples/s consumed. The pipeline
keeps up when its examples/s exceed the step's. --train_steps=0 skips the model.
"""

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default
from sr_jax import data
from sr_jax.data import prepare

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 16, "Batch size (examples per step).")
flags.DEFINE_integer("patch_size", 48, "LR patch side.")
flags.DEFINE_integer("scale", 4, "SR factor.")
flags.DEFINE_integer("batches", 20, "Timed batches per pipeline variant.")
flags.DEFINE_integer("train_steps", 3, "Timed train steps (0 = skip the model).")
flags.DEFINE_integer("num_threads", 2, "data.num_threads.")
flags.DEFINE_string("train_dir", "embedded:train", "HR training folder.")
flags.DEFINE_integer("crop_size", 480, "Sub-image side of the TFDS variant (BasicSR uses 480).")


def pipeline_examples_per_sec(config) -> float:
  iterator = data.create_train_iterator(config, seed=0, local_batch_size=FLAGS.batch_size)
  next(iterator)  # warm-up: start-up decoding, thread pool, first prefetch
  start = time.perf_counter()
  for _ in range(FLAGS.batches):
    next(iterator)
  return FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - start)


def train_step_examples_per_sec() -> tuple[float, float, str]:
  """(examples/s, s/step, devices) of the EDSR-baseline step on a fixed batch."""
  import jax
  import numpy as np

  from sr_jax import (
    losses,
    optim,
    sharding,
    train,
    train_state,
  )

  config = default.get_config()
  config.data.scale, config.data.patch_size = FLAGS.scale, FLAGS.patch_size
  config.train.batch_size = FLAGS.batch_size
  mesh = sharding.create_mesh()
  schedule, tx = optim.from_config(config)
  loss, loss_state = losses.create_loss(config.loss)
  graphdef, state = train_state.create_train_state(config, tx, loss_state)
  state = sharding.replicate(state, mesh)
  step = jax.jit(
    train.make_train_step(graphdef, tx, schedule, config.train.ema_decay, loss), donate_argnums=(0,)
  )
  rng = np.random.default_rng(0)
  side = FLAGS.patch_size
  local = {
    "lr": rng.random((FLAGS.batch_size, side, side, 3), dtype=np.float32),
    "hr": rng.random(
      (FLAGS.batch_size, side * FLAGS.scale, side * FLAGS.scale, 3), dtype=np.float32
    ),
  }
  batch = sharding.global_batch(local, mesh)
  state, metrics = step(state, batch)  # compile
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(FLAGS.train_steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / FLAGS.train_steps
  devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  return FLAGS.batch_size / seconds, seconds, devices


def main(argv):
  del argv
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()
  base = data.default_config()
  base.update(
    {
      "train_dirs": (FLAGS.train_dir,),
      "scale": FLAGS.scale,
      "patch_size": FLAGS.patch_size,
      "num_threads": FLAGS.num_threads,
    }
  )
  rows = []
  with tempfile.TemporaryDirectory() as tfds_dir:
    hr_dir = data.resolve_dirs((FLAGS.train_dir,))[0]
    start = time.perf_counter()
    for encoding in prepare.ENCODINGS:
      counts = prepare.prepare(
        f"bench_{encoding}",
        tfds_dir,
        hr_dir,
        encoding=encoding,
        options=prepare.SubImageOptions(crop_size=FLAGS.crop_size),
      )
      print(
        f"prepared {counts['train']['examples']} {encoding} sub-images of "
        f"{counts['train']['files']} files in {time.perf_counter() - start:.1f} s"
      )
      start = time.perf_counter()
    variants = (
      ("folder", "bicubic", "memory"),
      ("folder", "realesrgan", "memory"),
      ("folder", "bicubic", "files"),
      ("tfds", "bicubic", "png"),
      ("tfds", "bicubic", "raw"),
      ("tfds", "realesrgan", "raw"),
    )
    for source, degradation, storage in variants:
      config = base.copy_and_resolve_references()
      config.update(
        {
          "source": source,
          "degradation": degradation,
          "tfds_name": f"bench_{storage}",
          "tfds_data_dir": tfds_dir,
          "cache_max_mb": 0 if storage == "files" else 2048,
        }
      )
      name = {
        "memory": "folder (decoded images in memory)",
        "files": "folder (whole files decoded per example)",
      }.get(storage, f"tfds ({FLAGS.crop_size} px sub-images, {storage})")
      rows.append((f"pipeline: {name} + {degradation}", pipeline_examples_per_sec(config)))
  print(
    f"\nbatch {FLAGS.batch_size}, LR {FLAGS.patch_size}x{FLAGS.patch_size}, x{FLAGS.scale}, "
    f"num_threads={FLAGS.num_threads}, {os.cpu_count()} CPU cores"
  )
  print("| what | examples/s |\n|---|---|")
  for name, rate in rows:
    print(f"| {name} | {rate:.1f} |")
  if FLAGS.train_steps > 0:
    rate, seconds, devices = train_step_examples_per_sec()
    print(f"| train step: EDSR-baseline on {devices} ({seconds:.2f} s/step) | {rate:.2f} |")


if __name__ == "__main__":
  app.run(main)
