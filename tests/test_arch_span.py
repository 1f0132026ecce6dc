"""SPAN: parity with spandrel's network, detection from state dicts, loading, fine-tuning."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default as default_config
from sr_jax import models, sharding, train
from sr_jax.models import load_pretrained_sr, pretrained
from sr_jax.models.span import SPAN

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.SPAN import SPAN as TorchSPAN  # noqa: E402

TOLERANCE = 1e-4  # max |jax - torch| / max |torch|


def torch_span(scale, norm=True, feature_channels=8, seed=0):
  """spandrel's SPAN with random weights of non-trivial statistics, in eval mode."""
  net = TorchSPAN(
    num_in_ch=3, num_out_ch=3, feature_channels=feature_channels, upscale=scale, norm=norm
  )
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in net.parameters():
      std = 0.02 + 0.18 * torch.rand((), generator=generator)
      param.copy_(torch.randn(param.shape, generator=generator) * std)
  return net.eval()


def state_dict(net) -> dict[str, np.ndarray]:
  return {key: value.numpy() for key, value in net.state_dict().items()}


def relative_error(net, torch_net, h=13, w=17) -> float:
  lr = np.random.default_rng(1).uniform(size=(1, h, w, 3)).astype(np.float32)
  with torch.no_grad():
    expected = torch_net(torch.from_numpy(lr.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  out = np.asarray(jax.jit(lambda x: net(x))(jnp.asarray(lr)))
  assert out.shape == expected.shape
  return float(np.abs(out - expected).max() / np.abs(expected).max())


VARIANTS = [(1, True), (2, True), (3, False), (4, True)]


@pytest.mark.parametrize("scale, norm", VARIANTS)
def test_parity_with_spandrel(scale, norm, tmp_path):
  torch_net = torch_span(scale, norm)
  path = tmp_path / "span.pth"
  torch.save(torch_net.state_dict(), path)
  net = load_pretrained_sr(path)  # strict: every key of the file placed, none missing
  assert isinstance(net, SPAN) and net.scale == scale and net.norm == norm
  assert (net.feature_channels, net.num_in_ch, net.num_out_ch) == (8, 3, 3)
  error = relative_error(net, torch_net)
  assert error <= TOLERANCE, f"SPAN x{scale} norm={norm}: relative error {error:.3g}"


def test_detection_and_truncated_dict():
  state = state_dict(torch_span(3, norm=False, feature_channels=12))
  assert pretrained.infer_architecture(state) == (
    "span",
    dict(scale=3, num_in_ch=3, num_out_ch=3, feature_channels=12, norm=False),
  )
  del state["conv_2.conv.2.weight"]
  with pytest.raises(ValueError, match="span.*conv_2.conv.2.weight"):
    pretrained.infer_architecture(state)


def test_create_model_trains():
  config = default_config.get_config()
  config.model = ml_collections.ConfigDict(
    dict(name="span", weights="", num_in_ch=3, num_out_ch=3, feature_channels=8, norm=True)
  )
  config.data.scale = 2
  config.data.patch_size = 8
  config.train.batch_size = 8
  config.optim.warmup_steps = 1
  config.optim.learning_rate = 1e-3
  net = models.create_model(config.model, 2, nnx.Rngs(0))
  assert isinstance(net, SPAN) and net.feature_channels == 8
  mesh = sharding.create_mesh()
  trainer = train.create_trainer(config, mesh)
  rng = np.random.default_rng(0)
  hr = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
  lr = hr.reshape(8, 8, 2, 8, 2, 3).mean(axis=(2, 4))
  batch = sharding.global_batch({"lr": lr, "hr": hr}, mesh)
  state, losses = trainer.state, []
  for _ in range(4):
    state, metrics = trainer.step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0], losses
