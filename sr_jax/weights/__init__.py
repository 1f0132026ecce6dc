"""Weight files, the registry of well-known checkpoints, and loading into NNX modules.

Architecture-agnostic: the architectures (`sr_jax.models`, `sr_jax.backbones`) bring their own
`porting.PortRules`; this package knows file formats and layouts.

- `checkpoint.read_checkpoint`: any file (torch pickle `.pth/.pt/.ckpt/.bin` read without
  torch, `.safetensors`, `.npz`, ncnn `.param`) -> flat arrays, with one state-dict unwrapper.
- `registry.resolve`: registry name or path -> local file (download once, sha256-checked).
- `porting.torch_to_nnx`: PyTorch names and layouts -> NNX, with per-architecture rules.
- `merge.load_state` / `merge.flatten_state`: flat arrays <-> an NNX module's state.
- `convert.convert`: any supported file -> sr_jax's own `.safetensors` (imports the
  architectures, so it is not imported here).

Every file that is corrupt, hostile, over a reader's budget or not what it claims raises a
`WeightsError` (a `ValueError`) whose message names the file, in one line.
"""

from sr_jax.weights.checkpoint import Checkpoint, read_checkpoint, save_sr_jax, unwrap_state_dict
from sr_jax.weights.errors import WeightsError
from sr_jax.weights.merge import LoadReport, StateMismatchError, flatten_state, load_state
from sr_jax.weights.porting import PortRules, torch_to_nnx
from sr_jax.weights.registry import register, resolve
from sr_jax.weights.torch_pickle import UnsafeCheckpointError, load_torch_file

__all__ = [
  "Checkpoint",
  "LoadReport",
  "PortRules",
  "StateMismatchError",
  "UnsafeCheckpointError",
  "WeightsError",
  "flatten_state",
  "load_state",
  "load_torch_file",
  "read_checkpoint",
  "register",
  "resolve",
  "save_sr_jax",
  "torch_to_nnx",
  "unwrap_state_dict",
]
