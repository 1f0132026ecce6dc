"""A run's workdir: the config it was trained with (config.json), its lock (run.lock), and where
evaluations go.

Comparing a config with the run's tells a resumed or evaluated run what changed: a different
model (or scale) makes the checkpoints unusable and is refused before anything is written.
"""

import json
import os
import socket
import sys
import threading
import time

from absl import logging
import ml_collections

CONFIG = "config.json"
# Keys whose change makes a run's checkpoints unusable: the network and its scale.
STRUCTURAL_PREFIXES = ("model.", "data.scale")


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in its workdir."""
  path = config_path(workdir)
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"--workdir={workdir!r} does not exist")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  tmp = config_path(workdir) + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, config_path(workdir))


def _flat(config: ml_collections.ConfigDict) -> dict:
  """{"a.b": value} with JSON-normalised values (tuples as lists), as config.json stores them."""
  flat = {}

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        walk(value, f"{prefix}{key}.")
      else:
        flat[f"{prefix}{key}"] = value

  walk(json.loads(config.to_json_best_effort()), "")
  return flat


def config_differences(run: ml_collections.ConfigDict, given: ml_collections.ConfigDict) -> list:
  """["key: run has A, given B", ...], the model's (and the scale's) keys first."""
  a, b = _flat(run), _flat(given)
  missing = object()
  keys = [k for k in sorted(a.keys() | b.keys()) if a.get(k, missing) != b.get(k, missing)]
  keys.sort(key=lambda k: not is_structural(k))
  return [f"{k}: run has {a.get(k, '(none)')!r}, given {b.get(k, '(none)')!r}" for k in keys]


def is_structural(key: str) -> bool:
  return key.startswith(STRUCTURAL_PREFIXES)


def check_resumable(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
  """The differences between `config` and the run's in `workdir` (none for a new workdir).

  Raises:
    ValueError: the model or the scale differ: the run's checkpoints cannot be resumed with it.
  """
  if not os.path.exists(config_path(workdir)):
    return []
  differences = config_differences(load_config(workdir), config)
  structural = [d for d in differences if is_structural(d.split(":")[0])]
  if structural:
    raise ValueError(
      f"{workdir!r} holds a run of another network ({'; '.join(structural)}); its checkpoints "
      "cannot be resumed with this config: use a new --workdir (or the run's own config; or "
      "move this workdir away yourself to reuse its name)"
    )
  return differences


def eval_dir(workdir: str, step: int, set_names: list[str]) -> str:
  """Where `--mode=eval` writes: eval/step<N>_<sets>/, beside (never over) the run's results."""
  sets = "+".join(set_names) or "none"
  return os.path.join(workdir, "eval", f"step{step:07d}_{sets}")


# The lock of a workdir that a run writes to. A lock is stale when its process is gone: on this
# host, its pid no longer runs (or runs another program: the start time differs); from another
# host, it stopped refreshing the lock file's modification time (every LOCK_HEARTBEAT_S) more than
# LOCK_STALE_AFTER_S ago (host clocks are assumed to agree within that).
LOCK = "run.lock"
LOCK_HEARTBEAT_S = 15.0
LOCK_STALE_AFTER_S = 120.0


class WorkdirLockedError(RuntimeError):
  """Another live run holds the workdir."""


def _process_start(pid: int) -> str | None:
  """The start time of `pid` since boot (Linux /proc), to tell a reused pid from the holder."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _pid_alive(pid: int, start: str | None) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return start is None or _process_start(pid) in (None, start)


class WorkdirLock:
  """WORKDIR/run.lock, held while a run writes: created atomically (a hard link of a complete
  temp file, which also works on NFS), refreshed by a daemon thread, removed on release."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK)
    self.owner = {
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "pid_start": _process_start(os.getpid()),
      "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
      "command": " ".join(sys.argv),
    }
    self._stop = threading.Event()
    self._thread = None

  def acquire(self) -> None:
    """Raises WorkdirLockedError, naming the holder, if a live run holds the workdir."""
    tmp = f"{self.path}.{self.owner['host']}.{self.owner['pid']}.tmp"
    with open(tmp, "w") as f:
      json.dump(self.owner, f)
    try:
      for _ in range(2):  # the second try after removing a stale lock
        try:
          os.link(tmp, self.path)
          break
        except FileExistsError:
          self._remove_if_stale()
      else:
        raise WorkdirLockedError(f"{self.path} was taken by another run just now")
    finally:
      os.remove(tmp)
    self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="workdir-lock")
    self._thread.start()

  def _holder(self) -> tuple[str, dict] | None:
    """(the lock file's text, its parsed content ({} if unreadable)), or None without one."""
    try:
      with open(self.path) as f:
        text = f.read()
    except FileNotFoundError:
      return None
    try:
      return text, json.loads(text)
    except ValueError:
      return text, {}

  def _remove_if_stale(self) -> None:
    found = self._holder()
    if found is None:
      return  # released meanwhile
    text, holder = found
    try:
      age = time.time() - os.path.getmtime(self.path)
    except FileNotFoundError:
      return
    if holder.get("host") == self.owner["host"] and "pid" in holder:
      stale = not _pid_alive(int(holder["pid"]), holder.get("pid_start"))
      why = f"process {holder['pid']} is gone"
    else:
      stale = age > LOCK_STALE_AFTER_S
      why = f"not refreshed for {age:.0f} s"
    if not stale:
      where = f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
      raise WorkdirLockedError(
        f"{os.path.dirname(self.path)!r} is in use by another run ({where}; lock file "
        f"{self.path}, refreshed {age:.0f} s ago). Wait for it or use another --workdir; a lock "
        f"whose process died counts as stale at once on the same host, after "
        f"{LOCK_STALE_AFTER_S:.0f} s from another"
      )
    # Rename, then check it is still the stale one: two runs may find the same stale lock.
    aside = f"{self.path}.stale.{self.owner['host']}.{self.owner['pid']}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    with open(aside) as f:
      moved = f.read()
    if moved != text:
      os.rename(aside, self.path)  # a fresh lock taken meanwhile: give it back
      return
    os.remove(aside)
    logging.warning("removed the stale lock %s (%s): %s", self.path, why, text.strip())

  def _heartbeat(self) -> None:
    while not self._stop.wait(LOCK_HEARTBEAT_S):
      try:
        os.utime(self.path)
      except OSError:
        pass  # a full or briefly unreachable disk: the next beat tries again

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
      found = self._holder()
      if found is not None and found[1] == self.owner:
        os.remove(self.path)

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
    return False
