"""The default data: real photos bundled with scikit-image, written once as PNG folders.

Train (6 photos, full size except retina): astronaut (portrait, flag, suit fabric), rocket
(outdoor scene, structures), motorcycle (left stereo view; mechanical detail),
immunohistochemistry (microscopy texture), hubble_deep_field (stars, galaxies), retina
(centre 1024x1024: vessels; the cropped corners are black).
Validation (held out, centre-cropped to 256x256 so full-image eval is cheap on CPU): chelsea
(cat: fur, whiskers, eyes) and coffee (cup, spoon: smooth shading, specular highlights).

Files go to `<cache>/embedded_photos/{train,val}/<name>.png`, where `<cache>` is the
`cache_dir` argument, else `$SR_JAX_CACHE`, else `~/.cache/sr_jax`. Writing is idempotent
(existing files are kept) and atomic (temporary file, then rename), so concurrent processes
never see a half-written PNG.
"""

import os
import tempfile
from typing import NamedTuple, Sequence

from absl import logging
import numpy as np
from PIL import Image

EMBEDDED_PREFIX = "embedded:"
SPLITS = ("train", "val")


class _Photo(NamedTuple):
  name: str
  split: str
  loader: str  # function name in skimage.data
  max_side: int | None  # centre crop to at most max_side x max_side; None keeps the photo


PHOTOS = (
  _Photo("astronaut", "train", "astronaut", None),
  _Photo("rocket", "train", "rocket", None),
  _Photo("motorcycle", "train", "stereo_motorcycle", None),
  _Photo("immunohistochemistry", "train", "immunohistochemistry", None),
  _Photo("hubble_deep_field", "train", "hubble_deep_field", None),
  _Photo("retina", "train", "retina", 1024),
  _Photo("chelsea", "val", "chelsea", 256),
  _Photo("coffee", "val", "coffee", 256),
)


def cache_root(cache_dir: str | None = None) -> str:
  """`cache_dir`, else $SR_JAX_CACHE, else ~/.cache/sr_jax."""
  root = cache_dir or os.environ.get("SR_JAX_CACHE") or os.path.join("~", ".cache", "sr_jax")
  return os.path.abspath(os.path.expanduser(root))


def center_crop(img: np.ndarray, max_side: int | None) -> np.ndarray:
  """Centre crop to at most max_side x max_side (no-op for None)."""
  if max_side is None:
    return img
  h, w = img.shape[:2]
  ch, cw = min(h, max_side), min(w, max_side)
  top, left = (h - ch) // 2, (w - cw) // 2
  return img[top : top + ch, left : left + cw]


def _load_photo(photo: _Photo) -> np.ndarray:
  """The bundled photo as uint8 [h, w, 3]."""
  import skimage.data  # slow import (~1 s); only needed on the first write

  img = getattr(skimage.data, photo.loader)()
  if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
    img = img[0]
  img = np.asarray(img)
  if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
    raise ValueError(
      f"skimage.data.{photo.loader}() is not an 8-bit RGB photo: {img.dtype} {img.shape}"
    )
  return np.ascontiguousarray(center_crop(img, photo.max_side))


def _write_png_atomic(img: np.ndarray, path: str) -> None:
  """Writes a PNG through a temporary file in the same folder, then renames it into place."""
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, "wb") as f:
      Image.fromarray(img).save(f, format="PNG")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared
    os.replace(tmp, path)  # atomic on POSIX: readers see no file or the whole file
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def embedded_photo_dirs(cache_dir: str | None = None) -> tuple[str, str]:
  """Writes the bundled photos (once) and returns their (train_dir, val_dir).

  Args:
    cache_dir: root of the cache; None uses $SR_JAX_CACHE, else ~/.cache/sr_jax.

  Returns:
    (train_dir, val_dir), two disjoint folders of PNG files.

  Raises:
    RuntimeError: no photo of a split could be loaded from scikit-image.
  """
  base = os.path.join(cache_root(cache_dir), "embedded_photos")
  dirs = {split: os.path.join(base, split) for split in SPLITS}
  written = {split: 0 for split in SPLITS}
  for photo in PHOTOS:
    folder = dirs[photo.split]
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{photo.name}.png")
    if not os.path.exists(path):
      try:
        img = _load_photo(photo)
      except Exception as e:  # a scikit-image build without this photo: use the others
        logging.warning(
          "embedded photo %r unavailable (skimage.data.%s: %s); skipped",
          photo.name,
          photo.loader,
          e,
        )
        continue
      _write_png_atomic(img, path)
    written[photo.split] += 1
  for split, count in written.items():
    if count == 0:
      raise RuntimeError(
        f"no embedded {split} photo could be loaded from scikit-image (folder {dirs[split]!r})"
      )
  return dirs["train"], dirs["val"]


def resolve_dirs(dirs: str | Sequence[str], cache_dir: str | None = None) -> list[str]:
  """Maps 'embedded:train' / 'embedded:val' to the embedded photo folders; other entries pass.

  Args:
    dirs: a folder or a sequence of folders, any of them 'embedded:train' or 'embedded:val'.
    cache_dir: cache root for the embedded photos (see `embedded_photo_dirs`).

  Returns:
    List of real folder paths, in the given order.

  Raises:
    ValueError: an unknown 'embedded:' name.
    FileNotFoundError: a folder does not exist.
  """
  entries = (dirs,) if isinstance(dirs, (str, os.PathLike)) else tuple(dirs)
  resolved = []
  for entry in entries:
    entry = os.fspath(entry)
    if entry.startswith(EMBEDDED_PREFIX):
      split = entry[len(EMBEDDED_PREFIX) :]
      if split not in SPLITS:
        raise ValueError(
          f"unknown embedded data {entry!r}; known: {[EMBEDDED_PREFIX + s for s in SPLITS]}"
        )
      train_dir, val_dir = embedded_photo_dirs(cache_dir)
      resolved.append(train_dir if split == "train" else val_dir)
    else:
      folder = os.path.abspath(os.path.expanduser(entry))
      if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {entry!r} does not exist or is not a folder")
      resolved.append(folder)
  return resolved
