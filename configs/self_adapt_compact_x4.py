"""Self-supervised adaptation as a training run: Real-ESRGAN's compact x4 network (offline
weights) adapted to a folder of low-resolution images, with no HR image anywhere.

  python launch.py --config=configs/self_adapt_compact_x4.py --workdir=runs/adapt \
      --config.data.train_dirs='("/my/lr_images",)'

`data.degradation="self"`: each training pair is a crop of one of the LR images (the target) and
its MATLAB-bicubic downscale by 4 (the input), flipped / rotated at random; the same recipe as
`python -m sr_jax.upscale --adapt_steps=N` (the `adapt` block of configs/default.py), but
checkpointed and resumable like any run. Upscale the folder afterwards with
`python -m sr_jax.upscale --workdir=runs/adapt --input=/my/lr_images --output=OUT`.
No evaluation by default (there is no HR); set eval.dirs to HR folders only to measure.
"""

from configs import default, finetune_realesrgan_compact_x4


def get_config():
  config = finetune_realesrgan_compact_x4.get_config()
  recipe = default.get_config().adapt
  config.data.degradation = "self"
  config.data.train_dirs = ()  # the LR images to adapt to: required
  config.data.patch_size = recipe.patch_size  # LR images are small: 16 -> 64-pixel targets
  config.optim.learning_rate = recipe.learning_rate
  config.optim.warmup_steps = recipe.warmup_steps
  config.optim.end_lr_factor = 0.1
  config.train.batch_size = recipe.batch_size
  config.train.steps = recipe.steps
  config.train.ema_decay = recipe.ema_decay
  config.train.log_every_steps = 20
  config.train.checkpoint_every_steps = 50
  config.eval.dirs = ()
  return config
