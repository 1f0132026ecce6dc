"""sr_jax side of the benchmark (a worker process driven by benchmarks/run.py).

  python benchmarks/jax_worker.py [--cpu_devices=N]

Train: sr_jax's own step, built exactly as sr_jax.train.train_and_evaluate builds it (config ->
optim.from_config -> train_state.create_train_state -> sharding.place_state on the ("data",) mesh
(params replicated, optimiser state and EMA split) -> jax.jit(make_train_step(..., mesh=mesh),
donate_argnums=0, out_shardings=sharding.state_shardings)), on a fixed random batch
split over the mesh. Infer: one LR image in, the SR image back on the host, through the network's
forward jitted with the image rows split over every local device (sr_jax.sharding.jit_over_image_rows,
as sr_jax.tiling.make_tile_fn does; --infer_over=device: on one device).
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flax import nnx
import jax
from jax import lax
import numpy as np
import protocol
import specs

from sr_jax import (
  conv,
  losses,
  models,
  optim,
  sharding,
  train,
)
from sr_jax import train_state as train_state_lib

_current = {}  # the model under test: its timer and compiled program
_OPTIONS = {"infer_over": "rows"}  # set from the command line


def _lax_conv_graphdef(graphdef: nnx.GraphDef, *states, filters=()) -> nnx.GraphDef:
  """The same network with every nnx.Conv on lax.conv_general_dilated.

  Its FLOPs are the network's, whatever formulation sr_jax.conv picks on this backend
  (XLA counts a conv and its CPU rewrites differently), so every variant shares one count.
  """
  model = nnx.merge(graphdef, *states)
  for _, module in nnx.iter_modules(model):
    if isinstance(module, nnx.Conv):
      module.conv_general_dilated = lax.conv_general_dilated
  return nnx.split(model, *filters)[0]


def _on_host(x):
  """`x` as an abstract array on the first CPU device (anything else unchanged)."""
  if not isinstance(x, jax.Array):
    return x
  cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu)


def _flops(jitted, *args) -> float | None:
  """FLOPs of one call from XLA's cost analysis of the lowered (global, unpartitioned) program.

  PJRT plugin backends (the GPU's) have no cost analysis of a lowered program (JAX returns None),
  so off CPU the same program is lowered for the host's CPU backend: the unoptimized HLO, hence its
  count, is the same.
  """
  if jax.local_devices()[0].platform != "cpu":
    args = jax.tree.map(_on_host, args)
  analysis = jitted.lower(*args).cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops")
  return None if flops is None else float(flops)


def _temp_mb(compiled) -> float | None:
  try:
    return compiled.memory_analysis().temp_size_in_bytes / 2**20
  except Exception:
    return None


def _device_peak_mb() -> float | None:
  """The device's peak bytes in use since the process started (JAX cannot reset it); None on CPU."""
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**20


def describe() -> dict:
  devices = jax.devices()
  info = {
    "platform": devices[0].platform,
    "device_kind": devices[0].device_kind,
    "device_count": len(devices),
    "jax": jax.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  if devices[0].platform != "cpu":
    import flax

    # XLA:GPU's default precision: float32 convolutions and matmuls on TF32 tensor cores (Ampere+).
    info.update(
      flax=flax.__version__,
      default_matmul_precision=str(jax.config.jax_default_matmul_precision),
      preallocate=os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "true"),
    )
  return info


def peak_matmul(sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 5) -> dict:
  """Best FLOP/s of float32 [size, size] matmuls over `sizes` and `repeats`, in JAX (one device) and NumPy.

  On a GPU: JAX's default precision (TF32 on Ampere and newer), and no NumPy (a host figure).
  """
  on_cpu = jax.local_devices()[0].platform == "cpu"
  best = {"jax": 0.0, "numpy": 0.0} if on_cpu else {"jax": 0.0}
  matmul = jax.jit(lambda a: a @ a)
  for size in sizes:
    a_host = np.random.default_rng(0).standard_normal((size, size), np.float32)
    a = jax.device_put(a_host, jax.local_devices()[0])
    jax.block_until_ready(matmul(a))
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(matmul(a))
      best["jax"] = max(best["jax"], 2 * size**3 / (time.perf_counter() - start))
      if not on_cpu:
        continue
      start = time.perf_counter()
      np.matmul(a_host, a_host)
      best["numpy"] = max(best["numpy"], 2 * size**3 / (time.perf_counter() - start))
  return best


def _param_count(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def _setup_train(model: str) -> dict:
  config = specs.config_for(model)
  mesh = sharding.create_mesh()
  schedule, tx = optim.from_config(config)
  loss, loss_state = losses.create_loss(config.get("loss"))
  graphdef, state = train_state_lib.create_train_state(config, tx, loss_state)
  num_params = _param_count(state["params"])
  state = sharding.place_state(state, mesh)  # as train_and_evaluate: ZeRO-1 layout
  rng = np.random.default_rng(0)
  batch_size, patch, scale = config.train.batch_size, config.data.patch_size, config.data.scale
  local = {
    "lr": rng.random((batch_size, patch, patch, 3), np.float32),
    "hr": rng.random((batch_size, patch * scale, patch * scale, 3), np.float32),
  }
  batch = sharding.global_batch(local, mesh)
  replicated = sharding.replicated(mesh)
  step = jax.jit(
    train.make_train_step(graphdef, tx, schedule, config.train.ema_decay, loss, mesh=mesh),
    donate_argnums=(0,),
    out_shardings=(sharding.state_shardings(state, mesh), replicated),
  )
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  _current["compiled"] = compiled
  holder = {"state": state}

  def run_once():
    holder["state"], holder["metrics"] = compiled(holder["state"], batch)

  lax_graphdef = _lax_conv_graphdef(
    graphdef, state["params"], state["model_state"], filters=(nnx.Param, ...)
  )
  flops = _flops(
    jax.jit(train.make_train_step(lax_graphdef, tx, schedule, config.train.ema_decay, loss)),
    state,
    batch,
  )
  timer = protocol.repeat_timer(run_once, lambda: jax.block_until_ready(holder["state"]))
  _current.update(timer=timer, holder=holder)
  return {
    "compile_s": compile_s,
    "flops": flops,
    "params": num_params,
    "xla_temp_mb": _temp_mb(compiled),
    "batch_size": batch_size,
    "lr_size": patch,
    "scale": scale,
    "devices": len(mesh.devices.flat),
  }


def _setup_infer(model: str) -> dict:
  config = specs.config_for(model)
  size, scale = specs.SPECS[model].infer_size, config.data.scale
  net = models.create_model(config.model, scale, nnx.Rngs(config.seed))
  graphdef, params = nnx.split(net)
  num_params = _param_count(nnx.state(net, nnx.Param))
  lr = np.random.default_rng(0).random((1, size, size, 3), np.float32)

  def forward(params, lr):
    return nnx.merge(graphdef, params)(lr)

  mesh = sharding.create_mesh(jax.local_devices())
  if _OPTIONS["infer_over"] == "rows" and sharding.rows_split_evenly(size, mesh):
    forward_jit, lr_sharding = (
      sharding.jit_over_image_rows(forward, mesh),
      sharding.image_rows(mesh),
    )
    params, devices = sharding.replicate(params, mesh), mesh.devices.size
  else:  # One device.
    forward_jit, lr_sharding, devices = jax.jit(forward), jax.local_devices()[0], 1
    params = jax.device_put(params, lr_sharding)
  start = time.perf_counter()
  compiled = forward_jit.lower(params, jax.device_put(lr, lr_sharding)).compile()
  compile_s = time.perf_counter() - start
  _current["compiled"] = compiled
  holder = {}

  def run_once():
    holder["sr"] = np.asarray(compiled(params, jax.device_put(lr, lr_sharding)))

  lax_graphdef = _lax_conv_graphdef(graphdef, params)
  flops = _flops(
    jax.jit(lambda params, lr: nnx.merge(lax_graphdef, params)(lr)),
    params,
    jax.device_put(lr, lr_sharding),
  )
  timer = protocol.repeat_timer(run_once, lambda: None)
  _current.update(timer=timer, holder=holder)
  return {
    "compile_s": compile_s,
    "flops": flops,
    "params": num_params,
    "xla_temp_mb": _temp_mb(compiled),
    "batch_size": 1,
    "lr_size": size,
    "scale": scale,
    "devices": devices,
  }


def setup(model: str, task: str) -> dict:
  """Builds and compiles `model`'s train step or forward, runs it once (warm-up), times that."""
  teardown()
  protocol.reset_peak_rss()
  peak_before = _device_peak_mb()
  info = _setup_train(model) if task == "train" else _setup_infer(model)
  _current["device_peak_before_mb"] = peak_before
  if jax.local_devices()[0].platform != "cpu":
    _current["timer"](1)  # First call on an accelerator: lazy allocations.
  info["warmup_s"] = _current["timer"](1)
  return info


def run(iters: int) -> dict:
  return {"seconds": _current["timer"](iters)}


def teardown() -> dict:
  """Peak memory of the row. The device peak is the process's: set in this row only where it rose."""
  before = _current.get("device_peak_before_mb")
  _current.clear()
  peak = _device_peak_mb()
  return {
    "peak_rss_mb": protocol.peak_rss_mb(),
    "device_peak_mb": peak,
    "device_peak_set_in_row": None if peak is None or before is None else peak > before,
  }


def use_conv_grad(which: str) -> None:
  """Ablation switch: "sr_jax" (as shipped: every network builds its convs with sr_jax.conv.Conv),
  "all" (the same, kept as a name for older commands), "xla" (lax.conv_general_dilated everywhere:
  the code before sr_jax.conv), "tiny" (sr_jax.conv without the image-by-image kernel gradient) or
  "everywhere" (sr_jax.conv's CPU rewrites on GPU/TPU too; "tiny_everywhere",
  "depthwise_everywhere": only that one rewrite)."""
  if which == "xla":
    conv.conv_general_dilated = lax.conv_general_dilated  # conv.Conv reads it when building a conv
  if which == "tiny":
    conv._conv_fast_kernel_grad = conv._conv
  everywhere = ("cpu", "cuda", "rocm", "tpu")
  if which == "everywhere":  # all CPU rewrites on GPU/TPU too
    conv.REWRITE_PLATFORMS = dict.fromkeys(conv.REWRITE_PLATFORMS, everywhere)
  if which in ("tiny_everywhere", "depthwise_everywhere"):  # one rewrite on GPU/TPU too
    conv.REWRITE_PLATFORMS = dict(
      conv.REWRITE_PLATFORMS,
      **{
        {"tiny_everywhere": "tiny_as_matmul", "depthwise_everywhere": "depthwise_as_taps"}[
          which
        ]: everywhere
      },
    )


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--cpu_devices", type=int, default=0, help="CPU devices (0: JAX's default)")
  parser.add_argument(
    "--conv_grad",
    choices=(
      "sr_jax",
      "xla",
      "all",
      "tiny",
      "everywhere",
      "tiny_everywhere",
      "depthwise_everywhere",
    ),
    default="sr_jax",
    help="ablation only: which conv gradients the models use (see use_conv_grad)",
  )
  parser.add_argument(
    "--infer_over",
    choices=("rows", "device"),
    default="rows",
    help="one image split by rows over every local device (sharding.jit_over_image_rows) "
    "or on one device (as sr_jax.tiling.make_tile_fn)",
  )
  args = parser.parse_args()
  _OPTIONS["infer_over"] = args.infer_over
  if args.cpu_devices:
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)  # Before any backend is created.
  use_conv_grad(args.conv_grad)
  protocol.serve(
    {
      "describe": describe,
      "peak_matmul": peak_matmul,
      "setup": setup,
      "run": run,
      "teardown": teardown,
    }
  )


if __name__ == "__main__":
  main()
