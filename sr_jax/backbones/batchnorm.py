"""BatchNorm handling for pretrained backbones: frozen statistics, and folding for inference.

Backbones are built with `use_running_average=True`, so the loaded ImageNet statistics are used
and never updated (the usual choice when fine-tuning with small SR batches; config key
`model.encoder.freeze_bn`). Note that NNX's `module.train()` flips *every* BatchNorm to batch
statistics; call `set_bn_frozen(backbone, True)` after it to keep the backbone's statistics frozen.
"""

from __future__ import annotations

from flax import nnx
import jax.numpy as jnp

__all__ = ["Identity", "set_bn_frozen", "fold_batchnorm"]


class Identity(nnx.Module):
  """Stands in for a BatchNorm that was folded into its convolution."""

  def __call__(self, x):
    return x


def set_bn_frozen(module: nnx.Module, frozen: bool = True) -> nnx.Module:
  """Sets every BatchNorm in `module` to use running stats (`frozen`) or batch stats; in place."""
  for _, sub in nnx.iter_modules(module):
    if isinstance(sub, nnx.BatchNorm):
      sub.use_running_average = frozen
  return module


def _get(module: nnx.Module, name: str):
  for part in name.split("."):
    module = module[int(part)] if part.isdigit() else getattr(module, part)
  return module


def _set(module: nnx.Module, name: str, value) -> None:
  parent, _, last = name.rpartition(".")
  owner = _get(module, parent) if parent else module
  if last.isdigit():
    owner[int(last)] = value
  else:
    setattr(owner, last, value)


def _fold_pair(conv: nnx.Conv, bn: nnx.BatchNorm) -> None:
  scale = bn.scale[...] * jnp.reciprocal(jnp.sqrt(bn.var[...] + bn.epsilon))
  bias = bn.bias[...] - bn.mean[...] * scale
  if conv.bias is not None:
    bias = bias + conv.bias[...] * scale
  conv.kernel.set_value(conv.kernel[...] * scale)  # HWIO: output channels are the last axis
  conv.bias = nnx.Param(bias)
  conv.use_bias = True


def fold_batchnorm(module: nnx.Module) -> nnx.Module:
  """Returns a copy of `module` with each BatchNorm folded into the convolution before it.

  Every submodule that declares `conv_bn_pairs` (a tuple of `(conv_path, bn_path)` attribute
  paths, e.g. `("downsample.0", "downsample.1")`) gets `kernel *= gamma / sqrt(var + eps)`, a
  bias `beta - mean * gamma / sqrt(var + eps)`, and the BatchNorm replaced by `Identity`. The
  copy computes the same function as `module` in inference mode (running statistics) with fewer
  operations; it is meant for inference only (there are no statistics left to fine-tune).
  """
  folded = nnx.clone(module)
  for _, sub in list(nnx.iter_modules(folded)):
    for conv_path, bn_path in getattr(sub, "conv_bn_pairs", ()):
      try:
        conv, bn = _get(sub, conv_path), _get(sub, bn_path)
      except (AttributeError, TypeError):
        continue  # optional layer absent in this block (e.g. no downsample)
      if conv is None or not isinstance(bn, nnx.BatchNorm):
        continue
      _fold_pair(conv, bn)
      _set(sub, bn_path, Identity())
  return folded
