"""Data parallelism over every device of every host: a 1-D ("data",) mesh, batch split,
params replicated.

On CPU, `use_every_cpu_core()` (called before JAX starts) makes each core a device, so the same
data-parallel step spreads over the cores; one image at inference can be split by rows over the
mesh (`jit_over_image_rows`).
"""

import functools
import os
from typing import Callable

import jax
import numpy as np

DATA_AXIS = "data"


def available_cores() -> int:
  """The CPU cores this process may run on (all cores where the OS cannot say, e.g. macOS)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def cpu_device_count(cores: int, batch_size: int | None = None) -> int:
  """The largest device count up to `cores` splitting `batch_size` evenly (`cores` without)."""
  if not batch_size:
    return cores
  return max(n for n in range(1, cores + 1) if batch_size % n == 0)


def use_every_cpu_core(num_devices: int | None = None, batch_size: int | None = None) -> int:
  """One JAX CPU device per core (or `num_devices`); call before any JAX computation.

  Why: XLA:CPU runs most convolutions of one program on one core, so a program per core is what
  fills the machine (EDSR-baseline train step on 2 cores: 1.2-1.4x, benchmarks/RESULTS.md). Only
  the CPU backend is affected (GPU/TPU runs are unchanged). With `batch_size`, the count is the
  largest one up to the cores that splits the batch evenly. An explicit
  --xla_force_host_platform_device_count in XLA_FLAGS (tests) wins. Returns the count set, 0
  if none.
  """
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return 0
  count = cpu_device_count(num_devices or available_cores(), batch_size)
  jax.config.update("jax_num_cpu_devices", count)  # Raises if JAX's backends have already started.
  return count


def create_mesh(devices=None) -> jax.sharding.Mesh:
  """A ("data",) mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh(
    (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
  )


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
  return jax.NamedSharding(mesh, jax.P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
  return jax.NamedSharding(mesh, jax.P())


def local_batch_size(global_batch_size: int) -> int:
  """This process's share of the global batch; it must split evenly over devices."""
  if global_batch_size % jax.device_count():
    raise ValueError(
      f"train.batch_size={global_batch_size} is not divisible by the {jax.device_count()} devices"
    )
  return global_batch_size // jax.process_count()


def global_batch(
  local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh
) -> dict[str, jax.Array]:
  """Assembles the global, data-sharded batch from each process's local examples."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def replicate(tree, mesh: jax.sharding.Mesh):
  """Puts a pytree on every device (params, optimiser state)."""
  return jax.device_put(tree, replicated(mesh))


def image_rows(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
  """One NHWC image's rows split over the mesh (XLA exchanges the conv halos between devices)."""
  return jax.NamedSharding(mesh, jax.P(None, DATA_AXIS))


def jit_over_image_rows(forward: Callable, mesh: jax.sharding.Mesh) -> Callable:
  """`forward(params, lr)` jitted with replicated params and the image rows split over `mesh`.

  For one image, where there is no batch to split: every device computes a band of rows instead
  of all devices computing the whole image. The image height must be a multiple of the mesh size
  (see `rows_split_evenly`).
  """
  return jax.jit(
    forward, in_shardings=(replicated(mesh), image_rows(mesh)), out_shardings=image_rows(mesh)
  )


def rows_split_evenly(height: int, mesh: jax.sharding.Mesh) -> bool:
  """Whether an image of `height` rows can go to `jit_over_image_rows` on `mesh`."""
  return height % mesh.devices.size == 0


# --- ZeRO-1-style train state: optimiser moments and EMA weights split over the mesh ---------

# Leaves under these top-level keys of the train state are split over "data"; all others (step,
# params, model_state, rng, loss_state) stay replicated, since the forward pass needs them whole.
SPLIT_STATE_KEYS = ("opt_state", "ema_params")
# Smaller leaves (biases, norms, small convs) stay replicated: each split leaf costs a collective
# per step (the all-gather of its new params), more than halving a small update saves. On 2 CPU
# devices, splitting EDSR-baseline's [3, 3, 64, 64] kernels (37k elements) made its step ~1% slower.
MIN_SPLIT_SIZE = 2**17


def split_axis(shape: tuple[int, ...], num_shards: int, min_size: int | None = None) -> int | None:
  """The axis along which a leaf of `shape` is split over `num_shards` devices, or None
  (replicated).

  The first (outermost) axis divisible by `num_shards`; None for one shard, for a leaf under
  `min_size` (default `MIN_SPLIT_SIZE`) elements or with no such axis. Outermost rather than
  largest: the new params are all-gathered from these slices every step, and the further out the
  split axis, the longer the contiguous runs the gather copies (a conv kernel [kh, kw, in, out]
  splits along `in`; on XLA:CPU gathering the U-Net ResNet-34 params took ~64 ms split this way,
  ~72 ms split along the largest axis, ~92 ms along the last one).
  """
  min_size = MIN_SPLIT_SIZE if min_size is None else min_size
  if num_shards <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return None
  return next((axis for axis, size in enumerate(shape) if size % num_shards == 0), None)


def split_sharding(
  shape: tuple[int, ...], mesh: jax.sharding.Mesh, min_size: int | None = None
) -> jax.NamedSharding:
  """`shape` split along `split_axis` over the "data" axis of `mesh` (else replicated)."""
  axis = split_axis(tuple(shape), mesh.shape[DATA_AXIS], min_size)
  if axis is None:
    return replicated(mesh)
  return jax.NamedSharding(mesh, jax.P(*([None] * axis), DATA_AXIS))


def split_shardings(tree, mesh: jax.sharding.Mesh, min_size: int | None = None):
  """`split_sharding` of every leaf of `tree` (arrays, tracers or ShapeDtypeStructs)."""
  return jax.tree.map(lambda x: split_sharding(np.shape(x), mesh, min_size), tree)


def state_shardings(state: dict, mesh: jax.sharding.Mesh, min_size: int | None = None) -> dict:
  """The shardings of a train state (a dict) over `mesh`: ZeRO-1 style.

  opt_state (Adam's moments) and ema_params are split (`split_sharding`): each device updates
  only its slice; everything else is replicated. Depends on shapes only, so the same state gives
  the same layout at init, in the jitted step and at restore.
  """
  return {
    key: split_shardings(value, mesh, min_size)
    if key in SPLIT_STATE_KEYS
    else jax.tree.map(lambda _: replicated(mesh), value)
    for key, value in state.items()
  }


def place_state(state: dict, mesh: jax.sharding.Mesh) -> dict:
  """Puts a train state on `mesh` with `state_shardings`."""
  return jax.device_put(state, state_shardings(state, mesh))


@functools.lru_cache(maxsize=8)
def _replicating_identity(mesh: jax.sharding.Mesh) -> Callable:
  return jax.jit(lambda xs: xs, out_shardings=replicated(mesh))


def gather_replicated(tree):
  """Every leaf of `tree` (global arrays, maybe split) replicated over its own mesh.

  A jitted identity: a collective, so on several hosts every process must call it.
  """
  leaves, treedef = jax.tree.flatten(tree)
  todo = [i for i, x in enumerate(leaves) if not x.sharding.is_fully_replicated]
  if todo:
    meshes = {leaves[i].sharding.mesh for i in todo}
    if len(meshes) != 1:
      raise ValueError(f"gather_replicated: leaves on {len(meshes)} different meshes")
    gathered = _replicating_identity(meshes.pop())([leaves[i] for i in todo])
    for i, x in zip(todo, gathered):
      leaves[i] = x
  return jax.tree.unflatten(treedef, leaves)


def on_one_device(tree):
  """`tree` (global arrays, replicated or split) as single-device arrays on one local device.

  Replicated leaves give their first local copy (no copy made); split leaves are gathered (on
  several hosts: by a collective, so every process must call this). The device is the first local
  one of the mesh, the one `x.addressable_data(0)` of a replicated leaf is on.
  """
  leaves, treedef = jax.tree.flatten(tree)
  split = [i for i, x in enumerate(leaves) if not x.sharding.is_fully_replicated]
  if any(not leaves[i].is_fully_addressable for i in split):
    gathered = gather_replicated([leaves[i] for i in split])
    for i, x in zip(split, gathered):
      leaves[i] = x
  out = []
  for x in leaves:
    if x.sharding.is_fully_replicated:
      out.append(x.addressable_data(0))
    else:  # Fully addressable: the shards are all here.
      out.append(jax.device_put(x, x.addressable_shards[0].device))
  return jax.tree.unflatten(treedef, out)
