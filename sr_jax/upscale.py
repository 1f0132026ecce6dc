"""Upscales images with a trained or pretrained SR network, tile by tile.

  python -m sr_jax.upscale --workdir=W [--checkpoint=latest|best|STEP] --input=FILE_OR_DIR \
      --output=DIR
  python -m sr_jax.upscale --weights=PATH_OR_NAME --input=... --output=...  (load_pretrained_sr)
  python -m sr_jax.upscale --model=bicubic --scale=4 --input=... --output=...
  options: --tile=N (LR core side, 0 = whole image) --tile_overlap=M --batch_size=B --ext=png

What is kept (see `sr_jax.data.read_image_full`):
  - EXIF orientation is applied; the output is written upright, without the orientation tag.
  - Grayscale goes through the network as RGB and comes back as one channel (BT.601 luma).
  - 16-bit input (PNG, TIFF) gives 16-bit output where the format allows it (PNG, TIFF).
  - Alpha is upscaled separately with bicubic interpolation (PIL), not through the network: the
    networks are trained on photos, and a mask needs smooth, not hallucinated, edges.
  - The ICC profile is copied.
The output format follows the output file's extension: the input's by default, `--ext` to change
it. JPEG cannot hold alpha (composited on white, as viewers show it) and JPEG / WebP / BMP hold only
8 bits (16-bit input is rounded); each such loss is reported in one line.

A file that cannot be read or written is reported in one line and skipped; the exit code is 1
when any file failed, after all the others are written.
"""

import argparse
import os
import sys

import tqdm

from sr_jax import data, inference, sharding, tiling


def output_path(input_path: str, input_root: str | None, output: str, ext: str | None) -> str:
  """Where the upscaled `input_path` goes: `output` itself when it names an image file (single
  input), else under `output` with the path relative to `input_root` (folder input) or the
  file name; `ext` replaces the extension."""
  if input_root is None and os.path.splitext(output)[1].lower() in data.WRITABLE_EXTENSIONS:
    return output
  relative = os.path.relpath(input_path, input_root) if input_root else os.path.basename(input_path)
  if ext:
    relative = os.path.splitext(relative)[0] + "." + ext.lstrip(".")
  return os.path.join(output, relative)


def _jobs(input_path: str, output: str, ext: str | None) -> list[tuple[str, str]]:
  """(input file, output file) pairs for a file or a folder (recursive)."""
  if os.path.isdir(input_path):
    return [(p, output_path(p, input_path, output, ext)) for p in data.list_images(input_path)]
  if not os.path.exists(input_path):
    raise FileNotFoundError(f"--input={input_path!r} does not exist")
  return [(input_path, output_path(input_path, None, output, ext))]


def upscale_files(
  tile_fn: tiling.TileFn,
  jobs: list[tuple[str, str]],
  scale: int,
  tile: int | None,
  overlap: int,
  align: int = 1,
  batch_size: int = 1,
) -> int:
  """Upscales every (input, output) pair; returns how many failed (each reported in one line)."""
  failures = 0
  files = tqdm.tqdm(jobs, desc="upscale", unit="image", dynamic_ncols=True)
  for source, target in files:
    files.set_postfix_str(os.path.basename(source))
    try:
      image = data.read_image_full(source)
      if os.path.exists(target) and os.path.samefile(source, target):
        raise ValueError("output would overwrite the input; choose another --output or --ext")
      height, width = image.color.shape[:2]
      total = tiling.num_windows(height, width, tile, overlap, align)
      with tqdm.tqdm(
        total=total,
        desc="tiles",
        unit="tile",
        leave=False,
        disable=total <= batch_size,
        dynamic_ncols=True,
      ) as tiles:
        result = tiling.upscale_full_image(
          tile_fn, image, scale, tile, overlap, align, batch_size, tiles.update
        )
      os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
      for note in data.write_image(target, result.color, result.alpha, result.icc_profile):
        files.write(f"note: {target}: {note}")
    except (data.ImageReadError, OSError, ValueError) as e:
      failures += 1
      reason = str(e) if isinstance(e, data.ImageReadError) else f"{type(e).__name__}: {e}"
      files.write(f"error: {source}: skipped: {reason}", file=sys.stderr)
  files.close()
  return failures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m sr_jax.upscale", description=__doc__.split("\n")[0]
  )
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--workdir", help="training workdir (config.json + checkpoints)")
  source.add_argument(
    "--weights", help="pretrained weights: file (.pth, ncnn .param) or registry name"
  )
  source.add_argument("--model", help="parameter-free model name, e.g. bicubic (needs --scale)")
  parser.add_argument(
    "--scale", type=int, help="SR factor (required with --model; checked otherwise)"
  )
  parser.add_argument(
    "--checkpoint", default="latest", help="with --workdir: latest, best or a step"
  )
  parser.add_argument("--input", required=True, help="an image file or a folder (recursive)")
  parser.add_argument(
    "--output", required=True, help="output folder (or an image file for one input)"
  )
  parser.add_argument(
    "--ext", help="output extension (png, jpg, tif, webp, bmp); default: the input's"
  )
  parser.add_argument(
    "--tile", type=int, default=tiling.DEFAULT_TILE, help="LR tile core side; 0 = whole image"
  )
  parser.add_argument(
    "--tile_overlap",
    type=int,
    help="LR context pixels per side; default: the network's (tiling.default_overlap)",
  )
  parser.add_argument("--batch_size", type=int, default=1, help="tiles per network call")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    if args.ext and "." + args.ext.lstrip(".").lower() not in data.WRITABLE_EXTENSIONS:
      raise ValueError(
        f"--ext={args.ext!r} is not a known image extension: {sorted(data.WRITABLE_EXTENSIONS)}"
      )
    jobs = _jobs(args.input, args.output, args.ext)
    model, description = inference.load_model(
      args.workdir, args.weights, args.model, args.scale, args.checkpoint
    )
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not jobs:
    print(f"error: no image files in {args.input!r}", file=sys.stderr)
    return 2
  overlap = tiling.default_overlap(model) if args.tile_overlap is None else args.tile_overlap
  tile = args.tile if args.tile > 0 else None
  print(
    f"{description} x{model.scale}: {len(jobs)} image(s) -> {args.output} "
    f"(tile {tile or 'off'}, overlap {overlap})",
    file=sys.stderr,
  )
  failures = upscale_files(
    tiling.make_tile_fn(model),
    jobs,
    model.scale,
    tile,
    overlap,
    tiling.input_multiple(model),
    args.batch_size,
  )
  if failures:
    print(
      f"error: {failures} of {len(jobs)} image(s) failed (see above); the others were written",
      file=sys.stderr,
    )
    return 1
  return 0


if __name__ == "__main__":
  sharding.use_every_cpu_core()  # CPU: windows' rows split over the cores (see tiling.make_tile_fn)
  sys.exit(main())
