"""TFDS datasets as a training source, read without TensorFlow (ArrayRecord + `tfds.data_source`).

A TFDS dataset prepared in the ArrayRecord format is random-access and TF-free to read, so it
plugs into the same Grain pipeline as image folders (`data.source="tfds"`):
  - datasets written by `python -m sr_jax.data.prepare` (any HR folder, optionally with paired LR
    images and cut into sub-images); features "hr" (and "lr"), "name";
  - the catalog's `div2k` configs (`div2k/bicubic_x4`, `div2k/unknown_x4`,
    `div2k/realistic_mild_x4`, ...; features "lr", "hr"), once prepared as ArrayRecord. The
    catalog builder walks its files with `tf.io.gfile`, so *preparing* it needs TensorFlow (on
    any machine; then copy the folder); reading it does not. See sr_jax/data/README.md.

Records are read lazily (nothing is decoded at start). A record that fails to decode, or whose
HR image is smaller than the HR crop, is skipped with one warning line naming the dataset, split,
record number and (when stored) the source file name.
"""

import threading
from typing import Any

from absl import logging
import numpy as np

from sr_jax.data import image_io, pairs


def _to_rgb(image: np.ndarray) -> np.ndarray:
  """A decoded TFDS image ([h, w, c] uint8 with c = 1, 3 or 4) as uint8 [h, w, 3]."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[:, :, None]
  if image.dtype == np.uint16:
    image = np.rint(image * (255.0 / 65535.0)).astype(np.uint8)
  if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.dtype != np.uint8:
    raise ValueError(f"not an 8-bit gray/RGB/RGBA image: {image.dtype} {image.shape}")
  if image.shape[2] == 1:
    return np.repeat(image, 3, axis=2)
  if image.shape[2] == 4:  # as image_io.read_image does
    return image_io.composite_on_white(image[:, :, :3], image[:, :, 3])
  return image


def open_builder(name: str, data_dir: str = ""):
  """The prepared TFDS builder `name` ("div2k/bicubic_x4", "my_set", "my_set:1.0.0") in data_dir.

  Raises:
    FileNotFoundError: the dataset is not prepared in data_dir (the message says how).
    ValueError: it is prepared in another file format than ArrayRecord.
  """
  import tensorflow_datasets as tfds  # slow import, only for this source

  where = data_dir or "the TFDS default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
  how = (
    "prepare it with `python -m sr_jax.data.prepare` or, for the catalog's div2k, with "
    "`tfds build div2k/CONFIG --file_format=array_record` on a machine with TensorFlow "
    "(see sr_jax/data/README.md)"
  )
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise FileNotFoundError(
      f"TFDS dataset {name!r} not found in {where}: {str(e).splitlines()[0]}; {how}"
    ) from e
  if not builder.is_prepared():
    raise FileNotFoundError(
      f"TFDS dataset {name!r} is not prepared in {where} (nothing at {builder.data_dir}); {how}"
    )
  file_format = builder.info.file_format
  if file_format is not None and "array_record" not in str(file_format).lower():
    raise ValueError(
      f"TFDS dataset {name!r} in {builder.data_dir} is stored as {file_format}, which "
      "needs TensorFlow to read; prepare it again with file_format=array_record"
    )
  return builder


class TfdsImages:
  """Random access to this process's records of one split, as pipeline elements.

  Element i is record `shard_index + i * shard_count` of the split: uint8 [h, w, 3] HR, or
  {"lr": uint8, "hr": uint8} when `paired`. A record that cannot be decoded, whose HR side is
  below `min_hr_side`, or (paired) whose HR is not `scale` x its LR, reads as None, with one
  warning line the first time. When every record of the shard has proven unusable, reading
  raises ValueError (a pipeline that skips them would otherwise wait forever).
  """

  def __init__(
    self,
    name: str,
    split: str = "train",
    data_dir: str = "",
    paired: bool = False,
    min_hr_side: int = 1,
    scale: int = 1,
    shard_index: int = 0,
    shard_count: int = 1,
  ):
    builder = open_builder(name, data_dir)
    features = set(builder.info.features.keys())
    needed = {"hr", "lr"} if paired else {"hr"}
    if not needed <= features:
      user = "data.degradation='paired' needs" if paired else "training needs"
      raise ValueError(
        f"TFDS dataset {name!r} has features {sorted(features)}; {user} {sorted(needed)}"
      )
    if split not in builder.info.splits:
      raise ValueError(
        f"TFDS dataset {name!r} has no split {split!r}; it has {sorted(builder.info.splits.keys())}"
      )
    self.name, self.split, self.paired = name, split, paired
    self.min_hr_side, self.scale = int(min_hr_side), int(scale)
    self.shard_index, self.shard_count = int(shard_index), int(shard_count)
    self.has_names = "name" in features
    self.metadata = dict(builder.info.metadata or {})
    self._source = builder.as_data_source(split=split)
    self.num_records = len(self._source)
    self._bad: set[int] = set()
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(range(self.shard_index, self.num_records, self.shard_count))

  def __getstate__(self) -> dict:  # for Grain worker processes: a lock does not pickle
    state = dict(self.__dict__)
    del state["_lock"]
    return state

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _skip(self, record: int, message: str) -> None:
    with self._lock:
      first = record not in self._bad
      self._bad.add(record)
      all_bad = len(self._bad) >= len(self)
    if first:
      logging.warning("tfds %s[%s] record %d: %s; skipped", self.name, self.split, record, message)
    if all_bad:
      raise ValueError(
        f"TFDS dataset {self.name!r}[{self.split}]: none of the {len(self)} records "
        f"of shard {self.shard_index}/{self.shard_count} is usable (see the warnings)"
      )

  def __getitem__(self, index: int) -> Any:
    record = self.shard_index + int(index) * self.shard_count
    try:
      example = self._source[record]
      hr = _to_rgb(example["hr"])
      lr = _to_rgb(example["lr"]) if self.paired else None
    except Exception as e:  # a corrupt record must not end the run
      self._skip(record, f"cannot decode ({type(e).__name__}: {e})")
      return None
    problem = pairs.pair_problem(lr.shape, hr.shape, self.scale) if lr is not None else None
    if problem is None and min(hr.shape[:2]) < self.min_hr_side:
      problem = (
        f"{hr.shape[1]}x{hr.shape[0]} is smaller than the {self.min_hr_side}x"
        f"{self.min_hr_side} HR crop (patch_size * scale)"
      )
    if problem:
      name = self.record_name(record)
      self._skip(record, f"{name + ': ' if name else ''}{problem}")
      return None
    return hr if lr is None else {"lr": lr, "hr": hr}

  def record_name(self, record: int) -> str:
    """The stored source name of a record of the split ('' when the dataset stores none)."""
    if not self.has_names:
      return ""
    try:
      name = self._source[int(record)]["name"]
    except Exception:  # only used in a warning
      return ""
    return name.decode() if isinstance(name, bytes) else str(name)
