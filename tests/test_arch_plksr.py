"""PLKSR and RealPLKSR: parity with spandrel's networks, detection, loading, fine-tuning."""

import pytest

from sr_jax.models import pretrained
from sr_jax.models.plksr import PLKSR, RealPLKSR
from tests import arch_testing

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.PLKSR import PLKSR as TorchPLKSR  # noqa: E402
from spandrel.architectures.PLKSR import RealPLKSR as TorchRealPLKSR  # noqa: E402

PLKSR_VARIANTS = {
  "ccm-plk-x2": dict(upscaling_factor=2, ccm_type="CCM", kernel_size=7, lk_type="PLK"),
  "iccm-sparse-noea-x3": dict(
    upscaling_factor=3, ccm_type="ICCM", lk_type="SparsePLK", use_ea=False
  ),
  "dccm-rect-x4": dict(upscaling_factor=4, ccm_type="DCCM", kernel_size=9, lk_type="RectSparsePLK"),
  "ccm-plk-x1": dict(upscaling_factor=1, ccm_type="CCM", kernel_size=5, lk_type="PLK"),
}
REALPLKSR_VARIANTS = {
  "groupnorm-x2": dict(upscaling_factor=2, kernel_size=7),
  "dysample-layernorm-x3": dict(upscaling_factor=3, kernel_size=5, dysample=True, layer_norm=True),
  "dysample-noea-x4": dict(upscaling_factor=4, kernel_size=5, dysample=True, use_ea=False),
  "dysample-x1": dict(upscaling_factor=1, kernel_size=5, dysample=True),
}


@pytest.mark.parametrize("variant", sorted(PLKSR_VARIANTS))
def test_plksr_parity_with_spandrel(variant, tmp_path):
  kwargs = PLKSR_VARIANTS[variant]
  torch_net = arch_testing.randomize(TorchPLKSR(dim=8, n_blocks=2, **kwargs))
  # strict: every key of the file placed, none missing
  net = arch_testing.load_via_pth(torch_net, tmp_path / "plksr.pth")
  assert isinstance(net, PLKSR) and net.scale == kwargs["upscaling_factor"]
  assert (net.dim, net.n_blocks, net.ccm_type, net.lk_type) == (
    8,
    2,
    kwargs["ccm_type"],
    kwargs["lk_type"],
  )
  assert net.use_ea == kwargs.get("use_ea", True)
  lr = arch_testing.random_lr(13, 17)
  arch_testing.assert_parity(net, torch_net, lr, f"PLKSR {variant}", jit=True)


@pytest.mark.parametrize("variant", sorted(REALPLKSR_VARIANTS))
def test_realplksr_parity_with_spandrel(variant, tmp_path):
  kwargs = REALPLKSR_VARIANTS[variant]
  torch_net = arch_testing.randomize(TorchRealPLKSR(dim=8, n_blocks=2, **kwargs))
  net = arch_testing.load_via_pth(torch_net, tmp_path / "realplksr.pth")
  assert isinstance(net, RealPLKSR) and net.scale == kwargs["upscaling_factor"]
  assert (net.dim, net.n_blocks, net.kernel_size) == (8, 2, kwargs["kernel_size"])
  assert net.dysample == kwargs.get("dysample", False)
  assert net.layer_norm == kwargs.get("layer_norm", False)
  lr = arch_testing.random_lr(13, 17)
  arch_testing.assert_parity(net, torch_net, lr, f"RealPLKSR {variant}", jit=True)


def test_detection_and_truncated_dicts():
  state = arch_testing.state_of(
    TorchPLKSR(dim=12, n_blocks=3, upscaling_factor=3, ccm_type="DCCM", kernel_size=9)
  )
  assert pretrained.infer_architecture(state) == (
    "plksr",
    dict(
      scale=3,
      dim=12,
      n_blocks=3,
      ccm_type="DCCM",
      kernel_size=9,
      split_ratio=0.25,
      lk_type="PLK",
      use_max_kernel=False,
      sparse_kernels=(5, 5, 5, 5),
      sparse_dilations=(1, 2, 3, 4),
      with_idt=False,
      use_ea=True,
    ),
  )
  del state["feats.2.refine.weight"]
  with pytest.raises(ValueError, match="plksr.*feats.2.refine.weight"):
    pretrained.infer_architecture(state)
  real = TorchRealPLKSR(dim=16, n_blocks=3, upscaling_factor=2, split_ratio=0.5, dysample=True)
  state = arch_testing.state_of(real)
  assert pretrained.infer_architecture(state) == (
    "realplksr",
    dict(
      scale=2,
      dim=16,
      n_blocks=3,
      kernel_size=17,
      split_ratio=0.5,
      use_ea=True,
      norm_groups=4,
      dysample=True,
      layer_norm=False,
    ),
  )
  del state["feats.3.refine.weight"]
  with pytest.raises(ValueError, match="realplksr.*feats.3.refine.weight"):
    pretrained.infer_architecture(state)


def test_config_builds_the_detected_network_and_it_fine_tunes(tmp_path):
  torch_net = TorchRealPLKSR(dim=8, n_blocks=1, upscaling_factor=2, kernel_size=5, dysample=True)
  net = arch_testing.assert_config_builds_and_fine_tunes(
    arch_testing.randomize(torch_net), tmp_path
  )
  assert isinstance(net, RealPLKSR) and net.dysample
