"""Training batches and evaluation images from folders of HR images.

Training pipeline (Grain, deterministic given the seed):
  image files of `train_dirs` -> this process's shard `[process_index::process_count]` ->
  decode and check once at start (unreadable files and images smaller than the HR crop are
  skipped with one warning line each, then a one-line summary) -> shuffle (a new order every
  epoch) -> repeat forever -> random HR crop of `patch_size * scale` pixels -> LR by MATLAB
  bicubic `imresize(hr, 1 / scale)` -> random flips / 90-degree rotation of both -> batch.
The per-example randomness comes from Grain's `random_map`, i.e. from (seed, process, index), so
the batches do not depend on threads or workers, and the iterator state is just a position.

LR images are clipped to [0, 1] and, with `quantize_lr` (default), rounded to 8-bit levels, as
in the standard benchmarks whose LR inputs are MATLAB-resized PNGs.
"""

import functools
import logging
import os
from typing import Any, NamedTuple, Sequence

from absl import flags
import grain
import ml_collections
import numpy as np

from sr_jax.data import embedded
from sr_jax.data import image_io
from sr_jax.data.imresize import imresize

log = logging.getLogger(__name__)


def default_config() -> ml_collections.ConfigDict:
  """Defaults of the `data` config block."""
  return ml_collections.ConfigDict({
      # Folders of HR images (recursive); "embedded:train" / "embedded:val" are the bundled photos.
      "train_dirs": ("embedded:train",),
      "scale": 4,
      "patch_size": 48,  # LR side; the HR crop is patch_size * scale
      "augment": True,  # random horizontal/vertical flips and 90-degree rotations
      "quantize_lr": True,  # round LR to 8-bit levels, like benchmark LR PNGs
      # Decoded training images stay in memory while their total fits this budget (MiB);
      # beyond it every example re-decodes its file.
      "cache_max_mb": 2048,
      "worker_count": 0,  # Grain worker processes; 0 = threads in this process
      "num_threads": 2,  # threads preparing batches (in each process)
      "prefetch_buffer_size": 4,  # batches prepared ahead
      "cache_dir": "",  # where the embedded photos are written; "" = $SR_JAX_CACHE or ~/.cache/sr_jax
  })


_DEFAULTS = default_config()
_MIN_SHUFFLE_LENGTH = 1024


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  """`config.key`, or its default when the caller's config does not define it."""
  return config.get(key, _DEFAULTS[key])


class EvalImage(NamedTuple):
  """One full evaluation image: `hr` mod-cropped to a multiple of the scale, `lr` made from it."""
  name: str
  lr: np.ndarray  # float32 [h, w, 3] in [0, 1]
  hr: np.ndarray  # float32 [h * scale, w * scale, 3] in [0, 1]


def to_float(img: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [0, 1]."""
  return img.astype(np.float32) / np.float32(255)


def make_lr(hr: np.ndarray, scale: int, quantize: bool = True) -> np.ndarray:
  """LR image of a float [0, 1] HR image: MATLAB bicubic downscaling by `scale`.

  Args:
    hr: float [h, w, c] (or [..., h, w, c]) in [0, 1]; h and w multiples of `scale`.
    scale: integer downscaling factor.
    quantize: round to 8-bit levels (as if saved to PNG and read back).

  Returns:
    float32 [h / scale, w / scale, c] in [0, 1].
  """
  lr = np.clip(imresize(hr, 1 / scale), 0.0, 1.0)
  if quantize:
    lr = np.rint(lr * 255.0) * np.float32(1 / 255)
  return lr.astype(np.float32, copy=False)


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
  """Crops the bottom/right so height and width are multiples of `scale`."""
  h, w = img.shape[0], img.shape[1]
  return img[:h - h % scale, :w - w % scale]


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A random size x size crop of an [h, w, ...] image with h, w >= size."""
  top = rng.integers(0, img.shape[0] - size + 1)
  left = rng.integers(0, img.shape[1] - size + 1)
  return img[top:top + size, left:left + size]


def augment_pair(lr: np.ndarray, hr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """The same random flip / 90-degree rotation (8 dihedral cases) applied to LR and HR."""
  hflip, vflip, transpose = rng.random(3) < 0.5

  def apply(img):
    if hflip:
      img = img[:, ::-1]
    if vflip:
      img = img[::-1]
    if transpose:  # with the flips, a transpose gives all 4 rotations
      img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)

  return apply(lr), apply(hr)


def make_example(image: np.ndarray, rng: np.random.Generator, *, patch_size: int, scale: int,
                 augment: bool, quantize_lr: bool) -> dict[str, np.ndarray]:
  """One training pair from a uint8 HR image: random HR crop, its LR, augmentation.

  Args:
    image: uint8 [h, w, 3] with h, w >= patch_size * scale.
    rng: randomness of this example.
    patch_size: LR side.
    scale: SR factor.
    augment: apply random flips / 90-degree rotations.
    quantize_lr: round LR to 8-bit levels.

  Returns:
    {"lr": float32 [p, p, 3], "hr": float32 [p * scale, p * scale, 3]}, both in [0, 1].
  """
  hr = to_float(random_crop(image, patch_size * scale, rng))
  lr = make_lr(hr, scale, quantize_lr)
  if augment:
    lr, hr = augment_pair(lr, hr, rng)
  return {"lr": lr, "hr": hr}


def _read_or_none(path: str) -> np.ndarray | None:
  """read_image, with a warning line instead of an exception."""
  try:
    return image_io.read_image(path)
  except image_io.ImageReadError as e:
    log.warning("%s; skipped", e)
    return None


def load_training_images(paths: Sequence[str], min_side: int, cache_bytes: int
                         ) -> tuple[list[str], list[np.ndarray] | None, dict[str, int]]:
  """Decodes every file once, skipping (with a warning) unreadable and too-small images.

  Args:
    paths: image files.
    min_side: smallest usable height and width (the HR crop side).
    cache_bytes: keep decoded images when their total size fits this budget.

  Returns:
    (usable_paths, images, counts): `images` are the decoded uint8 images of `usable_paths` if
    they fit the budget, else None; counts of "usable", "unreadable" and "too_small" files.
  """
  kept_paths, kept_images, cached = [], [], 0
  counts = {"usable": 0, "unreadable": 0, "too_small": 0}
  for path in paths:
    image = _read_or_none(path)
    if image is None:
      counts["unreadable"] += 1
      continue
    if min(image.shape[:2]) < min_side:
      log.warning("skipping %r: %dx%d is smaller than the %dx%d HR crop (patch_size * scale)",
                  path, image.shape[1], image.shape[0], min_side, min_side)
      counts["too_small"] += 1
      continue
    counts["usable"] += 1
    kept_paths.append(path)
    cached += image.nbytes
    if cached <= cache_bytes:
      kept_images.append(image)
    else:
      kept_images.clear()  # over budget: decode per example instead
  return kept_paths, (kept_images if cached <= cache_bytes else None), counts


def _seeds(seed: int, process_index: int) -> tuple[int, int]:
  """Independent (shuffle, crop) seeds for this process, derived from the run seed."""
  shuffle_seed, crop_seed = np.random.SeedSequence([seed, process_index]).generate_state(2)
  return int(shuffle_seed), int(crop_seed)


def create_train_dataset(data_config: ml_collections.ConfigDict, seed: int, local_batch_size: int,
                         process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """The infinite Grain dataset of this process's training batches.

  Args:
    data_config: the `data` config block (see `default_config`).
    seed: run seed; the same seed gives the same batches.
    local_batch_size: examples per batch on this process.
    process_index: this process's index (jax.process_index()).
    process_count: number of processes (jax.process_count()).

  Returns:
    IterDataset of {"lr": float32 [b, p, p, 3], "hr": float32 [b, p * s, p * s, 3]} in [0, 1].

  Raises:
    ValueError: invalid config values, or no usable image for this process.
    FileNotFoundError: a folder of data.train_dirs does not exist.
  """
  scale, patch_size = int(data_config.scale), int(data_config.patch_size)
  if scale < 1 or patch_size < 1:
    raise ValueError(f"data.scale={scale} and data.patch_size={patch_size} must be >= 1")
  if local_batch_size < 1:
    raise ValueError(f"local batch size must be >= 1, got {local_batch_size}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
  cache_dir = _get(data_config, "cache_dir") or None
  try:
    folders = embedded.resolve_dirs(data_config.train_dirs, cache_dir)
    paths = image_io.list_images(folders)
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"data.train_dirs: {e}") from e
  shard = paths[process_index::process_count]
  hr_side = patch_size * scale
  usable, images, counts = load_training_images(
      shard, hr_side, int(_get(data_config, "cache_max_mb")) * 2**20)
  skipped = counts["unreadable"] + counts["too_small"]
  in_memory = images is not None
  log.info("data.train_dirs: %d image files found in %s; process %d/%d uses %d, skipped %d "
           "(%d unreadable, %d smaller than the %dx%d HR crop); decoded images %s",
           len(paths), folders, process_index, process_count, counts["usable"], skipped,
           counts["unreadable"], counts["too_small"], hr_side, hr_side,
           "kept in memory" if in_memory else "re-read per example")
  if not usable:
    raise ValueError(f"data.train_dirs={tuple(data_config.train_dirs)}: no usable training image "
                     f"for process {process_index} of {process_count} ({len(paths)} files found, "
                     f"{len(shard)} in this shard, {skipped} skipped; see the warnings above)")

  shuffle_seed, crop_seed = _seeds(seed, process_index)
  if in_memory:
    dataset = grain.MapDataset.source(images)
  else:  # a file changed on disk since the start would raise ImageReadError here
    dataset = grain.MapDataset.source(usable).map(image_io.read_image)
  # Grain's index shuffle costs ~5 ms per element on a handful of images (cycle walking) and
  # ~20 us from ~1000 up, so small sets are shuffled as k copies (each image k times per pass).
  copies = -(-_MIN_SHUFFLE_LENGTH // len(usable))
  if copies > 1:
    dataset = dataset.repeat(copies)
  dataset = dataset.shuffle(seed=shuffle_seed).repeat()  # a new order every pass
  dataset = dataset.random_map(
      functools.partial(make_example, patch_size=patch_size, scale=scale,
                        augment=bool(_get(data_config, "augment")),
                        quantize_lr=bool(_get(data_config, "quantize_lr"))),
      seed=crop_seed)
  dataset = dataset.batch(local_batch_size, drop_remainder=True)
  read_options = grain.ReadOptions(
      num_threads=int(_get(data_config, "num_threads")),
      prefetch_buffer_size=int(_get(data_config, "prefetch_buffer_size")))
  iter_dataset = dataset.to_iter_dataset(read_options)
  worker_count = int(_get(data_config, "worker_count"))
  if worker_count > 0:
    # Grain's workers read absl flags; outside `absl.app.run` they are unparsed and it raises.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter_dataset


def create_train_iterator(data_config: ml_collections.ConfigDict, seed: int, local_batch_size: int,
                          process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """Iterator over this process's training batches (see `create_train_dataset`).

  Its `get_state()` / `set_state()` round-trip exactly; checkpoint it with orbax through
  `grain.checkpoint.CheckpointSave(it)` / `grain.checkpoint.CheckpointRestore(it)`.
  """
  return iter(create_train_dataset(data_config, seed, local_batch_size, process_index,
                                   process_count))


def load_eval_folder(path: str, scale: int, quantize_lr: bool = True) -> list[EvalImage]:
  """Full evaluation images of a folder (recursive), with their LR made by MATLAB bicubic.

  Args:
    path: folder of HR images.
    scale: SR factor; HR is mod-cropped to a multiple of it.
    quantize_lr: round LR to 8-bit levels (benchmark convention).

  Returns:
    EvalImage per readable image, sorted by file path; `name` is the path relative to the
    folder without extension. Unreadable or too small images are skipped with a warning.

  Raises:
    FileNotFoundError: the folder does not exist.
    ValueError: the folder holds no usable image.
  """
  paths = image_io.list_images(path)
  images = []
  for file_path in paths:
    image = _read_or_none(file_path)
    if image is None:
      continue
    hr = mod_crop(image, scale)
    if min(hr.shape[:2]) < scale:
      log.warning("skipping %r: %dx%d is smaller than the scale %d", file_path, image.shape[1],
                  image.shape[0], scale)
      continue
    hr = to_float(hr)
    name = os.path.splitext(os.path.relpath(file_path, path))[0]
    images.append(EvalImage(name, make_lr(hr, scale, quantize_lr), hr))
  log.info("eval folder %s: %d images, %d skipped", path, len(images), len(paths) - len(images))
  if not images:
    raise ValueError(f"eval folder {path!r} has no usable image ({len(paths)} image files found)")
  return images

