"""Measurements for `pipelines/benchmark.py`: each section returns rows for the JSON + Markdown report."""
