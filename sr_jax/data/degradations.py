"""Real-ESRGAN's second-order degradation (blur, resize, noise, JPEG, twice) in numpy.

A port of the "high-order degradation model" of Real-ESRGAN (Wang et al., 2021): BasicSR's
`basicsr/data/degradations.py` (kernels, noise) and `realesrgan/models/realesrgan_model.py`
(`feed_data`: the order of the operations, the probabilities). The options are
`config.data.realesrgan` (configs/default.py), with the names and defaults of
`options/train_realesrgan_x4plus.yml`. One example's LR is a pure function of its HR patch and a
`numpy.random.Generator`, so the pipeline stays deterministic given the seed.

Per example (HR float [0, 1] -> LR of size HR / scale, rounded to 8-bit levels):
  blur (one of iso / aniso / generalized / plateau gaussian, or sinc, 7..21 px)
  -> random resize (up / down / keep; area, bilinear or bicubic)
  -> gaussian or poisson noise (colour or gray) -> JPEG
  -> [with second_blur_prob] blur -> random resize relative to the target size -> noise
  -> in random order: {resize to the target size + final sinc filter, JPEG}.

Where this differs from the reference (PyTorch, on GPU):
  - JPEG is PIL's encoder with an integer quality, not the differentiable DiffJPEG (same standard
    quantisation tables and 4:2:0 chroma subsampling, different rounding).
  - Resizes follow `torch.nn.functional.interpolate` (area = adaptive average pooling; bilinear
    and bicubic with a = -0.75, half-pixel centres, no antialiasing, edge clamping) but map
    coordinates by the output / input size ratio rather than the requested scale factor.
  - It degrades the training patch itself (reflect-padded at its borders) rather than a 400 px
    crop later cut down to the patch; likewise `usm_sharpen` (data.usm) sharpens the patch, not
    the 400 px crop, so its 51 px blur sees reflected content within 25 px of the patch border.
"""

import functools
import io
import math
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image
from scipy import signal, sparse, special

KERNEL_TYPES = (
  "iso",
  "aniso",
  "generalized_iso",
  "generalized_aniso",
  "plateau_iso",
  "plateau_aniso",
)
RESIZE_MODES = ("area", "bilinear", "bicubic")


# --- Blur kernels ---------------------------------------------------------------------------------


def _grid(kernel_size: int) -> np.ndarray:
  """[k, k, 2] (x, y) offsets from the kernel centre."""
  ax = np.arange(-(kernel_size // 2), kernel_size // 2 + 1, dtype=np.float64)
  xx, yy = np.meshgrid(ax, ax)
  return np.stack([xx, yy], axis=-1)


def _covariance(sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
  """2x2 covariance of a gaussian with axes sigma_x, sigma_y rotated by theta."""
  rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
  return rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T


def _mahalanobis2(kernel_size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
  """Squared Mahalanobis distance of each kernel tap from the centre."""
  grid = _grid(kernel_size)
  inverse = np.linalg.inv(_covariance(sigma_x, sigma_y, theta))
  return np.sum((grid @ inverse) * grid, axis=-1)


def _normalized(kernel: np.ndarray) -> np.ndarray:
  return (kernel / kernel.sum()).astype(np.float32)


def gaussian_kernel(kernel_size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
  """Anisotropic gaussian (isotropic when sigma_x == sigma_y), summing to 1."""
  return _normalized(np.exp(-0.5 * _mahalanobis2(kernel_size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(
  kernel_size: int, sigma_x: float, sigma_y: float, theta: float, beta: float
) -> np.ndarray:
  """exp(-0.5 * d^(2 beta)): flatter top (beta > 1) or heavier tails (beta < 1) than a gaussian."""
  return _normalized(
    np.exp(-0.5 * np.power(_mahalanobis2(kernel_size, sigma_x, sigma_y, theta), beta))
  )


def plateau_kernel(
  kernel_size: int, sigma_x: float, sigma_y: float, theta: float, beta: float
) -> np.ndarray:
  """1 / (1 + d^(2 beta)): a plateau-shaped blur."""
  return _normalized(
    1.0 / (np.power(_mahalanobis2(kernel_size, sigma_x, sigma_y, theta), beta) + 1.0)
  )


def sinc_kernel(cutoff: float, kernel_size: int, pad_to: int = 0) -> np.ndarray:
  """Circular low-pass (2-D sinc, jinc) kernel with cutoff frequency `cutoff` (radians).

  It imitates ringing and overshoot artifacts. Zero-padded to `pad_to` x `pad_to` if larger.
  """
  grid = _grid(kernel_size)
  radius = np.sqrt(np.sum(grid * grid, axis=-1))
  with np.errstate(divide="ignore", invalid="ignore"):
    kernel = cutoff * special.j1(cutoff * radius) / (2 * np.pi * radius)
  kernel[kernel_size // 2, kernel_size // 2] = cutoff**2 / (4 * np.pi)  # the limit at r = 0
  kernel = _normalized(kernel)
  if pad_to > kernel_size:
    pad = (pad_to - kernel_size) // 2
    kernel = np.pad(kernel, pad)
  return kernel


def _beta(beta_range: Sequence[float], rng: np.random.Generator) -> float:
  """Half the time below 1, half above (BasicSR's rule; beta_range[0] < 1 < beta_range[1])."""
  if rng.uniform() < 0.5:
    return rng.uniform(beta_range[0], 1.0)
  return rng.uniform(1.0, beta_range[1])


def random_mixed_kernel(
  kernel_list: Sequence[str],
  kernel_prob: Sequence[float],
  kernel_size: int,
  sigma_range: Sequence[float],
  betag_range: Sequence[float],
  betap_range: Sequence[float],
  rng: np.random.Generator,
) -> np.ndarray:
  """One blur kernel of a random type of `kernel_list` (BasicSR's `random_mixed_kernels`)."""
  probs = np.asarray(kernel_prob, np.float64)
  kind = kernel_list[rng.choice(len(kernel_list), p=probs / probs.sum())]
  if kind not in KERNEL_TYPES:
    raise ValueError(f"unknown blur kernel type {kind!r}; known: {KERNEL_TYPES}")
  sigma_x = rng.uniform(*sigma_range)
  if kind.endswith("iso") and not kind.endswith("aniso"):
    sigma_y, theta = sigma_x, 0.0
  else:
    sigma_y, theta = rng.uniform(*sigma_range), rng.uniform(-math.pi, math.pi)
  if kind.startswith("generalized"):
    return generalized_gaussian_kernel(
      kernel_size, sigma_x, sigma_y, theta, _beta(betag_range, rng)
    )
  if kind.startswith("plateau"):
    return plateau_kernel(kernel_size, sigma_x, sigma_y, theta, _beta(betap_range, rng))
  return gaussian_kernel(kernel_size, sigma_x, sigma_y, theta)


def random_blur_kernel(
  options: Mapping[str, Any], rng: np.random.Generator, order: int
) -> np.ndarray:
  """The first (order=1) or second (order=2) blur kernel, padded to blur_kernel_size."""
  suffix = "" if order == 1 else "2"
  max_size = int(options["blur_kernel_size"])
  kernel_size = int(rng.choice(np.arange(7, max_size + 1, 2)))
  if rng.uniform() < options["sinc_prob" + suffix]:
    low = np.pi / 3 if kernel_size < 13 else np.pi / 5  # wider kernels allow lower cutoffs
    return sinc_kernel(rng.uniform(low, np.pi), kernel_size, pad_to=max_size)
  kernel = random_mixed_kernel(
    options["kernel_list" + suffix],
    options["kernel_prob" + suffix],
    kernel_size,
    options["blur_sigma" + suffix],
    options["betag_range" + suffix],
    options["betap_range" + suffix],
    rng,
  )
  return np.pad(kernel, (max_size - kernel_size) // 2)


def filter2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Correlates an [h, w, c] image with a [k, k] kernel, reflect-padded (as BasicSR's filter2D)."""
  pad = kernel.shape[0] // 2
  if pad >= min(img.shape[:2]):  # reflect padding needs pad < side; fall back to edge
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
  else:
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
  flipped = kernel[::-1, ::-1, None]  # convolution with the flipped kernel = correlation
  return signal.fftconvolve(padded, flipped, mode="valid", axes=(0, 1)).astype(np.float32)


# --- Unsharp masking of the HR target ------------------------------------------------------------

USM_RADIUS = 51  # BasicSR USMSharp(radius=50): made odd
# cv2.getGaussianKernel(ksize, sigma=0)'s sigma: 0.3 * ((ksize - 1) / 2 - 1) + 0.8 = 8 for 51.
USM_SIGMA = 0.3 * ((USM_RADIUS - 1) * 0.5 - 1) + 0.8


def usm_sharpen(img: np.ndarray, weight: float = 0.5, threshold: float = 10.0) -> np.ndarray:
  """BasicSR's `USMSharp()(img)`, the sharpened HR target of Real-ESRGAN's training, on an
  [h, w, c] float image in [0, 1].

  sharp = clip(img + weight * (img - blur), 0, 1), blended in where the residual exceeds
  `threshold` (8-bit levels), through a blurred mask: soft * sharp + (1 - soft) * img; blur =
  51 px gaussian (sigma 8), reflect-padded.
  """
  kernel = gaussian_kernel(USM_RADIUS, USM_SIGMA, USM_SIGMA, 0.0)
  residual = img - filter2d(img, kernel)
  mask = (np.abs(residual) * 255 > threshold).astype(np.float32)
  soft_mask = filter2d(mask, kernel)
  sharp = np.clip(img + weight * residual, 0, 1)
  return (soft_mask * sharp + (1 - soft_mask) * img).astype(np.float32)


# --- Resizing as torch.nn.functional.interpolate -------------------------------------------------


def _cubic_torch(x: np.ndarray, a: float = -0.75) -> np.ndarray:
  ax = np.abs(x)
  return np.where(
    ax <= 1,
    ((a + 2) * ax - (a + 3)) * ax * ax + 1,
    np.where(ax < 2, ((a * ax - 5 * a) * ax + 8 * a) * ax - 4 * a, 0.0),
  )


@functools.lru_cache(maxsize=256)
def interpolate_matrix(in_length: int, out_length: int, mode: str) -> np.ndarray:
  """[out, in] matrix resizing one axis like torch `interpolate(mode, align_corners=False)`."""
  matrix = np.zeros((out_length, in_length), np.float64)
  rows = np.arange(out_length)
  ratio = in_length / out_length
  if mode == "area":  # adaptive average pooling
    starts = np.floor(rows * ratio).astype(int)
    ends = np.ceil((rows + 1) * ratio).astype(int)
    for row, (start, end) in enumerate(zip(starts, ends)):
      matrix[row, start:end] = 1.0 / (end - start)
  elif mode == "bilinear":
    src = np.maximum((rows + 0.5) * ratio - 0.5, 0.0)
    left = np.minimum(np.floor(src).astype(int), in_length - 1)
    right = np.minimum(left + 1, in_length - 1)
    frac = src - left
    np.add.at(matrix, (rows, left), 1.0 - frac)
    np.add.at(matrix, (rows, right), frac)
  elif mode == "bicubic":
    src = (rows + 0.5) * ratio - 0.5
    base = np.floor(src).astype(int)
    for tap in range(-1, 3):
      weight = _cubic_torch(src - (base + tap))
      np.add.at(matrix, (rows, np.clip(base + tap, 0, in_length - 1)), weight)
  else:
    raise ValueError(f"unknown resize mode {mode!r}; known: {RESIZE_MODES}")
  matrix = matrix.astype(np.float32)
  matrix.flags.writeable = False  # shared through the cache
  return matrix


@functools.lru_cache(maxsize=256)
def _sparse_interpolate_matrix(in_length: int, out_length: int, mode: str) -> sparse.csr_matrix:
  # At most a few taps per row: sparse products are ~20x faster than dense ones here.
  return sparse.csr_matrix(interpolate_matrix(in_length, out_length, mode))


def resize(img: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
  """Resizes an [h, w, c] float image to [height, width, c] (see `interpolate_matrix`)."""
  height, width = max(int(height), 1), max(int(width), 1)
  h, w, c = img.shape
  m_h = _sparse_interpolate_matrix(h, height, mode)
  m_w = _sparse_interpolate_matrix(w, width, mode)
  out = (m_h @ np.asarray(img, np.float32).reshape(h, w * c)).reshape(height, w, c)
  out = (m_w @ out.transpose(1, 0, 2).reshape(w, height * c)).reshape(width, height, c)
  return np.ascontiguousarray(out.transpose(1, 0, 2), dtype=np.float32)


# --- Noise and JPEG ------------------------------------------------------------------------------


def add_gaussian_noise(
  img: np.ndarray, sigma: float, gray: bool, rng: np.random.Generator
) -> np.ndarray:
  """Adds N(0, sigma / 255) noise, the same in every channel when `gray`."""
  shape = img.shape[:2] + (1,) if gray else img.shape
  noise = rng.standard_normal(shape).astype(np.float32) * np.float32(sigma / 255.0)
  return img + noise


def add_poisson_noise(
  img: np.ndarray, scale: float, gray: bool, rng: np.random.Generator
) -> np.ndarray:
  """Adds shot noise (BasicSR's `generate_poisson_noise`), scaled by `scale`."""
  if gray:  # BT.601 luma, as cv2.COLOR_RGB2GRAY
    base = (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
  else:
    base = img
  base = np.clip(np.rint(base * 255.0), 0, 255) / 255.0
  levels = 2 ** np.ceil(np.log2(max(len(np.unique(base)), 1)))
  noisy = rng.poisson(base * levels) / levels
  return (img + (noisy - base).astype(np.float32) * np.float32(scale)).astype(np.float32)


def random_noise(
  img: np.ndarray, options: Mapping[str, Any], rng: np.random.Generator, order: int
) -> np.ndarray:
  """Gaussian (with gaussian_noise_prob) or poisson noise, colour or gray, clipped to [0, 1]."""
  suffix = "" if order == 1 else "2"
  if rng.uniform() < options["gaussian_noise_prob" + suffix]:
    sigma = rng.uniform(*options["noise_range" + suffix])
    gray = rng.uniform() < options["gray_noise_prob" + suffix]
    img = add_gaussian_noise(img, sigma, gray, rng)
  else:
    scale = rng.uniform(*options["poisson_scale_range" + suffix])
    gray = rng.uniform() < options["gray_noise_prob" + suffix]
    img = add_poisson_noise(img, scale, gray, rng)
  return np.clip(img, 0.0, 1.0)


def jpeg(img: np.ndarray, quality: float) -> np.ndarray:
  """JPEG round trip (PIL, 4:2:0) of a float [0, 1] RGB image."""
  uint8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(uint8).save(buffer, format="JPEG", quality=int(round(quality)))
  with Image.open(buffer) as decoded:
    return np.asarray(decoded.convert("RGB"), np.float32) / np.float32(255)


# --- The pipeline --------------------------------------------------------------------------------


def _random_resize(
  img: np.ndarray,
  base_h: int,
  base_w: int,
  options: Mapping[str, Any],
  rng: np.random.Generator,
  order: int,
) -> np.ndarray:
  """Resizes to (base_h, base_w) times a random up / down / keep factor, in a random mode."""
  suffix = "" if order == 1 else "2"
  probs = np.asarray(options["resize_prob" + suffix], np.float64)
  direction = rng.choice(3, p=probs / probs.sum())  # up, down, keep
  low, high = options["resize_range" + suffix]
  factor = (rng.uniform(1.0, high), rng.uniform(low, 1.0), 1.0)[direction]
  mode = RESIZE_MODES[rng.integers(len(RESIZE_MODES))]
  return resize(img, int(base_h * factor), int(base_w * factor), mode)


def realesrgan_degrade(
  hr: np.ndarray, scale: int, rng: np.random.Generator, options: Mapping[str, Any]
) -> np.ndarray:
  """LR image made from an HR image by Real-ESRGAN's second-order degradation.

  Args:
    hr: float [h, w, 3] in [0, 1]; h and w multiples of `scale`.
    scale: SR factor; the LR is [h / scale, w / scale, 3].
    rng: randomness of this example (all random choices come from it).
    options: every option of `config.data.realesrgan` (configs/default.py: names and defaults
      of Real-ESRGAN's train_realesrgan_x4plus.yml).

  Returns:
    float32 [h / scale, w / scale, 3] in [0, 1], rounded to 8-bit levels.
  """
  height, width = hr.shape[0], hr.shape[1]
  target_h, target_w = height // scale, width // scale
  kernel1 = random_blur_kernel(options, rng, 1)
  kernel2 = random_blur_kernel(options, rng, 2)
  max_size = int(options["blur_kernel_size"])
  if rng.uniform() < options["final_sinc_prob"]:
    size = int(rng.choice(np.arange(7, max_size + 1, 2)))
    final_kernel = sinc_kernel(rng.uniform(np.pi / 3, np.pi), size, pad_to=max_size)
  else:
    final_kernel = None  # a delta: no filtering

  # First order.
  out = filter2d(np.asarray(hr, np.float32), kernel1)
  out = _random_resize(out, height, width, options, rng, 1)
  out = random_noise(out, options, rng, 1)
  out = jpeg(out, rng.uniform(*options["jpeg_range"]))
  # Second order.
  if rng.uniform() < options["second_blur_prob"]:
    out = filter2d(out, kernel2)
  out = _random_resize(out, target_h, target_w, options, rng, 2)
  out = random_noise(out, options, rng, 2)

  def resize_back_and_sinc(img):
    img = resize(img, target_h, target_w, RESIZE_MODES[rng.integers(len(RESIZE_MODES))])
    return img if final_kernel is None else filter2d(img, final_kernel)

  if rng.uniform() < 0.5:
    out = resize_back_and_sinc(out)
    out = jpeg(np.clip(out, 0.0, 1.0), rng.uniform(*options["jpeg_range2"]))
  else:
    out = jpeg(np.clip(out, 0.0, 1.0), rng.uniform(*options["jpeg_range2"]))
    out = resize_back_and_sinc(out)
  return (np.clip(np.rint(out * 255.0), 0, 255) / 255.0).astype(np.float32)
