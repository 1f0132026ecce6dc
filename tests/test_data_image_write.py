"""Image writing (sr_jax.data.image_write) read back with image_io; the one alpha compositing."""

import os

import numpy as np
from PIL import Image
import pytest

from sr_jax import data


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
