"""sr_jax: image super-resolution by transfer learning, in JAX/Flax."""

__version__ = "0.2.0"
