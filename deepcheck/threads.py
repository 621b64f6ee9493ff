"""Thread policy for torch on a shared CPU: how many intra-op threads to use, and the OpenMP wait policy.

Measured (issue 14, goal 5; a tiny GLOW training step on the 8x8 digits, batch 64, median of 20 steps, on the
2-core development machine that other processes were already using, load average ~9):

===========================  =========  ==========================
setting                      unloaded   one extra busy process
===========================  =========  ==========================
1 thread, default wait       54.6 ms    57.9 ms
1 thread, passive wait       67.0 ms    88.8 ms
2 threads, default wait      237.5 ms   785.7 ms
2 threads, passive wait      111.8 ms   180.1 ms
===========================  =========  ==========================

The collapse under load is thread oversubscription: two intra-op threads that spin-wait for each other
while another process holds one of the cores (13.6x slower than one thread). A passive wait policy halves
that damage, but one thread is best whenever the machine is busy. The policy here: as many threads as cores
are free (the cores this process may run on, ``os.sched_getaffinity``, less the 1-minute load average of the
other processes, rounded), at least one; with more than one thread, ``OMP_WAIT_POLICY=PASSIVE`` unless the user
set it (OpenMP reads it when torch is loaded: it only takes effect if :func:`apply_thread_policy` runs before
torch's first import; the thread count takes effect at any time). With one thread the wait policy does not
matter (passive measured no faster above).
"""

from __future__ import annotations

import os

ENV_THREADS = "DEEPCHECK_THREADS"


def available_cores() -> int:
    """The number of CPU cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where that
    is missing), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def choose_threads(cores: int | None = None, load: float | None = None) -> int:
    """``max(1, min(cores, cores - round(load)))``: the cores not busy with other work (``load``: the 1-minute
    load average, ``os.getloadavg``, 0 where unavailable; ``cores``: :func:`available_cores`)."""
    if cores is None:
        cores = available_cores()
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores must be an int >= 1, got {cores!r}")
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    if not load >= 0:
        raise ValueError(f"load must be >= 0, got {load!r}")
    return max(1, min(cores, cores - int(round(load))))


def apply_thread_policy(threads: int | None = None) -> int:
    """Set torch's intra-op thread count to ``threads`` (default: the environment variable
    ``DEEPCHECK_THREADS`` if set, else :func:`choose_threads` capped at torch's current count, so an
    ``OMP_NUM_THREADS`` or an earlier ``torch.set_num_threads`` is never raised) and, for more than one thread,
    ``OMP_WAIT_POLICY=PASSIVE`` unless already set; returns the thread count."""
    if threads is None and os.environ.get(ENV_THREADS):
        try:
            threads = int(os.environ[ENV_THREADS])
        except ValueError:
            raise ValueError(f"{ENV_THREADS} must be an int, got {os.environ[ENV_THREADS]!r}") from None
    import torch

    if threads is None:  # never above what torch already has (OMP_NUM_THREADS, or a caller's earlier choice)
        threads = min(choose_threads(), torch.get_num_threads())
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    if threads > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(threads)
    return threads
