"""PSNR and SSIM on the Y channel (ITU-R BT.601), as BasicSR and the SR literature report them.

Inputs are RGB images in [0, 1] (float) or uint8; they are quantised to 8 bits first, as a saved
image would be, and `crop_border` pixels are removed from each side.
"""

import numpy as np
from scipy import ndimage


def to_uint8(image: np.ndarray) -> np.ndarray:
  """[0, 1] float (or uint8) image -> rounded uint8, as written to a PNG."""
  if image.dtype == np.uint8:
    return image
  return np.clip(np.round(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)


def rgb_to_y(image_uint8: np.ndarray) -> np.ndarray:
  """BT.601 luma in [16, 235] (float64), MATLAB `rgb2ycbcr` convention."""
  rgb = image_uint8.astype(np.float64) / 255.0
  return 16.0 + rgb @ np.array([65.481, 128.553, 24.966])


def _y_cropped(image: np.ndarray, crop_border: int) -> np.ndarray:
  y = rgb_to_y(to_uint8(image))
  if crop_border:
    y = y[crop_border:-crop_border, crop_border:-crop_border]
  return y


def _check_shapes(sr: np.ndarray, hr: np.ndarray):
  if sr.shape != hr.shape:
    raise ValueError(f"SR shape {sr.shape} != HR shape {hr.shape}")


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
  """PSNR (dB) between the Y channels of two RGB images, borders cropped."""
  _check_shapes(sr, hr)
  mse = np.mean((_y_cropped(sr, crop_border) - _y_cropped(hr, crop_border)) ** 2)
  return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _ssim_gray(a: np.ndarray, b: np.ndarray) -> float:
  """Wang et al. SSIM: 11x11 Gaussian window (sigma 1.5), valid region, data range 255."""
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

  def blur(x):
    return ndimage.gaussian_filter(x, sigma=1.5, truncate=3.5, mode="constant")[5:-5, 5:-5]

  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a**2
  var_b = blur(b * b) - mu_b**2
  cov = blur(a * b) - mu_a * mu_b
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
    (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
  )
  return float(ssim_map.mean())


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
  """SSIM between the Y channels of two RGB images, borders cropped."""
  _check_shapes(sr, hr)
  return _ssim_gray(_y_cropped(sr, crop_border), _y_cropped(hr, crop_border))
