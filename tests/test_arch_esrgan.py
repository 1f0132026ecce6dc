"""ESRGAN key layouts of RRDBNet (old-arch, BasicSR, BSRGAN) against spandrel's ESRGAN."""

import re

from flax import nnx
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from sr_jax import models, sharding, train
from sr_jax.models import esrgan, load_pretrained_sr, pretrained
from sr_jax.models.realesrgan import RRDBNet
from sr_jax.weights import porting

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.ESRGAN import ESRGAN as TorchESRGAN  # noqa: E402

# spandrel's constructor (trunk scale, unshuffled input channels) -> what sr_jax detects.
VARIANTS = {
  "x4": (dict(scale=4), dict(scale=4, shuffle_factor=1)),
  "x8": (dict(scale=8), dict(scale=8, shuffle_factor=1)),
  "x2": (dict(scale=2), dict(scale=2, shuffle_factor=1)),
  "x1": (dict(scale=1), dict(scale=1, shuffle_factor=1)),
  "x2_unshuffle": (dict(scale=4, in_nc=12), dict(scale=2, shuffle_factor=2)),
  "x1_unshuffle": (dict(scale=4, in_nc=48), dict(scale=1, shuffle_factor=4)),
  "x4_plus_gray": (
    dict(scale=4, plus=True, in_nc=1, out_nc=1),
    dict(scale=4, plus=True, num_in_ch=1, num_out_ch=1),
  ),
}


def random_reference(seed: int = 0, **kwargs):
  """spandrel's ESRGAN (tiny) with random weights of non-trivial statistics, in eval mode."""
  shuffle = {12: 2, 48: 4}.get(kwargs.get("in_nc", 3))
  net = TorchESRGAN(num_filters=8, num_blocks=2, shuffle_factor=shuffle, **kwargs).eval()
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in net.parameters():
      param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
  return net


def torch_forward(net, lr_nhwc: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    out = net(torch.from_numpy(lr_nhwc.transpose(0, 3, 1, 2).copy()))
  return out.numpy().transpose(0, 2, 3, 1)


def relative_error(ours, ref) -> float:
  return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


def state_of(net) -> dict[str, np.ndarray]:
  return {key: value.numpy() for key, value in net.state_dict().items()}


def nnx_shapes(net) -> dict[str, tuple]:
  """`merge.flatten_state`'s keys and shapes, for an abstract (`nnx.eval_shape`) network too."""
  flat = nnx.to_flat_state(nnx.state(net, nnx.Not(nnx.RngState)))
  return {".".join(map(str, path)): tuple(var.get_value().shape) for path, var in flat}


def to_layout(state: dict, rename) -> dict:
  """The same weights under another layout's names (`rename` of each module path)."""
  out = {}
  for key, value in state.items():
    module_path, _, leaf = key.rpartition(".")
    out[f"{rename(module_path)}.{leaf}"] = value
  return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_old_arch_pth_loads_and_matches_spandrel(tmp_path, variant):
  spandrel_kwargs, expected = VARIANTS[variant]
  ref = random_reference(**spandrel_kwargs)
  torch.save(ref.state_dict(), tmp_path / "esrgan.pth")
  net = load_pretrained_sr(tmp_path / "esrgan.pth")
  assert type(net) is esrgan.ESRGAN
  for key, value in dict(num_feat=8, num_block=2, num_grow_ch=32, **expected).items():
    assert getattr(net, key) == value, key
  channels = spandrel_kwargs.get("out_nc", 3)
  lr = np.random.default_rng(1).random((1, 13, 17, channels), dtype=np.float32)
  sr = net(jnp.asarray(lr))
  ref_sr = torch_forward(ref, lr)
  assert sr.shape == ref_sr.shape == (1, 13 * net.scale, 17 * net.scale, channels)
  err = relative_error(sr, ref_sr)
  assert err <= 1e-4, f"{variant}: max |jax - torch| / max |torch| = {err:.3g}"


def test_port_rules_map_the_spandrel_state_dict_key_for_key():
  for spandrel_kwargs, _ in VARIANTS.values():
    state = state_of(random_reference(**spandrel_kwargs))
    found = esrgan.detect_esrgan(state)
    net = nnx.eval_shape(lambda: esrgan.ESRGAN(**found, rngs=nnx.Rngs(0)))
    ported = porting.torch_to_nnx(state, esrgan.ESRGAN.port_rules)
    assert {k: v.shape for k, v in ported.items()} == nnx_shapes(net)


def old_to_bsrgan(module_path: str) -> str:
  """BasicSR names (from old-arch) -> BSRGAN / RealSR names."""
  path = esrgan.old_arch_to_basicsr(module_path)
  path = re.sub(r"body\.(\d+)\.rdb(\d)\.", r"RRDB_trunk.\1.RDB\2.", path)
  path = re.sub(r"conv_up(\d)$", r"upconv\1", path)
  return {"conv_body": "trunk_conv", "conv_hr": "HRconv"}.get(path, path)


LAYOUTS = {
  "basicsr": (esrgan.old_arch_to_basicsr, "rrdbnet", RRDBNet),
  "bsrgan": (old_to_bsrgan, "esrgan_bsrgan", esrgan.BSRGAN),
}


@pytest.mark.parametrize(
  "layout, variant",
  [("basicsr", "x8"), ("basicsr", "x2_unshuffle"), ("basicsr", "x1_unshuffle"), ("bsrgan", "x4")],
)
def test_newer_layouts_load_as_spandrel_reads_them(tmp_path, layout, variant):
  rename, arch, cls = LAYOUTS[layout]
  spandrel_kwargs, expected = VARIANTS[variant]
  ref = random_reference(seed=2, **spandrel_kwargs)
  state = to_layout(state_of(ref), rename)
  found_arch, found = pretrained.infer_architecture(state)
  assert (found_arch, found["scale"]) == (arch, expected["scale"])
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / f"{layout}.pth")
  net = load_pretrained_sr(tmp_path / f"{layout}.pth")
  assert type(net) is cls and net.scale == expected["scale"]
  lr = np.random.default_rng(3).random((1, 12, 16, 3), dtype=np.float32)
  err = relative_error(net(jnp.asarray(lr)), torch_forward(ref, lr))
  assert err <= 1e-4, f"{layout} {variant}: max |jax - torch| / max |torch| = {err:.3g}"


def test_detection_of_hyperparameters_and_truncated_files():
  state = state_of(random_reference(scale=8, plus=True))
  assert pretrained.infer_architecture(state) == (
    "esrgan",
    dict(
      scale=8,
      num_feat=8,
      num_block=2,
      num_grow_ch=32,
      num_in_ch=3,
      num_out_ch=3,
      shuffle_factor=1,
      plus=True,
    ),
  )
  truncated = {k: v for k, v in state.items() if not k.startswith("model.1.sub.1.RDB3")}
  with pytest.raises(ValueError, match=r"esrgan.*missing key 'model\.1\.sub\.1\.RDB3\.conv1\.0"):
    pretrained.infer_architecture(truncated)
  no_tail = {k: v for k, v in state.items() if not k.startswith("model.13.")}
  with pytest.raises(ValueError, match=r"looks like esrgan.*model\.11 ends the sequence"):
    pretrained.infer_architecture(no_tail)
  no_trunk_conv = {k: v for k, v in state.items() if not k.startswith("model.1.sub.2.")}
  with pytest.raises(ValueError, match=r"missing key 'model\.1\.sub\.2\.weight'"):
    pretrained.infer_architecture(no_trunk_conv)


def test_create_model_and_a_few_training_steps_lower_the_loss():
  config = default.get_config()
  config.model = ml_collections.ConfigDict(
    dict(
      name="esrgan",
      weights="",
      num_feat=8,
      num_block=1,
      num_grow_ch=8,
      shuffle_factor=2,
      plus=True,
    )
  )
  config.data.scale = 2
  config.train.batch_size = 8
  config.optim.warmup_steps = 0
  config.optim.learning_rate = 1e-3
  config.train.ema_decay = 0.0
  config.loss.feature_weight = 0.0
  net = models.create_model(config.model, 2, nnx.Rngs(0))
  assert type(net) is esrgan.ESRGAN and (net.scale, net.shuffle_factor, net.plus) == (2, 2, True)
  mesh = sharding.create_mesh()
  trainer = train.create_trainer(config, mesh)
  rng = np.random.default_rng(0)
  hr = rng.random((8, 16, 16, 3), dtype=np.float32)
  lr = np.ascontiguousarray(hr[:, ::2, ::2])
  batch = sharding.global_batch({"lr": lr, "hr": hr}, mesh)
  state, losses = trainer.state, []
  for _ in range(4):
    state, metrics = trainer.step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0], losses
