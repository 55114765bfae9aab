"""Measurements for `pipelines/benchmark.py`: each section returns rows for the JSON + Markdown report."""
from __future__ import annotations

import concurrent.futures
import multiprocessing


def run_fresh(fn, *args):
    """`fn(*args)` in a fresh Python process ('spawn': nothing inherited from this one: allocator state, caches,
    peak memory, imported modules' settings); `fn`, its arguments and its result must pickle. Here, not in
    `common`, so that sections measuring memory (packing) import no torch with it."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()
