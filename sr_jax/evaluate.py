"""Full-image evaluation of a model and of bicubic, per folder: the metrics of `eval.metrics`
(PSNR-Y and SSIM-Y by default; NIQE and LPIPS on request), border = scale cropped.

`evaluate` returns the results; a `Reporter` writes them into a workdir (eval_results.json / .md,
comparison figures, metric scalars)."""

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

from absl import logging
import numpy as np

from sr_jax import data, figures, metrics, utils

# lr [h, w, 3] float32 in [0, 1] -> sr [h*s, w*s, 3].
PredictFn = Callable[[np.ndarray], np.ndarray]

RESULTS = "eval_results.json"
START_RESULTS = "eval_results_start.json"

# What `eval.metrics` may name. psnr_y is always among them: it picks the best checkpoint.
METRICS = ("psnr_y", "ssim_y", "niqe", "lpips")
_LABELS = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y", "niqe": "NIQE", "lpips": "LPIPS"}
_DIGITS = {"psnr_y": 2, "ssim_y": 4, "niqe": 3, "lpips": 4}


@dataclasses.dataclass(frozen=True)
class Scorer:
  """The per-image metrics of `eval.metrics`, border = scale cropped from each side.

  psnr_y, ssim_y: Y channel against HR. niqe: no reference, BasicSR's `calculate_niqe` (None
  for images without two 96x96 blocks after the crop). lpips: `metrics.LPIPS` (given as
  `lpips`) against HR on the 8-bit images, as saved. Lower is better for NIQE and LPIPS.
  """

  names: tuple[str, ...] = ("psnr_y", "ssim_y")
  lpips: Any = None

  def __post_init__(self):
    unknown = [name for name in self.names if name not in METRICS]
    if unknown or "psnr_y" not in self.names:
      raise ValueError(
        f"eval.metrics={tuple(self.names)}: choose from {', '.join(METRICS)}, with psnr_y "
        "(it picks the best checkpoint)"
      )
    if ("lpips" in self.names) != (self.lpips is not None):
      raise ValueError("Scorer: give an LPIPS exactly when eval.metrics names lpips")

  def niqe(self, image: np.ndarray, scale: int) -> float | None:
    """NIQE, or None (with a warning) for an image without two textured 96x96 blocks."""
    try:
      return metrics.niqe(image, scale)
    except ValueError as error:
      logging.warning("NIQE left out for a %dx%d image: %s", *image.shape[:2], error)
      return None

  def __call__(self, sr: np.ndarray, hr: np.ndarray, scale: int) -> dict[str, float | None]:
    """{metric: value} of the SR image `sr` against `hr`, in `names` order."""
    scores = {}
    for name in self.names:
      if name == "psnr_y":
        scores[name] = metrics.psnr_y(sr, hr, scale)
      elif name == "ssim_y":
        scores[name] = metrics.ssim_y(sr, hr, scale)
      elif name == "niqe":
        scores[name] = self.niqe(sr, scale)
      else:
        crop = (slice(None), slice(scale, -scale or None), slice(scale, -scale or None))
        pair = [data.to_float(metrics.to_uint8(image))[None][crop] for image in (sr, hr)]
        scores[name] = float(self.lpips(*pair)[0])
    return scores

  def reference_scores(self, bicubic: np.ndarray, hr: np.ndarray, scale: int) -> dict:
    """The bicubic baseline's scores (`bicubic_<metric>`) and HR's NIQE (`hr_niqe`)."""
    scores = {f"bicubic_{name}": value for name, value in self(bicubic, hr, scale).items()}
    if "niqe" in self.names:
      scores["hr_niqe"] = self.niqe(hr, scale)
    return scores

  def caption(self, image: np.ndarray, hr: np.ndarray, scale: int) -> str:
    """Figure caption: PSNR-Y, then NIQE / LPIPS on a second line when they are measured."""
    scores = self(image, hr, scale)
    extra = [
      f"{_LABELS[name]} {_fmt(scores[name], _DIGITS[name])}"
      for name in ("niqe", "lpips")
      if name in scores
    ]
    return f"{scores['psnr_y']:.2f} dB" + ("\n" + " ".join(extra) if extra else "")


def create_scorer(eval_config) -> Scorer:
  """The `Scorer` of `eval.metrics`; loads the LPIPS network (`eval.lpips`) when it is named."""
  names = tuple(eval_config.metrics)
  lpips = None
  if "lpips" in names:
    lpips_config = eval_config.lpips
    lpips = metrics.LPIPS(
      lpips_config.net, weights=lpips_config.weights or None, backbone=lpips_config.backbone
    )
  return Scorer(names, lpips)


@dataclasses.dataclass
class EvalSet:
  name: str
  images: list  # of data.EvalImage
  bicubic: list  # bicubic upscales of the LR images, computed once
  scorer: Scorer = dataclasses.field(default_factory=Scorer)
  # Per image: bicubic's and HR's scores (`Scorer.reference_scores`), computed at the first
  # evaluation, since they never change.
  reference_scores: list | None = None


def dataset_name(spec: str) -> str:
  """'embedded:val' -> 'embedded_val'; '/data/Set5/' -> 'Set5'."""
  return data.folder_name(spec)


def load_eval_sets(
  dir_specs: Sequence[str],
  scale: int,
  datasets: Sequence[str] = (),
  data_root: str = "",
  scorer: Scorer | None = None,
) -> list[EvalSet]:
  """Loads each eval folder's HR images once, with their LR and bicubic versions.

  `dir_specs` are folders (`eval.dirs`), `datasets` named evaluation sets (`data.EVAL_SETS`)
  resolved under `data_root` (`eval.datasets`, `eval.data_root`); `scorer` the metrics reported
  on them (`create_scorer(config.eval)`; default PSNR-Y and SSIM-Y).
  """
  scorer = scorer or Scorer()
  sets = []
  for name, path in data.eval_folders(tuple(dir_specs), tuple(datasets), data_root):
    images = data.load_eval_folder(path, scale)
    bicubic = [data.bicubic_baseline(im.lr, scale) for im in images]
    sets.append(EvalSet(name, images, bicubic, scorer))
  return sets


def load_eval_images(path: str, scale: int) -> list[data.EvalImage]:
  """EvalImages (name, LR by MATLAB bicubic, mod-cropped HR) of an image file or folder."""
  if os.path.isdir(path):
    return data.load_eval_folder(path, scale)
  return [data.load_eval_image(path, scale)]


def bucketed(predict: PredictFn, multiple: int = 64) -> PredictFn:
  """`predict` on LR images padded to size buckets, with the SR output cropped back.

  A jitted predict compiles once per input shape; padding each side up to a multiple of
  `multiple` bounds the shapes (and compiles) to one per bucket. The padded border changes the
  SR pixels within the network's receptive field of the bottom / right edge slightly (reflected
  content instead of each layer's zero padding); the metrics crop only `scale` pixels.
  """
  if multiple < 1:
    raise ValueError(f"bucket multiple must be >= 1, got {multiple}")

  def predict_bucketed(lr: np.ndarray) -> np.ndarray:
    height, width = lr.shape[:2]
    padded = utils.pad_bottom_right(lr, height + -height % multiple, width + -width % multiple)
    sr = np.asarray(predict(padded))
    scale = sr.shape[0] // padded.shape[0]
    return sr[: height * scale, : width * scale]

  return predict_bucketed


def evaluate(
  predict: PredictFn,
  eval_sets: Sequence[EvalSet],
  scale: int,
  bucket: int | None = None,
  outputs: dict | None = None,
) -> dict:
  """Mean scores (each set's `scorer`) of `predict` and of bicubic on every set.

  Args:
    predict: lr -> sr on one full image.
    eval_sets: from `load_eval_sets`.
    scale: SR factor (also the border cropped before the metrics).
    bucket: if set, LR sides are padded up to multiples of it (see `bucketed`), so a jitted
      `predict` compiles once per bucket instead of once per image size.
    outputs: if given, filled with {(set name, image name): SR image in [0, 1]} (for figures).

  Returns:
    {set name: {<metric>, ..., bicubic_<metric>, ..., [hr_niqe], num_images}} for the metrics
    of the set's scorer, e.g. {psnr_y, ssim_y, bicubic_psnr_y, bicubic_ssim_y, num_images}. A
    mean is None where no image has the value (NIQE: all images too small).
  """
  if bucket:
    predict = bucketed(predict, bucket)
  results = {}
  for eval_set in eval_sets:
    scorer = eval_set.scorer
    if eval_set.reference_scores is None:
      eval_set.reference_scores = [
        scorer.reference_scores(bicubic, image.hr, scale)
        for image, bicubic in zip(eval_set.images, eval_set.bicubic)
      ]
    rows = []
    for image, reference in zip(eval_set.images, eval_set.reference_scores):
      sr = np.clip(np.asarray(predict(image.lr), np.float32), 0.0, 1.0)
      if outputs is not None:
        outputs[eval_set.name, image.name] = sr
      row = {**scorer(sr, image.hr, scale), **reference}
      if np.isfinite(row["psnr_y"]) and np.isfinite(row["bicubic_psnr_y"]):
        rows.append(row)
      else:  # identical to HR (a flat image): PSNR is infinite and would poison the mean
        logging.warning(
          "eval set %s: %s left out of the means: PSNR-Y is infinite (SR or bicubic equals "
          "HR; a flat image?)",
          eval_set.name,
          image.name,
        )
    keys = [*scorer.names, *(f"bicubic_{name}" for name in scorer.names)]
    keys += ["hr_niqe"] if "niqe" in scorer.names else []
    results[eval_set.name] = {key: _mean([row[key] for row in rows]) for key in keys}
    results[eval_set.name]["num_images"] = len(rows)
  return results


def _mean(values: list[float | None]) -> float | None:
  present = [v for v in values if v is not None]
  return float(np.mean(np.asarray(present, np.float64))) if present else None


def results_document(step: int, scale: int, dataset_results: dict) -> dict:
  return {"step": int(step), "scale": int(scale), "datasets": dataset_results}


def mean_psnr_y(dataset_results: dict) -> float:
  """The mean over eval sets of their PSNR-Y: what picks the best checkpoint."""
  values = [r["psnr_y"] for r in dataset_results.values() if r["psnr_y"] is not None]
  return float(np.mean(values)) if values else float("-inf")


def scalars(dataset_results: dict) -> dict[str, float]:
  """{"eval/<set>/<metric>": value} for metric writers."""
  return {
    f"eval/{name}/{key}": value
    for name, r in dataset_results.items()
    for key, value in r.items()
    if key != "num_images" and value is not None
  }


def _fmt(value: float | None, digits: int) -> str:
  return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(document: dict, model_name: str = "model", start: dict | None = None) -> str:
  """One row per dataset for bicubic, the model before training (`start`, if given), the model,
  and HR when NIQE was measured; one column per metric in the results (NIQE, LPIPS: lower is
  better)."""
  step = document["step"]
  results = document["datasets"].values()
  columns = [m for m in METRICS if any(m in r for r in results)] or ["psnr_y", "ssim_y"]
  lines = [
    "| dataset | method | " + " | ".join(_LABELS[m] for m in columns) + " | images |",
    "|---|---|" + "---|" * len(columns) + "---|",
  ]

  def row(name: str, method: str, values: dict, prefix: str = "") -> str:
    cells = " | ".join(_fmt(values.get(prefix + m), _DIGITS[m]) for m in columns)
    return f"| {name} | {method} | {cells} | {n} |"

  for name, r in document["datasets"].items():
    n = r["num_images"]
    lines.append(row(name, "bicubic", r, "bicubic_"))
    if start and name in start["datasets"]:
      lines.append(row(name, f"{model_name} at step {start['step']}", start["datasets"][name]))
    lines.append(row(name, f"{model_name} at step {step}" if start else model_name, r))
    if "hr_niqe" in r:
      lines.append(row(name, "HR", {"niqe": r["hr_niqe"]}))
  return "\n".join(lines)


def _file_name(set_name: str, image_name: str) -> str:
  return f"{set_name}__{image_name}".replace(os.sep, "__") + ".png"


def _start_dir(workdir: str) -> str:
  return os.path.join(workdir, "figures", "sr_step0000000")  # the SR images, not figures


def _write_atomic(path: str, text: str) -> None:
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


@dataclasses.dataclass
class Reporter:
  """Writes evaluation results into `workdir` (process 0 only: `enabled`).

  eval_results.json / .md (the latest evaluation), eval_results_start.json (before training),
  figures/step<N>/<set>__<image>.png for the first `max_figures` images of every set (bicubic |
  the model before training, when it was evaluated | at step N | HR, full-image PSNR-Y in the
  captions, as in the table), comparison.png (the latest figure of the first image), and scalars
  through `writer` (anything with `write(step, scalars)`).
  """

  workdir: str
  scale: int
  model_name: str
  writer: Any = None
  enabled: bool = True
  max_figures: int = 8

  def _path(self, filename: str) -> str:
    return os.path.join(self.workdir, filename)

  def report(
    self,
    step: int,
    dataset_results: dict,
    eval_sets: Sequence[EvalSet] = (),
    outputs: dict | None = None,
  ) -> str:
    """Writes one evaluation (figures of `outputs` from `evaluate`); returns its table."""
    document = results_document(step, self.scale, dataset_results)
    table = markdown_table(document, self.model_name)
    if not self.enabled:
      return table
    header = (
      f"Evaluation at step {step}, x{self.scale}, border {self.scale} px cropped, "
      "Y channel (BT.601).\n\n"
    )
    _write_atomic(self._path(RESULTS), json.dumps(document, indent=2, allow_nan=False))
    _write_atomic(self._path("eval_results.md"), header + table + "\n")
    if outputs:
      self._figures(step, eval_sets, outputs)
    if self.writer is not None:
      self.writer.write(step, scalars(dataset_results))
    return table

  def _figures(self, step: int, eval_sets: Sequence[EvalSet], outputs: dict) -> None:
    folder = self._path(os.path.join("figures", f"step{step:07d}"))
    os.makedirs(folder, exist_ok=True)
    for eval_set in eval_sets:
      for image, bicubic in list(zip(eval_set.images, eval_set.bicubic))[: self.max_figures]:
        name = _file_name(eval_set.name, image.name)
        panels = [("bicubic", bicubic)]
        before = os.path.join(_start_dir(self.workdir), name)
        if step and os.path.exists(before):  # 8-bit, as the metrics see it
          panels.append((f"{self.model_name} step 0", data.to_float(data.read_image(before))))
        panels.append((f"{self.model_name} step {step}", outputs[eval_set.name, image.name]))
        title = f"{eval_set.name}/{image.name} x{self.scale}, step {step}"
        scorer, hr = eval_set.scorer, image.hr
        hr_niqe = scorer.niqe(hr, self.scale) if "niqe" in scorer.names else None
        figure = figures.zoom_comparison_figure(
          panels,
          hr,
          self.scale,
          title=title,
          caption=lambda sr, scorer=scorer, hr=hr: scorer.caption(sr, hr, self.scale),
          hr_caption="HR" if hr_niqe is None else f"HR\nNIQE {hr_niqe:.3f}",
        )
        figure.save(os.path.join(folder, name))
        if eval_set is eval_sets[0] and image is eval_set.images[0]:
          figure.save(self._path("comparison.png"))

  def report_start(
    self, dataset_results: dict, eval_sets: Sequence[EvalSet] = (), outputs: dict | None = None
  ) -> None:
    """The step-0 evaluation (e.g. a pretrained network before fine-tuning); its SR images are
    kept (8-bit PNG) as the "before" panel of later figures."""
    if not self.enabled:
      return
    if outputs:
      self._figures(0, eval_sets, outputs)
      os.makedirs(_start_dir(self.workdir), exist_ok=True)
      for (set_name, image_name), sr in outputs.items():
        path = os.path.join(_start_dir(self.workdir), _file_name(set_name, image_name))
        data.write_image(path, metrics.to_uint8(sr))
    document = results_document(0, self.scale, dataset_results)
    _write_atomic(self._path(START_RESULTS), json.dumps(document, indent=2, allow_nan=False))
    if self.writer is not None:
      self.writer.write(0, scalars(dataset_results))

  def final_table(self) -> str:
    """The last evaluation beside bicubic and, when it was evaluated, the model at step 0."""
    with open(self._path(RESULTS)) as f:
      final = json.load(f)
    start = None
    if os.path.exists(self._path(START_RESULTS)):
      with open(self._path(START_RESULTS)) as f:
        start = json.load(f)
    header = (
      f"Evaluation at step {final['step']}, x{final['scale']}, Y channel (BT.601), "
      f"border {final['scale']} px:\n\n"
    )
    return (
      header + markdown_table(final, self.model_name, start or {"step": 0, "datasets": {}}) + "\n"
    )
