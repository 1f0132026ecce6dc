"""A slim EDSR x2 trained from scratch in a few minutes on 2 CPU cores (the bundled photos).

It learns a correction to bicubic (so it starts at bicubic quality) and is evaluated on the
held-out photos against bicubic.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.scale = 2
  config.data.patch_size = 32
  config.model.num_feat = 32
  config.model.num_block = 4
  config.model.bicubic_residual = True
  config.optim.learning_rate = 5e-4
  config.optim.warmup_steps = 20
  config.train.batch_size = 16
  config.train.steps = 400
  config.train.log_every_steps = 20
  config.train.eval_every_steps = 200
  config.train.checkpoint_every_steps = 100
  return config
