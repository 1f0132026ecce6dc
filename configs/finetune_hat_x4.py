"""Fine-tune HAT x4 (Hybrid Attention Transformer) on your own photos.

The model keys are the official HAT (base) SRx4 release: embed_dim 180, 6 groups of 6 blocks,
window 16. Point model.weights at a HAT state dict (e.g. the official `HAT_SRx4_ImageNet-pretrain
.pth`, a `.safetensors`, or a BasicSR checkpoint with `params_ema`); loading checks its
architecture and hyperparameters against these keys, so for HAT-S set
  --config.model.embed_dim=144 --config.model.compress_ratio=24 --config.model.squeeze_factor=24
and for HAT-L --config.model.depths='(6,6,6,6,6,6,6,6,6,6,6,6)'
--config.model.num_heads='(6,6,6,6,6,6,6,6,6,6,6,6)'. Then, e.g.
  python launch.py --config=configs/finetune_hat_x4.py --workdir=/tmp/hat \
    --config.model.weights=/path/HAT_SRx4_ImageNet-pretrain.pth \
    --config.data.train_dirs='("/my/photos/train",)' --config.eval.dirs='("/my/photos/val",)'
With model.weights="" it trains from scratch. HAT is heavy on CPU: batch and patch are small here;
on an accelerator use the paper's 64x64 LR patches and batch 32.
"""

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.data.scale = 4
  config.data.patch_size = 32  # LR side, a multiple of the window (HR patches are 128x128)
  # HAT's keys replace EDSR's (names and defaults of the reference HAT constructor).
  config.model = ml_collections.ConfigDict()
  config.model.name = "hat"
  config.model.weights = ""  # a HAT .pth / .safetensors path; "" = from scratch
  config.model.img_size = 64  # only matters with ape (the input size of the position embedding)
  config.model.patch_size = 1
  config.model.in_chans = 3
  config.model.embed_dim = 180
  config.model.depths = (6, 6, 6, 6, 6, 6)
  config.model.num_heads = (6, 6, 6, 6, 6, 6)
  config.model.window_size = 16
  config.model.compress_ratio = 3
  config.model.squeeze_factor = 30
  config.model.conv_scale = 0.01
  config.model.overlap_ratio = 0.5
  config.model.mlp_ratio = 2.0
  config.model.qkv_bias = True
  config.model.ape = False
  config.model.patch_norm = True
  config.model.img_range = 1.0
  config.model.resi_connection = "1conv"
  config.model.num_feat = 64
  # Fine-tuning: a small learning rate, so the pretrained weights move, not restart.
  config.optim.learning_rate = 1e-5
  config.optim.warmup_steps = 10
  config.train.batch_size = 4
  config.train.steps = 300
  config.train.log_every_steps = 20
  config.train.eval_every_steps = 100
  config.train.checkpoint_every_steps = 100
  return config
