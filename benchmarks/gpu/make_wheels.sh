#!/usr/bin/env bash
# Fills .whl (git-ignored) with the wheels that the device machine's python3 (3.12, no network)
# lacks for benchmarks/run.py's import chain; benchmarks/gpu/run_on_device.sh installs them there.
#   grain, array_record, portpicker: sr_jax.checkpointing and sr_jax.data.pipeline import grain
#   ml_collections: configs/, benchmarks/specs.py and most of sr_jax
#   flax 0.12.12: latest 0.12.x (needs jax>=0.11.1), tested here with jax 0.11.2 on Python 3.12
#     (flax 0.12.8, the one in .venv, fails there: jax.experimental.hijax.HiPrimitive is gone)
# Every other requirement of these (absl-py, etils, cloudpickle, protobuf, psutil, PyYAML, numpy,
# jax, msgpack, optax, orbax-checkpoint, tensorstore, rich, typing_extensions, treescope) is in the
# machine's package list (/work/.library/device/KINDS.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p .whl
for spec in flax==0.12.12 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0 ml_collections==1.1.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$spec"
done
ls -l .whl
