#!/usr/bin/env bash
# sr_jax vs PyTorch on the device machine's GPU (H200 / H100): one call, everything under $OUT/gpu.
#
#   run(command="bash benchmarks/gpu/run_on_device.sh", carry=[".whl"], kind="nvidia-h200", timeout_s=480)
#   extra arguments go to benchmarks/run.py, e.g. `bash benchmarks/gpu/run_on_device.sh --models=edsr_baseline`
#
# .whl (git-ignored, made by benchmarks/gpu/make_wheels.sh) holds what the machine's python3 (3.12,
# jax 0.11.2 + CUDA 13 plugin, torch 2.11) lacks: grain, array_record, portpicker, ml_collections,
# and flax 0.12.12. Not flax 0.12.8 (our .venv's): it fails to import under jax 0.11.x
# (jax.experimental.hijax.HiPrimitive is gone); 0.12.12 needs jax>=0.11.1. No jax, numpy or
# torch is carried: the machine's own stay in charge of the GPU.
#
# Comes back: $OUT/gpu/{log.txt, env.txt, results.json, results.md}; results.* are rewritten after
# every row, so a run cut short by BENCH_TIMEOUT_S (exit status 3) keeps the rows it finished.
# Exit 1: the wheels did not install, or JAX saw no GPU / could not import the benchmark (env.txt).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/sr_jax_gpu_out}
mkdir -p "$OUT/gpu"
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-400}  # leaves ~1 min of a 480 s call for the install and checks

{
  echo "== $(date -Is) $(hostname)"
  nvidia-smi -L
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm --format=csv
  echo "== the machine's own packages"
  python3 -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda|flax|optax|orbax|tensorstore|etils|numpy|scipy|torch|torchvision|grain|array.record|ml.collections|portpicker|absl|protobuf|pillow|scikit-image) '
} 2>&1 | tee "$OUT/gpu/env.txt"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed" | tee -a "$OUT/gpu/env.txt"; exit 1; }
# sr_jax and configs from this checkout (not pip-installed on the machine), after the wheels.
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# JAX would otherwise take 75% of the GPU at start; the benchmark's three worker processes (JAX,
# torch channels_last, torch contiguous) share the one GPU. run.py sets this default too.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# grain's one generated proto (gencode 5.28.3) refuses an older protobuf runtime; the benchmark never
# uses it, so a protobuf 5.x older than that must not stop the run.
export TEMPORARILY_DISABLE_PROTOBUF_VERSION_CHECK=true

python3 - <<'EOF' 2>&1 | tee -a "$OUT/gpu/env.txt" || exit 1
import sys, time
start = time.perf_counter()
import jax, jaxlib, flax, optax, grain, ml_collections, orbax.checkpoint, numpy, torch
print("python", sys.version.split()[0], sys.executable)
for m in (jax, jaxlib, flax, optax, grain, numpy, torch):
  print(f"{m.__name__:8s} {getattr(m, '__version__', '?'):14s} {m.__file__}")
assert not jax.__file__.startswith("/tmp/site"), "jax must be the machine's own"
print("jax.devices()", jax.devices(), "default precision", jax.config.jax_default_matmul_precision)
try:
  print("torch cuda", torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0),
        "cudnn", torch.backends.cudnn.version())
except Exception as e:  # Reported, not fatal: the torch side then runs on CPU or fails in its worker.
  print("TORCH SEES NO GPU:", repr(e))
# The workers' whole sr_jax import chain, before the benchmark starts.
import sr_jax.inference, sr_jax.testing.torch_reference, sr_jax.tiling, sr_jax.train
assert jax.devices()[0].platform == "gpu", "JAX sees no GPU"
print(f"imports and device checks: {time.perf_counter() - start:.1f} s")
EOF

# --max_iters: a GPU call takes milliseconds, so a repeat of >= 1 s needs more than the CPU's cap of
# 50 calls. --matmul_sizes: 8192 brings the TF32 matmul close to the GPU's peak (dispatch ~ 50 us).
# --cpu_devices (default: one per core) only shapes JAX's CPU backend; the GPU is JAX's default.
timeout -s INT -k 20 "$BENCH_TIMEOUT_S" \
  python3 benchmarks/run.py --out="$OUT/gpu" --keep_going --max_iters=300 --matmul_sizes=2048,4096,8192 "$@" \
  2>&1 | tee "$OUT/gpu/log.txt"
status=$?
echo "== benchmark exit status $status (124: stopped after ${BENCH_TIMEOUT_S} s; results.* keep the rows done)"
nvidia-smi --query-gpu=memory.used,temperature.gpu,clocks.sm --format=csv
cat "$OUT/gpu/results.md" 2>/dev/null
# 124 would read as the run tool's own time-out; our own stop exits 3 instead.
[ "$status" = 124 ] && exit 3
exit "$status"
