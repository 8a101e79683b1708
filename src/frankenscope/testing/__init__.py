"""Tiny random models of the real architectures, built locally, for tests and benchmarks."""
