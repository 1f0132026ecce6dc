"""PLKSR and RealPLKSR: parity with spandrel's networks, detection, loading, fine-tuning."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default as default_config
from sr_jax import models, sharding, train
from sr_jax.models import load_pretrained_sr, pretrained
from sr_jax.models.plksr import PLKSR, RealPLKSR

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.PLKSR import PLKSR as TorchPLKSR  # noqa: E402
from spandrel.architectures.PLKSR import RealPLKSR as TorchRealPLKSR  # noqa: E402

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


def relative_error(net, torch_net, h=13, w=17) -> float:
  lr = np.random.default_rng(1).uniform(size=(1, h, w, 3)).astype(np.float32)
  with torch.no_grad():
    expected = torch_net(torch.from_numpy(lr.transpose(0, 3, 1, 2)))
  expected = expected.numpy().transpose(0, 2, 3, 1)
  out = np.asarray(jax.jit(lambda x: net(x))(jnp.asarray(lr)))
  assert out.shape == expected.shape
  return float(np.abs(out - expected).max() / np.abs(expected).max())


PLKSR_VARIANTS = {
  "ccm-plk-x2": dict(upscaling_factor=2, ccm_type="CCM", kernel_size=7, lk_type="PLK"),
  "iccm-sparse-noea-x3": dict(
    upscaling_factor=3, ccm_type="ICCM", lk_type="SparsePLK", use_ea=False
  ),
  "dccm-rect-x4": dict(upscaling_factor=4, ccm_type="DCCM", kernel_size=9, lk_type="RectSparsePLK"),
  "ccm-plk-x1": dict(upscaling_factor=1, ccm_type="CCM", kernel_size=5, lk_type="PLK"),
}
REALPLKSR_VARIANTS = {
  "groupnorm-x2": dict(upscaling_factor=2, kernel_size=7),
  "dysample-layernorm-x3": dict(upscaling_factor=3, kernel_size=5, dysample=True, layer_norm=True),
  "dysample-noea-x4": dict(upscaling_factor=4, kernel_size=5, dysample=True, use_ea=False),
  "dysample-x1": dict(upscaling_factor=1, kernel_size=5, dysample=True),
}


@pytest.mark.parametrize("variant", sorted(PLKSR_VARIANTS))
def test_plksr_parity_with_spandrel(variant, tmp_path):
  kwargs = PLKSR_VARIANTS[variant]
  torch_net = randomize(TorchPLKSR(dim=8, n_blocks=2, **kwargs))
  path = tmp_path / "plksr.pth"
  torch.save(torch_net.state_dict(), path)
  net = load_pretrained_sr(path)  # strict: every key of the file placed, none missing
  assert isinstance(net, PLKSR) and net.scale == kwargs["upscaling_factor"]
  assert (net.dim, net.n_blocks, net.ccm_type, net.lk_type) == (
    8,
    2,
    kwargs["ccm_type"],
    kwargs["lk_type"],
  )
  assert net.use_ea == kwargs.get("use_ea", True)
  error = relative_error(net, torch_net)
  assert error <= TOLERANCE, f"PLKSR {variant}: relative error {error:.3g}"


@pytest.mark.parametrize("variant", sorted(REALPLKSR_VARIANTS))
def test_realplksr_parity_with_spandrel(variant, tmp_path):
  kwargs = REALPLKSR_VARIANTS[variant]
  torch_net = randomize(TorchRealPLKSR(dim=8, n_blocks=2, **kwargs))
  path = tmp_path / "realplksr.pth"
  torch.save(torch_net.state_dict(), path)
  net = load_pretrained_sr(path)
  assert isinstance(net, RealPLKSR) and net.scale == kwargs["upscaling_factor"]
  assert (net.dim, net.n_blocks, net.kernel_size) == (8, 2, kwargs["kernel_size"])
  assert net.dysample == kwargs.get("dysample", False)
  assert net.layer_norm == kwargs.get("layer_norm", False)
  error = relative_error(net, torch_net)
  assert error <= TOLERANCE, f"RealPLKSR {variant}: relative error {error:.3g}"


def test_detection_and_truncated_dicts():
  state = state_dict(
    randomize(TorchPLKSR(dim=12, n_blocks=3, upscaling_factor=3, ccm_type="DCCM", kernel_size=9))
  )
  assert pretrained.infer_architecture(state) == (
    "plksr",
    dict(
      scale=3,
      dim=12,
      n_blocks=3,
      ccm_type="DCCM",
      kernel_size=9,
      split_ratio=0.25,
      lk_type="PLK",
      use_max_kernel=False,
      sparse_kernels=(5, 5, 5, 5),
      sparse_dilations=(1, 2, 3, 4),
      with_idt=False,
      use_ea=True,
    ),
  )
  del state["feats.2.refine.weight"]
  with pytest.raises(ValueError, match="plksr.*feats.2.refine.weight"):
    pretrained.infer_architecture(state)
  real = TorchRealPLKSR(dim=16, n_blocks=3, upscaling_factor=2, split_ratio=0.5, dysample=True)
  state = state_dict(real)
  assert pretrained.infer_architecture(state) == (
    "realplksr",
    dict(
      scale=2,
      dim=16,
      n_blocks=3,
      kernel_size=17,
      split_ratio=0.5,
      use_ea=True,
      norm_groups=4,
      dysample=True,
      layer_norm=False,
    ),
  )
  del state["feats.3.refine.weight"]
  with pytest.raises(ValueError, match="realplksr.*feats.3.refine.weight"):
    pretrained.infer_architecture(state)


def test_create_model_trains():
  config = default_config.get_config()
  config.model = ml_collections.ConfigDict(
    dict(
      name="realplksr",
      weights="",
      dim=8,
      n_blocks=1,
      kernel_size=5,
      split_ratio=0.25,
      use_ea=True,
      norm_groups=4,
      dysample=True,
      layer_norm=False,
    )
  )
  config.data.scale = 2
  config.data.patch_size = 8
  config.train.batch_size = 8
  config.optim.warmup_steps = 1
  config.optim.learning_rate = 1e-3
  net = models.create_model(config.model, 2, nnx.Rngs(0))
  assert isinstance(net, RealPLKSR) and net.dysample
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
