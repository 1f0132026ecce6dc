"""Input data: training batches, evaluation sets, image reading and writing, degradations.

Use it as `from sr_jax import data` and `data.X`; the names below are the interface (layout and
config keys in sr_jax/data/README.md; the defaults of every key: the `data` block of
configs/default.py).

Training:
  create_train_iterator(config.data, seed, local_batch_size, process_index, process_count)
  create_train_dataset(...)              the same, as a Grain IterDataset
  embedded_photo_dirs(cache_dir=None)    -> (train_dir, val_dir) of the bundled photos
  resolve_dirs(dirs, cache_dir=None)     "embedded:train" / "embedded:val" -> real folders
  pair_folders(hr_dir, lr_dir, scale)    paired LR/HR folders, checked
  write_tfds_dataset(name, data_dir, hr_dir, ...)  folders -> ArrayRecord TFDS dataset
                                         (command line: `python -m sr_jax.data.prepare`)
Examples:
  make_lr(hr, scale), mod_crop(img, scale), to_float(img)
  imresize(img, scale)                   MATLAB-compatible bicubic (numpy)
  bicubic_baseline(lr, scale)            the model-free bicubic SR baseline, clipped to [0, 1]
  realesrgan_degrade(hr, scale, rng, config.data.realesrgan)
Evaluation:
  eval_folders(dirs, datasets, root)     `eval.dirs` + `eval.datasets` (named sets of EVAL_SETS
                                         such as "set5", or folders) -> [EvalFolder(name, path)]
  load_eval_folder(path, scale)          -> [EvalImage(name, lr, hr)] (bad files skipped)
  load_eval_image(path, scale)           -> EvalImage of one file
Images:
  read_image(path)                       uint8 RGB, for training and evaluation
  read_image_full(path)                  FullImage: 16-bit, gray and alpha kept (inference)
  write_image(path, color, alpha, icc)   any format of WRITABLE_EXTENSIONS; write_png
  upscale_alpha(alpha, scale), composite_on_white(color, alpha), list_images(dirs)
"""

from sr_jax.data.degradations import realesrgan_degrade
from sr_jax.data.embedded import embedded_photo_dirs, resolve_dirs
from sr_jax.data.eval_sets import (
  EVAL_SETS,
  EvalFolder,
  EvalImage,
  EvalSet,
  data_root,
  eval_folders,
  folder_name,
  load_eval_folder,
  load_eval_image,
  resolve_eval_set,
)
from sr_jax.data.examples import make_lr, mod_crop, to_float
from sr_jax.data.image_io import (
  IMAGE_EXTENSIONS,
  FullImage,
  ImageReadError,
  composite_on_white,
  list_images,
  read_image,
  read_image_full,
)
from sr_jax.data.image_write import WRITABLE_EXTENSIONS, upscale_alpha, write_image, write_png
from sr_jax.data.imresize import bicubic_baseline, imresize
from sr_jax.data.pairs import ImagePair, PairingError, pair_folders
from sr_jax.data.pipeline import create_train_dataset, create_train_iterator
from sr_jax.data.tfds_writer import TFDS_ENCODINGS, SubImageOptions, write_tfds_dataset

__all__ = [
  "bicubic_baseline",
  "composite_on_white",
  "create_train_dataset",
  "create_train_iterator",
  "data_root",
  "embedded_photo_dirs",
  "eval_folders",
  "EVAL_SETS",
  "EvalFolder",
  "EvalImage",
  "EvalSet",
  "folder_name",
  "FullImage",
  "IMAGE_EXTENSIONS",
  "ImagePair",
  "ImageReadError",
  "imresize",
  "list_images",
  "load_eval_folder",
  "load_eval_image",
  "make_lr",
  "mod_crop",
  "pair_folders",
  "PairingError",
  "read_image",
  "read_image_full",
  "realesrgan_degrade",
  "resolve_dirs",
  "resolve_eval_set",
  "SubImageOptions",
  "TFDS_ENCODINGS",
  "to_float",
  "upscale_alpha",
  "WRITABLE_EXTENSIONS",
  "write_image",
  "write_png",
  "write_tfds_dataset",
]
