"""Image writing (sr_jax.data.image_write) read back with image_io; the one alpha compositing;
writing safely (a full disk, a short write, an existing file)."""

import errno
import os

import numpy as np
from PIL import Image
import pytest

from sr_jax import data
from sr_jax.data import image_write


def _random(shape, dtype, seed=0):
  return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def test_composite_on_white_matches_pil_and_reading(tmp_path):
  color, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
  rgba = np.stack([color, color, color, alpha], axis=-1).astype(np.uint8)
  image = Image.fromarray(rgba, "RGBA")
  white = Image.new("RGBA", image.size, (255, 255, 255, 255))
  pil = np.asarray(Image.alpha_composite(white, image).convert("RGB"))
  np.testing.assert_array_equal(data.composite_on_white(rgba[..., :3], rgba[..., 3]), pil)
  # Gray and 16-bit: opaque keeps the colour, transparent is white.
  gray = np.array([[0, 40000]], np.uint16)
  np.testing.assert_array_equal(
    data.composite_on_white(gray, np.array([[65535, 0]], np.uint16)), [[0, 65535]]
  )
  # Reading composites with the same function.
  image.save(tmp_path / "rgba.png")
  np.testing.assert_array_equal(data.read_image(str(tmp_path / "rgba.png")), pil)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_write_png_round_trip(tmp_path, dtype, channels):
  shape = (13, 17) if channels == 1 else (13, 17, channels)
  pixels = _random(shape, dtype, channels)
  path = str(tmp_path / "out.png")
  data.write_png(path, pixels, icc_profile=b"profile bytes", chunk_bytes=100)  # many IDAT chunks
  read = data.read_image_full(path)
  has_alpha = channels in (2, 4)
  color = pixels[..., :-1] if has_alpha else pixels
  if color.ndim == 3 and color.shape[-1] == 1:
    color = color[..., 0]
  np.testing.assert_array_equal(read.color, color)
  if has_alpha:
    np.testing.assert_array_equal(read.alpha, pixels[..., -1])
  else:
    assert read.alpha is None
  assert read.icc_profile == b"profile bytes"
  with pytest.raises(ValueError, match="uint8 or uint16"):
    data.write_png(path, pixels.astype(np.float32))


def test_write_image_keeps_what_the_format_holds(tmp_path):
  color, alpha = _random((10, 12, 3), np.uint16, 1), _random((10, 12), np.uint16, 2)
  tiff = str(tmp_path / "out.tiff")
  assert data.write_image(tiff, color, alpha) == []
  read = data.read_image_full(tiff)
  np.testing.assert_array_equal(read.color, color)
  np.testing.assert_array_equal(read.alpha, alpha)

  notes = data.write_image(str(tmp_path / "out.jpg"), color, alpha)
  assert len(notes) == 2 and "composited on white" in notes[0] and "8 bits" in notes[1]
  read = data.read_image_full(str(tmp_path / "out.jpg"))
  assert read.color.dtype == np.uint8 and read.alpha is None
  expected = np.rint(data.composite_on_white(color, alpha) * (255 / 65535))
  # JPEG is lossy (and noise compresses badly), but keeps the mean: white under transparency.
  np.testing.assert_allclose(read.color.mean(axis=(0, 1)), expected.mean(axis=(0, 1)), atol=3)

  gray = _random((6, 7), np.uint8, 3)
  assert data.write_image(str(tmp_path / "gray.webp"), gray) == []  # WebP has no gray: RGB
  assert data.read_image_full(str(tmp_path / "gray.webp")).color.shape == (6, 7, 3)

  with pytest.raises(ValueError, match="unknown image extension '.xyz'"):
    data.write_image(str(tmp_path / "out.xyz"), gray)
  assert set(data.WRITABLE_EXTENSIONS) >= {".png", ".jpg", ".tif", ".webp", ".bmp"}
  with pytest.raises(ValueError):  # a failed write leaves neither the file nor a partial one
    data.write_image(str(tmp_path / "bad.png"), gray.astype(np.float32))
  assert sorted(os.listdir(tmp_path)) == ["gray.webp", "out.jpg", "out.tiff"]


def test_upscale_alpha_is_bicubic():
  alpha8 = _random((5, 6), np.uint8)
  expected = Image.fromarray(alpha8).resize((18, 15), Image.Resampling.BICUBIC)
  np.testing.assert_array_equal(data.upscale_alpha(alpha8, 3), np.asarray(expected))
  alpha16 = alpha8.astype(np.uint16) * 257
  up16 = data.upscale_alpha(alpha16, 3)
  assert up16.dtype == np.uint16 and up16.shape == (15, 18)
  # 16 bits go through float: within 2 levels of the fixed-point 8-bit resize.
  assert np.abs(up16 / 257.0 - data.upscale_alpha(alpha8, 3)).max() <= 2.0


# --- Safe writing: a full disk or an existing file never leaves a damaged image ------------------

FORMATS = {  # extension -> pixels that go through that format's encoder
  "png": _random((24, 24, 3), np.uint8),
  "jpg": _random((24, 24, 3), np.uint8),
  "bmp": _random((24, 24, 3), np.uint8),
  "tif": _random((24, 24, 3), np.uint16),  # tifffile
  "tiff": _random((24, 24, 3), np.uint8),  # PIL
  "webp": _random((24, 24, 3), np.uint8),
}


def _disk_filling_after(monkeypatch, budget: int) -> None:
  """os.write stores at most `budget` bytes in all (short writes), then fails as a full disk."""
  real_write, left = os.write, [budget]

  def write(fd, data):
    if left[0] <= 0:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    written = real_write(fd, bytes(data[: left[0]]))
    left[0] -= written
    return written

  monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_a_full_disk_raises_and_leaves_the_old_file_or_nothing(tmp_path, monkeypatch, ext):
  old = tmp_path / f"old.{ext}"
  old.write_bytes(b"an earlier result")
  _disk_filling_after(monkeypatch, 100)
  for path in (old, tmp_path / f"new.{ext}"):
    with pytest.raises(
      image_write.ImageWriteError, match=r"the disk is full \(No space left on device\)"
    ) as error:
      data.write_image(str(path), FORMATS[ext])
    assert error.value.errno == errno.ENOSPC and str(path) in str(error.value)
  assert os.listdir(tmp_path) == [f"old.{ext}"]  # no truncated image, no temporary file
  assert old.read_bytes() == b"an earlier result"


def test_a_write_the_disk_did_not_keep_is_caught_by_the_size_check(tmp_path, monkeypatch):
  real_write = os.write

  def write_half_but_report_all(fd, data):  # as a broken network file system might
    real_write(fd, bytes(data[: len(data) // 2]))
    return len(data)

  monkeypatch.setattr(os, "write", write_half_but_report_all)
  with pytest.raises(image_write.ImageWriteError, match="short write"):
    data.write_image(str(tmp_path / "x.jpg"), FORMATS["jpg"])
  assert os.listdir(tmp_path) == []


def test_a_file_size_limit_gives_a_real_short_write(tmp_path):
  resource = pytest.importorskip("resource")
  signal = pytest.importorskip("signal")
  pixels = _random((64, 64, 3), np.uint8)  # noise: a BMP of 12 KB
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
  resource.setrlimit(resource.RLIMIT_FSIZE, (5000, hard))  # the kernel writes 5000 bytes, no more
  try:
    with pytest.raises(image_write.ImageWriteError, match="too large"):
      data.write_image(str(tmp_path / "x.bmp"), pixels)
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous_handler)
  assert os.listdir(tmp_path) == []


def test_an_existing_file_is_replaced_only_with_overwrite(tmp_path):
  path = tmp_path / "x.png"
  path.write_bytes(b"the user's file")
  with pytest.raises(image_write.ImageWriteError, match="exists"):
    data.write_image(str(path), FORMATS["png"], overwrite=False)
  assert path.read_bytes() == b"the user's file" and os.listdir(tmp_path) == ["x.png"]
  data.write_image(str(path), FORMATS["png"])  # overwrite=True, the default
  np.testing.assert_array_equal(data.read_image_full(str(path)).color, FORMATS["png"])
  data.write_png(str(tmp_path / "new.png"), FORMATS["png"], overwrite=False)
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # as open() creates, not mkstemp's 0600
