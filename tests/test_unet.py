"""U-Net SR with a pretrained encoder, and the transfer-learning controls."""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import (
  unet_effnetlite0_x4,
  unet_effnetlite0_x4_scratch,
  unet_resnet34_x4,
  unet_resnet34_x4_scratch,
)
from sr_jax import losses, models, optim, train_state, utils
from sr_jax.backbones import create_backbone
from sr_jax.models.layers import resize_bicubic
from sr_jax.models.unet import UNetSR
from tests import arch_testing

ENCODERS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "efficientnet_lite0"]


def tiny_unet_config(weights="efficientnet_lite0", **train_overrides):
  config = unet_effnetlite0_x4.get_config()
  config.model.encoder.weights = weights
  config.model.decoder_features = (16, 16, 8, 8, 8)
  config.model.shallow_features = 8
  config.data.scale = 2
  config.optim.warmup_steps = 0
  config.optim.grad_clip_norm = 0.0
  config.train.ema_decay = 0.0
  for key, value in train_overrides.items():
    setattr(config.train if hasattr(config.train, key) else config.optim, key, value)
  return config


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_for_every_encoder_and_scale_on_odd_sizes(encoder, scale):
  def build(rngs):
    return UNetSR(scale, create_backbone(encoder, None, head=False, rngs=rngs), rngs=rngs)

  graphdef, state = nnx.split(utils.eval_shape_module(build))
  lr = jax.ShapeDtypeStruct((2, 37, 45, 3), jnp.float32)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, lr)
  assert out.shape == (2, 37 * scale, 45 * scale, 3)


@pytest.mark.parametrize("encoder", ["resnet18", "efficientnet_lite0"])
def test_untrained_network_outputs_bicubic_on_odd_sizes(encoder):
  rngs = nnx.Rngs(0)
  model = UNetSR(
    3,
    create_backbone(encoder, None, head=False, rngs=rngs),
    decoder_features=(16, 16, 8, 8, 8),
    shallow_features=8,
    rngs=rngs,
  )
  lr = np.random.default_rng(0).random((1, 19, 33, 3), dtype=np.float32)
  # One compiled forward: op by op, each of the encoder's ops would compile on its own.
  np.testing.assert_allclose(arch_testing.jit_forward(model, lr), resize_bicubic(lr, 3), atol=1e-6)


@functools.cache
def _states(weights):
  config = tiny_unet_config(weights)
  return train_state.create_train_state(config, optim.from_config(config)[1])


def test_loading_weights_into_encoder_leaves_decoder_at_init():
  _, pretrained = _states("efficientnet_lite0")
  _, scratch = _states(None)
  same, different = [], []
  for (path, a), b in zip(
    jax.tree_util.tree_flatten_with_path(pretrained["params"])[0],
    jax.tree.leaves(scratch["params"]),
  ):
    (same if np.array_equal(a, b) else different).append(optim.param_group(path))
  assert set(same) == {"rest"}, (
    "decoder/shallow branch must be identical to the scratch twin's init"
  )
  assert set(different) == {"encoder"}
  loaded = create_backbone("efficientnet_lite0", "efficientnet_lite0", head=False)
  np.testing.assert_array_equal(
    pretrained["params"]["encoder"]["conv_stem"]["kernel"][...], loaded.conv_stem.kernel[...]
  )


def test_scratch_configs_differ_only_in_encoder_weights():
  for pretrained, scratch in (
    (unet_effnetlite0_x4, unet_effnetlite0_x4_scratch),
    (unet_resnet34_x4, unet_resnet34_x4_scratch),
  ):
    a, b = pretrained.get_config().to_dict(), scratch.get_config().to_dict()
    assert b["model"]["encoder"].pop("weights") is None and a["model"]["encoder"].pop("weights")
    assert a == b


def _train_states(config, num_steps):
  """The host copies of the train state before and after each of `num_steps` steps."""
  graphdef, state = train_state.create_train_state(config, optim.from_config(config)[1])
  return arch_testing.run_steps(config, graphdef, state, num_steps, lr_size=32)[0]


def _changed(before, after, group):
  flat = jax.tree_util.tree_flatten_with_path(before)[0]
  return [
    not np.array_equal(a, b)
    for (path, a), b in zip(flat, jax.tree.leaves(after))
    if optim.param_group(path) == group
  ]


def test_frozen_encoder_gets_no_updates_then_trains():
  # Two frozen steps: the zero-initialised last conv passes no gradient on in the first one.
  initial, _, frozen, unfrozen = _train_states(tiny_unet_config(freeze_encoder_steps=2), 3)
  assert not any(_changed(initial["params"], frozen["params"], "encoder"))
  assert all(_changed(initial["params"], frozen["params"], "rest"))
  # BatchNorm statistics of a pretrained encoder are frozen by default.
  assert not any(_changed(initial["model_state"], unfrozen["model_state"], "encoder"))
  assert any(_changed(frozen["params"], unfrozen["params"], "encoder"))


def test_encoder_lr_multiplier_scales_encoder_updates():
  _, state = _states("efficientnet_lite0")
  params = state["params"]
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  updates = {}
  for mult in (1.0, 0.1):
    config = tiny_unet_config(encoder_lr_mult=mult)
    schedule = optim.create_schedule(config.optim, config.train.steps)
    tx = optim.create_optimizer(config.optim, schedule)
    updates[mult], _ = tx.update(grads, tx.init(params), params)
  flat = jax.tree_util.tree_flatten_with_path(updates[1.0])[0]
  for (path, full), scaled in zip(flat, jax.tree.leaves(updates[0.1])):
    expected = 0.1 if optim.param_group(path) == "encoder" else 1.0
    np.testing.assert_allclose(scaled, expected * full, rtol=1e-5, atol=1e-12)


def test_feature_loss_is_zero_for_identical_images_and_positive_otherwise():
  config = unet_effnetlite0_x4.get_config().loss
  config.feature_weight = 1.0
  loss, feature_state = losses.create_loss(config)
  hr = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))
  loss = jax.jit(loss)  # one compile for both calls, not one per op of the backbone
  total, parts = loss(hr, hr, feature_state)
  assert float(total) == 0.0 and float(parts["feature"]) == 0.0
  total, parts = loss(hr * 0.5, hr, feature_state)
  assert float(parts["feature"]) > 0 and float(total) == pytest.approx(
    float(parts["l1"] + parts["feature"])
  )


def test_unet_is_registered():
  config = tiny_unet_config(None)
  model = utils.eval_shape_module(lambda rngs: models.create_model(config.model, 2, rngs))
  assert isinstance(model, UNetSR) and model.scale == 2


def test_scratch_encoder_trains_on_batch_statistics():
  # No ImageNet statistics to keep: a scratch encoder's BatchNorm normalises with batch statistics
  # (and updates its running ones); frozen identity statistics would leave it with vanishing
  # features.
  config = tiny_unet_config(None)
  initial, trained = _train_states(config, 1)
  stats_before, stats_after = initial["model_state"]["encoder"], trained["model_state"]["encoder"]
  (
    stats_before.pop("bn1"),
    stats_after.pop("bn1"),
  )  # the classifier head's BatchNorm: not in features()
  assert all(
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(stats_before), jax.tree.leaves(stats_after))
  )
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(trained["params"]))
