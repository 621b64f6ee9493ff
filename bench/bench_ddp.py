"""Data-parallel training throughput: 1 process against 2 ranks (DDP, gloo on the CPU; nccl on CUDA), one
torch thread each.

For each case, :func:`deepcheck.train.train` runs ``EPOCHS`` epochs of MLE on a fixed subset with the same
*global* batch, in spawned processes (1 rank: no process group, no DDP; 2 ranks: DDP). The time of an
epoch is taken from the run's history (rank 0); the throughput is training images per second, the median over
the epochs after the first (warm-up). The 2-rank speed-up is the ratio of the medians. On a shared 2-core
machine the numbers are noisy (other processes compete for the cores): read them as rough.

``BENCH_DEVICE`` (default ``cpu``; ``cuda`` uses one GPU per rank with nccl) and ``BENCH_DDP_EPOCHS`` (default 4).

Measured 2026-12-01 on the shared 2-core CPU machine, load average 9-10 (other engineers' jobs), two runs:
GLOW tiny / digits 1 rank 2084 and 3317 img/s, 2 ranks 1258 and 1801 (speed-up 0.60, 0.54); GLOW small /
mnist5k 175 and 192 img/s against 127 and 182 (0.73, 0.94). With every core already busy a second rank only
adds communication; no GPU machine was available for the nccl numbers.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp

CASES = (  # name, dataset, config, training images, global batch
    ("glow-tiny digits 8x8", "digits", "tiny", 512, 64),
    ("glow-small mnist5k 28x28", "mnist5k", "small", 128, 32),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, case: tuple, epochs: int, device: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from deepcheck import data as data_mod
    from deepcheck import distributed
    from deepcheck.flows import build
    from deepcheck.train import train

    _, dataset, config, n, batch = case
    with distributed.setup_from_env(device) as ctx:
        data = data_mod.load(dataset, "train", seed=0, limit=n)
        model = build("glow", config, data.shape, n_bins=data.n_bins, seed=0)
        res = train(model, data, epochs=epochs, batch_size=batch, warmup_steps=10, seed=0, progress=False,
                    device=ctx.device, distributed=ctx.distributed)
        if ctx.is_main:
            Path(out).write_text(json.dumps([h.seconds for h in res.history]))


def run_case(case: tuple, world: int, epochs: int, device: str) -> float:
    """Median training images per second over the epochs after the first, with ``world`` ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seconds.json"
        mp.spawn(_worker, args=(world, _free_port(), case, epochs, device, str(out)), nprocs=world, join=True)
        seconds = json.loads(out.read_text())
    return case[3] / statistics.median(seconds[1:])


def main() -> None:
    device = os.environ.get("BENCH_DEVICE", "cpu")
    epochs = int(os.environ.get("BENCH_DDP_EPOCHS", "4"))
    print(f"device {device}, {os.cpu_count()} CPUs, 1 torch thread per rank, {epochs} epochs (first = warm-up); "
          "images/s are medians over epochs; a shared machine is noisy")
    print(f"{'case':<28}{'batch':>6}{'1 rank img/s':>14}{'2 ranks img/s':>15}{'speed-up':>10}")
    for case in CASES:
        one = run_case(case, 1, epochs, device)
        two = run_case(case, 2, epochs, device)
        print(f"{case[0]:<28}{case[4]:>6}{one:>14.1f}{two:>15.1f}{two / one:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
