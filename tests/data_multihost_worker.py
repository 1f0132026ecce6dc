"""One JAX process of tests/test_data_multihost.py (run as a script, not collected by pytest).

  .venv/bin/python tests/data_multihost_worker.py PORT PROCESS_ID NUM_PROCESSES \\
      IMAGE_DIR TFDS_DIR OUT.npz

Joins a localhost `jax.distributed` cluster, reads this process's shard of IMAGE_DIR (folder
source) and of the TFDS dataset "solid" in TFDS_DIR, assembles each first batch into a global
array with sharding.global_batch, gathers it back to every process, and saves local and global
arrays to OUT.npz.
"""

import sys


def main(
  port: str, process_id: str, num_processes: str, image_dir: str, tfds_dir: str, out: str
) -> None:
  import jax

  jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}",
    num_processes=int(num_processes),
    process_id=int(process_id),
    initialization_timeout=60,
    heartbeat_timeout_seconds=30,
    shutdown_timeout_seconds=30,
  )
  from jax.experimental import multihost_utils
  import numpy as np

  from configs import default
  from sr_jax import data, sharding

  mesh = sharding.create_mesh()
  global_batch_size = 2 * jax.device_count()
  arrays = {
    "device_count": np.array(jax.device_count()),
    "local_device_count": np.array(jax.local_device_count()),
  }
  for source in ("folder", "tfds"):
    config = default.get_config().data
    config.lock()
    config.update(
      {
        "train_dirs": (image_dir,),
        "scale": 2,
        "patch_size": 4,
        "source": source,
        "tfds_name": "solid",
        "tfds_data_dir": tfds_dir,
      }
    )
    iterator = data.create_train_iterator(
      config,
      seed=0,
      local_batch_size=sharding.local_batch_size(global_batch_size),
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
    local = next(iterator)
    batch = sharding.global_batch(local, mesh)
    assert batch["hr"].shape[0] == global_batch_size, batch["hr"].shape
    # What this process holds of the global array is exactly its local batch, in order.
    rows = sorted(
      (shard.index[0].start, np.asarray(shard.data)) for shard in batch["hr"].addressable_shards
    )
    np.testing.assert_array_equal(np.concatenate([r[1] for r in rows]), local["hr"])
    gathered = multihost_utils.process_allgather(batch, tiled=True)
    for key in ("lr", "hr"):
      arrays[f"{source}_local_{key}"] = local[key]
      arrays[f"{source}_global_{key}"] = np.asarray(gathered[key])
  np.savez(out, **arrays)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(*sys.argv[1:])
