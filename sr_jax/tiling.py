"""Tiled SR inference: any image size in bounded memory, one compile per tile size.

Method: "pad by overlap and crop centre". The LR image is cut into cores of `tile` x `tile`
pixels; each core is run inside a window that adds `overlap` pixels of real image context on every
side (windows are shifted inwards at the image border instead of sticking out, so a window never
holds padding when the image is at least one window large). Of each window's SR output only the
core is kept, and every output pixel comes from exactly one core: there is no blending, nothing is
averaged, and nothing is accumulated in float32.

Why this and not a weighted (linear / cosine ramp) blend: an SR network is a stack of stride-1
convolutions (plus pixel shuffles), so an output pixel depends only on the LR pixels within the
network's receptive-field radius R. When `overlap >= R` each kept pixel sees exactly the pixels it
sees in an untiled run, and at the image border the window's border is the image's border, where the
layers zero-pad just as they do untiled: the tiled output equals the untiled one up to
float rounding (different conv shapes sum in a different order, ~1e-6). A ramp blend mixes in pixels
from near a window edge, which lack context, so it can never be exact. When `overlap < R` (e.g.
RRDBNet, R ~ 350 LR pixels) the crop still hides seams well: the lost context is the far tail of the
receptive field. EDSR-baseline (16 blocks) has R = 36 and Real-ESRGAN's compact x4 net R = 18
(measured with gradients), so `python -m sr_jax.upscale`'s default overlap of 40 makes their tiles
exact.

Fixed shapes: every window is `tile + 2 * overlap` on each side (rounded up to `align`), so one
image or a folder of any sizes compiles the network once per (window, batch) shape. An image smaller
than one window (or not a multiple of `align`) is padded by reflection at the bottom / right; there
the border pixels on the padded side (within R of it) differ from an untiled run, which zero-pads
each layer. `tile=None` runs each image whole (one compile per image size, exact).

Memory: the input stays in its own dtype (uint8 / uint16 / float32) on the host, each window is
converted to float32 on its way to the device, and each core is written straight into the output
array in the caller's dtype (uint8 output: h * w * s^2 * c bytes; a 4000x4000 RGB input at x4
gives a 768 MB output). The device holds the weights and one batch of windows with their
activations.
"""

import dataclasses
import functools
from typing import Callable, Iterator, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax import data, inference, sharding, utils

DEFAULT_TILE = 256  # EDSR-baseline x4: ~1 GB of activations for a 320x320 LR window on CPU
DEFAULT_OVERLAP = 40  # >= EDSR-baseline's receptive-field radius (36 LR pixels): exact tiles

# float32 [n, th, tw, 3] in [0, 1] -> [n, th * s, tw * s, 3] (numpy or a jax.Array, unclipped).
TileFn = Callable[[np.ndarray], np.ndarray | jax.Array]

# BT.601 luma, as PIL's convert("L"): how RGB network output goes back to one gray channel.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass(frozen=True)
class Window:
  """One network call: the LR window [top, top + height) x [left, left + width) of the (padded)
  image, of which the core rows [core_top, core_bottom) x cols [core_left, core_right) are kept."""

  top: int
  left: int
  core_top: int
  core_bottom: int
  core_left: int
  core_right: int


def make_tile_fn(model: nnx.Module, device: jax.Device | None = None) -> TileFn:
  """A jitted forward pass of `model` (one compile per input shape), not repeated on every device.

  With `device`, or a single local device: on that device (default the first local one). With
  several local devices (one per CPU core after `sharding.use_every_cpu_core()`, a TPU host), each
  window's rows are split over them (`sharding.jit_over_image_rows`; measured on 2 CPU cores:
  1.1-1.3x, benchmarks/RESULTS.md) when its height divides evenly, else it runs on the first one.
  """
  graphdef, state = nnx.split(model)
  devices = [device] if device is not None else jax.local_devices()
  forward = functools.partial(inference.forward, graphdef)
  forward_one, state_one = jax.jit(forward), jax.device_put(state, devices[0])
  if len(devices) == 1:
    return lambda lr: forward_one(state_one, jnp.asarray(lr, jnp.float32))

  mesh = sharding.create_mesh(devices)
  forward_rows, state_rows = (
    sharding.jit_over_image_rows(forward, mesh),
    sharding.replicate(state, mesh),
  )

  def tile_fn(lr):
    lr = np.asarray(lr, np.float32)
    if sharding.rows_split_evenly(lr.shape[1], mesh):
      return forward_rows(state_rows, jax.device_put(lr, sharding.image_rows(mesh)))
    return forward_one(state_one, jnp.asarray(lr))

  return tile_fn


def default_overlap(model: nnx.Module) -> int:
  """LR context per tile side for `model`: its `tile_overlap` attribute (windowed attention sees
  further than the convs' receptive field, see README), else DEFAULT_OVERLAP."""
  return int(getattr(model, "tile_overlap", DEFAULT_OVERLAP))


def input_multiple(model: nnx.Module) -> int:
  """What LR sizes must be multiples of: 2 / 4 for RRDBNet x2 / x1 (pixel unshuffle), else 1."""
  return int(getattr(model, "unshuffle", 1) or 1)


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def _axis_windows(length: int, tile: int | None, overlap: int, align: int) -> tuple[int, int, list]:
  """Window size, padded length and (window_start, core_start, core_stop) spans along one axis."""
  if tile is None:
    window = _round_up(length, align)
    return window, window, [(0, 0, length)]
  window = _round_up(tile + 2 * overlap, align)
  padded = max(window, _round_up(length, align))
  spans = []
  for core_start in range(0, length, tile):
    core_stop = min(core_start + tile, length)
    # Centred on the core, shifted inwards at the border; aligned down so unshuffle grids match.
    start = min(max(core_start - overlap, 0), padded - window) // align * align
    if start + window < core_stop:  # only when overlap < align - 1: shift right, still aligned
      start += align
    spans.append((start, core_start, core_stop))
  return window, padded, spans


def plan_windows(
  height: int, width: int, tile: int | None, overlap: int = 0, align: int = 1
) -> tuple[tuple[int, int], tuple[int, int], list[Window]]:
  """Plans the windows covering an LR image.

  Args:
    height, width: LR image size.
    tile: core side in LR pixels, or None for the whole image in one window.
    overlap: LR pixels of context on each side of a core.
    align: window sizes and positions are multiples of this (see `input_multiple`).

  Returns:
    ((window_height, window_width), (padded_height, padded_width), windows in raster order).
  """
  if tile is not None and tile < 1:
    raise ValueError(f"tile must be >= 1 LR pixels (or None for untiled), got {tile}")
  if overlap < 0:
    raise ValueError(f"tile overlap must be >= 0, got {overlap}")
  window_h, padded_h, rows = _axis_windows(height, tile, overlap, align)
  window_w, padded_w, cols = _axis_windows(width, tile, overlap, align)
  windows = [Window(top, left, c0, c1, d0, d1) for top, c0, c1 in rows for left, d0, d1 in cols]
  return (window_h, window_w), (padded_h, padded_w), windows


def num_windows(height: int, width: int, tile: int | None, overlap: int = 0, align: int = 1) -> int:
  return len(plan_windows(height, width, tile, overlap, align)[2])


def _to_unit_float(pixels: np.ndarray) -> np.ndarray:
  """uint8 / uint16 -> float32 in [0, 1]; float input is passed through as float32."""
  if np.issubdtype(pixels.dtype, np.integer):
    return pixels.astype(np.float32) * np.float32(1.0 / np.iinfo(pixels.dtype).max)
  return pixels.astype(np.float32, copy=False)


def _from_unit_float(sr: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """float SR output -> `dtype`: integers are clipped and rounded; float is returned unclipped."""
  if np.issubdtype(dtype, np.integer):
    peak = np.iinfo(dtype).max
    return np.clip(np.rint(sr * np.float32(peak)), 0, peak).astype(dtype)
  return sr.astype(dtype, copy=False)


def _batches(windows: Sequence[Window], batch_size: int) -> Iterator[list[Window]]:
  for i in range(0, len(windows), batch_size):
    yield list(windows[i : i + batch_size])


def upscale_image(
  tile_fn: TileFn,
  lr: np.ndarray,
  scale: int,
  tile: int | None = 512,
  overlap: int = 32,
  *,
  align: int = 1,
  batch_size: int = 1,
  out_dtype: np.dtype | type | None = None,
  progress: Callable[[int], None] | None = None,
) -> np.ndarray:
  """Super-resolves one LR image window by window (see the module docstring for the method).

  Args:
    tile_fn: the network on a batch of windows, e.g. `make_tile_fn(model)`.
    lr: [h, w, 3] RGB or [h, w] / [h, w, 1] gray, uint8 / uint16 (full range) or float in [0, 1].
      Gray is fed to the network as RGB and its output converted back with BT.601 luma weights.
    scale: the network's SR factor.
    tile: core side in LR pixels; None runs the image whole.
    overlap: LR pixels of context around each core.
    align: LR window sizes / positions are multiples of it (`input_multiple(model)`).
    batch_size: windows per network call (all calls have this batch size: the last is filled up).
    out_dtype: output dtype; default the input's. Integer outputs are clipped and rounded to their
      full range; float outputs are the network's raw (unclipped) values.
    progress: called with the number of windows finished after each batch.

  Returns:
    [h * scale, w * scale(, c)] array of `out_dtype`, same channel layout as `lr`.
  """
  squeeze = lr.ndim == 2
  image = lr[:, :, None] if squeeze else lr
  height, width, channels = image.shape
  if channels not in (1, 3):
    raise ValueError(f"upscale_image: expected an RGB or gray image, got shape {lr.shape}")
  out_dtype = np.dtype(out_dtype or lr.dtype)
  (window_h, window_w), (padded_h, padded_w), windows = plan_windows(
    height, width, tile, overlap, align
  )
  image = utils.pad_bottom_right(image, padded_h, padded_w)
  out = np.empty((height * scale, width * scale, channels), out_dtype)

  def run(batch: list[Window]) -> jax.Array | np.ndarray:
    crops = [image[w.top : w.top + window_h, w.left : w.left + window_w] for w in batch]
    crops += [crops[0]] * (batch_size - len(crops))  # fixed batch shape: one compile
    x = _to_unit_float(np.stack(crops))
    return tile_fn(np.repeat(x, 3, axis=-1) if channels == 1 else x)

  def store(batch: list[Window], result) -> None:
    result = np.asarray(result)
    if result.shape[1:3] != (window_h * scale, window_w * scale):
      raise ValueError(
        f"the network maps a {window_h}x{window_w} LR window to {result.shape[1]}x"
        f"{result.shape[2]}, not x{scale}; is scale={scale} the network's factor?"
      )
    for w, sr in zip(batch, result):
      y0, x0 = (w.core_top - w.top) * scale, (w.core_left - w.left) * scale
      core = sr[
        y0 : y0 + (w.core_bottom - w.core_top) * scale,
        x0 : x0 + (w.core_right - w.core_left) * scale,
      ]
      if channels == 1:
        core = (core @ LUMA_WEIGHTS)[:, :, None]
      out[
        w.core_top * scale : w.core_bottom * scale, w.core_left * scale : w.core_right * scale
      ] = _from_unit_float(core, out_dtype)
    if progress is not None:
      progress(len(batch))

  # Dispatch the next batch before reading the previous one back, so the device never waits on
  # the host's copy into the output.
  pending = None
  for batch in _batches(windows, batch_size):
    result = run(batch)
    if pending is not None:
      store(*pending)
    pending = (batch, result)
  store(*pending)
  return out[:, :, 0] if squeeze else out


def upscale_full_image(
  tile_fn: TileFn,
  image: data.FullImage,
  scale: int,
  tile: int | None,
  overlap: int,
  align: int = 1,
  batch_size: int = 1,
  progress=None,
) -> data.FullImage:
  """Upscales colour through the network (keeping dtype and gray), alpha by bicubic."""
  color = upscale_image(
    tile_fn,
    image.color,
    scale,
    tile,
    overlap,
    align=align,
    batch_size=batch_size,
    progress=progress,
  )
  alpha = None if image.alpha is None else data.upscale_alpha(image.alpha, scale)
  return data.FullImage(color, alpha, image.icc_profile)


def upscale_fn(
  tile_fn: TileFn, scale: int, tile: int | None = 512, overlap: int = 32, align: int = 1
) -> Callable[[np.ndarray], np.ndarray]:
  """`lr -> sr` (float32 [h, w, 3] in, raw float32 out) for `evaluate.evaluate` and figures."""
  return lambda lr: upscale_image(
    tile_fn, np.asarray(lr, np.float32), scale, tile, overlap, align=align
  )
