"""NIQE against BasicSR's `calculate_niqe` (vendored verbatim in reference_basicsr_niqe.py)."""

import numpy as np
import pytest
from skimage import data as skdata

from sr_jax.metrics import niqe

TOL = 1e-3  # absolute; measured up to 2e-4 (float32 rounding of the half-size MATLAB bicubic)


def _basicsr_niqe(image_rgb: np.ndarray, crop_border: int) -> float:
  pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  from tests import reference_basicsr_niqe as reference

  # BasicSR reads images with cv2 (BGR): the same picture is the channel-reversed array.
  bgr = np.ascontiguousarray(image_rgb[..., ::-1])
  return reference.calculate_niqe(bgr, crop_border, input_order="HWC", convert_to="y")


@pytest.mark.parametrize(
  "photo, window, crop_border",
  [
    ("astronaut", np.s_[:, :], 0),  # 512x512: 25 blocks
    ("chelsea", np.s_[3:290, 5:400], 4),  # odd size, blocks cut at the bottom / right
    ("coffee", np.s_[:, 17:290], 0),  # 400x273: 8 blocks
  ],
)
def test_niqe_matches_basicsr(photo, window, crop_border):
  image = np.ascontiguousarray(getattr(skdata, photo)()[window])
  ours, reference = niqe(image, crop_border), _basicsr_niqe(image, crop_border)
  print(f"niqe {photo} {image.shape} crop {crop_border}: ours {ours:.6f} BasicSR {reference:.6f}")
  assert abs(ours - reference) < TOL


def test_niqe_sees_degradation():
  clean = skdata.astronaut()[:288, :288]
  noisy = np.clip(clean + np.random.default_rng(0).normal(0, 20, clean.shape), 0, 255)
  assert niqe(noisy.astype(np.uint8), 0) > niqe(clean, 0) + 5
  # [0, 1] floats are quantised to 8 bits first, as for PSNR.
  assert niqe(clean / 255.0, 0) == niqe(clean, 0)


def test_niqe_bad_input():
  with pytest.raises(ValueError, match=r"two 96x96 blocks .* cropping 4 .* got 92x292"):
    niqe(np.zeros((100, 300, 3), np.uint8), 4)
  with pytest.raises(ValueError, match="two 96x96 blocks"):  # one block: BasicSR's pinv fails
    niqe(skdata.astronaut()[:100, :180], 0)
  with pytest.raises(ValueError, match="0 of 2 96x96 blocks have texture"):
    niqe(np.full((96, 192, 3), 128, np.uint8), 0)
  with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
    niqe(np.zeros((128, 128), np.uint8), 0)
