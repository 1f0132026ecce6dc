"""Upscales images with a trained or pretrained SR network, tile by tile.

  python -m sr_jax.upscale --workdir=W [--checkpoint=latest|best|STEP] --input=FILE_OR_DIR --output=DIR
  python -m sr_jax.upscale --weights=PATH_OR_NAME --input=... --output=...   (see load_pretrained_sr)
  python -m sr_jax.upscale --model=bicubic --scale=4 --input=... --output=...
  options: --tile=N (LR core side, 0 = whole image) --tile-overlap=M --batch-size=B --ext=png

What is kept (see `sr_jax.data.image_io.read_image_full`):
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
import struct
import sys
import zlib

import numpy as np
from PIL import Image
import tqdm

from sr_jax import sharding, tiling
from sr_jax.data import image_io

DEFAULT_TILE = 256  # EDSR-baseline x4: ~1 GB of activations for a 320x320 LR window on CPU
DEFAULT_OVERLAP = 40  # >= EDSR-baseline's receptive-field radius (36 LR pixels): exact tiles

# Which channel layouts each output format can hold in 8 bits; 16 bits only in PNG and TIFF.
_FORMATS = {
  ".png": "PNG",
  ".jpg": "JPEG",
  ".jpeg": "JPEG",
  ".bmp": "BMP",
  ".tif": "TIFF",
  ".tiff": "TIFF",
  ".webp": "WEBP",
}
_NO_ALPHA = {"JPEG"}
_NO_GRAY = {"WEBP"}
_HIGH_DEPTH = {"PNG", "TIFF"}


# --- Models --------------------------------------------------------------------------------------------


def load_model(
  workdir: str | None = None,
  weights: str | None = None,
  model_name: str | None = None,
  scale: int | None = None,
  checkpoint: str = "latest",
):
  """The SR network named by exactly one of `workdir`, `weights` or `model_name`.

  Args:
    workdir: a training workdir: its config.json and checkpoint `checkpoint` (EMA weights if kept).
    weights: a pretrained weights file or registry name (`sr_jax.models.load_pretrained_sr`).
    model_name: a parameter-free model of `sr_jax.models.create_model` (e.g. "bicubic"); needs `scale`.
    scale: required with `model_name`; otherwise, if given, must match the network.
    checkpoint: "latest", "best" or a step number (with `workdir`).

  Returns:
    (nnx.Module with `.scale`, a short description for logs and captions).
  """
  if sum(x is not None for x in (workdir, weights, model_name)) != 1:
    raise ValueError("give exactly one of --workdir, --weights or --model")
  if workdir is not None:
    from sr_jax import train_state  # lazily: restoring pulls in orbax and the optimiser

    config = train_state.load_config(workdir)
    which = int(checkpoint) if str(checkpoint).isdigit() else checkpoint
    graphdef, state, step = train_state.restore_checkpoint(config, workdir, which)
    model = train_state.inference_model(graphdef, state)
    description = f"{config.model.name} step {step}"
  elif weights is not None:
    from sr_jax.models import load_pretrained_sr  # lazily: only this path reads weight files

    model = load_pretrained_sr(weights)
    description = os.path.basename(os.fspath(weights))
  else:
    from flax import nnx
    import jax
    import ml_collections

    from sr_jax import models

    if scale is None:
      raise ValueError(f"--model={model_name} needs --scale")
    model_config = ml_collections.ConfigDict({"name": model_name})
    # Shapes only: refusing a network with (untrained) parameters should not cost initialising it.
    abstract = nnx.eval_shape(lambda: models.create_model(model_config, scale, nnx.Rngs(0)))
    if jax.tree.leaves(nnx.state(abstract, nnx.Param)):
      raise ValueError(
        f"--model={model_name} has untrained weights; use --workdir or --weights for a "
        "trained network (--model is for parameter-free ones such as bicubic)"
      )
    model = models.create_model(model_config, scale, nnx.Rngs(0))
    description = model_name
  if scale is not None and model.scale != scale:
    raise ValueError(f"the network is x{model.scale}, but --scale={scale}")
  return model, description


# --- Writing ---------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
  return (
    struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
  )


def _paeth_filtered(rows: np.ndarray, previous: np.ndarray, bytes_per_pixel: int) -> np.ndarray:
  """PNG filter 4 (Paeth) of byte rows [n, row_bytes], `previous` the raw row above the first."""
  raw = rows.astype(np.int16)
  up = np.concatenate([previous[None].astype(np.int16), raw[:-1]])
  left = np.zeros_like(raw)
  left[:, bytes_per_pixel:] = raw[:, :-bytes_per_pixel]
  up_left = np.zeros_like(raw)
  up_left[:, bytes_per_pixel:] = up[:, :-bytes_per_pixel]
  estimate = left + up - up_left
  d_left, d_up, d_up_left = (
    np.abs(estimate - left),
    np.abs(estimate - up),
    np.abs(estimate - up_left),
  )
  predictor = np.where(
    (d_left <= d_up) & (d_left <= d_up_left), left, np.where(d_up <= d_up_left, up, up_left)
  )
  return ((raw - predictor) & 0xFF).astype(np.uint8)


def write_png(
  path: str, pixels: np.ndarray, icc_profile: bytes | None = None, chunk_bytes: int = 1 << 22
) -> None:
  """Writes uint8 / uint16 [h, w] or [h, w, c] (c = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) as a PNG.

  PIL cannot write 16-bit colour PNGs, and for 8 bits it first copies the image into its own
  4-bytes-a-pixel buffer (1 GB for a 16000x16000 RGB output). Here rows are Paeth-filtered and
  compressed about `chunk_bytes` at a time, so memory stays at the image plus a few chunks.
  """
  if pixels.dtype not in (np.uint8, np.uint16):
    raise ValueError(f"write_png {path!r}: expected uint8 or uint16 pixels, got {pixels.dtype}")
  image = pixels[:, :, None] if pixels.ndim == 2 else pixels
  height, width, channels = image.shape
  sample_bytes = pixels.dtype.itemsize
  header = struct.pack(
    ">IIBBBBB", width, height, 8 * sample_bytes, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0
  )
  row_bytes = width * channels * sample_bytes
  rows_per_chunk = max(1, chunk_bytes // row_bytes)
  compressor = zlib.compressobj(6)
  previous = np.zeros(row_bytes, np.uint8)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header))
    if icc_profile:
      f.write(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    for top in range(0, height, rows_per_chunk):
      rows = np.ascontiguousarray(image[top : top + rows_per_chunk], pixels.dtype.newbyteorder(">"))
      rows = rows.reshape(-1, width * channels).view(np.uint8)
      lines = np.empty((len(rows), row_bytes + 1), np.uint8)
      lines[:, 0] = 4  # filter type: Paeth
      lines[:, 1:] = _paeth_filtered(rows, previous, channels * sample_bytes)
      previous = rows[-1].copy()
      data = compressor.compress(lines.tobytes())
      if data:
        f.write(_png_chunk(b"IDAT", data))
    f.write(_png_chunk(b"IDAT", compressor.flush()) + _png_chunk(b"IEND", b""))


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
  if pixels.dtype == np.uint8:
    return pixels
  return np.rint(pixels.astype(np.float32) * np.float32(255.0 / 65535.0)).astype(np.uint8)


def _on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
  """Composites colour over white with `alpha` (same integer dtype), as viewers show it."""
  peak = np.float32(np.iinfo(color.dtype).max)
  weight = alpha.astype(np.float32) / peak
  if color.ndim == 3:
    weight = weight[:, :, None]
  return np.rint(color * weight + peak * (1.0 - weight)).astype(color.dtype)


def write_image(
  path: str, color: np.ndarray, alpha: np.ndarray | None = None, icc_profile: bytes | None = None
) -> list[str]:
  """Writes an image in the format of `path`'s extension, keeping what that format can hold.

  Args:
    path: output file; its extension (png, jpg, jpeg, bmp, tif, tiff, webp) picks the format.
    color: uint8 / uint16 [h, w] gray or [h, w, 3] RGB.
    alpha: [h, w] of the same dtype, or None.
    icc_profile: copied into the file when given.

  Returns:
    Notes on what the format could not hold (alpha, 16 bits), one line each.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in _FORMATS:
    raise ValueError(
      f"cannot write {path!r}: unknown image extension {ext!r}; known: {sorted(_FORMATS)}"
    )
  fmt, notes = _FORMATS[ext], []
  if alpha is not None and fmt in _NO_ALPHA:
    color, alpha = _on_white(color, alpha), None
    notes.append(f"{fmt} has no alpha channel: composited on white")
  if color.dtype == np.uint16 and fmt not in _HIGH_DEPTH:
    color, alpha = _to_8bit(color), None if alpha is None else _to_8bit(alpha)
    notes.append(f"{fmt} holds 8 bits per channel: 16-bit output rounded to 8 bits")
  pixels = (
    color
    if alpha is None
    else np.concatenate([color.reshape(color.shape[:2] + (-1,)), alpha[:, :, None]], axis=2)
  )
  partial = path + ".partial"  # renamed when complete: a failed write leaves no truncated image
  try:
    _write_pixels(partial, fmt, pixels, alpha is not None, icc_profile)
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return notes


def _write_pixels(
  path: str, fmt: str, pixels: np.ndarray, has_alpha: bool, icc_profile: bytes | None
) -> None:
  if fmt == "PNG":
    write_png(path, pixels, icc_profile)
  elif pixels.dtype == np.uint16:  # TIFF
    import tifffile  # a dependency of scikit-image; PIL cannot write 16-bit colour TIFFs

    tifffile.imwrite(
      path,
      pixels,
      photometric="rgb" if pixels.ndim == 3 and pixels.shape[2] >= 3 else "minisblack",
      extrasamples=["unassalpha"] if has_alpha else None,
      compression="zlib",
      iccprofile=icc_profile,
    )
  else:
    image = Image.fromarray(pixels)  # L, LA, RGB or RGBA from the shape
    if fmt in _NO_GRAY and image.mode in ("L", "LA"):
      image = image.convert("RGBA" if image.mode == "LA" else "RGB")
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if icc_profile and fmt != "BMP":
      options["icc_profile"] = icc_profile
    image.save(path, format=fmt, **options)


# --- Upscaling -------------------------------------------------------------------------------------------


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
  """Bicubic upscaling of an alpha channel (uint8 via PIL "L", uint16 via float "F")."""
  height, width = alpha.shape
  size = (width * scale, height * scale)
  if alpha.dtype == np.uint8:
    return np.asarray(Image.fromarray(alpha).resize(size, Image.Resampling.BICUBIC))
  # PIL's I;16 resampling is not accurate (errors of thousands of levels); float is.
  resized = np.asarray(
    Image.fromarray(alpha.astype(np.float32)).resize(size, Image.Resampling.BICUBIC)
  )
  return np.clip(np.rint(resized), 0, 65535).astype(np.uint16)


def upscale_full_image(
  tile_fn: tiling.TileFn,
  image: image_io.FullImage,
  scale: int,
  tile: int | None,
  overlap: int,
  align: int = 1,
  batch_size: int = 1,
  progress=None,
) -> image_io.FullImage:
  """Upscales colour through the network (keeping dtype and gray), alpha by bicubic."""
  color = tiling.upscale_image(
    tile_fn,
    image.color,
    scale,
    tile,
    overlap,
    align=align,
    batch_size=batch_size,
    progress=progress,
  )
  alpha = None if image.alpha is None else upscale_alpha(image.alpha, scale)
  return image_io.FullImage(color, alpha, image.icc_profile)


def output_path(input_path: str, input_root: str | None, output: str, ext: str | None) -> str:
  """Where the upscaled `input_path` goes: `output` itself when it names an image file (single
  input), else under `output` with the path relative to `input_root` (folder input) or the
  file name; `ext` replaces the extension."""
  if input_root is None and os.path.splitext(output)[1].lower() in _FORMATS:
    return output
  relative = os.path.relpath(input_path, input_root) if input_root else os.path.basename(input_path)
  if ext:
    relative = os.path.splitext(relative)[0] + "." + ext.lstrip(".")
  return os.path.join(output, relative)


def _jobs(input_path: str, output: str, ext: str | None) -> list[tuple[str, str]]:
  """(input file, output file) pairs for a file or a folder (recursive)."""
  if os.path.isdir(input_path):
    return [(p, output_path(p, input_path, output, ext)) for p in image_io.list_images(input_path)]
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
      image = image_io.read_image_full(source)
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
        result = upscale_full_image(
          tile_fn, image, scale, tile, overlap, align, batch_size, tiles.update
        )
      os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
      for note in write_image(target, result.color, result.alpha, result.icc_profile):
        files.write(f"note: {target}: {note}")
    except (image_io.ImageReadError, OSError, ValueError) as e:
      failures += 1
      reason = str(e) if isinstance(e, image_io.ImageReadError) else f"{type(e).__name__}: {e}"
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
    "--tile", type=int, default=DEFAULT_TILE, help="LR tile core side; 0 = whole image"
  )
  parser.add_argument(
    "--tile-overlap", type=int, default=DEFAULT_OVERLAP, help="LR context pixels per side"
  )
  parser.add_argument("--batch-size", type=int, default=1, help="tiles per network call")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    if args.ext and "." + args.ext.lstrip(".").lower() not in _FORMATS:
      raise ValueError(f"--ext={args.ext!r} is not a known image extension: {sorted(_FORMATS)}")
    jobs = _jobs(args.input, args.output, args.ext)
    model, description = load_model(
      args.workdir, args.weights, args.model, args.scale, args.checkpoint
    )
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not jobs:
    print(f"error: no image files in {args.input!r}", file=sys.stderr)
    return 2
  tile = args.tile if args.tile > 0 else None
  print(
    f"{description} x{model.scale}: {len(jobs)} image(s) -> {args.output} "
    f"(tile {tile or 'off'}, overlap {args.tile_overlap})",
    file=sys.stderr,
  )
  failures = upscale_files(
    tiling.make_tile_fn(model),
    jobs,
    model.scale,
    tile,
    args.tile_overlap,
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
