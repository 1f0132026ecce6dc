"""Base config: EDSR-baseline x4 on DIV2K-style HR folders (a GPU/TPU recipe, as BasicSR's).

Other configs import this one and change a few keys. Every key can be overridden on the command
line, e.g. --config.train.steps=20 --config.data.train_dirs='("/my/imgs",)'.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Every key of the input pipeline (sr_jax/data), with its default; the code has no other.
  config.data = ml_collections.ConfigDict()
  # Training source: "folder" (train_dirs) or "tfds" (an ArrayRecord TFDS dataset read without
  # TensorFlow: the catalog's div2k configs, or one written by `python -m sr_jax.data.prepare`).
  config.data.source = "folder"
  config.data.train_dirs = ("embedded:train",)  # HR image folders; "embedded:*" = bundled photos
  config.data.train_lr_dirs = ()  # paired LR folders, one per train_dirs entry ("paired")
  config.data.tfds_name = ""  # e.g. "div2k/bicubic_x4"
  config.data.tfds_data_dir = ""  # "" = ~/tensorflow_datasets or $TFDS_DATA_DIR
  config.data.tfds_split = "train"
  config.data.cache_dir = ""  # where the embedded photos go; "" = $SR_JAX_CACHE or ~/.cache/sr_jax
  config.data.cache_max_mb = 2048  # decoded folder images kept in memory up to this (per process)
  config.data.scale = 4  # SR factor
  config.data.patch_size = 48  # LR side of a training patch (the HR side is patch_size * scale)
  config.data.augment = True  # random flips and 90-degree rotations
  # LR from HR: "bicubic" (MATLAB imresize) | "realesrgan" (second-order blur/resize/noise/JPEG,
  # options below) | "paired" (stored LR: train_lr_dirs, or the TFDS dataset's "lr" images) |
  # "self" (no HR: train_dirs hold the LR images to adapt to; pairs = crop + its bicubic
  # downscale, see sr_jax/adapt.py and configs/self_adapt_compact_x4.py).
  config.data.degradation = "bicubic"
  config.data.quantize_lr = True  # round bicubic LR to 8-bit levels, like the test sets' LR PNGs
  # Unsharp-masked HR targets, as Real-ESRGAN's training (BasicSR USMSharp: weight 0.5, 51 px
  # gaussian, threshold 10): the batch's "hr" is sharpened, "hr_unsharpened" keeps the original
  # (the discriminator's real images); "realesrgan" degrades the sharpened HR, as the reference.
  config.data.usm = False
  config.data.num_threads = 2  # threads preparing batches, in each process
  config.data.prefetch_buffer_size = 4  # batches prepared ahead
  config.data.worker_count = 0  # Grain worker processes (0 = in the training process)
  # Real-ESRGAN x4plus degradation options (names and defaults of its train_realesrgan_x4plus.yml).
  kernels = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
  kernel_prob = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
  config.data.realesrgan = ml_collections.ConfigDict(
    {
      # First-order blur; kernel sizes are drawn from 7, 9, ..., blur_kernel_size.
      "blur_kernel_size": 21,
      "kernel_list": kernels,  # kernel types, drawn with kernel_prob
      "kernel_prob": kernel_prob,
      "sinc_prob": 0.1,  # a sinc kernel instead of the above
      "blur_sigma": (0.2, 3.0),  # gaussian sigma range (pixels)
      "betag_range": (0.5, 4.0),  # generalized gaussian shape range
      "betap_range": (1.0, 2.0),  # plateau shape range
      # Second-order blur (applied with second_blur_prob), same meanings.
      "kernel_list2": kernels,
      "kernel_prob2": kernel_prob,
      "sinc_prob2": 0.1,
      "blur_sigma2": (0.2, 1.5),
      "betag_range2": (0.5, 4.0),
      "betap_range2": (1.0, 2.0),
      "final_sinc_prob": 0.8,  # sinc filter after the final resize
      # First-order resize, noise, JPEG.
      "resize_prob": (0.2, 0.7, 0.1),  # up, down, keep
      "resize_range": (0.15, 1.5),  # resize factor range
      "gaussian_noise_prob": 0.5,  # else poisson
      "noise_range": (1.0, 30.0),  # gaussian sigma, in 8-bit levels
      "poisson_scale_range": (0.05, 3.0),
      "gray_noise_prob": 0.4,  # the same noise in every channel
      "jpeg_range": (30.0, 95.0),  # JPEG quality range
      # Second order, same meanings.
      "second_blur_prob": 0.8,
      "resize_prob2": (0.3, 0.4, 0.3),
      "resize_range2": (0.3, 1.2),
      "gaussian_noise_prob2": 0.5,
      "noise_range2": (1.0, 25.0),
      "poisson_scale_range2": (0.05, 2.5),
      "gray_noise_prob2": 0.4,
      "jpeg_range2": (30.0, 95.0),
    }
  )

  config.model = ml_collections.ConfigDict()
  config.model.name = "edsr"
  # Pretrained weights (path or registry name), loaded once when a run starts without a
  # checkpoint; "" = from scratch. The U-Net's are model.encoder.weights.
  config.model.weights = ""
  config.model.num_feat = 64  # BasicSR's EDSR names
  config.model.num_block = 16
  config.model.res_scale = 1.0
  config.model.bicubic_residual = False

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
  # The frozen backbone of the feature loss and its pretrained weights (path or registry name).
  config.loss.feature_backbone = ml_collections.ConfigDict(
    {"name": "efficientnet_lite0", "weights": "efficientnet_lite0"}
  )
  config.loss.feature_layers = (0, 1, 2)  # backbone feature indices (strides 2, 4, 8, ...)
  # VGG: BasicSR layer names instead, e.g. ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4").
  config.loss.feature_layer_weights = ()  # one per feature layer, summed; () = their mean

  # GAN fine-tuning as Real-ESRGAN (sr_jax/gan.py): gan.weight > 0 trains a discriminator beside
  # the network, which gets loss.* plus gan.weight * its GAN loss. Real-ESRGAN: weight 0.1, vanilla.
  config.gan = ml_collections.ConfigDict()
  config.gan.weight = 0.0  # 0 = no GAN (the plain step)
  config.gan.loss = "vanilla"  # vanilla (BCE) | lsgan | hinge, as BasicSR's GANLoss gan_type
  # The discriminator's Adam: optim.* (schedule, betas, clipping) with this peak learning rate.
  config.gan.learning_rate = 1e-4
  # The discriminator trains alone for this many first steps (BasicSR's net_d_init_iters).
  config.gan.discriminator_init_steps = 0
  config.gan.discriminator = ml_collections.ConfigDict(
    {
      "name": "unet_sn",  # Real-ESRGAN's UNetDiscriminatorSN
      "num_feat": 64,
      "skip_connection": True,
      "weights": "",  # a BasicSR discriminator .pth (e.g. RealESRGAN_x4plus_netD.pth); "" = random
    }
  )

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16  # global (one update), split over all devices of all hosts
  # > 1: the batch runs as this many micro-batches one after the other, one update with their
  # mean gradient (the activation memory of one micro-batch); batch_size % (k * devices) == 0.
  config.train.grad_accum_steps = 1
  # "float32" | "bfloat16": what the network computes in. Weights, gradients, optimizer state, EMA,
  # loss and metrics stay float32 (sr_jax/models/precision.py).
  config.train.compute_dtype = "float32"
  config.train.steps = 300_000
  config.train.freeze_encoder_steps = 0  # a pretrained encoder stays frozen for this many steps
  config.train.eval_at_start = False  # also evaluate before the first step (pretrained models)
  config.train.ema_decay = 0.999  # 0 = no EMA; evaluation uses the EMA weights otherwise
  # Every N steps; 0 = only at the end (and, for checkpoints, at evaluations and on SIGTERM).
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 5000
  config.train.checkpoint_every_steps = 5000
  config.train.keep_checkpoints = 3
  # (first, last): a jax.profiler trace of steps first..last (both included) in WORKDIR/profile
  # (TensorBoard's profile tab, or Perfetto); () = off.
  config.train.profile_steps = ()

  # Self-supervised adaptation to the images to upscale, without HR (sr_jax/adapt.py;
  # `python -m sr_jax.upscale --adapt_steps=N`): pairs = crops of the inputs and their bicubic
  # downscale by the scale. Values picked on the bundled photos (README, transfer section).
  config.adapt = ml_collections.ConfigDict()
  config.adapt.steps = 200
  config.adapt.batch_size = 8
  config.adapt.patch_size = 16  # LR side of a pair; the target crop is patch_size * scale
  config.adapt.learning_rate = 2e-4
  config.adapt.warmup_steps = 10
  config.adapt.ema_decay = 0.99  # 0 = the last weights instead of their EMA
  config.adapt.seed = 0

  config.eval = ml_collections.ConfigDict()
  config.eval.dirs = ("embedded:val",)  # folders of HR images, each reported under its folder name
  # Named evaluation sets (set5, set14, b100, urban100, manga109, div2k_val) or folders.
  config.eval.datasets = ()
  config.eval.data_root = (
    ""  # where the named sets live; "" = $SR_JAX_DATA or ~/.cache/sr_jax/datasets
  )
  # LR sides padded (reflect) up to multiples of this, so image sizes don't each compile; 0 = exact
  # full images (one compile per size; BasicSR-identical borders).
  config.eval.bucket = 16
  config.eval.checkpoint = "latest"  # for --mode=eval: latest | best | STEP
  # Metrics per eval set, each beside bicubic's: psnr_y (required: picks the best checkpoint),
  # ssim_y, niqe (no reference, BasicSR's; ~0.3 s per 512x512 image), lpips (eval.lpips below).
  config.eval.metrics = ("psnr_y", "ssim_y")
  config.eval.lpips = ml_collections.ConfigDict()
  config.eval.lpips.net = "alex"  # alex | vgg (VGG-16)
  # A .pth of lpips.LPIPS's state_dict (backbone and heads); "" = the heads of the installed
  # lpips wheel (pip install --no-deps lpips) with the `backbone` below.
  config.eval.lpips.weights = ""
  config.eval.lpips.backbone = "imagenet"  # torchvision:alexnet / vgg16 (downloaded once) or a path
  return config
