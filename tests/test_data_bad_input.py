"""Bad input: odd image modes converted, broken files skipped with a warning each, pairs checked."""

import logging
import os

import numpy as np
from PIL import Image
import pytest

from configs import default
from sr_jax import data
from sr_jax.data import sources

SIDE = 40  # every usable test image is at least this big; the HR crop is 32 (patch 8 x scale 4)


def _data_config():
  config = default.get_config().data
  config.lock()  # a misspelt key is an error
  return config


def _rgb(seed, h=SIDE, w=SIDE + 8):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
  """A folder of every kind of file; returns (folder, {name: expected uint8 RGB or None})."""
  folder = tmp_path_factory.mktemp("mixed")
  expected = {}

  def save(name, image, expect, **kwargs):
    image.save(folder / name, **kwargs)
    expected[name] = expect

  rgb = _rgb(0)
  save("a_rgb.png", Image.fromarray(rgb), rgb)
  gray = rgb[..., 0]
  save("b_gray.png", Image.fromarray(gray), np.repeat(gray[..., None], 3, 2))
  rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
  rgba[:5, :, 3] = 0  # transparent rows: composited on white
  expect = rgb.copy()
  expect[:5] = 255
  save("c_rgba.png", Image.fromarray(rgba), expect)
  palette = Image.fromarray(rgb).quantize(16)
  save("d_palette.png", palette, np.asarray(palette.convert("RGB")))
  deep = (np.arange(SIDE * SIDE, dtype=np.uint16).reshape(SIDE, SIDE) % 256) * 257  # 16-bit
  save(
    "e_gray16.png",
    Image.fromarray(deep),
    np.repeat((deep // 257).astype(np.uint8)[..., None], 3, 2),
  )
  save("f_cmyk.tif", Image.fromarray(rgb).convert("CMYK"), rgb)  # lossless CMYK round trip
  exif = Image.Exif()
  exif[0x0112] = 6  # stored sideways; viewers rotate 90 degrees clockwise
  save("g_exif_rotated.png", Image.fromarray(rgb), np.rot90(rgb, -1), exif=exif)
  save(
    "h_bilevel.png",
    Image.fromarray(gray > 128).convert("1"),
    np.repeat(((gray > 128) * 255).astype(np.uint8)[..., None], 3, 2),
  )
  save("i_cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), "lossy", quality=95)

  good_png = (folder / "a_rgb.png").read_bytes()
  (folder / "x_truncated.png").write_bytes(good_png[: len(good_png) // 2])
  (folder / "x_not_an_image.jpg").write_text("hello, I am text")
  (folder / "x_empty.png").write_bytes(b"")
  expected.update({"x_truncated.png": None, "x_not_an_image.jpg": None, "x_empty.png": None})
  save("y_too_small.png", Image.fromarray(_rgb(1, 20, 60)), "small")
  return str(folder), expected


def test_every_mode_converted_or_skipped(mixed_dir, caplog):
  folder, expected = mixed_dir
  paths = data.list_images(folder)
  assert sorted(os.path.basename(p) for p in paths) == sorted(expected)
  with caplog.at_level(logging.WARNING, logger="absl"):
    usable, images, counts = sources.load_training_images(paths, 32, 2**30)
  assert counts == {"usable": 9, "unreadable": 3, "too_small": 1, "mismatched": 0}
  for path, image in zip(usable, images):
    name = os.path.basename(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
    if isinstance(expected[name], np.ndarray):
      np.testing.assert_array_equal(image, expected[name], err_msg=name)
  cmyk_jpeg = images[[os.path.basename(p) for p in usable].index("i_cmyk.jpg")]
  assert (
    np.abs(cmyk_jpeg.astype(int) - expected["a_rgb.png"]).mean() < 20
  )  # lossy, but not inverted
  warnings = [r.getMessage() for r in caplog.records]
  assert len(warnings) == 4  # one line per skipped file, each naming it
  for name in ("x_truncated.png", "x_not_an_image.jpg", "x_empty.png", "y_too_small.png"):
    assert sum(name in w for w in warnings) == 1, (name, warnings)


def test_training_run_survives_bad_files(mixed_dir, caplog):
  folder, _ = mixed_dir
  config = _data_config()
  config.update({"train_dirs": (folder,), "scale": 4, "patch_size": 8})
  with caplog.at_level(logging.INFO, logger="absl"):
    iterator = data.create_train_iterator(config, seed=0, local_batch_size=8)
    batches = [next(iterator) for _ in range(3)]
  assert all(b["hr"].shape == (8, 32, 32, 3) and np.isfinite(b["lr"]).all() for b in batches)
  summary = [r.getMessage() for r in caplog.records if "image files found" in r.getMessage()]
  assert len(summary) == 1
  assert (
    "13 image files found" in summary[0]
    and "uses 9, skipped 4 (3 unreadable, 1 smaller" in summary[0]
  )


def test_file_broken_after_start_skips_nothing_silently(tmp_path):
  # Over the cache budget, files are re-read per example: a file broken later raises with its name.
  for i in range(2):
    Image.fromarray(_rgb(i)).save(tmp_path / f"{i}.png")
  config = _data_config()
  config.update({"train_dirs": (str(tmp_path),), "scale": 4, "patch_size": 8, "cache_max_mb": 0})
  iterator = data.create_train_iterator(config, seed=0, local_batch_size=2)
  next(iterator)
  (tmp_path / "0.png").write_bytes(b"broken")
  (tmp_path / "1.png").write_bytes(b"broken")
  with pytest.raises(data.ImageReadError, match=r"\d\.png"):
    for _ in range(600):
      next(iterator)


# --- paired LR / HR folders ---------------------------------------------------------------------


def _paired(tmp_path, names_hr, names_lr, scale=2, lr_size=(20, 24)):
  hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
  hr_dir.mkdir(exist_ok=True)
  lr_dir.mkdir(exist_ok=True)
  for i, name in enumerate(names_hr):
    Image.fromarray(_rgb(i, lr_size[0] * scale, lr_size[1] * scale)).save(hr_dir / name)
  for i, name in enumerate(names_lr):
    Image.fromarray(_rgb(i, *lr_size)).save(lr_dir / name)
  return str(hr_dir), str(lr_dir)


def test_pairs_match_div2k_and_plain_names(tmp_path):
  hr_dir, lr_dir = _paired(
    tmp_path, ["0001.png", "0002.png", "b.png"], ["0001x2.png", "0002x2.png", "b.png"]
  )
  pairs = data.pair_folders(hr_dir, lr_dir, 2)
  assert [os.path.basename(p.lr) for p in pairs] == ["0001x2.png", "0002x2.png", "b.png"]
  config = _data_config()
  config.update(
    {
      "train_dirs": (hr_dir,),
      "train_lr_dirs": (lr_dir,),
      "scale": 2,
      "patch_size": 8,
      "degradation": "paired",
      "augment": False,
    }
  )
  batch = next(data.create_train_iterator(config, 0, 4))
  assert batch["lr"].shape == (4, 8, 8, 3) and batch["hr"].shape == (4, 16, 16, 3)


def test_mismatched_pairs_are_one_clear_error(tmp_path):
  hr_dir, lr_dir = _paired(
    tmp_path, ["0001.png", "0002.png", "0003.png"], ["0001x2.png", "0004x2.png"]
  )
  Image.fromarray(_rgb(9, 41, 48)).save(os.path.join(hr_dir, "0005.png"))  # 41 is not 2 x 20
  Image.fromarray(_rgb(9, 20, 24)).save(os.path.join(lr_dir, "0005x2.png"))
  with pytest.raises(data.PairingError) as error:
    data.pair_folders(hr_dir, lr_dir, 2)
  message = str(error.value)
  for expected in (
    "2 HR image(s) without an LR image",
    "0002.png",
    "0003.png",
    "1 LR image(s) without an HR image",
    "0004x2.png",
    "1 pair(s) whose HR size is not exactly 2 x the LR size",
    "0005.png is 48x41",
  ):
    assert expected in message, (expected, message)
  config = _data_config()
  config.update(
    {
      "train_dirs": (hr_dir,),
      "train_lr_dirs": (lr_dir,),
      "scale": 2,
      "patch_size": 8,
      "degradation": "paired",
    }
  )
  with pytest.raises(
    ValueError, match="(?s)data.train_dirs: paired folders.*suffix, e.g. 0001x2.png.*0004x2.png"
  ):
    data.create_train_iterator(config, 0, 2)
  with pytest.raises(data.PairingError, match="0003.png"):
    data.write_tfds_dataset("pairs", str(tmp_path / "tfds"), hr_dir, lr_dir, scale=2)
  assert not os.path.exists(tmp_path / "tfds")  # checked before anything is written
  config.train_lr_dirs = ()
  with pytest.raises(ValueError, match="needs data.train_lr_dirs"):
    data.create_train_iterator(config, 0, 2)
