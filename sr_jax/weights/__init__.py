"""Checkpoint reading, the registry of well-known checkpoints, and loading into NNX modules.

- `torch_pickle.load_torch_file`: read a `.pth` without torch (restricted unpickler).
- `registry.resolve`: registry name or path -> local file (download once, sha256-checked).
- `porting.read_checkpoint` / `porting.torch_to_nnx`: files and PyTorch layouts -> NNX arrays.
- `merge.load_state` / `merge.flatten_state`: flat arrays <-> an NNX module's state.
"""

from sr_jax.weights.merge import LoadReport, StateMismatchError, flatten_state, load_state
from sr_jax.weights.porting import Checkpoint, read_checkpoint, save_sr_jax, torch_to_nnx
from sr_jax.weights.registry import register, resolve
from sr_jax.weights.torch_pickle import UnsafeCheckpointError, load_torch_file

__all__ = [
  "Checkpoint",
  "LoadReport",
  "StateMismatchError",
  "UnsafeCheckpointError",
  "flatten_state",
  "load_state",
  "load_torch_file",
  "read_checkpoint",
  "register",
  "resolve",
  "save_sr_jax",
  "torch_to_nnx",
]
