"""Reading HR images from disk as 8-bit RGB, and finding them in folders.

Conversions done by `read_image` (everything ends as uint8 [h, w, 3] RGB):
  - EXIF orientation is applied, so the pixels are upright as viewers show them.
  - Grayscale (L, 1-bit) is replicated to 3 channels; palette (P) and CMYK go through PIL's RGB
    conversion.
  - Alpha (RGBA, LA, PA, palette with transparency) is composited on white: what lies under
    fully transparent pixels is arbitrary (often black), white is what viewers show.
  - 16-bit (I;16*, I) and 32-bit float (F) grayscale are scaled to 8 bits: 16-bit by 255/65535;
    float as [0, 1] when its maximum is <= 1, otherwise as [0, 255]. 16-bit RGB PNGs are already
    reduced to 8 bits per channel by PIL.
"""

import os
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(Exception):
  """An image file that cannot be read or converted to RGB."""

  def __init__(self, path: str, reason: str):
    super().__init__(path, reason)  # both in args, so it pickles across Grain workers
    self.path = path
    self.reason = reason

  def __str__(self) -> str:
    return f"cannot read image {self.path!r}: {self.reason}"


def _high_depth_to_uint8(img: Image.Image) -> np.ndarray:
  """16-bit / 32-bit integer / float grayscale -> uint8 [h, w]."""
  arr = np.asarray(img)
  if img.mode == "F":
    arr = arr.astype(np.float64)
    peak = 1.0 if np.nanmax(arr, initial=0.0) <= 1.0 else 255.0
    arr = np.nan_to_num(arr) * (255.0 / peak)
  else:  # I;16, I;16B, I;16L, I: 16-bit range
    arr = arr.astype(np.float64) * (255.0 / 65535.0)
  return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _on_white(img: Image.Image) -> Image.Image:
  """Composites an image with alpha on a white background."""
  rgba = img.convert("RGBA")
  background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
  return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> np.ndarray:
  """Converts a loaded PIL image of any mode to uint8 [h, w, 3] RGB (see module docstring)."""
  if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
    gray = _high_depth_to_uint8(img)
    return np.repeat(gray[:, :, None], 3, axis=2)
  has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
      img.mode == "P" and "transparency" in img.info)
  rgb = _on_white(img) if has_alpha else img.convert("RGB")
  return np.asarray(rgb, dtype=np.uint8)


def read_image(path: str) -> np.ndarray:
  """Reads an image file as upright uint8 [h, w, 3] RGB.

  Args:
    path: image file.

  Returns:
    uint8 array [h, w, 3].

  Raises:
    ImageReadError: the file is missing, not an image, truncated or corrupt.
  """
  try:
    with Image.open(path) as img:
      img.load()  # decode everything now, so a truncated file fails here, not later
      img = ImageOps.exif_transpose(img)
      rgb = to_rgb(img)
  except ImageReadError:
    raise
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
    raise ImageReadError(path, f"{type(e).__name__}: {e}") from e
  if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise ImageReadError(path, f"empty image of shape {rgb.shape}")
  return rgb


def _is_image_file(name: str) -> bool:
  # Hidden files are skipped: macOS '._x.png' resource forks are not images.
  return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(dirs: str | Iterable[str]) -> list[str]:
  """All image files under one or more folders, recursively, sorted, without duplicates.

  Args:
    dirs: a folder or a sequence of folders.

  Returns:
    Sorted file paths with extensions in IMAGE_EXTENSIONS (any case), hidden files excluded.

  Raises:
    FileNotFoundError: a folder does not exist.
  """
  folders: Sequence[str] = (dirs,) if isinstance(dirs, (str, os.PathLike)) else tuple(dirs)
  paths = set()
  for folder in folders:
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"image folder {folder!r} does not exist or is not a folder")
    for root, subdirs, files in os.walk(folder):
      subdirs[:] = [d for d in subdirs if not d.startswith(".")]
      paths.update(os.path.join(root, f) for f in files if _is_image_file(f))
  return sorted(paths)
