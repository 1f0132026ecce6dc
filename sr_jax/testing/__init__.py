"""Helpers for the tests and the benchmarks only; nothing in sr_jax imports this package."""
