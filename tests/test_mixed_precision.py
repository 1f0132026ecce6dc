"""Mixed precision (train.compute_dtype, inference dtype): every network computes its convolutions
in bfloat16 and returns float32; bfloat16 forwards stay close to float32; a bfloat16 training run
learns like float32 with float32 weights and optimizer state."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from sr_jax import inference, optim, train_state, train_step, upscale, utils
from sr_jax.backbones import BACKBONES, create_backbone
from sr_jax.models import edsr, precision, pretrained, unet
from sr_jax.weights import checkpoint, merge
from tests.test_train import tiny_config

# Tiny forms of every ported architecture.
TINY_RRDB = dict(scale=4, num_feat=8, num_block=1, num_grow_ch=4)
TINY_WINDOWS = dict(scale=2, embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, img_size=16)
TINY_SWIN = dict(TINY_WINDOWS, upsampler="pixelshuffle")
TINY_ARCHS = {
  "rrdbnet": TINY_RRDB,
  "hat": dict(TINY_WINDOWS, num_feat=8, compress_ratio=1, squeeze_factor=4, mlp_ratio=1.0),
  "dat": dict(scale=2, embed_dim=16, split_size=(2, 4), depth=(1,), num_heads=(2,)),
  "span": dict(scale=2, feature_channels=8),
  "esrgan": TINY_RRDB,
  "esrgan_bsrgan": TINY_RRDB,
  "swin2sr": TINY_SWIN,
  "swinir": TINY_SWIN,
  "rcan": dict(scale=2, n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4),
  "safmn": dict(scale=2, dim=8, n_blocks=1),
  "realcugan": dict(scale=2),
  "plksr": dict(scale=2, dim=16, n_blocks=1, kernel_size=7),
  "realplksr": dict(scale=2, dim=16, n_blocks=1, kernel_size=7),
  "omnisr": dict(scale=2, num_feat=16, window_size=4),
  "srvgg_compact": dict(scale=2, num_feat=8, num_conv=2),
}


def _abstract_backbone(name: str) -> nnx.Module:
  return utils.eval_shape_module(lambda rngs: create_backbone(name, head=False, rngs=rngs))


UNET_ENCODERS = [
  name for name in BACKBONES if _abstract_backbone(name).feature_strides == (2, 4, 8, 16, 32)
]


def _builders():
  yield "edsr", lambda rngs: edsr.EDSR(2, 16, 2, rngs=rngs)
  for backbone in UNET_ENCODERS:
    yield (
      f"unet_{backbone}",
      lambda rngs, b=backbone: unet.UNetSR(
        2, create_backbone(b, head=False, rngs=rngs, freeze_bn=False), rngs=rngs
      ),
    )
  for name, kwargs in TINY_ARCHS.items():
    yield name, lambda rngs, n=name, k=kwargs: pretrained.ARCHITECTURES[n].module(**k, rngs=rngs)


BUILDERS = dict(_builders())


def test_every_network_is_tested():
  assert set(TINY_ARCHS) == set(pretrained.ARCHITECTURES)


def _conv_dtypes(jaxpr) -> list[str]:
  """The operand dtype of every convolution of `jaxpr`, nested jaxprs (jit, custom_vjp, ...)
  included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      found.append(str(eqn.invars[0].aval.dtype))
      assert eqn.invars[0].aval.dtype == eqn.invars[1].aval.dtype
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found += _conv_dtypes(inner)
  return found


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_network_convolves_in_bfloat16_and_returns_float32(name):
  # Traced on shapes only (no weights initialised, nothing compiled).
  model = utils.eval_shape_module(BUILDERS[name])
  graphdef, state = nnx.split(model)
  lr = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
  out = {}
  for dtype in ("float32", "bfloat16"):
    jaxpr = jax.make_jaxpr(lambda s, x, d=dtype: inference.forward(graphdef, s, x, d))(state, lr)
    out[dtype] = (jaxpr.out_avals[0], _conv_dtypes(jaxpr.jaxpr))
  (out32, convs32), (out16, convs16) = out["float32"], out["bfloat16"]
  assert out16.dtype == out32.dtype == jnp.float32 and out16.shape == out32.shape
  assert convs16 and set(convs16) == {"bfloat16"}, convs16
  assert set(convs32) == {"float32"}
  # The weights are untouched: float32 in the state, whatever the compute dtype.
  assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_convolves_in_bfloat16(name):
  graphdef, state = nnx.split(_abstract_backbone(name))

  def features(state, images):
    backbone = precision.set_compute_dtype(nnx.merge(graphdef, state), "bfloat16")
    return backbone.features(images)

  jaxpr = jax.make_jaxpr(features)(state, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  convs = _conv_dtypes(jaxpr.jaxpr)
  assert convs and set(convs) == {"bfloat16"}, convs


def _random_weights(build, seed: int) -> nnx.Module:
  """The network of `build(rngs)` with random weights of non-trivial statistics (fan-in scaled
  weights, zero-initialised last convs included; BatchNorm statistics away from 0 / 1), set on an
  abstract build: no initialisation to run."""
  model = utils.eval_shape_module(build)
  rng = np.random.default_rng(seed)

  def draw(path, x):
    if path[-1] == "var":  # BatchNorm running variance
      return rng.uniform(0.5, 1.5, x.shape)
    if path[-1] == "scale":  # norm scales
      return rng.uniform(0.5, 1.5, x.shape)
    return rng.normal(0, 0.5 / np.sqrt(np.prod(x.shape[:-1]) if len(x.shape) > 1 else 1), x.shape)

  state = nnx.state(model)
  values = jax.tree.map_with_path(
    lambda path, x: jnp.asarray(draw([k.key for k in path if hasattr(k, "key")], x), x.dtype),
    state,
  )
  nnx.update(model, values)
  return model


def _small_unet(rngs: nnx.Rngs) -> unet.UNetSR:
  """A U-Net with BatchNorm and LayerNorms, and a small decoder."""
  encoder = create_backbone("resnet18", head=False, rngs=rngs, freeze_bn=False)
  return unet.UNetSR(2, encoder, (16, 16, 16, 16, 8), 8, rngs=rngs)


@pytest.mark.parametrize("name", ["edsr", "rrdbnet", "srvgg_compact", "unet_resnet18"])
def test_bfloat16_forward_close_to_float32(name):
  """Tolerance, relative to the float32 output's dynamic range (max - min): mean |error| <= 0.4 %,
  max <= 3 %. bfloat16 keeps 8 significant bits (rounding error <= 2**-9 = 0.2 % of a value); a
  few layers of such errors give ~0.05-0.1 % mean and ~0.3-0.7 % max here (measured for every
  network), while one layer computing garbage or dropping the residual is far off."""
  build = _small_unet if name.startswith("unet") else BUILDERS[name]
  model = _random_weights(build, seed=1)
  graphdef, state = nnx.split(model)
  lr = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 16, 12, 3)), jnp.float32)
  forward = jax.jit(lambda s, x, d: inference.forward(graphdef, s, x, d), static_argnums=2)
  sr32 = np.asarray(forward(state, lr, "float32"))
  sr16 = np.asarray(forward(state, lr, "bfloat16"))
  assert sr16.dtype == np.float32
  error = np.abs(sr16 - sr32) / (sr32.max() - sr32.min())
  assert 0 < error.mean() <= 4e-3 and error.max() <= 3e-2, (error.mean(), error.max())


def test_load_pretrained_sr_dtype(tmp_path):
  kwargs = TINY_ARCHS["srvgg_compact"]
  net = _random_weights(
    lambda rngs: pretrained.ARCHITECTURES["srvgg_compact"].module(**kwargs, rngs=rngs), 3
  )
  path = checkpoint.save_sr_jax(
    tmp_path / "compact.safetensors",
    merge.flatten_state(net),
    arch="srvgg_compact",
    arch_kwargs=kwargs,
  )
  lr = jnp.asarray(np.random.default_rng(4).uniform(size=(1, 12, 16, 3)), jnp.float32)
  outputs = {}
  for dtype in ("float32", "bfloat16"):
    loaded = pretrained.load_pretrained_sr(path, dtype=dtype)
    assert loaded.body[0].dtype == (None if dtype == "float32" else jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(nnx.state(loaded, nnx.Param))} == {
      jnp.dtype(jnp.float32)
    }
    outputs[dtype] = np.asarray(loaded(lr))
  assert outputs["bfloat16"].dtype == np.float32
  np.testing.assert_allclose(outputs["float32"], np.asarray(net(lr)), rtol=1e-5, atol=1e-6)
  error = np.abs(outputs["bfloat16"] - outputs["float32"])
  assert 0 < error.max() <= 3e-2 * np.ptp(outputs["float32"])
  # The command line: python -m sr_jax.upscale --weights=... --dtype=bfloat16.
  image = (np.random.default_rng(5).uniform(size=(12, 16, 3)) * 255).astype(np.uint8)
  Image.fromarray(image).save(tmp_path / "in.png")
  written = {}
  for dtype in ("float32", "bfloat16"):
    out = tmp_path / f"{dtype}.png"
    args = [f"--weights={path}", f"--input={tmp_path / 'in.png'}", f"--output={out}"]
    assert upscale.main([*args, f"--dtype={dtype}"]) == 0
    written[dtype] = np.asarray(Image.open(out), np.int32)
  levels = np.abs(written["bfloat16"] - written["float32"])
  assert written["float32"].shape == (24, 32, 3) and levels.max() <= 8 and levels.mean() < 1


def test_bfloat16_training_learns_like_float32():
  """A short run on one fixed batch: the bfloat16 loss falls as the float32 one does, and the
  weights, EMA and optimizer state stay float32."""
  rng = np.random.default_rng(0)
  hr = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
  batch = {"lr": hr.reshape(8, 8, 2, 8, 2, 3).mean((2, 4)), "hr": hr}
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(
      **{
        "train.compute_dtype": dtype,
        "optim.learning_rate": 2e-3,
        "optim.schedule": "constant",
        "optim.warmup_steps": 0,
      }
    )
    _, tx = optim.from_config(config)
    graphdef, state = train_state.create_train_state(config, tx)
    step = jax.jit(train_step.make_step_fn(config, graphdef))
    history = []
    for _ in range(12):
      state, metrics = step(state, batch)
      history.append(float(metrics["loss"]))
    losses[dtype] = np.array(history)
    dtypes = {
      x.dtype for k in ("params", "ema_params", "opt_state") for x in jax.tree.leaves(state[k])
    }
    assert dtypes <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}, dtypes
  f32, bf16 = losses["float32"], losses["bfloat16"]
  assert f32[-1] < 0.85 * f32[0], f32
  assert bf16[-1] < 0.85 * bf16[0], bf16
  np.testing.assert_allclose(bf16, f32, rtol=0.05)


def test_compute_dtype_is_checked():
  with pytest.raises(ValueError, match=r"train.compute_dtype='float16'.*bfloat16"):
    precision.compute_dtype("float16")
