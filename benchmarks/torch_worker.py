"""PyTorch side of the benchmark (a worker process driven by benchmarks/run.py).

  python benchmarks/torch_worker.py --memory_format=channels_last|contiguous

The same step as sr_jax's: forward, L1 loss, backward, gradient clipping by global norm, AdamW
(the config's betas, weight decay and encoder learning-rate factor), EMA of the weights; eager
mode, torch's default threads (every core) and optimizer implementation. Infer: one LR image from
the host through the network in inference mode, the SR image back on the host.
"""

import argparse
import contextlib
import functools
import time

import numpy as np
import protocol
import torch

from sr_jax.testing import torch_reference

_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_current = {}

if _DEVICE.type == "cuda":
  # Float32 parity with XLA:GPU, whose default precision runs float32 convolutions and matmuls on
  # TF32 tensor cores (Ampere and newer): PyTorch's default is TF32 for cuDNN convolutions only,
  # so matmuls get it too. cuDNN picks its algorithms by timing them (as XLA:GPU autotunes its
  # convolutions at compile time); the extra warm-up call in `setup` absorbs that search.
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  torch.backends.cudnn.benchmark = True


def _parse_args():
  parser = argparse.ArgumentParser()
  parser.add_argument(
    "--memory_format", choices=("channels_last", "contiguous"), default="channels_last"
  )
  return parser.parse_args()


_ARGS = _parse_args()
_FORMAT = torch.channels_last if _ARGS.memory_format == "channels_last" else torch.contiguous_format


def _sync() -> None:
  if _DEVICE.type == "cuda":
    torch.cuda.synchronize()


def describe() -> dict:
  kind = torch.cuda.get_device_name() if _DEVICE.type == "cuda" else "cpu"
  info = {
    "device": kind,
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "memory_format": _ARGS.memory_format,
  }
  if _DEVICE.type == "cuda":
    info.update(
      cuda=torch.version.cuda,
      cudnn=torch.backends.cudnn.version(),
      tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
      tf32_cudnn=torch.backends.cudnn.allow_tf32,
      cudnn_benchmark=torch.backends.cudnn.benchmark,
    )
  return info


def peak_matmul(
  sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 5, dtype: str = "float32"
) -> dict:
  """Best FLOP/s of [size, size] matmuls in `dtype` over `sizes` and `repeats` (float32: TF32 on
  a GPU)."""
  best = 0.0
  for size in sizes:
    a = torch.randn(size, size, device=_DEVICE, dtype=getattr(torch, dtype))
    a @ a
    for _ in range(repeats):
      _sync()
      start = time.perf_counter()
      a @ a
      _sync()
      best = max(best, 2 * size**3 / (time.perf_counter() - start))
  return {"torch": best}


def param_groups(net: torch.nn.Module, lr: float, encoder_lr_mult: float) -> list[dict]:
  """AdamW parameter groups: the encoder gets `encoder_lr_mult` times the rate (as sr_jax.optim)."""
  encoder = [p for n, p in net.named_parameters() if n.startswith("encoder.")]
  rest = [p for n, p in net.named_parameters() if not n.startswith("encoder.")]
  groups = [{"params": rest, "lr": lr}]
  if encoder:
    groups.append({"params": encoder, "lr": lr * encoder_lr_mult})
  return groups


def _images(batch: int, size: int, rng: np.random.Generator) -> torch.Tensor:
  x = torch.from_numpy(rng.random((batch, 3, size, size), np.float32)).to(_DEVICE)
  return x.contiguous(memory_format=_FORMAT)


def _autocast(settings: dict):
  """PyTorch's mixed precision for settings["dtype"] == "bfloat16" (its recommended bf16 path:
  autocast, no grad scaler), else a no-op context."""
  if settings["dtype"] == "float32":
    return contextlib.nullcontext
  return functools.partial(torch.autocast, _DEVICE.type, dtype=getattr(torch, settings["dtype"]))


def _setup_train(settings: dict) -> dict:
  net = torch_reference.build(settings["arch"], settings["model"], settings["scale"]).to(_DEVICE)
  net = net.to(memory_format=_FORMAT).train()
  params = [p for p in net.parameters() if p.requires_grad]
  ema = [p.detach().clone() for p in params]
  optimizer = torch.optim.AdamW(
    param_groups(net, settings["learning_rate"], settings["encoder_lr_mult"]),
    betas=(settings["b1"], settings["b2"]),
    weight_decay=settings["weight_decay"],
  )
  rng = np.random.default_rng(0)
  batch, patch, scale = settings["batch_size"], settings["patch_size"], settings["scale"]
  lr, hr = _images(batch, patch, rng), _images(batch, patch * scale, rng)
  decay = settings["ema_decay"]
  autocast = _autocast(settings)

  def run_once():
    optimizer.zero_grad(set_to_none=True)
    with autocast():  # float32 weights, optimizer and loss; the network in bfloat16 (if asked)
      sr = net(lr)
    loss = torch.nn.functional.l1_loss(sr.float(), hr)
    loss.backward()
    if settings["grad_clip_norm"]:
      torch.nn.utils.clip_grad_norm_(params, settings["grad_clip_norm"])
    optimizer.step()
    if decay:
      with torch.no_grad():
        torch._foreach_lerp_(ema, params, 1.0 - decay)

  _current.update(timer=protocol.repeat_timer(run_once, _sync), net=net)
  return {"params": sum(p.numel() for p in params)}


def _setup_infer(settings: dict) -> dict:
  net = torch_reference.build(settings["arch"], settings["model"], settings["scale"]).to(_DEVICE)
  net = net.to(memory_format=_FORMAT).eval()
  size = settings["infer_size"]
  lr_host = np.random.default_rng(0).random((1, 3, size, size), np.float32)

  autocast = _autocast(settings)

  def run_once():
    with torch.inference_mode(), autocast():
      lr = torch.from_numpy(lr_host).to(_DEVICE).contiguous(memory_format=_FORMAT)
      net(lr).float().cpu().numpy()

  _current.update(timer=protocol.repeat_timer(run_once, _sync), net=net)
  return {"params": sum(p.numel() for p in net.parameters())}


def setup(settings: dict, task: str) -> dict:
  """Builds the reference network for `settings` (specs.torch_settings), runs one warm-up call."""
  teardown()
  protocol.reset_peak_rss()
  if _DEVICE.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
  info = _setup_train(settings) if task == "train" else _setup_infer(settings)
  if _DEVICE.type == "cuda":
    _current["timer"](1)  # First CUDA call: cuDNN's algorithm search, lazy allocations.
  info["warmup_s"] = _current["timer"](1)
  return info


def run(iters: int) -> dict:
  return {"seconds": _current["timer"](iters)}


def teardown() -> dict:
  _current.clear()
  device_peak = torch.cuda.max_memory_allocated() / 2**20 if _DEVICE.type == "cuda" else None
  return {"peak_rss_mb": protocol.peak_rss_mb(), "device_peak_mb": device_peak}


if __name__ == "__main__":
  protocol.serve(
    {
      "describe": describe,
      "peak_matmul": peak_matmul,
      "setup": setup,
      "run": run,
      "teardown": teardown,
    }
  )
