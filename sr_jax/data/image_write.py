"""Writing images as `image_io.read_image_full` reads them: 16-bit depth, gray, alpha, ICC profile.

The format follows the file extension (`WRITABLE_EXTENSIONS`). What a format cannot hold is
converted and reported: JPEG has no alpha (composited on white, as viewers show it); JPEG, WebP
and BMP hold only 8 bits (16-bit samples are rounded). PNGs are written by our own encoder (PIL
cannot write 16-bit colour PNGs), 16-bit TIFFs by tifffile, the rest by PIL.
"""

import os
import struct
import zlib

import numpy as np
from PIL import Image

from sr_jax.data import image_io

# Output extension -> format. 16 bits only in PNG and TIFF.
WRITABLE_EXTENSIONS = {
  ".png": "PNG",
  ".jpg": "JPEG",
  ".jpeg": "JPEG",
  ".bmp": "BMP",
  ".tif": "TIFF",
  ".tiff": "TIFF",
  ".webp": "WEBP",
}
_NO_ALPHA = {"JPEG"}
_NO_GRAY = {"WEBP"}
_HIGH_DEPTH = {"PNG", "TIFF"}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
  crc = struct.pack(">I", zlib.crc32(kind + payload))
  return struct.pack(">I", len(payload)) + kind + payload + crc


def _paeth_filtered(rows: np.ndarray, previous: np.ndarray, bytes_per_pixel: int) -> np.ndarray:
  """PNG filter 4 (Paeth) of byte rows [n, row_bytes], `previous` the raw row above the first."""
  raw = rows.astype(np.int16)
  up = np.concatenate([previous[None].astype(np.int16), raw[:-1]])
  left = np.zeros_like(raw)
  left[:, bytes_per_pixel:] = raw[:, :-bytes_per_pixel]
  up_left = np.zeros_like(raw)
  up_left[:, bytes_per_pixel:] = up[:, :-bytes_per_pixel]
  estimate = left + up - up_left
  d_left, d_up, d_up_left = (
    np.abs(estimate - left),
    np.abs(estimate - up),
    np.abs(estimate - up_left),
  )
  predictor = np.where(
    (d_left <= d_up) & (d_left <= d_up_left), left, np.where(d_up <= d_up_left, up, up_left)
  )
  return ((raw - predictor) & 0xFF).astype(np.uint8)


def write_png(
  path: str, pixels: np.ndarray, icc_profile: bytes | None = None, chunk_bytes: int = 1 << 22
) -> None:
  """Writes uint8 / uint16 [h, w] or [h, w, c] (c = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) as a PNG.

  PIL cannot write 16-bit colour PNGs, and for 8 bits it first copies the image into its own
  4-bytes-a-pixel buffer (1 GB for a 16000x16000 RGB output). Here rows are Paeth-filtered and
  compressed about `chunk_bytes` at a time, so memory stays at the image plus a few chunks.
  """
  if pixels.dtype not in (np.uint8, np.uint16):
    raise ValueError(f"write_png {path!r}: expected uint8 or uint16 pixels, got {pixels.dtype}")
  image = pixels[:, :, None] if pixels.ndim == 2 else pixels
  height, width, channels = image.shape
  sample_bytes = pixels.dtype.itemsize
  color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
  header = struct.pack(">IIBBBBB", width, height, 8 * sample_bytes, color_type, 0, 0, 0)
  row_bytes = width * channels * sample_bytes
  rows_per_chunk = max(1, chunk_bytes // row_bytes)
  compressor = zlib.compressobj(6)
  previous = np.zeros(row_bytes, np.uint8)
  big_endian = pixels.dtype.newbyteorder(">")
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header))
    if icc_profile:
      f.write(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    for top in range(0, height, rows_per_chunk):
      rows = np.ascontiguousarray(image[top : top + rows_per_chunk], big_endian)
      rows = rows.reshape(-1, width * channels).view(np.uint8)
      lines = np.empty((len(rows), row_bytes + 1), np.uint8)
      lines[:, 0] = 4  # filter type: Paeth
      lines[:, 1:] = _paeth_filtered(rows, previous, channels * sample_bytes)
      previous = rows[-1].copy()
      data = compressor.compress(lines.tobytes())
      if data:
        f.write(_png_chunk(b"IDAT", data))
    f.write(_png_chunk(b"IDAT", compressor.flush()) + _png_chunk(b"IEND", b""))


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
  if pixels.dtype == np.uint8:
    return pixels
  return np.rint(pixels.astype(np.float32) * np.float32(255.0 / 65535.0)).astype(np.uint8)


def write_image(
  path: str, color: np.ndarray, alpha: np.ndarray | None = None, icc_profile: bytes | None = None
) -> list[str]:
  """Writes an image in the format of `path`'s extension, keeping what that format can hold.

  The file appears complete or not at all (written under a temporary name, then renamed).

  Args:
    path: output file; its extension (a key of WRITABLE_EXTENSIONS) picks the format.
    color: uint8 / uint16 [h, w] gray or [h, w, 3] RGB.
    alpha: [h, w] of the same dtype, or None.
    icc_profile: copied into the file when given.

  Returns:
    Notes on what the format could not hold (alpha, 16 bits), one line each.

  Raises:
    ValueError: an extension that is not in WRITABLE_EXTENSIONS.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in WRITABLE_EXTENSIONS:
    raise ValueError(
      f"cannot write {path!r}: unknown image extension {ext!r}; "
      f"known: {sorted(WRITABLE_EXTENSIONS)}"
    )
  fmt, notes = WRITABLE_EXTENSIONS[ext], []
  if alpha is not None and fmt in _NO_ALPHA:
    color, alpha = image_io.composite_on_white(color, alpha), None
    notes.append(f"{fmt} has no alpha channel: composited on white")
  if color.dtype == np.uint16 and fmt not in _HIGH_DEPTH:
    color, alpha = _to_8bit(color), None if alpha is None else _to_8bit(alpha)
    notes.append(f"{fmt} holds 8 bits per channel: 16-bit output rounded to 8 bits")
  if alpha is None:
    pixels = color
  else:
    pixels = np.concatenate([color.reshape(color.shape[:2] + (-1,)), alpha[:, :, None]], axis=2)
  partial = path + ".partial"  # renamed when complete: a failed write leaves no truncated image
  try:
    _write_pixels(partial, fmt, pixels, alpha is not None, icc_profile)
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return notes


def _write_pixels(
  path: str, fmt: str, pixels: np.ndarray, has_alpha: bool, icc_profile: bytes | None
) -> None:
  if fmt == "PNG":
    write_png(path, pixels, icc_profile)
  elif pixels.dtype == np.uint16:  # TIFF
    import tifffile  # a dependency of scikit-image; PIL cannot write 16-bit colour TIFFs

    tifffile.imwrite(
      path,
      pixels,
      photometric="rgb" if pixels.ndim == 3 and pixels.shape[2] >= 3 else "minisblack",
      extrasamples=["unassalpha"] if has_alpha else None,
      compression="zlib",
      iccprofile=icc_profile,
    )
  else:
    image = Image.fromarray(pixels)  # L, LA, RGB or RGBA from the shape
    if fmt in _NO_GRAY and image.mode in ("L", "LA"):
      image = image.convert("RGBA" if image.mode == "LA" else "RGB")
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if icc_profile and fmt != "BMP":
      options["icc_profile"] = icc_profile
    image.save(path, format=fmt, **options)


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
  """Bicubic upscaling of an alpha channel (uint8 via PIL "L", uint16 via float "F").

  Alpha is a mask: it needs smooth edges, not the details an SR network would invent.
  """
  height, width = alpha.shape
  size = (width * scale, height * scale)
  if alpha.dtype == np.uint8:
    return np.asarray(Image.fromarray(alpha).resize(size, Image.Resampling.BICUBIC))
  # PIL's I;16 resampling is not accurate (errors of thousands of levels); float is.
  resized = np.asarray(
    Image.fromarray(alpha.astype(np.float32)).resize(size, Image.Resampling.BICUBIC)
  )
  return np.clip(np.rint(resized), 0, 65535).astype(np.uint16)
