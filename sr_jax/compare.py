"""Comparison figures: bicubic | each model | HR, zoomed crops, full-image PSNR-Y and NIQE in the
captions (NIQE, no-reference, lower = more natural: what a GAN fine-tune improves and PSNR does
not show; "-" on images too small for it, under 2 blocks of 96x96 after the border).

  python -m sr_jax.compare --hr=FILE_OR_DIR --output=DIR \
      [--workdir=[LABEL=]W ...] [--weights=[LABEL=]PATH_OR_NAME ...] [--scale=S] \
      [--checkpoint=latest|best|STEP] [--crop=TOP,LEFT,SIZE] [--tile=N --tile_overlap=M]

Each HR image is mod-cropped to the scale and downscaled with MATLAB bicubic (as in evaluation);
every model upscales that LR image (tiled, see `sr_jax.tiling`), and DIR/<image name>.png shows the
HR overview with the crop marked and the crops side by side. The crop is where bicubic's error is
largest unless --crop gives one (HR pixels). Prints the PSNR-Y and NIQE of every panel.

E.g. the GAN recipe (configs/finetune_realesrgan_compact_x4_gan.py) against its PSNR stage:
  python -m sr_jax.compare --hr=~/.cache/sr_jax/embedded_photos/val --output=figures \
      --workdir="L1=runs/psnr" --workdir="GAN=runs/gan"
"""

import argparse
import os
import sys

import numpy as np

from sr_jax import data, evaluate, figures, inference, metrics, sharding, tiling


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


def niqe_or_none(image: np.ndarray, scale: int) -> float | None:
  """NIQE with the scale as border (BasicSR), None where the image is too small or flat for it."""
  try:
    return metrics.niqe(metrics.to_uint8(image), scale)
  except ValueError:
    return None


def comparison(
  image: data.EvalImage,
  predictors: list[tuple[str, object]],
  scale: int,
  crop: tuple[int, int, int] | None,
) -> tuple[object, dict[str, dict[str, float | None]]]:
  """The figure of one image (bicubic | each predictor | HR) and {label: {psnr_y, niqe}} of every
  panel, both full-image with the scale as border."""
  panels = [("bicubic", data.bicubic_baseline(image.lr, scale))]
  panels += [(label, np.clip(predict(image.lr), 0.0, 1.0)) for label, predict in predictors]
  scores = {
    label: {"psnr_y": metrics.psnr_y(sr, image.hr, scale), "niqe": niqe_or_none(sr, scale)}
    for label, sr in panels
  }
  hr_niqe = niqe_or_none(image.hr, scale)

  def with_niqe(label: str, value: float | None) -> str:
    return label if value is None else f"{label} NIQE {value:.2f}"

  # zoom_comparison_figure appends each panel's PSNR-Y: "<label> NIQE n.nn <psnr> dB".
  captioned = [(with_niqe(label, scores[label]["niqe"]), sr) for label, sr in panels]
  title = f"{image.name} x{scale}" + ("" if hr_niqe is None else f", HR NIQE {hr_niqe:.2f}")
  figure = figures.zoom_comparison_figure(captioned, image.hr, scale, crop, title=title)
  return figure, scores


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
      figure, scores = comparison(image, predictors, scale, crop)
    except ValueError as e:  # e.g. a --crop outside this image
      print(f"error: {image.name}: {e}", file=sys.stderr)
      return 2
    path = os.path.join(args.output, image.name.replace(os.sep, "__") + ".png")
    figure.save(path)
    print(
      f"{path}: "
      + ", ".join(
        f"{label} {score['psnr_y']:.2f} dB NIQE "
        + ("-" if score["niqe"] is None else f"{score['niqe']:.2f}")
        for label, score in scores.items()
      )
    )
  return 0


if __name__ == "__main__":
  sharding.use_every_cpu_core()  # CPU: windows' rows split over the cores (see tiling.make_tile_fn)
  sys.exit(main())
