"""Training batches and evaluation images from folders of HR images or TFDS datasets.

Training pipeline (Grain, deterministic given the seed):
  source (`data.source`):
    "folder": image files of `train_dirs` (paired with `train_lr_dirs` for degradation "paired")
      -> this process's shard `[process_index::process_count]` -> decode and check once at start
      (unreadable files, mismatched pairs and images smaller than the HR crop are skipped with
      one warning line each, then a one-line summary);
    "tfds": records of `tfds_name` / `tfds_split` read without TensorFlow (see tfds_source),
      this process's shard `[process_index::process_count]`, decoded lazily (a bad record is
      skipped with one warning line when first met);
  -> shuffle (a new order every epoch) -> repeat forever -> random HR crop of
  `patch_size * scale` pixels -> LR (`data.degradation`: "bicubic" = MATLAB `imresize(hr, 1 /
  scale)`; "realesrgan" = Real-ESRGAN's second-order degradation, see degradations; "paired" =
  the matching crop of the stored LR image) -> random flips / 90-degree rotation of both -> batch.
The per-example randomness comes from Grain's `random_map`, i.e. from (seed, process, index), so
the batches do not depend on threads or workers, and the iterator state is just a position. The
same images give the same batches from a folder and from its TFDS copy (`sr_jax.data.prepare`).

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

from sr_jax.data import degradations, embedded, image_io, pairs, tfds_source
from sr_jax.data.imresize import imresize

log = logging.getLogger(__name__)


def default_config() -> ml_collections.ConfigDict:
  """Defaults of the `data` config block."""
  return ml_collections.ConfigDict(
    {
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
      "source": "folder",  # folder: train_dirs | tfds: an ArrayRecord TFDS dataset (tfds_name)
      # Paired LR folders, one per train_dirs entry, for degradation "paired" with source "folder".
      "train_lr_dirs": (),
      # TFDS dataset, e.g. "div2k/bicubic_x4" or a name written by `python -m sr_jax.data.prepare`.
      "tfds_name": "",
      "tfds_data_dir": "",  # "" = TFDS default (~/tensorflow_datasets or $TFDS_DATA_DIR)
      "tfds_split": "train",
      # How LR is made: bicubic (MATLAB imresize) | realesrgan (second-order degradation, options
      # below) | paired (stored LR images: train_lr_dirs, or the TFDS dataset's "lr" feature).
      "degradation": "bicubic",
      "realesrgan": degradations.default_options(),
    }
  )


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
  return img[: h - h % scale, : w - w % scale]


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A random size x size crop of an [h, w, ...] image with h, w >= size."""
  top = rng.integers(0, img.shape[0] - size + 1)
  left = rng.integers(0, img.shape[1] - size + 1)
  return img[top : top + size, left : left + size]


def augment_pair(
  lr: np.ndarray, hr: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
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


def random_paired_crop(
  lr: np.ndarray, hr: np.ndarray, patch_size: int, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """A random patch_size LR crop and the HR crop covering the same area."""
  top = rng.integers(0, lr.shape[0] - patch_size + 1)
  left = rng.integers(0, lr.shape[1] - patch_size + 1)
  hr_top, hr_left, hr_size = top * scale, left * scale, patch_size * scale
  return (
    lr[top : top + patch_size, left : left + patch_size],
    hr[hr_top : hr_top + hr_size, hr_left : hr_left + hr_size],
  )


def make_example(
  image: np.ndarray | dict[str, np.ndarray],
  rng: np.random.Generator,
  *,
  patch_size: int,
  scale: int,
  augment: bool,
  quantize_lr: bool,
  degradation: str = "bicubic",
  realesrgan: dict | None = None,
) -> dict[str, np.ndarray]:
  """One training pair: random crop, its LR, augmentation.

  Args:
    image: uint8 HR [h, w, 3] with h, w >= patch_size * scale; or, for degradation "paired",
      {"lr": uint8 [h, w, 3], "hr": uint8 [>= h * scale, >= w * scale, 3]} with h, w >= patch_size.
    rng: randomness of this example.
    patch_size: LR side.
    scale: SR factor.
    augment: apply random flips / 90-degree rotations.
    quantize_lr: round LR to 8-bit levels (bicubic; the other degradations always do).
    degradation: "bicubic", "realesrgan" or "paired".
    realesrgan: options of the Real-ESRGAN degradation (see degradations.default_options).

  Returns:
    {"lr": float32 [p, p, 3], "hr": float32 [p * scale, p * scale, 3]}, both in [0, 1].
  """
  if degradation == "paired":
    lr, hr = random_paired_crop(image["lr"], image["hr"], patch_size, scale, rng)
    lr, hr = to_float(lr), to_float(hr)
  else:
    hr = to_float(random_crop(image, patch_size * scale, rng))
    if degradation == "realesrgan":
      lr = degradations.realesrgan_degrade(hr, scale, rng, realesrgan)
    else:
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


def read_pair(pair: pairs.ImagePair) -> dict[str, np.ndarray]:
  """{"lr", "hr"} uint8 images of a file pair (per-example reading of paired folders)."""
  return {"lr": image_io.read_image(pair.lr), "hr": image_io.read_image(pair.hr)}


def _load_item(
  item: str | pairs.ImagePair, min_side: int, scale: int
) -> tuple[np.ndarray | dict[str, np.ndarray] | None, str]:
  """(element, "usable") or (None, reason) for an HR file or an LR/HR file pair."""
  if isinstance(item, pairs.ImagePair):
    lr, hr = _read_or_none(item.lr), _read_or_none(item.hr)
    if lr is None or hr is None:
      return None, "unreadable"
    problem = pairs.pair_problem(lr.shape, hr.shape, scale)
    if problem:
      log.warning("skipping pair %r / %r: %s", item.hr, item.lr, problem)
      return None, "mismatched"
    element, image, name = {"lr": lr, "hr": hr}, hr, item.hr
  else:
    image = _read_or_none(item)
    if image is None:
      return None, "unreadable"
    element, name = image, item
  if min(image.shape[:2]) < min_side:
    log.warning(
      "skipping %r: %dx%d is smaller than the %dx%d HR crop (patch_size * scale)",
      name,
      image.shape[1],
      image.shape[0],
      min_side,
      min_side,
    )
    return None, "too_small"
  return element, "usable"


def _nbytes(element: np.ndarray | dict[str, np.ndarray]) -> int:
  return sum(a.nbytes for a in element.values()) if isinstance(element, dict) else element.nbytes


def load_training_images(
  paths: Sequence[str | pairs.ImagePair], min_side: int, cache_bytes: int, scale: int = 1
) -> tuple[list, list | None, dict[str, int]]:
  """Decodes every file (or LR/HR pair) once, skipping unusable ones with a warning line each.

  Args:
    paths: image files, or pairs.ImagePair for paired folders.
    min_side: smallest usable HR height and width (the HR crop side).
    cache_bytes: keep decoded images when their total size fits this budget.
    scale: SR factor, to check pairs (HR must be scale x LR).

  Returns:
    (usable_items, images, counts): `images` are the decoded elements (uint8 HR, or {"lr", "hr"})
    of `usable_items` if they fit the budget, else None; counts of "usable", "unreadable",
    "too_small" and "mismatched" items.
  """
  kept_items, kept_images, cached = [], [], 0
  counts = {"usable": 0, "unreadable": 0, "too_small": 0, "mismatched": 0}
  for item in paths:
    element, status = _load_item(item, min_side, scale)
    counts[status] += 1
    if element is None:
      continue
    kept_items.append(item)
    cached += _nbytes(element)
    if cached <= cache_bytes:
      kept_images.append(element)
    else:
      kept_images.clear()  # over budget: decode per example instead
  return kept_items, (kept_images if cached <= cache_bytes else None), counts


def _as_dict(options: Any) -> dict:
  """A ConfigDict block (or mapping) as a plain dict, for pickling into Grain workers."""
  return options.to_dict() if hasattr(options, "to_dict") else dict(options)


def _seeds(seed: int, process_index: int) -> tuple[int, int]:
  """Independent (shuffle, crop) seeds for this process, derived from the run seed."""
  shuffle_seed, crop_seed = np.random.SeedSequence([seed, process_index]).generate_state(2)
  return int(shuffle_seed), int(crop_seed)


_SOURCES = ("folder", "tfds")
_DEGRADATIONS = ("bicubic", "realesrgan", "paired")


def _folder_source(
  data_config: ml_collections.ConfigDict,
  scale: int,
  hr_side: int,
  paired: bool,
  process_index: int,
  process_count: int,
) -> tuple[grain.MapDataset, int]:
  """This process's decoded images (or pairs) of data.train_dirs, and how many there are."""
  cache_dir = _get(data_config, "cache_dir") or None
  try:
    folders = embedded.resolve_dirs(data_config.train_dirs, cache_dir)
    if paired:
      lr_dirs = tuple(_get(data_config, "train_lr_dirs"))
      if not lr_dirs:
        raise ValueError(
          "data.degradation='paired' with data.source='folder' needs "
          "data.train_lr_dirs (one LR folder per train_dirs entry)"
        )
      items = pairs.pair_folder_lists(folders, embedded.resolve_dirs(lr_dirs, cache_dir), scale)
    else:
      items = image_io.list_images(folders)
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"data.train_dirs: {e}") from e
  shard = items[process_index::process_count]
  usable, images, counts = load_training_images(
    shard, hr_side, int(_get(data_config, "cache_max_mb")) * 2**20, scale
  )
  skipped = len(shard) - counts["usable"]
  in_memory = images is not None
  log.info(
    "data.train_dirs: %d %s found in %s; process %d/%d uses %d, skipped %d "
    "(%d unreadable, %d smaller than the %dx%d HR crop%s); decoded images %s",
    len(items),
    "image pairs" if paired else "image files",
    folders,
    process_index,
    process_count,
    counts["usable"],
    skipped,
    counts["unreadable"],
    counts["too_small"],
    hr_side,
    hr_side,
    f", {counts['mismatched']} mismatched pairs" if paired else "",
    "kept in memory" if in_memory else "re-read per example",
  )
  if not usable:
    raise ValueError(
      f"data.train_dirs={tuple(data_config.train_dirs)}: no usable training image "
      f"for process {process_index} of {process_count} ({len(items)} files found, "
      f"{len(shard)} in this shard, {skipped} skipped; see the warnings above)"
    )
  if in_memory:
    return grain.MapDataset.source(images), len(usable)
  # A file changed on disk since the start would raise ImageReadError here.
  return grain.MapDataset.source(usable).map(read_pair if paired else image_io.read_image), len(
    usable
  )


def _tfds_source(
  data_config: ml_collections.ConfigDict,
  scale: int,
  hr_side: int,
  paired: bool,
  process_index: int,
  process_count: int,
) -> tuple[grain.MapDataset, int]:
  """This process's records of data.tfds_name (unusable ones read as None), and their count."""
  name = _get(data_config, "tfds_name")
  if not name:
    raise ValueError(
      "data.source='tfds' needs data.tfds_name, e.g. 'div2k/bicubic_x4' or a name "
      "written by `python -m sr_jax.data.prepare`"
    )
  split = _get(data_config, "tfds_split")
  images = tfds_source.TfdsImages(
    name,
    split,
    _get(data_config, "tfds_data_dir"),
    paired,
    min_hr_side=hr_side,
    scale=scale,
    shard_index=process_index,
    shard_count=process_count,
  )
  log.info(
    "data.tfds_name: %s[%s] has %d records; process %d/%d uses records %d::%d (%d); "
    "records are checked when read (a bad one is skipped with a warning)",
    name,
    split,
    images.num_records,
    process_index,
    process_count,
    process_index,
    process_count,
    len(images),
  )
  if not len(images):
    raise ValueError(
      f"data.tfds_name={name!r}[{split}]: no record for process {process_index} of "
      f"{process_count} ({images.num_records} records)"
    )
  return grain.MapDataset.source(images), len(images)


def create_train_dataset(
  data_config: ml_collections.ConfigDict,
  seed: int,
  local_batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.IterDataset:
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
    ValueError: invalid config values, mismatched paired folders (pairs.PairingError), or no
      usable image for this process.
    FileNotFoundError: a folder of data.train_dirs, or the TFDS dataset, does not exist.
  """
  scale, patch_size = int(data_config.scale), int(data_config.patch_size)
  if scale < 1 or patch_size < 1:
    raise ValueError(f"data.scale={scale} and data.patch_size={patch_size} must be >= 1")
  if local_batch_size < 1:
    raise ValueError(f"local batch size must be >= 1, got {local_batch_size}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
  source, degradation = _get(data_config, "source"), _get(data_config, "degradation")
  if source not in _SOURCES:
    raise ValueError(f"data.source={source!r}; expected one of {_SOURCES}")
  if degradation not in _DEGRADATIONS:
    raise ValueError(f"data.degradation={degradation!r}; expected one of {_DEGRADATIONS}")
  paired = degradation == "paired"
  if not paired and tuple(_get(data_config, "train_lr_dirs")):
    log.warning(
      "data.train_lr_dirs is set but data.degradation=%r makes LR from HR: the LR folders "
      "are not used (data.degradation='paired' uses them)",
      degradation,
    )
  hr_side = patch_size * scale
  make_source = _folder_source if source == "folder" else _tfds_source
  dataset, length = make_source(data_config, scale, hr_side, paired, process_index, process_count)

  shuffle_seed, crop_seed = _seeds(seed, process_index)
  # Grain's index shuffle costs ~5 ms per element on a handful of images (cycle walking) and
  # ~20 us from ~1000 up, so small sets are shuffled as k copies (each image k times per pass).
  copies = -(-_MIN_SHUFFLE_LENGTH // length)
  if copies > 1:
    dataset = dataset.repeat(copies)
  dataset = dataset.shuffle(seed=shuffle_seed).repeat()  # a new order every pass
  realesrgan = _get(data_config, "realesrgan")
  dataset = dataset.random_map(
    functools.partial(
      make_example,
      patch_size=patch_size,
      scale=scale,
      augment=bool(_get(data_config, "augment")),
      quantize_lr=bool(_get(data_config, "quantize_lr")),
      degradation=degradation,
      realesrgan=_as_dict(realesrgan) if degradation == "realesrgan" else None,
    ),
    seed=crop_seed,
  )
  read_options = grain.ReadOptions(
    num_threads=int(_get(data_config, "num_threads")),
    prefetch_buffer_size=int(_get(data_config, "prefetch_buffer_size")),
  )
  if source == "folder":
    iter_dataset = dataset.batch(local_batch_size, drop_remainder=True).to_iter_dataset(
      read_options
    )
  else:  # records found unusable when read are None: batch after the iterator drops them
    iter_dataset = dataset.to_iter_dataset(read_options).batch(
      local_batch_size, drop_remainder=True
    )
  worker_count = int(_get(data_config, "worker_count"))
  if worker_count > 0:
    # Grain's workers read absl flags; outside `absl.app.run` they are unparsed and it raises.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
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
  return iter(
    create_train_dataset(data_config, seed, local_batch_size, process_index, process_count)
  )


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
      log.warning(
        "skipping %r: %dx%d is smaller than the scale %d",
        file_path,
        image.shape[1],
        image.shape[0],
        scale,
      )
      continue
    hr = to_float(hr)
    name = os.path.splitext(os.path.relpath(file_path, path))[0]
    images.append(EvalImage(name, make_lr(hr, scale, quantize_lr), hr))
  log.info("eval folder %s: %d images, %d skipped", path, len(images), len(paths) - len(images))
  if not images:
    raise ValueError(f"eval folder {path!r} has no usable image ({len(paths)} image files found)")
  return images
