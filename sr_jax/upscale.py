"""Upscales images with a trained or pretrained SR network, tile by tile.

  python -m sr_jax.upscale --workdir=W [--checkpoint=latest|best|STEP] --input=FILE_OR_DIR \
      --output=DIR
  python -m sr_jax.upscale --weights=PATH_OR_NAME --input=... --output=...  (load_pretrained_sr)
  python -m sr_jax.upscale --model=bicubic --scale=4 --input=... --output=...
  options: --tile=N (LR core side, 0 = whole image) --tile_overlap=M --batch_size=B --ext=png
      --overwrite --dtype=float32|bfloat16 (what the network computes in)
      --adapt_steps=N [--adapt_per_image]: first adapt the network to the inputs themselves,
      without HR (sr_jax.adapt: pairs = crops of the inputs and their bicubic downscale), once
      to all of them together, or to each image alone; 0 (default) = the network as it is

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

What is never lost (checked before the network loads; a refusal is one `error:` line, exit code 2,
nothing written):
  - An input file is never written over, even with --overwrite (e.g. `--output` = the input
    folder, where `photo.jpg` with `--ext=png` would replace the input `photo.png`).
  - Two inputs that map to one output name (`a.jpg` and `a.png` with `--ext=png`) are refused,
    all such pairs listed; nothing is renamed behind the user's back.
  - An existing output file is kept and its input skipped, reported in one line, so that a rerun
    resumes an interrupted one; `--overwrite` replaces existing outputs.
  - An output folder inside the input folder is not read as input (earlier results are not
    upscaled again).
  - Each output is written to a hidden temporary file in its folder, flushed to disk and its size
    checked, then renamed: a failed or short write (a full disk) leaves no truncated file.

A file that cannot be read or written is reported in one line and skipped; the exit code is 1
when any file failed, after all the others are written (a full disk stops the run at once).
"""

import argparse
import errno
import functools
import os
import pickle
import sys
from typing import NamedTuple

from flax import nnx
import tqdm

from configs import default as default_config
from sr_jax import adapt, data, inference, sharding, tiling


class UsageError(ValueError):
  """A mistake in the command line or its files: one `error:` line, exit code 2."""


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # one line, and no SystemExit inside main(argv)
    raise UsageError(f"{message} (see {self.prog} --help)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = _Parser(prog="python -m sr_jax.upscale", description=__doc__.split("\n")[0])
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
  parser.add_argument(
    "--dtype",
    choices=("float32", "bfloat16"),
    default="float32",
    help="what the network computes in (bfloat16: mixed precision, weights stay float32)",
  )
  parser.add_argument(
    "--overwrite",
    action="store_true",
    help="replace existing output files (default: keep them and skip their inputs); "
    "input files are never replaced",
  )
  parser.add_argument(
    "--adapt_steps",
    type=int,
    default=0,
    help="self-supervised adaptation steps on the inputs themselves before upscaling "
    "(no HR; settings: the adapt block of configs/default.py); 0 = none",
  )
  parser.add_argument(
    "--adapt_per_image",
    action="store_true",
    help="with --adapt_steps: adapt to each image alone (default: once, to all together)",
  )
  return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
  """Refuses values that would fail later, per image or after the network loads."""
  if args.batch_size < 1:
    raise UsageError(f"--batch_size={args.batch_size}: must be at least 1")
  if args.tile < 0:
    raise UsageError(f"--tile={args.tile}: must be >= 0 (0 = the whole image at once)")
  if args.tile_overlap is not None and args.tile_overlap < 0:
    raise UsageError(f"--tile_overlap={args.tile_overlap}: must be >= 0")
  if args.scale is not None and args.scale < 1:
    raise UsageError(f"--scale={args.scale}: must be at least 1")
  if args.adapt_steps < 0:
    raise UsageError(f"--adapt_steps={args.adapt_steps}: must be >= 0 (0 = no adaptation)")
  if args.adapt_per_image and not args.adapt_steps:
    raise UsageError("--adapt_per_image needs --adapt_steps=N with N > 0")
  if args.model is not None and args.scale is None:
    raise UsageError(f"--model={args.model} needs --scale")
  if args.workdir is not None:
    if args.checkpoint not in ("latest", "best") and not args.checkpoint.isdigit():
      raise UsageError(f"--checkpoint={args.checkpoint!r}: expected latest, best or a step")
    if not os.path.isdir(args.workdir):
      raise UsageError(f"--workdir={args.workdir!r} is not a folder")
  if args.ext and "." + args.ext.lstrip(".").lower() not in data.WRITABLE_EXTENSIONS:
    raise UsageError(
      f"--ext={args.ext!r} is not a known image extension: {sorted(data.WRITABLE_EXTENSIONS)}"
    )
  if not os.path.exists(args.input):
    raise UsageError(f"--input={args.input!r} does not exist")
  if os.path.isdir(args.input) and os.path.exists(args.output) and not os.path.isdir(args.output):
    raise UsageError(f"--output={args.output!r} is a file; a folder --input needs a folder")


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


class Plan(NamedTuple):
  """What `main` will do: the (input, output) pairs to upscale and what it leaves alone."""

  jobs: list[tuple[str, str]]
  existing: list[str]  # outputs that exist: kept, their inputs skipped (without --overwrite)
  excluded: int  # files under --output, inside the --input folder: not read as inputs


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path != folder and os.path.commonpath([path, folder]) == folder


def _listed(pairs: list[str], limit: int = 5) -> str:
  more = f"; and {len(pairs) - limit} more" if len(pairs) > limit else ""
  return "; ".join(pairs[:limit]) + more


def plan_jobs(input_path: str, output: str, ext: str | None, overwrite: bool = False) -> Plan:
  """The (input, output) pairs for a file or a folder (recursive), checked before any work.

  Raises:
    UsageError: an output would write over an input file (whatever `overwrite` says), or two
      inputs map to one output; every such case is listed in the one-line message.
  """
  if os.path.isdir(input_path):
    inputs = data.list_images(input_path)
    excluded = 0
    if _inside(output, input_path):  # earlier results there are outputs, not inputs
      kept = [p for p in inputs if not _inside(p, output)]
      inputs, excluded = kept, len(inputs) - len(kept)
    jobs = [(p, output_path(p, input_path, output, ext)) for p in inputs]
  else:
    jobs, excluded = [(input_path, output_path(input_path, None, output, ext))], 0
    if os.path.splitext(jobs[0][1])[1].lower() not in data.WRITABLE_EXTENSIONS:
      raise UsageError(
        f"cannot write {jobs[0][1]!r}: not an image extension; give --ext "
        f"({', '.join(e[1:] for e in data.WRITABLE_EXTENSIONS)}) or an --output file name"
      )

  input_files = {_identity(source) for source, _ in jobs if os.path.exists(source)}
  overwritten = []
  for source, target in jobs:
    if os.path.exists(target) and _identity(target) in input_files:
      itself = os.path.exists(source) and _identity(source) == _identity(target)
      overwritten.append(
        f"{target!r} is the input {source!r}" if itself else f"{source!r} -> {target!r}"
      )
  if overwritten:
    raise UsageError(
      f"{len(overwritten)} output(s) would write over input files (never done, even with "
      f"--overwrite): {_listed(overwritten)}; choose another --output or --ext"
    )
  by_target: dict[str, list[tuple[str, str]]] = {}  # one key per file the outputs name
  for source, target in jobs:
    by_target.setdefault(os.path.normcase(os.path.realpath(target)), []).append((source, target))
  collisions = [
    f"{' and '.join(repr(source) for source, _ in named)} -> {named[0][1]!r}"
    for named in by_target.values()
    if len(named) > 1
  ]
  if collisions:
    raise UsageError(
      f"{len(collisions)} output name(s) would be written by several inputs: "
      f"{_listed(collisions)}; upscale them separately or without --ext"
    )
  existing = [] if overwrite else [t for _, t in jobs if os.path.lexists(t)]
  if existing:
    jobs = [(s, t) for s, t in jobs if not os.path.lexists(t)]
  return Plan(jobs, existing, excluded)


def _identity(path: str) -> tuple[int, int]:
  """The file itself (device, inode): one file under two names, links or case, is one file."""
  stat = os.stat(path)
  return stat.st_dev, stat.st_ino


def load_network(args: argparse.Namespace) -> tuple[nnx.Module, str]:
  """The network the arguments name (`inference.load_model`), bad files as UsageError."""
  try:
    return inference.load_model(
      args.workdir, args.weights, args.model, args.scale, args.checkpoint, args.dtype
    )
  except (OSError, ValueError, pickle.UnpicklingError) as e:
    raise UsageError(str(e)) from e


def upscale_files(
  tile_fn: tiling.TileFn,
  jobs: list[tuple[str, str]],
  scale: int,
  tile: int | None,
  overlap: int,
  align: int = 1,
  batch_size: int = 1,
  overwrite: bool = False,
) -> int:
  """Upscales every (input, output) pair; returns how many failed (each reported in one line).

  An output is written completely or not at all (`data.write_image`); an existing one is replaced
  only with `overwrite`. A full disk fails the remaining files at once, without computing them.
  """
  failures = 0
  files = tqdm.tqdm(jobs, desc="upscale", unit="image", dynamic_ncols=True)
  for done, (source, target) in enumerate(files):
    files.set_postfix_str(os.path.basename(source))
    try:
      image = data.read_image_full(source)
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
      notes = data.write_image(target, result.color, result.alpha, result.icc_profile, overwrite)
      for note in notes:
        files.write(f"note: {target}: {note}")
    except (data.ImageReadError, OSError, ValueError) as e:
      failures += 1
      reason = str(e) if isinstance(e, (data.ImageReadError, OSError)) else f"ValueError: {e}"
      files.write(f"error: {source}: skipped: {reason}", file=sys.stderr)
      if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        left = len(jobs) - done - 1
        files.write(f"error: the disk is full: {left} image(s) not processed", file=sys.stderr)
        failures += left
        break
  files.close()
  return failures


def adapted_networks(model: nnx.Module, jobs: list, args: argparse.Namespace):
  """(network, its jobs): `model` for all jobs, or (--adapt_steps) adapted to the inputs, all
  together or one by one (--adapt_per_image). Reads the inputs only; an adaptation that cannot
  run (no usable image) leaves the network as it is, in one line."""
  if not args.adapt_steps:
    yield model, jobs
    return
  recipe = default_config.get_config().adapt
  recipe.steps = args.adapt_steps
  log = functools.partial(tqdm.tqdm.write, file=sys.stderr)
  for group in [[job] for job in jobs] if args.adapt_per_image else [jobs]:
    try:
      yield adapt.adapt_to_files(model, [source for source, _ in group], recipe, log), group
    except ValueError as e:
      log(f"note: not adapted: {e}")
      yield model, group


def main(argv: list[str] | None = None) -> int:
  try:
    args = parse_args(argv)
    check_args(args)
    plan = plan_jobs(args.input, args.output, args.ext, args.overwrite)
    if plan.excluded:
      print(
        f"note: {plan.excluded} file(s) under --output={args.output} (inside --input) are "
        "not read as inputs",
        file=sys.stderr,
      )
    if plan.existing:
      print(
        f"note: {len(plan.existing)} output(s) exist and are kept, their inputs skipped "
        f"(--overwrite replaces them): {_listed([repr(p) for p in plan.existing])}",
        file=sys.stderr,
      )
    if not plan.jobs:
      if plan.existing:
        return 0
      raise UsageError(f"no image files in {args.input!r}")
    model, description = load_network(args)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  overlap = tiling.default_overlap(model) if args.tile_overlap is None else args.tile_overlap
  tile = args.tile if args.tile > 0 else None
  print(
    f"{description} x{model.scale}: {len(plan.jobs)} image(s) -> {args.output} "
    f"(tile {tile or 'off'}, overlap {overlap})",
    file=sys.stderr,
  )
  failures = 0
  for network, jobs in adapted_networks(model, plan.jobs, args):
    failures += upscale_files(
      tiling.make_tile_fn(network),
      jobs,
      model.scale,
      tile,
      overlap,
      tiling.input_multiple(model),
      args.batch_size,
      args.overwrite,
    )
  if failures:
    print(
      f"error: {failures} of {len(plan.jobs)} image(s) failed (see above); the others were written",
      file=sys.stderr,
    )
    return 1
  return 0


if __name__ == "__main__":
  sharding.use_every_cpu_core()  # CPU: windows' rows split over the cores (see tiling.make_tile_fn)
  sys.exit(main())
