"""ZeRO-1 train state: the split rule, sharded step == replicated step, checkpoints across
layouts."""

import shutil

import jax
import numpy as np
import pytest

from sr_jax import checkpointing, optim, sharding, train, train_logging, train_state, train_step
from tests.test_train import L1, tiny_config


@pytest.fixture
def split_everything(monkeypatch):
  """The tiny test models have no leaf of 2**14 elements: split every leaf that can be."""
  monkeypatch.setattr(sharding, "MIN_SPLIT_SIZE", 0)


def _spec(x):
  return tuple(x.sharding.spec)


def test_split_axis_rule():
  assert sharding.split_axis((3, 3, 256, 256), 2) == 2  # the outermost divisible axis
  assert sharding.split_axis((3, 3, 64, 512), 8) == 2
  assert sharding.split_axis((3, 3, 4, 4096), 8) == 3
  assert sharding.split_axis((1000, 4096), 8) == 0
  assert sharding.split_axis((1001, 4096), 8) == 1
  assert sharding.split_axis((3, 3, 3, 64), 2) is None  # 1728 elements: too small
  assert sharding.split_axis((3, 3, 64, 64), 2) is None  # 36864 < MIN_SPLIT_SIZE
  assert sharding.split_axis((3, 3, 64, 256), 2) == 2
  assert sharding.split_axis((3, 3, 3, 64), 2, min_size=0) == 3
  assert sharding.split_axis((127, 129), 2, min_size=0) is None  # no divisible axis
  assert sharding.split_axis((4096, 4096), 1) is None  # one device
  assert sharding.split_axis((), 2, min_size=0) is None  # scalars


def test_state_shardings_splits_opt_state_and_ema_only(split_everything):
  config = tiny_config()
  _, tx = optim.from_config(config)
  _, state = train_state.create_train_state(config, tx)
  mesh = sharding.create_mesh()
  shardings = sharding.state_shardings(state, mesh)
  for key in ("step", "params", "model_state"):
    assert all(s.is_fully_replicated for s in jax.tree.leaves(shardings[key])), key
  ema = jax.tree.leaves(shardings["ema_params"])
  params = jax.tree.leaves(state["params"])
  kernel = next(i for i, p in enumerate(params) if p.ndim == 4)
  assert params[kernel].shape[2:] == (8, 8) and ema[kernel].spec == jax.P(None, None, "data")
  # Adam's moments are laid out as the EMA weights (same shapes), the step counts replicated.
  adam = [
    s
    for s in jax.tree.leaves(state["opt_state"], is_leaf=lambda x: hasattr(x, "mu"))
    if hasattr(s, "mu")
  ]
  assert adam
  for moments in (adam[0].mu, adam[0].nu):
    assert jax.tree.leaves(sharding.split_shardings(moments, mesh)) == ema
  for s, x in zip(jax.tree.leaves(shardings["opt_state"]), jax.tree.leaves(state["opt_state"])):
    axis = sharding.split_axis(x.shape, 8)
    assert s.spec == (jax.P() if axis is None else jax.P(*[None] * axis, "data")), x.shape
    assert axis is None or all(n % 8 for n in x.shape[:axis])
  placed = sharding.place_state(state, mesh)
  assert _spec(jax.tree.leaves(placed["ema_params"])[kernel]) == (None, None, "data")
  assert placed["ema_params"] is not state["ema_params"]


def test_sharded_step_equals_replicated_step(split_everything):
  config = tiny_config()
  schedule, tx = optim.from_config(config)
  rng = np.random.default_rng(0)
  batch = {
    "lr": rng.uniform(size=(8, 8, 8, 3)).astype(np.float32),
    "hr": rng.uniform(size=(8, 16, 16, 3)).astype(np.float32),
  }
  mesh = sharding.create_mesh()
  global_batch = sharding.global_batch(batch, mesh)
  results = {}
  for mode in ("replicated", "split"):
    graphdef, state = train_state.create_train_state(config, tx)
    if mode == "split":
      state = sharding.place_state(state, mesh)
      out_state = sharding.state_shardings(state, mesh)
    else:
      state = sharding.replicate(state, mesh)
      out_state = sharding.replicated(mesh)
    step = jax.jit(
      train_step.make_train_step(
        graphdef, tx, schedule, config.train.ema_decay, L1, mesh=mesh if mode == "split" else None
      ),
      donate_argnums=(0,),
      out_shardings=(out_state, sharding.replicated(mesh)),
    )
    for _ in range(3):
      state, metrics = step(state, global_batch)
    if mode == "split":
      assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state["params"]))
      assert any("data" in _spec(x) for x in jax.tree.leaves(state["ema_params"]))
      assert any("data" in _spec(x) for x in jax.tree.leaves(state["opt_state"]))
      # The predictor gathers the split EMA weights onto the device of a replicated leaf's
      # first copy.
      predict = train.make_predictor(graphdef)(state)
      assert predict(batch["lr"][0]).shape == (16, 16, 3)
      one = sharding.on_one_device(state["ema_params"])
      first = jax.tree.leaves(state["params"])[0].addressable_data(0).devices()
      assert all(x.devices() == first for x in jax.tree.leaves(one))
    results[mode] = jax.device_get((state, metrics))
  (state_r, metrics_r), (state_s, metrics_s) = results["replicated"], results["split"]
  np.testing.assert_allclose(metrics_s["loss"], metrics_r["loss"], rtol=1e-6)
  np.testing.assert_allclose(metrics_s["grad_norm"], metrics_r["grad_norm"], rtol=1e-5)
  assert int(state_s["step"]) == 3
  for key in ("params", "ema_params", "opt_state"):
    for a, b in zip(jax.tree.leaves(state_r[key]), jax.tree.leaves(state_s[key])):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize(
  "saved_split", [False, True], ids=["replicated_to_split", "split_to_replicated"]
)
def test_checkpoint_restores_across_layouts(tmp_path, split_everything, saved_split):
  config = tiny_config()
  _, tx = optim.from_config(config)
  _, state = train_state.create_train_state(config, tx)
  rng = np.random.default_rng(1)
  state = jax.tree.map(
    lambda x: (
      x + rng.standard_normal(x.shape).astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else x
    ),
    state,
  )
  mesh = sharding.create_mesh()
  split, replicated = sharding.place_state(state, mesh), sharding.replicate(state, mesh)
  manager = checkpointing.create_manager(str(tmp_path), keep=2, async_save=False)
  checkpointing.save(manager, 5, split if saved_split else replicated, None)
  manager.close()
  if saved_split:  # an old-style (replicated) template
    manager = checkpointing.create_manager(str(tmp_path), keep=2)
    restored = checkpointing.restore(manager, 5, train_state.abstract(replicated))
    manager.close()
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(restored))
  else:  # what training and evaluation restore into now
    abstract_state = train.create_trainer(config, mesh, abstract=True).state
    manager = checkpointing.create_manager(str(tmp_path), keep=2)
    restored = checkpointing.restore(manager, manager.latest_step(), abstract_state)
    manager.close()
    assert any("data" in _spec(x) for x in jax.tree.leaves(restored["ema_params"]))
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(restored["params"]))
  for a, b in zip(
    jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(jax.device_get(restored))
  ):
    np.testing.assert_array_equal(b, a)


def test_train_and_evaluate_resumes_split_state_exactly(tmp_path, split_everything):
  """train_and_evaluate with the split layout; resuming from its step-2 checkpoint ends
  bit-for-bit equal."""
  config = tiny_config(**{"train.steps": 4, "train.keep_checkpoints": 5})
  full, resumed = tmp_path / "full", tmp_path / "resumed"
  final = train.train_and_evaluate(config, str(full))
  assert any("data" in _spec(x) for x in jax.tree.leaves(final["opt_state"]))
  (resumed / "checkpoints").mkdir(parents=True)
  shutil.copytree(full / "checkpoints" / "2", resumed / "checkpoints" / "2")
  again = train.train_and_evaluate(config, str(resumed))
  assert int(again["step"]) == 4
  logged = [r["step"] for r in train_logging.read_jsonl(resumed / "metrics.jsonl") if "loss" in r]
  assert logged == [3, 4], "did not resume from step 2"
  for a, b in zip(jax.tree.leaves(jax.device_get(final)), jax.tree.leaves(jax.device_get(again))):
    np.testing.assert_array_equal(b, a)


def test_cpu_device_count_splits_the_batch_evenly():
  assert sharding.cpu_device_count(2, 8) == 2
  assert sharding.cpu_device_count(6, 16) == 4
  assert sharding.cpu_device_count(4, 6) == 3
  assert sharding.cpu_device_count(3) == 3
  assert sharding.available_cores() >= 1
  # The tests force 8 simulated devices through XLA_FLAGS (conftest.py): that wins, nothing is set.
  assert sharding.use_every_cpu_core() == 0
