"""The notebooks run top to bottom (nbclient) on the small budget of SR_JAX_NOTEBOOK_SMOKE=1.

Kernels inherit this process's environment, with 2 simulated devices instead of 8, plus a temporary
cache (bundled photos) and temporary workdirs (TMPDIR). Most of the run time is XLA compiling
hundreds of small programs, so the kernels share a JAX compilation cache kept in pytest's cache
folder (`.pytest_cache/d/`, dropped by `pytest --cache-clear`): a rerun takes about half as long.
"""

import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory, request):
  root = tmp_path_factory.mktemp("notebooks")
  return {
    "SR_JAX_NOTEBOOK_SMOKE": "1",
    # 2 simulated devices, not the suite's 8: a kernel holding two U-Nets with 8 replicas each
    # needed >5 GB (the notebooks still run data-parallel, batch 8 splits over both). Compiling
    # without LLVM optimisation, as the suite does (tests/conftest.py): quickstart 30 -> 20 s.
    "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0",
    "SR_JAX_CACHE": str(root / "cache"),
    "TMPDIR": str(root),  # the notebooks' workdirs (tempfile.mkdtemp)
    "JAX_COMPILATION_CACHE_DIR": str(request.config.cache.mkdir("jax_compilation_cache")),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # the many small programs are the cost
  }


@pytest.mark.parametrize("name", ["quickstart.ipynb", "transfer_learning.ipynb"])
def test_notebook_runs_top_to_bottom(name, kernel_env, monkeypatch):
  for key, value in kernel_env.items():
    monkeypatch.setenv(key, value)
  monkeypatch.delenv("MPLBACKEND", raising=False)  # ipykernel's inline backend shows the figures
  notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
  code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
  assert not any(cell.outputs or cell.execution_count for cell in code_cells), (
    f"{name} is committed with outputs: clear them"
  )
  # The "python3" kernel spec must launch this environment's python (jupyter_client maps it to
  # sys.executable), not whatever python is first on PATH.
  notebook.cells.insert(
    0, nbformat.v4.new_code_cell(f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.executable")
  )
  client = nbclient.NotebookClient(
    notebook,
    timeout=CELL_TIMEOUT_S,
    kernel_name="python3",
    resources={"metadata": {"path": str(NOTEBOOKS)}},
  )
  client.execute()  # raises CellExecutionError naming the cell, with its traceback
  figures = [
    output
    for cell in code_cells
    for output in cell.outputs
    if "image/png" in output.get("data", {})
  ]
  assert figures, f"{name} displayed no figure"
