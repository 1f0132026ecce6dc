"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), v0.1, in JAX: the same distance as the `lpips` package's `LPIPS(net="alex" | "vgg")`.

    from sr_jax.metrics import LPIPS
    lp = LPIPS(net="alex", weights="lpips_alex.pth")  # state_dict() of lpips.LPIPS
    d = lp(x, y)  # x, y float32 NHWC in [0, 1] -> [N]; lower is more similar

The distance: both images to [-1, 1], then LPIPS's fixed per-channel scaling; five ReLU taps of
the backbone (AlexNet relu1..5, VGG-16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3), each
unit-normalised over channels; squared differences weighted per channel by the learned linear
heads (`lin0..lin4`, 1x1 convs without bias), averaged over space and summed over the taps.

Weights: the backbone is torchvision's ImageNet AlexNet / VGG-16 (registry "torchvision:alexnet",
"torchvision:vgg16"; downloaded once) and the linear heads ship in the `lpips` wheel
(`lpips/weights/v0.1/{alex,vgg}.pth`, registry "lpips:alex", "lpips:vgg"; `pip install --no-deps
lpips` gets them without torch). A `.pth` holding the whole `lpips.LPIPS` state dict (backbone
and heads) is read as well.
"""

from __future__ import annotations

import os
import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from sr_jax import utils
from sr_jax.backbones import AlexNet, backbone_arrays
from sr_jax.backbones.vgg import VGG16
from sr_jax.weights import porting, registry
from sr_jax.weights.checkpoint import read_checkpoint
from sr_jax.weights.merge import load_state

__all__ = ["LPIPS", "LPIPSNetwork", "NETS", "lpips_arrays"]

# net -> (backbone class, its registry entry, the heads' registry entry, min image side, widths).
NETS = {
  "alex": (AlexNet, "torchvision:alexnet", "lpips:alex", 31, (64, 192, 384, 256, 256)),
  "vgg": (VGG16, "torchvision:vgg16", "lpips:vgg", 16, (64, 128, 256, 512, 512)),
}
# lpips' ScalingLayer (v0.1): inputs in [-1, 1] -> roughly ImageNet-normalised.
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
_EPS = 1e-10  # lpips.normalize_tensor


class LPIPSNetwork(nnx.Module):
  """The backbone (`net`, torchvision names ported) and the five linear heads (`lin0..lin4`)."""

  def __init__(self, net: str, *, rngs: nnx.Rngs):
    backbone_class = NETS[net][0]
    self.net = backbone_class(head=False, rngs=rngs)
    for i, channels in enumerate(self.net.feature_channels):
      setattr(self, f"lin{i}", nnx.Linear(channels, 1, use_bias=False, rngs=rngs))

  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """Distances `[N]` between NHWC images in [0, 1]."""
    n = x.shape[0]
    both = jnp.concatenate([x, y], axis=0)
    both = (2.0 * both - 1.0 - _SHIFT) / _SCALE
    total = jnp.zeros((n,), jnp.float32)
    for i, feature in enumerate(self.net.features(both)):
      feature = feature / (jnp.sqrt(jnp.sum(feature**2, axis=-1, keepdims=True)) + _EPS)
      weighted = getattr(self, f"lin{i}")((feature[:n] - feature[n:]) ** 2)
      total = total + jnp.mean(weighted, axis=(1, 2, 3))
    return total


def lpips_arrays(torch_arrays: dict, net: str, source: str = "") -> dict[str, np.ndarray]:
  """An `lpips.LPIPS` state dict (whole, or the linear heads only) -> LPIPSNetwork keys."""
  backbone, heads = {}, {}
  for key, array in torch_arrays.items():
    if match := re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", key):
      backbone[f"features.{match[1]}.{match[2]}"] = array
    elif match := re.fullmatch(r"lin(\d)\.model\.\d\.weight", key):
      heads[f"lin{match[1]}.kernel"] = np.asarray(array).reshape(array.shape[1], 1)
    elif key.startswith("scaling_layer."):
      expected = _SHIFT if key.endswith("shift") else _SCALE
      if not np.allclose(np.asarray(array).ravel(), expected):
        raise ValueError(f"{source}: {key} is not LPIPS v0.1's {expected.tolist()}")
    elif not re.fullmatch(r"lins\.\d\.model\.\d\.weight", key):  # lins.N is linN again
      raise ValueError(f"{source}: {key!r} is not a key of an lpips.LPIPS(net={net!r}) state dict")
  widths = NETS[net][4]
  found = tuple(
    heads[f"lin{i}.kernel"].shape[0] if f"lin{i}.kernel" in heads else 0 for i in range(5)
  )
  if found != widths:
    raise ValueError(
      f"{source}: linear heads lin0..lin4 of widths {found}; LPIPS(net={net!r}) has {widths} "
      "(a file of another net?)"
    )
  rules = NETS[net][0].port_rules
  ported = porting.torch_to_nnx(backbone, rules)
  return {**{f"net.{k}": v for k, v in ported.items()}, **heads}


def _load(
  net: str, weights: str | os.PathLike | None, backbone: str | os.PathLike, cache_dir
) -> LPIPSNetwork:
  backbone_class, imagenet, heads_entry, *_ = NETS[net]
  weights_path = os.fspath(registry.resolve(weights or heads_entry, cache_dir=cache_dir))
  arrays = lpips_arrays(read_checkpoint(weights_path).arrays, net, weights_path)
  if not any(k.startswith("net.") for k in arrays):  # the heads only: backbone from elsewhere
    backbone = imagenet if os.fspath(backbone) == "imagenet" else backbone
    backbone_path = registry.resolve(backbone, cache_dir=cache_dir)
    name = {AlexNet: "alexnet", VGG16: "vgg16"}[backbone_class]
    arrays.update({f"net.{k}": v for k, v in backbone_arrays(name, backbone_path).items()})
  network = utils.eval_shape_module(lambda rngs: LPIPSNetwork(net, rngs=rngs))
  # A torchvision file also holds the classifier, which LPIPS does not use.
  load_state(network, arrays, dont_load=("net.fc.*", "net.pre_logits.*"), source=weights_path)
  return network


class LPIPS:
  """LPIPS distance, equal to `lpips.LPIPS(net=net)(2 * x - 1, 2 * y - 1)` (float32, 1e-4).

  Args:
    net: "alex" (AlexNet, LPIPS's default) or "vgg" (VGG-16).
    weights: a `.pth` with the `state_dict()` of `lpips.LPIPS` (backbone and heads), or with the
      heads only (the lpips wheel's `weights/v0.1/<net>.pth`), or a registry name; None: the
      heads of the installed lpips wheel ("lpips:<net>").
    backbone: where the backbone comes from when `weights` holds the heads only: a registry name
      or a torchvision `.pth`; "imagenet": "torchvision:alexnet" / "torchvision:vgg16".
    cache_dir: download cache for registry names.

  Calling it with `x`, `y` (float32 [N, H, W, 3] in [0, 1]) returns the `[N]` distances. The
  computation is jitted (one compilation per image shape) at float32 matmul precision.
  """

  def __init__(
    self,
    net: str = "alex",
    weights: str | os.PathLike | None = None,
    backbone: str | os.PathLike = "imagenet",
    *,
    cache_dir: str | os.PathLike | None = None,
  ):
    if net not in NETS:
      raise ValueError(f"LPIPS: net={net!r} is unknown; choose from {', '.join(NETS)}")
    self.net = net
    self.min_size = NETS[net][3]
    self.network = _load(net, weights, backbone, cache_dir)
    graphdef, state = nnx.split(self.network)

    @jax.jit
    def distance(state, x, y):
      with jax.default_matmul_precision("float32"):  # no TF32 / bf16 passes on GPU / TPU
        return nnx.merge(graphdef, state)(x, y)

    self._state = state
    self._distance = distance

  def __call__(self, x, y) -> jax.Array:
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"LPIPS: expected two [N, H, W, 3] images, got {x.shape} and {y.shape}")
    if min(x.shape[1:3]) < self.min_size:
      raise ValueError(
        f"LPIPS(net={self.net!r}): images need at least {self.min_size} pixels per side, got "
        f"{x.shape[1]}x{x.shape[2]}"
      )
    return self._distance(self._state, x, y)
