"""A run's workdir: the config it was trained with (config.json), and where evaluations go.

Comparing a config with the run's tells a resumed or evaluated run what changed: a different
model (or scale) makes the checkpoints unusable and is refused before anything is written.
"""

import json
import os

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
      "cannot be resumed with this config: use a new --workdir (or the run's own config)"
    )
  return differences


def eval_dir(workdir: str, step: int, set_names: list[str]) -> str:
  """Where `--mode=eval` writes: eval/step<N>_<sets>/, beside (never over) the run's results."""
  sets = "+".join(set_names) or "none"
  return os.path.join(workdir, "eval", f"step{step:07d}_{sets}")
