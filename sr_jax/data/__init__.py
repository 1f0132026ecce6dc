"""Input pipeline: HR image folders or TFDS datasets -> (LR, HR) training batches; evaluation images.

Public interface used by the training loop:
  default_config()                       the `data` config block
  create_train_iterator(cfg, seed, local_batch_size, process_index, process_count)
  load_eval_folder(path, scale)          -> list[EvalImage(name, lr, hr)]
  eval_folders(dirs, datasets, root)     `eval.dirs` + `eval.datasets` (named benchmark sets
                                         such as "set5", or folders) -> [EvalFolder(name, path)]
  embedded_photo_dirs(cache_dir=None)    -> (train_dir, val_dir) of the bundled photos
  resolve_dirs(dirs, cache_dir=None)     "embedded:train" / "embedded:val" -> real folders
  imresize(img, scale), bicubic_upsample(lr, scale)   MATLAB-compatible bicubic
  realesrgan_degrade(hr, scale, rng)     Real-ESRGAN second-order degradation (numpy)
  pair_folders(hr_dir, lr_dir, scale)    paired LR/HR folders, checked
Writing a TFDS dataset from folders: `python -m sr_jax.data.prepare --help` (see README.md here).
"""

from sr_jax.data.benchmarks import (
  BENCHMARKS,
  EvalFolder,
  eval_folders,
  folder_name,
  resolve_benchmark,
)
from sr_jax.data.degradations import realesrgan_degrade
from sr_jax.data.embedded import embedded_photo_dirs, resolve_dirs
from sr_jax.data.image_io import ImageReadError, list_images, read_image
from sr_jax.data.imresize import bicubic_upsample, imresize
from sr_jax.data.pairs import ImagePair, PairingError, pair_folders
from sr_jax.data.pipeline import (
  EvalImage,
  create_train_dataset,
  create_train_iterator,
  default_config,
  load_eval_folder,
  make_lr,
  mod_crop,
)
