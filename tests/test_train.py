"""Training slice: multi-device step equivalence, launch.py smoke run, NaN stop (kill-and-resume:
test_preemption.py)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from configs import default as default_config
from sr_jax import (
  checkpointing,
  losses,
  optim,
  sharding,
  train,
  train_logging,
  train_state,
  train_step,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny overrides shared by the in-process config and the command line.
TINY = {
  "data.scale": 2,
  "data.patch_size": 8,
  "model.num_feat": 8,
  "model.num_block": 1,
  "optim.warmup_steps": 2,
  "train.batch_size": 8,
  "train.steps": 6,
  "train.log_every_steps": 1,
  "train.eval_every_steps": 1000,
  "train.checkpoint_every_steps": 2,
  "eval.dirs": (),
}


L1 = losses.Loss(l1_weight=1.0)


def tiny_config(**overrides):
  config = default_config.get_config()
  for key, value in {**TINY, **overrides}.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def launch_command(workdir, *extra, overrides=None):
  flags = [
    f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}"
    for k, v in {**TINY, **(overrides or {})}.items()
  ]
  return [
    sys.executable,
    os.path.join(ROOT, "launch.py"),
    f"--config={ROOT}/configs/default.py",
    f"--workdir={workdir}",
    *flags,
    *extra,
  ]


def subprocess_env(num_devices=2):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  return env


def test_train_step_on_8_devices_equals_1_device():
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  config = tiny_config()
  schedule, tx = optim.from_config(config)
  rng = np.random.default_rng(0)
  batch = {
    "lr": rng.uniform(size=(8, 8, 8, 3)).astype(np.float32),
    "hr": rng.uniform(size=(8, 16, 16, 3)).astype(np.float32),
  }
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.create_mesh(devices)
    graphdef, state = train_state.create_train_state(config, tx)
    state = sharding.replicate(state, mesh)
    step = jax.jit(
      train_step.make_train_step(graphdef, tx, schedule, config.train.ema_decay, L1),
      out_shardings=(sharding.replicated(mesh),) * 2,
    )
    global_batch = sharding.global_batch(batch, mesh)
    assert len(global_batch["lr"].sharding.device_set) == len(devices)
    for _ in range(2):
      state, metrics = step(state, global_batch)
    results.append(jax.device_get((state["params"], metrics["loss"])))
  (params_1, loss_1), (params_8, loss_8) = results
  np.testing.assert_allclose(loss_8, loss_1, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params_1), jax.tree.leaves(params_8)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_launch_train_then_eval_mode(tmp_path):
  workdir = tmp_path / "run"
  overrides = {
    "train.steps": 4,
    "train.eval_every_steps": 2,
    "train.eval_at_start": True,
    "eval.dirs": ("embedded:val",),
  }
  subprocess.run(
    launch_command(workdir, overrides=overrides),
    check=True,
    cwd=ROOT,
    env=subprocess_env(),
    timeout=300,
  )
  rows = train_logging.read_jsonl(workdir / "metrics.jsonl")
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
  assert {"loss", "learning_rate", "steps_per_sec"} <= set(train_rows[0])
  results = json.loads((workdir / "eval_results.json").read_text())
  assert results["step"] == 4 and results["scale"] == 2
  val = results["datasets"]["embedded_val"]
  assert set(val) == {"psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y", "num_images"}
  assert val["num_images"] >= 1 and 15 < val["bicubic_psnr_y"] < 60
  assert (workdir / "comparison.png").exists() and (workdir / "config.json").exists()
  # One figure per eval image and evaluation; step 0's SR images are the "before" panels.
  figures = workdir / "figures"
  before = figures / "step0000000" / "embedded_val__chelsea.png"
  after = figures / "step0000004" / "embedded_val__chelsea.png"
  assert (figures / "sr_step0000000" / "embedded_val__chelsea.png").exists()
  assert Image.open(after).width > Image.open(before).width  # + the step-0 panel
  assert any(name.startswith("events") for name in os.listdir(workdir / "tensorboard"))

  run_results = (workdir / "eval_results.json").read_text()
  out = subprocess.run(
    launch_command(workdir, "--mode=eval", overrides={**overrides, "eval.checkpoint": 2}),
    check=True,
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert "| embedded_val | bicubic |" in out.stdout
  written = workdir / "eval" / "step0000002_embedded_val"
  assert f"written to {written}" in out.stdout
  assert json.loads((written / "eval_results.json").read_text())["step"] == 2
  assert (workdir / "eval_results.json").read_text() == run_results  # the run's, untouched

  # Without --config: the run's own config.json (its eval sets, its latest checkpoint).
  out = subprocess.run(
    [sys.executable, "launch.py", f"--workdir={workdir}", "--mode=eval"],
    check=True,
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert "note: --config differs" not in out.stdout
  assert (workdir / "eval" / "step0000004_embedded_val" / "eval_results.md").exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = tiny_config(
    **{
      "optim.learning_rate": 1e30,
      "optim.warmup_steps": 0,
      "optim.schedule": "constant",
      "optim.grad_clip_norm": 0.0,
      "train.checkpoint_every_steps": 1,
    }
  )
  with pytest.raises(FloatingPointError, match="non-finite loss .* at step"):
    train.train_and_evaluate(config, str(tmp_path))
  manager = checkpointing.create_manager(str(tmp_path), keep=3)
  assert manager.latest_step() is not None
  manager.close()
  rows = train_logging.read_jsonl(tmp_path / "metrics.jsonl")
  assert all(np.isfinite(r["loss"]) for r in rows)
