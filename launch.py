"""Entry point: python launch.py --config=configs/x.py --workdir=DIR [--mode=train|eval]
[--config.a.b=v]. Without --config, the run's own WORKDIR/config.json (resume, eval)."""

import errno
import logging as std_logging
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from sr_jax import checkpointing, data, sharding, train, workdirs

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "ml-collections config file; default: WORKDIR/config.json", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (resumes).")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes) or eval a checkpoint.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.DEFINE_string("coordinator_address", None, "--distributed: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "--distributed: number of processes.")
flags.DEFINE_integer("process_id", None, "--distributed: this process's index.")
flags.DEFINE_integer(
  "cpu_devices",
  -1,
  "On CPU: JAX devices to train data-parallel over; -1 = one per core "
  "(as many as split the batch evenly), 0 = JAX's default (1). No effect on GPU/TPU.",
)
flags.DEFINE_bool("verbose", False, "Tracebacks for user errors too.")
flags.mark_flag_as_required("workdir")

# What a user can get wrong: reported in one line, exit code 2.
USER_ERRORS = (
  FileNotFoundError,
  ValueError,
  KeyError,
  data.ImageReadError,
  workdirs.WorkdirLockedError,
)
# A checkpoint that could not be written (e.g. a full disk): one line, exit code 1.
SAVE_ERRORS = (checkpointing.CheckpointSaveError,)
# The filesystem refused another write (full, over quota, read-only): one line, exit code 1.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
# Stopped on SIGTERM after saving a checkpoint: 128 + SIGTERM, what schedulers expect of a
# terminated job (so they restart it); the same command continues.
PREEMPTED_EXIT_CODE = 143


def _fail(error: BaseException | str, exit_code: int = 2) -> None:
  if isinstance(error, KeyError):  # ml_collections: "'key'\nDid you mean ...?"
    error = f"unknown config key {error.args[0]}"
  message = " ".join(str(error).split()) or type(error).__name__
  print(f"error: {message}", file=sys.stderr)
  sys.exit(exit_code)


def _parse_flags(argv):
  try:
    argv = FLAGS(argv)
    if FLAGS.config is not None:
      FLAGS.config.keys()  # a config file that failed to load raises on first use
  except OSError as e:  # ml_collections' message ends with the file and the OS error
    _fail(f"--config: {str(e).strip().splitlines()[-1].strip()}")
  except (flags.Error, KeyError, SyntaxError, AttributeError) as e:
    _fail(e)  # a bad flag, a config file that does not load, a misspelt key
  return argv


def _hide_library_info_logs(verbose: bool) -> None:
  """Orbax logs every save step at INFO; keep our INFO lines and its warnings. Its errors (with
  tracebacks, from every background thread of a failed save) come back as one CheckpointSaveError
  line: shown only with --verbose."""
  highest = std_logging.CRITICAL if verbose else std_logging.ERROR
  std_logging.getLogger("absl").addFilter(
    lambda record: (
      "/orbax/" not in record.pathname
      or std_logging.WARNING <= record.levelno < highest
      or record.levelno >= std_logging.CRITICAL
    )
  )


def _run(config, mode: str) -> None:
  if mode == "train":
    train.train_and_evaluate(config, FLAGS.workdir)
  else:
    train.evaluate_checkpoint(config, FLAGS.workdir)


def main(argv):
  del argv
  _hide_library_info_logs(FLAGS.verbose)
  config = FLAGS.config
  try:
    if config is None:
      config = workdirs.load_config(FLAGS.workdir)
  except FileNotFoundError as e:
    _fail(f"{e}; give --config=configs/<name>.py" if FLAGS.mode == "train" else e)
  if FLAGS.cpu_devices and not FLAGS.distributed:  # before JAX starts its backends
    count = None if FLAGS.cpu_devices < 0 else FLAGS.cpu_devices
    sharding.use_every_cpu_core(count, batch_size=config.train.batch_size)
  if FLAGS.distributed:  # without addresses: JAX's auto-detection (TPU pods, SLURM, Open MPI)
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  logging.info(
    "JAX process %d/%d, %d local / %d global devices (%s)",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.default_backend(),
  )
  try:
    _run(config if FLAGS.config is not None or FLAGS.mode == "train" else None, FLAGS.mode)
  except train.Preempted as e:
    print(e, file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_CODE)
  except (*USER_ERRORS, *SAVE_ERRORS, OSError) as e:
    storage = isinstance(e, SAVE_ERRORS) or getattr(e, "errno", None) in STORAGE_ERRNOS
    if FLAGS.verbose or not (storage or isinstance(e, USER_ERRORS)):
      raise
    _fail(e, 1 if storage else 2)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
