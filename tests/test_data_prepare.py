"""python -m sr_jax.data.prepare on hostile folders: one bad file name does not stop the build."""

import logging
import os

import numpy as np
from PIL import Image
import pytest

from sr_jax.data import prepare, tfds_source


def test_a_non_utf8_file_name_is_skipped_in_one_line(tmp_path, capsys, caplog):
  hr = tmp_path / "hr"
  hr.mkdir()
  pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(hr / "ok.png")
  latin1 = os.path.join(os.fsencode(hr), b"caf\xe9.png")  # "café" in Latin-1: not UTF-8
  try:
    Image.fromarray(pixels).save(os.fsdecode(latin1), format="PNG")
  except (OSError, UnicodeError):
    pytest.skip("this file system refuses non-UTF-8 file names")
  out = str(tmp_path / "tfds")
  with caplog.at_level(logging.WARNING):
    argv = ["--name=names", f"--data_dir={out}", f"--hr_dir={hr}", "--num_workers=1"]
    assert prepare.main(argv) == 0
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  warnings = [w for w in warnings if "skipped" in w]  # not TFDS's own
  assert len(warnings) == 1 and warnings[0].endswith(
    "caf\\xe9.png: the file name is not valid UTF-8; skipped"
  ), warnings
  assert "wrote 1 examples of 'names'" in capsys.readouterr().out
  assert len(tfds_source.TfdsImages("names", "train", out)) == 1
