"""GAN training: the losses against BasicSR's formulas, the step on 8 devices == 1 device, the
discriminator learning, SIGKILL and resume == an uninterrupted run, the two-stage recipe's start
from a workdir."""

import shutil
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr_jax import (
  checkpointing,
  gan,
  optim,
  sharding,
  train,
  train_logging,
  train_state,
  train_step,
)
from tests.test_train import ROOT, launch_command, subprocess_env, tiny_config

# A tiny EDSR x2 on 8 px LR patches and a 4-channel U-Net discriminator on the 16 px HR patches.
GAN = {
  "gan.weight": 0.1,
  "gan.discriminator.num_feat": 4,
  "gan.learning_rate": 2e-3,
  "optim.warmup_steps": 0,
}


def gan_config(**overrides):
  return tiny_config(**{**GAN, **overrides})


def _optimizer(config):
  return optim.from_config(config)[1]


@pytest.mark.parametrize("kind", gan.GAN_LOSSES)
def test_gan_losses_match_basicsr(kind):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  nn = torch.nn
  logits = np.random.default_rng(0).normal(0, 2, size=(2, 8, 8, 1)).astype(np.float32)
  real, fake = logits[:1], logits[1:]
  t_real, t_fake = torch.from_numpy(real), torch.from_numpy(fake)
  # BasicSR GANLoss(gan_type).forward(input, target_is_real, is_disc), loss_weight 1.
  if kind == "vanilla":
    bce = nn.BCEWithLogitsLoss()
    expected_d = (bce(t_real, torch.ones_like(t_real)), bce(t_fake, torch.zeros_like(t_fake)))
    expected_g = bce(t_fake, torch.ones_like(t_fake))
  elif kind == "lsgan":
    mse = nn.MSELoss()
    expected_d = (mse(t_real, torch.ones_like(t_real)), mse(t_fake, torch.zeros_like(t_fake)))
    expected_g = mse(t_fake, torch.ones_like(t_fake))
  else:
    relu = nn.ReLU()
    expected_d = (relu(1 - t_real).mean(), relu(1 + t_fake).mean())
    expected_g = -t_fake.mean()
  got_real, got_fake = gan.discriminator_gan_loss(kind, jnp.asarray(real), jnp.asarray(fake))
  np.testing.assert_allclose(float(got_real), float(expected_d[0]), rtol=1e-5)
  np.testing.assert_allclose(float(got_fake), float(expected_d[1]), rtol=1e-5)
  np.testing.assert_allclose(
    float(gan.generator_gan_loss(kind, jnp.asarray(fake))), float(expected_g), rtol=1e-5
  )


def test_bad_gan_config_is_one_clear_error():
  with pytest.raises(ValueError, match="gan.loss='wgan'"):
    gan.make_step_fn(gan_config(**{"gan.loss": "wgan"}), None)
  with pytest.raises(ValueError, match="data.patch_size=7 x data.scale=2 = 14"):
    gan.make_step_fn(gan_config(**{"data.patch_size": 7}), None)
  with pytest.raises(ValueError, match="train.grad_accum_steps=2"):
    gan.make_step_fn(gan_config(**{"train.grad_accum_steps": 2}), None)
  with pytest.raises(ValueError, match="train.compute_dtype='bfloat16'"):
    gan.make_step_fn(gan_config(**{"train.compute_dtype": "bfloat16"}), None)


@pytest.fixture
def split_everything(monkeypatch):
  """The tiny models have no leaf of 2**17 elements: split every leaf that can be (ZeRO-1)."""
  monkeypatch.setattr(sharding, "MIN_SPLIT_SIZE", 0)


def test_gan_steps_on_8_devices_equal_1_device(split_everything):
  """Eight GAN steps, ZeRO-1 over 8 devices == 1 device; the discriminator learns to tell the
  (blurry) output from the HR: its real-vs-fake logit gap grows, its loss falls."""
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  config = gan_config()
  rng = np.random.default_rng(0)
  hr = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
  batch = {"lr": hr.reshape(8, 8, 2, 8, 2, 3).mean(axis=(2, 4)), "hr": hr}
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.create_mesh(devices)
    graphdef, state = train_state.create_train_state(
      config, train_step.optim.from_config(config)[1]
    )
    assert set(state["discriminator"]) == {"params", "model_state", "opt_state"}
    state = sharding.place_state(state, mesh)
    step = jax.jit(
      train_step.make_step_fn(config, graphdef, mesh),
      donate_argnums=(0,),
      out_shardings=(sharding.state_shardings(state, mesh), sharding.replicated(mesh)),
    )
    history = []
    for _ in range(8):
      state, metrics = step(state, sharding.global_batch(batch, mesh))
      history.append(jax.device_get(metrics))
    results.append((jax.device_get(state), history))
  (state_1, history_1), (state_8, history_8) = results
  for m1, m8 in zip(history_1, history_8):
    assert set(m1) >= {"loss", "loss_l1", "loss_gan", "d_loss_real", "d_loss_fake"}
    for key in m1:
      np.testing.assert_allclose(m8[key], m1[key], rtol=1e-4, atol=1e-6, err_msg=key)
  for a, b in zip(jax.tree.leaves(state_1), jax.tree.leaves(state_8)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
  gap = [m["d_out_real"] - m["d_out_fake"] for m in history_1]
  d_loss = [m["d_loss_real"] + m["d_loss_fake"] for m in history_1]
  assert gap[-1] > gap[0] + 0.01, gap
  assert d_loss[-1] < d_loss[0] - 0.01, d_loss
  # Both networks and the spectral-norm vectors moved; the discriminator's Adam counted 8 steps.
  _, fresh = train_state.create_train_state(config, _optimizer(config))
  for part in (("params",), ("discriminator", "params"), ("discriminator", "model_state")):
    before, after = fresh, state_1
    for key in part:
      before, after = before[key], after[key]
    changed = [
      not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
    ]
    assert all(changed), f"{part}: some leaves did not change"
  counts = [
    x for x in jax.tree.leaves(state_1["discriminator"]["opt_state"]) if x.dtype == np.int32
  ]
  assert counts and all(int(c) == 8 for c in counts)


def test_discriminator_init_steps_train_only_the_discriminator():
  """gan.discriminator_init_steps=2 (BasicSR's net_d_init_iters): steps 1-2 update D only (the
  network, its EMA and Adam state stay), step 3 updates both."""
  config = gan_config(**{"gan.discriminator_init_steps": 2})
  rng = np.random.default_rng(2)
  hr = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
  batch = {"lr": jnp.asarray(hr[:, ::2, ::2]), "hr": jnp.asarray(hr)}
  graphdef, state = train_state.create_train_state(config, _optimizer(config))
  step = jax.jit(train_step.make_step_fn(config, graphdef))
  leaves = lambda tree: [np.asarray(x) for x in jax.tree.leaves(tree)]  # noqa: E731
  start = {k: leaves(state[k]) for k in ("params", "ema_params", "opt_state", "discriminator")}
  for expected_g_moved in (False, False, True):
    state, _ = step(state, batch)
    for key, before in start.items():
      moved = any(not np.array_equal(a, b) for a, b in zip(before, leaves(state[key])))
      assert moved == (expected_g_moved or key == "discriminator"), (key, int(state["step"]))


def _final_state(workdir, config):
  _, state = train_state.create_train_state(config, _optimizer(config), load_weights=False)
  manager = checkpointing.create_manager(str(workdir), keep=3)
  restored = checkpointing.restore(manager, manager.latest_step(), state)
  manager.close()
  return restored


def test_gan_sigkill_and_resume_equals_uninterrupted_run(tmp_path):
  """launch.py killed (SIGKILL) after its step-4 checkpoint, then resumed: metrics and the whole
  final state (network, EMA, discriminator, both optimizers) equal an uninterrupted run's."""
  overrides = {**GAN, "train.steps": 8, "train.checkpoint_every_steps": 4}
  reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
  run = dict(cwd=ROOT, env=subprocess_env(), timeout=300, capture_output=True)
  subprocess.run(launch_command(reference, overrides=overrides), check=True, **run)
  process = subprocess.Popen(
    launch_command(interrupted, overrides=overrides),
    cwd=ROOT,
    env=subprocess_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 240
  while not (interrupted / "checkpoints" / "4").exists() and time.time() < deadline:
    assert process.poll() is None, "run ended before it could be killed"
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  subprocess.run(launch_command(interrupted, overrides=overrides), check=True, **run)

  reference_rows = train_logging.read_jsonl(reference / "metrics.jsonl")
  resumed_rows = train_logging.read_jsonl(interrupted / "metrics.jsonl")
  assert [r["step"] for r in resumed_rows] == list(range(1, 9))
  for key in ("loss", "loss_gan", "d_loss_real", "d_loss_fake"):
    np.testing.assert_allclose(
      [r[key] for r in resumed_rows], [r[key] for r in reference_rows], rtol=1e-6, err_msg=key
    )
  config = gan_config(**overrides)
  expected, actual = _final_state(reference, config), _final_state(interrupted, config)
  assert int(actual["step"]) == 8 and "discriminator" in actual
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_second_stage_starts_from_a_workdir(tmp_path):
  """The two-stage recipe: model.weights = the PSNR stage's workdir loads its (EMA) weights; a
  workdir of another network is refused, naming the difference."""
  stage1 = tmp_path / "stage1"
  l1_config = tiny_config(**{"train.steps": 2})
  first = train.train_and_evaluate(l1_config, str(stage1))
  config = gan_config(**{"model.weights": str(stage1)})
  _, state = train_state.create_train_state(config, train_step.optim.from_config(config)[1])
  for a, b in zip(
    jax.tree.leaves(jax.device_get(first["ema_params"])), jax.tree.leaves(state["params"])
  ):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
  other = gan_config(**{"model.weights": str(stage1), "model.num_feat": 16})
  with pytest.raises(ValueError, match="model.num_feat: 8 there, 16 here"):
    train_state.create_train_state(other, _optimizer(other))
  shutil.rmtree(stage1)


def torch_usm_sharp(img_hwc: np.ndarray) -> np.ndarray:
  """BasicSR 1.4.2 `USMSharp()(img)` (basicsr/utils/img_process_util.py) with its filter2D;
  cv2.getGaussianKernel(51, 0) written out (OpenCV's formula: sigma = 0.3 * (24 - 1) + 0.8)."""
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  f = torch.nn.functional
  radius, sigma = 51, 0.3 * ((51 - 1) * 0.5 - 1) + 0.8
  x = np.arange(radius) - (radius - 1) / 2
  k1 = np.exp(-(x**2) / (2 * sigma**2))
  k1 = (k1 / k1.sum())[:, None]
  kernel = torch.FloatTensor(np.dot(k1, k1.transpose())).unsqueeze_(0)

  def filter2d(img, kernel):
    k = kernel.size(-1)
    b, c, h, w = img.size()
    img = f.pad(img, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    ph, pw = img.size()[-2:]
    img = img.view(b * c, 1, ph, pw)
    return f.conv2d(img, kernel.view(1, 1, k, k), padding=0).view(b, c, h, w)

  img = torch.from_numpy(img_hwc.transpose(2, 0, 1)[None].copy())
  blur = filter2d(img, kernel)
  residual = img - blur
  mask = (torch.abs(residual) * 255 > 10).float()
  soft_mask = filter2d(mask, kernel)
  sharp = torch.clip(img + 0.5 * residual, 0, 1)
  out = soft_mask * sharp + (1 - soft_mask) * img
  return out[0].numpy().transpose(1, 2, 0)


def test_usm_sharpen_matches_basicsr():
  import skimage.data

  from sr_jax.data import degradations

  hr = skimage.data.astronaut()[100:196, 180:276].astype(np.float32) / 255  # 96x96, edges
  got = degradations.usm_sharpen(hr)
  expected = torch_usm_sharp(hr)
  np.testing.assert_allclose(got, expected, atol=1e-5)
  assert np.abs(got - hr).max() > 0.05  # it does sharpen
  flat = np.full((32, 32, 3), 0.5, np.float32)
  np.testing.assert_allclose(degradations.usm_sharpen(flat), flat, atol=1e-6)


def test_pipeline_usm_targets():
  """data.usm: "hr" is the sharpened original "hr_unsharpened" (same crop and flip), and the
  bicubic LR is made from the original."""
  from sr_jax import data
  from sr_jax.data import degradations, examples

  config = tiny_config(**{"data.usm": True, "data.patch_size": 16})
  batch = next(data.create_train_iterator(config.data, seed=0, local_batch_size=2))
  assert set(batch) == {"lr", "hr", "hr_unsharpened"}
  for hr, plain, lr in zip(batch["hr"], batch["hr_unsharpened"], batch["lr"]):
    np.testing.assert_allclose(hr, degradations.usm_sharpen(plain), atol=1e-5)
    np.testing.assert_allclose(lr, examples.make_lr(plain, 2), atol=1e-6)


def test_vgg19_perceptual_loss_has_real_esrgans_layer_weights():
  """loss.feature_layers by BasicSR name, loss.feature_layer_weights summed (BasicSR's
  PerceptualLoss: sum of w * L1 per layer, before the ReLU); bad names / counts are refused."""
  from sr_jax import losses, utils

  names = ("conv1_2", "conv2_2", "conv3_4")
  config = tiny_config(
    **{
      "loss.feature_weight": 1.0,
      "loss.feature_backbone.name": "vgg19",
      "loss.feature_backbone.weights": "",  # random VGG19: the offline test
      "loss.feature_layers": names,
      "loss.feature_layer_weights": (0.1, 0.1, 1.0),
    }
  )
  loss, feature_state = losses.create_loss(config.loss)
  rng = np.random.default_rng(0)
  sr, hr = (jnp.asarray(rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)) for _ in range(2))
  total, parts = jax.jit(loss)(sr, hr, feature_state)
  from flax import nnx

  vgg = nnx.merge(loss.feature_graphdef, feature_state)
  f_sr = vgg.named_features(utils.imagenet_normalize(sr), names)
  f_hr = vgg.named_features(utils.imagenet_normalize(hr), names)
  expected = sum(w * jnp.mean(jnp.abs(f_sr[n] - f_hr[n])) for n, w in zip(names, (0.1, 0.1, 1.0)))
  np.testing.assert_allclose(float(parts["feature"]), float(expected), rtol=1e-5)
  np.testing.assert_allclose(float(total), float(parts["l1"] + expected), rtol=1e-5)
  assert float(jnp.min(f_sr["conv3_4"])) < 0  # before the ReLU
  config.loss.feature_layers = ("conv1_2", "conv9_9")
  with pytest.raises(ValueError, match=r"\['conv9_9'\] are not layers of 'vgg19'"):
    losses.create_loss(config.loss, load_weights=False)
  config.loss.feature_layers = names[:2]
  with pytest.raises(ValueError, match="one weight per loss.feature_layers"):
    losses.create_loss(config.loss, load_weights=False)
