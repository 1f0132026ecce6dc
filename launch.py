"""Entry point: python launch.py --config=configs/x.py --workdir=DIR [--mode=train|eval]
[--config.a.b=v]."""

import logging as std_logging

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from sr_jax import sharding, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Path to an ml-collections config file.", lock_config=True
)
flags.DEFINE_string(
  "workdir", None, "Directory for checkpoints, logs and results (resumes from it)."
)
flags.DEFINE_enum(
  "mode", "train", ["train", "eval"], "train (resumes automatically) or eval a checkpoint."
)
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host TPU/GPU).")
flags.DEFINE_integer(
  "cpu_devices",
  -1,
  "On CPU: JAX devices to train data-parallel over; -1 = one per core "
  "(as many as split the batch evenly), 0 = JAX's default (1). No effect on GPU/TPU.",
)
flags.mark_flags_as_required(["config", "workdir"])


def _hide_library_info_logs() -> None:
  """Orbax logs every save step at INFO; keep our INFO lines and its warnings."""
  std_logging.getLogger("absl").addFilter(
    lambda record: record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname
  )


def main(argv):
  del argv
  _hide_library_info_logs()
  if FLAGS.cpu_devices and not FLAGS.distributed:  # before JAX starts its backends
    sharding.use_every_cpu_core(
      None if FLAGS.cpu_devices < 0 else FLAGS.cpu_devices, batch_size=FLAGS.config.train.batch_size
    )
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.info(
    "JAX process %d/%d, %d local / %d global devices (%s)",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.default_backend(),
  )
  if FLAGS.mode == "train":
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  else:
    train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
