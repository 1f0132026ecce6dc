"""Paired LR/HR image folders: matching files by name and checking that sizes agree with the scale.

LR files match HR files by their path relative to the folder, without extension, after removing
a trailing scale tag from the LR name, so the usual layouts pair up:
  DIV2K:      DIV2K_train_HR/0001.png   <->  DIV2K_train_LR_bicubic/X4/0001x4.png
  EDSR bench: Set5/HR/baby.png          <->  Set5/LR_bicubic/X4/babyx4.png
  BasicSR:    Set5/GTmod12/baby.png     <->  Set5/LRbicx4/baby.png
A pair is valid when HR height and width are exactly `scale` times LR's. Problems are collected
over the whole folder and reported in one error that lists them (at most 20 of each kind shown).
"""

import os
import re
from typing import NamedTuple, Sequence

from PIL import Image

from sr_jax.data import image_io

_MAX_LISTED = 20
_EXIF_ORIENTATION = 0x0112


class ImagePair(NamedTuple):
  lr: str
  hr: str


class PairingError(ValueError):
  """Paired LR/HR folders that do not match; the message lists every problem."""


def _key(path: str, folder: str, scale: int | None) -> str:
  """Name used for matching: relative path without extension (and without an `x{scale}` tag)."""
  stem = os.path.splitext(os.path.relpath(path, folder))[0]
  if scale is not None:
    stem = re.sub(rf"(?i)[_-]?x{scale}$", "", stem)
  return stem


def image_size(path: str) -> tuple[int, int]:
  """(height, width) as `read_image` returns it (EXIF rotation applied), from the header only.

  Raises:
    ImageReadError: not an image.
  """
  try:
    with Image.open(path) as img:
      width, height = img.size
      if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
        width, height = height, width
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
    raise image_io.ImageReadError(path, f"{type(e).__name__}: {e}") from e
  return height, width


def _listed(items: Sequence[str]) -> str:
  shown = "\n    ".join(items[:_MAX_LISTED])
  more = f"\n    ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
  return f"\n    {shown}{more}"


def pair_folders(hr_dir: str, lr_dir: str, scale: int, check_sizes: bool = True) -> list[ImagePair]:
  """Matches the images of an HR folder with those of its LR folder (both recursive).

  Args:
    hr_dir: folder of HR images.
    lr_dir: folder of LR images, `scale` times smaller.
    scale: SR factor.
    check_sizes: read each pair's headers and check HR size == scale * LR size. Unreadable
      files are not errors here (they are skipped with a warning when decoded).

  Returns:
    ImagePair per HR image, sorted by HR path.

  Raises:
    FileNotFoundError: a folder does not exist.
    PairingError: HR images without LR, LR images without HR, or pairs whose sizes do not
      match the scale; the message lists them.
  """
  hr_paths, lr_paths = image_io.list_images(hr_dir), image_io.list_images(lr_dir)
  lr_by_key: dict[str, str] = {}
  duplicates = []
  for path in lr_paths:
    key = _key(path, lr_dir, scale)
    if key in lr_by_key:
      duplicates.append(f"{lr_by_key[key]} and {path}")
    lr_by_key[key] = path
  hr_keys = {_key(path, hr_dir, None): path for path in hr_paths}
  missing_lr = [path for key, path in hr_keys.items() if key not in lr_by_key]
  missing_hr = [path for key, path in lr_by_key.items() if key not in hr_keys]
  pairs = [
    ImagePair(lr_by_key[key], path)
    for key, path in sorted(hr_keys.items(), key=lambda kv: kv[1])
    if key in lr_by_key
  ]
  bad_sizes = []
  if check_sizes:
    for pair in pairs:
      try:
        (lr_h, lr_w), (hr_h, hr_w) = image_size(pair.lr), image_size(pair.hr)
      except image_io.ImageReadError:
        continue
      if (hr_h, hr_w) != (lr_h * scale, lr_w * scale):
        bad_sizes.append(
          f"{pair.hr} is {hr_w}x{hr_h}, {pair.lr} is {lr_w}x{lr_h} "
          f"(expected {lr_w * scale}x{lr_h * scale} = {scale} x LR)"
        )
  problems = []
  if missing_lr:
    problems.append(
      f"{len(missing_lr)} HR image(s) without an LR image in {lr_dir!r}:{_listed(missing_lr)}"
    )
  if missing_hr:
    problems.append(
      f"{len(missing_hr)} LR image(s) without an HR image in {hr_dir!r}:{_listed(missing_hr)}"
    )
  if duplicates:
    problems.append(f"{len(duplicates)} LR name(s) matching the same HR name:{_listed(duplicates)}")
  if bad_sizes:
    problems.append(
      f"{len(bad_sizes)} pair(s) whose HR size is not exactly {scale} x the LR size:"
      f"{_listed(bad_sizes)}"
    )
  if problems:
    raise PairingError(
      f"paired folders HR {hr_dir!r} / LR {lr_dir!r} (scale {scale}) do not match "
      f"(LR names may carry an 'x{scale}' suffix, e.g. 0001x{scale}.png for 0001.png):\n  "
      + "\n  ".join(problems)
    )
  if not pairs:
    raise PairingError(f"paired folders HR {hr_dir!r} / LR {lr_dir!r} hold no image")
  return pairs


def pair_folder_lists(
  hr_dirs: Sequence[str], lr_dirs: Sequence[str], scale: int, check_sizes: bool = True
) -> list[ImagePair]:
  """`pair_folders` over parallel lists of HR and LR folders (one LR folder per HR folder)."""
  if len(hr_dirs) != len(lr_dirs):
    raise PairingError(
      f"{len(hr_dirs)} HR folders {list(hr_dirs)} but {len(lr_dirs)} LR folders "
      f"{list(lr_dirs)}: give one LR folder per HR folder"
    )
  pairs = []
  for hr_dir, lr_dir in zip(hr_dirs, lr_dirs):
    pairs.extend(pair_folders(hr_dir, lr_dir, scale, check_sizes))
  return pairs


def pair_problem(lr_shape: Sequence[int], hr_shape: Sequence[int], scale: int) -> str | None:
  """Why a decoded (LR, HR) pair is unusable at `scale`, or None.

  HR may exceed scale x LR by less than `scale` pixels (HR not mod-cropped; its bottom/right
  margin is never cropped into a patch).
  """
  for axis, side in ((0, "height"), (1, "width")):
    if not lr_shape[axis] * scale <= hr_shape[axis] < (lr_shape[axis] + 1) * scale:
      return (
        f"HR {hr_shape[1]}x{hr_shape[0]} is not {scale} x LR {lr_shape[1]}x{lr_shape[0]} "
        f"({side} differs)"
      )
  return None
