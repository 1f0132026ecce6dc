"""benchmarks/transfer_study.py, run as documented on a tiny budget: every output written, gains
reported against the baseline with their spread over seeds."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "transfer_study.py"


def test_study_runs_end_to_end_and_reports_gains_with_their_spread(tmp_path):
  eval_dir = tmp_path / "eval"
  eval_dir.mkdir()
  rng = np.random.default_rng(0)
  for name, shape in (("a", (80, 72)), ("b", (72, 80))):
    y, x = np.mgrid[: shape[0], : shape[1]] / 9.0
    image = np.stack([np.sin(x * rng.uniform(0.5, 2) + y + c) for c in range(3)], -1)
    pixels = np.rint((image * 0.4 + 0.5) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(eval_dir / f"{name}.png")
  out = tmp_path / "out"
  command = [
    sys.executable,
    str(SCRIPT),
    f"--eval_dir={eval_dir}",
    f"--out={out}",
    "--routes=scratch,self_adapt",
    "--seeds=2",
    "--steps=2",
    "--eval_every=1",
    "--batch_size=2",
    "--patch_size=8",
  ]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  study = json.loads((out / "transfer_study.json").read_text())
  assert [len(study["runs"][route]) for route in ("scratch", "self_adapt")] == [2, 2]
  adapted = study["summary"]["self_adapt"]
  assert adapted["baseline"] == "scratch" and adapted["steps"] == [0, 1, 2]
  differences = np.subtract(adapted["final_psnr_y"], study["summary"]["scratch"]["final_psnr_y"])
  assert np.isclose(adapted["gain"], differences.mean())
  assert np.isclose(adapted["gain_spread"], differences.std(ddof=1))
  margin = max(adapted["gain_spread"], 0.01)
  expected = "gain" if adapted["gain"] > margin else "loss" if adapted["gain"] < -margin else "no"
  assert adapted["verdict"].startswith(expected)
  assert "steps_to_baseline_final" in adapted
  table = (out / "transfer_study.md").read_text()
  assert "| scratch |" in table and "| self_adapt |" in table and "± " in table
  for plot in ("transfer_study_steps.png", "transfer_study_seconds.png"):
    assert (out / plot).stat().st_size > 1000
