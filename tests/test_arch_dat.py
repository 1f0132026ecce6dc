"""DAT: parity with spandrel's PyTorch network for every variant, detection, loading, training.

Tiny widths / depths (embed_dim 32: the smallest whose dynamic position bias MLP is not empty,
as DAT-light's); the networks run eagerly (op by op), which is faster than compiling each variant
on these small inputs. LR 13x17: not a multiple of any split size.
"""

import functools

from flax import nnx
import pytest

torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
pytest.importorskip("spandrel", reason="parity extras not installed: make parity-deps")

from spandrel.architectures.DAT import DAT as TorchDAT  # noqa: E402

from sr_jax.models import dat, load_pretrained_sr, pretrained  # noqa: E402
from sr_jax.weights import merge, porting  # noqa: E402
from tests import arch_testing  # noqa: E402

# spandrel builds its position tables with torch.meshgrid without `indexing=`.
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")

# Two groups: block 2 of group 0 and block 0 of group 1 shift their windows. Few distinct shapes
# (each new one compiles its ops once): split (2, 4) or (1, 3) (shift 0 on one side), 4 heads.
TINY = dict(embed_dim=32, split_size=[2, 4], depth=[3, 1], num_heads=[4, 4], expansion_factor=4.0)
ODD_SPLIT = dict(split_size=[1, 3], img_size=12)  # img_size: the reference's stored masks
LIGHT = dict(
  TINY,
  depth=[3],
  num_heads=[4],
  expansion_factor=2.0,
  resi_connection="3conv",
  upsampler="pixelshuffledirect",
)
VARIANTS = {  # id -> spandrel DAT kwargs
  "dat_x2": dict(TINY, upscale=2),
  "dat_x3": dict(TINY, upscale=3),
  "dat_x4": dict(TINY, upscale=4),
  "dat_s_x4_3conv": dict(TINY, **ODD_SPLIT, upscale=4, resi_connection="3conv"),
  # Heads of a one-block group: twice the spatial branch's.
  "dat_2_x2_depth1_no_qkv_bias": dict(
    TINY, upscale=2, depth=[1, 2], expansion_factor=2.0, qkv_bias=False
  ),
  "dat_light_x2": dict(LIGHT, upscale=2),
  "dat_light_x3": dict(LIGHT, upscale=3),
  "dat_light_x4": dict(LIGHT, **ODD_SPLIT, upscale=4),
  "dat_x1_gray": dict(TINY, upscale=1, in_chans=1, depth=[2], num_heads=[4]),
}
LR_SIZE = (13, 17)


def _expected_hyperparameters(kwargs: dict) -> dict:
  return dict(
    scale=kwargs["upscale"],
    in_chans=kwargs.get("in_chans", 3),
    embed_dim=kwargs["embed_dim"],
    split_size=tuple(kwargs["split_size"]),
    depth=tuple(kwargs["depth"]),
    num_heads=tuple(kwargs["num_heads"]),
    expansion_factor=kwargs["expansion_factor"],
    qkv_bias=kwargs.get("qkv_bias", True),
    resi_connection=kwargs.get("resi_connection", "1conv"),
    upsampler=kwargs.get("upsampler", "pixelshuffle"),
  )


@functools.cache
def _reference(variant: str):
  """(torch net, its state dict as numpy, LR NHWC, torch output NHWC) of a variant."""
  kwargs = VARIANTS[variant]
  net = arch_testing.randomize(TorchDAT(**kwargs), seed=len(variant))
  lr = arch_testing.random_lr(*LR_SIZE, kwargs.get("in_chans", 3))
  return net, arch_testing.state_of(net), lr, arch_testing.torch_forward(net, lr)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_spandrel(variant, tmp_path):
  torch_net, state, lr, expected = _reference(variant)
  hyperparameters = _expected_hyperparameters(VARIANTS[variant])
  assert pretrained.infer_architecture(state) == ("dat", hyperparameters)

  ported = porting.torch_to_nnx(state, dat.DAT.port_rules)
  fresh = nnx.eval_shape(lambda: dat.DAT(**hyperparameters, rngs=nnx.Rngs(0)))
  assert sorted(ported) == sorted(merge.flatten_state(fresh))

  path = tmp_path / "dat.pth"
  torch.save(torch_net.state_dict(), path)
  net = load_pretrained_sr(path)
  assert type(net) is dat.DAT and net.scale == hyperparameters["scale"]
  assert {key: getattr(net, key) for key in hyperparameters} == hyperparameters
  arch_testing.assert_matches(net(lr), expected, variant)


def test_load_pretrained_sr_params_wrapper(tmp_path):
  torch_net, _, lr, expected = _reference("dat_light_x2")
  path = tmp_path / "wrapped.pth"
  torch.save({"params": torch_net.state_dict()}, path)
  net = load_pretrained_sr(path)
  assert type(net) is dat.DAT and net.scale == 2 and net.upsampler == "pixelshuffledirect"
  arch_testing.assert_matches(net(lr), expected, "params wrapper")


@pytest.mark.parametrize(
  "variant, removed",
  [
    ("dat_x2", "conv_last.weight"),  # cut before the reconstruction's last conv
    ("dat_x2", "layers.1.blocks.0.attn.qkv.weight"),
    ("dat_x2", "layers.0.blocks.1.attn.temperature"),  # heads of group 0 unknown
    ("dat_x2", "conv_after_body.weight"),
    ("dat_light_x2", "upsample.0.weight"),
    ("dat_light_x2", "layers.0.blocks.2.ffn.fc2.bias"),  # caught by the strict load
  ],
)
def test_truncated_state_dict_is_rejected(variant, removed, tmp_path):
  _, state, _, _ = _reference(variant)
  path = tmp_path / "truncated.pth"
  torch.save({k: torch.from_numpy(v) for k, v in state.items() if k != removed}, path)
  # Detection names the torch key; the strict load after it, the NNX key of the same module.
  with pytest.raises(ValueError, match=removed.rpartition(".")[0].replace(".", r"\.")):
    load_pretrained_sr(path)


def test_cut_off_file_is_rejected():
  """The last keys of a file missing (the upsampler's head and tail): detection fails loudly."""
  _, state, _, _ = _reference("dat_x4")
  keys = list(state)
  with pytest.raises(ValueError, match="dat but missing key"):
    pretrained.infer_architecture({k: state[k] for k in keys[:-3]})


def test_config_builds_the_detected_network_and_it_fine_tunes(tmp_path):
  # Two blocks: one of spatial, one of channel attention.
  torch_net = arch_testing.randomize(TorchDAT(**dict(LIGHT, depth=[2], upscale=2)))
  # At this width the position-bias MLPs normalise one feature (pos_dim 1): their LayerNorms output
  # their bias, so nothing before them gets a gradient (nor does what a ReLU of it zeroes).
  arch_testing.assert_config_builds_and_fine_tunes(torch_net, tmp_path, no_gradient=r"\['pos'\]")
