"""PSNR-Y / SSIM-Y against scikit-image's implementations on the same arrays."""

import numpy as np
import pytest
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sr_jax import metrics


@pytest.fixture(name="pair")
def fixture_pair():
  hr = skdata.astronaut()[100:196, 150:246]
  noise = np.random.default_rng(0).normal(0, 8, hr.shape)
  sr = np.clip(hr + noise, 0, 255).astype(np.uint8)
  return sr, hr


def test_y_channel_is_bt601():
  white, black = np.full((1, 1, 3), 255, np.uint8), np.zeros((1, 1, 3), np.uint8)
  assert metrics.rgb_to_y(white)[0, 0] == pytest.approx(235.0)
  assert metrics.rgb_to_y(black)[0, 0] == pytest.approx(16.0)


@pytest.mark.parametrize("border", [0, 2, 4])
def test_psnr_and_ssim_match_skimage(pair, border):
  sr, hr = pair
  crop = (slice(border, -border or None),) * 2
  y_sr, y_hr = metrics.rgb_to_y(sr)[crop], metrics.rgb_to_y(hr)[crop]
  assert metrics.psnr_y(sr, hr, border) == pytest.approx(
    peak_signal_noise_ratio(y_hr, y_sr, data_range=255), abs=1e-9
  )
  expected = structural_similarity(
    y_sr, y_hr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
  )
  assert metrics.ssim_y(sr, hr, border) == pytest.approx(expected, abs=1e-9)


def test_float_inputs_are_quantised_like_saved_images(pair):
  sr, hr = pair
  assert metrics.psnr_y(sr / 255.0, hr / 255.0, 4) == pytest.approx(metrics.psnr_y(sr, hr, 4))
  assert metrics.psnr_y(hr, hr, 4) == float("inf")
  assert metrics.ssim_y(hr, hr, 4) == pytest.approx(1.0)


def test_shape_mismatch_is_an_error(pair):
  sr, hr = pair
  with pytest.raises(ValueError, match="shape"):
    metrics.psnr_y(sr[:-1], hr, 0)


def test_flat_image_is_left_out_of_the_means_and_json_stays_valid(tmp_path, caplog):
  """A flat eval image has infinite PSNR (bicubic equals HR): skipped with a warning, never
  written as Infinity."""
  import json

  from PIL import Image

  from sr_jax import evaluate

  folder = tmp_path / "val"
  folder.mkdir()
  Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(folder / "flat.png")
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "noise.png")
  sets = evaluate.load_eval_sets([str(folder)], 2)
  with caplog.at_level("WARNING", logger="absl"):
    results = evaluate.evaluate(lambda lr: lr.repeat(2, 0).repeat(2, 1), sets, 2)
  assert results["val"]["num_images"] == 1 and np.isfinite(results["val"]["psnr_y"])
  assert "flat left out of the means" in caplog.text
  evaluate.Reporter(str(tmp_path), 2, "nearest").report(1, results)
  json.loads((tmp_path / "eval_results.json").read_text(), parse_constant=lambda c: 1 / 0)
  only_flat = tmp_path / "flat_only"
  only_flat.mkdir()
  (folder / "flat.png").rename(only_flat / "flat.png")
  nearest = lambda lr: lr.repeat(2, 0).repeat(2, 1)  # noqa: E731
  results = evaluate.evaluate(nearest, evaluate.load_eval_sets([str(only_flat)], 2), 2)
  assert results["flat_only"]["psnr_y"] is None and results["flat_only"]["num_images"] == 0
  assert "| flat_only | bicubic | - | - | 0 |" in evaluate.markdown_table(
    evaluate.results_document(1, 2, results)
  )


def test_scorer_rejects_bad_metric_names():
  from configs import default
  from sr_jax import evaluate

  scorer = evaluate.create_scorer(default.get_config().eval)
  assert scorer.names == ("psnr_y", "ssim_y") and scorer.lpips is None
  with pytest.raises(ValueError, match=r"eval.metrics=\('psnr_y', 'brisque'\)"):
    evaluate.Scorer(("psnr_y", "brisque"))
  with pytest.raises(ValueError, match="with psnr_y"):
    evaluate.Scorer(("ssim_y", "niqe"))


def test_evaluate_with_niqe_and_lpips(tmp_path):
  """eval.metrics with niqe and lpips: per-set means beside bicubic's, table, figure captions."""
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  lpips = pytest.importorskip("lpips", reason="parity extras not installed: make parity-deps")
  import json

  from PIL import Image

  from sr_jax import evaluate

  torch.manual_seed(0)
  reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
  torch.save(reference.state_dict(), tmp_path / "lpips_alex.pth")
  lp = metrics.LPIPS("alex", weights=tmp_path / "lpips_alex.pth")
  scorer = evaluate.Scorer(("psnr_y", "ssim_y", "niqe", "lpips"), lp)
  folder = tmp_path / "val"
  folder.mkdir()
  for name, photo in (("astronaut", skdata.astronaut()), ("coffee", skdata.coffee())):
    Image.fromarray(photo[40:160, 150:350]).save(folder / f"{name}.png")  # 120x200 HR: 2 blocks
  sets = evaluate.load_eval_sets([str(folder)], 2, scorer=scorer)
  outputs = {}
  results = evaluate.evaluate(lambda lr: lr.repeat(2, 0).repeat(2, 1), sets, 2, outputs=outputs)
  r = results["val"]
  assert list(r) == [
    *("psnr_y", "ssim_y", "niqe", "lpips"),
    *("bicubic_psnr_y", "bicubic_ssim_y", "bicubic_niqe", "bicubic_lpips"),
    *("hr_niqe", "num_images"),
  ]
  images = sets[0].images
  sr = [outputs["val", im.name] for im in images]
  assert r["niqe"] == pytest.approx(np.mean([metrics.niqe(s, 2) for s in sr]))
  assert r["hr_niqe"] == pytest.approx(np.mean([metrics.niqe(im.hr, 2) for im in images]))
  # LPIPS of the 8-bit images with the border cropped, as a saved SR image would be scored.
  crop = np.s_[2:-2, 2:-2]
  quantised = [
    (metrics.to_uint8(a)[crop] / 255.0)[None].astype(np.float32) for a in (sr[0], images[0].hr)
  ]
  first = float(lp(*quantised)[0])
  assert scorer(sr[0], images[0].hr, 2)["lpips"] == pytest.approx(first, abs=1e-6)
  assert r["bicubic_lpips"] < r["lpips"]  # nearest-neighbour upscaling looks worse than bicubic

  table = evaluate.markdown_table(evaluate.results_document(5, 2, results))
  assert "| dataset | method | PSNR-Y (dB) | SSIM-Y | NIQE | LPIPS | images |" in table
  assert f"| val | HR | - | - | {r['hr_niqe']:.3f} | - | 2 |" in table
  evaluate.Reporter(str(tmp_path), 2, "nearest").report(5, results, sets, outputs)
  assert json.loads((tmp_path / "eval_results.json").read_text())["datasets"]["val"] == r
  # Two caption lines (PSNR, then NIQE and LPIPS): the figure is one line taller than PSNR's.
  figure = Image.open(tmp_path / "comparison.png")
  psnr_only = evaluate.figures.zoom_comparison_figure([("b", sets[0].bicubic[0])], images[0].hr, 2)
  assert figure.height == psnr_only.height + evaluate.figures.LINE_HEIGHT
  assert scorer.caption(sr[0], images[0].hr, 2).count("\n") == 1
  assert "NIQE" in scorer.caption(sr[0], images[0].hr, 2)
