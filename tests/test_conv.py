"""sr_jax.conv: the CPU formulations give lax.conv_general_dilated's values and gradients."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr_jax import conv, sharding


@pytest.mark.parametrize(
  "shape, out_features, kernel, conv_args",
  [
    ((3, 33, 31, 5), 6, 3, {"padding": "SAME"}),  # kernel gradient image by image
    ((2, 32, 32, 32), 3, 3, {"padding": "SAME"}),  # few output channels: the swapped form
    ((2, 32, 32, 8), 2, 2, {"padding": "SAME"}),  # even kernel, asymmetric "SAME" pads, swapped
    (
      (17, 32, 33, 4),
      20,
      3,
      {"padding": ((0, 2), (2, 0))},
    ),  # more images than pieces, explicit pads
    ((3, 9, 7, 5), 6, 3, {"padding": "SAME"}),  # small image: plain lax conv
    ((2, 8, 8, 4), 4, 3, {"padding": "VALID"}),  # changes the size: plain lax conv
    ((2, 2, 2, 16), 32, 3, {"padding": "SAME"}),  # tiny image: patches x matrix
    ((2, 4, 4, 8), 8, 3, {"padding": ((1, 1), (1, 1)), "strides": 2}),  # tiny, strided (ResNet)
    (
      (2, 4, 3, 8),
      16,
      5,
      {"padding": "SAME", "strides": 2, "feature_group_count": 8},
    ),  # depthwise x2
    (
      (2, 9, 8, 6),
      6,
      3,
      {"padding": "SAME", "strides": 2, "feature_group_count": 6},
    ),  # depthwise, strided
    ((2, 7, 7, 6), 6, 5, {"padding": ((2, 2), (2, 2)), "feature_group_count": 6}),  # depthwise
  ],
)
def test_fast_conv_matches_lax_values_and_gradients(shape, out_features, kernel, conv_args):
  x = jnp.asarray(np.random.default_rng(0).standard_normal(shape, np.float32))
  convs = [
    nnx.Conv(shape[-1], out_features, (kernel, kernel), rngs=nnx.Rngs(0), **conv_args, **kwargs)
    for kwargs in ({}, {"conv_general_dilated": conv.conv_general_dilated})
  ]
  loss = lambda conv, x: jnp.sum(jnp.sin(conv(x)))
  expected, actual = (jax.jit(nnx.grad(loss, argnums=(0, 1)))(conv, x) for conv in convs)
  np.testing.assert_allclose(convs[1](x), convs[0](x), rtol=1e-5, atol=1e-5)
  for e, a in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5 * float(np.abs(e).max()))


def test_kernel_gradient_by_image_on_a_sharded_batch():
  """Data parallel (batch split over the 8 test devices): the per-image pieces stay device-local
  and the gradient is the one of XLA's own conv."""
  mesh = sharding.create_mesh()
  x = np.random.default_rng(1).standard_normal((16, 32, 32, 4), np.float32)
  kernel = np.random.default_rng(2).standard_normal((3, 3, 4, 8), np.float32)

  def loss(kernel, x, conv_fn):
    y = conv_fn(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.sin(y))

  x_sharded = jax.device_put(x, sharding.batch_sharding(mesh))
  grad = jax.jit(jax.grad(loss), static_argnums=2)
  expected = grad(kernel, x, jax.lax.conv_general_dilated)
  actual = grad(kernel, x_sharded, conv.conv_general_dilated)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)


def test_conv_module_is_nnx_conv_with_the_fast_function():
  layer = conv.Conv(4, 8, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
  assert isinstance(layer, nnx.Conv) and layer.conv_general_dilated is conv.conv_general_dilated
  assert layer.kernel.shape == (3, 3, 4, 8) and layer.bias.shape == (8,)
