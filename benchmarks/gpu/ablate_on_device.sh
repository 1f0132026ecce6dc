#!/usr/bin/env bash
# Which of sr_jax.conv's CPU rewrites also pay on a GPU (U-Net train steps), on the device machine:
#   run(command="bash benchmarks/gpu/ablate_on_device.sh", carry=[".whl"], kind="nvidia-h200", timeout_s=300)
# Writes $OUT/gpu_ablate/{r34,lite0}/ablation.{json,md} and log.txt. Same wheels as run_on_device.sh.
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/sr_jax_gpu_out}
mkdir -p "$OUT/gpu_ablate"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# sr_jax and configs from this checkout (not pip-installed there), after the wheels.
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export TEMPORARILY_DISABLE_PROTOBUF_VERSION_CHECK=true
{
  timeout -s INT 110 python3 benchmarks/ablate.py --out="$OUT/gpu_ablate/r34" --models=unet_resnet34 --tasks=train \
    --repeats=3 --min_repeat_s=0.5 --torch_formats= --variants='xla_convs=;tiny_as_matmul=--conv_grad=tiny_everywhere'
  timeout -s INT 150 python3 benchmarks/ablate.py --out="$OUT/gpu_ablate/lite0" --models=unet_effnetlite0 --tasks=train \
    --repeats=3 --min_repeat_s=0.5 --torch_formats= \
    --variants='xla_convs=;tiny_as_matmul=--conv_grad=tiny_everywhere;depthwise_as_taps=--conv_grad=depthwise_everywhere'
} 2>&1 | tee "$OUT/gpu_ablate/log.txt"
