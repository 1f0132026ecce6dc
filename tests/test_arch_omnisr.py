"""OmniSR: parity with spandrel's network, detection from state dicts, loading, fine-tuning."""

import numpy as np
import pytest

from sr_jax.models import pretrained
from sr_jax.models.omnisr import OmniSR, _bilinear_matrix
from tests import arch_testing

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.OmniSR import OmniSR as TorchOmniSR  # noqa: E402

VARIANTS = {
  "w4-pe-x1": dict(up_scale=1, window_size=4),
  "w4-pe-2groups-x2": dict(up_scale=2, window_size=4, res_num=2),
  "w8-nope-nobias-2blocks-x3": dict(up_scale=3, window_size=8, pe=False, bias=False, block_num=2),
  "w8-pe-x4": dict(up_scale=4, window_size=8),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_parity_with_spandrel(variant, tmp_path):
  kwargs = {"num_feat": 16, "block_num": 1, "res_num": 1, **VARIANTS[variant]}
  torch_net = arch_testing.randomize(TorchOmniSR(**kwargs))
  # strict: every key of the file placed, none missing
  net = arch_testing.load_via_pth(torch_net, tmp_path / "omnisr.pth")
  assert isinstance(net, OmniSR) and net.scale == kwargs["up_scale"]
  assert (net.num_feat, net.block_num, net.res_num) == (16, kwargs["block_num"], kwargs["res_num"])
  assert (net.pe, net.bias) == (kwargs.get("pe", True), kwargs.get("bias", True))
  if net.pe:
    assert net.window_size == kwargs["window_size"]
  arch_testing.assert_parity(net, torch_net, arch_testing.random_lr(19, 23), variant, jit=True)


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
  state = arch_testing.state_of(torch_net)
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


def test_config_builds_the_detected_network_and_it_fine_tunes(tmp_path):
  torch_net = TorchOmniSR(num_feat=16, block_num=1, res_num=1, up_scale=2, window_size=4)
  # OmniSR refuses inputs under 16 pixels.
  arch_testing.assert_config_builds_and_fine_tunes(arch_testing.randomize(torch_net), tmp_path, 16)
