"""Training sources: this process's HR images (or LR/HR pairs) as a Grain MapDataset.

"folder": image files of `data.train_dirs` (paired with `data.train_lr_dirs` for degradation
  "paired") -> this process's shard `[process_index::process_count]` -> every file decoded and
  checked once at start (unreadable files, mismatched pairs and images smaller than the HR crop
  are skipped with one warning line each, then a one-line summary); decoded images stay in
  memory while they fit `data.cache_max_mb`, else each example decodes its file again.
"tfds": records of `data.tfds_name` / `data.tfds_split` read without TensorFlow (see
  tfds_source), this process's shard `[process_index::process_count]`, decoded lazily (a bad
  record reads as None, with one warning line when first met).
"""

from typing import Sequence

from absl import logging
import grain
import ml_collections
import numpy as np

from sr_jax.data import embedded, image_io, pairs, tfds_source

SOURCES = ("folder", "tfds")

Element = np.ndarray | dict[str, np.ndarray]  # uint8 HR, or {"lr", "hr"} uint8 for pairs


def read_pair(pair: pairs.ImagePair) -> dict[str, np.ndarray]:
  """{"lr", "hr"} uint8 images of a file pair (per-example reading of paired folders)."""
  return {"lr": image_io.read_image(pair.lr), "hr": image_io.read_image(pair.hr)}


def _load_item(
  item: str | pairs.ImagePair, min_side: int, scale: int
) -> tuple[Element | None, str]:
  """(element, "usable") or (None, reason) for an HR file or an LR/HR file pair."""
  if isinstance(item, pairs.ImagePair):
    lr, hr = image_io.read_image_or_none(item.lr), image_io.read_image_or_none(item.hr)
    if lr is None or hr is None:
      return None, "unreadable"
    problem = pairs.pair_problem(lr.shape, hr.shape, scale)
    if problem:
      logging.warning("skipping pair %r / %r: %s", item.hr, item.lr, problem)
      return None, "mismatched"
    element, image, name = {"lr": lr, "hr": hr}, hr, item.hr
  else:
    image = image_io.read_image_or_none(item)
    if image is None:
      return None, "unreadable"
    element, name = image, item
  if min(image.shape[:2]) < min_side:
    logging.warning(
      "skipping %r: %dx%d is smaller than the %dx%d HR crop (patch_size * scale)",
      name,
      image.shape[1],
      image.shape[0],
      min_side,
      min_side,
    )
    return None, "too_small"
  return element, "usable"


def _nbytes(element: Element) -> int:
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


def _folder_items(
  data_config: ml_collections.ConfigDict, scale: int, paired: bool
) -> tuple[list, list[str]]:
  """(HR files or LR/HR pairs of data.train_dirs, the resolved HR folders)."""
  cache_dir = data_config.cache_dir or None
  try:
    folders = embedded.resolve_dirs(data_config.train_dirs, cache_dir)
    if not paired:
      return image_io.list_images(folders), folders
    lr_dirs = tuple(data_config.train_lr_dirs)
    if not lr_dirs:
      raise ValueError(
        "data.degradation='paired' with data.source='folder' needs "
        "data.train_lr_dirs (one LR folder per train_dirs entry)"
      )
    lr_folders = embedded.resolve_dirs(lr_dirs, cache_dir)
    return pairs.pair_folder_lists(folders, lr_folders, scale), folders
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"data.train_dirs: {e}") from e


def folder_dataset(
  data_config: ml_collections.ConfigDict,
  hr_side: int,
  paired: bool,
  process_index: int,
  process_count: int,
) -> tuple[grain.MapDataset, int]:
  """This process's decoded images (or pairs) of data.train_dirs, and how many there are.

  Raises:
    ValueError: no usable image for this process, or mismatched paired folders.
    FileNotFoundError: a folder does not exist.
  """
  scale = int(data_config.scale)
  items, folders = _folder_items(data_config, scale, paired)
  shard = items[process_index::process_count]
  cache_bytes = int(data_config.cache_max_mb) * 2**20
  usable, images, counts = load_training_images(shard, hr_side, cache_bytes, scale)
  skipped = len(shard) - counts["usable"]
  in_memory = images is not None
  logging.info(
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
  read = read_pair if paired else image_io.read_image
  return grain.MapDataset.source(usable).map(read), len(usable)


def tfds_dataset(
  data_config: ml_collections.ConfigDict,
  hr_side: int,
  paired: bool,
  process_index: int,
  process_count: int,
) -> tuple[grain.MapDataset, int]:
  """This process's records of data.tfds_name (unusable ones read as None), and their count.

  Raises:
    ValueError: no data.tfds_name, a missing feature or split, or no record for this process.
    FileNotFoundError: the dataset is not prepared in data.tfds_data_dir.
  """
  name, split = data_config.tfds_name, data_config.tfds_split
  if not name:
    raise ValueError(
      "data.source='tfds' needs data.tfds_name, e.g. 'div2k/bicubic_x4' or a name "
      "written by `python -m sr_jax.data.prepare`"
    )
  images = tfds_source.TfdsImages(
    name,
    split,
    data_config.tfds_data_dir,
    paired,
    min_hr_side=hr_side,
    scale=int(data_config.scale),
    shard_index=process_index,
    shard_count=process_count,
  )
  logging.info(
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
