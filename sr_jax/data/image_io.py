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

`read_image_full` is for inference (`sr_jax.upscale`): it keeps 16-bit depth, grayscale and alpha.
Writing images is in `image_write`.
"""

import os
from typing import Iterable, NamedTuple, Sequence

from absl import logging
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


def composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
  """Composites colour over white with `alpha`, as viewers show it (same values as PIL's
  `alpha_composite` for uint8).

  Args:
    color: uint8 / uint16 [h, w] gray or [h, w, c] colour.
    alpha: [h, w] of the same dtype (its maximum value = opaque).

  Returns:
    The composited colour, same shape and dtype as `color`.
  """
  peak = np.float32(np.iinfo(color.dtype).max)
  weight = alpha.astype(np.float32) / peak
  if color.ndim == 3:
    weight = weight[:, :, None]
  return np.rint(color * weight + peak * (1.0 - weight)).astype(color.dtype)


def to_rgb(img: Image.Image) -> np.ndarray:
  """Converts a loaded PIL image of any mode to uint8 [h, w, 3] RGB (see module docstring)."""
  if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
    gray = _high_depth_to_uint8(img)
    return np.repeat(gray[:, :, None], 3, axis=2)
  has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
    img.mode == "P" and "transparency" in img.info
  )
  if not has_alpha:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)
  rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
  return composite_on_white(rgba[:, :, :3], rgba[:, :, 3])


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


def read_image_or_none(path: str) -> np.ndarray | None:
  """`read_image`, with a warning line instead of an exception (for skipping bad files)."""
  try:
    return read_image(path)
  except ImageReadError as e:
    logging.warning("%s; skipped", e)
    return None


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


# --- Faithful reading for inference: bit depth, gray and alpha kept -------------------------------


class FullImage(NamedTuple):
  """An image as stored, upright: what `sr_jax.upscale` must preserve.

  color: uint8 or uint16, [h, w] for grayscale or [h, w, 3] RGB.
  alpha: the alpha channel, same dtype, [h, w]; None when the image has none.
  icc_profile: the embedded ICC profile (bytes), or None.
  """

  color: np.ndarray
  alpha: np.ndarray | None
  icc_profile: bytes | None

  @property
  def bit_depth(self) -> int:
    return 16 if self.color.dtype == np.uint16 else 8


# PIL's PNG raw modes for 16-bit colour: it decodes only the high byte of each sample. The same
# data decoded with the little-endian raw mode gives the low byte (the filters use the same bytes
# per pixel), so two decodes rebuild the 16-bit samples.
_PNG16_LOW_BYTE_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
# 16-bit gray + alpha is 4 bytes a pixel: decoded as RGBA bytes it is (L hi, L lo, A hi, A lo).
_PNG16_LA_RAWMODE = "LA;16B"


def _decode_png_with_rawmode(path: str, rawmode: str) -> np.ndarray:
  with Image.open(path) as img:
    tile = img.tile[0]
    img.tile = [tile._replace(args=rawmode)]
    img.load()
    return np.asarray(img)


def _read_png16_color(path: str, img: Image.Image, tiles: list) -> np.ndarray | None:
  """16-bit RGB / RGBA / LA PNG samples as uint16 [h, w, c] (c = 3, 4 or 2), or None if not one
  (16-bit gray PNGs PIL reads itself, as I;16).

  `tiles` is `img.tile` as it was before loading (loading empties it).
  """
  if img.format != "PNG" or len(tiles) != 1 or tiles[0].codec_name != "zip":
    return None
  rawmode = tiles[0].args
  if rawmode in _PNG16_LOW_BYTE_RAWMODES:
    high = _decode_png_with_rawmode(path, rawmode).astype(np.uint16)
    low = _decode_png_with_rawmode(path, _PNG16_LOW_BYTE_RAWMODES[rawmode])
    return (high << 8) | low
  if rawmode == _PNG16_LA_RAWMODE:
    raw = _decode_png_with_rawmode(path, "RGBA").astype(np.uint16)
    return np.stack([(raw[..., 0] << 8) | raw[..., 1], (raw[..., 2] << 8) | raw[..., 3]], axis=-1)
  return None


def _read_tiff16(path: str) -> tuple[np.ndarray, bool, int, bytes | None] | None:
  """A 16-bit TIFF via tifffile (PIL reduces 16-bit colour to 8 bits and cannot open 16-bit gray +
  alpha): (pixels [h, w] / [h, w, c], last channel is alpha, EXIF orientation, ICC profile), or None
  when the file is not a 16-bit TIFF that tifffile reads."""
  try:
    import tifffile  # a dependency of scikit-image

    with tifffile.TiffFile(path) as tif:
      page = tif.pages[0]
      if page.bitspersample != 16 or page.dtype != np.uint16:
        return None
      pixels = page.asarray()
      orientation = page.tags[274].value if 274 in page.tags else 1
      icc_profile = page.tags[34675].value if 34675 in page.tags else None
      has_alpha = bool(page.extrasamples)
  except Exception:  # not a TIFF tifffile understands: PIL reads it or reports the error
    return None
  if pixels.ndim not in (2, 3):
    return None
  return pixels, has_alpha and pixels.ndim == 3, int(orientation), icc_profile


# EXIF orientation (tag 0x0112) -> numpy ops making the pixels upright, as ImageOps.exif_transpose.
_ORIENTATION_OPS = {
  2: lambda a: a[:, ::-1],
  3: lambda a: a[::-1, ::-1],
  4: lambda a: a[::-1],
  5: lambda a: np.swapaxes(a, 0, 1),
  6: lambda a: np.rot90(a, -1),
  7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
  8: lambda a: np.rot90(a, 1),
}


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
  """Rotates / flips [h, w, ...] pixels as the EXIF orientation value says (1 or unknown: as is)."""
  op = _ORIENTATION_OPS.get(int(orientation or 1))
  return pixels if op is None else np.ascontiguousarray(op(pixels))


def _split_channels(pixels: np.ndarray, has_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
  """[h, w(, c)] -> (color [h, w] or [h, w, 3], alpha [h, w] or None)."""
  if pixels.ndim == 2:
    return pixels, None
  if has_alpha:
    color, alpha = pixels[..., :-1], pixels[..., -1]
  else:
    color, alpha = pixels, None
  if color.shape[-1] == 1:
    color = color[..., 0]
  return color, alpha


def _pixels_of(path: str, img: Image.Image, tiles: list) -> tuple[np.ndarray, bool]:
  """Pixels of a loaded image (uint8 or uint16, [h, w] / [h, w, c]) and whether the last channel
  is alpha; `tiles` is `img.tile` from before loading."""
  high_depth = _read_png16_color(path, img, tiles)
  if high_depth is not None:
    # A 16-bit LA PNG is opened by PIL as RGBA: the samples tell the truth, 2 channels = L + A.
    return high_depth, high_depth.shape[-1] in (2, 4)
  mode = img.mode
  if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    return np.clip(np.asarray(img), 0, 65535).astype(np.uint16), False
  if mode == "F":
    arr = np.nan_to_num(np.asarray(img, np.float64))
    peak = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
    return np.clip(np.rint(arr * (65535.0 / peak)), 0, 65535).astype(np.uint16), False
  if mode in ("1", "L"):
    return np.asarray(img.convert("L")), False
  if mode in ("LA", "La"):
    return np.asarray(img.convert("LA")), True
  has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info)
  return np.asarray(img.convert("RGBA" if has_alpha else "RGB")), has_alpha


def read_image_full(path: str) -> FullImage:
  """Reads an image keeping what `read_image` flattens: 16-bit depth, grayscale, alpha.

  EXIF orientation is applied. Grayscale (1-bit, L, 16-bit I;16) stays one channel; palette, CMYK
  and other modes become RGB(A). 16-bit PNGs (gray, gray+alpha, RGB, RGBA) and 16-bit TIFFs (any
  of those, via tifffile) keep 16 bits; 32-bit integer gray is clipped to 16 bits and float gray
  ([0, 1] or [0, 255]) scaled to 16 bits.

  Args:
    path: image file.

  Returns:
    FullImage(color, alpha, icc_profile).

  Raises:
    ImageReadError: the file is missing, not an image, truncated or corrupt.
  """
  tiff16 = _read_tiff16(path) if path.lower().endswith((".tif", ".tiff")) else None
  try:
    if tiff16 is not None:
      pixels, has_alpha, orientation, icc_profile = tiff16
    else:
      with Image.open(path) as img:
        tiles = list(img.tile)
        # Decode everything now, so a truncated file fails here; PNG eXIf may follow the data.
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        icc_profile = img.info.get("icc_profile")
        pixels, has_alpha = _pixels_of(path, img, tiles)
  except ImageReadError:
    raise
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
    raise ImageReadError(path, f"{type(e).__name__}: {e}") from e
  if pixels.ndim < 2 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
    raise ImageReadError(path, f"empty image of shape {pixels.shape}")
  color, alpha = _split_channels(apply_orientation(pixels, orientation), has_alpha)
  return FullImage(color, alpha, icc_profile)
