"""ESRGAN key layouts of RRDBNet (old-arch, BasicSR, BSRGAN) against spandrel's ESRGAN."""

import re

from flax import nnx
import jax.numpy as jnp
import pytest

from sr_jax.models import esrgan, load_pretrained_sr, pretrained
from sr_jax.models.realesrgan import RRDBNet
from sr_jax.weights import porting
from tests import arch_testing

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


def random_reference(seed: int = 0, num_blocks: int = 2, **kwargs):
  """spandrel's ESRGAN (tiny) with random weights of non-trivial statistics, in eval mode."""
  shuffle = {12: 2, 48: 4}.get(kwargs.get("in_nc", 3))
  net = TorchESRGAN(num_filters=8, num_blocks=num_blocks, shuffle_factor=shuffle, **kwargs)
  return arch_testing.randomize(net, seed)


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
  net = arch_testing.load_via_pth(ref, tmp_path / "esrgan.pth")
  assert type(net) is esrgan.ESRGAN
  for key, value in dict(num_feat=8, num_block=2, num_grow_ch=32, **expected).items():
    assert getattr(net, key) == value, key
  channels = spandrel_kwargs.get("out_nc", 3)
  lr = arch_testing.random_lr(13, 17, channels)
  sr = net(jnp.asarray(lr))
  assert sr.shape == (1, 13 * net.scale, 17 * net.scale, channels)
  arch_testing.assert_matches(sr, arch_testing.torch_forward(ref, lr), variant)


def test_port_rules_map_the_spandrel_state_dict_key_for_key():
  for spandrel_kwargs, _ in VARIANTS.values():
    state = arch_testing.state_of(random_reference(**spandrel_kwargs))
    found = esrgan.detect_esrgan(state)
    net = nnx.eval_shape(lambda: esrgan.ESRGAN(**found, rngs=nnx.Rngs(0)))  # noqa: B023
    ported = porting.torch_to_nnx(state, esrgan.ESRGAN.port_rules)
    assert {k: v.shape for k, v in ported.items()} == arch_testing.nnx_shapes(net)


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
  state = to_layout(arch_testing.state_of(ref), rename)
  found_arch, found = pretrained.infer_architecture(state)
  assert (found_arch, found["scale"]) == (arch, expected["scale"])
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / f"{layout}.pth")
  net = load_pretrained_sr(tmp_path / f"{layout}.pth")
  assert type(net) is cls and net.scale == expected["scale"]
  lr = arch_testing.random_lr(12, 16, seed=3)
  arch_testing.assert_parity(net, ref, lr, f"{layout} {variant}")


def test_detection_of_hyperparameters_and_truncated_files():
  state = arch_testing.state_of(random_reference(scale=8, plus=True))
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


def test_config_builds_the_detected_network_and_it_fine_tunes(tmp_path):
  ref = random_reference(scale=4, in_nc=12, plus=True, num_blocks=1)  # x2 on unshuffled input
  net = arch_testing.assert_config_builds_and_fine_tunes(ref, tmp_path)
  assert (net.scale, net.shuffle_factor, net.plus) == (2, 2, True)
