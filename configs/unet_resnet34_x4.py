"""U-Net x4 with a torchvision ImageNet ResNet-34 encoder: the DIV2K-scale recipe for GPU/TPU.

Needs the torchvision weights (downloaded once into $SR_JAX_CACHE, or put there by hand) and HR
training images, e.g.
  python launch.py --config=configs/unet_resnet34_x4.py --workdir=W \
    --config.data.train_dirs='("/data/DIV2K/DIV2K_train_HR",)' \
    --config.eval.dirs='("/data/DIV2K/DIV2K_valid_HR",)'
"""

from configs import unet_effnetlite0_x4


def get_config():
  config = unet_effnetlite0_x4.get_config()
  config.model.encoder.name = "resnet34"
  config.model.encoder.weights = "torchvision:resnet34"
  config.data.patch_size = 64
  config.train.batch_size = 16
  config.train.steps = 300_000
  config.train.freeze_encoder_steps = 5000
  config.train.eval_every_steps = 5000
  config.train.checkpoint_every_steps = 5000
  return config
