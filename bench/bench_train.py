"""Training on CPU: bits/dim reached in a bounded time, and the cost of a training step.

1. Glow ``tiny`` on ``digits`` (8x8, 17 levels) and Glow ``small`` on ``mnist5k`` and ``fashion-mnist`` (28x28,
   256 levels; a fixed subset of the training split), maximum likelihood, trained epoch by epoch (resuming
   from the run's checkpoint, which is exact) until a wall-time budget is spent; prints validation bits/dim
   per epoch. For scale: published MNIST ~1.05 bits/dim (Glow, hours on GPUs).
2. The step time of :func:`deepcheck.train.train` (mle and hybrid with a 10-step PGD adversary) against a plain
   forward + backward of the same model and batch (medians).

``BENCH_TORCH_THREADS`` (default 1: the machine is shared) sets torch's intra-op threads; ``BENCH_TRAIN_SCALE``
(default 1.0) scales the time budgets; ``BENCH_DEVICE`` (default ``cpu``) picks the torch device;
``BENCH_FASHION_ROOT`` points at the Fashion-MNIST IDX folder when it is not the Debian one.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from bench.timing import median_time
from deepcheck import data as data_mod
from deepcheck.flows import build
from deepcheck.train import evaluate_bpd, train

RUNS = (  # dataset, config, training images (None: all), validation images, budget in seconds
    ("digits", "tiny", None, None, 45.0),
    ("mnist5k", "small", None, 400, 90.0),
    ("fashion-mnist", "small", 4096, 1000, 90.0),
)


def _budgeted_run(name: str, config: str, limit: int | None, val_limit: int | None, budget: float,
                  folder: Path, device: str) -> None:
    root = os.environ.get("BENCH_FASHION_ROOT") if name == "fashion-mnist" else None
    try:
        tr = data_mod.load(name, "train", limit=limit, seed=0, root=root)
        va = data_mod.load(name, "val", limit=val_limit, seed=0, root=root)
    except FileNotFoundError as exc:
        print(f"{name}: skipped ({exc})")
        return
    model = build("glow", config, tr.shape, n_bins=tr.n_bins, seed=0)
    before = evaluate_bpd(model.to(device), va, device=device)
    ckpt = folder / f"{name}.pt"
    t0 = time.perf_counter()
    epochs = 0
    res = None
    while time.perf_counter() - t0 < budget:
        epochs += 1
        res = train(model, tr, val_data=va, epochs=epochs, batch_size=64, lr=1e-3, warmup_steps=50,
                    checkpoint=ckpt, seed=0, progress=False, device=device)
    wall = time.perf_counter() - t0
    assert res is not None
    every = max(1, len(res.history) // 8)
    shown = [h for h in res.history if h.epoch % every == 0 or h.epoch == 1 or h is res.history[-1]]
    curve = ", ".join(f"{h.epoch}: {h.val_bpd:.3f}" for h in shown)
    after = res.history[-1].val_bpd
    print(f"{name:14s} glow/{config:5s} n_train={len(tr):5d}  val bits/dim {before:.3f} -> {after:.3f}"
          f"  after {epochs} epochs ({res.steps} steps), {wall:.0f} s wall   [epoch: val bits/dim  {curve}]")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _step_times(device: str) -> None:
    tr = data_mod.load("mnist5k", "train", limit=64 * 6, seed=0)
    model = build("glow", "small", tr.shape, n_bins=256, seed=0).to(device)
    x = tr[:64].pixels().to(device)
    model.train()
    with torch.no_grad():
        model.bpd(x)  # ActNorm init

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        model.bpd(x).mean().backward()
        _sync(device)

    plain = median_time(fwd_bwd, repeats=5)
    step = {}
    for mode in ("mle", "hybrid"):
        res = train(model, tr, mode=mode, epochs=1, batch_size=64, attack_steps=10, attack_eps=2 / 255,
                    warmup_steps=0, progress=False, device=device)
        step[mode] = res.wall_time / res.steps
    print(f"glow/small 28x28 batch 64: plain forward+backward {1e3 * plain:.0f} ms (median of 5); "
          f"train step mle {1e3 * step['mle']:.0f} ms (x{step['mle'] / plain:.2f}), hybrid with 10-step PGD "
          f"{1e3 * step['hybrid']:.0f} ms (x{step['hybrid'] / plain:.1f}); (means over {res.steps} steps)")


def main() -> None:
    threads = int(os.environ.get("BENCH_TORCH_THREADS", "1"))
    scale = float(os.environ.get("BENCH_TRAIN_SCALE", "1.0"))
    torch.set_num_threads(threads)
    device = os.environ.get("BENCH_DEVICE", "cpu")
    print(f"torch {torch.__version__}, device {device}, {threads} thread(s), time budgets x{scale}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, config, limit, val_limit, budget in RUNS:
            _budgeted_run(name, config, limit, val_limit, budget * scale, Path(tmp), device)
    _step_times(device)


if __name__ == "__main__":
    main()
