"""Read PyTorch `.pth`/`.pt` checkpoints without torch, and without executing them.

A `.pth` is a pickle: loading it with plain `pickle` can run any code the file names. This
reader uses a restricted unpickler that only resolves an explicit allow-list of globals (the
tensor rebuild functions, the storage types, `collections.OrderedDict`) and rebuilds every
tensor as a numpy array. Anything else raises `UnsafeCheckpointError` before it is called.

Both formats `torch.save` writes are read:
- the zip format (torch >= 1.6): `<prefix>/data.pkl` plus one raw record per storage;
- the legacy format (one stream: magic, protocol, sys info, the pickle, storage keys, then
  each storage as int64 numel + raw bytes), still used by many published files.

A hostile file of a few KB must not cost more than a small multiple of the tensor bytes it
declares, so every cost has a budget, checked before it is paid:
- each pickle is walked opcode by opcode first (`pickletools.genops`, builds nothing): at most
  `MAX_PICKLE_OPS` opcodes, and memo indices no larger than the opcode count (the C unpickler
  sizes its memo table by the largest index it is given);
- bytes read: a storage record is read in bounded chunks, never more than the pickle declares
  for it, and the declared total may exceed the file's size only by `MAX_INFLATION` times (torch
  stores records uncompressed; a 1 MB zip whose record inflates to 1 GiB is refused unread);
- tensors: a contiguous tensor is a view of its storage; a strided one is copied, and may hold no
  more elements than its storage (a stride-0 "expanded" view of a huge shape is refused); a
  tensor the pickle references many times (memo) is built once and shared;
- the object tree: nesting at most `MAX_DEPTH` deep and at most `MAX_OBJECTS` objects counting
  every reference to a shared one ("billion laughs" lists fail at once, not after exponential
  time);
- the allowed callables are frozen stand-ins, made anew for each load: BUILD on them is refused.
Every refusal is a `WeightsError` (a `ValueError`) naming the file.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import struct
from typing import Any
import zipfile

import ml_dtypes
import numpy as np

from sr_jax.weights.errors import WeightsError

__all__ = ["UnsafeCheckpointError", "CheckpointFormatError", "load_torch_file", "flatten_tensors"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# Budgets (see the module docstring). Real checkpoints stay far below each: ~20 opcodes, one
# object and nesting 2-4 per tensor; storages exactly as large as the records that hold them.
MAX_PICKLE_OPS = 4_000_000
MAX_OBJECTS = 1 << 20
MAX_DEPTH = 100
MAX_INFLATION = 64
INFLATION_SLACK = 16 << 20  # bytes: small compressed files may inflate freely up to this
_READ_CHUNK = 1 << 20
_MAX_NDIM = 64  # numpy's limit

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


class UnsafeCheckpointError(WeightsError, pickle.UnpicklingError):
  """The checkpoint asks for a global outside the allow-list (it may try to run code), or tries
  to change one of the allowed ones."""


class CheckpointFormatError(WeightsError):
  """The checkpoint is not a readable torch file, its tensors are inconsistent, or it is over
  one of the budgets."""


class _NoBuild:
  """Refuses the pickle BUILD opcode: no checkpoint may set attributes on our stand-ins."""

  __slots__ = ()

  def __setstate__(self, state):
    raise UnsafeCheckpointError(f"refused to set state on a {type(self).__name__[1:]}")


class _Callable(_NoBuild):
  """An allowed callable as the pickle sees it: it can call it, never change it (BUILD)."""

  __slots__ = ("_function",)

  def __init__(self, function):
    self._function = function

  def __call__(self, *args):
    return self._function(*args)


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
  """A flat storage; `data` (a 1-D numpy array) is filled in after unpickling."""

  __slots__ = ("key", "dtype", "numel", "data", "root", "offset")

  def __init__(
    self, key: str, dtype: np.dtype, numel: int, root: "_Storage | None" = None, offset: int = 0
  ):
    self.key, self.dtype, self.numel = key, dtype, numel
    self.data: np.ndarray | None = None
    self.root, self.offset = root, offset  # legacy storage views share a root storage

  @property
  def nbytes(self) -> int:
    return self.numel * self.dtype.itemsize

  def array(self) -> np.ndarray:
    if self.root is not None:
      root = self.root.array()
      if self.offset + self.numel > root.size:
        raise CheckpointFormatError(
          f"storage view {self.key!r} ({self.numel} elements at {self.offset}) ends past its "
          f"storage {self.root.key!r} ({root.size} elements)"
        )
      return root[self.offset : self.offset + self.numel]
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


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _check_ints(name: str, value: Any, length: int | None = None) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)) or not all(_is_int(v) for v in value):
    raise CheckpointFormatError(f"tensor {name} must be a tuple of ints, got {value!r:.200}")
  if len(value) > _MAX_NDIM:
    raise CheckpointFormatError(f"tensor {name} has {len(value)} dimensions (at most {_MAX_NDIM})")
  if length is not None and len(value) != length:
    raise CheckpointFormatError(f"tensor size and stride differ in length: {value!r}")
  return tuple(value)


def _pending(storage, offset, size, stride, dtype) -> _PendingTensor:
  if not isinstance(storage, _Storage):
    raise CheckpointFormatError(
      f"tensor storage must come from a persistent id, got {type(storage).__name__}"
    )
  size = _check_ints("size", size)
  stride = _check_ints("stride", stride, len(size))
  if not _is_int(offset) or offset < 0 or any(s < 0 for s in size + stride):
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
    raise CheckpointFormatError(f"_rebuild_tensor_v3 expects a torch dtype, got {dtype!r:.100}")
  return _pending(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
  del requires_grad, backward_hooks, unused  # an nn.Parameter is just its data here
  if not isinstance(data, _PendingTensor):
    raise CheckpointFormatError(f"_rebuild_parameter expects a tensor, got {type(data).__name__}")
  return data


_REBUILD_FUNCTIONS = {
  "_rebuild_tensor_v2": _rebuild_tensor_v2,
  "_rebuild_tensor_v3": _rebuild_tensor_v3,
  "_rebuild_parameter": _rebuild_parameter,
}


def _allowed_global(module: str, name: str) -> Any:
  """The allow-list; returns a fresh stand-in for an allowed global, else None."""
  if (module, name) == ("collections", "OrderedDict"):
    return _Callable(collections.OrderedDict)
  if module == "torch._utils" and name in _REBUILD_FUNCTIONS:
    return _Callable(_REBUILD_FUNCTIONS[name])
  if module == "torch" and name in _STORAGE_DTYPES:
    return _StorageType(name, _STORAGE_DTYPES[name])
  if module == "torch" and name in _TORCH_DTYPES:
    return _TorchDtype(name, _TORCH_DTYPES[name])
  if (module, name) in (("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")):
    return _StorageType(name, np.dtype("u1"))
  return None


class _BoundedReader:
  """A file as `pickletools.genops` reads it, where no read can ask for more than is left."""

  def __init__(self, file, end: int):
    self._file, self._position, self._end = file, file.tell(), end

  def _take(self, data: bytes) -> bytes:
    self._position += len(data)
    return data

  def read(self, n: int = -1) -> bytes:
    left = max(0, self._end - self._position)
    return self._take(self._file.read(left if n < 0 else min(n, left)))

  def readline(self) -> bytes:
    return self._take(self._file.readline(max(0, self._end - self._position)))

  def tell(self) -> int:
    return self._position


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def _scan_pickle(file, end: int, path: str) -> None:
  """Walks one pickle's opcodes from the file's position (building nothing), then seeks back.

  Refuses more than `MAX_PICKLE_OPS` opcodes, and memo indices the pickle cannot have reached:
  the C unpickler grows its memo table to twice the largest index it is given, so one
  `LONG_BINPUT 2**31` would cost 32 GiB.
  """
  start = file.tell()
  ops = 0
  for opcode, arg, position in pickletools.genops(_BoundedReader(file, end)):
    ops += 1
    if ops > MAX_PICKLE_OPS:
      raise CheckpointFormatError(
        f"{path}: the pickle has more than {MAX_PICKLE_OPS} opcodes; refused (a state dict needs "
        "about 20 per tensor)"
      )
    if opcode.name in _MEMO_PUTS and (not _is_int(arg) or not 0 <= arg <= ops):
      raise CheckpointFormatError(
        f"{path}: pickle memo index {arg!r} at byte {position} is beyond the {ops} opcodes read "
        "so far; refused (it would make the unpickler allocate a huge memo table)"
      )
  file.seek(start)


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
      raise UnsafeCheckpointError(f"{self._path}: refused persistent id {pid!r:.100}")
    kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage":
      raise UnsafeCheckpointError(f"{self._path}: refused persistent id of kind {kind!r:.100}")
    if self._legacy:
      if len(pid) != 6:
        raise CheckpointFormatError(f"{self._path}: malformed legacy storage id {pid!r:.200}")
      _, storage_type, key, _location, numel, view = pid
    else:
      if len(pid) != 5:
        raise CheckpointFormatError(f"{self._path}: malformed storage id {pid!r:.200}")
      _, storage_type, key, _location, numel = pid
      view = None
    if (
      not isinstance(storage_type, _StorageType)
      or not _is_int(numel)
      or numel < 0
      or not isinstance(key, (str, int))
    ):
      raise CheckpointFormatError(f"{self._path}: malformed storage id {pid!r:.200}")
    key = str(key)
    storage = self._storages.get(key)
    if storage is None:
      storage = self._storages[key] = _Storage(key, storage_type.dtype, numel)
    if view is None:
      return storage
    # A legacy storage view: (view_key, offset, view_size) into the root storage.
    if not (
      isinstance(view, tuple)
      and len(view) == 3
      and _is_int(view[1])
      and _is_int(view[2])
      and view[1] >= 0
      and view[2] >= 0
    ):
      raise CheckpointFormatError(f"{self._path}: malformed legacy storage view {view!r:.200}")
    view_key, offset, view_size = view
    return _Storage(str(view_key), storage.dtype, view_size, root=storage, offset=offset)


def _native(data: np.ndarray, big_endian: bool) -> np.ndarray:
  if big_endian and data.dtype.itemsize > 1 and data.dtype.kind in "fiuc":
    return data.view(data.dtype.newbyteorder(">")).astype(data.dtype.newbyteorder("="))
  return data


def _is_c_contiguous(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
  expected = 1
  for n, s in zip(reversed(size), reversed(stride)):
    if n != 1 and s != expected:
      return False
    expected *= n
  return True


_STAND_INS = (_Storage, _StorageType, _TorchDtype, _Callable)


class _Materializer:
  """Replaces every `_PendingTensor` in the unpickled tree by a numpy array, within budgets.

  An object the pickle references several times (its memo) is converted once and shared, so one
  tensor referenced thousands of times costs one array; the tree's size counts every reference
  (`MAX_OBJECTS`), which stops nested shared lists after linear work.
  """

  def __init__(self, path: str, storage_bytes: int):
    self.path = path
    self.copy_budget = 2 * storage_bytes + INFLATION_SLACK
    self.copied = 0
    self.objects = 0
    self.done: dict[int, Any] = {}  # id(unpickled object) -> converted object
    self.sizes: dict[int, int] = {}  # id(unpickled object) -> objects in its tree

  def fail(self, message: str):
    raise CheckpointFormatError(f"{self.path}: {message}")

  def count(self, n: int):
    self.objects += n
    if self.objects > MAX_OBJECTS:
      self.fail(
        f"the pickle expands to more than {MAX_OBJECTS} objects (counting each reference to a "
        "shared one); refused (nested shared containers, a 'billion laughs' file?)"
      )

  def __call__(self, obj: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
      self.fail(f"objects nested more than {MAX_DEPTH} deep (or a cycle); refused")
    if isinstance(obj, _STAND_INS):
      self.fail(f"a bare torch {type(obj).__name__[1:]} object is not supported (only tensors)")
    if not isinstance(obj, (dict, list, tuple, set, frozenset, _PendingTensor)):
      self.count(1)
      return obj
    key = id(obj)
    if key in self.done:
      self.count(self.sizes[key])
      return self.done[key]
    before = self.objects
    self.count(1)
    if isinstance(obj, _PendingTensor):
      out = self.tensor(obj)
    elif isinstance(obj, dict):
      out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
      for name, value in obj.items():
        if isinstance(name, (_PendingTensor, *_STAND_INS)):
          self.fail("a dict key is a tensor or storage; not a state dict")
        out[name] = self(value, depth + 1)
    elif isinstance(obj, list):
      out = [self(value, depth + 1) for value in obj]
    elif isinstance(obj, tuple):
      out = tuple(self(value, depth + 1) for value in obj)
    else:  # set / frozenset: only of plain values (tensors are unhashable as arrays)
      if any(isinstance(value, (_PendingTensor, *_STAND_INS)) for value in obj):
        self.fail("a set holds tensors or storages; not a state dict")
      self.count(len(obj))
      out = obj
    self.done[key], self.sizes[key] = out, self.objects - before
    return out

  def tensor(self, pending: _PendingTensor) -> np.ndarray:
    flat = pending.storage.array()
    size, stride, offset = pending.size, pending.stride, pending.offset
    where = f"tensor of size {size} (stride {stride}, offset {offset}) on storage " + repr(
      pending.storage.key
    )
    if pending.dtype != flat.dtype:  # v3: untyped (uint8) storage reinterpreted as the tensor dtype
      if flat.nbytes % pending.dtype.itemsize:
        self.fail(f"{where}: {flat.nbytes} bytes are not a whole number of {pending.dtype}")
      flat = flat.view(pending.dtype)
    numel = math.prod(size)
    if numel == 0:
      return np.zeros([0] * len(size), flat.dtype).reshape(size)
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if extent > flat.size:
      self.fail(f"{where} reads past the end of its storage ({flat.size} elements)")
    if _is_c_contiguous(size, stride):
      return flat[offset : offset + numel].reshape(size)  # a view: shares the storage's memory
    if numel > flat.size:
      self.fail(
        f"{where} has {numel} elements, more than its storage holds ({flat.size}): overlapping "
        "strides (a stride-0 'expanded' tensor) are refused, not copied"
      )
    self.copied += numel * flat.dtype.itemsize
    if self.copied > self.copy_budget:
      self.fail(
        f"copies of strided tensors exceed {self.copy_budget} bytes (twice the storages); refused"
      )
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
      flat[offset:], shape=size, strides=[s * item for s in stride], writeable=False
    )
    return np.array(view, copy=True, order="C")


def _materialize(result: Any, storages: dict[str, _Storage], path: str) -> Any:
  storage_bytes = sum(s.nbytes for s in storages.values())
  return _Materializer(path, storage_bytes)(result)


def _read_exactly(file, nbytes: int, what: str, path: str) -> np.ndarray:
  """`nbytes` from `file` into a new uint8 array, in bounded chunks (never more)."""
  out = np.empty(nbytes, np.uint8)
  view, pos = memoryview(out), 0
  while pos < nbytes:
    n = file.readinto(view[pos : pos + _READ_CHUNK])
    if not n:
      raise CheckpointFormatError(f"{path}: {what} is truncated: {pos} of {nbytes} bytes")
    pos += n
  return out


def _load_zip(path: str) -> Any:
  file_size = os.path.getsize(path)
  budget = MAX_INFLATION * file_size + INFLATION_SLACK
  with zipfile.ZipFile(path) as archive:
    names = set(archive.namelist())
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise CheckpointFormatError(
        f"{path}: zip has no single '<prefix>/data.pkl' record ({len(pickles)} found)"
      )
    prefix = pickles[0][: -len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in names:
      with archive.open(prefix + "byteorder") as record:
        big_endian = record.read(16).decode("ascii", "replace").strip() == "big"
    pickle_info = archive.getinfo(pickles[0])
    if pickle_info.file_size > budget:
      raise CheckpointFormatError(
        f"{path}: data.pkl declares {pickle_info.file_size} bytes, more than {MAX_INFLATION}x "
        f"the {file_size}-byte file; refused unread (a decompression bomb?)"
      )
    with archive.open(pickle_info) as record:
      data_pkl = io.BytesIO(_read_exactly(record, pickle_info.file_size, "data.pkl", path))
    _scan_pickle(data_pkl, pickle_info.file_size, path)
    storages: dict[str, _Storage] = {}
    result = _RestrictedUnpickler(data_pkl, path, storages, legacy=False).load()
    declared = sum(s.nbytes for s in storages.values())
    if pickle_info.file_size + declared > budget:
      raise CheckpointFormatError(
        f"{path}: the pickle declares {declared} bytes of storages, more than {MAX_INFLATION}x "
        f"the {file_size}-byte file; refused unread (a decompression bomb?)"
      )
    for key, storage in storages.items():
      record = f"{prefix}data/{key}"
      if record not in names:
        raise CheckpointFormatError(f"{path}: missing storage record {record!r}")
      info = archive.getinfo(record)
      if info.file_size < storage.nbytes:
        raise CheckpointFormatError(
          f"{path}: storage record {record!r} has {info.file_size} bytes, expected {storage.nbytes}"
        )
      with archive.open(info) as member:  # only the declared bytes, even if the record has more
        raw = _read_exactly(member, storage.nbytes, f"storage record {record!r}", path)
      storage.data = _native(raw.view(storage.dtype), big_endian)
  return _materialize(result, storages, path)


def _load_legacy(path: str) -> Any:
  file_size = os.path.getsize(path)
  with open(path, "rb") as f:

    def load(storages: dict[str, _Storage] | None = None) -> Any:
      _scan_pickle(f, file_size, path)
      return _RestrictedUnpickler(f, path, {} if storages is None else storages, True).load()

    if load() != _LEGACY_MAGIC:
      raise CheckpointFormatError(
        f"{path}: not a torch checkpoint (neither zip nor legacy magic number)"
      )
    load()  # protocol version
    sys_info = load()
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    storages: dict[str, _Storage] = {}
    result = load(storages)
    keys = load()
    if not isinstance(keys, list):
      raise CheckpointFormatError(f"{path}: malformed legacy storage key list")
    for key in keys:
      storage = storages.get(str(key))
      if storage is None:
        raise CheckpointFormatError(f"{path}: legacy storage key {key!r:.100} was never referenced")
      header = f.read(8)
      if len(header) != 8:
        raise CheckpointFormatError(f"{path}: legacy storage {key!r} is truncated")
      (numel,) = struct.unpack(">q" if big_endian else "<q", header)
      nbytes = numel * storage.dtype.itemsize
      if numel < storage.numel or nbytes > file_size - f.tell():
        raise CheckpointFormatError(
          f"{path}: legacy storage {key!r} declares {numel} elements ({nbytes} bytes): needs "
          f"{storage.numel}, and {file_size - f.tell()} bytes are left in the file"
        )
      raw = _read_exactly(f, nbytes, f"legacy storage {key!r}", path)
      storage.data = _native(raw.view(storage.dtype), big_endian)
  return _materialize(result, storages, path)


def load_torch_file(path: str | os.PathLike) -> Any:
  """Loads a PyTorch checkpoint as numpy arrays, without torch and without running its code.

  Args:
    path: a `.pth`/`.pt`/`.bin` file written by `torch.save` (zip or legacy format).

  Returns:
    The unpickled object (usually a dict or nested dicts such as `{"params_ema": {...}}`) with
    every tensor replaced by a C-contiguous numpy array of the same dtype (bfloat16 and
    float8 via `ml_dtypes`). `nn.Parameter`s become plain arrays. A contiguous tensor is a view
    of its storage (tensors saved as views of one storage share memory, as in torch); an object
    the pickle references several times comes back as one shared object.

  Raises:
    UnsafeCheckpointError: the pickle names a global outside the allow-list, or tries to set
      state on an allowed one.
    CheckpointFormatError: not a torch file, a tensor inconsistent with its storage, or over a
      budget (module docstring). Both are `WeightsError`s (`ValueError`s) naming the file.
    FileNotFoundError: `path` does not exist.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  try:
    return _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
  except WeightsError as err:
    if path in str(err):
      raise
    raise type(err)(f"{path}: {err}") from None
  except (FileNotFoundError, PermissionError):
    raise
  except Exception as err:  # a corrupt or foreign file (zipfile may fail a seek), said plainly
    detail = " ".join(str(err).split())[:300]  # one line, for the command-line tools
    raise CheckpointFormatError(
      f"{path}: cannot read as a torch checkpoint: {type(err).__name__}: {detail}"
    ) from err


def flatten_tensors(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """Flattens nested dicts of arrays into `{"a.b.c": array}` (non-array leaves are dropped)."""
  flat: dict[str, np.ndarray] = {}
  if isinstance(obj, np.ndarray):
    flat[prefix] = obj
  elif isinstance(obj, dict):
    for key, value in obj.items():
      flat.update(flatten_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
  return flat
