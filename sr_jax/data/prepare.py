"""Command line: folders of HR (and paired LR) images -> an ArrayRecord TFDS dataset.

  .venv/bin/python -m sr_jax.data.prepare --name=div2k_sub_x4 --data_dir=/data/tfds \\
      --hr_dir=DIV2K_train_HR [--lr_dir=DIV2K_train_LR_bicubic/X4 --scale=4] \\
      [--val_hr_dir=DIV2K_valid_HR [--val_lr_dir=...]] [--crop_size=480 --step=240 --thresh_size=0]

Read it back with --config.data.source=tfds --config.data.tfds_name=NAME
--config.data.tfds_data_dir=DIR. What is written (features, sub-images, encodings): tfds_writer.
"""

import argparse
import os
import sys
from typing import Sequence

from absl import logging

from sr_jax.data import tfds_writer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m sr_jax.data.prepare",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--name", required=True, help="dataset name, e.g. div2k_sub_x4")
  parser.add_argument(
    "--data_dir",
    default=os.path.join("~", "tensorflow_datasets"),
    help="TFDS data directory (default ~/tensorflow_datasets)",
  )
  parser.add_argument("--hr_dir", required=True, help="folder of HR training images (recursive)")
  parser.add_argument("--lr_dir", help="folder of the paired LR training images")
  parser.add_argument("--scale", type=int, default=0, help="SR factor of the LR images")
  parser.add_argument("--val_hr_dir", help="folder of HR validation images (split 'validation')")
  parser.add_argument("--val_lr_dir", help="folder of the paired LR validation images")
  parser.add_argument(
    "--crop_size", type=int, default=0, help="sub-image side (HR pixels); 0 = whole images"
  )
  parser.add_argument("--step", type=int, default=0, help="sub-image stride; 0 = crop_size // 2")
  parser.add_argument(
    "--thresh_size",
    type=int,
    default=0,
    help="add an edge-flush window when more than this many pixels are left over",
  )
  parser.add_argument(
    "--num_workers",
    type=int,
    default=min(8, os.cpu_count() or 1),
    help="processes decoding and encoding images",
  )
  parser.add_argument(
    "--encoding",
    default="png",
    choices=tfds_writer.TFDS_ENCODINGS,
    help="png: lossless, compact; raw: uint8 pixels, larger but ~10x faster to read",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  logging.set_verbosity(logging.INFO)  # the per-split summary lines
  import tensorflow_datasets as tfds  # slow import

  tfds.disable_progress_bar()  # our summary lines say what was written
  try:
    counts = tfds_writer.write_tfds_dataset(
      args.name,
      args.data_dir,
      args.hr_dir,
      args.lr_dir,
      args.scale,
      args.val_hr_dir,
      args.val_lr_dir,
      tfds_writer.SubImageOptions(args.crop_size, args.step, args.thresh_size),
      args.num_workers,
      args.overwrite,
      args.encoding,
    )
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  total = sum(c.get("examples", 0) for c in counts.values())
  data_dir = os.path.expanduser(args.data_dir)
  paired = " --config.data.degradation=paired" if args.lr_dir else ""
  print(
    f"wrote {total} examples of {args.name!r} to {data_dir}; read with "
    f"--config.data.source=tfds --config.data.tfds_name={args.name} "
    f"--config.data.tfds_data_dir={data_dir}{paired}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
