"""SAFMN: parity with spandrel's network, detection from state dicts, loading, fine-tuning."""

import numpy as np
import pytest

from sr_jax.models import pretrained
from sr_jax.models.safmn import SAFMN, _adaptive_bins, _nearest_indices
from tests import arch_testing

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.SAFMN import SAFMN as TorchSAFMN  # noqa: E402


def torch_safmn(scale, dim=8, n_blocks=2, ffn_scale=1.5):
  net = TorchSAFMN(dim=dim, n_blocks=n_blocks, ffn_scale=ffn_scale, upscaling_factor=scale)
  return arch_testing.randomize(net)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_parity_with_spandrel(scale, tmp_path):
  torch_net = torch_safmn(scale)
  # strict: every key of the file placed, none missing
  net = arch_testing.load_via_pth(torch_net, tmp_path / "safmn.pth")
  assert isinstance(net, SAFMN) and net.scale == scale
  assert (net.dim, net.n_blocks, net.ffn_scale) == (8, 2, 1.5)
  lr = arch_testing.random_lr(19, 23)
  arch_testing.assert_parity(net, torch_net, lr, f"SAFMN x{scale}", jit=True)


def test_pooling_and_nearest_indices_match_torch_for_odd_sizes():
  # The index tables behind adaptive_max_pool / resize_nearest (their jnp use: the parity tests).
  functional = torch.nn.functional
  rng = np.random.default_rng(0)
  for size in range(8, 80):
    for out in {size // 2, size // 4, size // 8, size // 3}:
      x = rng.normal(size=size).astype(np.float32)
      expected = functional.adaptive_max_pool2d(torch.from_numpy(x).view(1, 1, size, 1), (out, 1))
      pooled = x[_adaptive_bins(size, out)].max(axis=1)
      np.testing.assert_array_equal(pooled, expected.view(-1).numpy())
      up = functional.interpolate(expected, size=(size, 1), mode="nearest").view(-1).numpy()
      np.testing.assert_array_equal(pooled[_nearest_indices(out, size)], up)


def test_detection_and_truncated_dict():
  state = arch_testing.state_of(torch_safmn(3, dim=12, n_blocks=3, ffn_scale=2.0))
  assert pretrained.infer_architecture(state) == (
    "safmn",
    dict(scale=3, dim=12, n_blocks=3, ffn_scale=2.0),
  )
  del state["feats.2.ccm.ccm.2.weight"]
  with pytest.raises(ValueError, match="safmn.*feats.2.ccm.ccm.2.weight"):
    pretrained.infer_architecture(state)


def test_config_builds_the_detected_network_and_it_fine_tunes(tmp_path):
  arch_testing.assert_config_builds_and_fine_tunes(torch_safmn(2, n_blocks=1), tmp_path)
