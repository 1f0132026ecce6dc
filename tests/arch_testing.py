"""Helpers shared by the architecture tests (test_arch_*.py, test_realesrgan.py, test_unet.py).

PyTorch references with random weights of non-trivial statistics, their NHWC forward, the parity
measure (max |jax - torch| / max |torch|, float32) and the one training check every architecture
gets. torch is imported inside the functions: the test modules skip themselves (importorskip)
before calling them when the parity extras are not installed.
"""

import re

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from sr_jax import optim, train_step, utils
from sr_jax.models import create_model, load_pretrained_sr, pretrained
from sr_jax.weights import merge, porting

TOLERANCE = 1e-4  # max |jax - torch| / max |torch|, float32


def randomize(net, seed: int = 0, std: float | None = None, custom: dict | None = None):
  """`net` (a torch module) with random weights of non-trivial statistics, in eval mode.

  Scales of normalisation layers near 1 (1 + 0.1 n), BatchNorm running statistics away from 0 / 1,
  every other parameter normal * `std` (drawn per tensor in [0.02, 0.2] when None); buffers that
  are no statistics (position indices, masks) stay as built. `custom`: parameter name (last
  component) -> function of the standard normal noise, for values that need another range.
  """
  import torch

  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in net.modules():
      is_norm = "Norm" in type(module).__name__
      for name, value in module.named_buffers(recurse=False):
        noise = torch.randn(value.shape, generator=generator)
        if name == "running_var":
          value.copy_(1 + 0.3 * noise.abs())
        elif name == "running_mean":
          value.copy_(0.1 * noise)
      for name, param in module.named_parameters(recurse=False):
        noise = torch.randn(param.shape, generator=generator)
        if custom and name in custom:
          param.copy_(custom[name](noise))
        elif is_norm and name == "weight":
          param.copy_(1 + 0.1 * noise)
        else:
          scale = 0.02 + 0.18 * torch.rand((), generator=generator) if std is None else std
          param.copy_(scale * noise)
  return net.eval()


def state_of(net) -> dict[str, np.ndarray]:
  """A torch module's state dict as numpy, as a checkpoint file holds it."""
  return {key: value.numpy() for key, value in net.state_dict().items()}


def nnx_shapes(net: nnx.Module) -> dict[str, tuple]:
  """`merge.flatten_state`'s keys and shapes, for an abstract (`nnx.eval_shape`) network too."""
  flat = nnx.to_flat_state(nnx.state(net, nnx.Not(nnx.RngState)))
  return {".".join(map(str, path)): tuple(var.get_value().shape) for path, var in flat}


def load_via_pth(torch_net, path) -> nnx.Module:
  """`load_pretrained_sr` of `torch_net`'s state dict saved as a .pth (detection, strict load)."""
  import torch

  torch.save(torch_net.state_dict(), path)
  return load_pretrained_sr(path)


def assert_loads_in_each_layout(torch_net, lr: np.ndarray, directory, expected: dict, **kw):
  """`load_pretrained_sr` reads `torch_net`'s state dict as files hold it (bare .pth, BasicSR's
  {"params_ema": ...} .pth, .safetensors): the hyperparameters `expected` (attribute -> value,
  "type" -> class), and `torch_net`'s output on `lr` (`kw`: `torch_forward`'s)."""
  from safetensors.torch import save_file
  import torch

  state = torch_net.state_dict()
  paths = [directory / "bare.pth", directory / "params_ema.pth", directory / "net.safetensors"]
  torch.save(state, paths[0])
  torch.save({"params_ema": state}, paths[1])
  save_file({k: v.contiguous() for k, v in state.items()}, str(paths[2]))
  reference = torch_forward(torch_net, lr, **kw)
  for path in paths:
    net = load_pretrained_sr(path)
    assert {k: type(net) if k == "type" else getattr(net, k) for k in expected} == expected
    assert_matches(net(lr), reference, path.name)


def port_strictly(cls, hyperparameters: dict, state: dict) -> nnx.Module:
  """`cls(**hyperparameters)`, built as shapes only, holding `state` ported by `cls.port_rules`:
  the ported keys and shapes are exactly the module's, and the load is strict."""
  net = utils.eval_shape_module(lambda rngs: cls(**hyperparameters, rngs=rngs))
  arrays = porting.torch_to_nnx(state, cls.port_rules)
  assert {k: v.shape for k, v in arrays.items()} == nnx_shapes(net)
  merge.load_state(net, arrays, strict=True)
  return net


def assert_truncations_rejected(state: dict, arch: str, cut_at: str, hole: str) -> None:
  """Detection refuses `state` cut off before the key `cut_at` (a file that ends early) and
  `state` without the key `hole`, naming what is missing."""
  keys = list(state)
  truncated = {k: state[k] for k in keys[: keys.index(cut_at)]}
  with pytest.raises(ValueError, match=rf"{arch}.*missing key.*truncated"):
    pretrained.infer_architecture(truncated)
  with pytest.raises(ValueError, match=re.escape(hole)):
    pretrained.infer_architecture({k: v for k, v in state.items() if k != hole})


def random_lr(h: int, w: int, channels: int = 3, seed: int = 1) -> np.ndarray:
  return np.random.default_rng(seed).random((1, h, w, channels), dtype=np.float32)


def torch_forward(net, lr: np.ndarray, output: int | None = None) -> np.ndarray:
  """NHWC in, NHWC out; `output`: which one to take when the network returns a tuple."""
  import torch

  with torch.no_grad():
    out = net(torch.from_numpy(np.ascontiguousarray(lr.transpose(0, 3, 1, 2))))
  if output is not None:
    out = out[output]
  return out.numpy().transpose(0, 2, 3, 1)


def jit_forward(net: nnx.Module, lr: np.ndarray) -> np.ndarray:
  """The forward compiled as one program (weights as arguments, not baked-in constants)."""
  graphdef, state = nnx.split(net)
  return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(lr)))


def relative_error(ours, reference: np.ndarray) -> float:
  ours = np.asarray(ours)
  assert ours.shape == reference.shape, (ours.shape, reference.shape)
  return float(np.abs(ours - reference).max() / np.abs(reference).max())


def assert_matches(ours, reference: np.ndarray, label: str, tolerance: float = TOLERANCE) -> None:
  error = relative_error(ours, reference)
  assert error <= tolerance, f"{label}: max |jax - torch| / max |torch| = {error:.2e}"


def assert_parity(net, torch_net, lr: np.ndarray, label: str, jit: bool = False) -> None:
  """`net` (NHWC) computes what `torch_net` does on `lr`, within `TOLERANCE`."""
  ours = jit_forward(net, lr) if jit else net(jnp.asarray(lr))
  assert_matches(ours, torch_forward(torch_net, lr), label)


# --- training -------------------------------------------------------------------------------------


def run_steps(config, graphdef: nnx.GraphDef, state: dict, num_steps: int, lr_size: int = 8):
  """(host copies of the train state before and after each of `num_steps` steps, the loss of each
  step): the step training runs (`train_step.make_step_fn` of `config`), on one device, on one
  batch of 2 random HR patches and their box-downscaled LR (`lr_size` pixels square)."""
  step = jax.jit(train_step.make_step_fn(config, graphdef))
  scale = config.data.scale
  hr = np.random.default_rng(0).random((2, lr_size * scale, lr_size * scale, 3), dtype=np.float32)
  batch = {"lr": hr.reshape(2, lr_size, scale, lr_size, scale, 3).mean(axis=(2, 4)), "hr": hr}
  states, step_losses = [jax.tree.map(np.asarray, state)], []
  for _ in range(num_steps):
    state, metrics = step(state, batch)
    states.append(jax.tree.map(np.asarray, state))
    step_losses.append(float(metrics["loss"]))
  return states, step_losses


def assert_fine_tunes(states: list, step_losses: list, no_gradient: str | None = None) -> None:
  """`run_steps`'s result shows training: the first step moved every parameter (a finite, non-zero
  gradient reached each) and the loss went down.

  `no_gradient`: a regex of the parameter paths (`jax.tree_util.keystr`) that legitimately get
  none (the caller says why); they are only checked to be finite.
  """
  flat_before = jax.tree_util.tree_flatten_with_path(states[0]["params"])[0]
  for (path, before), after in zip(flat_before, jax.tree.leaves(states[1]["params"])):
    name = jax.tree_util.keystr(path)
    assert np.isfinite(after).all(), f"{name}: not finite after one step"
    if no_gradient is None or not re.search(no_gradient, name):
      assert not np.array_equal(before, after), f"{name}: no gradient reaches it"
  assert step_losses[-1] < step_losses[0], step_losses


def assert_trains(net: nnx.Module, lr_size: int = 8, no_gradient: str | None = None) -> None:
  """`net` (RGB, e.g. loaded from a reference file) fine-tunes (`assert_fine_tunes`, 3 steps) with
  the default config's AdamW and L1 loss (no EMA, no warm-up, no clipping)."""
  config = default.get_config()
  config.data.scale = net.scale
  config.optim.update(learning_rate=1e-3, warmup_steps=0, grad_clip_norm=0.0)
  config.train.ema_decay = 0.0
  _, tx = optim.from_config(config)
  graphdef, params, model_state = nnx.split(net, nnx.Param, ...)
  # The train state's layout (sr_jax.train_state), built from this network instead of the config.
  state = dict(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state)
  state["opt_state"] = jax.jit(tx.init)(params)
  assert_fine_tunes(*run_steps(config, graphdef, state, 3, lr_size), no_gradient)


def assert_config_builds_and_fine_tunes(
  torch_net, directory, lr_size: int = 8, no_gradient: str | None = None
) -> nnx.Module:
  """The network of `torch_net`'s file (returned): `create_model` of a config naming the detected
  architecture and hyperparameters (its `config_keys`) builds it (class and parameter shapes, as
  shapes only), and it fine-tunes from the file's weights (`assert_trains`)."""
  net = load_via_pth(torch_net, directory / "net.pth")
  arch, found = pretrained.infer_architecture(state_of(torch_net))
  config = dict(
    name=arch, weights="", **{k: found[k] for k in pretrained.ARCHITECTURES[arch].config_keys}
  )
  built = utils.eval_shape_module(
    lambda rngs: create_model(ml_collections.ConfigDict(config), found["scale"], rngs)
  )
  assert type(built) is type(net) and nnx_shapes(built) == nnx_shapes(net)
  assert_trains(net, lr_size, no_gradient)
  return net
