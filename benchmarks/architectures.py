"""Pretrained SR architectures at official sizes: parameters, PyTorch parity and CPU speed.

For one official-size (or official "light") variant of each family `load_pretrained_sr` reads:
- params: the PyTorch reference's parameter count (`params_sr_jax` in the JSON: the loaded
  network's `nnx.Param` count; lower for SPAN, whose fused `eval_conv` copies are recomputed);
- parity: spandrel 0.4.2's reference gets random weights of non-trivial statistics (as
  tests/test_arch_*.py make them, with convolution and linear weights scaled by 1/sqrt(fan_in)
  so that deep stacks like RCAN's 200 blocks stay finite), its `state_dict()` is saved to a
  `.pth` and read back with `load_pretrained_sr`; the row shows the detected architecture and
  `net.scale` (a mismatch with the expected ones is written in `error`), and
  max |jax - torch| / max |torch| on an odd-size float32 LR input (37x45), sr_jax run eagerly;
- speed: one LR image of `--size` x `--size` (the same array for both) through
  `tiling.make_tile_fn(net)`, as `python -m sr_jax.upscale` runs it (one JAX CPU device per core,
  the image rows split over them), host to host, against the spandrel network in
  `torch.inference_mode()` with `os.cpu_count()` threads. The first call of each is a warm-up
  (sr_jax's, compile included, is `compile_s`); then `--repeats` calls of each, alternating so
  that both see the same machine load, and the median of each. ratio = torch_s / sr_jax_s
  (sr_jax speed / torch speed; > 1: sr_jax faster). `parity_rel_err_timed` in the JSON compares
  the two timed outputs. `torch_1t_s` / `ratio_1t`: the same PyTorch calls with 1 thread, timed
  in the same rounds: on a loaded machine (load average above the core count) PyTorch's
  multi-threaded calls can wait on a descheduled thread at every op (SAFMN at 64x64: 63 ms on 1
  thread, 3.9 s on 2, at load 5 on 2 cores), so this column shows how much of `ratio` is that.
A family that raises gets its error text in its row; the others still run. Nothing is asserted.

  .venv/bin/python benchmarks/architectures.py --out=DIR [--families=swinir,hat,...] \
      [--size=64] [--repeats=3]

writes DIR/architectures.json ({"header": machine, versions, load average; "rows": one per
family}) and DIR/architectures.md, and prints the Markdown table. Needs the parity extras
(torch, spandrel: `make parity-deps`). 12 minutes on 2 CPU cores at load 5 (13 families).
"""

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable

from flax import nnx
import jax
import numpy as np
import spandrel
from spandrel.architectures.DAT import DAT
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.HAT import HAT
from spandrel.architectures.OmniSR import OmniSR
from spandrel.architectures.PLKSR import PLKSR, RealPLKSR
from spandrel.architectures.RCAN import RCAN
from spandrel.architectures.RealCUGAN import UpCunet2x
from spandrel.architectures.SAFMN import SAFMN
from spandrel.architectures.SPAN import SPAN
from spandrel.architectures.Swin2SR import Swin2SR
from spandrel.architectures.SwinIR import SwinIR
import torch

from sr_jax import sharding, tiling
from sr_jax.models import load_pretrained_sr, pretrained
from sr_jax.testing import torch_reference

PARITY_HW = (37, 45)  # odd, and not a multiple of any window / split size below


@dataclasses.dataclass(frozen=True)
class Family:
  """One official variant: how to build the PyTorch reference, and what sr_jax must detect."""

  variant: str
  build: Callable[[], torch.nn.Module]
  detected: str
  scale: int


SWIN_LIGHT = dict(
  img_size=64,
  embed_dim=60,
  depths=[6, 6, 6, 6],
  num_heads=[6, 6, 6, 6],
  window_size=8,
  mlp_ratio=2.0,
  upscale=4,
  upsampler="pixelshuffledirect",
)

FAMILIES = {
  "swinir": Family(
    "SwinIR lightweight x4 (embed 60, depths 6x4, heads 6, window 8, mlp 2)",
    lambda: SwinIR(**SWIN_LIGHT),
    "swinir",
    4,
  ),
  "swin2sr": Family(
    "Swin2SR lightweight x4 (embed 60, depths 6x4, heads 6, window 8, mlp 2)",
    lambda: Swin2SR(**SWIN_LIGHT),
    "swin2sr",
    4,
  ),
  "hat": Family(
    "HAT-S x4 (embed 144, depths 6x6, heads 6, window 16, compress 24, squeeze 24, mlp 2)",
    lambda: HAT(
      img_size=64,
      embed_dim=144,
      depths=[6] * 6,
      num_heads=[6] * 6,
      window_size=16,
      compress_ratio=24,
      squeeze_factor=24,
      mlp_ratio=2.0,
      upscale=4,
    ),
    "hat",
    4,
  ),
  "dat": Family(
    "DAT-light x4 (embed 60, depth [18], heads [6], expansion 2, split 8x32, 3conv)",
    lambda: DAT(
      img_size=64,
      embed_dim=60,
      split_size=[8, 32],
      depth=[18],
      num_heads=[6],
      expansion_factor=2.0,
      resi_connection="3conv",
      upsampler="pixelshuffledirect",
      upscale=4,
    ),
    "dat",
    4,
  ),
  "span": Family(
    "SPAN x4 (48 channels)",
    lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4),
    "span",
    4,
  ),
  "safmn": Family(
    "SAFMN x4 (dim 36, 8 blocks, ffn 2.0)",
    lambda: SAFMN(dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=4),
    "safmn",
    4,
  ),
  "plksr": Family(
    "PLKSR x4 (spandrel defaults: dim 64, 28 blocks, kernel 17, CCM)",
    lambda: PLKSR(upscaling_factor=4),
    "plksr",
    4,
  ),
  "realplksr": Family(
    "RealPLKSR x4 (spandrel defaults: dim 64, 28 blocks, kernel 17, 4 norm groups)",
    lambda: RealPLKSR(upscaling_factor=4),
    "realplksr",
    4,
  ),
  "omnisr": Family(
    "OmniSR x4 (64 feats, window 8, block_num 1, res_num 1)",
    lambda: OmniSR(num_feat=64, window_size=8, up_scale=4),
    "omnisr",
    4,
  ),
  "realcugan": Family("RealCUGAN UpCunet2x (not pro)", UpCunet2x, "realcugan", 2),
  "rcan": Family(
    "RCAN x4 (10 groups x 20 blocks, 64 feats)",
    lambda: RCAN(scale=4, n_resgroups=10, n_resblocks=20, n_feats=64),
    "rcan",
    4,
  ),
  "esrgan": Family(
    "ESRGAN old-arch x4 (spandrel ESRGAN, 23 blocks, 64 feats)",
    lambda: ESRGAN(scale=4, num_filters=64, num_blocks=23),
    "esrgan",
    4,
  ),
  "rrdbnet": Family(
    "RRDBNet BasicSR layout x4 (23 blocks, 64 feats, grow 32; sr_jax.testing.torch_reference)",
    lambda: torch_reference.RRDBNet(4, 64, 23, 32),
    "rrdbnet",
    4,
  ),
}

COLUMNS = (
  "family",
  "variant",
  "params",
  "detected",
  "scale",
  "parity_rel_err",
  "input_hw",
  "sr_jax_s",
  "torch_s",
  "ratio",
  "compile_s",
  "torch_1t_s",
  "ratio_1t",
  "error",
)


def _is_norm(module: torch.nn.Module, qualified_name: str) -> bool:
  return "Norm" in type(module).__name__ or "norm" in qualified_name


def randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
  """Random weights of non-trivial statistics, in eval mode: norm scales (and attention
  temperatures) near 1, nonzero biases, random position-bias tables, Swin2SR's logit scales
  around log(10) (some above its clamp), BatchNorm running statistics away from (0, 1), and
  weights normal with std gain / sqrt(fan_in), gain uniform in [0.3, 1] per tensor."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module_name, module in net.named_modules():
      for name, param in module.named_parameters(recurse=False):
        noise = torch.randn(param.shape, generator=gen)
        if name == "logit_scale":
          param.copy_(2.3 + 1.5 * noise)
        elif name == "relative_position_bias_table":
          param.copy_(0.1 * noise)
        elif name == "temperature" or (
          name == "weight" and _is_norm(module, f"{module_name}.{name}")
        ):
          param.copy_(1 + 0.1 * noise)
        elif param.ndim <= 1:
          param.copy_(0.05 * noise)
        else:
          gain = 0.3 + 0.7 * torch.rand((), generator=gen)
          param.copy_(gain / param[0].numel() ** 0.5 * noise)
      if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=gen))
        running_var = torch.randn(module.running_var.shape, generator=gen)
        module.running_var.copy_(1 + 0.3 * running_var.abs())
  return net.eval()


def torch_forward(net: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
  """NHWC float32 in, NHWC float32 out."""
  with torch.inference_mode():
    out = net(torch.from_numpy(lr).permute(0, 3, 1, 2).contiguous())
  return out.permute(0, 2, 3, 1).numpy()


def relative_error(ours, reference: np.ndarray) -> float:
  ours = np.asarray(ours)
  if ours.shape != reference.shape:
    raise ValueError(f"output shape {ours.shape} != reference {reference.shape}")
  return float(np.abs(ours - reference).max() / np.abs(reference).max())


@contextlib.contextmanager
def torch_threads(count: int):
  """PyTorch's intra-op threads set to `count` inside the block."""
  before = torch.get_num_threads()
  torch.set_num_threads(count)
  try:
    yield
  finally:
    torch.set_num_threads(before)


def timed(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def measure(name: str, family: Family, size: int, repeats: int, workdir: str) -> dict:
  """One row; each field is filled as soon as it is measured, so an error keeps what came before."""
  row = dict.fromkeys(COLUMNS)
  row.update(family=name, variant=family.variant, input_hw=f"{PARITY_HW[0]}x{PARITY_HW[1]}")
  try:
    torch_net = randomize(family.build(), seed=sorted(FAMILIES).index(name))
    row["params"] = sum(p.numel() for p in torch_net.parameters())
    path = os.path.join(workdir, f"{name}.pth")
    torch.save(torch_net.state_dict(), path)

    start = time.perf_counter()
    net = load_pretrained_sr(path)
    row["load_s"] = time.perf_counter() - start
    net.eval()
    state = {key: value.numpy() for key, value in torch_net.state_dict().items()}
    row["detected"] = pretrained.infer_architecture(state, path)[0]  # as load_pretrained_sr
    row["scale"] = net.scale
    row["params_sr_jax"] = sum(x.size for x in jax.tree.leaves(nnx.state(net, nnx.Param)))
    problems = []
    if row["detected"] != family.detected:
      problems.append(f"detected {row['detected']!r}, expected {family.detected!r}")
    if net.scale != family.scale:
      problems.append(f"scale {net.scale}, expected {family.scale}")

    lr = np.random.default_rng(1).random((1, *PARITY_HW, 3), dtype=np.float32)
    row["parity_rel_err"] = relative_error(net(lr), torch_forward(torch_net, lr))
    print(f"  {name}: parity {row['parity_rel_err']:.2e}", file=sys.stderr, flush=True)

    lr = np.random.default_rng(2).random((1, size, size, 3), dtype=np.float32)
    tile_fn = tiling.make_tile_fn(net)
    start = time.perf_counter()
    ours = np.asarray(tile_fn(lr))
    row["compile_s"] = time.perf_counter() - start
    reference = torch_forward(torch_net, lr)  # torch's warm-up
    row["parity_rel_err_timed"] = relative_error(ours, reference)
    with torch_threads(1):
      torch_forward(torch_net, lr)
    sr_jax_times, torch_times, torch_1t_times = [], [], []
    for _ in range(repeats):
      sr_jax_times.append(timed(lambda: np.asarray(tile_fn(lr))))
      torch_times.append(timed(lambda: torch_forward(torch_net, lr)))
      with torch_threads(1):
        torch_1t_times.append(timed(lambda: torch_forward(torch_net, lr)))
    row["sr_jax_s"] = statistics.median(sr_jax_times)
    row["torch_s"] = statistics.median(torch_times)
    row["ratio"] = row["torch_s"] / row["sr_jax_s"]
    row["torch_1t_s"] = statistics.median(torch_1t_times)
    row["ratio_1t"] = row["torch_1t_s"] / row["sr_jax_s"]
    row["times"] = dict(sr_jax=sr_jax_times, torch=torch_times, torch_1t=torch_1t_times)
    if problems:
      row["error"] = "; ".join(problems)
  except Exception as e:  # a row records any failure; the other families still run
    row["error"] = f"{type(e).__name__}: {e}"
  return row


def _format(key: str, value) -> str:
  if value is None:
    return "-"
  if key == "params":
    return f"{value / 1e6:.3f} M"
  if key == "parity_rel_err":
    return f"{value:.1e}"
  if key in ("sr_jax_s", "torch_s", "compile_s", "torch_1t_s"):
    return f"{value:.3f}"
  if key in ("ratio", "ratio_1t"):
    return f"{value:.2f}x"
  if key == "error":
    return str(value).replace("|", "\\|").replace("\n", " ")[:300]
  return str(value)


def markdown_table(rows: list[dict], header: dict) -> str:
  lines = [
    f"sr_jax vs spandrel {header['spandrel']} / torch {header['torch']}, CPU, "
    f"{header['cpu_count']} cores ({header['jax_devices']} JAX devices), LR "
    f"{header['size']}x{header['size']}, median of {header['repeats']}; load average "
    f"{header['loadavg_start'][0]:.2f} at start, {header['loadavg_end'][0]:.2f} at end. "
    "ratio > 1: sr_jax faster.",
    "",
    "| " + " | ".join(COLUMNS) + " |",
    "|" + "---|" * len(COLUMNS),
  ]
  for row in rows:
    lines.append("| " + " | ".join(_format(k, row.get(k)) for k in COLUMNS) + " |")
  return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="folder for architectures.json / .md")
  parser.add_argument(
    "--families", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}"
  )
  parser.add_argument("--size", type=int, default=64, help="LR side of the timed input")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per framework")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  jax_devices = sharding.use_every_cpu_core()  # before JAX starts, as python -m sr_jax.upscale
  args = parse_args(argv)
  names = [n.strip() for n in args.families.split(",") if n.strip()]
  unknown = sorted(set(names) - set(FAMILIES))
  if unknown:
    print(f"error: unknown families {unknown}; known: {list(FAMILIES)}", file=sys.stderr)
    return 2
  torch.set_num_threads(os.cpu_count())
  header = dict(
    command=" ".join([os.path.basename(sys.executable), *sys.argv]),
    started=datetime.datetime.now().isoformat(timespec="seconds"),
    machine=platform.processor() or platform.machine(),
    cpu_count=os.cpu_count(),
    jax_devices=jax_devices or len(jax.local_devices()),
    torch_threads=torch.get_num_threads(),
    jax=jax.__version__,
    torch=torch.__version__,
    spandrel=spandrel.__version__,
    size=args.size,
    repeats=args.repeats,
    parity_hw=list(PARITY_HW),
    loadavg_start=list(os.getloadavg()),
  )
  rows, loads = [], []
  with tempfile.TemporaryDirectory() as workdir:
    for name in names:
      start = time.perf_counter()
      print(f"{name} ...", file=sys.stderr, flush=True)
      row = measure(name, FAMILIES[name], args.size, args.repeats, workdir)
      row["wall_s"] = time.perf_counter() - start
      row["loadavg"] = list(os.getloadavg())
      loads.append(row["loadavg"][0])
      rows.append(row)
      print(f"  {json.dumps(row)}", file=sys.stderr, flush=True)
      gc.collect()
      jax.clear_caches()
  header.update(
    loadavg_end=list(os.getloadavg()),
    loadavg_1min_min_max=[min(loads, default=0), max(loads, default=0)],
    finished=datetime.datetime.now().isoformat(timespec="seconds"),
  )
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "architectures.json").write_text(json.dumps(dict(header=header, rows=rows), indent=1))
  table = markdown_table(rows, header)
  (out / "architectures.md").write_text(table)
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
