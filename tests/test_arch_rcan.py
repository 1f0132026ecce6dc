"""RCAN against spandrel's: parity for every scale, loading a .pth, detection, fine-tuning."""

from flax import nnx
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from sr_jax import models, sharding, train
from sr_jax.models import load_pretrained_sr, pretrained, rcan
from sr_jax.weights import porting

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
  """spandrel's RCAN (tiny) with random weights of non-trivial statistics, in eval mode."""
  net = TorchRCAN(**TINY, **kwargs).eval()
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in net.parameters():
      param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
  return net


def torch_forward(net, lr_nhwc: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    out = net(torch.from_numpy(lr_nhwc.transpose(0, 3, 1, 2).copy()))
  return out.numpy().transpose(0, 2, 3, 1)


def state_of(net) -> dict[str, np.ndarray]:
  return {key: value.numpy() for key, value in net.state_dict().items()}


def nnx_shapes(net) -> dict[str, tuple]:
  """`merge.flatten_state`'s keys and shapes, for an abstract (`nnx.eval_shape`) network too."""
  flat = nnx.to_flat_state(nnx.state(net, nnx.Not(nnx.RngState)))
  return {".".join(map(str, path)): tuple(var.get_value().shape) for path, var in flat}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pth_loads_and_matches_spandrel(tmp_path, variant):
  kwargs = VARIANTS[variant]
  ref = random_reference(**kwargs)
  torch.save(ref.state_dict(), tmp_path / "rcan.pth")
  net = load_pretrained_sr(tmp_path / "rcan.pth")
  assert type(net) is rcan.RCAN
  expected = dict(norm=True, kernel_size=3, unshuffle_mod=False, n_colors=3, **TINY)
  for key, value in {**expected, **kwargs}.items():
    assert getattr(net, key) == value, key
  lr = np.random.default_rng(1).random((1, 13, 17, 3), dtype=np.float32)
  sr = np.asarray(net(jnp.asarray(lr)))
  ref_sr = torch_forward(ref, lr)
  assert sr.shape == ref_sr.shape == (1, 13 * net.scale, 17 * net.scale, 3)
  err = float(np.abs(sr - ref_sr).max() / np.abs(ref_sr).max())
  assert err <= 1e-4, f"{variant}: max |jax - torch| / max |torch| = {err:.3g}"


def test_port_rules_map_the_spandrel_state_dict_key_for_key():
  for kwargs in VARIANTS.values():
    state = state_of(random_reference(**kwargs))
    found = rcan.detect_rcan(state)
    net = nnx.eval_shape(lambda: rcan.RCAN(**found, rngs=nnx.Rngs(0)))  # noqa: B023
    ported = porting.torch_to_nnx(state, rcan.RCAN.port_rules)
    assert {k: v.shape for k, v in ported.items()} == nnx_shapes(net)


def test_detection_and_truncated_files():
  state = state_of(TorchRCAN(n_resgroups=3, n_resblocks=2, n_feats=32, reduction=8, scale=3))
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


def test_create_model_and_a_few_training_steps_lower_the_loss():
  config = default.get_config()
  config.model = ml_collections.ConfigDict(
    dict(
      name="rcan",
      weights="",
      n_resgroups=1,
      n_resblocks=1,
      n_feats=8,
      reduction=4,
      kernel_size=3,
      norm=True,
      unshuffle_mod=False,
    )
  )
  config.data.scale = 2
  config.train.batch_size = 8
  config.train.ema_decay = 0.0
  config.optim.warmup_steps = 0
  config.optim.learning_rate = 1e-3
  net = models.create_model(config.model, 2, nnx.Rngs(0))
  assert type(net) is rcan.RCAN and (net.scale, net.n_resgroups, net.n_feats) == (2, 1, 8)
  mesh = sharding.create_mesh()
  trainer = train.create_trainer(config, mesh)
  hr = np.random.default_rng(0).random((8, 16, 16, 3), dtype=np.float32)
  lr = np.ascontiguousarray(hr[:, ::2, ::2])
  batch = sharding.global_batch({"lr": lr, "hr": hr}, mesh)
  state, losses = trainer.state, []
  for _ in range(4):
    state, metrics = trainer.step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0], losses
