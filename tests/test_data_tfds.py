"""TFDS without TensorFlow: tfds_writer / `sr_jax.data.prepare` -> tfds.data_source -> Grain, and
catalog-style div2k."""

import io
import logging
import os
import sys

import numpy as np
from PIL import Image
import pytest

from configs import default
from sr_jax import data
from sr_jax.data import prepare, tfds_source, tfds_writer


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["lr"], y["lr"])
    np.testing.assert_array_equal(x["hr"], y["hr"])


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
  """Seven real-photo crops of different sizes (sorted names = record order)."""
  train_dir, _ = data.embedded_photo_dirs(str(tmp_path_factory.mktemp("cache")))
  folder = tmp_path_factory.mktemp("photos")
  for i, name in enumerate(sorted(os.listdir(train_dir))):
    img = data.read_image(os.path.join(train_dir, name))
    Image.fromarray(img[60 : 160 + 8 * i, 80:196]).save(folder / f"{i}_{name}")
  Image.fromarray(img[:70, :90]).save(folder / "9_last.jpg", quality=90)
  return str(folder)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory, photo_dir):
  """photo_dir prepared as TFDS dataset "photos" (whole images)."""
  folder = str(tmp_path_factory.mktemp("tfds"))
  counts = data.write_tfds_dataset("photos", folder, photo_dir)
  assert counts["train"] == {"files": 7, "skipped": 0, "examples": 7}
  return folder


def _config(**overrides):
  config = default.get_config().data
  config.lock()
  config.update({"scale": 2, "patch_size": 10, **overrides})
  return config


def test_prepare_round_trip_equals_folder_source(photo_dir, tfds_dir):
  assert "tensorflow" not in sys.modules
  source = tfds_source.TfdsImages("photos", "train", tfds_dir)
  assert len(source) == 7
  for i, path in enumerate(data.list_images(photo_dir)):  # records in sorted file order, lossless
    np.testing.assert_array_equal(source[i], data.read_image(path))
    assert source.record_name(i) == os.path.splitext(os.path.basename(path))[0]
  folder = _take(data.create_train_iterator(_config(train_dirs=(photo_dir,)), 5, 4), 4)
  tfds_config = _config(source="tfds", tfds_name="photos", tfds_data_dir=tfds_dir)
  _assert_same_batches(folder, _take(data.create_train_iterator(tfds_config, 5, 4), 4))
  data.write_tfds_dataset("photos_raw", tfds_dir, photo_dir, encoding="raw")  # uint8 pixels, no PNG
  raw_config = _config(source="tfds", tfds_name="photos_raw", tfds_data_dir=tfds_dir)
  _assert_same_batches(folder, _take(data.create_train_iterator(raw_config, 5, 4), 4))
  for process_index in (0, 1):  # shards are the same [i::n] of the same order
    _assert_same_batches(
      _take(
        data.create_train_iterator(_config(train_dirs=(photo_dir,)), 5, 2, process_index, 2), 2
      ),
      _take(data.create_train_iterator(tfds_config, 5, 2, process_index, 2), 2),
    )
  assert "tensorflow" not in sys.modules


def test_tfds_iterator_state_round_trip(tfds_dir):
  config = _config(source="tfds", tfds_name="photos", tfds_data_dir=tfds_dir)
  iterator = data.create_train_iterator(config, 0, 3)
  _take(iterator, 2)
  state = iterator.get_state()
  expected = _take(iterator, 2)
  fresh = data.create_train_iterator(config, 0, 3)
  fresh.set_state(state)
  _assert_same_batches(expected, _take(fresh, 2))


def test_subimage_windows_follow_basicsr():
  # BasicSR extract_subimages: starts every `step`, plus one flush with the edge if > thresh left.
  assert tfds_writer.window_starts(1000, 480, 240, 0) == [0, 240, 480, 520]
  assert tfds_writer.window_starts(960, 480, 240, 0) == [0, 240, 480]
  assert tfds_writer.window_starts(1000, 480, 240, 40) == [0, 240, 480]
  assert tfds_writer.window_starts(300, 480, 240, 0) == [0]
  image = np.arange(50 * 70 * 3, dtype=np.uint8).reshape(50, 70, 3)
  crops = tfds_writer.extract_subimages(image, data.SubImageOptions(crop_size=32, step=16))
  assert len(crops) == 3 * 4 and all(c.shape == (32, 32, 3) for c in crops)
  np.testing.assert_array_equal(crops[-1], image[18:, 38:])


def test_prepare_paired_subimages(tmp_path, photo_dir, capsys):
  hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
  hr_dir.mkdir()
  lr_dir.mkdir()
  for i, path in enumerate(data.list_images(photo_dir)[:3]):
    hr = data.mod_crop(data.read_image(path), 4)
    lr = np.rint(data.make_lr(hr / np.float32(255), 4) * 255).astype(np.uint8)
    Image.fromarray(hr).save(hr_dir / f"{i:04d}.png")
    Image.fromarray(lr).save(lr_dir / f"{i:04d}x4.png")  # DIV2K naming
  counts = data.write_tfds_dataset(
    "paired",
    str(tmp_path / "tfds"),
    str(hr_dir),
    str(lr_dir),
    scale=4,
    options=data.SubImageOptions(crop_size=48, step=24),
  )
  source = tfds_source.TfdsImages("paired", "train", str(tmp_path / "tfds"), paired=True, scale=4)
  assert counts["train"]["examples"] == len(source) > 3
  for i in range(len(source)):
    pair = source[i]
    assert pair["hr"].shape == (48, 48, 3) and pair["lr"].shape == (12, 12, 3)
  # The first sub-image of each file is its top-left corner, in HR and in LR.
  hr0 = data.read_image(str(hr_dir / "0000.png"))
  np.testing.assert_array_equal(source[0]["hr"], hr0[:48, :48])
  assert source.record_name(0) == "0000_s001"
  config = _config(
    scale=4,
    patch_size=6,
    source="tfds",
    tfds_name="paired",
    tfds_data_dir=str(tmp_path / "tfds"),
    degradation="paired",
    augment=False,
  )
  batch = next(data.create_train_iterator(config, 0, 4))
  assert batch["lr"].shape == (4, 6, 6, 3) and batch["hr"].shape == (4, 24, 24, 3)
  # Stored LR crops match the bicubic LR of their HR crops (the LR was made that way).
  for lr, hr in zip(batch["lr"], batch["hr"]):
    assert np.abs(lr - data.make_lr(hr, 4))[1:-1, 1:-1].max() <= 1.01 / 255
  # The command line's hint says how to read it: paired LR is used only with degradation=paired.
  args = [f"--data_dir={tmp_path / 'tfds'}", f"--hr_dir={hr_dir}", f"--lr_dir={lr_dir}"]
  assert prepare.main(["--name=paired_cli", *args, "--scale=4"]) == 0
  assert "--config.data.degradation=paired" in capsys.readouterr().out


def test_prepare_cli_and_errors(tmp_path, photo_dir, capsys):
  out = str(tmp_path / "tfds")
  assert (
    prepare.main(
      [
        "--name=cli_set",
        f"--data_dir={out}",
        f"--hr_dir={photo_dir}",
        f"--val_hr_dir={photo_dir}",
        "--crop_size=64",
        "--num_workers=1",
      ]
    )
    == 0
  )
  assert "--config.data.tfds_name=cli_set" in capsys.readouterr().out
  source = tfds_source.TfdsImages("cli_set", "validation", out)
  assert len(source) > 7 and all(max(source[i].shape[:2]) <= 64 for i in range(len(source)))
  assert prepare.main(["--name=cli_set", f"--data_dir={out}", f"--hr_dir={photo_dir}"]) == 2
  assert "already exists" in capsys.readouterr().err
  assert prepare.main(["--name=Bad-Name", f"--data_dir={out}", f"--hr_dir={photo_dir}"]) == 2
  assert (
    prepare.main(
      ["--name=x", f"--data_dir={out}", f"--hr_dir={photo_dir}", f"--lr_dir={photo_dir}"]
    )
    == 2
  )
  assert "--scale is required" in capsys.readouterr().err
  with pytest.raises(FileNotFoundError, match="not prepared|not found"):
    data.create_train_iterator(
      _config(source="tfds", tfds_name="nothing_here", tfds_data_dir=out), 0, 2
    )
  with pytest.raises(ValueError, match="no split 'test'"):
    data.create_train_iterator(
      _config(source="tfds", tfds_name="cli_set", tfds_data_dir=out, tfds_split="test"), 0, 2
    )
  with pytest.raises(ValueError, match="needs data.tfds_name"):
    data.create_train_iterator(_config(source="tfds"), 0, 2)
  with pytest.raises(ValueError, match=r"features \['hr', 'name'\].*needs \['hr', 'lr'\]"):
    data.create_train_iterator(
      _config(source="tfds", tfds_name="cli_set", tfds_data_dir=out, degradation="paired"), 0, 2
    )


def _write_div2k_like(data_dir, examples):
  """A dataset laid out as the catalog's div2k/bicubic_x4 (features "lr", "hr"; no names)."""
  import tensorflow_datasets as tfds

  class Div2kLike(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="bicubic_x4", version=tfds.core.Version("2.0.0"))
    ]
    code_path = None

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {"lr": tfds.features.Image(), "hr": tfds.features.Image()}
        ),
        supervised_keys=("lr", "hr"),
      )

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, example in enumerate(examples):
        yield f"{i:04d}x4.png", example

  Div2kLike.name = "div2k"
  Div2kLike(
    data_dir=data_dir, config="bicubic_x4", file_format="array_record"
  ).download_and_prepare(download_dir=os.path.join(data_dir, "..", "downloads"))


def test_catalog_div2k_layout_and_bad_records(tmp_path, caplog):
  rng = np.random.default_rng(0)
  good = []
  for _ in range(3):
    hr = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    lr = np.rint(data.make_lr(hr / np.float32(255), 4) * 255).astype(np.uint8)
    good.append({"lr": _png(lr), "hr": _png(hr)})
  corrupt = {"lr": b"\x89PNG not really", "hr": b"garbage"}
  wrong_scale = {
    "lr": _png(np.zeros((20, 20, 3), np.uint8)),
    "hr": _png(np.zeros((64, 64, 3), np.uint8)),
  }
  tiny = {"lr": _png(np.zeros((4, 4, 3), np.uint8)), "hr": _png(np.zeros((16, 16, 3), np.uint8))}
  data_dir = str(tmp_path / "tfds")
  _write_div2k_like(data_dir, good + [corrupt, wrong_scale, tiny])

  config = _config(
    scale=4,
    patch_size=8,
    source="tfds",
    tfds_name="div2k/bicubic_x4",
    tfds_data_dir=data_dir,
    degradation="paired",
  )
  with caplog.at_level(logging.WARNING, logger="absl"):
    batches = _take(data.create_train_iterator(config, 0, 4), 30)
  assert all(b["hr"].shape == (4, 32, 32, 3) and b["lr"].shape == (4, 8, 8, 3) for b in batches)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 3, warnings  # one line per bad record, however often it is drawn
  assert sum("cannot decode" in w for w in warnings) == 1
  assert sum("is not 4 x LR" in w for w in warnings) == 1
  assert sum("smaller than the 32x32 HR crop" in w for w in warnings) == 1
  # Bicubic from the same records: the stored LR is ignored.
  config.degradation, config.augment = "bicubic", False
  batch = next(data.create_train_iterator(config, 0, 4))
  for lr, hr in zip(batch["lr"], batch["hr"]):
    np.testing.assert_array_equal(lr, data.make_lr(hr, 4))


def test_all_records_bad_is_an_error_not_a_hang(tmp_path):
  data_dir = str(tmp_path / "tfds")
  _write_div2k_like(data_dir, [{"lr": b"x", "hr": b"y"}] * 2)
  config = _config(
    scale=4,
    patch_size=8,
    source="tfds",
    tfds_name="div2k/bicubic_x4",
    tfds_data_dir=data_dir,
    degradation="paired",
    num_threads=1,
  )
  with pytest.raises(ValueError, match="none of the 2 records"):
    next(data.create_train_iterator(config, 0, 2))
