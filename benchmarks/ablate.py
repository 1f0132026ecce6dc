"""What each performance choice buys: sr_jax variants (and PyTorch) timed alternately, same load.

  python benchmarks/ablate.py --out=DIR --models=edsr_baseline --tasks=train \\
      --variants='xla_1dev=--cpu_devices=1 --conv_grad=xla;fast_2dev=--cpu_devices=2'

Each variant is a jax_worker.py command line (--cpu_devices, --conv_grad) plus optional XLA flags
(`NAME=ARGS|XLA_FLAGS`). All variants (and the PyTorch workers) are set up on the same model, then
timed in turn, repeat by repeat, rotating the order. Writes DIR/ablation.json and DIR/ablation.md.
"""

import argparse
import json
import os
import statistics

import protocol
import run
import specs

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--models", default="edsr_baseline")
  parser.add_argument("--tasks", default="train")
  parser.add_argument("--variants", required=True, help="NAME=WORKER_ARGS[|XLA_FLAGS];...")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--min_repeat_s", type=float, default=1.0)
  parser.add_argument("--torch_formats", default="channels_last", help="'' for no PyTorch")
  return parser.parse_args(argv)


def start(variants: str, torch_formats: str) -> list[protocol.Worker]:
  workers = []
  for item in filter(None, variants.split(";")):
    name, _, rest = item.partition("=")
    worker_args, _, xla_flags = rest.partition("|")
    argv = worker_args.split()
    devices = next((int(a.split("=")[1]) for a in argv if a.startswith("--cpu_devices=")), 0)
    env = run._jax_env(devices)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
    workers.append(protocol.Worker(name, os.path.join(HERE, "jax_worker.py"), argv, env))
  for memory_format in filter(None, torch_formats.split(",")):
    workers.append(
      protocol.Worker(
        f"torch:{memory_format}",
        os.path.join(HERE, "torch_worker.py"),
        [f"--memory_format={memory_format}"],
      )
    )
  return workers


def ablate(model: str, task: str, workers: list[protocol.Worker], args) -> dict:
  load_start = os.getloadavg()[0]
  infos = []
  for worker in workers:
    if worker.name.startswith("torch:"):
      infos.append(worker.call("setup", settings=specs.torch_settings(model), task=task))
    else:
      infos.append(worker.call("setup", model=model, task=task))
  iters = [run._iters(info["warmup_s"], args.min_repeat_s) for info in infos]
  seconds = run.time_interleaved(workers, iters, args.repeats)
  memory = [w.call("teardown") for w in workers]
  return {
    "model": model,
    "task": task,
    "load_avg_start": load_start,
    "load_avg_end": os.getloadavg()[0],
    "variants": {
      w.name: {
        "median_s": statistics.median(s),
        "min_s": min(s),
        "seconds": s,
        "compile_s": info.get("compile_s"),
        "flops": info.get("flops"),
        "peak_rss_mb": m["peak_rss_mb"],
      }
      for w, s, info, m in zip(workers, seconds, infos, memory)
    },
  }


def markdown(results: list[dict]) -> str:
  lines = []
  for r in results:
    first = next(iter(r["variants"].values()))["median_s"]
    lines += [
      f"### {r['model']} {r['task']} (load {r['load_avg_start']:.1f}–{r['load_avg_end']:.1f})",
      "",
      "| variant | median s | min s | vs first | compile s | peak RSS MB |",
      "|---|---|---|---|---|---|",
    ]
    for name, v in r["variants"].items():
      lines.append(
        f"| {name} | {v['median_s']:.3f} | {v['min_s']:.3f} | {first / v['median_s']:.2f}x | "
        f"{run._fmt(v['compile_s'], '.1f')} | {run._fmt(v['peak_rss_mb'], '.0f')} |"
      )
    lines.append("")
  return "\n".join(lines)


def main(argv=None) -> None:
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  workers = start(args.variants, args.torch_formats)
  results = []
  try:
    for model in filter(None, args.models.split(",")):
      for task in filter(None, args.tasks.split(",")):
        results.append(ablate(model, task, workers, args))
        print(markdown(results[-1:]), flush=True)
  finally:
    for worker in workers:
      worker.close()
  with open(os.path.join(args.out, "ablation.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(args.out, "ablation.md"), "w") as f:
    f.write(markdown(results))


if __name__ == "__main__":
  main()
