"""Timing helper shared by the benchmark scripts: medians of several runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time in seconds of ``fn()`` over ``repeats`` runs, after ``warmup`` untimed runs.

    ``clock`` is wall time by default; ``time.process_time`` gives process CPU time, the stabler measure on a
    shared machine when BLAS is limited to one thread (it does not count waiting for a core)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def median_cpu_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median process CPU time of ``fn()`` (see :func:`median_time`)."""
    return median_time(fn, repeats, warmup, clock=time.process_time)
