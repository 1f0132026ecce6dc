"""SwinIR: parity with spandrel's PyTorch network for every variant, detection, loading, training.

Tiny widths / depths; the networks run eagerly (op by op), which is faster than compiling each
variant on these small inputs.
"""

import functools

from flax import nnx
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
pytest.importorskip("spandrel", reason="parity extras not installed: make parity-deps")

from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR  # noqa: E402

from configs import default  # noqa: E402
from sr_jax import sharding, train  # noqa: E402
from sr_jax.models import create_model, load_pretrained_sr, pretrained, swinir  # noqa: E402
from sr_jax.weights import merge, porting  # noqa: E402

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


def _randomize(net, seed: int):
  """Non-trivial weights: norm scales near 1, nonzero biases, random position bias tables."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in net.named_parameters():
      noise = torch.randn(param.shape, generator=gen)
      if "norm" in name and name.endswith("weight"):
        param.copy_(1 + 0.1 * noise)
      elif name.endswith("bias"):
        param.copy_(0.05 * noise)
      else:
        param.copy_(0.1 * noise)
  return net.eval()


@functools.cache
def _reference(variant: str):
  """(torch net, its state dict as numpy, as a file holds it)."""
  kwargs, _ = VARIANTS[variant]
  net = _randomize(TorchSwinIR(**kwargs), seed=sorted(VARIANTS).index(variant))
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  if kwargs.get("start_unshuffle", 1) > 1:  # the files hold nn.Sequential(PixelUnshuffle, Conv)
    state = {k.replace("conv_first.", "conv_first.1."): v for k, v in state.items()}
  return net, state


def _lr(variant: str, channels: int = 3) -> np.ndarray:
  _, (h, w) = VARIANTS[variant]
  return np.random.default_rng(0).random((1, h, w, channels), dtype=np.float32)


def _torch_forward(net, lr: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    out = net(torch.from_numpy(lr).permute(0, 3, 1, 2))
  return out.permute(0, 2, 3, 1).numpy()


def _relative_error(out, ref) -> float:
  out = np.asarray(out)
  assert out.shape == ref.shape, (out.shape, ref.shape)
  return float(np.abs(out - ref).max() / np.abs(ref).max())


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
  net = swinir.SwinIR(**found, rngs=nnx.Rngs(0))
  arrays = porting.torch_to_nnx(state, swinir.PORT_RULES)
  flat = merge.flatten_state(net)
  assert {k: v.shape for k, v in arrays.items()} == {k: v.shape for k, v in flat.items()}
  merge.load_state(net, arrays, strict=True)
  lr = _lr(variant, found["in_chans"])
  ref = _torch_forward(torch_net, lr)
  err = _relative_error(net(lr), ref)
  assert err <= 1e-4, f"{variant}: max |jax - torch| / max |torch| = {err:.2e}"


def test_load_pretrained_sr_pth_params_ema_and_safetensors(tmp_path):
  safetensors_torch = pytest.importorskip("safetensors.torch")
  variant = "classical_x4_two_layers"
  torch_net, _ = _reference(variant)
  state_dict = torch_net.state_dict()
  torch.save(state_dict, tmp_path / "bare.pth")
  torch.save({"params_ema": state_dict}, tmp_path / "wrapped.pth")
  safetensors_torch.save_file(
    {k: v.contiguous() for k, v in state_dict.items()}, str(tmp_path / "net.safetensors")
  )
  lr = _lr(variant)
  ref = _torch_forward(torch_net, lr)
  for name in ("bare.pth", "wrapped.pth", "net.safetensors"):
    net = load_pretrained_sr(tmp_path / name)
    assert type(net) is swinir.SwinIR
    assert net.scale == 4
    assert (net.depths, net.num_heads, net.embed_dim, net.window_size) == ((2, 1), (2, 3), 12, 4)
    assert (net.upsampler, net.resi_connection) == ("pixelshuffle", "1conv")
    err = _relative_error(net(lr), ref)
    assert err <= 1e-4, f"{name}: max |jax - torch| / max |torch| = {err:.2e}"


def test_load_sr_weights_checks_the_hyperparameters(tmp_path):
  torch_net, state = _reference("classical_x4_two_layers")
  torch.save(torch_net.state_dict(), tmp_path / "net.pth")
  found = swinir.detect_swinir(state)
  net = swinir.SwinIR(**found, rngs=nnx.Rngs(1))
  assert pretrained.load_sr_weights(net, tmp_path / "net.pth").ok
  lr = _lr("classical_x4_two_layers")
  err = _relative_error(net(lr), _torch_forward(torch_net, lr))
  assert err <= 1e-4, f"max |jax - torch| / max |torch| = {err:.2e}"
  other = swinir.SwinIR(**dict(found, window_size=8), rngs=nnx.Rngs(1))
  with pytest.raises(ValueError, match="window_size: requested 8, file has 4"):
    pretrained.load_sr_weights(other, tmp_path / "net.pth")


def test_infer_architecture_says_swinir():
  _, state = _reference("lightweight_x3")
  arch, found = pretrained.infer_architecture(state)
  assert (arch, found["scale"], found["upsampler"]) == ("swinir", 3, "pixelshuffledirect")


def test_truncated_state_dict_is_rejected():
  _, state = _reference("classical_x4_two_layers")
  keys = list(state)
  cut = keys.index("layers.1.residual_group.blocks.0.mlp.fc1.weight")
  truncated = {k: state[k] for k in keys[:cut]}
  with pytest.raises(ValueError, match=r"swinir.*missing key.*truncated"):
    pretrained.infer_architecture(truncated)
  hole = "layers.0.residual_group.blocks.1.norm2.weight"
  with pytest.raises(ValueError, match=hole):
    pretrained.infer_architecture({k: v for k, v in state.items() if k != hole})


def _tiny_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.scale = 2
  config.data.patch_size = 8
  config.model = ml_collections.ConfigDict(
    dict(
      name="swinir",
      weights="",
      img_size=8,
      in_chans=3,
      embed_dim=8,
      depths=(1,),
      num_heads=(2,),
      window_size=4,
      mlp_ratio=2.0,
      qkv_bias=True,
      patch_norm=True,
      img_range=1.0,
      upsampler="pixelshuffledirect",
      resi_connection="1conv",
      start_unshuffle=1,
      num_feat=64,
    )
  )
  config.optim.learning_rate = 2e-3
  config.optim.warmup_steps = 0
  config.train.batch_size = 8
  return config


def test_create_model_builds_and_training_lowers_the_loss():
  config = _tiny_config()
  net = create_model(config.model, config.data.scale, nnx.Rngs(0))
  assert type(net) is swinir.SwinIR and net.scale == 2 and net.depths == (1,)
  assert net(np.zeros((1, 5, 7, 3), np.float32)).shape == (1, 10, 14, 3)
  mesh = sharding.create_mesh()
  trainer = train.create_trainer(config, mesh)
  rng = np.random.default_rng(0)
  hr = rng.random((8, 16, 16, 3), dtype=np.float32)
  lr = hr.reshape(8, 8, 2, 8, 2, 3).mean(axis=(2, 4))
  batch = sharding.global_batch({"lr": lr, "hr": hr}, mesh)
  state, losses = trainer.state, []
  for _ in range(4):
    state, metrics = trainer.step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0], losses
