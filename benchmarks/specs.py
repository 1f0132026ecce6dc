"""What each benchmark row runs: a config from configs/ plus the few keys the benchmark fixes.

Imports ml_collections and configs only (no jax, no torch), so the parent process and both
framework workers read the same settings.
"""

import dataclasses
import importlib

import ml_collections


@dataclasses.dataclass(frozen=True)
class Spec:
  config: str  # module under configs/
  overrides: dict  # dotted config key -> value
  infer_size: int  # LR side of the inference image
  note: str


# Random weights everywhere ("" = no pretrained file): speed does not depend on the values, and
# nothing has to be read or downloaded. Every model trains all its parameters (no frozen encoder);
# the U-Nets keep the fine-tuning recipe's frozen BatchNorm statistics (freeze_bn=True), as with
# pretrained weights.
SPECS = {
  "edsr_baseline": Spec(
    "default",
    {"data.patch_size": 48, "train.batch_size": 16},
    256,
    "EDSR-baseline x4 (16 blocks, 64 ch); batch 16 x 48x48 LR",
  ),
  "unet_resnet34": Spec(
    "unet_resnet34_x4",
    {
      "model.encoder.weights": "",
      "model.encoder.freeze_bn": True,
      "train.freeze_encoder_steps": 0,
      "data.patch_size": 64,
      "train.batch_size": 16,
    },
    256,
    "U-Net x4, ResNet-34 encoder; batch 16 x 64x64 LR (encoder stride 32)",
  ),
  "unet_effnetlite0": Spec(
    "unet_effnetlite0_x4",
    {
      "model.encoder.weights": "",
      "model.encoder.freeze_bn": True,
      "train.freeze_encoder_steps": 0,
      "data.patch_size": 64,
      "train.batch_size": 16,
    },
    256,
    "U-Net x4, EfficientNet-Lite0 encoder; batch 16 x 64x64 LR (encoder stride 32)",
  ),
  "realesrgan_compact": Spec(
    "finetune_realesrgan_compact_x4",
    {"model.weights": "", "data.patch_size": 48, "train.batch_size": 16},
    256,
    "SRVGGNetCompact x4 (16 convs, 64 ch, PReLU); batch 16 x 48x48 LR",
  ),
  "rrdbnet": Spec(
    "finetune_realesrgan_x4plus",
    {"model.weights": "", "data.patch_size": 24, "train.batch_size": 4},
    64,
    "RRDBNet x4 (23 RRDB, RealESRGAN_x4plus); small sizes: batch 4 x 24x24 LR, "
    "inference 64x64 (it is ~9x EDSR-baseline's compute per pixel)",
  ),
  # For tests and quick checks only (not in the default list).
  "edsr_tiny": Spec(
    "default",
    {
      "model.num_feat": 8,
      "model.num_block": 1,
      "data.scale": 2,
      "data.patch_size": 8,
      "train.batch_size": 4,
    },
    16,
    "EDSR x2, 1 block, 8 ch",
  ),
}
# --preset=accelerator: the batch and patch sizes of the published GPU recipes (EDSR: 16 x 48²,
# Real-ESRGAN's compact and RRDBNet: 16 x 64² LR (gt_size 256), the U-Nets: 16 x 128²) and larger
# inference images; the CPU rows above are sized for 2 cores.
ACCELERATOR = {
  "edsr_baseline": ({"data.patch_size": 48, "train.batch_size": 16}, 512),
  "unet_resnet34": ({"data.patch_size": 128, "train.batch_size": 16}, 512),
  "unet_effnetlite0": ({"data.patch_size": 128, "train.batch_size": 16}, 512),
  "realesrgan_compact": ({"data.patch_size": 64, "train.batch_size": 16}, 512),
  "rrdbnet": ({"data.patch_size": 64, "train.batch_size": 16}, 256),
  "edsr_tiny": ({}, 16),
}
PRESETS = ("cpu", "accelerator")
DTYPES = ("float32", "bfloat16")

DEFAULT_MODELS = (
  "edsr_baseline",
  "unet_resnet34",
  "unet_effnetlite0",
  "realesrgan_compact",
  "rrdbnet",
)


def _set(config: ml_collections.ConfigDict, key: str, value) -> None:
  """config[key] = value for a dotted key the config already has (a renamed key fails here)."""
  *parents, leaf = key.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  if leaf not in node:
    raise KeyError(f"benchmark override {key!r}: the config has no such key")
  node[leaf] = value


def config_for(
  model: str, preset: str = "cpu", dtype: str = "float32"
) -> ml_collections.ConfigDict:
  """The full sr_jax config of benchmark row `model` for `preset` and compute `dtype`."""
  if model not in SPECS:
    raise ValueError(f"unknown benchmark model {model!r}; known: {sorted(SPECS)}")
  if preset not in PRESETS or dtype not in DTYPES:
    raise ValueError(f"preset {preset!r} / dtype {dtype!r}: known {PRESETS} / {DTYPES}")
  spec = SPECS[model]
  config = importlib.import_module(f"configs.{spec.config}").get_config()
  overrides = {**spec.overrides, **(ACCELERATOR[model][0] if preset == "accelerator" else {})}
  for key, value in {**overrides, "train.compute_dtype": dtype}.items():
    _set(config, key, value)
  return config


def infer_size(model: str, preset: str = "cpu") -> int:
  """LR side of the inference image of row `model`."""
  return ACCELERATOR[model][1] if preset == "accelerator" else SPECS[model].infer_size


def torch_settings(model: str, preset: str = "cpu", dtype: str = "float32") -> dict:
  """Plain-data settings the PyTorch side needs to build the same network and step."""
  config = config_for(model, preset, dtype)
  if config.loss.feature_weight:
    raise ValueError(f"{model}: the PyTorch reference step has an L1 loss only")
  return {
    "arch": config.model.name,
    "model": config.model.to_dict(),
    "scale": config.data.scale,
    "batch_size": config.train.batch_size,
    "patch_size": config.data.patch_size,
    "infer_size": infer_size(model, preset),
    "dtype": dtype,  # bfloat16: torch.autocast
    "learning_rate": config.optim.learning_rate,
    "b1": config.optim.b1,
    "b2": config.optim.b2,
    "weight_decay": config.optim.weight_decay,
    "grad_clip_norm": config.optim.grad_clip_norm,
    "ema_decay": config.train.ema_decay,
    "encoder_lr_mult": config.optim.encoder_lr_mult,
  }
