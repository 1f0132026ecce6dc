"""PyTorch reference networks, shared by the parity tests and the speed benchmarks.

Imports torch (and, for `ResNetFeatures`, torchvision) at import time: only tests and
benchmarks import this module; the sr_jax library never does, so it runs without torch.

Each network mirrors its sr_jax twin layer for layer, with the parameter names of the official
code, so `sr_jax.models.load_pretrained_sr` loads a `state_dict()` saved from it:
- `EDSR`: BasicSR's EDSR (sr_jax.models.edsr.EDSR with bicubic_residual=False).
- `RRDBNet`: BasicSR's RRDBNet (x4; x2 / x1 read a pixel-unshuffled input).
- `SRVGGNetCompact`: Real-ESRGAN's compact net (PReLU / ReLU / LeakyReLU body, pixel shuffle,
  nearest-upsampled input added).
- `UNetSR`: sr_jax.models.unet.UNetSR with a torchvision ResNet encoder or the EfficientNet-Lite0
  encoder below (the blocks of sr_jax.backbones.efficientnet_lite). For speed only, not parity:
  stride-2 convs pad symmetrically (k // 2) instead of TF "SAME" (same output sizes), the bicubic
  residual uses PyTorch's Keys a=-0.75 kernel (sr_jax: a=-0.5), and inputs must be multiples of
  32 (no reflective padding).
`build(arch, model, scale)` makes the network of an sr_jax config's `model.name` and `model` keys.
"""

import torch
from torch import nn
from torch.nn import functional as F

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv3x3(in_ch: int, out_ch: int, bias: bool = True) -> nn.Conv2d:
  return nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias)


# EDSR (BasicSR basicsr/archs/edsr_arch.py).


class ResidualBlockNoBN(nn.Module):
  def __init__(self, num_feat: int, res_scale: float):
    super().__init__()
    self.conv1 = conv3x3(num_feat, num_feat)
    self.conv2 = conv3x3(num_feat, num_feat)
    self.res_scale = res_scale

  def forward(self, x):
    return x + self.conv2(F.relu(self.conv1(x))) * self.res_scale


def upsample_stages(scale: int, num_feat: int) -> nn.Sequential:
  """conv + PixelShuffle stages: x2 per stage for powers of two, one x3 stage for 3."""
  factors = [2] * (scale.bit_length() - 1) if scale & (scale - 1) == 0 else [3]
  layers = []
  for factor in factors:
    layers += [conv3x3(num_feat, num_feat * factor * factor), nn.PixelShuffle(factor)]
  return nn.Sequential(*layers)


class EDSR(nn.Module):
  def __init__(
    self,
    scale: int,
    num_feat: int = 64,
    num_block: int = 16,
    res_scale: float = 1.0,
    img_range: float = 255.0,
  ):
    super().__init__()
    self.img_range = img_range
    # Not in the state dict, as in BasicSR (a plain tensor there); a buffer so `.to()` moves it.
    mean = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1)
    self.register_buffer("mean", mean, persistent=False)
    self.conv_first = conv3x3(3, num_feat)
    self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat, res_scale) for _ in range(num_block)])
    self.conv_after_body = conv3x3(num_feat, num_feat)
    self.upsample = upsample_stages(scale, num_feat)
    self.conv_last = conv3x3(num_feat, 3)

  def forward(self, x):
    x = (x - self.mean) * self.img_range
    x = self.conv_first(x)
    res = self.conv_after_body(self.body(x)) + x
    return self.conv_last(self.upsample(res)) / self.img_range + self.mean


# RRDBNet (BasicSR basicsr/archs/rrdbnet_arch.py).


class ResidualDenseBlock(nn.Module):
  def __init__(self, num_feat: int, num_grow_ch: int):
    super().__init__()
    self.conv1 = conv3x3(num_feat, num_grow_ch)
    self.conv2 = conv3x3(num_feat + num_grow_ch, num_grow_ch)
    self.conv3 = conv3x3(num_feat + 2 * num_grow_ch, num_grow_ch)
    self.conv4 = conv3x3(num_feat + 3 * num_grow_ch, num_grow_ch)
    self.conv5 = conv3x3(num_feat + 4 * num_grow_ch, num_feat)
    self.lrelu = nn.LeakyReLU(negative_slope=0.2)

  def forward(self, x):
    x1 = self.lrelu(self.conv1(x))
    x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
    x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
    x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
    x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
    return x5 * 0.2 + x


class RRDB(nn.Module):
  def __init__(self, num_feat: int, num_grow_ch: int):
    super().__init__()
    self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
    self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
    self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

  def forward(self, x):
    return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


# RRDBNet's LR input: pixel-unshuffled by this factor for each scale (x2: 12, x1: 48 channels).
RRDB_UNSHUFFLE = {4: 1, 2: 2, 1: 4}


class RRDBNet(nn.Module):
  def __init__(
    self, scale: int = 4, num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32
  ):
    super().__init__()
    self.scale = scale
    self.conv_first = conv3x3(3 * RRDB_UNSHUFFLE[scale] ** 2, num_feat)
    self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
    self.conv_body = conv3x3(num_feat, num_feat)
    self.conv_up1 = conv3x3(num_feat, num_feat)
    self.conv_up2 = conv3x3(num_feat, num_feat)
    self.conv_hr = conv3x3(num_feat, num_feat)
    self.conv_last = conv3x3(num_feat, 3)
    self.lrelu = nn.LeakyReLU(negative_slope=0.2)

  def forward(self, x):
    feat = F.pixel_unshuffle(x, RRDB_UNSHUFFLE[self.scale]) if self.scale != 4 else x
    feat = self.conv_first(feat)
    feat = feat + self.conv_body(self.body(feat))
    feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
    feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
    return self.conv_last(self.lrelu(self.conv_hr(feat)))


# SRVGGNetCompact (Real-ESRGAN realesrgan/archs/srvgg_arch.py).


class SRVGGNetCompact(nn.Module):
  def __init__(
    self, num_feat: int = 64, num_conv: int = 16, upscale: int = 4, act_type: str = "prelu"
  ):
    super().__init__()
    activation = {
      "prelu": lambda: nn.PReLU(num_parameters=num_feat),
      "relu": nn.ReLU,
      "leakyrelu": lambda: nn.LeakyReLU(negative_slope=0.1),
    }[act_type]
    self.upscale = upscale
    self.body = nn.ModuleList([conv3x3(3, num_feat), activation()])
    for _ in range(num_conv):
      self.body.extend([conv3x3(num_feat, num_feat), activation()])
    self.body.append(conv3x3(num_feat, 3 * upscale * upscale))
    self.upsampler = nn.PixelShuffle(upscale)

  def forward(self, x):
    out = x
    for layer in self.body:
      out = layer(out)
    return self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


# EfficientNet-Lite0 (as sr_jax.backbones.efficientnet_lite; lukemelas-style blocks, no SE).

LITE0_STAGES = (  # repeats, kernel, stride, expansion, in, out
  (1, 3, 1, 1, 32, 16),
  (2, 3, 2, 6, 16, 24),
  (2, 5, 2, 6, 24, 40),
  (3, 3, 2, 6, 40, 80),
  (3, 5, 1, 6, 80, 112),
  (4, 5, 2, 6, 112, 192),
  (1, 3, 1, 6, 192, 320),
)
LITE0_FEATURE_BLOCKS = (0, 2, 4, 10, 15)


def conv_bn_relu6(
  in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
  return [
    nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
    nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.01),
    nn.ReLU6(),
  ]


class MBConvBlock(nn.Module):
  def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand_ratio: int):
    super().__init__()
    mid = in_ch * expand_ratio
    layers = conv_bn_relu6(in_ch, mid, 1) if expand_ratio != 1 else []
    layers += conv_bn_relu6(mid, mid, kernel, stride, groups=mid)
    layers += [
      nn.Conv2d(mid, out_ch, 1, bias=False),
      nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.01),
    ]
    self.block = nn.Sequential(*layers)
    self.residual = stride == 1 and in_ch == out_ch

  def forward(self, x):
    y = self.block(x)
    return y + x if self.residual else y


class EfficientNetLite0Features(nn.Module):
  """Block outputs 0, 2, 4, 10, 15 (strides 2..32; 16, 24, 40, 112, 320 channels)."""

  feature_channels = (16, 24, 40, 112, 320)

  def __init__(self):
    super().__init__()
    self.stem = nn.Sequential(*conv_bn_relu6(3, 32, 3, 2))
    blocks = []
    for repeats, kernel, stride, expand, in_ch, out_ch in LITE0_STAGES:
      for r in range(repeats):
        blocks.append(
          MBConvBlock(in_ch if r == 0 else out_ch, out_ch, kernel, stride if r == 0 else 1, expand)
        )
    self.blocks = nn.ModuleList(blocks)
    # Unused by `forward`, as in sr_jax's head-less backbone (same parameter count; no gradient).
    self.head = nn.Sequential(*conv_bn_relu6(320, 1280, 1))

  def forward(self, x):
    x = self.stem(x)
    outputs = []
    for index, block in enumerate(self.blocks):
      x = block(x)
      if index in LITE0_FEATURE_BLOCKS:
        outputs.append(x)
    return outputs


class ResNetFeatures(nn.Module):
  """torchvision ResNet: stem (after ReLU, before max-pool) and layer1..layer4."""

  def __init__(self, name: str):
    super().__init__()
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
    self.maxpool = net.maxpool
    self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
    expansion = 4 if name not in ("resnet18", "resnet34") else 1
    self.feature_channels = (64, *(c * expansion for c in (64, 128, 256, 512)))

  def forward(self, x):
    x = self.stem(x)
    outputs = [x]
    x = self.maxpool(x)
    for layer in self.layers:
      x = layer(x)
      outputs.append(x)
    return outputs


# U-Net SR (as sr_jax.models.unet.UNetSR).


class ChannelLayerNorm(nn.Module):
  """LayerNorm over the channels of each pixel (flax nnx.LayerNorm on NHWC: epsilon 1e-6)."""

  def __init__(self, channels: int):
    super().__init__()
    self.norm = nn.LayerNorm(channels, eps=1e-6)

  def forward(self, x):
    return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PixelShuffleUp(nn.Module):
  def __init__(self, in_ch: int, out_ch: int, factor: int):
    super().__init__()
    self.conv = conv3x3(in_ch, out_ch * factor * factor)
    self.shuffle = nn.PixelShuffle(factor)

  def forward(self, x):
    return F.relu(self.shuffle(self.conv(x)))


class UpBlock(nn.Module):
  def __init__(self, in_ch: int, skip_ch: int, out_ch: int):
    super().__init__()
    self.up = PixelShuffleUp(in_ch, out_ch, 2)
    self.conv1 = conv3x3(out_ch + skip_ch, out_ch)
    self.conv2 = conv3x3(out_ch, out_ch)

  def forward(self, x, skip):
    x = torch.cat([self.up(x), skip], 1)
    return F.relu(self.conv2(F.relu(self.conv1(x))))


class UNetSR(nn.Module):
  def __init__(
    self,
    scale: int,
    encoder: nn.Module,
    decoder_features=(256, 128, 64, 64, 32),
    shallow_features: int = 32,
    skip_norm: bool = True,
  ):
    super().__init__()
    channels = tuple(encoder.feature_channels)
    self.scale = scale
    self.encoder = encoder
    self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
    self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
    skips = (*channels[:4][::-1], shallow_features)
    widths = (channels[4], *decoder_features[:-1])
    self.decoder = nn.ModuleList(
      [UpBlock(w, s, d) for w, s, d in zip(widths, skips, decoder_features)]
    )
    self.skip_norms = nn.ModuleList([ChannelLayerNorm(c) for c in channels]) if skip_norm else None
    self.shallow1 = conv3x3(3, shallow_features)
    self.shallow2 = conv3x3(shallow_features, shallow_features)
    self.upsample = PixelShuffleUp(decoder_features[-1], decoder_features[-1], scale)
    self.conv_last = conv3x3(decoder_features[-1], 3)

  def forward(self, lr):
    x = (lr - self.mean) / self.std
    features = self.encoder(x)
    if self.skip_norms is not None:
      features = [norm(f) for norm, f in zip(self.skip_norms, features)]
    shallow = F.relu(self.shallow2(F.relu(self.shallow1(x))))
    y = features[4]
    for block, skip in zip(self.decoder, (*features[:4][::-1], shallow)):
      y = block(y, skip)
    y = self.conv_last(self.upsample(y))
    return y + F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)

  def train(self, mode: bool = True):
    """Trains everything, but the encoder's BatchNorm keeps its running statistics (freeze_bn)."""
    super().train(mode)
    for module in self.encoder.modules():
      if isinstance(module, nn.BatchNorm2d):
        module.eval()
    return self


def build(arch: str, model: dict, scale: int) -> nn.Module:
  """The reference network of an sr_jax config: `arch` = `model.name`, `model` = the `model`
  block as a dict (`config.model.to_dict()`), `scale` = `data.scale`. Random weights."""
  if arch == "edsr":
    if model["bicubic_residual"]:
      raise ValueError("the torch EDSR reference has no bicubic_residual variant")
    return EDSR(scale, model["num_feat"], model["num_block"], model["res_scale"])
  if arch == "rrdbnet":
    return RRDBNet(scale, model["num_feat"], model["num_block"], model["num_grow_ch"])
  if arch == "srvgg_compact":
    return SRVGGNetCompact(model["num_feat"], model["num_conv"], scale, model["act_type"])
  if arch == "unet":
    name = model["encoder"]["name"]
    encoder = EfficientNetLite0Features() if name == "efficientnet_lite0" else ResNetFeatures(name)
    return UNetSR(
      scale,
      encoder,
      tuple(model["decoder_features"]),
      model["shallow_features"],
      model["skip_norm"],
    )
  raise ValueError(f"no torch reference for model.name={arch!r}")
