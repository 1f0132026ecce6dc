"""Convert a checkpoint to sr_jax's format, offline: `python -m sr_jax.tools.convert SRC DST`.

SRC: a file or registry name (torchvision/timm `.pth`, a PyTorch `.safetensors`, a Real-ESRGAN
`.pth` or ncnn `.param`, an sr_jax file); no torch needed. DST: a `.safetensors` file of
NNX-layout arrays with sr_jax metadata, loadable with `create_backbone(arch, weights=DST)` or
`load_pretrained_sr(DST)`. The architecture is detected from the file (or given with `--arch`)
and the result is checked by loading it strictly; `--arch=none` converts layouts generically (any
PyTorch model) without that check. Prints one summary line. Library: `sr_jax.models.convert`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys

from sr_jax.models import convert as convert_lib


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
    choices=(*convert_lib.ARCHS, "none"),
    help="the architecture, or 'none' for a generic layout conversion (default: detect)",
  )
  parser.add_argument(
    "--no_verify", "--no-verify", action="store_true", help="skip the strict load check"
  )
  args = parser.parse_args(argv)
  try:
    if not args.dst.endswith(".safetensors"):  # before the (slow) conversion, not after
      raise ValueError(f"{args.dst}: the output must be a .safetensors file")
    if (
      os.path.exists(args.dst) and os.path.exists(args.src) and os.path.samefile(args.src, args.dst)
    ):
      raise ValueError(f"{args.dst} is the source file itself; choose another output path")
    summary = convert_lib.convert(args.src, args.dst, arch=args.arch, verify=not args.no_verify)
  except (ValueError, OSError, pickle.UnpicklingError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(summary)
  return 0


if __name__ == "__main__":
  sys.exit(main())
