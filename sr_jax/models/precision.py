"""Mixed precision: the dtype a network computes in, apart from the dtype its weights are stored in.

`set_compute_dtype(net, jnp.bfloat16)` makes every Flax layer (Conv, Linear, LayerNorm,
BatchNorm, ...) cast its input and its float32 weights to bfloat16 and compute in it; the weights
themselves (and so their gradients, the optimizer state and the EMA) stay float32. What needs
float32 stays there by construction:
- normalisation statistics (Flax computes LayerNorm/BatchNorm mean and variance in at least
  float32, and BatchNorm's running statistics are float32 state),
- the networks' bicubic / nearest residual, computed from the float32 LR input,
- attention logits and softmax (the ported transformers upcast q, k, v; a float32 position bias
  promotes the logits),
- the output: a network's last step adds a float32 term, or casts back to the input's dtype.
"""

from flax import nnx
import jax.numpy as jnp

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name, key: str = "train.compute_dtype"):
  """The jnp dtype named `name` ("float32" | "bfloat16"; a dtype is returned as is)."""
  if not isinstance(name, str):
    return jnp.dtype(name).type
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"{key}={name!r} is not a compute dtype; use one of {sorted(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[name]


def set_compute_dtype(net: nnx.Module, dtype) -> nnx.Module:
  """Makes every layer of `net` compute in `dtype` (weights keep their dtype); in place.

  float32 restores Flax's default (compute in the promoted dtype of inputs and weights)."""
  dtype = compute_dtype(dtype, "dtype")
  net.set_attributes(dtype=None if dtype == jnp.float32 else dtype, raise_if_not_found=False)
  return net
