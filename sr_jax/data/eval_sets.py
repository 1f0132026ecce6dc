"""Standard SR benchmark sets by name (`eval.datasets`), resolved under a data root.

Nothing is downloaded: put each set's HR images under the data root (`eval.data_root`, else
$SR_JAX_DATA, else ~/.cache/sr_jax/datasets) in any of the usual layouts, e.g.
  <root>/Set5/HR/*.png                     (EDSR-PyTorch "benchmark" release; also <root>/benchmark/Set5/HR)
  <root>/Set5/GTmod12/*.png                (BasicSR's datasets folder)
  <root>/Set5/*.png                        (a flat folder of the HR images)
  <root>/DIV2K/DIV2K_valid_HR/*.png        (the DIV2K validation zip; also <root>/DIV2K_valid_HR)
Folder names match case-insensitively. Only HR images are read; the LR inputs are made from them
by MATLAB bicubic downscaling, as in the papers' tables. A candidate folder is used only when it
holds exactly the expected number of images, so an LR subfolder or a partial copy is never
mistaken for the set.
"""

import os
from typing import NamedTuple, Sequence

from sr_jax.data import embedded, image_io

DATA_ROOT_ENV = "SR_JAX_DATA"


class Benchmark(NamedTuple):
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


BENCHMARKS = {
  "set5": Benchmark("Set5", 5, _layouts("Set5")),
  "set14": Benchmark("Set14", 14, _layouts("Set14")),
  "b100": Benchmark("B100", 100, _layouts("B100", "BSDS100", "BSD100")),
  "urban100": Benchmark("Urban100", 100, _layouts("Urban100")),
  "manga109": Benchmark("Manga109", 109, _layouts("Manga109")),
  "div2k_val": Benchmark(
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


def resolve_benchmark(name: str, root: str = "") -> EvalFolder:
  """The HR folder of a named benchmark set under the data root.

  Args:
    name: a key of BENCHMARKS (case-insensitive), e.g. "set5".
    root: data root ("" = $SR_JAX_DATA, else ~/.cache/sr_jax/datasets).

  Returns:
    EvalFolder(reported name, folder).

  Raises:
    KeyError: unknown name.
    FileNotFoundError: no candidate folder holds the expected number of images; the message
      says where to put the set and which folders were found with other counts.
  """
  key = name.lower()
  if key not in BENCHMARKS:
    raise KeyError(f"unknown benchmark set {name!r}; known: {sorted(BENCHMARKS)}")
  bench = BENCHMARKS[key]
  root = data_root(root)
  wrong_counts = []
  seen = set()
  for relative in bench.folders:
    folder = _find_ci(root, relative)
    if folder is None or folder in seen:
      continue
    seen.add(folder)
    count = len(image_io.list_images(folder))
    if count == bench.num_images:
      return EvalFolder(bench.name, folder)
    wrong_counts.append(f"{folder} ({count} images)")
  found = f"; found only {', '.join(wrong_counts)}" if wrong_counts else ""
  raise FileNotFoundError(
    f"benchmark set {name!r} ({bench.name}, {bench.num_images} HR images) not found under data "
    f"root {root!r}{found}. Put its {bench.num_images} HR images in "
    f"{os.path.join(root, bench.folders[0])} (or set eval.data_root / ${DATA_ROOT_ENV} to the "
    f"folder that holds {os.path.dirname(bench.folders[0]) or bench.folders[0]}/); to evaluate "
    "another number of images, give the folder path instead of the name."
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
    datasets: named sets (keys of BENCHMARKS, case-insensitive) or, like `dirs`, folders
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
    if entry.lower() in BENCHMARKS:
      folders.append(resolve_benchmark(entry, root))
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
