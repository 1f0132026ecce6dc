"""Comparison figures: zoomed crops, PSNR captions, python -m sr_jax.compare."""

from flax import nnx
import numpy as np
from PIL import Image
import pytest

from sr_jax import compare, figures, inference
from sr_jax.models.edsr import EDSR

RNG = np.random.default_rng(0)


def test_auto_crop_finds_where_bicubic_fails():
  hr = RNG.random((60, 80, 3)).astype(np.float32)
  bicubic = hr.copy()
  bicubic[30:46, 50:66] = 0.0  # the only error
  assert figures.auto_crop(bicubic, hr, 16) == (30, 50)


def test_zoom_figure_layout_and_crop_checks():
  hr = RNG.random((40, 64, 3)).astype(np.float32)
  panels = [("bicubic", hr * 0.9), ("a", hr), ("b", hr * 0.95)]
  figure = figures.zoom_comparison_figure(panels, hr, 2, crop=(4, 8, 16), zoom_size=64)
  overview_width = round(64 * 64 / 40)  # HR downsized to the zoom height
  assert figure.size == (overview_width + 4 * 64 + 4 * figures.GAP, 64 + figures.CAPTION_HEIGHT)
  with pytest.raises(ValueError, match="not inside"):
    figures.zoom_comparison_figure(panels, hr, 2, crop=(30, 0, 16))
  with pytest.raises(ValueError, match="shape"):
    figures.zoom_comparison_figure([("x", hr[:20])], hr, 2)


@pytest.fixture
def hr_folder(tmp_path):
  folder = tmp_path / "hr"
  folder.mkdir()
  Image.fromarray(RNG.integers(0, 256, (34, 41, 3), dtype=np.uint8)).save(folder / "one.png")
  Image.fromarray(RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / "two.png")
  return folder


def test_cli_bicubic_and_a_model(hr_folder, tmp_path, monkeypatch, capsys):
  tiny = EDSR(2, num_feat=8, num_block=1, rngs=nnx.Rngs(0))
  loaded = []

  def fake_load_model(workdir=None, weights=None, **kwargs):
    loaded.append(workdir or weights)
    return tiny, "edsr step 2"

  monkeypatch.setattr(inference, "load_model", fake_load_model)
  out = tmp_path / "figures"
  assert (
    compare.main(
      [
        f"--hr={hr_folder}",
        f"--output={out}",
        "--workdir=mine=/runs/w",
        "--weights=/w/x.pth",
        "--tile=8",
        "--tile_overlap=6",
      ]
    )
    == 0
  )
  assert loaded == ["/runs/w", "/w/x.pth"]
  assert sorted(p.name for p in out.iterdir()) == ["one.png", "two.png"]
  lines = capsys.readouterr().out.splitlines()
  assert (
    len(lines) == 2 and "bicubic" in lines[0] and "mine" in lines[0] and "edsr step 2" in lines[0]
  )
  # HR 34x41 is mod-cropped to 34x40; the overview is 192 high.
  assert Image.open(out / "one.png").height == 192 + figures.CAPTION_HEIGHT
  assert (
    compare.main([f"--hr={hr_folder}", f"--output={out}", "--workdir=/runs/w", "--scale=3"]) == 2
  )
  assert "disagree" in capsys.readouterr().err


def test_cli_single_file_without_models(hr_folder, tmp_path, capsys):
  out = tmp_path / "figures"
  assert (
    compare.main([f"--hr={hr_folder / 'one.png'}", f"--output={out}", "--scale=2", "--crop=2,3,8"])
    == 0
  )
  assert (out / "one.png").exists() and "bicubic" in capsys.readouterr().out
  assert compare.main([f"--hr={hr_folder}", f"--output={out}", "--scale=2", "--crop=30,0,16"]) == 2
  assert compare.main([f"--hr={hr_folder}", f"--output={out}"]) == 2
  assert compare.split_label("a=/x/y") == ("a", "/x/y") and compare.split_label("/x/a=b") == (
    None,
    "/x/a=b",
  )
