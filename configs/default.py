"""Base config: EDSR-baseline x4 on DIV2K-style HR folders (a GPU/TPU recipe, as BasicSR's).

Other configs import this one and change a few keys. Every key can be overridden on the command
line, e.g. --config.train.steps=20 --config.data.train_dirs='("/my/imgs",)'.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.train_dirs = ("embedded:train",)  # folders of HR images; "embedded:*" = bundled photos
  config.data.scale = 4
  config.data.patch_size = 48  # LR side of a training patch
  config.data.augment = True  # random flips and 90-degree rotations
  config.data.worker_count = 0  # grain worker processes (0 = in the training process)

  config.model = ml_collections.ConfigDict()
  config.model.name = "edsr"
  config.model.num_features = 64
  config.model.num_blocks = 16
  config.model.res_scale = 1.0
  config.model.bicubic_residual = False
  config.model.pretrained = ""  # path or registry name of pretrained weights ("" = from scratch)

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 2e-4
  config.optim.schedule = "cosine"  # cosine | step | constant
  config.optim.warmup_steps = 1000
  config.optim.end_lr_factor = 0.01
  config.optim.step_decay_at = (0.5, 0.75)  # fractions of train.steps, for schedule="step"
  config.optim.step_decay_factor = 0.5
  config.optim.b1 = 0.9
  config.optim.b2 = 0.99
  config.optim.weight_decay = 0.0
  config.optim.grad_clip_norm = 1.0  # 0 = no clipping
  config.optim.encoder_lr_mult = 1.0  # learning-rate factor for a pretrained encoder's parameters

  config.loss = ml_collections.ConfigDict()
  config.loss.l1_weight = 1.0
  config.loss.feature_weight = 0.0  # > 0 adds a feature (perceptual) loss from a frozen backbone
  config.loss.feature_backbone = "efficientnet_lite0"
  config.loss.feature_weights = "efficientnet_lite0"  # path or registry name
  config.loss.feature_layers = (0, 1, 2)  # indices into the backbone's features (strides 2, 4, 8, ...)

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16  # global, split over all devices of all hosts
  config.train.steps = 300_000
  config.train.freeze_encoder_steps = 0  # a pretrained encoder stays frozen for this many steps
  config.train.eval_at_start = False  # also evaluate before the first step (pretrained models)
  config.train.ema_decay = 0.999  # 0 = no EMA; evaluation uses the EMA weights otherwise
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 5000
  config.train.checkpoint_every_steps = 5000
  config.train.keep_checkpoints = 3

  config.eval = ml_collections.ConfigDict()
  config.eval.dirs = ("embedded:val",)  # folders of HR images, each reported under its folder name
  config.eval.checkpoint = "latest"  # for --mode=eval: latest | best | STEP
  return config
