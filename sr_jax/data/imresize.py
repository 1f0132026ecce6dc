"""MATLAB-compatible bicubic `imresize`, as BasicSR reproduces it, in numpy.

Port of `imresize` / `calculate_weights_indices` from BasicSR's
`basicsr/utils/matlab_functions.py`, which reproduces MATLAB's `imresize(img, scale, 'bicubic')`:
cubic kernel with a = -0.5; when downscaling (scale < 1) with antialiasing, the kernel is stretched
by 1/scale (width 4/scale input pixels) and its weights scaled by `scale`; each output pixel's
weights are normalised to sum to 1; pixels outside the image are taken by symmetric padding
(edge pixel repeated: ... c b a | a b c ... x y z | z y x ...). Output size is ceil(size * scale);
values are neither clipped nor rounded.

Instead of BasicSR's per-row loops, the taps of each axis are folded, with the symmetric
padding, into one dense [out, in] matrix, so a resize is one matmul per axis. This is
the same linear map up to float32 summation order (differences ~1e-7).

Borders vs PIL: PIL's `Image.resize(..., BICUBIC)` uses the same antialiased a = -0.5 kernel and
the same pixel-centre mapping, so interior pixels agree to float precision. Near the border
PIL drops the taps that fall outside the image and renormalises the remaining weights, while
MATLAB (and this module) mirror the image into the padding, so the first and last 2 output
pixels of each axis differ when downscaling by any factor (about 2 * scale when upscaling).
"""

import functools
import math

import numpy as np

_KERNEL_WIDTH = 4.0  # bicubic support in input pixels at scale 1


def cubic(x: np.ndarray) -> np.ndarray:
  """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
  ax = np.abs(x)
  ax2, ax3 = ax * ax, ax * ax * ax
  inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
  outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
  return inner + outer


def output_size(in_size: int, scale: float) -> int:
  """ceil(in_size * scale), robust to float error (144 * (1/3) must give 48, not 49)."""
  return int(math.ceil(round(in_size * scale, 6)))


def _symmetric_index(index: np.ndarray, length: int) -> np.ndarray:
  """Maps 0-based indices outside [0, length) into it by symmetric (edge-repeating) reflection."""
  index = np.mod(index, 2 * length)
  return np.where(index >= length, 2 * length - 1 - index, index)


@functools.lru_cache(maxsize=128)
def resize_matrix(
  in_length: int, out_length: int, scale: float, antialiasing: bool = True
) -> np.ndarray:
  """The [out_length, in_length] float32 matrix that resizes one axis like MATLAB `imresize`.

  Args:
    in_length: input size along the axis.
    out_length: output size along the axis.
    scale: output / input scale factor (< 1 downscales).
    antialiasing: widen the kernel when downscaling (MATLAB's default).

  Returns:
    Matrix `m` such that `m @ x` resizes a column `x` of length `in_length`.
  """
  antialias = scale < 1 and antialiasing
  kernel_width = _KERNEL_WIDTH / scale if antialias else _KERNEL_WIDTH
  # 1-based output coordinates mapped to input space (0.5 in output lands on 0.5 in input).
  x = np.arange(1, out_length + 1, dtype=np.float64)
  u = x / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(u - kernel_width / 2)
  taps = math.ceil(kernel_width) + 2  # one extra tap each side; its weight is 0 when unused
  indices = left[:, None] + np.arange(taps)[None, :]  # 1-based, may fall outside the image
  distance = u[:, None] - indices
  weights = scale * cubic(distance * scale) if antialias else cubic(distance)
  weights /= weights.sum(axis=1, keepdims=True)
  columns = _symmetric_index(indices.astype(np.int64) - 1, in_length)
  rows = np.repeat(np.arange(out_length), taps)
  matrix = np.zeros((out_length, in_length), np.float64)
  np.add.at(matrix, (rows, columns.ravel()), weights.ravel())  # padding taps fold onto their mirror
  matrix = matrix.astype(np.float32)
  matrix.flags.writeable = False  # shared through the cache
  return matrix


def imresize(img: np.ndarray, scale: float, antialiasing: bool = True) -> np.ndarray:
  """Resizes like MATLAB `imresize(img, scale, 'bicubic')` (BasicSR's numpy path).

  Args:
    img: [h, w], [h, w, c] or [..., h, w, c] array; converted to float32, values kept as they
      are (use [0, 1] images; uint8 input is *not* rescaled).
    scale: the same factor for height and width, e.g. 1/4 to downscale by 4, 4 to upscale.
    antialiasing: widen the kernel when downscaling (MATLAB's default).

  Returns:
    float32 array with height ceil(h * scale) and width ceil(w * scale), neither clipped nor
    rounded.
  """
  if scale <= 0:
    raise ValueError(f"imresize: scale must be > 0, got {scale}")
  img = np.asarray(img, np.float32)
  if img.ndim < 2:
    raise ValueError(f"imresize: expected an [h, w] or [..., h, w, c] image, got shape {img.shape}")
  gray = img.ndim == 2
  if gray:
    img = img[:, :, None]
  in_h, in_w = img.shape[-3], img.shape[-2]
  m_h = resize_matrix(in_h, output_size(in_h, scale), float(scale), antialiasing)
  m_w = resize_matrix(in_w, output_size(in_w, scale), float(scale), antialiasing)
  # Height first, then width, as BasicSR does.
  out = np.moveaxis(img, -3, -1) @ m_h.T  # [..., w, c, out_h]
  out = np.moveaxis(out, -3, -1) @ m_w.T  # [..., c, out_h, out_w]
  out = np.ascontiguousarray(np.moveaxis(out, -3, -1))  # [..., out_h, out_w, c]
  return out[..., 0] if gray else out


def bicubic_baseline(lr: np.ndarray, scale: int) -> np.ndarray:
  """The model-free 'bicubic' SR baseline of the papers' tables: MATLAB bicubic upscaling,
  clipped to [0, 1] (the models' JAX resize is `sr_jax.models.layers.resize_bicubic`).

  Args:
    lr: [h, w, c] or [n, h, w, c] image(s) in [0, 1].
    scale: integer upscaling factor.

  Returns:
    float32 [..., h * scale, w * scale, c] in [0, 1].
  """
  return np.clip(imresize(lr, scale), 0.0, 1.0)
