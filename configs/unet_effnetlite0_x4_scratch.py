"""The scratch twin of unet_effnetlite0_x4: the same everything, but a random encoder."""

from configs import unet_effnetlite0_x4


def get_config():
  config = unet_effnetlite0_x4.get_config()
  config.model.encoder.weights = None
  return config
