"""EDSR and the pixel shuffle."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sr_jax import models, utils
from sr_jax.models.edsr import EDSR
from sr_jax.models.layers import pixel_shuffle, pixel_unshuffle, resize_bicubic


def test_pixel_shuffle_matches_torch_channel_order():
  # torch.nn.PixelShuffle: out[c, h*r+i, w*r+j] = in[c*r*r + i*r + j, h, w]
  r, c, h, w = 2, 3, 2, 2
  x = np.random.default_rng(0).normal(size=(1, h, w, c * r * r)).astype(np.float32)
  out = np.asarray(pixel_shuffle(jnp.asarray(x), r))
  for ch in range(c):
    for i in range(r):
      for j in range(r):
        np.testing.assert_array_equal(out[0, i::r, j::r, ch], x[0, :, :, ch * r * r + i * r + j])
  np.testing.assert_array_equal(np.asarray(pixel_unshuffle(out, r)), x)


def test_pixel_shuffle_against_torch():
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  x = (
    np.random.default_rng(1).normal(size=(2, 12, 5, 7)).astype(np.float32)
  )  # NCHW, 3 channels x 2*2
  expected = torch.nn.functional.pixel_shuffle(torch.from_numpy(x), 2).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(
    np.asarray(pixel_shuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), 2)), expected
  )


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_shapes_for_every_scale(scale):
  model = EDSR(scale, num_feat=8, num_block=1, rngs=nnx.Rngs(0))
  assert model(jnp.zeros((2, 7, 9, 3))).shape == (2, 7 * scale, 9 * scale, 3)


def test_edsr_baseline_parameter_count():
  model = utils.eval_shape_module(lambda rngs: EDSR(4, rngs=rngs))  # shapes only
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert sum(np.prod(p.shape) for p in params) == 1_517_571  # BasicSR's EDSR-baseline x4


def test_bicubic_residual_edsr_starts_at_bicubic():
  lr = jax.random.uniform(jax.random.PRNGKey(0), (1, 8, 8, 3))
  model = EDSR(2, num_feat=8, num_block=1, bicubic_residual=True, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(model(lr), resize_bicubic(lr, 2), atol=1e-6)


def test_create_model_rejects_unknown_name():
  with pytest.raises(ValueError, match="model.name='nope'"):
    models.create_model(ml_collections.ConfigDict({"name": "nope"}), 2, nnx.Rngs(0))
