"""Benchmarks: `make bench-exporter` (python -m bench.exporter)."""
