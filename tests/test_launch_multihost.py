"""launch.py itself as 2 JAX processes on 127.0.0.1 (--distributed with explicit addresses): train
with checkpoints and evaluation to the end, then --mode=eval, as the README shows."""

import json
import os
import socket
import subprocess
import sys

from sr_jax import train_logging
from tests.test_train import ROOT, TINY

NUM_PROCESSES = 2


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _launch_processes(*args) -> list[str]:
  """Runs launch.py as NUM_PROCESSES processes of one cluster; returns their outputs."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "launch.py",
        *args,
        "--distributed",
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={NUM_PROCESSES}",
        f"--process_id={i}",
      ],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(NUM_PROCESSES)
  ]
  try:
    outputs = [p.communicate(timeout=400)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def test_two_process_launch_trains_checkpoints_and_evaluates(tmp_path):
  workdir = tmp_path / "run"
  overrides = {**TINY, "train.steps": 4, "train.eval_every_steps": 4}
  overrides["eval.dirs"] = ("embedded:val",)
  flags = [
    f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}"
    for k, v in overrides.items()
  ]
  outputs = _launch_processes("--config=configs/default.py", f"--workdir={workdir}", *flags)
  assert "JAX process 1/2, 2 local / 4 global devices" in outputs[1]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  rows = train_logging.read_jsonl(workdir / "metrics.jsonl")  # written by process 0 only
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
  assert json.loads((workdir / "eval_results.json").read_text())["step"] == 4

  outputs = _launch_processes(f"--workdir={workdir}", "--mode=eval")
  written = workdir / "eval" / "step0000004_embedded_val"
  assert f"written to {written}" in outputs[0]
  assert json.loads((written / "eval_results.json").read_text())["step"] == 4
