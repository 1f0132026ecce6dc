"""The Grain training pipeline: this process's (LR, HR) batches, deterministic given the seed.

  source (`data.source`, see sources: "folder" or "tfds", this process's shard)
  -> shuffle (a new order every epoch) -> repeat forever -> random HR crop of
  `patch_size * scale` pixels -> LR (`data.degradation`: "bicubic" = MATLAB `imresize(hr, 1 /
  scale)`; "realesrgan" = Real-ESRGAN's second-order degradation, see degradations; "paired" =
  the matching crop of the stored LR image; "self" = no HR exists: `data.train_dirs` hold the LR
  images themselves, the crop is the target and its bicubic downscale the input, as in
  sr_jax/adapt.py) -> random flips / 90-degree rotation of both -> batch.
The per-example randomness comes from Grain's `random_map`, i.e. from (seed, process, index), so
the batches do not depend on threads or workers, and the iterator state is just a position. The
same images give the same batches from a folder and from its TFDS copy (`sr_jax.data.prepare`).

With `data.usm`, "hr" is the unsharp-masked HR (Real-ESRGAN's target, `degradations.usm_sharpen`)
and "hr_unsharpened" the original (the GAN discriminator's real images).

LR images are clipped to [0, 1] and, with `data.quantize_lr`, rounded to 8-bit levels, as in the
standard test sets whose LR inputs are MATLAB-resized PNGs.

Every key is read from the `data` config block without fallback: its defaults are in
configs/default.py.
"""

import functools

from absl import logging
import grain
import ml_collections
import numpy as np

from sr_jax.data import examples, sources

DEGRADATIONS = ("bicubic", "realesrgan", "paired", "self")
# Grain's index shuffle costs ~5 ms per element on a handful of images (cycle walking) and
# ~20 us from ~1000 up, so small sets are shuffled as k copies (each image k times per pass).
_MIN_SHUFFLE_LENGTH = 1024


def _seeds(seed: int, process_index: int) -> tuple[int, int]:
  """Independent (shuffle, crop) seeds for this process, derived from the run seed."""
  shuffle_seed, crop_seed = np.random.SeedSequence([seed, process_index]).generate_state(2)
  return int(shuffle_seed), int(crop_seed)


def _check(
  data_config: ml_collections.ConfigDict,
  local_batch_size: int,
  process_index: int,
  process_count: int,
) -> None:
  """Raises ValueError for config values the pipeline cannot use."""
  scale, patch_size = int(data_config.scale), int(data_config.patch_size)
  if scale < 1 or patch_size < 1:
    raise ValueError(f"data.scale={scale} and data.patch_size={patch_size} must be >= 1")
  if local_batch_size < 1:
    raise ValueError(f"local batch size must be >= 1, got {local_batch_size}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
  if data_config.source not in sources.SOURCES:
    raise ValueError(f"data.source={data_config.source!r}; expected one of {sources.SOURCES}")
  if data_config.degradation not in DEGRADATIONS:
    raise ValueError(
      f"data.degradation={data_config.degradation!r}; expected one of {DEGRADATIONS}"
    )
  if data_config.degradation == "self" and data_config.source == "folder":
    if not tuple(data_config.train_dirs):
      raise ValueError(
        "data.degradation='self' needs data.train_dirs: the folders of low-resolution images "
        "to adapt to"
      )


def create_train_dataset(
  data_config: ml_collections.ConfigDict,
  seed: int,
  local_batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.IterDataset:
  """The infinite Grain dataset of this process's training batches.

  With `data.worker_count > 0`, absl flags must be parsed before iterating (Grain's workers read
  them): `absl.app.run` does it; elsewhere call `flags.FLAGS(sys.argv[:1])` first.

  Args:
    data_config: the `data` config block (configs/default.py).
    seed: run seed; the same seed gives the same batches.
    local_batch_size: examples per batch on this process.
    process_index: this process's index (jax.process_index()).
    process_count: number of processes (jax.process_count()).

  Returns:
    IterDataset of {"lr": float32 [b, p, p, 3], "hr": float32 [b, p * s, p * s, 3]} in [0, 1].

  Raises:
    ValueError: invalid config values, mismatched paired folders (pairs.PairingError), or no
      usable image for this process.
    FileNotFoundError: a folder of data.train_dirs, or the TFDS dataset, does not exist.
  """
  _check(data_config, local_batch_size, process_index, process_count)
  scale, patch_size = int(data_config.scale), int(data_config.patch_size)
  degradation = data_config.degradation
  paired = degradation == "paired"
  if not paired and tuple(data_config.train_lr_dirs):
    logging.warning(
      "data.train_lr_dirs is set but data.degradation=%r makes LR from HR: the LR folders "
      "are not used (data.degradation='paired' uses them)",
      degradation,
    )
  hr_side = patch_size * scale
  from_folder = data_config.source == "folder"
  make_source = sources.folder_dataset if from_folder else sources.tfds_dataset
  dataset, length = make_source(data_config, hr_side, paired, process_index, process_count)

  shuffle_seed, crop_seed = _seeds(seed, process_index)
  copies = -(-_MIN_SHUFFLE_LENGTH // length)
  if copies > 1:
    dataset = dataset.repeat(copies)
  dataset = dataset.shuffle(seed=shuffle_seed).repeat()  # a new order every pass
  # A plain dict: it pickles into Grain workers, and a missing key fails like a locked config.
  realesrgan = data_config.realesrgan.to_dict() if degradation == "realesrgan" else None
  dataset = dataset.random_map(
    functools.partial(
      examples.make_example,
      patch_size=patch_size,
      scale=scale,
      augment=bool(data_config.augment),
      quantize_lr=bool(data_config.quantize_lr),
      degradation=degradation,
      realesrgan=realesrgan,
      usm=bool(data_config.usm),
    ),
    seed=crop_seed,
  )
  read_options = grain.ReadOptions(
    num_threads=int(data_config.num_threads),
    prefetch_buffer_size=int(data_config.prefetch_buffer_size),
  )
  if from_folder:
    batched = dataset.batch(local_batch_size, drop_remainder=True)
    iter_dataset = batched.to_iter_dataset(read_options)
  else:  # records found unusable when read are None: batch after the iterator drops them
    iter_dataset = dataset.to_iter_dataset(read_options)
    iter_dataset = iter_dataset.batch(local_batch_size, drop_remainder=True)
  worker_count = int(data_config.worker_count)
  if worker_count > 0:
    options = grain.MultiprocessingOptions(num_workers=worker_count)
    iter_dataset = iter_dataset.mp_prefetch(options)
  return iter_dataset


def create_train_iterator(
  data_config: ml_collections.ConfigDict,
  seed: int,
  local_batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.DatasetIterator:
  """Iterator over this process's training batches (see `create_train_dataset`).

  Its `get_state()` / `set_state()` round-trip exactly; checkpoint it with orbax through
  `grain.checkpoint.CheckpointSave(it)` / `grain.checkpoint.CheckpointRestore(it)`.
  """
  dataset = create_train_dataset(data_config, seed, local_batch_size, process_index, process_count)
  return iter(dataset)
