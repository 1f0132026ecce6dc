"""Self-supervised adaptation: a pretrained SR network adapted to the images it will upscale,
using only those images (no HR anywhere).

Training pairs come from the inputs themselves, as zero-shot SR does: a random crop of an input
image is the target, its MATLAB-bicubic downscale by the network's scale is the input (rounded
to 8-bit levels, like the inputs were). Crops get random flips / 90-degree rotations. A short
schedule (warmup, cosine decay) at a small learning rate and EMA weights keep the network close to
the pretrained one: the pairs are few and small, and it must still work at the inputs' own scale.

The optimisation step is training's (`train_step.make_train_step`): jitted, data-parallel over
`mesh`, ZeRO-1 optimiser state. Settings: the `adapt` block of configs/default.py.

`adapt` receives LR images (arrays) and nothing else; `read_images` reads exactly the paths it is
given (the inputs to upscale). No HR image can reach this path.
"""

import time
from typing import Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from sr_jax import data, losses, optim, sharding, train_step
from sr_jax.data import examples

MIN_PATCH_SIZE = 4  # LR side of the smallest pair worth training on


def self_pairs(
  images: Sequence[np.ndarray],
  rng: np.random.Generator,
  batch_size: int,
  patch_size: int,
  scale: int,
) -> dict[str, np.ndarray]:
  """A batch of self-supervised pairs from LR images (uint8 [h, w, 3]).

  Each example: a random image, a random `patch_size * scale` crop of it (the target, "hr"), its
  bicubic downscale (the input, "lr", `patch_size` pixels), the same random flip / rotation of
  both. Images smaller than the crop must have been left out (`usable_images`).
  """
  batch = [
    examples.make_example(
      images[rng.integers(len(images))],
      rng,
      patch_size=patch_size,
      scale=scale,
      augment=True,
      quantize_lr=True,
      degradation="self",
      realesrgan=None,
    )
    for _ in range(batch_size)
  ]
  return {key: np.stack([example[key] for example in batch]) for key in ("lr", "hr")}


def usable_images(
  images: Sequence[np.ndarray], scale: int, patch_size: int
) -> tuple[list[np.ndarray], int]:
  """(the images that hold a pair, the pair's LR patch side): `patch_size`, shrunk to what the
  smallest usable image holds; images under MIN_PATCH_SIZE * scale pixels a side are left out."""
  usable = [image for image in images if min(image.shape[:2]) >= MIN_PATCH_SIZE * scale]
  if not usable:
    sides = sorted(min(image.shape[:2]) for image in images)
    raise ValueError(
      f"self-adaptation at x{scale} needs an image of at least {MIN_PATCH_SIZE * scale} pixels "
      f"a side; the largest given has {sides[-1] if sides else 0}"
    )
  smallest = min(min(image.shape[:2]) for image in usable)
  return usable, min(patch_size, smallest // scale)


def read_images(paths: Sequence[str]) -> tuple[list[np.ndarray], list[str]]:
  """(uint8 RGB images of the readable `paths`, the unreadable ones): the inputs to adapt to."""
  images, unreadable = [], []
  for path in paths:
    try:
      images.append(data.read_image(path))
    except (data.ImageReadError, OSError):
      unreadable.append(path)
  return images, unreadable


def create_optimizer(adapt_config: ml_collections.ConfigDict):
  """(schedule, optimizer) of the adaptation: training's (`sr_jax.optim`) with a warmup, cosine
  decay to a tenth, Adam with b2=0.99 and gradient clipping at 1."""
  optim_config = ml_collections.ConfigDict(
    {
      "learning_rate": float(adapt_config.learning_rate),
      "schedule": "cosine",
      "warmup_steps": int(adapt_config.warmup_steps),
      "end_lr_factor": 0.1,
      "b1": 0.9,
      "b2": 0.99,
      "weight_decay": 0.0,
      "grad_clip_norm": 1.0,
      "encoder_lr_mult": 1.0,
    }
  )
  schedule = optim.create_schedule(optim_config, int(adapt_config.steps))
  return schedule, optim.create_optimizer(optim_config, schedule)


def adapt(
  model: nnx.Module,
  lr_images: Sequence[np.ndarray],
  adapt_config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh | None = None,
  on_step: Callable[[int, dict, dict], None] | None = None,
) -> tuple[nnx.Module, list[dict]]:
  """Adapts `model` (x`model.scale`) to `lr_images` (uint8 RGB arrays, the images to upscale).

  Args:
    model: a pretrained SR network; it is not modified.
    lr_images: the low-resolution images themselves (uint8 [h, w, 3]): the only data used;
      images too small to hold a pair (`usable_images`) are left out.
    adapt_config: the `adapt` block of configs/default.py (steps, batch_size, patch_size,
      learning_rate, warmup_steps, ema_decay, seed).
    mesh: ("data",) mesh of the devices to run the step on (default: as many devices as split
      `adapt.batch_size` evenly).
    on_step: called as on_step(step, metrics, state) after each step: metrics as host floats,
      the train state (`train.make_predictor` runs it) valid until the callback returns.

  Returns:
    (the adapted network, in eval mode, with the EMA weights; one metrics dict per step with
    "loss" (the self-supervised L1), "grad_norm", "learning_rate", "seconds" (adaptation time
    so far, compilation included, callbacks not)).
  """
  if not lr_images:
    raise ValueError("self-adaptation needs at least one image")
  scale = int(model.scale)
  lr_images, patch_size = usable_images(lr_images, scale, int(adapt_config.patch_size))
  batch_size = int(adapt_config.batch_size)
  if mesh is None:  # as many devices as split the batch evenly
    devices = jax.devices()
    mesh = sharding.create_mesh(devices[: sharding.cpu_device_count(len(devices), batch_size)])
  if batch_size % mesh.devices.size:
    raise ValueError(
      f"adapt.batch_size={batch_size} does not split over the {mesh.devices.size} devices"
    )
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  if not jax.tree.leaves(params):
    raise ValueError(f"{type(model).__name__} has no trainable parameters to adapt")
  schedule, tx = create_optimizer(adapt_config)
  state = {
    "step": jnp.zeros((), jnp.int32),
    "params": params,
    "model_state": model_state,
    "opt_state": tx.init(params),
  }
  if adapt_config.ema_decay:
    state["ema_params"] = jax.tree.map(jnp.copy, params)
  # Copies: the step donates its state, and `model`'s own arrays must survive it.
  state = sharding.place_state(jax.tree.map(jnp.array, state), mesh)
  step_fn = jax.jit(
    train_step.make_train_step(
      graphdef, tx, schedule, float(adapt_config.ema_decay), losses.Loss(l1_weight=1.0), mesh
    ),
    donate_argnums=(0,),
    out_shardings=(sharding.state_shardings(state, mesh), sharding.replicated(mesh)),
  )
  rng = np.random.default_rng(int(adapt_config.seed))
  history, seconds = [], 0.0
  for step in range(1, int(adapt_config.steps) + 1):
    start = time.perf_counter()
    batch = self_pairs(lr_images, rng, batch_size, patch_size, scale)
    state, metrics = step_fn(state, sharding.global_batch(batch, mesh))
    row = {k: float(v) for k, v in jax.device_get(metrics).items()}  # waits: honest seconds
    seconds += time.perf_counter() - start
    row["seconds"] = seconds
    history.append(row)
    if on_step is not None:
      on_step(step, row, state)
  weights = state.get("ema_params", state["params"])
  adapted = nnx.merge(graphdef, *sharding.on_one_device((weights, state["model_state"])))
  adapted.eval()
  return adapted, history


def adapt_to_files(
  model: nnx.Module,
  paths: Sequence[str],
  adapt_config: ml_collections.ConfigDict,
  log: Callable[[str], None] = print,
) -> nnx.Module:
  """`model` adapted to the images at `paths` (and nothing else), with a progress bar; one line
  per unreadable file and a summary line go to `log`.

  Raises:
    ValueError: no readable image large enough for a pair, or a network without parameters.
  """
  images, unreadable = read_images(paths)
  for path in unreadable:
    log(f"note: {path}: unreadable, not used for adaptation")
  steps = int(adapt_config.steps)
  with tqdm.tqdm(total=steps, desc="adapt", unit="step", dynamic_ncols=True) as progress:

    def on_step(step, row, state):
      del step, state
      progress.update(1)
      progress.set_postfix(loss=f"{row['loss']:.4f}")

    adapted, history = adapt(model, images, adapt_config, on_step=on_step)
  first, last = (np.mean([row["loss"] for row in part]) for part in (history[:10], history[-10:]))
  log(
    f"adapted to {len(images)} image(s): {steps} steps in {history[-1]['seconds']:.1f} s, "
    f"self-supervised L1 {first:.4f} -> {last:.4f} (mean of the first / last 10 steps)"
  )
  return adapted
