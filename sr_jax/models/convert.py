"""Convert any supported checkpoint to sr_jax's own format, offline and without torch.

`convert(src, dst)` reads `src` (a path or registry name: torchvision / timm `.pth`, a PyTorch
`.safetensors`, a Real-ESRGAN-family `.pth` or ncnn `.param`, an sr_jax file) and writes `dst`, a
`.safetensors` of NNX-layout arrays whose metadata names the architecture and its
hyperparameters, so loading it needs no detection. The architecture is detected (or given) and
the result is checked by loading it strictly into an abstract model of that architecture;
`arch="none"` converts layouts generically (any PyTorch model) without that check.

It lives in `models/` because it needs the architectures (backbones and SR networks); the file
formats it reads and writes are `sr_jax.weights`'.
"""

from __future__ import annotations

import os

from flax import nnx
import numpy as np

from sr_jax import backbones, utils
from sr_jax.models import pretrained
from sr_jax.weights import merge, porting, registry
from sr_jax.weights.checkpoint import Checkpoint, read_checkpoint, save_sr_jax

__all__ = ["ARCHS", "convert"]

ARCHS = (*backbones.BACKBONES, *pretrained.ARCHITECTURES)


def _detect(src: str, checkpoint: Checkpoint) -> str:
  if checkpoint.arch:
    return checkpoint.arch
  if src in registry.names() and registry.get(src).arch:
    return registry.get(src).arch
  if checkpoint.layout == "torch":
    if arch := backbones.detect_backbone(checkpoint.arrays):
      return arch
    try:
      return pretrained.infer_architecture(checkpoint.arrays)[0]
    except ValueError:
      pass
  raise ValueError(
    f"{checkpoint.path}: cannot detect the architecture from its keys; pass arch= "
    f"({', '.join(ARCHS)}) or arch='none'"
  )


def _num_values(arrays) -> float:
  return sum(int(np.prod(a.shape)) for a in arrays.values()) / 1e6


def convert(src: str, dst: str, arch: str | None = None, verify: bool = True) -> str:
  """Converts `src` (path or registry name) to sr_jax format at `dst`; returns a summary line.

  Raises:
    FileNotFoundError: `src` is neither a file nor a registry name.
    ValueError: unknown or undetectable architecture, or (with `verify`) arrays that do not fit
      the architecture (`merge.StateMismatchError`, listing every key).
  """
  if arch not in (None, "none", *ARCHS):
    raise ValueError(f"arch={arch!r} is unknown; known: {', '.join(ARCHS)}, or 'none'")
  path = os.fspath(registry.resolve(src))
  checkpoint = read_checkpoint(path)
  arch = arch or _detect(os.fspath(src), checkpoint)
  kwargs = {}
  check = "not checked"
  if arch == "none":
    arrays = checkpoint.arrays
    if checkpoint.layout == "torch":
      arrays = porting.torch_to_nnx(arrays)
    check = "not checked (arch none)"
  elif arch in backbones.BACKBONES:
    arrays = backbones.backbone_arrays(arch, path)
    if verify:  # strict load into an abstract model: no compute, lists every problem at once
      head = "fc.kernel" in arrays
      classes = arrays["fc.kernel"].shape[-1] if head else 1000
      net = nnx.eval_shape(lambda: backbones.create_backbone(arch, head=head, num_classes=classes))
      check = merge.load_state(net, arrays, strict=True).summary()
  else:
    arch, kwargs, arrays = pretrained.sr_arrays(path, arch)
    if verify:
      cls = pretrained.ARCHITECTURES[arch].module
      net = utils.eval_shape_module(lambda rngs: cls(**kwargs, rngs=rngs))
      check = merge.load_state(net, arrays, strict=True).summary()
  meta = {"sr_jax.source": os.path.basename(path), "sr_jax.source_sha256": registry.sha256_of(path)}
  save_sr_jax(dst, arrays, arch=None if arch == "none" else arch, arch_kwargs=kwargs, metadata=meta)
  return (
    f"converted {path} ({checkpoint.layout} layout, {len(checkpoint.arrays)} tensors) -> "
    f"{dst} (sr_jax format, arch {arch}, {len(arrays)} arrays, {_num_values(arrays):.2f}M "
    f"values); check: {check}"
  )
