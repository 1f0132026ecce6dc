"""Checkpoint files -> flat arrays in NNX layout: PyTorch layouts, safetensors, sr_jax's format.

Three file kinds, chosen by content:
- `.pth`/`.pt`/`.bin`: a torch pickle (read by `torch_pickle`, no torch), PyTorch layout;
- `.safetensors` without sr_jax metadata: timm / Hugging Face checkpoints, PyTorch layout;
- `.safetensors` with metadata `sr_jax.format`: sr_jax's own converted checkpoints, whose keys
  and layouts are already NNX (`merge.flatten_state` keys), so loading is a plain copy.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable, Mapping

import numpy as np

from sr_jax.weights import torch_pickle

__all__ = [
  "Checkpoint",
  "read_checkpoint",
  "save_sr_jax",
  "torch_to_nnx",
  "unwrap_state_dict",
  "strip_underscores",
  "SR_JAX_FORMAT",
]

SR_JAX_FORMAT = "1"
_WRAPPER_KEYS = ("state_dict", "model", "params_ema", "params", "model_state_dict", "net")
_TORCH_PARAM_NAMES = {"running_mean": "mean", "running_var": "var", "bias": "bias"}
_DROPPED = ("num_batches_tracked",)  # a BatchNorm step counter, not a weight


@dataclasses.dataclass
class Checkpoint:
  """Arrays read from a file: `layout` is "torch" (needs `torch_to_nnx`) or "nnx"."""

  arrays: dict[str, np.ndarray]
  layout: str
  path: str
  metadata: dict[str, str] = dataclasses.field(default_factory=dict)


def unwrap_state_dict(obj: Any, path: str = "") -> dict[str, np.ndarray]:
  """Finds the flat `{key: array}` state dict inside a loaded torch checkpoint.

  Accepts a flat dict, or a dict wrapping one under a usual key (`state_dict`, `model`,
  `params_ema`, `params`, ...; first found wins); strips a DataParallel `module.` prefix.
  """
  if not isinstance(obj, dict):
    raise ValueError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
  if not any(isinstance(v, np.ndarray) for v in obj.values()):
    for key in _WRAPPER_KEYS:
      if isinstance(obj.get(key), dict):
        return unwrap_state_dict(obj[key], path)
    raise ValueError(
      f"{path}: no tensors at the top level and none of the keys {_WRAPPER_KEYS} "
      f"holds a state dict (keys: {list(obj)[:10]})"
    )
  arrays = torch_pickle.flatten_tensors(obj)
  if arrays and all(k.startswith("module.") for k in arrays):
    arrays = {k[len("module.") :]: v for k, v in arrays.items()}
  return arrays


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
  """Reads a checkpoint file into flat numpy arrays, recording their layout."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  if path.endswith(".safetensors"):
    from safetensors import safe_open  # lazy: only this file kind needs it

    with safe_open(path, framework="np") as f:
      metadata = dict(f.metadata() or {})
      arrays = {key: f.get_tensor(key) for key in f.keys()}
    layout = "nnx" if metadata.get("sr_jax.format") else "torch"
    return Checkpoint(arrays, layout, path, metadata)
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      return Checkpoint({k: data[k] for k in data.files}, "nnx", path)
  return Checkpoint(unwrap_state_dict(torch_pickle.load_torch_file(path), path), "torch", path)


def save_sr_jax(
  path: str | os.PathLike,
  arrays: Mapping[str, np.ndarray],
  *,
  metadata: Mapping[str, str] | None = None,
) -> pathlib.Path:
  """Writes sr_jax's own format: a `.safetensors` file of NNX-layout arrays + metadata."""
  from safetensors.numpy import save_file

  path = pathlib.Path(path)
  if path.suffix != ".safetensors":
    raise ValueError(f"{path}: sr_jax checkpoints are .safetensors files")
  meta = {"sr_jax.format": SR_JAX_FORMAT, "sr_jax.layout": "nnx"}
  meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata=meta)
  os.replace(tmp, path)
  return path


def strip_underscores(module_path: str) -> str:
  """`_blocks.3._bn1` -> `blocks.3.bn1` (lukemelas EfficientNet names -> sr_jax names)."""
  return ".".join(part.lstrip("_") or part for part in module_path.split("."))


def _torch_weight(array: np.ndarray) -> tuple[str, np.ndarray]:
  if array.ndim == 1:
    return "scale", array  # a norm layer's affine weight
  if array.ndim == 2:
    return "kernel", array.T  # Linear [out, in] -> [in, out]
  # ConvNd [out, in/groups, *spatial] -> [*spatial, in/groups, out]
  return "kernel", np.transpose(array, (*range(2, array.ndim), 1, 0))


def torch_to_nnx(
  state_dict: Mapping[str, np.ndarray], *, rename: Callable[[str], str] | None = None
) -> dict[str, np.ndarray]:
  """Converts a PyTorch state dict (names and layouts) to NNX keys and layouts.

  `weight` becomes `kernel` (conv `[O, I, kh, kw] -> [kh, kw, I, O]`, linear transposed) or, when
  1-D, a norm layer's `scale`; `running_mean/var` become `mean/var`; `num_batches_tracked` is
  dropped. Embedding tables (2-D `weight`) are not distinguished from linear layers.

  Args:
    state_dict: flat `{torch_key: array}`.
    rename: maps the module part of each key (before the last dot) to the NNX module path,
      e.g. `strip_underscores`.

  Returns:
    Flat `{nnx_key: array}`, C-contiguous.
  """
  out: dict[str, np.ndarray] = {}
  for key, array in state_dict.items():
    module_path, _, name = key.rpartition(".")
    if name in _DROPPED:
      continue
    if rename is not None and module_path:
      module_path = rename(module_path)
    if name == "weight":
      name, array = _torch_weight(np.asarray(array))
    else:
      name = _TORCH_PARAM_NAMES.get(name, name)
    out[f"{module_path}.{name}" if module_path else name] = np.ascontiguousarray(array)
  return out
