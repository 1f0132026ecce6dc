"""sr_jax side of the benchmark (a worker process driven by benchmarks/run.py).

  python benchmarks/jax_worker.py [--cpu_devices=N]

Train: the step training runs, `sr_jax.train.create_trainer(config, mesh)` (train state on the
("data",) mesh: params replicated, optimiser state and EMA split; jitted, donating step), on a
fixed random batch split over the mesh. Infer: one LR image in, the SR image back on the host,
through `sr_jax.tiling.make_tile_fn(model)` as `python -m sr_jax.upscale` runs it (the image rows
split over every local device; --infer_over=device: on one device).
"""

import argparse
import contextlib
import ctypes
import functools
import gc
import os
import time

from flax import nnx
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import protocol
import specs

from sr_jax import conv, inference, models, sharding, tiling, train, train_step
from sr_jax.models import precision

_current = {}  # the model under test: its timer and compiled program
_OPTIONS = {"infer_over": "rows"}  # set from the command line
_COMPILE_EVENTS = (
  "/jax/core/compile/jaxpr_trace_duration",
  "/jax/core/compile/jaxpr_to_mlir_module_duration",
  "/jax/core/compile/backend_compile_duration",
)


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


@contextlib.contextmanager
def _compile_seconds():
  """Yields a dict whose "seconds" sums JAX's trace, lowering and compile times inside the block."""
  total = {"seconds": 0.0}

  def listener(event, duration_secs, **kwargs):
    del kwargs
    if event in _COMPILE_EVENTS:
      total["seconds"] += duration_secs

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield total
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


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


def peak_matmul(
  sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 5, dtype: str = "float32"
) -> dict:
  """Best FLOP/s of [size, size] matmuls in `dtype` over `sizes` and `repeats`, in JAX (one
  device) and NumPy (float32 only). On a GPU: JAX's default precision (float32: TF32 on Ampere and
  newer), and no NumPy (a host figure)."""
  on_cpu = jax.local_devices()[0].platform == "cpu"
  best = {"jax": 0.0, "numpy": 0.0} if on_cpu and dtype == "float32" else {"jax": 0.0}
  matmul = jax.jit(lambda a: a @ a)
  for size in sizes:
    a_host = np.random.default_rng(0).standard_normal((size, size), np.float32)
    if dtype != "float32":
      a_host = a_host.astype(jnp.dtype(dtype))
    a = jax.device_put(a_host, jax.local_devices()[0])
    jax.block_until_ready(matmul(a))
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(matmul(a))
      best["jax"] = max(best["jax"], 2 * size**3 / (time.perf_counter() - start))
      if "numpy" not in best:
        continue
      start = time.perf_counter()
      np.matmul(a_host, a_host)
      best["numpy"] = max(best["numpy"], 2 * size**3 / (time.perf_counter() - start))
  return best


def _param_count(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def _train_flops(config, trainer: train.Trainer, batch: dict) -> float | None:
  """FLOPs of the train step with plain lax convs (`_lax_conv_graphdef`), from the library's step
  builder; only lowered, never run."""
  state = trainer.state
  graphdef = _lax_conv_graphdef(
    trainer.graphdef, state["params"], state["model_state"], filters=(nnx.Param, ...)
  )
  return _flops(jax.jit(train_step.make_step_fn(config, graphdef)), state, batch)


def _setup_train(model: str, preset: str, dtype: str) -> dict:
  config = specs.config_for(model, preset, dtype)
  mesh = sharding.create_mesh()
  trainer = train.create_trainer(config, mesh)
  rng = np.random.default_rng(0)
  batch_size = sharding.local_batch_size(config.train.batch_size)
  patch, scale = config.data.patch_size, config.data.scale
  local = {
    "lr": rng.random((batch_size, patch, patch, 3), np.float32),
    "hr": rng.random((batch_size, patch * scale, patch * scale, 3), np.float32),
  }
  batch = sharding.global_batch(local, mesh)
  start = time.perf_counter()
  compiled = trainer.step.lower(trainer.state, batch).compile()  # the program trainer.step runs
  compile_s = time.perf_counter() - start
  flops = _train_flops(config, trainer, batch)  # before the first step donates the state
  holder = {"state": trainer.state}

  def run_once():
    holder["state"], holder["metrics"] = compiled(holder["state"], batch)

  timer = protocol.repeat_timer(run_once, lambda: jax.block_until_ready(holder["state"]))
  _current.update(timer=timer, holder=holder, compiled=compiled)
  return {
    "compile_s": compile_s,
    "flops": flops,
    "params": _param_count(trainer.state["params"]),
    "xla_temp_mb": _temp_mb(compiled),
    "batch_size": config.train.batch_size,
    "lr_size": patch,
    "scale": scale,
    "devices": mesh.devices.size,
  }


def _setup_infer(model: str, preset: str, dtype: str) -> dict:
  config = specs.config_for(model, preset, dtype)
  size, scale = specs.infer_size(model, preset), config.data.scale
  net = models.create_model(config.model, scale, nnx.Rngs(config.seed))
  precision.set_compute_dtype(net, dtype)  # as `upscale --dtype` runs it
  lr = np.random.default_rng(0).random((1, size, size, 3), np.float32)
  one_device = jax.local_devices()[0] if _OPTIONS["infer_over"] == "device" else None
  mesh = sharding.create_mesh(jax.local_devices())
  # As make_tile_fn decides: rows over every local device when they split evenly.
  devices = (
    1 if one_device is not None or not sharding.rows_split_evenly(size, mesh) else mesh.devices.size
  )
  graphdef, state = nnx.split(net)
  forward = functools.partial(inference.forward, _lax_conv_graphdef(graphdef, state))
  flops = _flops(jax.jit(forward), state, jax.device_put(lr, jax.local_devices()[0]))
  tile_fn = tiling.make_tile_fn(net, one_device)
  holder = {}

  def run_once():
    holder["sr"] = np.asarray(tile_fn(lr))

  with _compile_seconds() as compile_time:
    run_once()  # compiles
  timer = protocol.repeat_timer(run_once, lambda: None)
  _current.update(timer=timer, holder=holder)
  return {
    "compile_s": compile_time["seconds"],
    "flops": flops,
    "params": _param_count(nnx.state(net, nnx.Param)),
    "xla_temp_mb": None,  # make_tile_fn's programs are compiled on first call, not exposed
    "batch_size": 1,
    "lr_size": size,
    "scale": scale,
    "devices": devices,
  }


def setup(model: str, task: str, preset: str = "cpu", dtype: str = "float32") -> dict:
  """Builds and compiles `model`'s train step or forward (`specs.config_for(model, preset,
  dtype)`), runs it once (warm-up), times that."""
  teardown()
  protocol.reset_peak_rss()
  peak_before = _device_peak_mb()
  setup_task = _setup_train if task == "train" else _setup_infer
  info = setup_task(model, preset, dtype)
  _current["device_peak_before_mb"] = peak_before
  if jax.local_devices()[0].platform != "cpu":
    _current["timer"](1)  # First call on an accelerator: lazy allocations.
  info["warmup_s"] = _current["timer"](1)
  return info


def run(iters: int) -> dict:
  return {"seconds": _current["timer"](iters)}


def release_memory() -> None:
  """Frees what a finished row leaves behind, so that the next row's peak RSS is its own: JAX's
  compiled programs and tracing caches, Python's garbage, and the heap pages glibc keeps after
  `free` (without `malloc_trim` the process's resident size never goes back down)."""
  jax.clear_caches()
  gc.collect()
  with contextlib.suppress(OSError, AttributeError):
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def teardown() -> dict:
  """Peak memory of the row. The device peak is the process's: set in this row only where it
  rose."""
  before = _current.get("device_peak_before_mb")
  _current.clear()
  peak = _device_peak_mb()
  release_memory()
  return {
    "peak_rss_mb": protocol.peak_rss_mb(),
    "device_peak_mb": peak,
    "device_peak_set_in_row": None if peak is None or before is None else peak > before,
  }


CONV_GRAD_CHOICES = (
  "sr_jax",
  "xla",
  "all",
  "tiny",
  "everywhere",
  "tiny_everywhere",
  "depthwise_everywhere",
)


def use_conv_grad(which: str) -> None:
  """Ablation switch: "sr_jax" (as shipped: every network builds its convs with sr_jax.conv.Conv),
  "all" (the same, kept as a name for older commands), "xla" (lax.conv_general_dilated everywhere:
  the code before sr_jax.conv), "tiny" (sr_jax.conv without the image-by-image kernel gradient) or
  "everywhere" (sr_jax.conv's CPU rewrites on GPU/TPU too; "tiny_everywhere",
  "depthwise_everywhere": only that one rewrite). Call before any network is built."""
  everywhere = ("cpu", "cuda", "rocm", "tpu")
  platforms = dict(conv.REWRITE_PLATFORMS)
  if which == "xla":  # every conv XLA's own
    platforms = dict.fromkeys(platforms, ())
  if which == "tiny":  # the kernel gradient of XLA's own conv on every platform
    platforms["kernel_grad_by_image"] = ()
  if which == "everywhere":
    platforms = dict.fromkeys(platforms, everywhere)
  if which == "tiny_everywhere":
    platforms["tiny_as_matmul"] = everywhere
  if which == "depthwise_everywhere":
    platforms["depthwise_as_taps"] = everywhere
  conv.REWRITE_PLATFORMS = platforms


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--cpu_devices", type=int, default=0, help="CPU devices (0: JAX's default)")
  parser.add_argument(
    "--conv_grad",
    choices=CONV_GRAD_CHOICES,
    default="sr_jax",
    help="ablation only: which conv gradients the models use (see use_conv_grad)",
  )
  parser.add_argument(
    "--infer_over",
    choices=("rows", "device"),
    default="rows",
    help="sr_jax.tiling.make_tile_fn over every local device (one image split by rows) "
    "or on one device",
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
