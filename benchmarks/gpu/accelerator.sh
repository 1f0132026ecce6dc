#!/usr/bin/env bash
# The accelerator preset on one GPU (H200 / H100): every default row, train and infer, float32
# (TF32) and bfloat16 on both sides (sr_jax train.compute_dtype / inference dtype; PyTorch autocast
# bfloat16 + channels_last), fraction_of_peak against each dtype's measured matmul peak. Budget:
# under 8 minutes in all (install and checks ~1 min, then BENCH_TIMEOUT_S; results.* are rewritten
# after every row, so a run stopped by the time-out keeps the rows it finished).
#
#   bash benchmarks/gpu/make_wheels.sh   # once, here: fills .whl (git-ignored)
#   run(command="bash benchmarks/gpu/accelerator.sh", carry=[".whl"], kind="nvidia-h200", timeout_s=480)
#
# Comes back: $OUT/gpu/{log.txt, env.txt, results.json, results.md}. Extra arguments go to
# benchmarks/run.py (e.g. --models=edsr_baseline,rrdbnet --tasks=train).
# Time per row on a fresh machine is mostly XLA:GPU's compile (no persistent cache there); with
# 20 rows, one PyTorch memory format (channels_last, its fastest on GPU for bfloat16 convs) and
# 2 repeats of >= 0.5 s keep the run inside the budget.
set -u -o pipefail
cd "$(dirname "$0")/../.."
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-400} exec bash benchmarks/gpu/run_on_device.sh \
  --preset=accelerator --torch_formats=channels_last --repeats=2 --min_repeat_s=0.5 "$@"
