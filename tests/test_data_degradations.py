"""Degradations: MATLAB bicubic (default) and Real-ESRGAN's second-order pipeline, deterministic."""

import os

import numpy as np
from PIL import Image
import pytest

from configs import default
from sr_jax import data
from sr_jax.data import degradations


@pytest.fixture(scope="module")
def hr_patch(tmp_path_factory):
  train_dir, _ = data.embedded_photo_dirs(str(tmp_path_factory.mktemp("cache")))
  return data.read_image(os.path.join(train_dir, "astronaut.png"))[100:196, 150:246] / np.float32(
    255
  )


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, hr_patch):
  folder = tmp_path_factory.mktemp("photos")
  for i in range(3):
    Image.fromarray(np.rint(np.rot90(hr_patch, i) * 255).astype(np.uint8)).save(folder / f"{i}.png")
  return str(folder)


def _options():
  """The Real-ESRGAN options of the default config, as the pipeline passes them."""
  return default.get_config().data.realesrgan.to_dict()


def _config(photo_dir, degradation):
  config = default.get_config().data
  config.lock()
  config.update(
    {"train_dirs": (photo_dir,), "scale": 4, "patch_size": 12, "degradation": degradation}
  )
  return config


# --- kernels -------------------------------------------------------------------------------------


def test_kernels_are_normalized_and_shaped():
  iso = degradations.gaussian_kernel(21, 2.0, 2.0, 0.0)
  assert iso.shape == (21, 21) and abs(iso.sum() - 1) < 1e-5
  np.testing.assert_allclose(iso, iso.T, atol=1e-7)  # isotropic: symmetric
  aniso = degradations.gaussian_kernel(21, 3.0, 0.5, 0.0)
  assert aniso[10, :].sum() > aniso[:, 10].sum()  # wide along x (columns), narrow along y
  rotated = degradations.gaussian_kernel(21, 3.0, 0.5, np.pi / 2)
  np.testing.assert_allclose(rotated, aniso.T, atol=1e-6)
  flat = degradations.generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, 4.0)
  plateau = degradations.plateau_kernel(21, 2.0, 2.0, 0.0, 2.0)
  for kernel in (flat, plateau):
    assert abs(kernel.sum() - 1) < 1e-5 and kernel.argmax() == 10 * 21 + 10
  # beta > 1 flattens the top: the centre's neighbours are nearly as high as the centre.
  assert flat[10, 11] / flat[10, 10] > 0.99 > iso[10, 11] / iso[10, 10]
  sinc = degradations.sinc_kernel(np.pi / 2, 13, pad_to=21)
  assert sinc.shape == (21, 21) and abs(sinc.sum() - 1) < 1e-5 and np.all(sinc[:4] == 0)
  assert sinc.min() < 0  # ringing lobes
  assert np.all(np.isfinite(sinc))


def test_random_kernels_deterministic_and_cover_types():
  options = _options()
  k1 = degradations.random_blur_kernel(options, np.random.default_rng(3), 1)
  np.testing.assert_array_equal(
    k1, degradations.random_blur_kernel(options, np.random.default_rng(3), 1)
  )
  assert k1.shape == (21, 21)
  kinds = set()
  for seed in range(300):
    kind_rng = np.random.default_rng(seed)
    probs = np.asarray(options["kernel_prob"])
    kinds.add(options["kernel_list"][kind_rng.choice(6, p=probs / probs.sum())])
  assert kinds == set(degradations.KERNEL_TYPES)
  with pytest.raises(ValueError, match="unknown blur kernel type 'box'"):
    degradations.random_mixed_kernel(
      ("box",), (1.0,), 7, (1, 2), (0.5, 4), (1, 2), np.random.default_rng(0)
    )


def test_filter2d_identity_and_shift():
  img = np.random.default_rng(0).random((16, 20, 3), dtype=np.float32)
  delta = np.zeros((5, 5), np.float32)
  delta[2, 2] = 1
  np.testing.assert_allclose(degradations.filter2d(img, delta), img, atol=1e-6)
  shift = np.zeros((3, 3), np.float32)
  shift[1, 2] = 1  # correlation: output(x) = input(x + 1)
  np.testing.assert_allclose(degradations.filter2d(img, shift)[:, :-1], img[:, 1:], atol=1e-6)


# --- resizing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", degradations.RESIZE_MODES)
def test_resize_matches_torch_interpolate(mode):
  torch = pytest.importorskip("torch")  # parity extras (make parity-deps); CI has them
  img = np.random.default_rng(1).random((37, 53, 3), dtype=np.float32)
  tensor = torch.from_numpy(img).permute(2, 0, 1)[None]
  for size in ((11, 17), (80, 120), (37, 90)):
    kwargs = {} if mode == "area" else {"align_corners": False}
    ref = (
      torch.nn.functional.interpolate(tensor, size=size, mode=mode, **kwargs)[0]
      .permute(1, 2, 0)
      .numpy()
    )
    np.testing.assert_allclose(degradations.resize(img, *size, mode), ref, atol=1e-5)


def test_resize_preserves_constants():
  img = np.full((30, 40, 3), 0.25, np.float32)
  for mode in degradations.RESIZE_MODES:
    for size in ((7, 9), (45, 61)):
      out = degradations.resize(img, *size, mode)
      assert out.shape == size + (3,) and out.dtype == np.float32
      np.testing.assert_allclose(out, 0.25, atol=1e-6)


# --- noise, JPEG, full pipeline ------------------------------------------------------------------


def test_noise_and_jpeg(hr_patch):
  rng = np.random.default_rng(0)
  noisy = degradations.add_gaussian_noise(hr_patch, 10.0, False, rng)
  assert abs(np.std(noisy - hr_patch) * 255 - 10) < 0.5
  gray = degradations.add_gaussian_noise(hr_patch, 10.0, True, rng) - hr_patch
  np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-6)
  poisson = degradations.add_poisson_noise(hr_patch, 1.0, False, rng)
  assert 0 < np.std(poisson - hr_patch) < 0.1
  compressed = degradations.jpeg(hr_patch, 30)
  assert compressed.shape == hr_patch.shape and 0 < np.abs(compressed - hr_patch).mean() < 0.05


def test_realesrgan_degrade_seed_deterministic(hr_patch):
  lr = degradations.realesrgan_degrade(hr_patch, 4, np.random.default_rng(7), _options())
  assert lr.shape == (24, 24, 3) and lr.dtype == np.float32
  assert lr.min() >= 0 and lr.max() <= 1
  np.testing.assert_array_equal(lr * 255, np.rint(lr * 255))  # 8-bit levels
  np.testing.assert_array_equal(
    lr, degradations.realesrgan_degrade(hr_patch, 4, np.random.default_rng(7), _options())
  )
  others = [
    degradations.realesrgan_degrade(hr_patch, 4, np.random.default_rng(s), _options())
    for s in range(8, 14)
  ]
  assert all(not np.array_equal(lr, o) for o in others)
  bicubic = data.make_lr(hr_patch, 4)
  # Degraded, but still the same picture: closer to its own bicubic LR than to a flipped one.
  for out in [lr] + others:
    assert np.abs(out - bicubic).mean() < np.abs(out - bicubic[::-1, ::-1]).mean()
  # Without any degradation it reduces to a plain resize (no blur, noise or JPEG left to vary).
  clean = degradations.realesrgan_degrade(
    hr_patch,
    2,
    np.random.default_rng(0),
    {
      **_options(),
      "sinc_prob": 0.0,
      "blur_sigma": (0.1, 0.1),
      "kernel_list": ("iso",),
      "kernel_prob": (1.0,),
      "second_blur_prob": 0.0,
      "final_sinc_prob": 0.0,
      "resize_prob": (0, 0, 1),
      "resize_prob2": (0, 0, 1),
      "gaussian_noise_prob": 1.0,
      "noise_range": (0.0, 0.0),
      "gaussian_noise_prob2": 1.0,
      "noise_range2": (0.0, 0.0),
      "jpeg_range": (100, 100),
      "jpeg_range2": (100, 100),
    },
  )
  assert (
    clean.shape == (48, 48, 3)
    and np.abs(clean - degradations.resize(hr_patch, 48, 48, "area")).mean() < 0.03
  )


@pytest.mark.parametrize("degradation", ["bicubic", "realesrgan"])
def test_pipeline_degradation_seed_deterministic(photo_dir, degradation):
  config = _config(photo_dir, degradation)
  first = next(data.create_train_iterator(config, seed=11, local_batch_size=3))
  again = next(data.create_train_iterator(config, seed=11, local_batch_size=3))
  other = next(data.create_train_iterator(config, seed=12, local_batch_size=3))
  np.testing.assert_array_equal(first["lr"], again["lr"])
  np.testing.assert_array_equal(first["hr"], again["hr"])
  assert not np.array_equal(first["lr"], other["lr"])
  assert first["lr"].shape == (3, 12, 12, 3) and first["hr"].shape == (3, 48, 48, 3)
  config.num_threads = 1  # threads change the speed, not the batches
  np.testing.assert_array_equal(first["lr"], next(data.create_train_iterator(config, 11, 3))["lr"])
  for lr, hr in zip(first["lr"], first["hr"]):
    distance = np.abs(lr - data.make_lr(hr, 4)).max()
    assert distance < 1e-6 if degradation == "bicubic" else distance > 0.02


def test_realesrgan_options_override_from_config(photo_dir):
  config = _config(photo_dir, "realesrgan")
  config.realesrgan.jpeg_range = (95.0, 95.0)
  config.augment = False
  batch = next(data.create_train_iterator(config, 0, 2))
  assert batch["lr"].shape == (2, 12, 12, 3)
  with pytest.raises(ValueError, match="data.degradation='sharpen'"):
    config.degradation = "sharpen"
    data.create_train_iterator(config, 0, 2)
