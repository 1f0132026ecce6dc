"""launch.py: each natural command-line mistake gives one `error:` line and exit code 2."""

import os
import subprocess
import sys

import pytest

from tests.test_train import ROOT, launch_command, subprocess_env


def _launch(*args):
  return subprocess.run(
    [sys.executable, "launch.py", *args],
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )


def _assert_one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), last
  for fragment in fragments:
    assert fragment in last, last


@pytest.mark.parametrize(
  "args, fragments",
  [
    (["--config=configs/no_such.py", "--workdir=W"], ["--config", "configs/no_such.py"]),
    (["--config=configs/default.py", "--workdir=W", "--config.modl.name=edsr"], ["modl"]),
    (["--workdir=W_missing", "--mode=eval"], ["W_missing", "does not exist"]),
    (["--workdir=W_missing"], ["W_missing", "--config"]),
    (
      ["--config=configs/default.py", "--workdir=W_missing", "--config.train.steps=0"],
      ["train.steps=0", ">= 1"],
    ),
  ],
  ids=["config_path", "misspelt_key", "eval_missing_workdir", "train_without_config", "steps_0"],
)
def test_flag_mistakes(tmp_path, args, fragments):
  args = [a.replace("=W", f"={tmp_path}/W") for a in args]
  _assert_one_line_error(_launch(*args), *fragments)
  assert not os.path.exists(tmp_path / "W_missing"), "a mistyped workdir was created"


def test_folder_without_images(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  command = launch_command(tmp_path / "run", overrides={"data.train_dirs": (str(empty),)})
  result = subprocess.run(
    command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300
  )
  _assert_one_line_error(result, "data.train_dirs", "no usable training image")


def test_another_model_on_an_existing_run_is_refused_before_writing(tmp_path):
  run = tmp_path / "run"
  subprocess.run(
    launch_command(run, overrides={"train.steps": 2}),
    check=True,
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    timeout=300,
  )
  saved = (run / "config.json").read_text()
  result = subprocess.run(
    launch_command(run, overrides={"train.steps": 4, "model.num_feat": 16}),
    cwd=ROOT,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  _assert_one_line_error(result, "model.num_feat: run has 8, given 16", "new --workdir")
  assert (run / "config.json").read_text() == saved
