"""SPAN: parity with spandrel's network, detection from state dicts, loading, fine-tuning."""

import pytest

from sr_jax.models import pretrained
from sr_jax.models.span import SPAN
from tests import arch_testing

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.SPAN import SPAN as TorchSPAN  # noqa: E402


def torch_span(scale, norm=True, feature_channels=8, seed=0):
  """spandrel's SPAN with random weights of non-trivial statistics, in eval mode."""
  net = TorchSPAN(
    num_in_ch=3, num_out_ch=3, feature_channels=feature_channels, upscale=scale, norm=norm
  )
  return arch_testing.randomize(net, seed)


VARIANTS = [(1, True), (2, True), (3, False), (4, True)]


@pytest.mark.parametrize("scale, norm", VARIANTS)
def test_parity_with_spandrel(scale, norm, tmp_path):
  torch_net = torch_span(scale, norm)
  # strict: every key of the file placed, none missing
  net = arch_testing.load_via_pth(torch_net, tmp_path / "span.pth")
  assert isinstance(net, SPAN) and net.scale == scale and net.norm == norm
  assert (net.feature_channels, net.num_in_ch, net.num_out_ch) == (8, 3, 3)
  lr = arch_testing.random_lr(13, 17)
  arch_testing.assert_parity(net, torch_net, lr, f"SPAN x{scale} norm={norm}", jit=True)


def test_detection_and_truncated_dict():
  state = arch_testing.state_of(torch_span(3, norm=False, feature_channels=12))
  assert pretrained.infer_architecture(state) == (
    "span",
    dict(scale=3, num_in_ch=3, num_out_ch=3, feature_channels=12, norm=False),
  )
  del state["conv_2.conv.2.weight"]
  with pytest.raises(ValueError, match="span.*conv_2.conv.2.weight"):
    pretrained.infer_architecture(state)


def test_config_builds_the_detected_network_and_it_fine_tunes(tmp_path):
  arch_testing.assert_config_builds_and_fine_tunes(torch_span(2), tmp_path)
