"""Parent <-> worker plumbing: one process per framework, driven by JSON lines over stdin/stdout.

Separate processes keep the frameworks' thread pools (XLA's, PyTorch's OpenMP) from competing or
spinning while the other one is timed, and give each side its own peak-memory reading.
"""

import json
import os
import subprocess
import sys
import time
import traceback
from typing import Callable


def serve(handlers: dict[str, Callable[..., dict]]) -> None:
  """Worker loop: reads {"cmd", "args"} lines, answers {"ok", "result"|"error"} lines."""
  replies = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)  # Library prints go to stderr, never into the reply stream.
  sys.stdout = sys.stderr
  for line in sys.stdin:
    request = json.loads(line)
    if request["cmd"] == "quit":
      break
    try:
      reply = {"ok": True, "result": handlers[request["cmd"]](**request.get("args", {}))}
    except Exception:
      reply = {"ok": False, "error": traceback.format_exc()}
    replies.write(json.dumps(reply) + "\n")


class Worker:
  """A framework worker process (`python script *argv`) and its request/reply channel."""

  def __init__(self, name: str, script: str, argv: list[str], env: dict | None = None):
    self.name = name
    self.process = subprocess.Popen(
      [sys.executable, script, *argv],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      env=env,
    )

  def call(self, cmd: str, **args) -> dict:
    self.process.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
    self.process.stdin.flush()
    line = self.process.stdout.readline()
    if not line:
      raise RuntimeError(f"{self.name} worker exited (code {self.process.wait()}) during {cmd!r}")
    reply = json.loads(line)
    if not reply["ok"]:
      raise RuntimeError(f"{self.name} worker failed in {cmd!r}:\n{reply['error']}")
    return reply["result"]

  def close(self) -> None:
    if self.process.poll() is None:
      try:
        self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.process.stdin.close()
        self.process.wait(timeout=30)
      except (OSError, subprocess.TimeoutExpired):
        self.process.kill()
        self.process.wait()


def reset_peak_rss() -> None:
  """Restarts the kernel's peak-RSS counter (VmHWM) of this process, where Linux allows it."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    pass


def peak_rss_mb() -> float | None:
  """Peak resident memory of this process since the last `reset_peak_rss`, in MiB."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def repeat_timer(run_once: Callable[[], None], sync: Callable[[], None]) -> Callable[[int], float]:
  """`time(iters)`: seconds per call of `run_once`, over `iters` back-to-back calls."""

  def time_iters(iters: int) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(iters):
      run_once()
    sync()
    return (time.perf_counter() - start) / iters

  return time_iters
