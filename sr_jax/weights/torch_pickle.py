"""Read PyTorch `.pth`/`.pt` checkpoints without torch, and without executing them.

A `.pth` is a pickle: loading it with plain `pickle` can run any code the file names. This
reader uses a restricted unpickler that only resolves an explicit allow-list of globals (the
tensor rebuild functions, the storage types, `collections.OrderedDict`) and rebuilds every
tensor as a numpy array. Anything else raises `UnsafeCheckpointError` before it is called.

Both formats `torch.save` writes are read:
- the zip format (torch >= 1.6): `<prefix>/data.pkl` plus one raw record per storage;
- the legacy format (one stream: magic, protocol, sys info, the pickle, storage keys, then
  each storage as int64 numel + raw bytes), still used by many published files.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from typing import Any
import zipfile

import ml_dtypes
import numpy as np

__all__ = ["UnsafeCheckpointError", "CheckpointFormatError", "load_torch_file", "flatten_tensors"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> numpy dtype (little endian; byte order fixed up on read).
_STORAGE_DTYPES = {
  "DoubleStorage": np.dtype("<f8"),
  "FloatStorage": np.dtype("<f4"),
  "HalfStorage": np.dtype("<f2"),
  "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
  "LongStorage": np.dtype("<i8"),
  "IntStorage": np.dtype("<i4"),
  "ShortStorage": np.dtype("<i2"),
  "CharStorage": np.dtype("i1"),
  "ByteStorage": np.dtype("u1"),
  "BoolStorage": np.dtype("?"),
  "ComplexFloatStorage": np.dtype("<c8"),
  "ComplexDoubleStorage": np.dtype("<c16"),
}

# dtypes that torch pickles by name (`GLOBAL torch <name>`), with `_rebuild_tensor_v3`.
_TORCH_DTYPES = {
  "float64": np.dtype("<f8"),
  "float32": np.dtype("<f4"),
  "float16": np.dtype("<f2"),
  "bfloat16": np.dtype(ml_dtypes.bfloat16),
  "int64": np.dtype("<i8"),
  "int32": np.dtype("<i4"),
  "int16": np.dtype("<i2"),
  "int8": np.dtype("i1"),
  "uint8": np.dtype("u1"),
  "bool": np.dtype("?"),
  "uint16": np.dtype("<u2"),
  "uint32": np.dtype("<u4"),
  "uint64": np.dtype("<u8"),
  "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
  "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
  "float8_e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
  "float8_e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
}


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The checkpoint asks for a global outside the allow-list (it may try to run code)."""


class CheckpointFormatError(ValueError):
  """The checkpoint is not a readable torch file, or its tensors are inconsistent."""


class _NoBuild:
  """Refuses the pickle BUILD opcode: no checkpoint may set attributes on our stand-ins."""

  __slots__ = ()

  def __setstate__(self, state):
    raise UnsafeCheckpointError(f"refused to set state on a {type(self).__name__[1:]}")


class _StorageType(_NoBuild):
  """Stand-in for `torch.<X>Storage` classes: only carries the element dtype."""

  __slots__ = ("name", "dtype")

  def __init__(self, name: str, dtype: np.dtype | None):
    self.name, self.dtype = name, dtype


class _TorchDtype(_NoBuild):
  """Stand-in for a pickled `torch.<dtype>` object."""

  __slots__ = ("name", "dtype")

  def __init__(self, name: str, dtype: np.dtype):
    self.name, self.dtype = name, dtype


class _Storage(_NoBuild):
  """A flat storage; `data` (a 1-D numpy array) may be filled in after unpickling (legacy)."""

  __slots__ = ("key", "dtype", "numel", "data", "root", "offset")

  def __init__(
    self, key: str, dtype: np.dtype, numel: int, root: "_Storage | None" = None, offset: int = 0
  ):
    self.key, self.dtype, self.numel = key, dtype, numel
    self.data: np.ndarray | None = None
    self.root, self.offset = root, offset  # legacy storage views share a root storage

  def array(self) -> np.ndarray:
    if self.root is not None:
      return self.root.array()[self.offset : self.offset + self.numel]
    if self.data is None:
      raise CheckpointFormatError(f"storage {self.key!r} has no data record")
    return self.data


class _PendingTensor(_NoBuild):
  """A tensor whose storage bytes may not be read yet; materialised after unpickling."""

  __slots__ = ("storage", "offset", "size", "stride", "dtype")

  def __init__(self, storage, offset, size, stride, dtype):
    self.storage, self.offset, self.size, self.stride, self.dtype = (
      storage,
      offset,
      size,
      stride,
      dtype,
    )


def _check_ints(name: str, value: Any, length: int | None = None) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) for v in value):
    raise CheckpointFormatError(f"tensor {name} must be a tuple of ints, got {value!r}")
  if length is not None and len(value) != length:
    raise CheckpointFormatError(f"tensor size and stride differ in length: {value!r}")
  return tuple(value)


def _pending(storage, offset, size, stride, dtype) -> _PendingTensor:
  if not isinstance(storage, _Storage):
    raise CheckpointFormatError(
      f"tensor storage must come from a persistent id, got {type(storage)}"
    )
  size = _check_ints("size", size)
  stride = _check_ints("stride", stride, len(size))
  if not isinstance(offset, int) or offset < 0 or any(s < 0 for s in size + stride):
    raise CheckpointFormatError(f"negative tensor offset/size/stride: {offset}, {size}, {stride}")
  return _PendingTensor(storage, offset, size, stride, dtype)


def _rebuild_tensor_v2(
  storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
  del requires_grad, backward_hooks, metadata  # autograd state is meaningless for numpy
  dtype = storage.dtype if isinstance(storage, _Storage) else None
  return _pending(storage, storage_offset, size, stride, dtype)


def _rebuild_tensor_v3(
  storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None
):
  del requires_grad, backward_hooks, metadata
  if not isinstance(dtype, _TorchDtype):
    raise CheckpointFormatError(f"_rebuild_tensor_v3 expects a torch dtype, got {dtype!r}")
  return _pending(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
  del requires_grad, backward_hooks, unused  # an nn.Parameter is just its data here
  if not isinstance(data, _PendingTensor):
    raise CheckpointFormatError(f"_rebuild_parameter expects a tensor, got {type(data)}")
  return data


def _allowed_global(module: str, name: str) -> Any:
  """The allow-list; returns the stand-in for an allowed global, else None."""
  if (module, name) == ("collections", "OrderedDict"):
    return collections.OrderedDict
  if module == "torch._utils":
    return {
      "_rebuild_tensor_v2": _rebuild_tensor_v2,
      "_rebuild_tensor_v3": _rebuild_tensor_v3,
      "_rebuild_parameter": _rebuild_parameter,
    }.get(name)
  if module == "torch" and name in _STORAGE_DTYPES:
    return _StorageType(name, _STORAGE_DTYPES[name])
  if module == "torch" and name in _TORCH_DTYPES:
    return _TorchDtype(name, _TORCH_DTYPES[name])
  if (module, name) in (("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")):
    return _StorageType(name, np.dtype("u1"))
  return None


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only allow-listed globals and torch storage persistent ids."""

  def __init__(self, file, path: str, storages: dict[str, _Storage], legacy: bool):
    super().__init__(file)
    self._path, self._storages, self._legacy = path, storages, legacy

  def find_class(self, module: str, name: str) -> Any:
    found = _allowed_global(module, name)
    if found is None:
      raise UnsafeCheckpointError(
        f"{self._path}: refused global '{module}.{name}': not in the allow-list of a torch state "
        "dict (tensors, storages, OrderedDict); the file may try to execute code"
      )
    return found

  def persistent_load(self, pid: Any) -> _Storage:
    if not isinstance(pid, tuple) or not pid:
      raise UnsafeCheckpointError(f"{self._path}: refused persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage":
      raise UnsafeCheckpointError(f"{self._path}: refused persistent id of kind {kind!r}")
    if self._legacy:
      if len(pid) != 6:
        raise CheckpointFormatError(f"{self._path}: malformed legacy storage id {pid!r}")
      _, storage_type, key, _location, numel, view = pid
    else:
      if len(pid) != 5:
        raise CheckpointFormatError(f"{self._path}: malformed storage id {pid!r}")
      _, storage_type, key, _location, numel = pid
      view = None
    if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
      raise CheckpointFormatError(f"{self._path}: malformed storage id {pid!r}")
    key = str(key)
    storage = self._storages.get(key)
    if storage is None:
      storage = self._storages[key] = _Storage(key, storage_type.dtype, numel)
    if view is not None:  # legacy storage view: (view_key, offset, view_size)
      view_key, offset, view_size = view
      return _Storage(
        str(view_key), storage.dtype, int(view_size), root=storage, offset=int(offset)
      )
    return storage


def _native(data: np.ndarray, big_endian: bool) -> np.ndarray:
  if big_endian and data.dtype.itemsize > 1 and data.dtype.kind in "fiuc":
    return data.view(data.dtype.newbyteorder(">")).astype(data.dtype.newbyteorder("="))
  return data


def _materialize(obj: Any, path: str) -> Any:
  """Replace every `_PendingTensor` in a nested dict/list/tuple by an owned numpy array."""
  if isinstance(obj, _PendingTensor):
    flat = obj.storage.array()
    if obj.dtype != flat.dtype:  # v3: untyped (uint8) storage reinterpreted as the tensor dtype
      flat = flat.view(obj.dtype)
    extent = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride)) + 1
    if 0 not in obj.size and extent > flat.size:
      raise CheckpointFormatError(
        f"{path}: tensor of size {obj.size} (stride {obj.stride}, offset {obj.offset}) reads past "
        f"the end of storage {obj.storage.key!r} ({flat.size} elements)"
      )
    if 0 in obj.size:
      return np.zeros(obj.size, dtype=flat.dtype)
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
      flat[obj.offset :], shape=obj.size, strides=[s * item for s in obj.stride], writeable=False
    )
    return np.array(view, copy=True, order="C")  # own the memory, C-contiguous
  if isinstance(obj, dict):
    out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
    for key, value in obj.items():
      out[key] = _materialize(value, path)
    return out
  if isinstance(obj, list):
    return [_materialize(v, path) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_materialize(v, path) for v in obj)
  if isinstance(obj, (_Storage, _StorageType, _TorchDtype)):
    raise CheckpointFormatError(f"{path}: bare torch storage/dtype objects are not supported")
  return obj


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise CheckpointFormatError(
        f"{path}: zip has no single '<prefix>/data.pkl' record ({len(pickles)} found)"
      )
    prefix = pickles[0][: -len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in names:
      big_endian = archive.read(prefix + "byteorder").decode().strip() == "big"
    storages: dict[str, _Storage] = {}
    unpickler = _RestrictedUnpickler(
      io.BytesIO(archive.read(pickles[0])), path, storages, legacy=False
    )
    result = unpickler.load()
    for key, storage in storages.items():
      record = f"{prefix}data/{key}"
      if record not in names:
        raise CheckpointFormatError(f"{path}: missing storage record {record!r}")
      raw = archive.read(record)
      expected = storage.numel * storage.dtype.itemsize
      if len(raw) < expected:
        raise CheckpointFormatError(
          f"{path}: storage record {record!r} has {len(raw)} bytes, expected {expected}"
        )
      storage.data = _native(
        np.frombuffer(raw, dtype=storage.dtype, count=storage.numel), big_endian
      )
  return _materialize(result, path)


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    header = _RestrictedUnpickler(f, path, {}, legacy=True)
    magic = header.load()
    if magic != _LEGACY_MAGIC:
      raise CheckpointFormatError(
        f"{path}: not a torch checkpoint (neither zip nor legacy magic number)"
      )
    header.load()  # protocol version
    sys_info = _RestrictedUnpickler(f, path, {}, legacy=True).load()
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    storages: dict[str, _Storage] = {}
    result = _RestrictedUnpickler(f, path, storages, legacy=True).load()
    keys = _RestrictedUnpickler(f, path, {}, legacy=True).load()
    if not isinstance(keys, list):
      raise CheckpointFormatError(f"{path}: malformed legacy storage key list")
    for key in keys:
      storage = storages.get(str(key))
      if storage is None:
        raise CheckpointFormatError(f"{path}: legacy storage key {key!r} was never referenced")
      (numel,) = struct.unpack("<q" if not big_endian else ">q", f.read(8))
      nbytes = numel * storage.dtype.itemsize
      raw = f.read(nbytes)
      if len(raw) != nbytes or numel < storage.numel:
        raise CheckpointFormatError(f"{path}: legacy storage {key!r} is truncated")
      storage.data = _native(np.frombuffer(raw, dtype=storage.dtype), big_endian)
  return _materialize(result, path)


def load_torch_file(path: str | os.PathLike) -> Any:
  """Loads a PyTorch checkpoint as numpy arrays, without torch and without running its code.

  Args:
    path: a `.pth`/`.pt`/`.bin` file written by `torch.save` (zip or legacy format).

  Returns:
    The unpickled object (usually a dict or nested dicts such as `{"params_ema": {...}}`) with
    every tensor replaced by a C-contiguous numpy array of the same dtype (bfloat16 and
    float8 via `ml_dtypes`). `nn.Parameter`s become plain arrays.

  Raises:
    UnsafeCheckpointError: the pickle names a global outside the allow-list.
    CheckpointFormatError: not a torch file, or a tensor is inconsistent with its storage.
    FileNotFoundError: `path` does not exist.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  try:
    return _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
  except UnsafeCheckpointError as err:
    if path in str(err):
      raise
    raise UnsafeCheckpointError(f"{path}: {err}") from None
  except CheckpointFormatError:
    raise
  except Exception as err:  # a corrupt or foreign file: any unpickling error, said plainly
    raise CheckpointFormatError(f"{path}: cannot read as a torch checkpoint: {err!r}") from err


def flatten_tensors(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """Flattens nested dicts of arrays into `{"a.b.c": array}` (non-array leaves are dropped)."""
  flat: dict[str, np.ndarray] = {}
  if isinstance(obj, np.ndarray):
    flat[prefix] = obj
  elif isinstance(obj, dict):
    for key, value in obj.items():
      flat.update(flatten_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
  return flat
