"""benchmarks/run.py, run as documented, writes its row schema (tiny model, one repeat; no timing
is asserted)."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

RUN = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
HAS_TORCH = importlib.util.find_spec("torch") is not None
REQUIRED = {"model", "task", "sr_jax_per_s", "torch_per_s", "ratio", "fraction_of_peak"}


def test_run_writes_rows_for_each_model_and_task(tmp_path):
  subprocess.run(
    [
      sys.executable,
      str(RUN),
      f"--out={tmp_path}",
      "--models=edsr_tiny",
      "--repeats=1",
      "--min_repeat_s=0",
      "--matmul_sizes=128",
      "--torch_formats=contiguous",
      "--cpu_devices=2",
    ],
    check=True,
    timeout=600,
  )
  written = json.loads((tmp_path / "results.json").read_text())
  assert [(r["model"], r["task"]) for r in written] == [
    ("edsr_tiny", "train"),
    ("edsr_tiny", "infer"),
  ]
  for row in written:
    assert REQUIRED <= set(row)
    assert row["sr_jax_per_s"] > 0 and 0 < row["fraction_of_peak"]
    assert row["flops_per_call"] > 0 and row["compile_s"] > 0
    assert row["sr_jax_devices"] == 2  # the batch / the image rows over 2 devices
    if HAS_TORCH:
      assert row["ratio"] == pytest.approx(row["sr_jax_per_s"] / row["torch_per_s"])
      assert row["params_torch"] == row["params_sr_jax"]  # the same network on both sides
    else:
      assert row["torch_per_s"] is None and row["ratio"] is None
  table = (tmp_path / "results.md").read_text()
  assert "| edsr_tiny | train |" in table and "| edsr_tiny | infer |" in table


def test_accelerator_preset_times_bfloat16_on_both_sides(tmp_path):
  """--preset=accelerator --dtypes=bfloat16: sr_jax with train.compute_dtype=bfloat16, PyTorch
  under autocast; fractions against the measured bfloat16 matmul peak."""
  subprocess.run(
    [
      sys.executable,
      str(RUN),
      f"--out={tmp_path}",
      "--models=edsr_tiny",
      "--tasks=train",
      "--preset=accelerator",
      "--dtypes=bfloat16",
      "--repeats=1",
      "--min_repeat_s=0",
      "--matmul_sizes=128",
      "--torch_formats=channels_last",
      "--cpu_devices=2",
    ],
    check=True,
    timeout=600,
  )
  (row,) = json.loads((tmp_path / "results.json").read_text())
  assert (row["model"], row["task"], row["dtype"], row["preset"]) == (
    "edsr_tiny",
    "train",
    "bfloat16",
    "accelerator",
  )
  assert row["fraction_of_peak"] == pytest.approx(row["fraction_of_bf16_peak"])
  if HAS_TORCH:
    assert row["torch_fraction_of_bf16_peak"] > 0
  assert "| edsr_tiny | train | bfloat16 |" in (tmp_path / "results.md").read_text()
