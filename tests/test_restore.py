"""Restoring for inference needs only the workdir: no pretrained file, no optimizer, no loss.

A U-Net is fine-tuned from an encoder weight file in a temp folder; the file is then deleted, and
`launch.py --mode=eval`, `python -m sr_jax.upscale --workdir` and `inference.restore_model` still
work from what the checkpoint holds.
"""

import builtins
import os
import shutil
import subprocess
import sys

import numpy as np
import optax
from PIL import Image
import pytest
import skimage.data

from sr_jax import inference, losses, optim
from sr_jax.backbones import create_backbone
from sr_jax.weights import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_UNET = [
  "--config.data.scale=2",
  "--config.data.patch_size=32",
  "--config.model.decoder_features=(16, 16, 8, 8, 8)",
  "--config.model.shallow_features=8",
  "--config.optim.warmup_steps=0",
  "--config.train.batch_size=2",
  "--config.train.steps=2",
  "--config.train.log_every_steps=1",
  "--config.train.checkpoint_every_steps=2",
]


def _run(*args, timeout=900):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  result = subprocess.run(
    [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.fixture(scope="module")
def unet_workdir(tmp_path_factory):
  """A U-Net fine-tuned 2 steps from a copy of the EfficientNet-Lite0 file, then deleted."""
  tmp = tmp_path_factory.mktemp("unet_run")
  encoder_file = tmp / "lite0.pth"
  shutil.copy(registry.resolve("efficientnet_lite0"), encoder_file)
  val = tmp / "val"
  val.mkdir()
  Image.fromarray(skimage.data.astronaut()[100:164, 180:260]).save(val / "crop.png")
  workdir = tmp / "run"
  _run(
    "launch.py",
    "--config=configs/unet_effnetlite0_x4.py",
    f"--workdir={workdir}",
    f"--config.model.encoder.weights={encoder_file}",
    "--config.eval.dirs=()",
    *TINY_UNET,
  )
  stem = np.asarray(
    create_backbone("efficientnet_lite0", encoder_file, head=False).conv_stem.kernel[...]
  )
  encoder_file.unlink()
  return workdir, val, stem


def test_eval_and_upscale_work_without_the_encoder_file(unet_workdir, tmp_path):
  workdir, val, _ = unet_workdir
  out = _run(
    "launch.py",
    "--config=configs/unet_effnetlite0_x4.py",
    f"--workdir={workdir}",
    "--mode=eval",
    f"--config.eval.dirs=('{val}',)",
    *TINY_UNET,
  )
  assert "| val | bicubic |" in out.stdout and "checkpoint step 2" in out.stdout
  _run("-m", "sr_jax.upscale", f"--workdir={workdir}", f"--input={val}", f"--output={tmp_path}")
  assert Image.open(tmp_path / "crop.png").size == (160, 128)


def test_restore_reads_only_the_workdir_and_builds_no_optimizer(unet_workdir, monkeypatch):
  workdir, val, pretrained_stem = unet_workdir

  def refuse(what):
    def fail(*args, **kwargs):
      raise AssertionError(f"inference restore called {what}")

    return fail

  for module, name in ((optim, "from_config"), (optax, "adamw"), (losses, "create_loss")):
    monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
  monkeypatch.setattr(registry, "resolve", refuse("registry.resolve"))
  opened = []
  real_open = builtins.open

  def recording_open(file, *args, **kwargs):
    opened.append(os.path.abspath(os.fspath(file)))
    return real_open(file, *args, **kwargs)

  monkeypatch.setattr(builtins, "open", recording_open)
  model, step, config = inference.restore_model(str(workdir))
  monkeypatch.undo()
  assert step == 2 and config.model.name == "unet"
  outside = [path for path in opened if not path.startswith(str(workdir))]
  assert not outside, f"restore opened files outside the workdir: {outside}"
  # The encoder is frozen for these 2 steps (train.freeze_encoder_steps): the checkpoint holds
  # the pretrained weights that the fresh run loaded from the file.
  stem = np.asarray(model.encoder.conv_stem.kernel[...])
  np.testing.assert_allclose(stem, pretrained_stem, rtol=1e-6, atol=1e-7)  # EMA rounding
  lr = np.asarray(Image.open(val / "crop.png"), np.float32)[None, :16, :16] / 255
  assert model(lr).shape == (1, 32, 32, 3)
