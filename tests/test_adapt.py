"""Self-supervised adaptation (sr_jax/adapt.py, `upscale --adapt_steps`, data.degradation="self"):
it lowers its own loss, and no HR image is read on its path."""

import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import default as default_config
from configs import self_adapt_compact_x4
from sr_jax import adapt, checkpointing, data, train, upscale
from sr_jax.models.realesrgan import SRVGGNetCompact


def smooth_image(seed: int, height: int, width: int | None = None) -> np.ndarray:
  """uint8 RGB waves: structure a network can learn to upscale, unlike noise."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:height, : width or height] / 24.0
  waves = [np.sin(rng.uniform(1, 3) * x + rng.uniform(1, 3) * y + rng.uniform(0, 6)) for _ in "rgb"]
  return np.rint((np.stack(waves, -1) * 0.4 + 0.5) * 255).astype(np.uint8)


def recipe(**changes):
  config = default_config.get_config().adapt
  config.update(changes)
  return config


def self_supervised_l1(model, images, scale: int) -> float:
  batch = adapt.self_pairs(images, np.random.default_rng(123), 16, 6, scale)
  return float(jnp.mean(jnp.abs(model(jnp.asarray(batch["lr"])) - batch["hr"])))


def test_adaptation_lowers_its_self_supervised_loss_and_leaves_the_model_alone():
  model = SRVGGNetCompact(2, num_feat=8, num_conv=2, rngs=nnx.Rngs(0))
  before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
  images = [smooth_image(0, 32), smooth_image(1, 40, 28)]
  config = recipe(steps=30, learning_rate=3e-3, patch_size=6, warmup_steps=2, ema_decay=0.9)
  adapted, history = adapt.adapt(model, images, config)
  assert len(history) == 30 and all(np.isfinite(row["loss"]) for row in history)
  assert history[-1]["seconds"] >= history[0]["seconds"] > 0
  assert self_supervised_l1(adapted, images, 2) < 0.7 * self_supervised_l1(model, images, 2)
  after = jax.tree.map(np.array, nnx.state(model, nnx.Param))
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, before, after)))
  with pytest.raises(ValueError, match="at least 8 pixels"):
    adapt.adapt(model, [smooth_image(0, 7)], config)


class ReadGuard:
  """Records every image file PIL opens; `outside(folder)` lists those not under `folder`."""

  def __init__(self, monkeypatch):
    self.opened, self._open = [], Image.open
    monkeypatch.setattr(Image, "open", self)

  def __call__(self, fp, *args, **kwargs):
    if isinstance(fp, (str, os.PathLike)):
      self.opened.append(os.path.realpath(fp))
    return self._open(fp, *args, **kwargs)

  def outside(self, folder) -> list[str]:
    folder = os.path.realpath(folder) + os.sep
    return [path for path in self.opened if not path.startswith(folder)]


def lr_and_hr_folders(root, count: int, hr_side: int):
  """root/hr: HR images; root/lr: their MATLAB-bicubic x4 LR (what a user has); hr made
  unreadable (root ignores that, hence the ReadGuard)."""
  hr_dir, lr_dir = root / "hr", root / "lr"
  hr_dir.mkdir()
  lr_dir.mkdir()
  for i in range(count):
    hr = smooth_image(i, hr_side)
    Image.fromarray(hr).save(hr_dir / f"{i}.png")
    lr = data.make_lr(data.to_float(hr), 4)
    Image.fromarray(np.rint(lr * 255).astype(np.uint8)).save(lr_dir / f"{i}.png")
  os.chmod(hr_dir, 0)
  return hr_dir, lr_dir


def test_upscale_adapts_on_the_inputs_alone(tmp_path, monkeypatch, capsys):
  hr_dir, lr_dir = lr_and_hr_folders(tmp_path, count=2, hr_side=96)
  guard = ReadGuard(monkeypatch)
  adapted_to, adapt_images = [], adapt.adapt

  def spy(model, images, config, **kwargs):
    adapted_to.append(len(images))
    return adapt_images(model, images, config, **kwargs)

  monkeypatch.setattr(adapt, "adapt", spy)
  weights = "--weights=ncnn:realesrgan-animevideov3-x4"
  common = [weights, f"--input={lr_dir}", "--tile=0"]
  try:
    assert upscale.main([*common, f"--output={tmp_path / 'out'}", "--adapt_steps=2"]) == 0
    assert adapted_to == [2]  # once, to both inputs together
    assert "adapted to 2 image(s): 2 steps" in capsys.readouterr().err
    per_image = [f"--output={tmp_path / 'out1'}", "--adapt_steps=1", "--adapt_per_image"]
    assert upscale.main([*common, *per_image]) == 0
    assert adapted_to == [2, 1, 1]
    assert upscale.main([*common, f"--output={tmp_path / 'o'}", "--adapt_steps=-1"]) == 2
  finally:
    os.chmod(hr_dir, 0o755)
  assert guard.opened and not guard.outside(lr_dir)  # before the checks below open the outputs
  for name in ("0.png", "1.png"):
    for out in ("out", "out1"):
      assert Image.open(tmp_path / out / name).size == (96, 96)


def test_self_training_mode_reads_only_the_lr_folder_and_checkpoints(tmp_path, monkeypatch):
  hr_dir, lr_dir = lr_and_hr_folders(tmp_path, count=2, hr_side=128)
  guard = ReadGuard(monkeypatch)
  config = self_adapt_compact_x4.get_config()
  with pytest.raises(ValueError, match="'self' needs data.train_dirs"):
    data.create_train_iterator(config.data, 0, 8)
  config.data.train_dirs = (str(lr_dir),)
  config.data.patch_size = 8  # 32-pixel targets cut from the 32-pixel LR images
  config.model.weights = ""  # a tiny random net: the data path is what is tested
  config.model.num_feat, config.model.num_conv = 8, 1
  config.train.steps, config.train.checkpoint_every_steps = 2, 2
  try:
    state = train.train_and_evaluate(config, str(tmp_path / "run"))
  finally:
    os.chmod(hr_dir, 0o755)
  assert int(state["step"]) == 2
  manager = checkpointing.create_manager(str(tmp_path / "run"), 1)
  assert manager.latest_step() == 2
  manager.close()
  assert guard.opened and not guard.outside(lr_dir)
