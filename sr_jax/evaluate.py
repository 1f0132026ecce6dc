"""Full-image evaluation: PSNR-Y / SSIM-Y (border = scale) of a model and of bicubic, per folder."""

import dataclasses
import json
import os
from typing import Callable, Sequence

import numpy as np

from sr_jax import data, metrics
from sr_jax.data.imresize import imresize

# lr [h, w, 3] float32 in [0, 1] -> sr [h*s, w*s, 3].
PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class EvalSet:
  name: str
  images: list  # of data.EvalImage
  bicubic: list  # bicubic upscales of the LR images, computed once


def dataset_name(spec: str) -> str:
  """'embedded:val' -> 'embedded_val'; '/data/Set5/' -> 'Set5'."""
  return data.folder_name(spec)


def load_eval_sets(
  dir_specs: Sequence[str], scale: int, datasets: Sequence[str] = (), data_root: str = ""
) -> list[EvalSet]:
  """Loads each eval folder's HR images once, with their LR and bicubic versions.

  `dir_specs` are folders (`eval.dirs`), `datasets` named benchmark sets such as set5 or urban100
  resolved under `data_root` (`eval.datasets`, `eval.data_root`).
  """
  sets = []
  for name, path in data.eval_folders(tuple(dir_specs), tuple(datasets), data_root):
    images = data.load_eval_folder(path, scale)
    bicubic = [np.clip(imresize(im.lr, scale), 0.0, 1.0) for im in images]
    sets.append(EvalSet(name, images, bicubic))
  return sets


def pad_to_bucket(lr: np.ndarray, multiple: int, mode: str = "reflect") -> np.ndarray:
  """Pads an [h, w, c] image at the bottom / right up to the next multiple of `multiple` per side."""
  height, width = lr.shape[:2]
  pad_h, pad_w = -height % multiple, -width % multiple
  if pad_h == 0 and pad_w == 0:
    return lr
  if mode == "reflect" and min(height, width) == 1:
    mode = "edge"  # nothing to reflect on a 1-pixel side
  return np.pad(lr, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (lr.ndim - 2), mode=mode)


def bucketed(predict: PredictFn, multiple: int = 64, mode: str = "reflect") -> PredictFn:
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
    padded = pad_to_bucket(lr, multiple, mode)
    sr = np.asarray(predict(padded))
    scale = sr.shape[0] // padded.shape[0]
    return sr[: height * scale, : width * scale]

  return predict_bucketed


def evaluate(
  predict: PredictFn, eval_sets: Sequence[EvalSet], scale: int, bucket: int | None = None
) -> dict:
  """Mean PSNR-Y / SSIM-Y of `predict` and of bicubic on every set.

  Args:
    predict: lr -> sr on one full image.
    eval_sets: from `load_eval_sets`.
    scale: SR factor (also the border cropped before the metrics).
    bucket: if set, LR sides are padded up to multiples of it (see `bucketed`), so a jitted
      `predict` compiles once per bucket instead of once per image size.

  Returns:
    {set name: {psnr_y, ssim_y, bicubic_psnr_y, bicubic_ssim_y, num_images}}.
  """
  if bucket:
    predict = bucketed(predict, bucket)
  results = {}
  for eval_set in eval_sets:
    rows = []
    for image, bicubic in zip(eval_set.images, eval_set.bicubic):
      sr = np.clip(np.asarray(predict(image.lr), np.float32), 0.0, 1.0)
      rows.append(
        (
          metrics.psnr_y(sr, image.hr, scale),
          metrics.ssim_y(sr, image.hr, scale),
          metrics.psnr_y(bicubic, image.hr, scale),
          metrics.ssim_y(bicubic, image.hr, scale),
        )
      )
    mean = np.mean(np.asarray(rows, np.float64), axis=0)
    results[eval_set.name] = {
      "psnr_y": float(mean[0]),
      "ssim_y": float(mean[1]),
      "bicubic_psnr_y": float(mean[2]),
      "bicubic_ssim_y": float(mean[3]),
      "num_images": len(rows),
    }
  return results


def results_document(step: int, scale: int, dataset_results: dict) -> dict:
  return {"step": int(step), "scale": int(scale), "datasets": dataset_results}


def markdown_table(document: dict, model_name: str = "model") -> str:
  """One row per dataset for the model and one for bicubic."""
  lines = ["| dataset | method | PSNR-Y (dB) | SSIM-Y | images |", "|---|---|---|---|---|"]
  for name, r in document["datasets"].items():
    lines.append(
      f"| {name} | bicubic | {r['bicubic_psnr_y']:.2f} | {r['bicubic_ssim_y']:.4f} | {r['num_images']} |"
    )
    lines.append(
      f"| {name} | {model_name} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {r['num_images']} |"
    )
  return "\n".join(lines)


def write_results(workdir: str, document: dict, model_name: str = "model") -> str:
  """Writes eval_results.json and eval_results.md atomically; returns the Markdown table."""
  table = markdown_table(document, model_name)
  header = f"Evaluation at step {document['step']}, x{document['scale']}, border {document['scale']} px cropped, Y channel (BT.601).\n\n"
  for filename, text in (
    ("eval_results.json", json.dumps(document, indent=2)),
    ("eval_results.md", header + table + "\n"),
  ):
    tmp = os.path.join(workdir, filename + ".tmp")
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, os.path.join(workdir, filename))
  return table
