"""RCAN against spandrel's: parity for every scale, loading a .pth, detection, fine-tuning."""

from flax import nnx
import jax.numpy as jnp
import pytest

from sr_jax.models import pretrained, rcan
from sr_jax.weights import porting
from tests import arch_testing

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")
from spandrel.architectures.RCAN import RCAN as TorchRCAN  # noqa: E402

TINY = dict(n_resgroups=2, n_resblocks=2, n_feats=16, reduction=4)
VARIANTS = {
  "x2": dict(scale=2),
  "x3": dict(scale=3),
  "x4": dict(scale=4),
  "x8": dict(scale=8),
  "x2_unshuffle": dict(scale=2, unshuffle_mod=True),
  "x1_unshuffle": dict(scale=1, unshuffle_mod=True),
  "x4_no_norm_k5": dict(scale=4, norm=False, kernel_size=5),
}


def random_reference(seed: int = 0, **kwargs):
  """spandrel's RCAN (tiny, `kwargs` over TINY) with random weights of non-trivial statistics."""
  return arch_testing.randomize(TorchRCAN(**{**TINY, **kwargs}), seed)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pth_loads_and_matches_spandrel(tmp_path, variant):
  kwargs = VARIANTS[variant]
  ref = random_reference(**kwargs)
  net = arch_testing.load_via_pth(ref, tmp_path / "rcan.pth")
  assert type(net) is rcan.RCAN
  expected = dict(norm=True, kernel_size=3, unshuffle_mod=False, n_colors=3, **TINY)
  for key, value in {**expected, **kwargs}.items():
    assert getattr(net, key) == value, key
  lr = arch_testing.random_lr(13, 17)
  sr = net(jnp.asarray(lr))
  assert sr.shape == (1, 13 * net.scale, 17 * net.scale, 3)
  arch_testing.assert_matches(sr, arch_testing.torch_forward(ref, lr), variant)


def test_port_rules_map_the_spandrel_state_dict_key_for_key():
  for kwargs in VARIANTS.values():
    state = arch_testing.state_of(random_reference(**kwargs))
    found = rcan.detect_rcan(state)
    net = nnx.eval_shape(lambda: rcan.RCAN(**found, rngs=nnx.Rngs(0)))  # noqa: B023
    ported = porting.torch_to_nnx(state, rcan.RCAN.port_rules)
    assert {k: v.shape for k, v in ported.items()} == arch_testing.nnx_shapes(net)


def test_detection_and_truncated_files():
  state = arch_testing.state_of(
    TorchRCAN(n_resgroups=3, n_resblocks=2, n_feats=32, reduction=8, scale=3)
  )
  assert pretrained.infer_architecture(state) == (
    "rcan",
    dict(
      scale=3,
      n_resgroups=3,
      n_resblocks=2,
      n_feats=32,
      n_colors=3,
      norm=True,
      kernel_size=3,
      reduction=8,
      unshuffle_mod=False,
    ),
  )
  truncated = {k: v for k, v in state.items() if not k.startswith("body.1.body.1.")}
  with pytest.raises(ValueError, match=r"rcan.*missing key 'body\.1\.body\.1\.body\.0\.weight'"):
    pretrained.infer_architecture(truncated)
  no_last = {k: v for k, v in state.items() if not k.startswith("body.3.")}
  with pytest.raises(ValueError, match=r"looks like rcan.*missing key 'body\.2\.weight'"):
    pretrained.infer_architecture(no_last)


def test_config_builds_the_detected_network_and_it_fine_tunes(tmp_path):
  ref = random_reference(scale=2, n_resgroups=1, n_resblocks=1, n_feats=8)
  arch_testing.assert_config_builds_and_fine_tunes(ref, tmp_path)
