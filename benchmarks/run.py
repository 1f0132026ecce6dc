"""Speed of sr_jax against PyTorch and against the machine's measured matmul peak.

  python benchmarks/run.py --out=DIR [--models=edsr_baseline,unet_resnet34,...] [--repeats=N]
  python benchmarks/run.py --out=DIR --preset=accelerator   (GPU/TPU: float32 and bfloat16 rows)

Writes DIR/results.json, a list of rows
  {"model", "task": "train"|"infer", "sr_jax_per_s", "torch_per_s", "ratio", "fraction_of_peak",
   ...}
(train: steps/s of the real sr_jax train step; infer: 256x256 LR images/s, except where a model's
note says otherwise; ratio = sr_jax / torch throughput, null without torch; fraction_of_peak = the
step's FLOPs from XLA's cost analysis x throughput / the best float32 matmul FLOP/s measured here),
and DIR/results.md (the same as a table, with the machine and the settings).

--preset=accelerator takes the batch and patch sizes of the published GPU recipes
(`specs.ACCELERATOR`) and, by default, times every row in float32 and in bfloat16 (--dtypes):
sr_jax with `train.compute_dtype` / the inference dtype, PyTorch with `torch.autocast(bfloat16)`
(both memory formats timed, the faster one is the reference). fraction_of_peak is then against the
peak matmul of the row's dtype, and fraction_of_bf16_peak against the bfloat16 one.

Each framework runs in its own worker process; the two are timed alternately, repeat by repeat, so
that both see the same machine load. On CPU, JAX gets one device per core by default
(--cpu_devices), so the train step is data parallel over the cores. The script runs unchanged on a
GPU (both frameworks then use it): there both run float32 convolutions and matmuls on TF32 tensor
cores (XLA:GPU's default precision; PyTorch set to match in torch_worker.py), JAX allocates on
demand (XLA_PYTHON_CLIENT_PREALLOCATE=false, so that the three worker processes share the GPU), and
the peak FLOP/s is the best TF32 matmul. results.json and results.md are rewritten after every row.
"""

import argparse
import datetime
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import statistics
import sys

import protocol
import specs

HERE = os.path.dirname(os.path.abspath(__file__))


def _cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument(
    "--models",
    default=",".join(specs.DEFAULT_MODELS),
    help=f"comma-separated, from {', '.join(specs.SPECS)}",
  )
  parser.add_argument("--tasks", default="train,infer", help="train, infer or both")
  parser.add_argument(
    "--preset",
    choices=specs.PRESETS,
    default="cpu",
    help="batch / patch / image sizes: cpu (2 cores) or accelerator (the published GPU recipes)",
  )
  parser.add_argument(
    "--dtypes",
    default=None,
    help="compute dtypes to time, comma-separated (float32, bfloat16); default: float32 with "
    "--preset=cpu, float32,bfloat16 with --preset=accelerator",
  )
  parser.add_argument(
    "--repeats", type=int, default=3, help="timed repeats per framework (median reported)"
  )
  parser.add_argument(
    "--min_repeat_s", type=float, default=1.0, help="each repeat runs at least ~this long"
  )
  parser.add_argument(
    "--max_iters",
    type=int,
    default=50,
    help="at most this many calls per repeat (raise it on a GPU, where a call takes ms)",
  )
  parser.add_argument(
    "--cpu_devices",
    type=int,
    default=_cores(),
    help="JAX CPU devices (default: one per core; 0 = JAX's default of 1)",
  )
  parser.add_argument(
    "--conv_grad",
    choices=(
      "sr_jax",
      "all",
      "xla",
      "tiny",
      "everywhere",
      "tiny_everywhere",
      "depthwise_everywhere",
    ),
    default="sr_jax",
    help="ablation: sr_jax (= all): the models as they are, every conv through "
    "sr_jax.conv; xla: lax.conv_general_dilated everywhere (the code before "
    "sr_jax.conv); tiny: sr_jax.conv without the image-by-image kernel gradient; "
    "everywhere: sr_jax.conv's CPU rewrites on GPU/TPU too",
  )
  parser.add_argument(
    "--infer_over",
    choices=("rows", "device"),
    default="rows",
    help="sr_jax inference: image rows split over the devices, or one device",
  )
  parser.add_argument(
    "--torch_formats",
    default="channels_last,contiguous",
    help="PyTorch memory formats to time; the fastest is the reference",
  )
  parser.add_argument("--no_torch", action="store_true", help="sr_jax only")
  parser.add_argument(
    "--keep_going",
    action="store_true",
    help="a row that fails is reported (results.md, stderr) and the next row runs",
  )
  parser.add_argument(
    "--matmul_sizes", default="1024,2048,4096", help="sides of the peak-FLOP/s matmuls"
  )
  return parser.parse_args(argv)


def _jax_env(cpu_devices: int) -> dict:
  env = dict(os.environ)
  env.setdefault(
    "XLA_PYTHON_CLIENT_PREALLOCATE", "false"
  )  # GPU: leave memory to the torch workers.
  if cpu_devices:  # --cpu_devices decides; a simulated-device flag would fight it.
    flags = re.sub(
      r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")
    ).strip()
    env["XLA_FLAGS"] = flags
  return env


def start_workers(args) -> tuple[protocol.Worker, list[protocol.Worker]]:
  jax_worker = protocol.Worker(
    "sr_jax",
    os.path.join(HERE, "jax_worker.py"),
    [
      f"--cpu_devices={args.cpu_devices}",
      f"--infer_over={args.infer_over}",
      f"--conv_grad={args.conv_grad}",
    ],
    _jax_env(args.cpu_devices),
  )
  torch_workers = []
  if not args.no_torch and importlib.util.find_spec("torch") is not None:
    for memory_format in filter(None, args.torch_formats.split(",")):
      torch_workers.append(
        protocol.Worker(
          f"torch:{memory_format}",
          os.path.join(HERE, "torch_worker.py"),
          [f"--memory_format={memory_format}"],
        )
      )
  return jax_worker, torch_workers


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def measure_peak(jax_worker, torch_workers, sizes: list[int], dtype: str = "float32") -> dict:
  """Best `dtype` matmul FLOP/s over JAX, NumPy and PyTorch: the machine's practical ceiling."""
  peaks = dict(jax_worker.call("peak_matmul", sizes=sizes, dtype=dtype))
  if torch_workers:
    peaks.update(torch_workers[0].call("peak_matmul", sizes=sizes, dtype=dtype))
  peaks["jax"] = max(
    peaks["jax"], jax_worker.call("peak_matmul", sizes=sizes, dtype=dtype)["jax"]
  )  # after torch's turn
  peaks["best"] = max(peaks.values())
  return peaks


def _iters(warmup_s: float, min_repeat_s: float, max_iters: int = 50) -> int:
  return max(1, min(max_iters, math.ceil(min_repeat_s / max(warmup_s, 1e-6))))


def time_interleaved(workers: list, iters: list[int], repeats: int) -> list[list[float]]:
  """Seconds per call, `repeats` times per worker, alternating workers (order rotated each
  repeat)."""
  seconds = [[] for _ in workers]
  for r in range(repeats):
    for i in (
      list(range(len(workers)))[r % len(workers) :] + list(range(len(workers)))[: r % len(workers)]
    ):
      seconds[i].append(workers[i].call("run", iters=iters[i])["seconds"])
  return seconds


def bench_row(
  model: str, task: str, jax_worker, torch_workers, args, peaks: dict, dtype: str = "float32"
) -> dict:
  load_start = os.getloadavg()[0]
  peak = peaks[dtype]["best"]
  settings = specs.torch_settings(model, args.preset, dtype)
  jax_info = jax_worker.call("setup", model=model, task=task, preset=args.preset, dtype=dtype)
  torch_infos = [w.call("setup", settings=settings, task=task) for w in torch_workers]
  workers = [jax_worker, *torch_workers]
  iters = [
    _iters(info["warmup_s"], args.min_repeat_s, args.max_iters) for info in (jax_info, *torch_infos)
  ]
  seconds = time_interleaved(workers, iters, args.repeats)
  memory = [w.call("teardown") for w in workers]

  per_s = [1.0 / statistics.median(s) for s in seconds]
  by_format = {w.name.split(":", 1)[1]: p for w, p in zip(torch_workers, per_s[1:])}
  best_format = max(by_format, key=by_format.get) if by_format else None
  torch_per_s = by_format.get(best_format)
  best_torch = torch_workers[list(by_format).index(best_format)] if best_format else None
  torch_memory = memory[1 + torch_workers.index(best_torch)] if best_torch else {}
  torch_params = torch_infos[0]["params"] if torch_infos else None

  flops = jax_info["flops"]
  batch, size, scale = jax_info["batch_size"], jax_info["lr_size"], jax_info["scale"]
  sr_megapixels = batch * (size * scale) ** 2 / 1e6

  def derived(rate):
    if rate is None:
      return None, None, None
    return rate * batch, rate * sr_megapixels, (flops * rate / peak if flops else None)

  jax_images, jax_mp, jax_fraction = derived(per_s[0])
  torch_images, torch_mp, torch_fraction = derived(torch_per_s)
  bf16_peak = peaks.get("bfloat16", {}).get("best")
  return {
    "model": model,
    "task": task,
    "dtype": dtype,
    "preset": args.preset,
    "sr_jax_per_s": per_s[0],
    "torch_per_s": torch_per_s,
    "ratio": per_s[0] / torch_per_s if torch_per_s else None,
    "fraction_of_peak": jax_fraction,
    "torch_fraction_of_peak": torch_fraction,
    "unit": "steps/s" if task == "train" else "images/s",
    "sr_jax_images_per_s": jax_images,
    "torch_images_per_s": torch_images,
    "sr_jax_sr_megapixels_per_s": jax_mp,
    "torch_sr_megapixels_per_s": torch_mp,
    "flops_per_call": flops,
    "sr_jax_gflops_per_s": flops * per_s[0] / 1e9 if flops else None,
    "torch_gflops_per_s": flops * torch_per_s / 1e9 if flops and torch_per_s else None,
    "peak_flops_per_s": peak,
    "fraction_of_bf16_peak": flops * per_s[0] / bf16_peak if flops and bf16_peak else None,
    "torch_fraction_of_bf16_peak": (
      flops * torch_per_s / bf16_peak if flops and bf16_peak and torch_per_s else None
    ),
    "compile_s": jax_info["compile_s"],
    "sr_jax_peak_rss_mb": memory[0]["peak_rss_mb"],
    "torch_peak_rss_mb": torch_memory.get("peak_rss_mb"),
    "sr_jax_device_peak_mb": memory[0]["device_peak_mb"],
    "torch_device_peak_mb": torch_memory.get("device_peak_mb"),
    # JAX cannot reset its device peak: False = the process's peak was reached in an earlier row.
    "sr_jax_device_peak_set_in_row": memory[0].get("device_peak_set_in_row"),
    "xla_temp_mb": jax_info["xla_temp_mb"],
    "params_sr_jax": jax_info["params"],
    "params_torch": torch_params,
    "batch_size": batch,
    "lr_size": size,
    "scale": scale,
    "sr_jax_devices": jax_info["devices"],
    "torch_format": best_format,
    "torch_per_s_by_format": by_format,
    "sr_jax_seconds": seconds[0],
    "torch_seconds": {w.name: s for w, s in zip(torch_workers, seconds[1:])},
    "iters_per_repeat": dict(zip([w.name for w in workers], iters)),
    "repeats": args.repeats,
    "load_avg_start": load_start,
    "load_avg_end": os.getloadavg()[0],
    "note": specs.SPECS[model].note,
    "conv_grad": args.conv_grad,
    "infer_over": args.infer_over,
  }


def _fmt(value, spec: str = ".3g") -> str:
  return "—" if value is None else format(value, spec)


def markdown(rows: list[dict], header: dict) -> str:
  jax_info = header["jax"]
  machine = (
    f"- machine: {header['cpu']}, {header['cores']} cores; sr_jax on "
    f"{jax_info['device_count']} x {jax_info['platform']} ({jax_info['device_kind']}), "
    f"jax {jax_info['jax']}"
  )
  if jax_info["xla_flags"]:
    machine += f", XLA_FLAGS=`{jax_info['xla_flags']}`"
  precision = []
  if jax_info["platform"] != "cpu":
    precision = [
      f"- float32 arithmetic on {jax_info['platform']}: JAX default_matmul_precision="
      f"{jax_info['default_matmul_precision']} (XLA:GPU: TF32 tensor cores for float32 convs "
      "and matmuls); PyTorch allow_tf32 for cuDNN convs and cuBLAS matmuls, cudnn.benchmark on "
      "(see the torch line); the peak below is TF32"
    ]
  peaks = "; ".join(
    f"{dtype}: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in by_side.items())
    for dtype, by_side in header["peaks"].items()
  )
  lines = [
    f"# sr_jax vs PyTorch: {header['date']}",
    "",
    f"- command: `{header['command']}`",
    machine,
    f"- torch: {header['torch']}",
    *precision,
    f"- preset: {header['preset']}; peak matmul (best of sides {header['matmul_sizes']}): {peaks}",
    f"- load average (1 min) at start / end: {header['load_start']:.2f} / {header['load_end']:.2f}",
    "",
    "| model | task | dtype | unit | sr_jax | torch (format) | ratio | sr_jax GFLOP/s "
    "| fraction of peak (sr_jax / torch) | compile s | peak RSS MB (sr_jax / torch) | load |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    torch_cell = f"{_fmt(r['torch_per_s'])} ({r['torch_format']})" if r["torch_per_s"] else "—"
    fractions = f"{_fmt(r['fraction_of_peak'], '.2f')} / {_fmt(r['torch_fraction_of_peak'], '.2f')}"
    rss = f"{_fmt(r['sr_jax_peak_rss_mb'], '.0f')} / {_fmt(r['torch_peak_rss_mb'], '.0f')}"
    lines.append(
      f"| {r['model']} | {r['task']} | {r['dtype']} | {r['unit']} | {_fmt(r['sr_jax_per_s'])} | "
      f"{torch_cell} | "
      f"{_fmt(r['ratio'], '.2f')} | {_fmt(r['sr_jax_gflops_per_s'], '.0f')} | {fractions} | "
      f"{_fmt(r['compile_s'], '.1f')} | {rss} | "
      f"{r['load_avg_start']:.1f}–{r['load_avg_end']:.1f} |"
    )
  lines += ["", "Settings per model:", ""]
  for model in dict.fromkeys(r["model"] for r in rows):
    note = specs.SPECS[model].note
    if header["preset"] == "accelerator":
      overrides = specs.ACCELERATOR[model][0]
      note = f"{note}; accelerator preset: " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    size = specs.infer_size(model, header["preset"])
    lines.append(f"- `{model}`: {note}; infer: one {size}² LR image")
  for error in header.get("errors", []):
    lines.append(
      f"- FAILED `{error['model']}` {error['task']}: {error['error'].strip().splitlines()[-1]}"
    )
  return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
  args = parse_args(argv)
  models = [m for m in args.models.split(",") if m]
  tasks = [t for t in args.tasks.split(",") if t]
  tasks = ["train", "infer"] if tasks == ["both"] else tasks
  if not tasks or set(tasks) - {"train", "infer"}:
    raise SystemExit(f"error: --tasks={args.tasks!r}: give train, infer, train,infer or both")
  default_dtypes = "float32,bfloat16" if args.preset == "accelerator" else "float32"
  dtypes = [d for d in (args.dtypes or default_dtypes).split(",") if d]
  for model in models:
    for dtype in dtypes:
      specs.config_for(model, args.preset, dtype)  # Bad names fail before any worker starts.
  os.makedirs(args.out, exist_ok=True)
  jax_worker, torch_workers = start_workers(args)
  header = {
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "command": " ".join(
      ["python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
    ),
    "cpu": cpu_name(),
    "cores": _cores(),
    "matmul_sizes": args.matmul_sizes,
    "preset": args.preset,
    "load_start": os.getloadavg()[0],
  }
  rows = []

  def write_results():  # After every row, so that a run stopped early keeps the rows it finished.
    header["load_end"] = os.getloadavg()[0]
    with open(os.path.join(args.out, "results.json"), "w") as f:
      json.dump(rows, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
      f.write(markdown(rows, header))

  try:
    header["jax"] = jax_worker.call("describe")
    header["torch"] = (
      ", ".join(str(w.call("describe")) for w in torch_workers) or "not installed / not run"
    )
    sizes = [int(n) for n in args.matmul_sizes.split(",")]
    header["peaks"] = {
      dtype: measure_peak(jax_worker, torch_workers, sizes, dtype)
      for dtype in dict.fromkeys(["float32", *dtypes])
    }
    device = f"{header['jax']['device_count']} x {header['jax']['device_kind']} ({header['cpu']})"
    for model, task, dtype in itertools.product(models, tasks, dtypes):
      try:
        row = bench_row(model, task, jax_worker, torch_workers, args, header["peaks"], dtype)
      except (RuntimeError, OSError) as error:  # A worker's exception, or a worker that exited.
        if not args.keep_going:
          raise
        print(f"{model:20s} {task:5s} {dtype} FAILED: {error}", file=sys.stderr, flush=True)
        header.setdefault("errors", []).append(
          {"model": model, "task": task, "dtype": dtype, "error": str(error)}
        )
        write_results()
        continue
      row["device"] = device
      rows.append(row)
      print(
        f"{model:20s} {task:5s} {dtype:8s} sr_jax {row['sr_jax_per_s']:.3g} {row['unit']}  torch "
        f"{_fmt(row['torch_per_s'])}  ratio {_fmt(row['ratio'], '.2f')}  "
        f"peak fraction {_fmt(row['fraction_of_peak'], '.2f')}  load {row['load_avg_end']:.1f}",
        flush=True,
      )
      write_results()
  finally:
    for worker in (jax_worker, *torch_workers):
      worker.close()
  write_results()
  return rows


if __name__ == "__main__":
  main()
