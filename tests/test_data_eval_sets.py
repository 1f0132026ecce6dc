"""Named evaluation sets (eval.datasets) resolved under a data root, with expected counts."""

import os

import numpy as np
from PIL import Image
import pytest

from sr_jax import data
from sr_jax.data import eval_sets


def _images(folder, n, size=(12, 12)):
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    Image.fromarray(np.full(size + (3,), 20 * i % 256, np.uint8)).save(
      os.path.join(folder, f"img{i:03d}.png")
    )


def test_layouts_resolve_case_insensitively(tmp_path):
  root = str(tmp_path)
  _images(os.path.join(root, "benchmark", "Set5", "HR"), 5)  # EDSR release layout
  _images(os.path.join(root, "benchmark", "Set5", "LR_bicubic", "X2"), 5)
  _images(os.path.join(root, "set14", "GTmod12"), 14)  # BasicSR layout, lower-case folder
  _images(os.path.join(root, "BSDS100"), 100, (4, 4))  # flat folder under another name
  _images(os.path.join(root, "DIV2K", "DIV2K_valid_HR"), 100, (4, 4))
  assert data.resolve_eval_set("set5", root) == (
    "Set5",
    os.path.join(root, "benchmark", "Set5", "HR"),
  )
  assert data.resolve_eval_set("Set14", root) == (
    "Set14",
    os.path.join(root, "set14", "GTmod12"),
  )
  assert data.resolve_eval_set("b100", root) == ("B100", os.path.join(root, "BSDS100"))
  assert data.resolve_eval_set("div2k_val", root).name == "DIV2K_val"


def test_missing_set_says_where_to_put_it(tmp_path, monkeypatch):
  root = str(tmp_path)
  with pytest.raises(FileNotFoundError) as error:
    data.resolve_eval_set("urban100", root)
  message = str(error.value)
  assert "Urban100, 100 HR images" in message and os.path.join(root, "Urban100", "HR") in message
  assert "eval.data_root" in message
  # A folder with another count (a partial copy, or HR and LR mixed) is not taken for the set.
  _images(os.path.join(root, "Set5"), 3)
  with pytest.raises(FileNotFoundError, match=r"found only .*Set5 \(3 images\)"):
    data.resolve_eval_set("set5", root)
  with pytest.raises(KeyError, match="unknown evaluation set 'set6'"):
    data.resolve_eval_set("set6", root)
  monkeypatch.setenv(eval_sets.DATA_ROOT_ENV, root)
  assert data.data_root("") == root


def test_eval_folders_combines_dirs_and_datasets(tmp_path):
  root, cache = str(tmp_path / "root"), str(tmp_path / "cache")
  _images(os.path.join(root, "Manga109"), 109, (4, 4))
  plain = str(tmp_path / "my_val")
  _images(plain, 2)
  folders = data.eval_folders(("embedded:val",), ("manga109", plain), root, cache_dir=cache)
  _, val_dir = data.embedded_photo_dirs(cache)
  assert folders == [
    ("embedded_val", val_dir),
    ("Manga109", os.path.join(root, "Manga109")),
    ("my_val", plain),
  ]
  with pytest.raises(ValueError, match="reported as \\['my_val'\\]"):
    data.eval_folders((plain,), (plain,), root)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    data.eval_folders((), (str(tmp_path / "nowhere"),), root)
  images = data.load_eval_folder(folders[2].path, 2)
  assert len(images) == 2 and images[0].hr.shape == (12, 12, 3)
