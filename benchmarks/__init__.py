"""Benchmarks: ``make bench`` (or ``python -m benchmarks [NAME ...]``) runs them and appends to RESULTS.md."""
