"""Flow throughput: forward + backward of the mean NLL at batch 64, images/s, medians of several runs.

Baseline, measured in the same process: one 3x3 convolution of the model's hidden width on the same
images at full resolution (forward + backward of its mean output) -- the cost of a single conv layer, so
the ratio column says "how many such convs the whole flow costs". ``paper`` sizes get only a quick forward
at a smaller batch on the CPU (they are GPU models); where CUDA is available a second table times the
small and paper models forward + backward at batch 64 on the GPU. Run with ``python -m bench flows``.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.timing import median_time
from deepcheck.flows import build

BATCH = 64
CASES = [  # (model, config, shape, mode, batch)
    ("glow", "tiny", (1, 8, 8), "fwd+bwd", BATCH),
    ("realnvp", "tiny", (1, 8, 8), "fwd+bwd", BATCH),
    ("glow", "small", (1, 28, 28), "fwd+bwd", BATCH),
    ("realnvp", "small", (1, 28, 28), "fwd+bwd", BATCH),
    ("glow", "paper", (3, 32, 32), "fwd", 4),
    ("realnvp", "paper", (3, 32, 32), "fwd", 4),
]
GPU_CASES = [
    ("glow", "small", (1, 28, 28), "fwd+bwd", BATCH),
    ("realnvp", "small", (1, 28, 28), "fwd+bwd", BATCH),
    ("glow", "paper", (3, 32, 32), "fwd+bwd", BATCH),
    ("realnvp", "paper", (3, 32, 32), "fwd+bwd", BATCH),
]


def _step(fn_loss, params):
    def run():
        for p in params:
            p.grad = None
        loss = fn_loss()
        if loss.requires_grad:
            loss.backward()
    return run


def _synced(fn, device):
    if device == "cpu":
        return fn

    def run():
        fn()
        torch.cuda.synchronize()
    return run


def measure(model: str, config: str, shape: tuple[int, int, int], mode: str, batch: int,
            repeats: int = 5, warmup: int = 1, device: str = "cpu") -> dict:
    net = build(model, config, shape, seed=0).to(device)
    x = torch.rand((batch, *shape), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        net(x)  # ActNorm data-dependent init, outside the timing
    hidden = net.config["hidden"]
    conv = nn.Conv2d(shape[0], hidden, 3, padding=1).to(device)

    def timed(fn):
        return median_time(_synced(fn, device), repeats=repeats, warmup=warmup)

    if mode == "fwd":
        with torch.no_grad():
            t_model = timed(lambda: net.log_prob(x))
            t_base = timed(lambda: conv(x))
    else:
        t_model = timed(_step(lambda: -net.log_prob(x).mean(), list(net.parameters())))
        t_base = timed(_step(lambda: conv(x).mean(), list(conv.parameters())))
    n_params = sum(p.numel() for p in net.parameters())
    return {"model": model, "config": config, "shape": "x".join(map(str, shape)), "mode": mode, "batch": batch,
            "params": n_params, "ms": 1e3 * t_model, "img_s": batch / t_model, "base_ms": 1e3 * t_base,
            "ratio": t_model / t_base}


def _table(cases: list[tuple], device: str) -> None:
    header = (f"{'model':8} {'config':6} {'shape':8} {'mode':7} {'batch':>5} {'params':>10} {'ms':>9} "
              f"{'img/s':>9} {'conv ms':>8} {'x conv':>8}")
    print(header)
    print("-" * len(header))
    for case in cases:
        slow = device == "cpu" and case[1] == "paper"
        r = measure(*case, repeats=2 if slow else 5, warmup=0 if slow else 1, device=device)
        print(f"{r['model']:8} {r['config']:6} {r['shape']:8} {r['mode']:7} {r['batch']:5d} {r['params']:10,d} "
              f"{r['ms']:9.1f} {r['img_s']:9.1f} {r['base_ms']:8.2f} {r['ratio']:8.1f}", flush=True)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU "
          "(ms: median time per batch; x conv: ratio to one 3x3 conv of the hidden width)")
    _table(CASES, "cpu")
    if torch.cuda.is_available():
        print(f"\nGPU: {torch.cuda.get_device_name()}, float32")
        _table(GPU_CASES, "cuda")


if __name__ == "__main__":
    main()
