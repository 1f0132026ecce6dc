"""SwinIR: parity with spandrel's PyTorch network for every variant, detection, loading, training.

Tiny widths / depths; the networks run eagerly (op by op), which is faster than compiling each
variant on these small inputs.
"""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
pytest.importorskip("spandrel", reason="parity extras not installed: make parity-deps")

from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR  # noqa: E402

from sr_jax import utils  # noqa: E402
from sr_jax.models import pretrained, swinir  # noqa: E402
from tests import arch_testing  # noqa: E402

TINY = dict(embed_dim=12, depths=[2], num_heads=[2], window_size=4, img_size=16)

# id -> (spandrel SwinIR kwargs, LR size). Sizes are not multiples of the window (reflect padding),
# except for the unshuffled input, which the reference does not pad consistently.
VARIANTS = {
  "classical_x2": (dict(TINY, upsampler="pixelshuffle", upscale=2), (13, 17)),
  "classical_x3_3conv": (
    dict(TINY, upsampler="pixelshuffle", upscale=3, resi_connection="3conv"),
    (13, 17),
  ),
  "classical_x4_two_layers": (
    dict(TINY, upsampler="pixelshuffle", upscale=4, depths=[2, 1], num_heads=[2, 3]),
    (13, 17),
  ),
  "classical_x8": (dict(TINY, upsampler="pixelshuffle", upscale=8), (9, 7)),
  "lightweight_x2": (dict(TINY, upsampler="pixelshuffledirect", upscale=2), (13, 17)),
  "lightweight_x3": (dict(TINY, upsampler="pixelshuffledirect", upscale=3), (13, 17)),
  "lightweight_x4_3conv": (
    dict(TINY, upsampler="pixelshuffledirect", upscale=4, resi_connection="3conv"),
    (13, 17),
  ),
  "realworld_x2": (dict(TINY, upsampler="nearest+conv", upscale=2), (13, 17)),
  "realworld_x4": (dict(TINY, upsampler="nearest+conv", upscale=4), (13, 17)),
  "realworld_x8_3conv": (
    dict(TINY, upsampler="nearest+conv", upscale=8, resi_connection="3conv"),
    (9, 7),
  ),
  "jpeg_x1_window7": (
    dict(TINY, upsampler="", upscale=1, window_size=7, img_size=14, img_range=255.0),
    (13, 17),
  ),
  "denoise_gray_x1": (dict(TINY, upsampler="", upscale=1, in_chans=1), (13, 17)),
  "unshuffle2_x2": (dict(TINY, upsampler="pixelshuffle", upscale=4, start_unshuffle=2), (16, 24)),
  "no_shift_img_size_4": (
    dict(TINY, upsampler="pixelshuffledirect", upscale=2, img_size=4),
    (9, 7),
  ),
}


@functools.cache
def _reference(variant: str):
  """(torch net, its state dict as numpy, as a file holds it)."""
  kwargs, _ = VARIANTS[variant]
  net = arch_testing.randomize(TorchSwinIR(**kwargs), seed=sorted(VARIANTS).index(variant))
  state = arch_testing.state_of(net)
  if kwargs.get("start_unshuffle", 1) > 1:  # the files hold nn.Sequential(PixelUnshuffle, Conv)
    state = {k.replace("conv_first.", "conv_first.1."): v for k, v in state.items()}
  return net, state


def _lr(variant: str, channels: int = 3) -> np.ndarray:
  _, (h, w) = VARIANTS[variant]
  return arch_testing.random_lr(h, w, channels, seed=0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_matches_spandrel(variant):
  kwargs, _ = VARIANTS[variant]
  torch_net, state = _reference(variant)
  found = swinir.detect_swinir(state)
  unshuffle = kwargs.get("start_unshuffle", 1)
  expected = dict(
    scale=kwargs["upscale"] // unshuffle,
    upsampler=kwargs["upsampler"],
    resi_connection=kwargs.get("resi_connection", "1conv"),
    depths=tuple(kwargs["depths"]),
    num_heads=tuple(kwargs["num_heads"]),
    window_size=kwargs["window_size"],
    embed_dim=kwargs["embed_dim"],
    in_chans=kwargs.get("in_chans", 3),
    start_unshuffle=unshuffle,
    img_range=kwargs.get("img_range", 1.0),
  )
  assert {k: found[k] for k in expected} == expected
  net = arch_testing.port_strictly(swinir.SwinIR, found, state)
  arch_testing.assert_parity(net, torch_net, _lr(variant, found["in_chans"]), variant)


def test_load_pretrained_sr_pth_params_ema_and_safetensors(tmp_path):
  pytest.importorskip("safetensors.torch")
  variant = "classical_x4_two_layers"
  torch_net, _ = _reference(variant)
  expected = dict(type=swinir.SwinIR, scale=4, depths=(2, 1), num_heads=(2, 3), embed_dim=12)
  expected.update(window_size=4, upsampler="pixelshuffle", resi_connection="1conv")
  arch_testing.assert_loads_in_each_layout(torch_net, _lr(variant), tmp_path, expected)


def test_load_sr_weights_checks_the_hyperparameters(tmp_path):
  torch_net, state = _reference("classical_x4_two_layers")
  torch.save(torch_net.state_dict(), tmp_path / "net.pth")
  found = swinir.detect_swinir(state)
  net = utils.eval_shape_module(lambda rngs: swinir.SwinIR(**found, rngs=rngs))
  assert pretrained.load_sr_weights(net, tmp_path / "net.pth").ok
  arch_testing.assert_parity(net, torch_net, _lr("classical_x4_two_layers"), "load_sr_weights")
  other = utils.eval_shape_module(
    lambda rngs: swinir.SwinIR(**found | {"window_size": 8}, rngs=rngs)
  )
  with pytest.raises(ValueError, match="window_size: requested 8, file has 4"):
    pretrained.load_sr_weights(other, tmp_path / "net.pth")


def test_infer_architecture_says_swinir():
  _, state = _reference("lightweight_x3")
  arch, found = pretrained.infer_architecture(state)
  assert (arch, found["scale"], found["upsampler"]) == ("swinir", 3, "pixelshuffledirect")


def test_truncated_state_dict_is_rejected():
  _, state = _reference("classical_x4_two_layers")
  cut_at = "layers.1.residual_group.blocks.0.mlp.fc1.weight"
  hole = "layers.0.residual_group.blocks.1.norm2.weight"
  arch_testing.assert_truncations_rejected(state, "swinir", cut_at, hole)


def test_config_builds_the_detected_network_and_it_fine_tunes(tmp_path):
  torch_net, _ = _reference("lightweight_x2")  # two blocks: a shifted one too
  arch_testing.assert_config_builds_and_fine_tunes(torch_net, tmp_path)
