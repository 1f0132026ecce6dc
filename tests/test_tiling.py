"""Tiled inference equals untiled inference; one compile per tile size; eval size buckets."""

import itertools

from flax import nnx
import jax
import numpy as np
import pytest

from sr_jax import evaluate, tiling
from sr_jax.models.edsr import EDSR
from sr_jax.models.layers import pixel_shuffle, pixel_unshuffle

# LR receptive-field radius of a 1-block EDSR: conv_first 1 + block 2 + conv_after_body 1 +
# upsample conv 1 + conv_last (1 HR pixel) 1.
EDSR1_RADIUS = 6


def tiny_edsr(scale):
  return EDSR(scale, num_feat=8, num_block=1, rngs=nnx.Rngs(0))


def counting_tile_fn(model):
  """make_tile_fn's jitted forward, counting how often it is traced (= compiled)."""
  graphdef, state = nnx.split(model)
  traces = []

  @jax.jit
  def forward(state, lr):
    traces.append(lr.shape)
    return nnx.merge(graphdef, state)(lr)

  return (lambda lr: forward(state, lr)), traces


def untiled(model, lr):
  return np.asarray(model(lr[None]))[0]


@pytest.fixture(scope="module")
def lr_image():
  return np.random.default_rng(0).random((37, 29, 3)).astype(np.float32)


@pytest.mark.parametrize(
  "scale,tile,overlap,batch_size",
  [
    (2, 8, EDSR1_RADIUS, 1),  # many small cores, last ones partial
    (2, 13, EDSR1_RADIUS + 1, 3),  # batches of 3 with a filled-up last batch
    (3, 5, EDSR1_RADIUS, 2),
  ],
)
def test_tiled_equals_untiled_within_rounding(lr_image, scale, tile, overlap, batch_size):
  model = tiny_edsr(scale)
  reference = untiled(model, lr_image)
  tiled = tiling.upscale_image(
    tiling.make_tile_fn(model),
    lr_image,
    scale,
    tile,
    overlap,
    batch_size=batch_size,
    out_dtype=np.float32,
  )
  assert tiled.shape == reference.shape == (37 * scale, 29 * scale, 3)
  np.testing.assert_allclose(tiled, reference, atol=2e-5, rtol=0)


def test_overlap_below_receptive_field_shows_seams_and_uint8_rounding(lr_image):
  model = tiny_edsr(2)
  reference = untiled(model, lr_image)
  fn = tiling.make_tile_fn(model)
  seams = tiling.upscale_image(fn, lr_image, 2, 8, 1, out_dtype=np.float32)
  assert np.abs(seams - reference).max() > 1e-3  # the test would notice a missing context margin
  as_uint8 = tiling.upscale_image(fn, (lr_image * 255).round().astype(np.uint8), 2, 8, EDSR1_RADIUS)
  expected = np.clip(np.rint(untiled(model, (lr_image * 255).round() / 255) * 255), 0, 255)
  assert as_uint8.dtype == np.uint8
  assert np.abs(as_uint8.astype(int) - expected).max() <= 1


def test_one_compile_per_tile_size_for_any_image_size():
  model = tiny_edsr(2)
  tile_fn, traces = counting_tile_fn(model)
  rng = np.random.default_rng(1)
  for height, width in [(37, 29), (50, 23), (9, 11), (64, 64)]:  # 9x11 is smaller than a window
    lr = rng.random((height, width, 3)).astype(np.float32)
    sr = tiling.upscale_image(tile_fn, lr, 2, 12, EDSR1_RADIUS, batch_size=2)
    assert sr.shape == (2 * height, 2 * width, 3)
  assert traces == [(2, 24, 24, 3)]


def test_image_smaller_than_window_differs_only_near_padded_border():
  model = tiny_edsr(2)
  lr = np.random.default_rng(2).random((20, 40, 3)).astype(np.float32)  # 20 rows < 28-row window
  sr = tiling.upscale_image(
    tiling.make_tile_fn(model), lr, 2, 16, EDSR1_RADIUS, out_dtype=np.float32
  )
  rows_differing = np.nonzero(np.abs(sr - untiled(model, lr)).max(axis=(1, 2)) > 2e-5)[0]
  assert rows_differing.size and rows_differing.min() >= 2 * (20 - EDSR1_RADIUS)


def test_gray_goes_through_rgb_and_back_by_luma(lr_image):
  model = tiny_edsr(2)
  gray = (lr_image[..., 0] * 65535).round().astype(np.uint16)
  sr = tiling.upscale_image(tiling.make_tile_fn(model), gray, 2, None, 0)
  rgb = untiled(model, np.repeat((gray / 65535.0).astype(np.float32)[..., None], 3, axis=-1))
  expected = np.clip(np.rint((rgb @ tiling.LUMA_WEIGHTS) * 65535), 0, 65535)
  assert sr.dtype == np.uint16 and sr.shape == (74, 58)
  assert np.abs(sr.astype(np.int64) - expected).max() <= 1


class UnshuffleNet(nnx.Module):
  """x2 net on a pixel-unshuffled input (as RRDBNet x2): needs windows aligned to 2."""

  def __init__(self):
    self.scale, self.unshuffle = 2, 2
    self.conv = nnx.Conv(12, 3 * 16, (3, 3), padding="SAME", rngs=nnx.Rngs(0))

  def __call__(self, lr):
    return pixel_shuffle(self.conv(pixel_unshuffle(lr, 2)), 4)


def test_windows_aligned_for_pixel_unshuffle_nets():
  model = UnshuffleNet()
  lr = np.random.default_rng(3).random((22, 18, 3)).astype(np.float32)
  fn = tiling.make_tile_fn(model)
  aligned = tiling.upscale_image(
    fn, lr, 2, 5, 4, align=tiling.input_multiple(model), out_dtype=np.float32
  )
  np.testing.assert_allclose(aligned, untiled(model, lr), atol=2e-5, rtol=0)


def test_plan_covers_every_pixel_once_inside_its_window():
  for length, tile, overlap, align in itertools.product(
    [1, 7, 16, 31], [1, 4, 9, None], [0, 1, 3], [1, 2, 4]
  ):
    (window, _), (padded, _), windows = tiling.plan_windows(length, 5, tile, overlap, align)
    covered = np.zeros(length, int)
    for w in windows:
      if w.core_left != 0:
        continue
      covered[w.core_top : w.core_bottom] += 1
      assert w.top % align == 0 and window % align == 0
      assert 0 <= w.top <= w.core_top < w.core_bottom <= w.top + window <= padded
    assert (covered == 1).all(), (length, tile, overlap, align)


def test_eval_buckets_bound_compiles_and_crop_back():
  model = tiny_edsr(2)
  tile_fn, traces = counting_tile_fn(model)
  predict = evaluate.bucketed(lambda lr: np.asarray(tile_fn(lr[None]))[0], multiple=16)
  rng = np.random.default_rng(4)
  for height, width in [(9, 13), (16, 11), (3, 1), (17, 16)]:
    sr = predict(rng.random((height, width, 3)).astype(np.float32))
    assert sr.shape == (2 * height, 2 * width, 3)
  assert sorted(set(traces)) == [(1, 16, 16, 3), (1, 32, 16, 3)]
  lr = rng.random((16, 32, 3)).astype(np.float32)  # already a bucket: untouched
  np.testing.assert_allclose(predict(lr), untiled(model, lr), atol=1e-6)


def test_tile_fn_splits_window_rows_over_local_devices():
  """8 test devices: a 16-row window runs as 8 bands of 2 rows (halos exchanged by XLA), a 13-row
  one on one device; both equal the one-device forward."""
  assert jax.local_device_count() == 8  # tests/conftest.py
  model = tiny_edsr(2)
  one_device = tiling.make_tile_fn(model, jax.local_devices()[0])
  split = tiling.make_tile_fn(model)
  for height in (16, 13):
    lr = np.random.default_rng(height).random((1, height, 12, 3)).astype(np.float32)
    out = split(lr)
    assert len(out.sharding.device_set) == (8 if height == 16 else 1)
    np.testing.assert_allclose(np.asarray(out), np.asarray(one_device(lr)), atol=1e-6, rtol=0)
