"""Interrupted runs continue exactly: SIGKILL (the last periodic checkpoint) and SIGTERM (a
checkpoint at the step it arrives, saved through a flood of further SIGTERMs, exit code 143).
Both resumed runs log and end with the same losses and weights as one uninterrupted run. Under
--distributed, SIGTERM to one process stops all of them at one agreed step."""

import os
import re
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from sr_jax import checkpointing, optim, train_logging, train_state
from tests.test_launch_multihost import _free_port
from tests.test_train import ROOT, launch_command, subprocess_env, tiny_config

OVERRIDES = {"train.steps": 10}


def _run_to_end(workdir):
  subprocess.run(
    launch_command(workdir, overrides=OVERRIDES),
    check=True,
    cwd=ROOT,
    env=subprocess_env(),
    timeout=300,
    capture_output=True,
  )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 10-step run."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  _run_to_end(workdir)
  return workdir


def _final_params(workdir):
  config = tiny_config()
  _, tx = optim.from_config(config)
  _, state = train_state.create_train_state(config, tx, load_weights=False)
  manager = checkpointing.create_manager(str(workdir), keep=3)
  restored = checkpointing.restore(manager, manager.latest_step(), state)
  manager.close()
  return restored


def _assert_same_as_reference(workdir, reference):
  reference_rows = train_logging.read_jsonl(reference / "metrics.jsonl")
  resumed_rows = train_logging.read_jsonl(workdir / "metrics.jsonl")
  assert [r["step"] for r in resumed_rows] == list(range(1, 11)), "resumed log: gap or duplicate"
  np.testing.assert_allclose(
    [r["loss"] for r in resumed_rows], [r["loss"] for r in reference_rows], rtol=1e-6
  )
  expected, actual = _final_params(reference), _final_params(workdir)
  assert int(actual["step"]) == 10
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _start(workdir, log):
  return subprocess.Popen(
    launch_command(workdir, overrides=OVERRIDES),
    cwd=ROOT,
    env=subprocess_env(),
    stdout=subprocess.DEVNULL,
    stderr=log,
  )


def _wait_for(condition, process, what):
  deadline = time.time() + 240
  while not condition():
    assert process.poll() is None, f"run ended before {what}"
    assert time.time() < deadline, f"timed out waiting for {what}"
    time.sleep(0.02)


def test_sigkill_and_resume_equals_uninterrupted_run(tmp_path, reference):
  interrupted = tmp_path / "interrupted"
  process = _start(interrupted, subprocess.DEVNULL)
  _wait_for(lambda: (interrupted / "checkpoints" / "4").exists(), process, "checkpoint 4")
  process.send_signal(signal.SIGKILL)
  process.wait()
  _run_to_end(interrupted)  # the lock of the killed run is stale (its pid is gone)
  _assert_same_as_reference(interrupted, reference)


def test_sigterm_saves_the_current_step_and_resume_equals_uninterrupted_run(tmp_path, reference):
  interrupted, log_path = tmp_path / "interrupted", tmp_path / "stderr.txt"
  metrics = interrupted / "metrics.jsonl"
  with open(log_path, "w") as log:
    process = _start(interrupted, log)
    _wait_for(
      lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, process, "3 steps"
    )
    # The first SIGTERM stops the run after its current step; the following ones arrive while it
    # saves that step, until the run says it is done.
    while process.poll() is None and "preempted at step" not in log_path.read_text():
      process.send_signal(signal.SIGTERM)
      time.sleep(0.02)
    process.wait(timeout=120)
  stderr = log_path.read_text()
  assert process.returncode == 143, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  step = int(re.search(r"preempted at step (\d+): checkpoint saved", stderr).group(1))
  assert 3 <= step < 10
  assert stderr.strip().splitlines()[-1].startswith(f"preempted: stopped at step {step}")
  assert str(step) in os.listdir(interrupted / "checkpoints")
  assert [r["step"] for r in train_logging.read_jsonl(metrics)][-1] == step
  assert not (interrupted / "run.lock").exists()
  _run_to_end(interrupted)
  _assert_same_as_reference(interrupted, reference)


def test_sigterm_under_distributed_stops_every_process_at_one_step(tmp_path):
  """jax.distributed takes SIGTERM itself; the run must still stop (not train on until SIGKILL):
  every process reaches the agreed preemption step, saves it and exits 143."""
  workdir = tmp_path / "run"
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  logs = [open(tmp_path / f"process_{i}.txt", "w") for i in range(2)]
  processes = [
    subprocess.Popen(
      launch_command(
        workdir,
        "--distributed",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        overrides={"train.steps": 60, "train.checkpoint_every_steps": 100},
      ),
      cwd=ROOT,
      env=env,
      stdout=logs[i],
      stderr=subprocess.STDOUT,
    )
    for i in range(2)
  ]
  try:
    metrics = workdir / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, processes[0], "2")
    processes[1].send_signal(signal.SIGTERM)  # one host gets the notice
    for process in processes:
      process.wait(timeout=200)
  finally:
    for process, log in zip(processes, logs):
      process.kill()
      log.close()
  outputs = [(tmp_path / f"process_{i}.txt").read_text() for i in range(2)]
  steps = set()
  for process, output in zip(processes, outputs):
    assert process.returncode == 143, output[-3000:]
    steps.add(int(re.search(r"preempted at step (\d+): checkpoint saved", output).group(1)))
  (step,) = steps
  assert step < 60 and os.listdir(workdir / "checkpoints") == [str(step)]
