"""OmniSR: parity with spandrel's network, detection from state dicts, loading, fine-tuning."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default as default_config
from sr_jax import models, sharding, train
from sr_jax.models import load_pretrained_sr, pretrained
from sr_jax.models.omnisr import OmniSR, _bilinear_matrix

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.OmniSR import OmniSR as TorchOmniSR  # noqa: E402

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


def state_dict(net) -> dict[str, np.ndarray]:
  return {key: value.numpy() for key, value in net.state_dict().items()}


def relative_error(net, torch_net, h=19, w=23) -> float:
  lr = np.random.default_rng(1).uniform(size=(1, h, w, 3)).astype(np.float32)
  with torch.no_grad():
    expected = torch_net(torch.from_numpy(lr.transpose(0, 3, 1, 2)))
  expected = expected.numpy().transpose(0, 2, 3, 1)
  out = np.asarray(jax.jit(lambda x: net(x))(jnp.asarray(lr)))
  assert out.shape == expected.shape
  return float(np.abs(out - expected).max() / np.abs(expected).max())


VARIANTS = {
  "w4-pe-x1": dict(up_scale=1, window_size=4),
  "w4-pe-2groups-x2": dict(up_scale=2, window_size=4, res_num=2),
  "w8-nope-nobias-2blocks-x3": dict(up_scale=3, window_size=8, pe=False, bias=False, block_num=2),
  "w8-pe-x4": dict(up_scale=4, window_size=8),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_parity_with_spandrel(variant, tmp_path):
  kwargs = {"num_feat": 16, "block_num": 1, "res_num": 1, **VARIANTS[variant]}
  torch_net = randomize(TorchOmniSR(**kwargs))
  path = tmp_path / "omnisr.pth"
  torch.save(torch_net.state_dict(), path)
  net = load_pretrained_sr(path)  # strict: every key of the file placed, none missing
  assert isinstance(net, OmniSR) and net.scale == kwargs["up_scale"]
  assert (net.num_feat, net.block_num, net.res_num) == (16, kwargs["block_num"], kwargs["res_num"])
  assert (net.pe, net.bias) == (kwargs.get("pe", True), kwargs.get("bias", True))
  if net.pe:
    assert net.window_size == kwargs["window_size"]
  error = relative_error(net, torch_net)
  assert error <= TOLERANCE, f"OmniSR {variant}: relative error {error:.3g}"


def test_bilinear_matrix_matches_torch():
  # Same source coordinates; torch rounds a few weights differently by one float32 ulp.
  functional = torch.nn.functional
  for size in (1, 2, 3, 4, 5, 7, 10):
    for out in (16, 19, 24, 37, 45):
      eye = torch.eye(size).view(1, 1, size, size)
      expected = functional.interpolate(eye, (out, size), mode="bilinear", align_corners=False)
      np.testing.assert_allclose(
        _bilinear_matrix(size, out), expected[0, 0].numpy(), rtol=0, atol=5e-7
      )


def test_detection_and_truncated_dict():
  torch_net = TorchOmniSR(num_feat=20, block_num=2, window_size=5, res_num=2, up_scale=3)
  state = state_dict(torch_net)
  state["total_ops"] = np.zeros(1)  # thop counters in some released files
  assert pretrained.infer_architecture(state) == (
    "omnisr",
    dict(
      scale=3,
      num_in_ch=3,
      num_out_ch=3,
      num_feat=20,
      block_num=2,
      pe=True,
      window_size=5,
      res_num=2,
      bias=True,
    ),
  )
  del state["residual_layer.1.esa.conv4.weight"]
  with pytest.raises(ValueError, match="omnisr.*residual_layer.1.esa.conv4.weight"):
    pretrained.infer_architecture(state)


def test_create_model_trains():
  config = default_config.get_config()
  config.model = ml_collections.ConfigDict(
    dict(
      name="omnisr",
      weights="",
      num_in_ch=3,
      num_out_ch=3,
      num_feat=16,
      block_num=1,
      pe=True,
      window_size=8,
      res_num=1,
      bias=True,
    )
  )
  config.data.scale = 2
  config.data.patch_size = 16
  config.train.batch_size = 8
  config.optim.warmup_steps = 1
  config.optim.learning_rate = 1e-3
  net = models.create_model(config.model, 2, nnx.Rngs(0))
  assert isinstance(net, OmniSR) and net.num_feat == 16
  mesh = sharding.create_mesh()
  trainer = train.create_trainer(config, mesh)
  rng = np.random.default_rng(0)
  hr = rng.uniform(size=(8, 32, 32, 3)).astype(np.float32)
  lr = hr.reshape(8, 16, 2, 16, 2, 3).mean(axis=(2, 4))
  batch = sharding.global_batch({"lr": lr, "hr": hr}, mesh)
  state, losses = trainer.state, []
  for _ in range(3):
    state, metrics = trainer.step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0], losses
