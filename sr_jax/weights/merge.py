"""Put a flat `{dotted_key: array}` into an NNX module's state, with one complete report.

Keys are the module's variable paths joined by dots (list indices as numbers), e.g.
`layer1.0.conv1.kernel`, `bn1.mean`: exactly what `flatten_state(module)` returns. Arrays must
already be in NNX layout (see `sr_jax.weights.porting` for PyTorch layouts).

    report = load_state(model, arrays, dont_load=("fc.*",), strict=True)
    print(report)  # loaded / missing / unexpected / shape mismatches / skipped, all at once
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from typing import Iterable, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax.weights.errors import WeightsError

__all__ = [
  "LoadReport",
  "StateMismatchError",
  "flatten_state",
  "init_abstract",
  "load_state",
  "matches_any",
]


@dataclasses.dataclass
class LoadReport:
  """What `load_state` did. Keys not in `loaded` kept their initial value."""

  loaded: list[str] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)  # in the module, not in the arrays
  unexpected: list[str] = dataclasses.field(
    default_factory=list
  )  # in the arrays, not in the module
  mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(
    default_factory=list
  )  # (key, module shape, array shape)
  skipped: list[str] = dataclasses.field(default_factory=list)  # matched a dont_load pattern
  source: str = ""

  @property
  def ok(self) -> bool:
    """True when every module variable was loaded or deliberately skipped."""
    return not (self.missing or self.unexpected or self.mismatched)

  @property
  def left_at_init(self) -> list[str]:
    """Module variables that kept their initial value (missing, mismatched or skipped)."""
    mismatched = [key for key, _, _ in self.mismatched]
    return sorted(set(self.missing) | set(mismatched) | self._module_skipped)

  _module_skipped: set[str] = dataclasses.field(default_factory=set, repr=False)

  def summary(self) -> str:
    """One line: counts of each category."""
    where = f"{self.source}: " if self.source else ""
    return (
      f"{where}loaded {len(self.loaded)}, missing {len(self.missing)}, unexpected "
      f"{len(self.unexpected)}, shape mismatches {len(self.mismatched)}, skipped "
      f"{len(self.skipped)}"
    )

  def __str__(self) -> str:
    lines = [self.summary()]
    if self.missing:
      lines.append("missing (left at init): " + ", ".join(self.missing))
    if self.unexpected:
      lines.append("unexpected (not in module): " + ", ".join(self.unexpected))
    for key, want, got in self.mismatched:
      lines.append(f"shape mismatch (left at init): {key}: module {want}, checkpoint {got}")
    if self.skipped:
      lines.append("skipped by dont_load: " + ", ".join(self.skipped))
    return "\n".join(lines)


class StateMismatchError(ValueError):
  """Strict loading found missing/unexpected/mismatched keys; `.report` lists all of them."""

  def __init__(self, report: LoadReport):
    super().__init__(f"checkpoint does not match the module (nothing was loaded):\n{report}")
    self.report = report


def _key(path: tuple) -> str:
  return ".".join(str(part) for part in path)


def _variables(module: nnx.Module) -> dict[str, nnx.Variable]:
  # RNG state (keys, counters) is not a weight: never saved, never loaded.
  state = nnx.state(module, nnx.Not(nnx.RngState))
  return {_key(path): var for path, var in nnx.to_flat_state(state)}


def flatten_state(module: nnx.Module) -> dict[str, np.ndarray]:
  """All weights and statistics of `module` as `{dotted_key: np.ndarray}` (no RNG state)."""
  return {key: np.asarray(var.get_value()) for key, var in _variables(module).items()}


def matches_any(key: str, patterns: Iterable[str]) -> bool:
  """True if `key` matches one of `patterns`, each a glob (`fc.*`) or a regex (`fc\\..*`)."""
  for pattern in patterns:
    if fnmatch.fnmatchcase(key, pattern):
      return True
    try:
      if re.fullmatch(pattern, key):
        return True
    except re.error:
      pass  # not a valid regex: it was meant as a glob only
  return False


def _never_cast(array_dtype, variable_dtype) -> bool:
  """An int / bool / complex (or non-numeric) array into a float variable: a wrong file or key,
  not a precision change (float16 / bfloat16 / float64 -> float32 is fine)."""
  return jnp.issubdtype(variable_dtype, jnp.floating) and not jnp.issubdtype(
    array_dtype, jnp.floating
  )


def load_state(
  module: nnx.Module,
  arrays: Mapping[str, np.ndarray],
  *,
  dont_load: Iterable[str] = (),
  strict: bool = True,
  source: str = "",
) -> LoadReport:
  """Loads `arrays` into `module` in place and reports every key it could not place.

  Args:
    module: the NNX module (already initialised; its shapes and dtypes are the reference).
    arrays: `{dotted_key: array}` in NNX layout. Float values are cast to the variable's dtype;
      an int / bool / complex array for a float variable raises `WeightsError` (never cast).
    dont_load: glob or regex patterns (full match) of keys to leave at init, e.g. `("fc.*",)`;
      they apply to module keys and checkpoint keys alike.
    strict: if True, any missing, unexpected or shape-mismatched key raises
      `StateMismatchError` listing all of them, and the module is left untouched. If False,
      whatever fits is loaded and the rest is only reported.
    source: a name for messages (e.g. the checkpoint path).

  Returns:
    A `LoadReport`.
  """
  dont_load = tuple(dont_load)
  variables = _variables(module)
  report = LoadReport(source=source)
  staged: dict[str, np.ndarray] = {}
  uncastable: list[str] = []
  for key in sorted(arrays):
    value = np.asarray(arrays[key])
    if matches_any(key, dont_load):
      report.skipped.append(key)
    elif key not in variables:
      report.unexpected.append(key)
    elif tuple(value.shape) != tuple(np.shape(variables[key].get_value())):
      report.mismatched.append(
        (key, tuple(np.shape(variables[key].get_value())), tuple(value.shape))
      )
    elif _never_cast(value.dtype, variables[key].get_value().dtype):
      uncastable.append(f"{key} ({value.dtype})")
    else:
      staged[key] = value
  if uncastable:
    where = f"{source}: " if source else ""
    raise WeightsError(
      f"{where}refused to cast int/bool/complex arrays into float parameters: "
      + ", ".join(uncastable[:8])
      + (f" and {len(uncastable) - 8} more" if len(uncastable) > 8 else "")
    )
  mismatched = {key for key, _, _ in report.mismatched}
  for key in sorted(variables):
    if key in staged or key in mismatched:
      continue
    if matches_any(key, dont_load):
      report._module_skipped.add(key)
      if key not in report.skipped:
        report.skipped.append(key)
    else:
      report.missing.append(key)
  if strict and not report.ok:
    raise StateMismatchError(report)
  for key, value in staged.items():
    var = variables[key]
    var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))
    report.loaded.append(key)
  return report


# Flax's defaults, for owners that keep no `<name>_init` (nnx.Linear, BatchNorm statistics).
_DEFAULT_INIT = {
  "kernel": jax.nn.initializers.lecun_normal(),
  "bias": jax.nn.initializers.zeros,
  "scale": jax.nn.initializers.ones,
  "mean": jax.nn.initializers.zeros,
  "var": jax.nn.initializers.ones,
}


def _owner(module: nnx.Module, path: tuple) -> object:
  for part in path:
    module = module[part] if isinstance(part, int) else getattr(module, part)
  return module


def init_abstract(module: nnx.Module, rngs: nnx.Rngs) -> list[str]:
  """Initialises, in place, every variable of `module` that is still abstract.

  Pairs with `nnx.eval_shape`: build the module abstractly (no compute), `load_state` the
  checkpoint, then give only what was left (e.g. a new head) a real value, using the owner
  module's own `<name>_init` where it keeps one (nnx.Conv, BatchNorm), else Flax's default
  (kernel: lecun normal, bias 0, scale 1, running mean/var 0/1). Random init of a big network
  compiles one program per weight shape, which costs seconds on CPU; this skips that for
  everything the checkpoint provides.

  Returns:
    The dotted keys it initialised.
  """
  state = nnx.state(module, nnx.Not(nnx.RngState))
  filled = []
  for path, var in nnx.to_flat_state(state):
    value = var.get_value()
    if not isinstance(value, jax.ShapeDtypeStruct):
      continue
    owner, name = _owner(module, path[:-1]), path[-1]
    init = getattr(owner, f"{name}_init", None) or _DEFAULT_INIT.get(name)
    if init is None:
      raise ValueError(
        f"init_abstract: no initializer for {_key(path)} "
        f"({type(owner).__name__} has no '{name}_init')"
      )
    var.set_value(init(rngs.params(), value.shape, value.dtype))
    filled.append(_key(path))
  return filled
