"""Swin2SR: parity with spandrel's PyTorch network for every variant, detection, loading, training.

Tiny widths / depths; the networks run eagerly (op by op), which is faster than compiling each
variant on these small inputs.
"""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
pytest.importorskip("spandrel", reason="parity extras not installed: make parity-deps")

from spandrel.architectures.Swin2SR import Swin2SR as TorchSwin2SR  # noqa: E402

from sr_jax.models import pretrained, swin2sr  # noqa: E402
from tests import arch_testing  # noqa: E402

TINY = dict(embed_dim=12, depths=[2], num_heads=[2], window_size=4, img_size=16)

# id -> (spandrel Swin2SR kwargs, LR size); sizes are not multiples of the window (reflect padding).
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
  "classical_x8_no_qkv_bias": (
    dict(TINY, upsampler="pixelshuffle", upscale=8, qkv_bias=False),
    (9, 7),
  ),
  "aux_x2": (dict(TINY, upsampler="pixelshuffle_aux", upscale=2), (13, 17)),
  "aux_x4": (dict(TINY, upsampler="pixelshuffle_aux", upscale=4), (13, 17)),
  "hf_x2_3conv": (
    dict(TINY, upsampler="pixelshuffle_hf", upscale=2, resi_connection="3conv"),
    (13, 17),
  ),
  "lightweight_x2": (dict(TINY, upsampler="pixelshuffledirect", upscale=2), (13, 17)),
  "lightweight_x4": (dict(TINY, upsampler="pixelshuffledirect", upscale=4), (13, 17)),
  "realworld_x4_3conv": (
    dict(TINY, upsampler="nearest+conv", upscale=4, resi_connection="3conv"),
    (13, 17),
  ),
  "jpeg_x1_window7": (
    dict(TINY, upsampler="", upscale=1, window_size=7, img_size=14, img_range=255.0),
    (13, 17),
  ),
  "denoise_gray_x1": (dict(TINY, upsampler="", upscale=1, in_chans=1), (13, 17)),
  "no_shift_img_size_4": (
    dict(TINY, upsampler="pixelshuffledirect", upscale=2, img_size=4),
    (9, 7),
  ),
}


@functools.cache
def _reference(variant: str):
  """(torch net, its state dict as numpy, as a file holds it)."""
  kwargs, _ = VARIANTS[variant]
  net = arch_testing.randomize(
    TorchSwin2SR(**kwargs),
    seed=sorted(VARIANTS).index(variant),
    # Around log(10), some above the clamp at log(100).
    custom={"logit_scale": lambda noise: 2.3 + 1.5 * noise},
  )
  return net, arch_testing.state_of(net)


def _lr(variant: str, channels: int = 3) -> np.ndarray:
  _, (h, w) = VARIANTS[variant]
  return arch_testing.random_lr(h, w, channels, seed=0)


def _hf_output(net) -> int | None:
  # pixelshuffle_hf returns (main, main + high-frequency, high-frequency).
  return 1 if net.upsampler == "pixelshuffle_hf" else None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_matches_spandrel(variant):
  kwargs, _ = VARIANTS[variant]
  torch_net, state = _reference(variant)
  found = swin2sr.detect_swin2sr(state)
  expected = dict(
    scale=kwargs["upscale"],
    upsampler=kwargs["upsampler"],
    resi_connection=kwargs.get("resi_connection", "1conv"),
    depths=tuple(kwargs["depths"]),
    num_heads=tuple(kwargs["num_heads"]),
    window_size=kwargs["window_size"],
    embed_dim=kwargs["embed_dim"],
    in_chans=kwargs.get("in_chans", 3),
    qkv_bias=kwargs.get("qkv_bias", True),
    img_range=kwargs.get("img_range", 1.0),
  )
  assert {k: found[k] for k in expected} == expected
  net = arch_testing.port_strictly(swin2sr.Swin2SR, found, state)
  lr = _lr(variant, found["in_chans"])
  ref = arch_testing.torch_forward(torch_net, lr, output=_hf_output(torch_net))
  arch_testing.assert_matches(net(lr), ref, variant)


def test_load_pretrained_sr_pth_params_ema_and_safetensors(tmp_path):
  pytest.importorskip("safetensors.torch")
  variant = "classical_x4_two_layers"
  torch_net, _ = _reference(variant)
  expected = dict(type=swin2sr.Swin2SR, scale=4, depths=(2, 1), num_heads=(2, 3), embed_dim=12)
  expected.update(window_size=4, upsampler="pixelshuffle", resi_connection="1conv")
  arch_testing.assert_loads_in_each_layout(
    torch_net, _lr(variant), tmp_path, expected, output=_hf_output(torch_net)
  )


def test_infer_architecture_says_swin2sr_not_swinir():
  _, state = _reference("lightweight_x4")
  arch, found = pretrained.infer_architecture(state)
  assert (arch, found["scale"], found["upsampler"]) == ("swin2sr", 4, "pixelshuffledirect")


def test_truncated_state_dict_is_rejected():
  _, state = _reference("classical_x4_two_layers")
  cut_at = "layers.1.residual_group.blocks.0.mlp.fc1.weight"
  hole = "layers.0.residual_group.blocks.1.norm2.weight"
  arch_testing.assert_truncations_rejected(state, "swin2sr", cut_at, hole)


def test_config_builds_the_detected_network_and_it_fine_tunes(tmp_path):
  torch_net, _ = _reference("lightweight_x2")  # two blocks: a shifted one too
  arch_testing.assert_config_builds_and_fine_tunes(torch_net, tmp_path)
