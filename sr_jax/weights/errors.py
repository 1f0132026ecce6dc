"""The one exception family of weight files: `WeightsError`, a `ValueError` naming the file."""

__all__ = ["WeightsError"]


class WeightsError(ValueError):
  """A weight file that cannot be used: corrupt, hostile, over budget or of the wrong kind.

  The message starts with the file's path and says in one line what is wrong, so a command-line
  tool can print it as is. Every reader in `sr_jax.weights` raises a subclass of this (or of
  `ValueError`), never a bare TypeError / OverflowError / unpickling error.
  """
