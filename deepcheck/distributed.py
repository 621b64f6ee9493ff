r"""Running on several processes with ``torch.distributed`` (``torchrun``): the process group, rank helpers,
sharding and gathering.

* :func:`setup_from_env` initialises the process group from the environment ``torchrun`` sets (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), with the backend chosen from the device
  (:func:`backend_for`: ``gloo`` on the CPU, ``nccl`` on CUDA), and tears it down on exit. Without those
  variables it does nothing: the same code runs as one process. The hook for a command-line main is::

      with deepcheck.distributed.setup_from_env(args.device) as ctx:  # ctx.device, ctx.rank, ctx.is_main
          ...

* :func:`rank`, :func:`world_size`, :func:`is_main`, :func:`is_distributed` (``world_size() > 1``) and
  :func:`barrier` work with or without a process group (one process: rank 0 of 1).
* :func:`shard` splits a global batch of ``m`` indices into ``world`` contiguous parts whose sizes differ by at
  most one (``np.array_split``); a part can be empty when ``m < world``.
* :func:`map_batches` runs ``fn(start, stop)`` on batches ``[0, b), [b, 2b), ...`` of ``n`` samples, batch
  ``k`` on rank ``k mod world``, and all-gathers the per-batch results in batch order. The batches are the
  ones one process uses, so a per-batch computation seeded by the batch start gives identical results on any
  number of ranks.

How N ranks reproduce one process (training, :mod:`deepcheck.train`): the global batch is cut by
:func:`shard`, each rank's loss is ``world / B * sum_local`` so that DDP's gradient *average* is the gradient
of the global mean over ``B`` samples, and all randomness (dequantisation noise, PGD starts and kicks) is keyed
by ``(seed, epoch, sample index)`` (:func:`sample_seeds`). The results then agree up to the summation order
of the gradient all-reduce.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["backend_for", "setup_from_env", "DistContext", "rank", "world_size", "is_main", "is_distributed",
           "barrier", "shard", "map_batches", "all_gather_objects", "all_reduce_sum", "sample_seeds"]

_MASK64 = (1 << 64) - 1


def backend_for(device: str | torch.device) -> str:
    """``"nccl"`` for a CUDA device, ``"gloo"`` otherwise (the CPU)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default process group (0 without one)."""
    return dist.get_rank() if _initialized() else 0


def world_size() -> int:
    """The number of processes in the default process group (1 without one)."""
    return dist.get_world_size() if _initialized() else 1


def is_main() -> bool:
    """Rank 0 (the process that writes files and prints)."""
    return rank() == 0


def is_distributed() -> bool:
    """A process group with more than one process is initialised."""
    return world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


@dataclass(frozen=True)
class DistContext:
    """What :func:`setup_from_env` set up: ``rank``/``world_size``/``local_rank``, the ``device`` this rank
    should use (``cuda:LOCAL_RANK`` for CUDA), the ``backend`` (None in one process)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@contextlib.contextmanager
def setup_from_env(device: str | torch.device = "cpu", *, timeout_s: float = 1800.0) -> Iterator[DistContext]:
    """Initialise the default process group from ``torchrun``'s environment when ``WORLD_SIZE`` > 1 (backend
    :func:`backend_for` ``device``; on CUDA this rank uses ``cuda:LOCAL_RANK``), yield a :class:`DistContext`,
    and destroy the group on exit if this call created it. With no such environment (or an already
    initialised group) it only describes the current state."""
    dev = torch.device(device)
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if env_world > 1 and not _initialized():
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this torch build")
        backend = backend_for(dev)
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        import datetime

        dist.init_process_group(backend=backend, init_method="env://",
                                timeout=datetime.timedelta(seconds=timeout_s))
        created = True
    elif dev.type == "cuda" and _initialized() and dev.index is None:
        dev = torch.device("cuda", local)
    try:
        yield DistContext(rank=rank(), world_size=world_size(), local_rank=local, device=dev,
                          backend=dist.get_backend() if _initialized() else None)
    finally:
        if created and _initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- sharding
def shard(indices: torch.Tensor | Sequence[int], r: int | None = None, world: int | None = None) -> torch.Tensor:
    """Rank ``r``'s contiguous part of ``indices`` (``np.array_split`` into ``world`` parts: sizes differ by at
    most one, the first ``len % world`` parts are one longer; empty when ``r >= len``)."""
    idx = torch.as_tensor(indices, dtype=torch.long)
    r = rank() if r is None else r
    world = world_size() if world is None else world
    if world < 1 or not 0 <= r < world:
        raise ValueError(f"need 0 <= rank < world_size, got rank={r}, world_size={world}")
    q, extra = divmod(len(idx), world)
    start = r * q + min(r, extra)
    return idx[start:start + q + (1 if r < extra else 0)]


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (picklable), in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[object] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of ``t`` over the ranks (a new tensor; ``t`` itself in one process)."""
    if not is_distributed():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def map_batches(fn: Callable[[int, int], np.ndarray], n: int, batch_size: int, *, shard: bool = True) -> np.ndarray:
    """``concatenate([fn(0, b), fn(b, 2b), ...])`` over ``n`` samples, batch ``k`` computed on rank
    ``k mod world`` and all-gathered (every rank returns the whole result; every rank must call it). ``fn``
    returns a numpy array whose first axis runs over the batch's samples. ``shard=False``: all batches here."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = list(range(0, n, batch_size))
    r, world = (rank(), world_size()) if shard else (0, 1)
    mine = {s: np.asarray(fn(s, min(s + batch_size, n))) for k, s in enumerate(starts) if k % world == r}
    if world > 1:
        merged: dict[int, np.ndarray] = {}
        for part in all_gather_objects(mine):
            merged.update(part)  # type: ignore[arg-type]
        mine = merged
    if not starts:
        return np.zeros(0)
    return np.concatenate([mine[s] for s in starts])


# ---------------------------------------------------------------------------------------------- randomness
def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = (z + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(_MASK64)
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(_MASK64)
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(_MASK64)
    return z ^ (z >> np.uint64(31))


def sample_seeds(base: int, indices: torch.Tensor | Sequence[int]) -> list[int]:
    """One 63-bit seed per sample index, ``splitmix64(base + index)``: the stream of sample ``i`` under the
    stream key ``base`` (itself derived from ``(seed, tag, epoch)``), independent of rank and batch order."""
    idx = np.asarray(torch.as_tensor(indices, dtype=torch.long).cpu().numpy(), dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = _splitmix64((np.uint64(base & _MASK64) + idx) & np.uint64(_MASK64))
    return [int(v) >> 1 for v in z]
