"""Real-CUGAN (UpCunet2x / 3x / 4x, pro, 2x_fast) against spandrel's: parity, loading, detection,
fine-tuning. The networks have fixed widths (no tiny form): forwards are jitted to stay fast."""

from flax import nnx
import numpy as np
import pytest

from sr_jax.models import pretrained, realcugan
from sr_jax.weights import porting
from tests import arch_testing

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.RealCUGAN import (  # noqa: E402
  UpCunet2x,
  UpCunet2x_fast,
  UpCunet3x,
  UpCunet4x,
)

# name: (reference class, its kwargs, what sr_jax detects, LR size the reference accepts). Sizes
# are odd where the reference allows: its reflect padding needs the margin below the input size,
# and 2x_fast needs the size rounded up to 2 to be a multiple of 4.
VARIANTS = {
  "2x": (UpCunet2x, {}, dict(scale=2, pro=False, fast=False), (21, 23)),
  "3x": (UpCunet3x, {}, dict(scale=3, pro=False, fast=False), (19, 21)),
  "4x_pro_gray": (
    UpCunet4x,
    dict(pro=True, in_channels=1, out_channels=1),
    dict(scale=4, pro=True, fast=False, in_channels=1, out_channels=1),
    (21, 20),
  ),
  "2x_fast": (UpCunet2x_fast, {}, dict(scale=2, pro=False, fast=True), (43, 40)),
}


def random_reference(cls, seed: int = 0, **kwargs):
  """A spandrel UpCunet with random weights (std 0.05: a deep net, no norms), in eval mode."""
  return arch_testing.randomize(cls(**kwargs), seed, std=0.05)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pth_loads_and_matches_spandrel(tmp_path, variant):
  cls, kwargs, expected, (h, w) = VARIANTS[variant]
  ref = random_reference(cls, **kwargs)
  state = arch_testing.state_of(ref)
  found = realcugan.detect_realcugan(state)
  net = nnx.eval_shape(lambda: realcugan.RealCUGAN(**found, rngs=nnx.Rngs(0)))
  ported = porting.torch_to_nnx(state, realcugan.RealCUGAN.port_rules)
  assert {k: v.shape for k, v in ported.items()} == arch_testing.nnx_shapes(net)

  net = arch_testing.load_via_pth(ref, tmp_path / "cugan.pth")
  assert type(net) is realcugan.RealCUGAN
  for key, value in {"in_channels": 3, "out_channels": 3, **expected}.items():
    assert getattr(net, key) == value, key
  lr = arch_testing.random_lr(h, w, net.in_channels)
  sr = arch_testing.jit_forward(net, lr)
  assert sr.shape == (1, h * net.scale, w * net.scale, net.out_channels)
  arch_testing.assert_matches(sr, arch_testing.torch_forward(ref, lr), variant)


def test_detection_and_truncated_files():
  state = arch_testing.state_of(UpCunet3x(pro=True))
  state["pro"] = np.zeros(1, np.float32)
  found = dict(scale=3, in_channels=3, out_channels=3, pro=True, fast=False)
  assert pretrained.infer_architecture(state) == ("realcugan", found)
  fast = arch_testing.state_of(UpCunet2x_fast(in_channels=1, out_channels=1))
  assert realcugan.detect_realcugan(fast) == dict(
    scale=2, in_channels=1, out_channels=1, pro=False, fast=True
  )
  truncated = {k: v for k, v in state.items() if not k.startswith("unet2.conv4.seblock")}
  with pytest.raises(ValueError, match=r"realcugan.*missing key 'unet2\.conv4\.seblock\.conv1"):
    pretrained.infer_architecture(truncated)
  four = arch_testing.state_of(UpCunet4x())
  del four["conv_final.bias"]
  with pytest.raises(ValueError, match=r"missing key 'conv_final\.bias'"):
    pretrained.infer_architecture(four)


def test_config_builds_the_detected_network_and_it_fine_tunes(tmp_path):
  # Patches smaller than the reflect margin: padded by repeated reflection (PyTorch would refuse).
  arch_testing.assert_config_builds_and_fine_tunes(random_reference(UpCunet2x), tmp_path, 4)
