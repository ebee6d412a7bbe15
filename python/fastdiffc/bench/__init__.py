"""Benchmark targets behind `fastdiffc bench` (one module each)."""
