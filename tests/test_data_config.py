"""The `data` block of configs/default.py is the one home of the data keys.

Every key the data code reads or its README documents exists there and can be overridden on the
command line (`--config.data.KEY=...` with a locked config, as launch.py parses it); the
pipeline runs on the locked default config and fails loudly on a missing key.
"""

import os
import re

from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np
from PIL import Image
import pytest

from configs import default
from sr_jax import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "default.py")
DATA_DIR = os.path.join(ROOT, "sr_jax", "data")


def _leaves(config: ml_collections.ConfigDict, prefix: str = ""):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _lookup(config: ml_collections.ConfigDict, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config


def _override(value):
  """(command-line text, the value it parses to), different from the default `value`."""
  if isinstance(value, bool):
    return str(not value).lower(), not value
  if isinstance(value, int):
    return str(value + 1), value + 1
  if isinstance(value, float):
    return repr(value / 2), value / 2
  if isinstance(value, str):
    return "other", "other"
  if isinstance(value, tuple) and value and all(isinstance(v, float) for v in value):
    return repr(tuple(v / 2 for v in value)), tuple(v / 2 for v in value)
  if isinstance(value, tuple):
    return repr(("a", "b")), ("a", "b")
  raise TypeError(f"no override for {value!r}")


def _parse(*args: str) -> ml_collections.ConfigDict:
  """The config as launch.py gets it from these command-line arguments."""
  flag_values = flags.FlagValues()
  argv = ["prog", f"--config={DEFAULT_CONFIG}", *args]
  config_flags.DEFINE_config_file(
    "config", None, lock_config=True, flag_values=flag_values, sys_argv=argv
  )
  flag_values(argv)
  return flag_values.config


def _code_keys() -> set[str]:
  """Data keys the data modules read: `data_config.KEY` and the Real-ESRGAN option names."""
  keys = set()
  for name in sorted(os.listdir(DATA_DIR)):
    if not name.endswith(".py"):
      continue
    with open(os.path.join(DATA_DIR, name)) as f:
      source = f.read()
    keys.update(re.findall(r"\bdata_config\.([a-z_0-9]+)", source))
    if name == "degradations.py":  # options["NAME"] or options["NAME" + suffix] (suffix "2")
      for option, suffix in re.findall(r'\boptions\["([a-z_0-9]+)"( \+ suffix)?\]', source):
        keys.add(f"realesrgan.{option}")
        if suffix:
          keys.add(f"realesrgan.{option}2")
  return keys


def _readme_keys() -> set[str]:
  """Keys the data README names: `data.KEY`, `config.data.KEY`, and its table of keys."""
  with open(os.path.join(DATA_DIR, "README.md")) as f:
    text = f.read()
  # Not `data.load_eval_folder(...)`: a function of the package, not a key.
  key = r"(?<![\w.])(?:config\.)?data\.([a-z_0-9]+(?:\.[a-z_0-9]+)?)(?![\w(])"
  keys = set(re.findall(key, text))
  table = text.split("## Keys", 1)[1].split("\n## ", 1)[0]
  for first_cell in re.findall(r"^\| ([^|]+) \|", table, flags=re.MULTILINE):
    keys.update(k.removesuffix(".*") for k in re.findall(r"`([a-z_0-9.*]+)`", first_cell))
  return keys


DATA_KEYS = [key for key, _ in _leaves(default.get_config().data)]


@pytest.mark.parametrize("key", DATA_KEYS)
def test_every_data_key_can_be_overridden_on_the_command_line(key):
  text, expected = _override(_lookup(default.get_config().data, key))
  assert _lookup(_parse(f"--config.data.{key}={text}").data, key) == expected


def test_misspelt_data_key_is_rejected():
  with pytest.raises((flags.Error, AttributeError), match="num_thread"):
    _parse("--config.data.num_thread=8")


def test_keys_read_or_documented_are_in_the_config():
  code_keys, readme_keys = _code_keys(), _readme_keys()
  # The scans find what they should (a broken regex would make this test vacuous).
  assert {"num_threads", "cache_max_mb", "tfds_split", "realesrgan.jpeg_range2"} <= code_keys
  assert {"source", "cache_max_mb", "prefetch_buffer_size", "tfds_split"} <= readme_keys
  data_config = default.get_config().data
  for key in sorted(code_keys | readme_keys):
    _lookup(data_config, key)  # KeyError names a key that is missing from configs/default.py


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """(HR folder, LR folder) of two 40x48 HR images and their x4 LR images."""
  hr_dir, lr_dir = tmp_path_factory.mktemp("hr"), tmp_path_factory.mktemp("lr")
  rng = np.random.default_rng(0)
  for i in range(2):
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(hr_dir / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(lr_dir / f"{i}.png")
  return str(hr_dir), str(lr_dir)


@pytest.mark.parametrize("degradation", ["bicubic", "realesrgan", "paired"])
def test_pipeline_runs_on_the_locked_default_config(folders, degradation):
  hr_dir, lr_dir = folders
  config = _parse(
    f"--config.data.train_dirs=('{hr_dir}',)",
    f"--config.data.train_lr_dirs=('{lr_dir}',)",
    f"--config.data.degradation={degradation}",
    "--config.data.patch_size=8",
  ).data
  assert config.is_locked and config.realesrgan.is_locked
  batch = next(data.create_train_iterator(config, seed=0, local_batch_size=2))
  assert batch["lr"].shape == (2, 8, 8, 3) and batch["hr"].shape == (2, 32, 32, 3)


def test_a_missing_key_fails_loudly(folders):
  config = default.get_config().data
  config.train_dirs, config.patch_size = (folders[0],), 8
  del config["num_threads"]  # as if the block had lost it: no silent default
  with pytest.raises(AttributeError, match="num_threads"):
    data.create_train_iterator(config, seed=0, local_batch_size=2)
