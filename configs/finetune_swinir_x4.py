"""Fine-tune classical SwinIR-M x4 (pixelshuffle, 6 RSTB x 6 blocks, 180 channels, window 8).

Start from the official release file, e.g. `001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth` from
https://github.com/JingyunLiang/SwinIR/releases (download it yourself; no registry entry):
--config.model.weights=/path/001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth. The keys below are
that file's hyperparameters (checked on load; the DIV2K `s48w8` file needs
--config.model.img_size=48).
With weights="" the network trains from scratch. L1 on `data.train_dirs`, evaluation on
`eval.dirs`. SwinIR-M is ~12 M parameters of windowed attention: on 2 CPU cores a step takes
seconds, so the defaults are a short recipe; on an accelerator raise train.batch_size /
data.patch_size (a multiple of the window keeps padding out of the patches) / train.steps.
"""

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.data.scale = 4
  config.data.patch_size = 32  # LR side, a multiple of window_size; HR patches are 128x128
  config.model = ml_collections.ConfigDict()
  config.model.name = "swinir"
  config.model.weights = ""  # path of an official SwinIR .pth / .safetensors; "" = from scratch
  # Hyperparameters: names and values of the official classical x4 model (checked on load).
  config.model.img_size = 64  # training patch of the file (attention masks only); 48 for s48w8
  config.model.in_chans = 3
  config.model.embed_dim = 180
  config.model.depths = (6, 6, 6, 6, 6, 6)
  config.model.num_heads = (6, 6, 6, 6, 6, 6)
  config.model.window_size = 8
  config.model.mlp_ratio = 2.0
  config.model.qkv_bias = True
  config.model.patch_norm = True
  config.model.img_range = 1.0
  config.model.upsampler = "pixelshuffle"  # | "pixelshuffledirect" | "nearest+conv" | ""
  config.model.resi_connection = "1conv"  # | "3conv"
  config.model.start_unshuffle = 1
  config.model.num_feat = 64
  config.optim.learning_rate = 2e-5
  config.optim.warmup_steps = 10
  config.train.batch_size = 4
  config.train.steps = 100
  config.train.log_every_steps = 10
  config.train.eval_every_steps = 50
  config.train.checkpoint_every_steps = 50
  return config
