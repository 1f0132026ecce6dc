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
