"""RRDBNet files in the community's other key layouts: ESRGAN "old-arch" and BSRGAN / RealSR.

The network is BasicSR's `RRDBNet` (`models/realesrgan.py`); only the state-dict names differ, so
each layout is a thin subclass whose `port_rules` rename its module paths to BasicSR's:

- old-arch (the original ESRGAN and most community `.pth` files, spandrel's own layout):
  `model.0` conv_first, `model.1.sub.N.RDBk.convj.0` body.N.rdbk.convj, `model.1.sub.<num_block>`
  conv_body, then per upsampling stage i an (upsample, conv, lrelu) triple whose conv is
  `model.<3i>`, and last `model.<3n+2>` conv_hr, `model.<3n+4>` conv_last. The index modulo 3 tells
  them apart for any number of stages n (x1 / x2 / x4 / x8 trunks).
- BSRGAN / RealSR: `RRDB_trunk.N.RDBk.convj`, `trunk_conv`, `upconvi`, `HRconv`.

Detection follows spandrel's: stages from the `model` sequence length, pixel unshuffle (Real-ESRGAN
x2 / x1) from the input / output channel ratio, ESRGAN+ from `conv1x1` keys.
"""

import math
import re

from sr_jax.models import architecture
from sr_jax.models.architecture import StateDict
from sr_jax.models.realesrgan import RRDBNet
from sr_jax.weights.porting import PortRules

_OLD_BLOCK = re.compile(r"model\.1\.sub\.(\d+)\.RDB(\d)\.(conv\d|conv1x1)(?:\.0)?")
_OLD_TRUNK_CONV = re.compile(r"model\.1\.sub\.(\d+)")
_OLD_TOP = re.compile(r"model\.(\d+)")


def old_arch_to_basicsr(module_path: str) -> str:
  """`model.1.sub.3.RDB2.conv4.0` -> `body.3.rdb2.conv4`, `model.8` -> `conv_hr` (see above)."""
  if m := _OLD_BLOCK.fullmatch(module_path):
    return f"body.{m.group(1)}.rdb{m.group(2)}.{m.group(3)}"
  if _OLD_TRUNK_CONV.fullmatch(module_path):
    return "conv_body"
  if m := _OLD_TOP.fullmatch(module_path):
    index = int(m.group(1))
    if index == 0:
      return "conv_first"
    return {0: f"conv_up{index // 3}", 1: "conv_last", 2: "conv_hr"}[index % 3]
  return module_path


_BSRGAN_NAMES = (
  (re.compile(r"RRDB_trunk\.(\d+)\.RDB(\d)\."), r"body.\1.rdb\2."),
  (re.compile(r"trunk_conv$"), "conv_body"),
  (re.compile(r"upconv(\d+)$"), r"conv_up\1"),
  (re.compile(r"HRconv$"), "conv_hr"),
)


def bsrgan_to_basicsr(module_path: str) -> str:
  """`RRDB_trunk.3.RDB2.conv4` -> `body.3.rdb2.conv4`, `trunk_conv` -> `conv_body`, ..."""
  for pattern, replacement in _BSRGAN_NAMES:
    module_path = pattern.sub(replacement, module_path)
  return module_path


class ESRGAN(RRDBNet):
  """`RRDBNet` read from ESRGAN old-arch keys (`model.0.weight`, `model.1.sub.0.RDB1...`)."""

  port_rules = PortRules(rename=old_arch_to_basicsr)


class BSRGAN(RRDBNet):
  """`RRDBNet` read from BSRGAN / RealSR keys (`RRDB_trunk.0.RDB1...`, `trunk_conv`, `HRconv`)."""

  port_rules = PortRules(rename=bsrgan_to_basicsr)


def _require(state: StateDict, keys) -> None:
  for key in keys:
    if key not in state:
      raise ValueError(f"missing key {key!r}")


def _hyperparameters(
  state: StateDict, first: str, last: str, block: str, num_block: int, num_upsample: int
) -> dict:
  """Hyperparameters from the first / last conv and the first block conv (`block` of block 0)."""
  in_nc = architecture.shape(state, first)[1]
  out_nc = architecture.shape(state, last)[0]
  # Real-ESRGAN x2 / x1 pixel-unshuffle their input by 2 / 4 (spandrel's rule).
  shuffle_factor = math.isqrt(in_nc // out_nc) if in_nc in (out_nc * 4, out_nc * 16) else 1
  if num_upsample < 0 or (2**num_upsample) % shuffle_factor:
    raise ValueError(
      f"{first} has {in_nc} inputs (unshuffle {shuffle_factor}) for {num_upsample} upsamplings"
    )
  if num_block < 1:
    raise ValueError(f"no residual block {block!r}")
  return dict(
    scale=2**num_upsample // shuffle_factor,
    num_feat=architecture.shape(state, first)[0],
    num_block=num_block,
    num_grow_ch=architecture.shape(state, block)[0],
    num_in_ch=in_nc // shuffle_factor**2,
    num_out_ch=out_nc,
    shuffle_factor=shuffle_factor,
  )


def _block_keys(prefix: str, suffix: str, num_block: int, plus: bool) -> list[str]:
  convs = [f"conv{j}{suffix}" for j in range(1, 6)] + (["conv1x1"] if plus else [])
  return [
    f"{prefix}.{i}.RDB{k}.{conv}.weight"
    for i in range(num_block)
    for k in (1, 2, 3)
    for conv in convs
  ]


def detect_esrgan(state: StateDict) -> dict:
  """ESRGAN old-arch `model`: conv, shortcut(blocks, conv), (up, conv, act) x n, conv, act, conv."""
  seq_len = architecture.count(state, r"model\.(\d+)\..*")
  num_upsample, rest = divmod(seq_len - 5, 3)
  if rest:
    raise ValueError(f"model.{seq_len - 1} ends the sequence: not 5 + 3 * upsamplings layers")
  num_block = architecture.count(state, r"model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight")
  plus = "model.1.sub.0.RDB1.conv1x1.weight" in state
  found = _hyperparameters(
    state,
    "model.0.weight",
    f"model.{seq_len - 1}.weight",
    "model.1.sub.0.RDB1.conv1.0.weight",
    num_block,
    num_upsample,
  )
  _require(state, _block_keys("model.1.sub", ".0", num_block, plus))
  up = [f"model.{3 * i}.weight" for i in range(1, num_upsample + 1)]
  _require(state, [f"model.1.sub.{num_block}.weight", *up, f"model.{3 * num_upsample + 2}.weight"])
  return dict(found, plus=plus)


def detect_bsrgan(state: StateDict) -> dict:
  """BSRGAN / RealSR: BasicSR's structure under older names (`upconv1`, `upconv2`, `HRconv`)."""
  num_block = architecture.count(state, r"RRDB_trunk\.(\d+)\.RDB1\.conv1\.weight")
  num_upsample = architecture.count(state, r"upconv(\d+)\.weight") - 1
  found = _hyperparameters(
    state,
    "conv_first.weight",
    "conv_last.weight",
    "RRDB_trunk.0.RDB1.conv1.weight",
    num_block,
    num_upsample,
  )
  up = [f"upconv{i}.weight" for i in range(1, num_upsample + 1)]
  _require(state, [*_block_keys("RRDB_trunk", "", num_block, False), *up, "HRconv.weight"])
  return found


_CONFIG_KEYS = ("num_feat", "num_block", "num_grow_ch", "shuffle_factor")
ESRGAN_OLD_ARCH = architecture.Architecture(
  name="esrgan",
  module=ESRGAN,
  signature=("model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"),
  detect=detect_esrgan,
  config_keys=(*_CONFIG_KEYS, "plus"),
)
ESRGAN_BSRGAN = architecture.Architecture(
  name="esrgan_bsrgan",
  module=BSRGAN,
  signature=("conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight"),
  detect=detect_bsrgan,
  config_keys=_CONFIG_KEYS,
)
