"""Evaluation sets: named SR test sets and folders (`eval.datasets`, `eval.dirs`), and their images.

Named sets (EVAL_SETS: set5, set14, b100, urban100, manga109, div2k_val) are resolved under a
data root. Nothing is downloaded: put each set's HR images under the data root
(`eval.data_root`, else $SR_JAX_DATA, else ~/.cache/sr_jax/datasets) in any of the usual
layouts, e.g.
  <root>/Set5/HR/*.png               (EDSR-PyTorch "benchmark" release; also <root>/benchmark/...)
  <root>/Set5/GTmod12/*.png          (BasicSR's datasets folder)
  <root>/Set5/*.png                  (a flat folder of the HR images)
  <root>/DIV2K/DIV2K_valid_HR/*.png  (the DIV2K validation zip; also <root>/DIV2K_valid_HR)
Folder names match case-insensitively. Only HR images are read; the LR inputs are made from them
by MATLAB bicubic downscaling, as in the papers' tables. A candidate folder is used only when it
holds exactly the expected number of images, so an LR subfolder or a partial copy is never
mistaken for the set.

`load_eval_folder` reads a folder's images as EvalImage(name, lr, hr): HR mod-cropped to the
scale, LR made from it by MATLAB bicubic.
"""

import os
from typing import NamedTuple, Sequence

from absl import logging
import numpy as np

from sr_jax.data import embedded, examples, image_io

DATA_ROOT_ENV = "SR_JAX_DATA"


class EvalSet(NamedTuple):
  name: str  # reported name
  num_images: int
  folders: tuple[str, ...]  # candidate HR folders relative to the data root, in order


def _layouts(*names: str) -> tuple[str, ...]:
  """Usual HR folder layouts of a set known under `names`."""
  layouts = []
  for sub in ("HR", "GTmod12", "original", ""):
    for name in names:
      layouts.append(os.path.join(name, sub) if sub else name)
      layouts.append(
        os.path.join("benchmark", name, sub) if sub else os.path.join("benchmark", name)
      )
  return tuple(layouts)


EVAL_SETS = {
  "set5": EvalSet("Set5", 5, _layouts("Set5")),
  "set14": EvalSet("Set14", 14, _layouts("Set14")),
  "b100": EvalSet("B100", 100, _layouts("B100", "BSDS100", "BSD100")),
  "urban100": EvalSet("Urban100", 100, _layouts("Urban100")),
  "manga109": EvalSet("Manga109", 109, _layouts("Manga109")),
  "div2k_val": EvalSet(
    "DIV2K_val",
    100,
    ("DIV2K/DIV2K_valid_HR", "DIV2K_valid_HR", "DIV2K/valid/HR", "DIV2K_val/HR", "DIV2K_val"),
  ),
}


class EvalFolder(NamedTuple):
  name: str  # reported name
  path: str  # folder of HR images


def data_root(root: str = "") -> str:
  """`root`, else $SR_JAX_DATA, else ~/.cache/sr_jax/datasets (absolute)."""
  root = root or os.environ.get(DATA_ROOT_ENV) or os.path.join(embedded.cache_root(), "datasets")
  return os.path.abspath(os.path.expanduser(root))


def _find_ci(root: str, relative: str) -> str | None:
  """`root/relative` with each component matched case-insensitively, or None."""
  path = root
  for part in relative.split(os.sep):
    if not os.path.isdir(path):
      return None
    if os.path.isdir(os.path.join(path, part)):
      path = os.path.join(path, part)
      continue
    matches = sorted(
      e
      for e in os.listdir(path)
      if e.lower() == part.lower() and os.path.isdir(os.path.join(path, e))
    )
    if not matches:
      return None
    path = os.path.join(path, matches[0])
  return path if os.path.isdir(path) else None


def resolve_eval_set(name: str, root: str = "") -> EvalFolder:
  """The HR folder of a named evaluation set under the data root.

  Args:
    name: a key of EVAL_SETS (case-insensitive), e.g. "set5".
    root: data root ("" = $SR_JAX_DATA, else ~/.cache/sr_jax/datasets).

  Returns:
    EvalFolder(reported name, folder).

  Raises:
    KeyError: unknown name.
    FileNotFoundError: no candidate folder holds the expected number of images; the message
      says where to put the set and which folders were found with other counts.
  """
  key = name.lower()
  if key not in EVAL_SETS:
    raise KeyError(f"unknown evaluation set {name!r}; known: {sorted(EVAL_SETS)}")
  eval_set = EVAL_SETS[key]
  root = data_root(root)
  wrong_counts = []
  seen = set()
  for relative in eval_set.folders:
    folder = _find_ci(root, relative)
    if folder is None or folder in seen:
      continue
    seen.add(folder)
    count = len(image_io.list_images(folder))
    if count == eval_set.num_images:
      return EvalFolder(eval_set.name, folder)
    wrong_counts.append(f"{folder} ({count} images)")
  found = f"; found only {', '.join(wrong_counts)}" if wrong_counts else ""
  count, first = eval_set.num_images, eval_set.folders[0]
  raise FileNotFoundError(
    f"evaluation set {name!r} ({eval_set.name}, {count} HR images) not found under data "
    f"root {root!r}{found}. Put its {count} HR images in {os.path.join(root, first)} "
    f"(or set eval.data_root / ${DATA_ROOT_ENV} to the folder that holds "
    f"{os.path.dirname(first) or first}/); to evaluate another number of images, give the "
    "folder path instead of the name."
  )


def folder_name(spec: str) -> str:
  """Reported name of a folder entry: 'embedded:val' -> 'embedded_val'; '/data/Set5/' -> 'Set5'."""
  if spec.startswith(embedded.EMBEDDED_PREFIX):
    return spec.replace(":", "_")
  return os.path.basename(os.path.normpath(spec))


def eval_folders(
  dirs: Sequence[str] = (),
  datasets: Sequence[str] = (),
  root: str = "",
  cache_dir: str | None = None,
) -> list[EvalFolder]:
  """Evaluation folders of `eval.dirs` and `eval.datasets`, with the names they are reported under.

  Args:
    dirs: folders of HR images or 'embedded:val' / 'embedded:train' (`eval.dirs`).
    datasets: named sets (keys of EVAL_SETS, case-insensitive) or, like `dirs`, folders
      (`eval.datasets`). A folder that happens to be called like a set: write it as a path,
      e.g. './set5'.
    root: data root of the named sets (`eval.data_root`).
    cache_dir: cache root of the embedded photos.

  Returns:
    EvalFolder per entry, `dirs` first, in the given order.

  Raises:
    FileNotFoundError: a folder or a named set is missing (the message says where to put it).
    ValueError: two entries would be reported under the same name.
  """
  dirs, datasets = _as_tuple(dirs), _as_tuple(datasets)
  folders = [
    EvalFolder(folder_name(spec), path)
    for spec, path in zip(dirs, embedded.resolve_dirs(dirs, cache_dir))
  ]
  for entry in datasets:
    if entry.lower() in EVAL_SETS:
      folders.append(resolve_eval_set(entry, root))
    else:
      folders.append(EvalFolder(folder_name(entry), embedded.resolve_dirs(entry, cache_dir)[0]))
  names = [f.name for f in folders]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(
      f"eval.dirs / eval.datasets: several entries are reported as {repeated}: "
      f"{[f.path for f in folders if f.name in repeated]}"
    )
  return folders


def _as_tuple(entries: str | Sequence[str]) -> tuple[str, ...]:
  return (
    (entries,) if isinstance(entries, (str, os.PathLike)) else tuple(os.fspath(e) for e in entries)
  )


class EvalImage(NamedTuple):
  """One full evaluation image: `hr` mod-cropped to a multiple of the scale, `lr` made from it."""

  name: str
  lr: np.ndarray  # float32 [h, w, 3] in [0, 1]
  hr: np.ndarray  # float32 [h * scale, w * scale, 3] in [0, 1]


def load_eval_image(
  path: str, scale: int, quantize_lr: bool = True, name: str | None = None
) -> EvalImage:
  """One evaluation image file: HR mod-cropped to the scale, LR made by MATLAB bicubic.

  Args:
    path: HR image file.
    scale: SR factor.
    quantize_lr: round LR to 8-bit levels (as the papers' LR PNGs).
    name: reported name; None = the file name without extension.

  Raises:
    ImageReadError: the file cannot be read.
    ValueError: the image is smaller than the scale.
  """
  image = image_io.read_image(path)
  hr = examples.mod_crop(image, scale)
  if min(hr.shape[:2]) < scale:
    height, width = image.shape[:2]
    raise ValueError(f"{path!r}: image of {width}x{height} is smaller than the scale {scale}")
  hr = examples.to_float(hr)
  if name is None:
    name = os.path.splitext(os.path.basename(path))[0]
  return EvalImage(name, examples.make_lr(hr, scale, quantize_lr), hr)


def load_eval_folder(path: str, scale: int, quantize_lr: bool = True) -> list[EvalImage]:
  """Full evaluation images of a folder (recursive), with their LR made by MATLAB bicubic.

  Args:
    path: folder of HR images.
    scale: SR factor; HR is mod-cropped to a multiple of it.
    quantize_lr: round LR to 8-bit levels (as the papers' LR PNGs).

  Returns:
    EvalImage per readable image, sorted by file path; `name` is the path relative to the
    folder without extension. Unreadable or too small images are skipped with a warning.

  Raises:
    FileNotFoundError: the folder does not exist.
    ValueError: the folder holds no usable image.
  """
  paths = image_io.list_images(path)
  images = []
  for file_path in paths:
    name = os.path.splitext(os.path.relpath(file_path, path))[0]
    try:
      images.append(load_eval_image(file_path, scale, quantize_lr, name))
    except (image_io.ImageReadError, ValueError) as e:
      logging.warning("%s; skipped", e)
  logging.info("eval folder %s: %d images, %d skipped", path, len(images), len(paths) - len(images))
  if not images:
    raise ValueError(f"eval folder {path!r} has no usable image ({len(paths)} image files found)")
  return images
