"""PyTorch state dicts -> NNX keys and layouts: one `torch_to_nnx`, with per-architecture rules.

The generic mapping covers what most networks need: `weight` becomes `kernel` (conv
`[O, I, *k] -> [*k, I, O]`, linear transposed) or, when 1-D, a norm layer's `scale`;
`running_mean/var` become `mean/var`; `num_batches_tracked` is dropped; other leaves keep their
name. What differs per architecture is a `PortRules`, declared next to the architecture (as its
class attribute `port_rules`), never here:

    PortRules(rename=strip_underscores)                     # lukemelas EfficientNet names
    PortRules(vector_weight="slope")                        # PReLU slopes, not norm scales
    PortRules(overrides={"*.embed.weight": keep("embedding")},    # nn.Embedding: no transpose
              drop=("*.relative_position_index",))           # buffers the module recomputes
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Callable, Mapping

import numpy as np

__all__ = ["PortRules", "as_kernel", "keep", "strip_underscores", "torch_to_nnx"]

# Turns one PyTorch array into (NNX leaf name, array in NNX layout).
LeafRule = Callable[[np.ndarray], tuple[str, np.ndarray]]

_TORCH_LEAF_NAMES = {"running_mean": "mean", "running_var": "var"}
_ALWAYS_DROPPED = ("num_batches_tracked",)  # a BatchNorm step counter, not a weight


def as_kernel(array: np.ndarray) -> tuple[str, np.ndarray]:
  """Linear `[out, in] -> [in, out]`; ConvNd `[out, in/groups, *k] -> [*k, in/groups, out]`."""
  if array.ndim < 2:  # no kernel (a damaged file): kept, so the strict load reports its shape
    return "kernel", array
  if array.ndim == 2:
    return "kernel", array.T
  return "kernel", np.transpose(array, (*range(2, array.ndim), 1, 0))


def keep(leaf: str) -> LeafRule:
  """A rule that renames the leaf to `leaf` and keeps the array's layout (embeddings, tables)."""
  return lambda array: (leaf, array)


@dataclasses.dataclass(frozen=True)
class PortRules:
  """How one architecture's PyTorch state dict maps onto its NNX module.

  Attributes:
    rename: maps the module part of each key (before the last dot) to the NNX module path.
    vector_weight: the NNX name of a 1-D `weight`: "scale" (norm layers) or "slope" (PReLU).
    overrides: glob on the PyTorch key (before `rename`) -> rule; the first match wins over the
      generic mapping.
    drop: globs of PyTorch keys that hold no weight of the NNX module (recomputed buffers).
  """

  rename: Callable[[str], str] | None = None
  vector_weight: str = "scale"
  overrides: Mapping[str, LeafRule] = dataclasses.field(default_factory=dict)
  drop: tuple[str, ...] = ()

  def leaf(self, key: str, name: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    for pattern, rule in self.overrides.items():
      if fnmatch.fnmatchcase(key, pattern):
        return rule(array)
    if name != "weight":
      return _TORCH_LEAF_NAMES.get(name, name), array
    if array.ndim == 1:
      return self.vector_weight, array
    return as_kernel(array)


def strip_underscores(module_path: str) -> str:
  """`_blocks.3._bn1` -> `blocks.3.bn1` (lukemelas EfficientNet names -> sr_jax names)."""
  return ".".join(part.lstrip("_") or part for part in module_path.split("."))


def torch_to_nnx(
  state_dict: Mapping[str, np.ndarray], rules: PortRules | None = None
) -> dict[str, np.ndarray]:
  """Converts a PyTorch state dict (names and layouts) to NNX keys and layouts.

  Args:
    state_dict: flat `{torch_key: array}`.
    rules: the architecture's `PortRules`; default: the generic mapping only.

  Returns:
    Flat `{nnx_key: array}`, C-contiguous.
  """
  rules = rules or PortRules()
  out: dict[str, np.ndarray] = {}
  for key, array in state_dict.items():
    module_path, _, name = key.rpartition(".")
    if name in _ALWAYS_DROPPED or any(fnmatch.fnmatchcase(key, p) for p in rules.drop):
      continue
    name, array = rules.leaf(key, name, np.asarray(array))
    if rules.rename is not None and module_path:
      module_path = rules.rename(module_path)
    # asarray(order="C"), not ascontiguousarray: that makes a 0-d scalar 1-d.
    out[f"{module_path}.{name}" if module_path else name] = np.asarray(array, order="C")
  return out
