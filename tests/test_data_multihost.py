"""Multi-host input: 2 JAX processes on localhost (jax.distributed, CPU), each reading its shard."""

import os
import socket
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from sr_jax import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "data_multihost_worker.py")
NUM_PROCESSES = 2
TIMEOUT_S = 150


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _file_ids(hr_batch: np.ndarray) -> set[int]:
  """Which solid image each example came from (red channel = 10 * file index)."""
  return {int(round(v * 255)) // 10 for v in hr_batch[:, 0, 0, 0]}


@pytest.fixture(scope="module")
def worker_outputs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("multihost")
  image_dir = tmp / "solid"
  image_dir.mkdir()
  for i in range(8):  # solid colours: any crop tells which file it came from
    Image.fromarray(np.full((12, 14, 3), (10 * i, 60, 120), np.uint8)).save(
      image_dir / f"img{i}.png"
    )
  data.write_tfds_dataset("solid", str(tmp / "tfds"), str(image_dir))
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
    PYTHONPATH=ROOT,
  )
  port = _free_port()
  outs = [str(tmp / f"process{i}.npz") for i in range(NUM_PROCESSES)]
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        WORKER,
        str(port),
        str(i),
        str(NUM_PROCESSES),
        str(image_dir),
        str(tmp / "tfds"),
        outs[i],
      ],
      env=env,
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(NUM_PROCESSES)
  ]
  logs = []
  try:
    for proc in procs:
      logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
  finally:
    for proc in procs:  # never leave a worker behind
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for i, proc in enumerate(procs):
    assert proc.returncode == 0, f"process {i} failed:\n{logs[i][-3000:] if i < len(logs) else ''}"
  return [dict(np.load(out)) for out in outs]


@pytest.mark.parametrize("source", ["folder", "tfds"])
def test_each_process_reads_its_own_shard(worker_outputs, source):
  assert (
    int(worker_outputs[0]["device_count"]) == 4
    and int(worker_outputs[0]["local_device_count"]) == 2
  )
  seen = [_file_ids(out[f"{source}_local_hr"]) for out in worker_outputs]
  assert seen[0] <= {0, 2, 4, 6} and seen[1] <= {1, 3, 5, 7}  # sorted files [i::2]: disjoint
  assert all(out[f"{source}_local_hr"].shape == (4, 8, 8, 3) for out in worker_outputs)


@pytest.mark.parametrize("source", ["folder", "tfds"])
def test_global_batch_is_the_process_local_batches_in_order(worker_outputs, source):
  for key in ("lr", "hr"):
    expected = np.concatenate([out[f"{source}_local_{key}"] for out in worker_outputs])
    for out in worker_outputs:  # every process sees the same assembled global batch
      np.testing.assert_array_equal(out[f"{source}_global_{key}"], expected)
