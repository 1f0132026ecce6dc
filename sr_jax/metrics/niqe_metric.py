"""NIQE (Natural Image Quality Evaluator, Mittal et al. 2013): a no-reference quality score, lower
is better. Same numbers as BasicSR's `calculate_niqe(img, crop_border, input_order='HWC',
convert_to='y')` (itself within 1e-4 of the official MATLAB code): bit-identical to BasicSR 1.4.2
run with MKL in its reproducible mode (`MKL_CBWR` set). BasicSR with MKL's default, per-CPU code
paths rounds its half-size bicubic differently, which moves its own NIQE by up to 2e-3 on photos
with flat regions (tests/test_niqe.py).

Port of `basicsr/metrics/niqe.py` (BasicSR 1.4.2, Apache-2.0, Copyright xinntao): the Y channel
(BT.601, quantised to integers), cropped to whole 96x96 blocks; per block and at two scales (the
second a MATLAB bicubic half-size), 18 AGGD features of the mean-subtracted contrast-normalised
image; the distance between their multivariate Gaussian and the one fitted on pristine images.
The pristine model `niqe_pris_params.npz` is BasicSR's file, shipped beside this module
(license: LICENSE-BasicSR.txt). The arithmetic keeps BasicSR's dtypes (float32 images, float64
statistics, PyTorch's summation order) so that rounding matches, not only the formulas.
"""

from __future__ import annotations

import functools
import pathlib
import warnings

import numpy as np
from scipy import ndimage, special

from sr_jax.data.imresize import cubic
from sr_jax.metrics.psnr_ssim import to_uint8

__all__ = ["niqe", "BLOCK_SIZE"]

BLOCK_SIZE = 96  # the official recommended block size; blocks do not overlap
_PARAMS_FILE = pathlib.Path(__file__).with_name("niqe_pris_params.npz")
# Shifts whose neighbour products give the pairwise features (horizontal, vertical, diagonals).
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@functools.lru_cache(maxsize=64)
def _half_size_taps(length: int) -> tuple[np.ndarray, np.ndarray, int, int]:
  """BasicSR's `calculate_weights_indices(length, ceil(length / 2), 0.5, antialiasing=True)` in
  its float32 arithmetic: [out, taps] weights, each output's first tap in the padded axis, and
  the symmetric padding before / after."""
  out_length = -(-length // 2)
  kernel_width = 4 / 0.5  # the bicubic support widened by 1/scale (antialiasing)
  u = np.arange(1, out_length + 1, dtype=np.float32) / np.float32(0.5) + np.float32(-0.5)
  left = np.floor(u - np.float32(kernel_width / 2))
  taps = int(kernel_width) + 2
  indices = left[:, None] + np.arange(taps, dtype=np.float32)[None, :]
  weights = np.float32(0.5) * cubic((u[:, None] - indices) * np.float32(0.5))
  weights = weights / weights.sum(axis=1, keepdims=True)
  zeros = (weights == 0).sum(axis=0)
  if zeros[0]:  # BasicSR's narrowing of an all-zero first / last tap column
    indices, weights = indices[:, 1 : taps - 1], weights[:, 1 : taps - 1]
  if zeros[-1]:
    indices, weights = indices[:, : taps - 2], weights[:, : taps - 2]
  pad_before, pad_after = int(-indices.min() + 1), int(indices.max() - length)
  first = (indices[:, 0] + pad_before - 1).astype(np.int64)
  return np.ascontiguousarray(weights), first, pad_before, max(pad_after, 0)


def _symmetric_pad(image: np.ndarray, before: int, after: int, axis: int) -> np.ndarray:
  head = np.flip(np.take(image, np.arange(before), axis=axis), axis)
  tail = np.flip(
    np.take(image, np.arange(image.shape[axis] - after, image.shape[axis]), axis), axis
  )
  return np.concatenate([head, image, tail], axis=axis)


def _half_size(gray: np.ndarray) -> np.ndarray:
  """BasicSR's `imresize(gray, 0.5)` (MATLAB bicubic, antialiased) to the last bit.

  The same linear map as `sr_jax.data.imresize`, but summed in the order BasicSR's PyTorch
  `mv` calls sum it on x86 (MKL in its reproducible mode, `MKL_CBWR` set): NIQE's contrast
  normalisation amplifies the last bit of flat regions into its AGGD fits (up to 1e-2 on
  photos with black backgrounds when the sums are merely float32-accurate).
  """
  gray = gray.astype(np.float32)
  weights, first, before, after = _half_size_taps(gray.shape[0])
  padded = _symmetric_pad(gray, before, after, axis=0)
  rows = np.zeros((len(first), gray.shape[1]), np.float32)
  for k in range(weights.shape[1]):  # along the height: tap after tap
    rows = rows + padded[first + k] * weights[:, k : k + 1]
  weights, first, before, after = _half_size_taps(gray.shape[1])
  padded = _symmetric_pad(rows, before, after, axis=1)
  if weights.shape[1] != 8:
    raise AssertionError(f"niqe: {weights.shape[1]} bicubic taps, expected 8")
  p = [padded[:, first + k] * weights[:, k] for k in range(8)]
  # Along the width, MKL's 8-element dot products: this order for rows in groups of 4, tap
  # after tap for the remaining rows.
  out = (((((p[0] + p[1]) + p[3]) + (p[2] + p[4])) + p[5]) + p[6]) + p[7]
  tail = out.shape[0] - out.shape[0] % 4
  sequential = p[0][tail:]
  for k in range(1, 8):
    sequential = sequential + p[k][tail:]
  out[tail:] = sequential
  return out


@functools.cache
def _pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  params = np.load(_PARAMS_FILE)
  return params["mu_pris_param"], params["cov_pris_param"], params["gaussian_window"]


@functools.cache
def _aggd_grid() -> tuple[np.ndarray, np.ndarray]:
  """The shape parameters tried (0.2 .. 10 by 0.001) and their moment ratios."""
  shape = np.arange(0.2, 10.001, 0.001)
  inv = np.reciprocal(shape)
  ratio = np.square(special.gamma(inv * 2)) / (special.gamma(inv) * special.gamma(inv * 3))
  return shape, ratio


def _aggd_params(block: np.ndarray) -> tuple[float, float, float]:
  """Asymmetric generalised Gaussian fit (alpha, beta_left, beta_right) by moment matching."""
  block = block.flatten()
  shape, ratio = _aggd_grid()
  left_std = np.sqrt(np.mean(block[block < 0] ** 2))
  right_std = np.sqrt(np.mean(block[block > 0] ** 2))
  gammahat = left_std / right_std
  rhat = (np.mean(np.abs(block))) ** 2 / np.mean(block**2)
  rhatnorm = (rhat * (gammahat**3 + 1) * (gammahat + 1)) / ((gammahat**2 + 1) ** 2)
  alpha = shape[np.argmin((ratio - rhatnorm) ** 2)]
  spread = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
  return alpha, left_std * spread, right_std * spread


def _block_features(block: np.ndarray) -> list[float]:
  """The 18 features of one block: its own AGGD fit, then one per neighbour direction."""
  alpha, beta_l, beta_r = _aggd_params(block)
  features = [alpha, (beta_l + beta_r) / 2]
  for shift in _SHIFTS:
    # np.roll wraps around inside the block, as the reference does.
    alpha, beta_l, beta_r = _aggd_params(block * np.roll(block, shift, axis=(0, 1)))
    mean = (beta_r - beta_l) * (special.gamma(2 / alpha) / special.gamma(1 / alpha))
    features.extend([alpha, mean, beta_l, beta_r])
  return features


def _niqe_gray(gray: np.ndarray) -> float:
  """NIQE of a float32 [h, w] image in [0, 255] with at least one whole block."""
  mu_pristine, cov_pristine, window = _pristine_model()
  blocks_h, blocks_w = gray.shape[0] // BLOCK_SIZE, gray.shape[1] // BLOCK_SIZE
  gray = gray[: blocks_h * BLOCK_SIZE, : blocks_w * BLOCK_SIZE]
  per_scale = []
  for scale in (1, 2):
    mu = ndimage.convolve(gray, window, mode="nearest")
    sigma = np.sqrt(np.abs(ndimage.convolve(np.square(gray), window, mode="nearest") - mu**2))
    normalized = (gray - mu) / (sigma + 1)
    size = BLOCK_SIZE // scale
    with warnings.catch_warnings():  # a flat block's fit is NaN (empty means): left out below
      warnings.simplefilter("ignore", RuntimeWarning)
      blocks = [
        _block_features(normalized[i * size : (i + 1) * size, j * size : (j + 1) * size])
        for j in range(blocks_w)
        for i in range(blocks_h)
      ]
    per_scale.append(np.array(blocks))
    if scale == 1:
      gray = _half_size(gray / 255.0) * 255.0
  features = np.concatenate(per_scale, axis=1)
  textured = features[~np.isnan(features).any(axis=1)]  # a flat block has no AGGD fit
  if len(textured) < 2:  # no covariance: BasicSR fails in pinv ("SVD did not converge")
    raise ValueError(
      f"niqe: {len(textured)} of {len(features)} 96x96 blocks have texture; the score needs 2"
    )
  mu_image = np.nanmean(features, axis=0)
  cov_image = np.cov(textured, rowvar=False)
  inv_cov = np.linalg.pinv((cov_pristine + cov_image) / 2)
  diff = mu_pristine - mu_image
  return float(np.squeeze(np.sqrt(diff @ inv_cov @ diff.T)))


def _y_float32(image_uint8: np.ndarray) -> np.ndarray:
  """BT.601 Y in [16, 235] as BasicSR's `to_y_channel` computes it (float32 steps kept)."""
  rgb = image_uint8.astype(np.float32) / np.float32(255.0)
  bgr = rgb[..., ::-1]  # BasicSR works on BGR: the same sum, in its order
  y = (np.dot(bgr, [24.966, 128.553, 65.481]) + 16.0) / 255.0
  return y.astype(np.float32) * 255.0


def niqe(image: np.ndarray, crop_border: int) -> float:
  """NIQE of an RGB image on its Y channel (lower is better), as BasicSR's `calculate_niqe`.

  Args:
    image: [H, W, 3] RGB, uint8 (or float in [0, 1], quantised to 8 bits first as PSNR does).
    crop_border: pixels removed from each side before scoring (BasicSR: the SR scale).

  Returns:
    The NIQE score. Only whole 96x96 blocks count: the image (after cropping) must hold two
    (192x96 or 96x192 at least; one block has no covariance).

  Raises:
    ValueError: not an RGB image, fewer than two blocks, or fewer than two with texture.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"niqe: expected an [H, W, 3] RGB image, got shape {image.shape}")
  if crop_border < 0:
    raise ValueError(f"niqe: crop_border must be >= 0, got {crop_border}")
  y = _y_float32(to_uint8(image))
  if crop_border:
    y = y[crop_border:-crop_border, crop_border:-crop_border]
  if (y.shape[0] // BLOCK_SIZE) * (y.shape[1] // BLOCK_SIZE) < 2:
    raise ValueError(
      f"niqe: needs two {BLOCK_SIZE}x{BLOCK_SIZE} blocks (192x96 or 96x192) after cropping "
      f"{crop_border} from each side, got {y.shape[0]}x{y.shape[1]} (image "
      f"{image.shape[0]}x{image.shape[1]})"
    )
  return _niqe_gray(y.round())  # rounded as MATLAB's uint8 input would be
