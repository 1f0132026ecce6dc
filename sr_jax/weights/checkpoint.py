"""Checkpoint files -> flat numpy arrays: every file format sr_jax reads, behind `read_checkpoint`.

The format is chosen by the file name:
- `.safetensors` without sr_jax metadata: timm / Hugging Face / community files, PyTorch layout;
- `.safetensors` with metadata `sr_jax.format`: sr_jax's own converted files, NNX layout
  (`merge.flatten_state` keys), so loading is a plain copy;
- `.npz`: NNX layout;
- `.param` (or a `.bin` with a `.param` beside it): an ncnn Real-ESRGAN-family graph, mapped
  onto the official PyTorch key names (`ncnn.read_ncnn`);
- anything else (`.pth`, `.pt`, `.ckpt`, `.bin`): a torch pickle, read without torch
  (`torch_pickle`) and unwrapped by `unwrap_state_dict`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping

import numpy as np

from sr_jax.weights import ncnn, torch_pickle

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
    raise ValueError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
  if not any(isinstance(v, np.ndarray) for v in obj.values()):
    for key in WRAPPER_KEYS:
      if isinstance(obj.get(key), dict):
        return unwrap_state_dict(obj[key], path)
    raise ValueError(
      f"{path}: no tensors at the top level and none of the keys {WRAPPER_KEYS} "
      f"holds a state dict (keys: {list(obj)[:10]})"
    )
  arrays = torch_pickle.flatten_tensors(obj)
  if arrays and all(k.startswith("module.") for k in arrays):
    arrays = {k[len("module.") :]: v for k, v in arrays.items()}
  return arrays


def _read_safetensors(path: str) -> Checkpoint:
  from safetensors import safe_open  # lazy: only this file kind needs it

  with safe_open(path, framework="np") as f:
    metadata = dict(f.metadata() or {})
    arrays = {key: f.get_tensor(key) for key in f.keys()}
  if not metadata.get("sr_jax.format"):
    return Checkpoint(arrays, "torch", path, metadata)
  kwargs = json.loads(metadata.get("sr_jax.arch_kwargs", "{}"))
  return Checkpoint(arrays, "nnx", path, metadata, metadata.get("sr_jax.arch"), kwargs)


def _read_ncnn(param_path: str) -> Checkpoint:
  model = ncnn.read_ncnn(param_path)
  metadata = {
    "ncnn.weight_dtype": model.weight_dtype,
    "ncnn.input_blob": model.input_blob,
    "ncnn.output_blob": model.output_blob,
  }
  return Checkpoint(model.state, "torch", param_path, metadata, model.arch, model.arch_kwargs)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
  """Reads any supported checkpoint file into flat numpy arrays (see the module docstring)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  stem, ext = os.path.splitext(path)
  if ext == ".safetensors":
    return _read_safetensors(path)
  if ext == ".npz":
    with np.load(path, allow_pickle=False) as data:
      return Checkpoint({k: data[k] for k in data.files}, "nnx", path)
  if ext == ".param":
    return _read_ncnn(path)
  if ext == ".bin" and os.path.isfile(stem + ".param"):
    return _read_ncnn(stem + ".param")  # an ncnn .bin was named: the graph is in the .param
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
