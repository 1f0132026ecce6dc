"""Gradient accumulation (train.grad_accum_steps): k micro-batches give the update of the whole
batch, on the replicated and the ZeRO-1 (`mesh=`) step over 8 simulated devices."""

import jax
import numpy as np
import pytest

from sr_jax import optim, sharding, train_state, train_step
from tests.test_train import tiny_config


@pytest.fixture
def split_everything(monkeypatch):
  """The tiny test models have no leaf of 2**14 elements: split every leaf that can be."""
  monkeypatch.setattr(sharding, "MIN_SPLIT_SIZE", 0)


def _run(config, mesh, zero1: bool, batch, steps=2):
  graphdef, state = train_state.create_train_state(config, optim.from_config(config)[1])
  if zero1:
    state = sharding.place_state(state, mesh)
    out_state = sharding.state_shardings(state, mesh)
  else:
    state = sharding.replicate(state, mesh)
    out_state = sharding.replicated(mesh)
  step = jax.jit(
    train_step.make_step_fn(config, graphdef, mesh if zero1 else None),
    donate_argnums=(0,),
    out_shardings=(out_state, sharding.replicated(mesh)),
  )
  for _ in range(steps):
    state, metrics = step(state, sharding.global_batch(batch, mesh))
  return jax.device_get((state, metrics))


def test_accumulated_update_equals_whole_batch_update(split_everything):
  assert jax.device_count() == 8
  rng = np.random.default_rng(0)
  batch = {
    "lr": rng.uniform(size=(32, 8, 8, 3)).astype(np.float32),
    "hr": rng.uniform(size=(32, 16, 16, 3)).astype(np.float32),
  }
  mesh = sharding.create_mesh()
  config = tiny_config(**{"train.batch_size": 32, "optim.warmup_steps": 0})
  whole = _run(config, mesh, False, batch)
  for zero1 in (False, True):
    config = tiny_config(
      **{"train.batch_size": 32, "optim.warmup_steps": 0, "train.grad_accum_steps": 4}
    )
    (state, metrics), (state_1, metrics_1) = _run(config, mesh, zero1, batch), whole
    np.testing.assert_allclose(metrics["loss"], metrics_1["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["loss_l1"], metrics_1["loss_l1"], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], metrics_1["grad_norm"], rtol=1e-5)
    for key in ("params", "ema_params", "opt_state"):
      for a, b in zip(jax.tree.leaves(state_1[key]), jax.tree.leaves(state[key])):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=f"{key} zero1={zero1}")


def test_micro_batches_take_every_kth_example():
  x = np.arange(12)
  micro = train_step.split_micro_batches({"lr": x}, 3)["lr"]
  np.testing.assert_array_equal(micro, [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])


def test_batch_size_must_split_into_micro_batches_over_devices():
  config = tiny_config(**{"train.batch_size": 24, "train.grad_accum_steps": 2})
  graphdef, _ = train_state.create_train_state(config, optim.from_config(config)[1])
  with pytest.raises(ValueError, match=r"train.batch_size=24 .* train.grad_accum_steps=2 x 8"):
    train_step.make_step_fn(config, graphdef, sharding.create_mesh())
  config.train.grad_accum_steps = 0
  with pytest.raises(ValueError, match="train.grad_accum_steps=0 must be >= 1"):
    train_step.make_step_fn(config, graphdef, sharding.create_mesh())
