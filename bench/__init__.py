"""Benchmarks with reproducible commands; results and how to read them in docs/benchmarks.md.

`python -m bench.api_bench` (or `make bench ARGS=...`) seeds a store with realistic tasks, starts a
real `tescape serve` on it and measures the TES API with wrk.
"""
