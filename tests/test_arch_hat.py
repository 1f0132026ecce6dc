"""HAT (S / base / L, x1-x4): parity with spandrel's PyTorch HAT, loading, detection, training."""

import types

from flax import nnx
import ml_collections
import numpy as np
import pytest

from configs import default as default_config
from configs import finetune_hat_x4
from sr_jax import models, optim, train_state
from sr_jax.models import hat, load_pretrained_sr, pretrained
from sr_jax.weights import merge, porting
from tests import arch_testing

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.HAT import HAT as TorchHAT  # noqa: E402
from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR  # noqa: E402

# The reference calls torch.meshgrid without `indexing` (its behaviour is the one we port).
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")

TINY = dict(
  embed_dim=12,
  depths=(2, 2),
  num_heads=(2, 3),
  window_size=4,
  compress_ratio=3,
  squeeze_factor=6,
  overlap_ratio=0.5,
  mlp_ratio=2.0,
  num_feat=16,
)
# Tiny forms of each variant (reference constructor keywords); the real ones differ in width and
# depth only (see `test_detects_official_configurations`).
VARIANTS = {
  "hat_s_x4": dict(TINY, compress_ratio=6, squeeze_factor=6),
  "hat_x2": dict(TINY, upscale=2),
  "hat_x3": dict(TINY, upscale=3),
  "hat_x4": dict(TINY, upscale=4),
  "hat_l_x4": dict(TINY, depths=(2, 1, 1), num_heads=(2, 2, 2), upscale=4),
  "x1_identity_no_patch_norm_no_qkv_bias": dict(
    TINY, upscale=1, resi_connection="identity", patch_norm=False, qkv_bias=False
  ),
  "ape_x2": dict(TINY, upscale=2, ape=True, img_size=16, overlap_ratio=1.0),
}
VARIANTS["hat_s_x4"]["upscale"] = 4


def torch_hat(seed: int = 0, **kwargs):
  """spandrel's HAT with random weights of non-trivial statistics, in eval mode."""
  return arch_testing.randomize(TorchHAT(**kwargs), seed)


def expected_hyperparameters(kwargs: dict) -> dict:
  """What detection must find for a reference net built with `kwargs` (defaults filled in)."""
  ref = dict(
    img_size=64,
    patch_size=1,
    in_chans=3,
    qkv_bias=True,
    ape=False,
    patch_norm=True,
    resi_connection="1conv",
  )
  found = {**ref, **kwargs}
  found["scale"] = found.pop("upscale")
  found["depths"], found["num_heads"] = tuple(found["depths"]), tuple(found["num_heads"])
  return found


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_load_pretrained_matches_reference(variant, tmp_path):
  kwargs = VARIANTS[variant]
  ref_net = torch_hat(**kwargs)
  path = tmp_path / "hat.pth"
  torch.save(ref_net.state_dict(), path)
  net = load_pretrained_sr(path)
  assert type(net) is hat.HAT
  expected = expected_hyperparameters(kwargs)
  assert {k: getattr(net, k) for k in expected} == expected
  assert net.scale == kwargs["upscale"]
  h, w = 13, 15  # not multiples of the window: padded and cropped (to img_size, for ape)
  lr = arch_testing.random_lr(h, w)
  out = net(lr)
  assert out.shape == (1, h * net.scale, w * net.scale, 3)
  arch_testing.assert_matches(out, arch_testing.torch_forward(ref_net, lr), variant)


def test_port_rules_map_every_key_and_wrapped_files_load(tmp_path):
  ref_net = torch_hat(**VARIANTS["hat_x2"])
  state = arch_testing.state_of(ref_net)
  hyperparameters = hat.detect_hat(state)
  net = nnx.eval_shape(lambda: hat.HAT(**hyperparameters, rngs=nnx.Rngs(0)))
  ported = porting.torch_to_nnx(state, hat.HAT.port_rules)
  assert {k: v.shape for k, v in ported.items()} == arch_testing.nnx_shapes(net)
  path = tmp_path / "hat_ema.pth"
  torch.save({"params_ema": ref_net.state_dict()}, path)
  loaded = merge.flatten_state(load_pretrained_sr(path))
  assert loaded.keys() == ported.keys()
  for key, value in ported.items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@pytest.mark.parametrize("window_size, overlap_ratio", [(4, 0.5), (8, 0.25), (16, 0.5)])
def test_window_bookkeeping_matches_reference(window_size, overlap_ratio):
  ref = types.SimpleNamespace(
    window_size=window_size, shift_size=window_size // 2, overlap_ratio=overlap_ratio
  )
  np.testing.assert_array_equal(
    hat.relative_position_index_sa(window_size), TorchHAT.calculate_rpi_sa(ref).numpy()
  )
  overlap_win_size = window_size + int(window_size * overlap_ratio)
  np.testing.assert_array_equal(
    hat.relative_position_index_oca(window_size, overlap_win_size),
    TorchHAT.calculate_rpi_oca(ref).numpy(),
  )
  h, w = 3 * window_size, 5 * window_size
  regions = hat.shifted_window_regions(h, w, window_size, window_size // 2)
  mask = np.where(regions[:, None, :] != regions[:, :, None], -100.0, 0.0)
  np.testing.assert_array_equal(mask, TorchHAT.calculate_mask(ref, (h, w), torch.float32).numpy())


def meta_state(cls, monkeypatch, **kwargs) -> dict:
  """A reference state dict of shapes only (full-size nets, nothing allocated)."""
  linspace = torch.linspace
  # The drop-path rates are read with .item(), which a meta tensor cannot do.
  monkeypatch.setattr(torch, "linspace", lambda *args, **kw: linspace(*args, **kw, device="cpu"))
  with torch.device("meta"):
    state = cls(**kwargs).state_dict()
  monkeypatch.undo()
  return state


OFFICIAL = dict(window_size=16, overlap_ratio=0.5, mlp_ratio=2.0, num_feat=64, squeeze_factor=30)


HAT_S = dict(
  OFFICIAL, embed_dim=144, depths=(6,) * 6, num_heads=(6,) * 6, compress_ratio=24, squeeze_factor=24
)
HAT_BASE = dict(OFFICIAL, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, compress_ratio=3)
HAT_L = dict(HAT_BASE, depths=(6,) * 12, num_heads=(6,) * 12)


@pytest.mark.parametrize(
  "variant, upscale",
  [(HAT_S, 2), (HAT_BASE, 3), (HAT_L, 4)],
  ids=["HAT-S_x2", "HAT_x3", "HAT-L_x4"],
)
def test_detects_official_configurations(variant, upscale, monkeypatch):
  kwargs = dict(variant, upscale=upscale)
  state = meta_state(TorchHAT, monkeypatch, **kwargs)
  assert pretrained.infer_architecture(state) == ("hat", expected_hyperparameters(kwargs))


def test_truncated_and_foreign_state_dicts(monkeypatch):
  state = meta_state(TorchHAT, monkeypatch, **VARIANTS["hat_x4"])
  # A gap: the second group's first block is gone, its second block is there.
  gap = {k: v for k, v in state.items() if not k.startswith("layers.1.residual_group.blocks.0.")}
  with pytest.raises(ValueError, match=r"looks like hat.*layers\.1\.residual_group\.blocks\.0\."):
    pretrained.infer_architecture(gap)
  no_oca = {k: v for k, v in state.items() if "layers.1.residual_group.overlap_attn.q" not in k}
  with pytest.raises(ValueError, match=r"missing key 'layers\.1\.residual_group\.overlap_attn"):
    pretrained.infer_architecture(no_oca)
  tail = {k: v for k, v in state.items() if not k.startswith("conv_before_upsample")}
  with pytest.raises(ValueError, match=r"missing key 'conv_before_upsample\.0\.weight'"):
    hat.detect_hat(tail)
  # SwinIR shares conv_first / layers.N.residual_group.blocks.M but not HAT's signature.
  swinir = meta_state(
    TorchSwinIR, monkeypatch, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4
  )
  assert not hat.HAT_ARCH.matches(swinir)
  assert hat.HAT_ARCH.matches(state)
  with pytest.raises(ValueError, match="cannot tell the architecture"):
    pretrained.infer_architecture({"foo.weight": np.zeros((1, 1))})


def test_finetune_config_is_the_official_hat_x4(monkeypatch):
  config = finetune_hat_x4.get_config()
  assert set(config.model) == {"name", "weights", *hat.HAT_ARCH.config_keys}
  state = meta_state(TorchHAT, monkeypatch, **HAT_BASE, upscale=4)
  arch, found = pretrained.infer_architecture(state)
  assert arch == config.model.name
  assert found == {
    "scale": config.data.scale,
    **{k: config.model[k] for k in found if k != "scale"},
  }


def test_finetunes_from_a_pytorch_file(tmp_path):
  """The official fine-tuning config, shrunk: the train state starts from the file's weights, and
  its steps (one device) reach every parameter and lower the loss."""
  config = default_config.get_config()
  config.model = ml_collections.ConfigDict(dict(finetune_hat_x4.get_config().model))
  # Few distinct weight shapes: each one costs a compile of its initializer on CPU.
  tiny = dict(embed_dim=8, depths=(2,), num_heads=(2,), window_size=4, num_feat=8)
  tiny.update(compress_ratio=1, squeeze_factor=4, mlp_ratio=1.0)
  config.model.update(tiny)
  config.data.scale = 2
  ref_net = torch_hat(**tiny, upscale=2)
  config.model.weights = str(tmp_path / "hat_x2.pth")
  torch.save(ref_net.state_dict(), config.model.weights)
  config.optim.update(learning_rate=2e-3, warmup_steps=0, schedule="constant")
  graphdef, state = train_state.create_train_state(config, optim.from_config(config)[1])
  assert type(nnx.merge(graphdef, state["params"], state["model_state"])) is hat.HAT
  np.testing.assert_array_equal(
    np.asarray(state["params"]["conv_first"]["kernel"][...]),
    ref_net.conv_first.weight.detach().numpy().transpose(2, 3, 1, 0),
  )
  arch_testing.assert_fine_tunes(*arch_testing.run_steps(config, graphdef, state, 3))
  # A file whose hyperparameters differ from the config's is refused, naming them.
  config.model.window_size = 8
  other = nnx.eval_shape(lambda: models.create_model(config.model, 2, nnx.Rngs(0)))
  with pytest.raises(ValueError, match="window_size: requested 8, file has 4"):
    pretrained.load_sr_weights(other, config.model.weights)
