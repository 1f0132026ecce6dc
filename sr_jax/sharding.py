"""Data parallelism over every device of every host: a 1-D ("data",) mesh, batch split, params replicated."""

import jax
import numpy as np

DATA_AXIS = "data"


def create_mesh(devices=None) -> jax.sharding.Mesh:
  """A ("data",) mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
  return jax.NamedSharding(mesh, jax.P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
  return jax.NamedSharding(mesh, jax.P())


def local_batch_size(global_batch_size: int) -> int:
  """This process's share of the global batch; it must split evenly over devices."""
  if global_batch_size % jax.device_count():
    raise ValueError(f"train.batch_size={global_batch_size} is not divisible by the "
                     f"{jax.device_count()} devices")
  return global_batch_size // jax.process_count()


def global_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Assembles the global, data-sharded batch from each process's local examples."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def replicate(tree, mesh: jax.sharding.Mesh):
  """Puts a pytree on every device (params, optimiser state)."""
  return jax.device_put(tree, replicated(mesh))
