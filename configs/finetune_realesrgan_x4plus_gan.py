"""Stage 2 of Real-ESRGAN's two-stage recipe for RealESRGAN_x4plus (RRDBNet): GAN fine-tuning with
its losses and discriminator as in train_realesrgan_x4plus.yml.

  # stage 1, PSNR-oriented (Real-ESRNet: L1 on unsharp-masked targets)
  python launch.py --config=configs/finetune_realesrgan_x4plus.py --workdir=runs/psnr \
      --config.data.usm=True
  # stage 2, GAN, from stage 1's weights
  python launch.py --config=configs/finetune_realesrgan_x4plus_gan.py --workdir=runs/gan \
      --config.model.weights=runs/psnr

Losses: L1 1.0 and perceptual 1.0 on the unsharp-masked HR (data.usm; the discriminator sees the
original HR), perceptual = VGG19 before-ReLU conv1_2, conv2_2, conv3_4, conv4_4, conv5_4 weighted
0.1, 0.1, 1, 1, 1 (ImageNet weights: registry "torchvision:vgg19", downloaded once), GAN 0.1
(vanilla) against UNetDiscriminatorSN(num_feat=64); Adam 1e-4 (betas 0.9, 0.99) for both
networks, constant; EMA 0.999. Real-ESRGAN's released discriminator continues its training:
--config.gan.discriminator.weights=/path/RealESRGAN_x4plus_netD.pth. Offline (no VGG19 download):
--config.loss.feature_backbone.name=efficientnet_lite0
--config.loss.feature_backbone.weights=efficientnet_lite0 --config.loss.feature_layers='(0,1,2)'
--config.loss.feature_layer_weights='()' --config.loss.feature_weight=0.1.
Real-ESRGAN trains on 256 px HR patches, 12 per GPU x 4 GPUs: on an accelerator raise
train.batch_size and data.patch_size (64) accordingly.
"""

from configs import finetune_realesrgan_x4plus


def get_config():
  config = finetune_realesrgan_x4plus.get_config()
  config.data.usm = True
  config.loss.l1_weight = 1.0
  config.loss.feature_weight = 1.0
  config.loss.feature_backbone.name = "vgg19"
  config.loss.feature_backbone.weights = "torchvision:vgg19"
  config.loss.feature_layers = ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")
  config.loss.feature_layer_weights = (0.1, 0.1, 1.0, 1.0, 1.0)
  config.gan.weight = 0.1
  config.gan.loss = "vanilla"
  config.gan.learning_rate = 1e-4
  config.gan.discriminator.num_feat = 64
  config.optim.learning_rate = 1e-4
  config.optim.schedule = "constant"
  config.optim.warmup_steps = 0
  config.optim.grad_clip_norm = 0.0  # Real-ESRGAN clips no gradient
  return config
