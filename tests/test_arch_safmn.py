"""SAFMN: parity with spandrel's network, detection from state dicts, loading, fine-tuning."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default as default_config
from sr_jax import models, sharding, train
from sr_jax.models import load_pretrained_sr, pretrained
from sr_jax.models.safmn import SAFMN, _adaptive_bins, _nearest_indices

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.SAFMN import SAFMN as TorchSAFMN  # noqa: E402

TOLERANCE = 1e-4  # max |jax - torch| / max |torch|


def randomize(net, seed=0):
  """Random weights of non-trivial statistics (norm scales near 1), eval mode."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in net.named_parameters():
      std = 0.02 + 0.18 * torch.rand((), generator=generator)
      value = torch.randn(param.shape, generator=generator)
      is_norm_scale = "norm" in name and name.endswith("weight")
      param.copy_(1 + 0.1 * value if is_norm_scale else value * std)
  return net.eval()


def torch_safmn(scale, dim=8, n_blocks=2, ffn_scale=1.5):
  return randomize(
    TorchSAFMN(dim=dim, n_blocks=n_blocks, ffn_scale=ffn_scale, upscaling_factor=scale)
  )


def state_dict(net) -> dict[str, np.ndarray]:
  return {key: value.numpy() for key, value in net.state_dict().items()}


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def relative_error(net, torch_net, h=19, w=23) -> float:
  lr = np.random.default_rng(1).uniform(size=(1, h, w, 3)).astype(np.float32)
  with torch.no_grad():
    expected = torch_net(nchw(lr)).numpy().transpose(0, 2, 3, 1)
  out = np.asarray(jax.jit(lambda x: net(x))(jnp.asarray(lr)))
  assert out.shape == expected.shape
  return float(np.abs(out - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_parity_with_spandrel(scale, tmp_path):
  torch_net = torch_safmn(scale)
  path = tmp_path / "safmn.pth"
  torch.save(torch_net.state_dict(), path)
  net = load_pretrained_sr(path)  # strict: every key of the file placed, none missing
  assert isinstance(net, SAFMN) and net.scale == scale
  assert (net.dim, net.n_blocks, net.ffn_scale) == (8, 2, 1.5)
  error = relative_error(net, torch_net)
  assert error <= TOLERANCE, f"SAFMN x{scale}: relative error {error:.3g}"


def test_pooling_and_nearest_indices_match_torch_for_odd_sizes():
  # The index tables behind adaptive_max_pool / resize_nearest (their jnp use: the parity tests).
  functional = torch.nn.functional
  rng = np.random.default_rng(0)
  for size in range(8, 80):
    for out in {size // 2, size // 4, size // 8, size // 3}:
      x = rng.normal(size=size).astype(np.float32)
      expected = functional.adaptive_max_pool2d(torch.from_numpy(x).view(1, 1, size, 1), (out, 1))
      pooled = x[_adaptive_bins(size, out)].max(axis=1)
      np.testing.assert_array_equal(pooled, expected.view(-1).numpy())
      up = functional.interpolate(expected, size=(size, 1), mode="nearest").view(-1).numpy()
      np.testing.assert_array_equal(pooled[_nearest_indices(out, size)], up)


def test_detection_and_truncated_dict():
  state = state_dict(torch_safmn(3, dim=12, n_blocks=3, ffn_scale=2.0))
  assert pretrained.infer_architecture(state) == (
    "safmn",
    dict(scale=3, dim=12, n_blocks=3, ffn_scale=2.0),
  )
  del state["feats.2.ccm.ccm.2.weight"]
  with pytest.raises(ValueError, match="safmn.*feats.2.ccm.ccm.2.weight"):
    pretrained.infer_architecture(state)


def test_create_model_trains():
  config = default_config.get_config()
  config.model = ml_collections.ConfigDict(
    dict(name="safmn", weights="", dim=8, n_blocks=1, ffn_scale=2.0)
  )
  config.data.scale = 2
  config.data.patch_size = 8
  config.train.batch_size = 8
  config.optim.warmup_steps = 1
  config.optim.learning_rate = 1e-3
  net = models.create_model(config.model, 2, nnx.Rngs(0))
  assert isinstance(net, SAFMN) and net.dim == 8
  mesh = sharding.create_mesh()
  trainer = train.create_trainer(config, mesh)
  rng = np.random.default_rng(0)
  hr = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
  lr = hr.reshape(8, 8, 2, 8, 2, 3).mean(axis=(2, 4))
  batch = sharding.global_batch({"lr": lr, "hr": hr}, mesh)
  state, losses = trainer.state, []
  for _ in range(3):
    state, metrics = trainer.step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0], losses
