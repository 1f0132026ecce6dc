"""A workdir under hostile conditions: damaged checkpoints, a second run, a changed train state,
bad settings, a full disk, read-only and mistyped workdirs. Nothing a run holds is ever lost."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
from PIL import Image
import pytest
import skimage.data

from sr_jax import checkpointing, config_checks, inference, train, train_logging, workdirs
from tests.test_train import ROOT, launch_command, subprocess_env, tiny_config

STEPS = {"train.steps": 6}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A 6-step run (checkpoints 2, 4, 6) and its final state."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  state = train.train_and_evaluate(tiny_config(**STEPS), str(workdir))
  return workdir, jax.device_get(state)


def _copy(run, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(run, copy)
  return copy


def _truncate_data_files(step_dir):
  for path in (step_dir / "state").rglob("d/*"):
    os.truncate(path, path.stat().st_size // 2)


DAMAGES = {
  "truncated_data_files": _truncate_data_files,
  "missing_METADATA": lambda step_dir: (step_dir / "state" / "_METADATA").unlink(),
  "corrupt_iterator_json": lambda step_dir: (step_dir / "data" / "process_0-of-1.json").write_text(
    '{"next_ind'
  ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(
  finished_run, tmp_path, damage, caplog
):
  run, final_state = finished_run
  workdir = _copy(run, tmp_path)
  DAMAGES[damage](workdir / "checkpoints" / "6")
  # Inference (upscale --workdir, --mode=eval): falls back, touches nothing.
  _, step, _ = inference.restore_model(str(workdir))
  assert step == 4
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]
  warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
  assert len(warnings) == 1 and "\n" not in warnings[0], warnings
  assert warnings[0].startswith(f"checkpoint 6 in {workdir}/checkpoints is damaged (")
  # Resume: retrains steps 5-6 from checkpoint 4, exactly as the first time; the damaged step is
  # moved aside, not deleted.
  state = train.train_and_evaluate(tiny_config(**STEPS), str(workdir))
  (moved,) = os.listdir(workdir / checkpointing.DAMAGED_DIR)
  assert moved.startswith("6-") and (workdir / checkpointing.DAMAGED_DIR / moved / "state").is_dir()
  rows = train_logging.read_jsonl(workdir / "metrics.jsonl")
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  np.testing.assert_array_equal(
    [r["loss"] for r in rows], [r["loss"] for r in train_logging.read_jsonl(run / "metrics.jsonl")]
  )
  for a, b in zip(jax.tree.leaves(final_state), jax.tree.leaves(jax.device_get(state))):
    np.testing.assert_array_equal(a, b)


def test_every_checkpoint_damaged_is_one_clear_error(finished_run, tmp_path):
  workdir = _copy(finished_run[0], tmp_path)
  for step in ("2", "4", "6"):
    (workdir / "checkpoints" / step / "state" / "_METADATA").unlink()
  with pytest.raises(checkpointing.DamagedCheckpointError, match=r"steps \[6, 4, 2\] damaged"):
    inference.restore_model(str(workdir))
  with pytest.raises(checkpointing.DamagedCheckpointError, match="no usable checkpoint"):
    train.train_and_evaluate(tiny_config(**STEPS), str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]


def test_another_train_state_is_refused_before_config_json_is_written(finished_run, tmp_path):
  workdir = _copy(finished_run[0], tmp_path)
  saved = (workdir / "config.json").read_text()
  # No model key differs, but the train state does (no EMA weights): refused with the entries.
  with pytest.raises(ValueError, match="ema_params/.*: only in the checkpoint.*new --workdir"):
    train.train_and_evaluate(tiny_config(**STEPS, **{"train.ema_decay": 0.0}), str(workdir))
  assert (workdir / "config.json").read_text() == saved
  assert not (workdir / workdirs.LOCK).exists()


def _lock_file(workdir, host, pid, age_s=0.0):
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / workdirs.LOCK
  path.write_text(json.dumps({"host": host, "pid": pid, "started": "earlier"}))
  os.utime(path, (time.time() - age_s,) * 2)
  return path


def _dead_pid():
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def test_lock_refuses_a_live_holder_and_replaces_a_stale_one(tmp_path):
  here = os.uname().nodename
  live = [(here, os.getpid(), 0.0), ("other-host", 1, 10.0)]
  for host, pid, age in live:
    _lock_file(tmp_path, host, pid, age)
    with pytest.raises(workdirs.WorkdirLockedError, match=f"pid {pid} on {host}"):
      workdirs.WorkdirLock(str(tmp_path)).acquire()
  stale = [(here, _dead_pid(), 0.0), ("other-host", 1, workdirs.LOCK_STALE_AFTER_S + 60)]
  for host, pid, age in stale:
    path = _lock_file(tmp_path, host, pid, age)
    with workdirs.WorkdirLock(str(tmp_path)) as lock:
      assert json.loads(path.read_text()) == lock.owner
    assert not path.exists()
  assert os.listdir(tmp_path) == []  # no temp or stale files left


def test_second_run_on_a_workdir_exits_at_once(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  with workdirs.WorkdirLock(str(workdir)):
    start = time.perf_counter()
    result = subprocess.run(
      launch_command(workdir),
      cwd=ROOT,
      env=subprocess_env(),
      capture_output=True,
      text=True,
      timeout=300,
    )
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "is in use by another run" in last, last
  assert f"pid {os.getpid()}" in last
  assert os.listdir(workdir) == [], "the refused run wrote into the workdir"
  assert time.perf_counter() - start < 60


@pytest.mark.parametrize(
  "key, value",
  [
    ("train.steps", 0),
    ("train.steps", -3),
    ("train.log_every_steps", -1),
    ("train.checkpoint_every_steps", -2),
    ("train.ema_decay", 1.0),
    ("train.keep_checkpoints", 0),
    ("train.profile_steps", (3, 2)),
  ],
)
def test_bad_train_settings_are_refused_before_anything_runs(tmp_path, key, value):
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=rf"^{key}="):
    train.train_and_evaluate(tiny_config(**{key: value}), str(workdir))
  assert not workdir.exists()


def test_zero_intervals_mean_only_at_the_end_and_profile_steps_write_a_trace(tmp_path):
  overrides = {
    "train.steps": 3,
    "train.log_every_steps": 0,
    "train.checkpoint_every_steps": 0,
    "train.eval_every_steps": 0,
    "train.profile_steps": (2, 3),
  }
  config_checks.check_train_config(tiny_config(**overrides))
  train.train_and_evaluate(tiny_config(**overrides), str(tmp_path))
  assert [r["step"] for r in train_logging.read_jsonl(tmp_path / "metrics.jsonl")] == [3]
  assert os.listdir(tmp_path / "checkpoints") == ["3"]
  traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 1000


FULL_DISK_RUN = textwrap.dedent(
  """
  import resource, runpy, sys
  from sr_jax import checkpointing

  save, limited = checkpointing.save, []

  def save_then_fill_the_disk(manager, step, *args, **kwargs):
    if manager.latest_step() is not None and not limited:  # after the first checkpoint, no room
      manager.wait_until_finished()
      resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
      limited.append(True)
    return save(manager, step, *args, **kwargs)

  checkpointing.save = save_then_fill_the_disk
  sys.argv = sys.argv[1:]
  runpy.run_path(sys.argv[0], run_name="__main__")
  """
)


def test_failed_save_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
  """A file-size limit makes every write past 4 KB fail (EFBIG), as a full disk (ENOSPC) does."""
  workdir = tmp_path / "run"
  result = subprocess.run(
    [sys.executable, "-c", FULL_DISK_RUN, *launch_command(workdir)[1:]],
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 1, result.stderr[-3000:]
  for noise in ("Traceback", "Event loop is closed", "ERROR:absl"):
    assert noise not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: saving a checkpoint in ") and "File too large" in last, last
  assert "the last complete checkpoint is step 2 (intact)" in last
  _, step, _ = inference.restore_model(str(workdir))
  assert step == 2


@pytest.fixture
def eval_dir(tmp_path):
  folder = tmp_path / "val"
  folder.mkdir()
  Image.fromarray(skimage.data.astronaut()[100:132, 180:212]).save(folder / "crop.png")
  return folder


def test_eval_on_a_read_only_workdir_prints_its_results(
  finished_run, eval_dir, monkeypatch, capsys
):
  workdir = str(finished_run[0])
  real_open, real_makedirs = open, os.makedirs

  def read_only(path):
    return os.path.abspath(os.fspath(path)).startswith(workdir)

  def guarded_open(file, mode="r", *args, **kwargs):
    if read_only(file) and any(m in mode for m in "wax+"):
      raise OSError(errno.EROFS, "Read-only file system", os.fspath(file))
    return real_open(file, mode, *args, **kwargs)

  def guarded_makedirs(path, *args, **kwargs):
    if read_only(path) and not os.path.isdir(path):
      raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
    return real_makedirs(path, *args, **kwargs)

  monkeypatch.setattr("builtins.open", guarded_open)
  monkeypatch.setattr(os, "makedirs", guarded_makedirs)
  config = tiny_config(**STEPS, **{"eval.dirs": (str(eval_dir),)})
  document = train.evaluate_checkpoint(config, workdir)
  out = capsys.readouterr().out
  assert document["step"] == 6 and "| val | bicubic |" in out
  assert "note: could not write the results to" in out and "Read-only file system" in out


def test_eval_on_a_mistyped_or_empty_workdir_creates_nothing(tmp_path):
  config = tiny_config(**STEPS)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    train.evaluate_checkpoint(config, str(tmp_path / "typo"))
  assert not (tmp_path / "typo").exists()
  workdirs.save_config(config, str(tmp_path))  # a run that never saved a checkpoint
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    train.evaluate_checkpoint(config, str(tmp_path))
  assert os.listdir(tmp_path) == ["config.json"]
