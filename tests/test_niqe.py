"""NIQE against BasicSR's `calculate_niqe` (vendored verbatim in reference_basicsr_niqe.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from skimage import data as skdata

from sr_jax.metrics import niqe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (photo, rows, columns, crop_border): odd sizes, blocks cut at the bottom / right, and a photo
# with flat black regions, where NIQE amplifies the last bit of the half-size bicubic.
CASES = [
  ("astronaut", (0, 512), (0, 512), 0),
  ("chelsea", (3, 290), (5, 400), 4),
  ("coffee", (0, 400), (17, 290), 0),
  ("retina", (3, 290), (5, 400), 4),
  ("immunohistochemistry", (0, 512), (0, 512), 0),
]
_REFERENCE = """
import json, sys
import numpy as np
from skimage import data
from tests.reference_basicsr_niqe import calculate_niqe
values = []
for photo, (top, bottom), (left, right), crop in json.loads(sys.argv[1]):
  rgb = np.ascontiguousarray(getattr(data, photo)()[top:bottom, left:right])
  values.append(calculate_niqe(rgb[..., ::-1], crop, input_order="HWC", convert_to="y"))  # BGR
print(json.dumps(values))
"""


def _image(photo, rows, columns):
  return np.ascontiguousarray(getattr(skdata, photo)()[slice(*rows), slice(*columns)])


@pytest.fixture(scope="module")
def basicsr_values():
  """BasicSR's NIQE of CASES, in a subprocess with MKL in its reproducible mode (MKL_CBWR).

  BasicSR's half-size bicubic is PyTorch `mv` calls whose float32 summation order MKL picks per
  CPU unless MKL_CBWR is set; NIQE turns that last bit into up to 2e-3 (immunohistochemistry:
  3.29542 with MKL's AVX-512 path, 3.29356 with MKL_CBWR=COMPATIBLE, AVX2 or AVX512)."""
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  env = dict(os.environ, MKL_CBWR="COMPATIBLE")
  result = subprocess.run(
    [sys.executable, "-c", _REFERENCE, json.dumps(CASES)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.splitlines()[-1]), torch.backends.mkl.is_available()


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_niqe_matches_basicsr(basicsr_values, case):
  values, mkl = basicsr_values
  photo, rows, columns, crop_border = CASES[case]
  image = _image(photo, rows, columns)
  ours = niqe(image, crop_border)
  print(f"niqe {photo} {image.shape} crop {crop_border}: ours {ours!r} BasicSR {values[case]!r}")
  # With MKL in reproducible mode our float32 sums are BasicSR's to the last bit; other BLAS
  # builds of the reference round differently (see basicsr_values).
  assert abs(ours - values[case]) < (1e-9 if mkl else 3e-3)


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
