"""Comparison figures: bicubic | each model | HR, zoomed crops, full-image PSNR-Y in the captions.

  python -m sr_jax.compare --hr=FILE_OR_DIR --output=DIR \
      [--workdir=[LABEL=]W ...] [--weights=[LABEL=]PATH_OR_NAME ...] [--scale=S] \
      [--checkpoint=latest|best|STEP] [--crop=TOP,LEFT,SIZE] [--tile=N --tile_overlap=M]

Each HR image is mod-cropped to the scale and downscaled with MATLAB bicubic (as in evaluation);
every model upscales that LR image (tiled, see `sr_jax.tiling`), and DIR/<image name>.png shows the
HR overview with the crop marked and the crops side by side. The crop is where bicubic's error is
largest unless --crop gives one (HR pixels). Prints the PSNR-Y of every panel.
"""

import argparse
import os
import sys

from sr_jax import data, evaluate, inference, sharding, tiling


def split_label(spec: str) -> tuple[str | None, str]:
  """'edsr=/runs/w' -> ('edsr', '/runs/w'); '/runs/w' -> (None, '/runs/w')."""
  label, sep, rest = spec.partition("=")
  if sep and label and os.sep not in label:
    return label, rest
  return None, spec


def parse_crop(text: str | None) -> tuple[int, int, int] | None:
  if not text:
    return None
  parts = text.split(",")
  if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
    raise ValueError(f"--crop={text!r}: expected TOP,LEFT,SIZE in HR pixels, e.g. 40,100,64")
  top, left, size = (int(p) for p in parts)
  return top, left, size


def load_models(
  workdirs: list[str], weights: list[str], checkpoint: str
) -> list[tuple[str, object]]:
  """(label, model) for every --workdir then every --weights."""
  loaded = []
  for spec in workdirs:
    label, path = split_label(spec)
    model, description = inference.load_model(workdir=path, checkpoint=checkpoint)
    loaded.append((label or description, model))
  for spec in weights:
    label, path = split_label(spec)
    model, description = inference.load_model(weights=path)
    loaded.append((label or description, model))
  return loaded


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m sr_jax.compare", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--hr", required=True, help="HR image file or folder (recursive)")
  parser.add_argument("--output", required=True, help="folder for the figures")
  parser.add_argument(
    "--workdir", action="append", default=[], help="[LABEL=]training workdir (repeatable)"
  )
  parser.add_argument(
    "--weights", action="append", default=[], help="[LABEL=]pretrained weights (repeatable)"
  )
  parser.add_argument(
    "--scale", type=int, help="SR factor; default: the models' (needed without models)"
  )
  parser.add_argument(
    "--checkpoint", default="latest", help="checkpoint of every --workdir: latest, best, STEP"
  )
  parser.add_argument(
    "--crop", help="TOP,LEFT,SIZE of the zoomed crop in HR pixels; default: automatic"
  )
  parser.add_argument(
    "--tile", type=int, default=tiling.DEFAULT_TILE, help="LR tile core side; 0 = untiled"
  )
  parser.add_argument(
    "--tile_overlap", type=int, help="LR context per side; default: each network's"
  )
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    crop = parse_crop(args.crop)
    models = load_models(args.workdir, args.weights, args.checkpoint)
    scales = {model.scale for _, model in models} | ({args.scale} if args.scale else set())
    if len(scales) != 1:
      raise ValueError(
        f"the models and --scale disagree on the scale: {sorted(scales)}"
        if scales
        else "give --scale or at least one --workdir / --weights"
      )
    scale = scales.pop()
    images = evaluate.load_eval_images(args.hr, scale)
  except (FileNotFoundError, ValueError, data.ImageReadError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  tile = args.tile if args.tile > 0 else None
  predictors = [
    (
      label,
      tiling.upscale_fn(
        tiling.make_tile_fn(model),
        scale,
        tile,
        tiling.default_overlap(model) if args.tile_overlap is None else args.tile_overlap,
        tiling.input_multiple(model),
      ),
    )
    for label, model in models
  ]
  os.makedirs(args.output, exist_ok=True)
  for image in images:
    try:
      figure, psnrs = evaluate.comparison(image, predictors, scale, crop)
    except ValueError as e:  # e.g. a --crop outside this image
      print(f"error: {image.name}: {e}", file=sys.stderr)
      return 2
    path = os.path.join(args.output, image.name.replace(os.sep, "__") + ".png")
    figure.save(path)
    print(f"{path}: " + ", ".join(f"{label} {psnr:.2f} dB" for label, psnr in psnrs.items()))
  return 0


if __name__ == "__main__":
  sharding.use_every_cpu_core()  # CPU: windows' rows split over the cores (see tiling.make_tile_fn)
  sys.exit(main())
