"""Convert a checkpoint to sr_jax's format, offline: `python -m sr_jax.tools.convert SRC DST`.

SRC: a torchvision/timm `.pth`, a `.safetensors` (PyTorch naming), or an sr_jax file; no torch
needed. DST: a `.safetensors` file of NNX-layout arrays with sr_jax metadata, loadable with
`create_backbone(arch, weights=DST)`. The architecture is detected from the keys (or given with
`--arch`) and the result is checked by loading it strictly into that backbone; `--arch none`
converts layouts generically (any PyTorch model) without that check. Prints one summary line.
"""

from __future__ import annotations

import argparse
import os
import sys

from flax import nnx
import numpy as np

from sr_jax import backbones
from sr_jax.weights import merge, porting, registry


def _params(arrays) -> float:
  return sum(int(np.prod(a.shape)) for a in arrays.values()) / 1e6


def convert(src: str, dst: str, arch: str | None = None, verify: bool = True) -> str:
  """Converts `src` (path or registry name) to sr_jax format at `dst`; returns the summary."""
  path = os.fspath(registry.resolve(src))
  checkpoint = porting.read_checkpoint(path)
  if arch is None:
    arch = checkpoint.metadata.get("sr_jax.arch") or backbones.detect_backbone(checkpoint.arrays)
    if arch is None:
      raise SystemExit(
        f"{path}: cannot detect the architecture from its keys; pass --arch "
        f"({', '.join(backbones.BACKBONES)}) or --arch none"
      )
  if arch == "none":
    arrays = (
      checkpoint.arrays if checkpoint.layout == "nnx" else porting.torch_to_nnx(checkpoint.arrays)
    )
    check = "not checked (--arch none)"
  else:
    arrays = backbones.backbone_arrays(arch, path)
    check = "not checked"
    if verify:  # strict load into an abstract model: no compute, lists every problem at once
      net = nnx.eval_shape(lambda: backbones.create_backbone(arch, head="fc.kernel" in arrays))
      check = merge.load_state(net, arrays, strict=True).summary()
  meta = {"sr_jax.source": os.path.basename(path), "sr_jax.source_sha256": registry.sha256_of(path)}
  if arch != "none":
    meta["sr_jax.arch"] = arch
  porting.save_sr_jax(dst, arrays, metadata=meta)
  return (
    f"converted {path} ({checkpoint.layout} layout, {len(checkpoint.arrays)} tensors) -> "
    f"{dst} (sr_jax format, arch {arch}, {len(arrays)} arrays, {_params(arrays):.2f}M "
    f"values); check: {check}"
  )


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m sr_jax.tools.convert",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("src", help="checkpoint file or registry name (e.g. torchvision:resnet50)")
  parser.add_argument("dst", help="output .safetensors path")
  parser.add_argument(
    "--arch",
    default=None,
    help=f"one of {', '.join(backbones.BACKBONES)}, or 'none' (default: detect)",
  )
  parser.add_argument("--no-verify", action="store_true", help="skip the strict load check")
  args = parser.parse_args(argv)
  if args.arch not in (None, "none", *backbones.BACKBONES):
    parser.error(f"--arch must be one of {', '.join(backbones.BACKBONES)} or none")
  print(convert(args.src, args.dst, arch=args.arch, verify=not args.no_verify))
  return 0


if __name__ == "__main__":
  sys.exit(main())
