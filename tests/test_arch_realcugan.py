"""Real-CUGAN (UpCunet2x / 3x / 4x, pro, 2x_fast) against spandrel's: parity, loading, detection,
fine-tuning. The networks have fixed widths (no tiny form): forwards are jitted to stay fast."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from sr_jax import models, sharding, train
from sr_jax.models import load_pretrained_sr, pretrained, realcugan
from sr_jax.weights import porting

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.RealCUGAN import (  # noqa: E402
  UpCunet2x,
  UpCunet2x_fast,
  UpCunet3x,
  UpCunet4x,
)

# name: (reference class, its kwargs, what sr_jax detects, LR size the reference accepts). Sizes
# are odd where the reference allows: its reflect padding needs the margin below the input size,
# and 2x_fast needs the size rounded up to 2 to be a multiple of 4.
VARIANTS = {
  "2x": (UpCunet2x, {}, dict(scale=2, pro=False, fast=False), (21, 23)),
  "3x": (UpCunet3x, {}, dict(scale=3, pro=False, fast=False), (19, 21)),
  "4x_pro_gray": (
    UpCunet4x,
    dict(pro=True, in_channels=1, out_channels=1),
    dict(scale=4, pro=True, fast=False, in_channels=1, out_channels=1),
    (21, 20),
  ),
  "2x_fast": (UpCunet2x_fast, {}, dict(scale=2, pro=False, fast=True), (43, 40)),
}


def random_reference(cls, seed: int = 0, **kwargs):
  """A spandrel UpCunet with random weights of non-trivial statistics, in eval mode."""
  net = cls(**kwargs).eval()
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in net.parameters():
      param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
  return net


def torch_forward(net, lr_nhwc: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    out = net(torch.from_numpy(lr_nhwc.transpose(0, 3, 1, 2).copy()))
  return out.numpy().transpose(0, 2, 3, 1)


def jitted_forward(net, lr: np.ndarray) -> np.ndarray:
  graphdef, state = nnx.split(net)
  return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(lr)))


def state_of(net) -> dict[str, np.ndarray]:
  return {key: value.numpy() for key, value in net.state_dict().items()}


def nnx_shapes(net) -> dict[str, tuple]:
  """`merge.flatten_state`'s keys and shapes, for an abstract (`nnx.eval_shape`) network too."""
  flat = nnx.to_flat_state(nnx.state(net, nnx.Not(nnx.RngState)))
  return {".".join(map(str, path)): tuple(var.get_value().shape) for path, var in flat}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pth_loads_and_matches_spandrel(tmp_path, variant):
  cls, kwargs, expected, (h, w) = VARIANTS[variant]
  ref = random_reference(cls, **kwargs)
  state = state_of(ref)
  found = realcugan.detect_realcugan(state)
  net = nnx.eval_shape(lambda: realcugan.RealCUGAN(**found, rngs=nnx.Rngs(0)))
  ported = porting.torch_to_nnx(state, realcugan.RealCUGAN.port_rules)
  assert {k: v.shape for k, v in ported.items()} == nnx_shapes(net)

  torch.save(ref.state_dict(), tmp_path / "cugan.pth")
  net = load_pretrained_sr(tmp_path / "cugan.pth")
  assert type(net) is realcugan.RealCUGAN
  for key, value in {"in_channels": 3, "out_channels": 3, **expected}.items():
    assert getattr(net, key) == value, key
  lr = np.random.default_rng(1).random((1, h, w, net.in_channels), dtype=np.float32)
  sr = jitted_forward(net, lr)
  ref_sr = torch_forward(ref, lr)
  assert sr.shape == ref_sr.shape == (1, h * net.scale, w * net.scale, net.out_channels)
  err = float(np.abs(sr - ref_sr).max() / np.abs(ref_sr).max())
  assert err <= 1e-4, f"{variant}: max |jax - torch| / max |torch| = {err:.3g}"


def test_detection_and_truncated_files():
  state = state_of(UpCunet3x(pro=True))
  state["pro"] = np.zeros(1, np.float32)
  found = dict(scale=3, in_channels=3, out_channels=3, pro=True, fast=False)
  assert pretrained.infer_architecture(state) == ("realcugan", found)
  fast = state_of(UpCunet2x_fast(in_channels=1, out_channels=1))
  assert realcugan.detect_realcugan(fast) == dict(
    scale=2, in_channels=1, out_channels=1, pro=False, fast=True
  )
  truncated = {k: v for k, v in state.items() if not k.startswith("unet2.conv4.seblock")}
  with pytest.raises(ValueError, match=r"realcugan.*missing key 'unet2\.conv4\.seblock\.conv1"):
    pretrained.infer_architecture(truncated)
  four = state_of(UpCunet4x())
  del four["conv_final.bias"]
  with pytest.raises(ValueError, match=r"missing key 'conv_final\.bias'"):
    pretrained.infer_architecture(four)


def test_create_model_and_a_few_training_steps_lower_the_loss():
  config = default.get_config()
  config.model = ml_collections.ConfigDict(
    dict(name="realcugan", weights="", in_channels=3, out_channels=3, pro=False, fast=False)
  )
  config.data.scale = 2
  config.train.batch_size = 8
  config.train.ema_decay = 0.0
  config.optim.warmup_steps = 0
  config.optim.learning_rate = 1e-4
  net = models.create_model(config.model, 2, nnx.Rngs(0))
  assert type(net) is realcugan.RealCUGAN and (net.scale, net.fast) == (2, False)
  mesh = sharding.create_mesh()
  trainer = train.create_trainer(config, mesh)
  # Patches smaller than the reflect margin: padded by repeated reflection (PyTorch would refuse).
  hr = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
  lr = np.ascontiguousarray(hr[:, ::2, ::2])
  batch = sharding.global_batch({"lr": lr, "hr": hr}, mesh)
  state, losses = trainer.state, []
  for _ in range(3):
    state, metrics = trainer.step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0], losses
