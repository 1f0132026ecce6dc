"""Tests of sr_jax.data: imresize, image reading, the Grain training pipeline, eval folders."""

import logging
import math
import os

import grain
import numpy as np
from PIL import Image
import pytest

from configs import default
from sr_jax import data

SCALES = (2, 3, 4)


# --- A line-by-line numpy transcription of BasicSR's basicsr/utils/matlab_functions.py ------------
# (torch ops replaced by numpy; float32 like torch), the reference for our matmul version.


def _basicsr_cubic(x):
  absx = np.abs(x)
  absx2, absx3 = absx**2, absx**3
  return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (
    -0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2
  ) * ((absx > 1) & (absx <= 2))


def _basicsr_weights_indices(in_length, out_length, scale, kernel_width, antialiasing):
  if scale < 1 and antialiasing:
    kernel_width = kernel_width / scale
  x = np.linspace(1, out_length, out_length, dtype=np.float32)
  u = x / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(u - kernel_width / 2)
  p = math.ceil(kernel_width) + 2
  indices = left[:, None] + np.linspace(0, p - 1, p, dtype=np.float32)[None, :]
  distance_to_center = u[:, None] - indices
  if scale < 1 and antialiasing:
    weights = scale * _basicsr_cubic(distance_to_center * scale)
  else:
    weights = _basicsr_cubic(distance_to_center)
  weights = (weights / weights.sum(1, keepdims=True)).astype(np.float32)
  weights_zero_tmp = (weights == 0).sum(0)
  if not math.isclose(weights_zero_tmp[0], 0, rel_tol=1e-6):
    indices, weights = indices[:, 1 : p - 1], weights[:, 1 : p - 1]
  if not math.isclose(weights_zero_tmp[-1], 0, rel_tol=1e-6):
    indices, weights = indices[:, 0 : p - 2], weights[:, 0 : p - 2]
  sym_len_s = -indices.min() + 1
  sym_len_e = indices.max() - in_length
  indices = indices + sym_len_s - 1
  return weights, indices, int(sym_len_s), int(sym_len_e)


def _basicsr_imresize(img, scale, antialiasing=True):
  img = img.transpose(2, 0, 1).astype(np.float32)
  in_c, in_h, in_w = img.shape
  out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
  weights_h, indices_h, sym_len_hs, sym_len_he = _basicsr_weights_indices(
    in_h, out_h, scale, 4, antialiasing
  )
  weights_w, indices_w, sym_len_ws, sym_len_we = _basicsr_weights_indices(
    in_w, out_w, scale, 4, antialiasing
  )
  img_aug = np.concatenate(
    [img[:, :sym_len_hs][:, ::-1], img, img[:, -sym_len_he:][:, ::-1]], axis=1
  )
  out_1 = np.zeros((in_c, out_h, in_w), np.float32)
  kernel_width = weights_h.shape[1]
  for i in range(out_h):
    idx = int(indices_h[i][0])
    for j in range(in_c):
      out_1[j, i, :] = img_aug[j, idx : idx + kernel_width, :].T @ weights_h[i]
  out_1_aug = np.concatenate(
    [out_1[:, :, :sym_len_ws][:, :, ::-1], out_1, out_1[:, :, -sym_len_we:][:, :, ::-1]], axis=2
  )
  out_2 = np.zeros((in_c, out_h, out_w), np.float32)
  kernel_width = weights_w.shape[1]
  for i in range(out_w):
    idx = int(indices_w[i][0])
    for j in range(in_c):
      out_2[j, :, i] = out_1_aug[j, :, idx : idx + kernel_width] @ weights_w[i]
  return out_2.transpose(1, 2, 0)


# --- Fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_dirs(tmp_path_factory):
  return data.embedded_photo_dirs(str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, embedded_dirs):
  """Six small real-photo crops (fast to decode)."""
  folder = tmp_path_factory.mktemp("photos")
  train_dir, _ = embedded_dirs
  for i, name in enumerate(sorted(os.listdir(train_dir))):
    img = data.read_image(os.path.join(train_dir, name))
    Image.fromarray(img[100 : 180 + 4 * i, 100:190]).save(folder / f"{name[:-4]}.png")
  return str(folder)


@pytest.fixture(scope="module")
def solid_dir(tmp_path_factory):
  """Eight solid-colour images: any crop tells which file it came from (red channel = 10 * i)."""
  folder = tmp_path_factory.mktemp("solid")
  for i in range(8):
    Image.fromarray(np.full((20, 24, 3), (10 * i, 50, 90), np.uint8)).save(folder / f"img{i}.png")
  return str(folder)


def _config(train_dir, scale=4, patch_size=8, **overrides):
  config = default.get_config().data
  config.lock()  # a misspelt key is an error
  config.train_dirs = (train_dir,)
  config.scale = scale
  config.patch_size = patch_size
  config.update(overrides)
  return config


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["lr"], y["lr"])
    np.testing.assert_array_equal(x["hr"], y["hr"])


# --- imresize -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
def test_imresize_matches_basicsr_transcription(scale):
  img = np.random.default_rng(scale).random((36, 45, 3), dtype=np.float32)
  for factor in (1 / scale, scale):
    ours, ref = data.imresize(img, factor), _basicsr_imresize(img, factor)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_imresize_interior_matches_pil_bicubic(scale, embedded_dirs):
  hr = data.read_image(os.path.join(embedded_dirs[0], "astronaut.png"))[:120, :96] / 255.0
  ours = data.imresize(hr, 1 / scale)
  pil = np.stack(
    [
      np.asarray(
        Image.fromarray(hr[:, :, c].astype(np.float32), "F").resize(
          (ours.shape[1], ours.shape[0]), Image.Resampling.BICUBIC
        )
      )
      for c in range(3)
    ],
    axis=-1,
  )
  margin = 2  # border pixels differ: PIL renormalises truncated kernels, MATLAB mirrors
  np.testing.assert_allclose(
    ours[margin:-margin, margin:-margin], pil[margin:-margin, margin:-margin], atol=1e-4
  )
  assert np.abs(ours[0] - pil[0]).max() > 1e-3


def test_imresize_shapes():
  img = np.random.default_rng(0).random((50, 144, 3), dtype=np.float32)
  assert data.imresize(img, 1 / 3).shape == (17, 48, 3)  # ceil, and 144/3 is exactly 48
  assert data.imresize(img[:, :, 0], 1 / 2).shape == (25, 72)
  batch = np.stack([img, 1 - img])
  up = data.imresize(batch[:, :12, :12], 4)
  assert up.shape == (2, 48, 48, 3)
  np.testing.assert_allclose(up[1], data.imresize(1 - img[:12, :12], 4), atol=1e-6)
  np.testing.assert_allclose(data.imresize(np.full((8, 8, 3), 0.3), 1 / 4), 0.3, atol=1e-6)
  baseline = data.bicubic_baseline(img[:10, :10], 3)
  assert baseline.shape == (30, 30, 3) and baseline.min() >= 0 and baseline.max() <= 1


# --- image reading ------------------------------------------------------------------------------


def test_read_image_converts_modes_to_rgb(tmp_path):
  gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
  Image.fromarray(gray).save(tmp_path / "gray.png")
  np.testing.assert_array_equal(
    data.read_image(str(tmp_path / "gray.png")), np.repeat(gray[..., None], 3, 2)
  )

  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[..., 0] = 200
  rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
  Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
  out = data.read_image(str(tmp_path / "rgba.png"))
  np.testing.assert_array_equal(out[0, 0], (200, 0, 0))
  np.testing.assert_array_equal(out[3, 3], (255, 255, 255))  # composited on white

  Image.fromarray(np.full((5, 6, 3), (10, 20, 30), np.uint8)).convert("P").save(
    tmp_path / "pal.png"
  )
  assert data.read_image(str(tmp_path / "pal.png")).shape == (5, 6, 3)

  Image.fromarray(np.full((3, 3), 65535, np.uint16)).save(tmp_path / "deep.png")
  np.testing.assert_array_equal(data.read_image(str(tmp_path / "deep.png")), 255)

  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: rotate 90 degrees to display
  Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(tmp_path / "rot.jpg", exif=exif)
  assert data.read_image(str(tmp_path / "rot.jpg")).shape == (16, 8, 3)


def test_read_image_error_names_file(tmp_path):
  path = tmp_path / "bad.png"
  path.write_bytes(b"not an image")
  with pytest.raises(data.ImageReadError, match="bad.png"):
    data.read_image(str(path))


def test_list_images(tmp_path):
  (tmp_path / "sub").mkdir()
  for name in ("b.PNG", "a.jpg", "sub/c.webp", "notes.txt", "._a.png"):
    (tmp_path / name).write_bytes(b"")
  assert data.list_images(str(tmp_path)) == [
    str(tmp_path / n) for n in ("a.jpg", "b.PNG", "sub/c.webp")
  ]
  with pytest.raises(FileNotFoundError, match="missing"):
    data.list_images([str(tmp_path / "missing")])


# --- training pipeline --------------------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
def test_batch_shapes_and_lr_hr_alignment(scale, photo_dir):
  config = _config(photo_dir, scale=scale, patch_size=6)
  batch = next(data.create_train_iterator(config, seed=0, local_batch_size=3))
  assert batch["lr"].shape == (3, 6, 6, 3) and batch["lr"].dtype == np.float32
  assert batch["hr"].shape == (3, 6 * scale, 6 * scale, 3) and batch["hr"].dtype == np.float32
  for key in ("lr", "hr"):
    assert batch[key].min() >= 0 and batch[key].max() <= 1
  # LR is the MATLAB bicubic downscale of its own HR patch (flips commute with it; the
  # 8-bit rounding of LR may move a value by one level).
  for lr, hr in zip(batch["lr"], batch["hr"]):
    np.testing.assert_allclose(
      lr, np.clip(data.imresize(hr, 1 / scale), 0, 1), atol=0.5 / 255 + 1e-6
    )
    assert np.mean(lr != data.make_lr(hr, scale)) < 0.01
  config.quantize_lr, config.augment = False, False
  batch = next(data.create_train_iterator(config, seed=0, local_batch_size=3))
  np.testing.assert_allclose(
    batch["lr"], np.clip(data.imresize(batch["hr"], 1 / scale), 0, 1), atol=1e-6
  )


def test_determinism_and_seed(photo_dir):
  config = _config(photo_dir)
  first = _take(data.create_train_iterator(config, seed=7, local_batch_size=4), 3)
  _assert_same_batches(
    first, _take(data.create_train_iterator(config, seed=7, local_batch_size=4), 3)
  )
  other = _take(data.create_train_iterator(config, seed=8, local_batch_size=4), 3)
  assert not np.array_equal(first[0]["hr"], other[0]["hr"])
  # Threads only change speed, not the batches.
  config.num_threads = 1
  _assert_same_batches(
    first, _take(data.create_train_iterator(config, seed=7, local_batch_size=4), 3)
  )


def test_iterator_state_round_trip(photo_dir):
  config = _config(photo_dir)
  iterator = data.create_train_iterator(config, seed=0, local_batch_size=4)
  _take(iterator, 2)
  state = iterator.get_state()
  expected = _take(iterator, 3)
  fresh = data.create_train_iterator(config, seed=0, local_batch_size=4)
  fresh.set_state(state)
  _assert_same_batches(expected, _take(fresh, 3))


def test_iterator_state_in_orbax_checkpoint(photo_dir, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  config = _config(photo_dir)
  iterator = data.create_train_iterator(config, seed=0, local_batch_size=2)
  _take(iterator, 5)
  with ocp.CheckpointManager(
    tmp_path / "ckpt",
    item_names=("data",),
    item_handlers={"data": grain.checkpoint.CheckpointHandler()},
  ) as manager:
    manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
  expected = _take(iterator, 2)
  fresh = data.create_train_iterator(config, seed=0, local_batch_size=2)
  with ocp.CheckpointManager(
    tmp_path / "ckpt",
    item_names=("data",),
    item_handlers={"data": grain.checkpoint.CheckpointHandler()},
  ) as manager:
    manager.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  _assert_same_batches(expected, _take(fresh, 2))


def _files_seen(solid_dir, process_index, process_count):
  config = _config(solid_dir, scale=2, patch_size=4)
  batches = _take(data.create_train_iterator(config, 0, 4, process_index, process_count), 6)
  return {int(round(v * 255)) // 10 for b in batches for v in b["hr"][:, 0, 0, 0]}


def test_processes_see_disjoint_files(solid_dir):
  seen_0, seen_1 = _files_seen(solid_dir, 0, 2), _files_seen(solid_dir, 1, 2)
  assert seen_0 == {0, 2, 4, 6} and seen_1 == {1, 3, 5, 7}  # sorted files [i::2]


def test_bad_files_skipped_with_one_warning_each(photo_dir, tmp_path, caplog):
  folder = tmp_path / "mixed"
  folder.mkdir()
  good = sorted(os.listdir(photo_dir))[:2]
  for name in good:
    (folder / name).write_bytes(open(os.path.join(photo_dir, name), "rb").read())
  (folder / "truncated.png").write_bytes(open(os.path.join(photo_dir, good[0]), "rb").read()[:400])
  (folder / "text.jpg").write_text("hello")
  Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "tiny.png")
  with caplog.at_level(logging.INFO, logger="absl"):
    batch = next(data.create_train_iterator(_config(str(folder)), seed=0, local_batch_size=4))
  assert batch["hr"].shape == (4, 32, 32, 3)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 3
  for name in ("truncated.png", "text.jpg", "tiny.png"):
    assert sum(name in w for w in warnings) == 1, warnings
  summary = [r.getMessage() for r in caplog.records if "image files found" in r.getMessage()]
  assert len(summary) == 1 and "uses 2, skipped 3 (2 unreadable, 1 smaller" in summary[0]


def test_no_usable_image_is_a_clear_error(tmp_path):
  Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "tiny.png")
  with pytest.raises(ValueError, match="data.train_dirs.*no usable training image"):
    data.create_train_iterator(_config(str(tmp_path)), seed=0, local_batch_size=2)
  with pytest.raises(FileNotFoundError, match="data.train_dirs.*nowhere"):
    data.create_train_iterator(_config(str(tmp_path / "nowhere")), seed=0, local_batch_size=2)


def test_images_over_cache_budget_are_read_per_example(photo_dir):
  config = _config(photo_dir)
  expected = _take(data.create_train_iterator(config, seed=3, local_batch_size=4), 2)
  config.cache_max_mb = 0
  _assert_same_batches(
    expected, _take(data.create_train_iterator(config, seed=3, local_batch_size=4), 2)
  )


# --- evaluation images and embedded data ---------------------------------------------------------


def test_load_eval_folder(tmp_path):
  img = np.random.default_rng(0).integers(0, 256, (50, 38, 3), dtype=np.uint8)
  Image.fromarray(img).save(tmp_path / "b.png")
  Image.fromarray(img[:26, :31]).save(tmp_path / "a.png")
  (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
  images = data.load_eval_folder(str(tmp_path), 3)
  assert [im.name for im in images] == ["a", "b"]
  assert images[1].hr.shape == (48, 36, 3) and images[1].lr.shape == (16, 12, 3)
  np.testing.assert_array_equal(images[1].hr, img[:48, :36] / np.float32(255))
  np.testing.assert_array_equal(images[1].lr, data.make_lr(images[1].hr, 3))
  assert images[1].lr.dtype == images[1].hr.dtype == np.float32


def test_embedded_photo_dirs(embedded_dirs):
  train_dir, val_dir = embedded_dirs
  train, val = set(os.listdir(train_dir)), set(os.listdir(val_dir))
  assert len(train) >= 4 and len(val) >= 2 and not train & val
  assert all(n.endswith(".png") for n in train | val)
  for name in val:
    h, w, _ = data.read_image(os.path.join(val_dir, name)).shape
    assert h <= 256 and w <= 256
  mtimes = {n: os.path.getmtime(os.path.join(train_dir, n)) for n in train}
  cache = os.path.dirname(os.path.dirname(train_dir))
  assert data.embedded_photo_dirs(cache) == embedded_dirs  # idempotent: nothing rewritten
  assert mtimes == {n: os.path.getmtime(os.path.join(train_dir, n)) for n in train}
  assert data.resolve_dirs(("embedded:train", val_dir, "embedded:val"), cache) == [
    train_dir,
    val_dir,
    val_dir,
  ]
  with pytest.raises(ValueError, match="embedded:test"):
    data.resolve_dirs("embedded:test", cache)
