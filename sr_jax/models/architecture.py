"""What makes an SR architecture loadable from the community's PyTorch files.

Each architecture module (`models/realesrgan.py`, `models/swinir.py`, ...) declares one
`Architecture`: its Flax NNX class, the state-dict keys that identify it, and a `detect` function
that reads its hyperparameters (scale included) from a PyTorch state dict, as spandrel does.
`models/pretrained.py` lists them in one table and tries them in order.
"""

import dataclasses
import re
from typing import Callable, Mapping

from flax import nnx
import numpy as np

StateDict = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Architecture:
  """An SR architecture of `models/`.

  Attributes:
    name: registry / config name (`model.name`), e.g. "swinir".
    module: the class, built as `module(scale=..., **hyperparameters, rngs=rngs)`; it keeps every
      hyperparameter `detect` returns as an attribute of the same name (what loading checks a file
      against), has `scale` (its output factor) and `port_rules` (PyTorch -> NNX).
    signature: keys whose presence in a PyTorch state dict marks this architecture; `detect` is
      called only when all are present, and they are what an "unknown architecture" error lists.
    detect: state dict -> hyperparameters (with `scale`); raises ValueError naming the key when the
      dict has the signature but is inconsistent (truncated, an unsupported variant).
    config_keys: the `model.*` keys `create_model` passes to `module` (the scale is `data.scale`).
  """

  name: str
  module: type[nnx.Module]
  signature: tuple[str, ...]
  detect: Callable[[StateDict], dict]
  config_keys: tuple[str, ...]

  def matches(self, state: StateDict) -> bool:
    return all(key in state for key in self.signature)

  def build(self, scale: int, rngs: nnx.Rngs, **hyperparameters) -> nnx.Module:
    return self.module(scale=scale, **hyperparameters, rngs=rngs)


def indices(state: StateDict, pattern: str) -> list[int]:
  """The sorted integers N of the keys matching `pattern` (a regex with one group), e.g.
  `indices(state, r"body\\.(\\d+)\\.weight")`: how many blocks a state dict holds."""
  return sorted({int(m.group(1)) for key in state if (m := re.fullmatch(pattern, key))})


def count(state: StateDict, pattern: str) -> int:
  """How many blocks: 1 + the largest index of `pattern` (0 if no key matches)."""
  found = indices(state, pattern)
  return found[-1] + 1 if found else 0


def shape(state: StateDict, key: str) -> tuple[int, ...]:
  """`state[key].shape`, or a ValueError naming the missing key (a truncated state dict)."""
  if key not in state:
    raise ValueError(f"missing key {key!r}")
  return tuple(np.shape(state[key]))


def scale_and_out_channels(state: StateDict, key: str, in_channels: int) -> tuple[int, int]:
  """spandrel's `get_scale_and_output_channels` for the pixel-shuffle conv `key`: its outputs are
  scale**2 * out, out preferably the input channels, else 3, 4, 1."""
  outputs = shape(state, key)[0]
  for c in (in_channels, 3, 4, 1):
    if outputs % c == 0 and np.sqrt(outputs // c) == int(np.sqrt(outputs // c)):
      return int(np.sqrt(outputs // c)), c
  raise ValueError(f"{key}: {outputs} pixel-shuffle outputs is not scale**2 * (1, 3 or 4)")
