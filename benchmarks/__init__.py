"""Benchmarks: figures and ratios against the alternatives users would pick; not tests."""
