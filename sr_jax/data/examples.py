"""Training and evaluation examples from HR images: LR synthesis, crops, augmentation (numpy).

One training example is a pure function of its image and a `numpy.random.Generator`, so the
pipeline's batches depend only on the seed (see pipeline).
"""

from typing import Any, Mapping

import numpy as np

from sr_jax.data import degradations
from sr_jax.data.imresize import imresize


def to_float(img: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [0, 1]."""
  return img.astype(np.float32) / np.float32(255)


def make_lr(hr: np.ndarray, scale: int, quantize: bool = True) -> np.ndarray:
  """LR image of a float [0, 1] HR image: MATLAB bicubic downscaling by `scale`.

  Args:
    hr: float [h, w, c] (or [..., h, w, c]) in [0, 1]; h and w multiples of `scale`.
    scale: integer downscaling factor.
    quantize: round to 8-bit levels (as if saved to PNG and read back).

  Returns:
    float32 [h / scale, w / scale, c] in [0, 1].
  """
  lr = np.clip(imresize(hr, 1 / scale), 0.0, 1.0)
  if quantize:
    lr = np.rint(lr * 255.0) * np.float32(1 / 255)
  return lr.astype(np.float32, copy=False)


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
  """Crops the bottom/right so height and width are multiples of `scale`."""
  h, w = img.shape[0], img.shape[1]
  return img[: h - h % scale, : w - w % scale]


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """A random size x size crop of an [h, w, ...] image with h, w >= size."""
  top = rng.integers(0, img.shape[0] - size + 1)
  left = rng.integers(0, img.shape[1] - size + 1)
  return img[top : top + size, left : left + size]


def augment_pair(
  lr: np.ndarray, hr: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """The same random flip / 90-degree rotation (8 dihedral cases) applied to LR and HR."""
  hflip, vflip, transpose = rng.random(3) < 0.5

  def apply(img):
    if hflip:
      img = img[:, ::-1]
    if vflip:
      img = img[::-1]
    if transpose:  # with the flips, a transpose gives all 4 rotations
      img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)

  return apply(lr), apply(hr)


def random_paired_crop(
  lr: np.ndarray, hr: np.ndarray, patch_size: int, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """A random patch_size LR crop and the HR crop covering the same area."""
  top = rng.integers(0, lr.shape[0] - patch_size + 1)
  left = rng.integers(0, lr.shape[1] - patch_size + 1)
  hr_top, hr_left, hr_size = top * scale, left * scale, patch_size * scale
  return (
    lr[top : top + patch_size, left : left + patch_size],
    hr[hr_top : hr_top + hr_size, hr_left : hr_left + hr_size],
  )


def make_example(
  image: np.ndarray | dict[str, np.ndarray],
  rng: np.random.Generator,
  *,
  patch_size: int,
  scale: int,
  augment: bool,
  quantize_lr: bool,
  degradation: str,
  realesrgan: Mapping[str, Any] | None,
  usm: bool = False,
) -> dict[str, np.ndarray]:
  """One training pair: random crop, its LR, augmentation.

  Args:
    image: uint8 HR [h, w, 3] with h, w >= patch_size * scale; or, for degradation "paired",
      {"lr": uint8 [h, w, 3], "hr": uint8 [>= h * scale, >= w * scale, 3]} with h, w >= patch_size.
    rng: randomness of this example.
    patch_size: LR side.
    scale: SR factor.
    augment: apply random flips / 90-degree rotations.
    quantize_lr: round LR to 8-bit levels (bicubic; the other degradations always do).
    degradation: "bicubic", "realesrgan", "paired", or "self" (`image` is itself a
      low-resolution image: the same as "bicubic", the crop being the target).
    realesrgan: options of the Real-ESRGAN degradation (`config.data.realesrgan`); only read
      for degradation "realesrgan".
    usm: unsharp-mask the HR target (`degradations.usm_sharpen`, Real-ESRGAN's gt_usm); the
      original is kept as "hr_unsharpened". "realesrgan" degrades the sharpened HR, as
      Real-ESRGAN's synthesis does; bicubic and paired LR come from the HR as it is.

  Returns:
    {"lr": float32 [p, p, 3], "hr": float32 [p * scale, p * scale, 3]}, both in [0, 1].
  """
  if degradation == "paired":
    lr, hr = random_paired_crop(image["lr"], image["hr"], patch_size, scale, rng)
    lr, hr = to_float(lr), to_float(hr)
  else:
    hr = to_float(random_crop(image, patch_size * scale, rng))
    if degradation == "realesrgan":
      source = degradations.usm_sharpen(hr) if usm else hr
      lr = degradations.realesrgan_degrade(source, scale, rng, realesrgan)
    else:
      lr = make_lr(hr, scale, quantize_lr)
  if not usm:
    if augment:
      lr, hr = augment_pair(lr, hr, rng)
    return {"lr": lr, "hr": hr}
  sharpened = source if degradation == "realesrgan" else degradations.usm_sharpen(hr)
  if augment:  # the same flip for both HR versions: stacked along the channels
    lr, both = augment_pair(lr, np.concatenate([sharpened, hr], axis=-1), rng)
    sharpened, hr = np.ascontiguousarray(both[..., :3]), np.ascontiguousarray(both[..., 3:])
  return {"lr": lr, "hr": sharpened, "hr_unsharpened": hr}
