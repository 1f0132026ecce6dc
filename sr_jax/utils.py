"""Small helpers every layer of sr_jax may use; they import nothing of the project."""

import jax.numpy as jnp
import numpy as np

# ImageNet normalisation of the pretrained backbones (torchvision convention).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(images: jnp.ndarray) -> jnp.ndarray:
  """NHWC RGB in [0, 1] -> the ImageNet mean/std normalised input the backbones expect."""
  return (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def pad_bottom_right(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Pads an [h, w, ...] image at the bottom / right to (height, width) by reflection (edge copy
  for 1-pixel sides, where there is nothing to reflect)."""
  pad_h, pad_w = height - image.shape[0], width - image.shape[1]
  if pad_h == 0 and pad_w == 0:
    return image
  pads = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (image.ndim - 2)
  return np.pad(image, pads, mode="reflect" if min(image.shape[:2]) > 1 else "edge")


def eval_shape_module(build):
  """`nnx.eval_shape(lambda: build(rngs))`: a module's shapes without computing anything.

  The RNG counters are numpy, not traced: under eval_shape every `rngs.params()` otherwise
  re-reads a traced counter whose error message walks the whole trace so far, which makes
  building a big network quadratic in its layer count (full DAT: 177 s instead of 7 s).
  """
  from flax import nnx

  def build_with_host_counters():
    rngs = nnx.Rngs(0)
    for stream in (rngs.params, rngs.default):
      stream.count.set_value(np.zeros((), np.uint32))
    return build(rngs)

  return nnx.eval_shape(build_with_host_counters)
