"""Is the input pipeline the bottleneck? Examples/s of the pipeline alone vs. the train step's
appetite.

  python benchmarks/input_pipeline.py [--batch_size=16 --patch_size=48 --scale=4]
      [--batches=20 --train_steps=3 --num_threads=2 --train_dir=embedded:train]

Prints one row per pipeline variant (folder with decoded images in memory + bicubic / realesrgan;
folder re-decoding whole files per example; TFDS sub-images stored as PNG or raw + bicubic; raw +
realesrgan), each timed over --batches batches after a warm-up batch, then the train step that
training runs (`sr_jax.train.create_trainer` of configs/default.py: EDSR-baseline, Adam, L1) on
this machine's devices, timed over --train_steps steps after compilation, as examples/s consumed.
The pipeline keeps up when its examples/s exceed the step's. --train_steps=0 skips the model.
"""

import os
import tempfile
import time

from absl import app, flags
import jax
import numpy as np
import tensorflow_datasets as tfds

from configs import default
from sr_jax import data, sharding, train

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 16, "Batch size (examples per step).")
flags.DEFINE_integer("patch_size", 48, "LR patch side.")
flags.DEFINE_integer("scale", 4, "SR factor.")
flags.DEFINE_integer("batches", 20, "Timed batches per pipeline variant.")
flags.DEFINE_integer("train_steps", 3, "Timed train steps (0 = skip the model).")
flags.DEFINE_integer("num_threads", 2, "data.num_threads.")
flags.DEFINE_string("train_dir", "embedded:train", "HR training folder.")
flags.DEFINE_integer("crop_size", 480, "Sub-image side of the TFDS variant (BasicSR uses 480).")

# (source, degradation, storage) of each pipeline variant.
VARIANTS = (
  ("folder", "bicubic", "memory"),
  ("folder", "realesrgan", "memory"),
  ("folder", "bicubic", "files"),
  ("tfds", "bicubic", "png"),
  ("tfds", "bicubic", "raw"),
  ("tfds", "realesrgan", "raw"),
)


def pipeline_examples_per_sec(data_config) -> float:
  iterator = data.create_train_iterator(data_config, seed=0, local_batch_size=FLAGS.batch_size)
  next(iterator)  # warm-up: start-up decoding, thread pool, first prefetch
  start = time.perf_counter()
  for _ in range(FLAGS.batches):
    next(iterator)
  return FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - start)


def train_step_examples_per_sec() -> tuple[float, float, str]:
  """(examples/s, s/step, devices) of the EDSR-baseline train step on a fixed batch."""
  config = default.get_config()
  config.data.scale, config.data.patch_size = FLAGS.scale, FLAGS.patch_size
  config.train.batch_size = FLAGS.batch_size
  mesh = sharding.create_mesh()
  trainer = train.create_trainer(config, mesh)
  rng = np.random.default_rng(0)
  side, local_batch = FLAGS.patch_size, sharding.local_batch_size(FLAGS.batch_size)
  hr_side = side * FLAGS.scale
  local = {
    "lr": rng.random((local_batch, side, side, 3), dtype=np.float32),
    "hr": rng.random((local_batch, hr_side, hr_side, 3), dtype=np.float32),
  }
  batch = sharding.global_batch(local, mesh)
  state, metrics = trainer.step(trainer.state, batch)  # compile
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(FLAGS.train_steps):
    state, metrics = trainer.step(state, batch)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / FLAGS.train_steps
  devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  return FLAGS.batch_size / seconds, seconds, devices


def variant_name(degradation: str, storage: str) -> str:
  storage_name = {
    "memory": "folder (decoded images in memory)",
    "files": "folder (whole files decoded per example)",
  }.get(storage, f"tfds ({FLAGS.crop_size} px sub-images, {storage})")
  return f"pipeline: {storage_name} + {degradation}"


def main(argv):
  del argv
  tfds.disable_progress_bar()
  base = default.get_config().data
  base.train_dirs = (FLAGS.train_dir,)
  base.scale, base.patch_size, base.num_threads = FLAGS.scale, FLAGS.patch_size, FLAGS.num_threads
  rows = []
  with tempfile.TemporaryDirectory() as tfds_dir:
    hr_dir = data.resolve_dirs((FLAGS.train_dir,))[0]
    start = time.perf_counter()
    for encoding in data.TFDS_ENCODINGS:
      counts = data.write_tfds_dataset(
        f"bench_{encoding}",
        tfds_dir,
        hr_dir,
        encoding=encoding,
        options=data.SubImageOptions(crop_size=FLAGS.crop_size),
      )
      print(
        f"prepared {counts['train']['examples']} {encoding} sub-images of "
        f"{counts['train']['files']} files in {time.perf_counter() - start:.1f} s"
      )
      start = time.perf_counter()
    for source, degradation, storage in VARIANTS:
      data_config = base.copy_and_resolve_references()
      data_config.source = source
      data_config.degradation = degradation
      data_config.tfds_name = f"bench_{storage}"
      data_config.tfds_data_dir = tfds_dir
      data_config.cache_max_mb = 0 if storage == "files" else 2048
      rows.append((variant_name(degradation, storage), pipeline_examples_per_sec(data_config)))
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
