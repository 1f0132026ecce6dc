"""Test setup: 8 simulated CPU devices, set before JAX is imported, and a persistent XLA
compilation cache shared by the test processes and the subprocesses they start (launch.py,
notebooks, README snippets compile the same networks again).

XLA's CPU backend compiles without LLVM optimisation (level 0): the tests run hundreds of small
programs once each, so compiling dominates their time (about 2x less CPU for a model's eager
init or a train step; the programs run a little slower, on tiny inputs)."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "")
  + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "sr_jax_tests_xla_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
