"""Writing images as `image_io.read_image_full` reads them: 16-bit depth, gray, alpha, ICC profile.

The format follows the file extension (`WRITABLE_EXTENSIONS`). What a format cannot hold is
converted and reported: JPEG has no alpha (composited on white, as viewers show it); JPEG, WebP
and BMP hold only 8 bits (16-bit samples are rounded). PNGs are written by our own encoder (PIL
cannot write 16-bit colour PNGs), 16-bit TIFFs by tifffile, the rest by PIL.

Every file is written safely (`write_image`): into a hidden temporary file in the target folder,
flushed to disk (fsync) and its size checked against the bytes written, then renamed into place.
A failed or short write (a full disk) raises `ImageWriteError` and leaves no partial file, and an
existing file is replaced only when asked (`overwrite`).
"""

import errno
import io
import os
import secrets
import struct
from typing import BinaryIO, Callable
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
  path: str,
  pixels: np.ndarray,
  icc_profile: bytes | None = None,
  chunk_bytes: int = 1 << 22,
  overwrite: bool = True,
) -> None:
  """Writes uint8 / uint16 [h, w] or [h, w, c] (c = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) as a PNG.

  PIL cannot write 16-bit colour PNGs, and for 8 bits it first copies the image into its own
  4-bytes-a-pixel buffer (1 GB for a 16000x16000 RGB output). Here rows are Paeth-filtered and
  compressed about `chunk_bytes` at a time, so memory stays at the image plus a few chunks.
  The file is written safely, as `write_image` writes (same errors).
  """
  if pixels.dtype not in (np.uint8, np.uint16):
    raise ValueError(f"write_png {path!r}: expected uint8 or uint16 pixels, got {pixels.dtype}")
  write_file_safely(path, lambda f: _stream_png(f, pixels, icc_profile, chunk_bytes), overwrite)


def _stream_png(
  f: BinaryIO, pixels: np.ndarray, icc_profile: bytes | None, chunk_bytes: int = 1 << 22
) -> None:
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


class ImageWriteError(OSError):
  """An image file that could not be written completely; nothing was left at its path."""

  def __init__(self, path: str, reason: str, errno_code: int | None = None):
    super().__init__(errno_code, reason)
    self.path = path
    self.reason = reason

  def __str__(self) -> str:
    return f"cannot write {self.path!r}: {self.reason}; nothing was written"

  def __reduce__(self):
    return type(self), (self.path, self.reason, self.errno)


class _CheckedFile(io.RawIOBase):
  """A write-only file on a descriptor that writes every byte or raises (os.write may write
  fewer bytes than asked, e.g. when the disk fills), and counts them."""

  def __init__(self, fd: int):
    super().__init__()
    self.fd, self.size = fd, 0

  def writable(self) -> bool:
    return True

  def write(self, data) -> int:
    view = memoryview(data).cast("B")
    while view:
      written = os.write(self.fd, view)
      if written <= 0:  # no progress: the kernel would block or the device is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      view = view[written:]
      self.size += written
    return len(data)


def _place(partial: str, path: str, overwrite: bool) -> None:
  """Renames the complete `partial` to `path`; without `overwrite`, never replaces a file."""
  if overwrite:
    os.replace(partial, path)
    return
  try:
    os.link(partial, path)  # atomic and fails if `path` exists, unlike a rename
  except FileExistsError:
    raise
  except OSError:  # a file system without hard links (FAT, some network shares)
    if os.path.lexists(path):
      raise FileExistsError(errno.EEXIST, "exists", path) from None
    os.replace(partial, path)
    return
  os.remove(partial)


def write_file_safely(path: str, write: Callable[[BinaryIO], None], overwrite: bool = True) -> None:
  """Writes a file through `write(f)` so that it appears complete or not at all.

  The bytes go to a hidden temporary file in the same folder (same file system, so the rename is
  atomic), are flushed to disk (fsync) and their size on disk is checked against the bytes
  written, before the rename.

  Raises:
    ImageWriteError: a failed, short or unverifiable write (a full disk: ENOSPC), or, without
      `overwrite`, `path` exists (errno EEXIST). The temporary file is removed.
  """
  folder, name = os.path.split(os.path.abspath(path))
  # Hidden, and not an image extension: never listed as an input (list_images) if left behind.
  partial = os.path.join(folder, f".{name[:200]}.{secrets.token_hex(4)}.partial")
  try:
    # O_EXCL: never reuse a file; mode 0o666 & umask, as a plain open() would create it.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
  except OSError as e:
    raise ImageWriteError(path, e.strerror or str(e), e.errno) from e
  try:
    try:
      f = _CheckedFile(fd)
      write(f)
      os.fsync(fd)  # a delayed allocation failure (ENOSPC, EDQUOT) shows here, not at rename
      on_disk = os.fstat(fd).st_size
    finally:
      os.close(fd)  # network file systems report some write errors only on close
    if on_disk != f.size or os.stat(partial).st_size != f.size:
      raise OSError(errno.EIO, f"short write: {on_disk} of {f.size} bytes on disk")
    _place(partial, path, overwrite)
  except OSError as e:
    if isinstance(e, FileExistsError):
      reason = "the file exists (not replaced)"
    else:
      reason = e.strerror or str(e)
      if e.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = f"the disk is full ({reason})"
    raise ImageWriteError(path, reason, e.errno) from e
  finally:
    if os.path.lexists(partial):
      os.remove(partial)


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
  if pixels.dtype == np.uint8:
    return pixels
  return np.rint(pixels.astype(np.float32) * np.float32(255.0 / 65535.0)).astype(np.uint8)


def write_image(
  path: str,
  color: np.ndarray,
  alpha: np.ndarray | None = None,
  icc_profile: bytes | None = None,
  overwrite: bool = True,
) -> list[str]:
  """Writes an image in the format of `path`'s extension, keeping what that format can hold.

  The file appears complete or not at all (`write_file_safely`: a temporary file, fsync, a size
  check, then a rename).

  Args:
    path: output file; its extension (a key of WRITABLE_EXTENSIONS) picks the format.
    color: uint8 / uint16 [h, w] gray or [h, w, 3] RGB.
    alpha: [h, w] of the same dtype, or None.
    icc_profile: copied into the file when given.
    overwrite: replace an existing `path`; if False, an existing file is an error and is kept.

  Returns:
    Notes on what the format could not hold (alpha, 16 bits), one line each.

  Raises:
    ValueError: an extension that is not in WRITABLE_EXTENSIONS, or pixels not uint8 / uint16.
    ImageWriteError: the file could not be written completely (e.g. a full disk), or exists and
      `overwrite` is False; nothing is left at `path` (an existing file is kept).
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in WRITABLE_EXTENSIONS:
    raise ValueError(
      f"cannot write {path!r}: unknown image extension {ext!r}; "
      f"known: {sorted(WRITABLE_EXTENSIONS)}"
    )
  if color.dtype not in (np.uint8, np.uint16):
    raise ValueError(f"cannot write {path!r}: expected uint8 or uint16 pixels, got {color.dtype}")
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
  if fmt == "PNG":  # streamed: the encoded file is never whole in memory
    write_file_safely(path, lambda f: _stream_png(f, pixels, icc_profile), overwrite)
  else:
    encoded = _encode(fmt, pixels, alpha is not None, icc_profile)
    write_file_safely(path, lambda f: f.write(encoded.getbuffer()), overwrite)
  return notes


def _encode(fmt: str, pixels: np.ndarray, has_alpha: bool, icc_profile: bytes | None) -> io.BytesIO:
  """The file's bytes in memory, so that their writing to disk is checked (`_CheckedFile`)."""
  encoded = io.BytesIO()
  if pixels.dtype == np.uint16:  # TIFF
    import tifffile  # a dependency of scikit-image; PIL cannot write 16-bit colour TIFFs

    tifffile.imwrite(
      encoded,
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
    image.save(encoded, format=fmt, **options)
  return encoded


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
