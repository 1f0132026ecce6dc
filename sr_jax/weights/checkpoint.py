"""Checkpoint files -> flat numpy arrays: every file format sr_jax reads, behind `read_checkpoint`.

The format is chosen by the file name (any case):
- `.safetensors` without sr_jax metadata: timm / Hugging Face / community files, PyTorch layout;
- `.safetensors` with metadata `sr_jax.format`: sr_jax's own converted files, NNX layout
  (`merge.flatten_state` keys), so loading is a plain copy;
- `.npz`: NNX layout;
- `.param` (or a `.bin` with a `.param` beside it): an ncnn Real-ESRGAN-family graph, mapped
  onto the official PyTorch key names (`ncnn.read_ncnn`);
- anything else (`.pth`, `.pt`, `.ckpt`, `.bin`): by its first bytes, a safetensors file or a
  torch pickle, read without torch (`torch_pickle`) and unwrapped by `unwrap_state_dict`.

A file that is not what it claims, corrupt or over a reader's budget raises a `WeightsError`
(a `ValueError`) whose message starts with the path; a missing file, `FileNotFoundError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import struct
from typing import Any, Mapping
import zipfile
import zlib

import ml_dtypes
import numpy as np

from sr_jax.weights import ncnn, torch_pickle
from sr_jax.weights.errors import WeightsError

__all__ = [
  "Checkpoint",
  "SR_JAX_FORMAT",
  "read_checkpoint",
  "save_sr_jax",
  "unwrap_state_dict",
]

SR_JAX_FORMAT = "1"
# Where training frameworks keep the weights; BasicSR's EMA weights first, as Real-ESRGAN uses them.
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net")


@dataclasses.dataclass
class Checkpoint:
  """Arrays read from a file.

  Attributes:
    arrays: flat `{key: array}`.
    layout: "torch" (PyTorch names and layouts: needs `porting.torch_to_nnx`) or "nnx".
    path: the file read.
    metadata: the file's own string metadata (safetensors header, ncnn details).
    arch, arch_kwargs: the architecture when the file itself states it (ncnn graphs, sr_jax
      files); None / {} when it has to be detected from the keys.
  """

  arrays: dict[str, np.ndarray]
  layout: str
  path: str
  metadata: dict[str, str] = dataclasses.field(default_factory=dict)
  arch: str | None = None
  arch_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


def unwrap_state_dict(obj: Any, path: str = "") -> dict[str, np.ndarray]:
  """Finds the flat `{key: array}` state dict inside a loaded torch checkpoint.

  Accepts a flat dict, or a dict wrapping one under a usual key, tried in the order of
  `WRAPPER_KEYS` (BasicSR `params_ema` before `params`, then `state_dict`, ...); strips a
  DataParallel `module.` prefix.
  """
  if not isinstance(obj, dict):
    raise WeightsError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
  if not any(isinstance(v, np.ndarray) for v in obj.values()):
    for key in WRAPPER_KEYS:
      if isinstance(obj.get(key), dict):
        return unwrap_state_dict(obj[key], path)
    raise WeightsError(
      f"{path}: no tensors at the top level and none of the keys {WRAPPER_KEYS} "
      f"holds a state dict (keys: {list(obj)[:10]})"
    )
  arrays = torch_pickle.flatten_tensors(obj)
  if arrays and all(k.startswith("module.") for k in arrays):
    arrays = {k[len("module.") :]: v for k, v in arrays.items()}
  return arrays


# safetensors dtype names -> numpy (the format is little endian).
_SAFETENSORS_DTYPES = {
  "F64": np.dtype("<f8"),
  "F32": np.dtype("<f4"),
  "F16": np.dtype("<f2"),
  "BF16": np.dtype(ml_dtypes.bfloat16),
  "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
  "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
  "I64": np.dtype("<i8"),
  "I32": np.dtype("<i4"),
  "I16": np.dtype("<i2"),
  "I8": np.dtype("i1"),
  "U64": np.dtype("<u8"),
  "U32": np.dtype("<u4"),
  "U16": np.dtype("<u2"),
  "U8": np.dtype("u1"),
  "BOOL": np.dtype("?"),
  "C64": np.dtype("<c8"),
}
_MAX_SAFETENSORS_HEADER = 100_000_000  # bytes, the format's own limit
_ZIP_MAGIC = b"PK\x03\x04"


def _looks_like(path: str) -> str | None:
  """'safetensors', 'zip' or 'pickle' from a file's first bytes; None if none of them."""
  with open(path, "rb") as f:
    head = f.read(9)
  if head.startswith(_ZIP_MAGIC):
    return "zip"
  if head[:1] == b"\x80":  # the PROTO opcode that starts every torch pickle
    return "pickle"
  if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1:
    return "safetensors"
  return None


def _safetensors_header(path: str, f, file_size: int) -> tuple[dict, int]:
  """(header dict, byte offset of the data) of an open safetensors file, validated."""

  def fail(message: str):
    kind = _looks_like(path)
    hint = f" (it looks like a {kind} file)" if kind not in (None, "safetensors") else ""
    raise WeightsError(f"{path}: not a valid safetensors file{hint}: {message}")

  prefix = f.read(8)
  if len(prefix) < 8:
    fail(f"{file_size} bytes, too short for the 8-byte header length")
  (header_len,) = struct.unpack("<Q", prefix)
  if header_len > min(_MAX_SAFETENSORS_HEADER, file_size - 8):
    fail(f"header length {header_len} exceeds the file ({file_size} bytes) or 100 MB")
  try:
    header = json.loads(f.read(header_len).decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
    fail(f"the header is not JSON: {e}")
  if not isinstance(header, dict):
    fail(f"the header is a JSON {type(header).__name__}, not an object")
  return header, 8 + header_len


def _read_safetensors(path: str) -> Checkpoint:
  """Reads a safetensors file: dtype, shape and byte range of every tensor checked first, each
  tensor read exactly once (overlapping byte ranges are refused, so no file yields more tensor
  bytes than it holds)."""
  file_size = os.path.getsize(path)
  with open(path, "rb") as f:
    header, data_start = _safetensors_header(path, f, file_size)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
      isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
      raise WeightsError(f"{path}: safetensors __metadata__ must map strings to strings")
    data_size = file_size - data_start
    entries = []
    for key, info in header.items():
      where = f"{path}: tensor {key!r}"
      if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise WeightsError(f"{where}: needs exactly dtype, shape, data_offsets; got {info!r:.200}")
      dtype = _SAFETENSORS_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
      if dtype is None:
        raise WeightsError(
          f"{where}: unsupported dtype {info['dtype']!r:.40}; known: "
          f"{', '.join(_SAFETENSORS_DTYPES)}"
        )
      shape, offsets = info["shape"], info["data_offsets"]
      if not (
        isinstance(shape, list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        and len(shape) <= 64
      ):
        raise WeightsError(f"{where}: shape must be a list of non-negative ints: {shape!r:.200}")
      if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
        and 0 <= offsets[0] <= offsets[1] <= data_size
      ):
        raise WeightsError(
          f"{where}: data_offsets {offsets!r:.100} are not a byte range inside the "
          f"{data_size} data bytes"
        )
      nbytes = math.prod(shape) * dtype.itemsize
      if offsets[1] - offsets[0] != nbytes:
        raise WeightsError(
          f"{where}: {info['dtype']} {shape} needs {nbytes} bytes, data_offsets give "
          f"{offsets[1] - offsets[0]}"
        )
      entries.append((offsets[0], offsets[1], key, dtype, tuple(shape)))
    entries.sort(key=lambda entry: entry[:2])
    for (_, end, previous, *_), (begin, _, key, *_) in zip(entries, entries[1:]):
      if begin < end:
        raise WeightsError(f"{path}: tensors {previous!r} and {key!r} overlap in the file")
    arrays = {}
    for begin, end, key, dtype, shape in entries:
      f.seek(data_start + begin)
      raw = np.empty(end - begin, np.uint8)
      if f.readinto(raw) != raw.size:
        raise WeightsError(f"{path}: tensor {key!r} is truncated")
      arrays[key] = raw.view(dtype).reshape(shape)
  arrays = {key: arrays[key] for key in header}  # the file's order
  if not metadata.get("sr_jax.format"):
    return Checkpoint(arrays, "torch", path, metadata)
  try:
    kwargs = json.loads(metadata.get("sr_jax.arch_kwargs", "{}"))
  except json.JSONDecodeError as e:
    raise WeightsError(f"{path}: metadata sr_jax.arch_kwargs is not JSON: {e}") from e
  if not isinstance(kwargs, dict):
    raise WeightsError(f"{path}: metadata sr_jax.arch_kwargs must be a JSON object")
  return Checkpoint(arrays, "nnx", path, metadata, metadata.get("sr_jax.arch"), kwargs)


def _read_npz(path: str) -> Checkpoint:
  """Reads an `.npz` (no pickled objects); every array's declared size is checked against the
  bytes its zip member holds, and those against the file (`torch_pickle.MAX_INFLATION`), before
  anything is read."""
  file_size = os.path.getsize(path)
  budget = torch_pickle.MAX_INFLATION * file_size + torch_pickle.INFLATION_SLACK
  try:
    with zipfile.ZipFile(path) as archive:
      inflated = sum(info.file_size for info in archive.infolist())
      if inflated > budget:
        raise WeightsError(
          f"{path}: its arrays inflate to {inflated} bytes, more than "
          f"{torch_pickle.MAX_INFLATION}x the {file_size}-byte file; refused unread (a "
          "decompression bomb?)"
        )
      for info in archive.infolist():
        with archive.open(info) as member:
          version = np.lib.format.read_magic(member)
          read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
          )
          shape, _, dtype = read_header(member)
        if math.prod(shape) * dtype.itemsize > info.file_size:
          raise WeightsError(
            f"{path}: array {info.filename!r} declares {shape} {dtype}, more than its "
            f"{info.file_size} bytes"
          )
    with np.load(path, allow_pickle=False) as data:
      return Checkpoint({k: data[k] for k in data.files}, "nnx", path)
  except (WeightsError, FileNotFoundError, PermissionError):
    raise
  except (ValueError, EOFError, OSError, zlib.error, zipfile.BadZipFile, NotImplementedError) as e:
    detail = " ".join(str(e).split())[:300]
    raise WeightsError(f"{path}: not a valid .npz of arrays: {type(e).__name__}: {detail}") from e


def _read_ncnn(param_path: str) -> Checkpoint:
  model = ncnn.read_ncnn(param_path)
  metadata = {
    "ncnn.weight_dtype": model.weight_dtype,
    "ncnn.input_blob": model.input_blob,
    "ncnn.output_blob": model.output_blob,
  }
  return Checkpoint(model.state, "torch", param_path, metadata, model.arch, model.arch_kwargs)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
  """Reads any supported checkpoint file into flat numpy arrays (see the module docstring).

  Raises:
    WeightsError: (a `ValueError`) corrupt, hostile or unsupported content, naming the file.
    FileNotFoundError: a missing file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  stem, ext = os.path.splitext(path)
  ext = ext.lower()
  if ext == ".safetensors":
    return _read_safetensors(path)
  if ext == ".npz":
    return _read_npz(path)
  if ext == ".param":
    return _read_ncnn(path)
  if ext == ".bin" and os.path.isfile(stem + ".param"):
    return _read_ncnn(stem + ".param")  # an ncnn .bin was named: the graph is in the .param
  if _looks_like(path) == "safetensors":
    return _read_safetensors(path)
  return Checkpoint(unwrap_state_dict(torch_pickle.load_torch_file(path), path), "torch", path)


def save_sr_jax(
  path: str | os.PathLike,
  arrays: Mapping[str, np.ndarray],
  *,
  arch: str | None = None,
  arch_kwargs: Mapping[str, Any] | None = None,
  metadata: Mapping[str, str] | None = None,
) -> pathlib.Path:
  """Writes sr_jax's own format: a `.safetensors` file of NNX-layout arrays + metadata.

  `arch` / `arch_kwargs` (JSON) are stored so that loading needs no detection.
  """
  from safetensors.numpy import save_file

  path = pathlib.Path(path)
  if path.suffix != ".safetensors":
    raise ValueError(f"{path}: sr_jax checkpoints are .safetensors files")
  meta = {"sr_jax.format": SR_JAX_FORMAT, "sr_jax.layout": "nnx"}
  if arch is not None:
    meta["sr_jax.arch"] = arch
  if arch_kwargs:
    meta["sr_jax.arch_kwargs"] = json.dumps(dict(arch_kwargs), sort_keys=True)
  meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata=meta)
  os.replace(tmp, path)
  return path
