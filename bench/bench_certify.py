"""Certified bounds on the worst-case NLL (``deepcheck.certify``): tightness and cost.

1. Trained tiny GLOW on digits 8x8 (17 levels): a common MLE base, then the same number of further epochs
   either as MLE or as hybrid training (lambda 0.5, PGD L-inf eps 2/255, 5 steps). Checkpoints are cached in
   ``out/certify/`` (``BENCH_CERTIFY_RETRAIN=1`` retrains). For each model, each method and eps in
   {0.5, 1, 2, 4}/255 (L-inf, clamp [0, 1]), over the first ``BENCH_CERTIFY_N`` (default 32) test images:
   mean bits/dim clean, attained by PGD (``lower``, 100 steps, 2 restarts) and certified (``upper``); the
   ratio of the means ``upper/lower`` (bits/dim) and the median per-image excess ratio
   ``(upper - clean) / (lower - clean)`` (the certified NLL rise over the attained one); seconds.
2. LinearFlow (d = 8, condition 10): our symbolic bound and linflow's SDP certificate against the exact optimum
   (vertex enumeration), as the excess over the optimum's NLL rise.
3. The figure ``docs/figures/certify.png``: bits/dim against eps per model, clean, PGD, and the certified band
   (zonotope); the rows are also written to ``out/certify/bench_certify.json``.

Run ``python -m bench certify`` (about 2-4 minutes of CPU, most of it training).

4. ``BENCH_CERTIFY_FULL=out/full/checkpoints/glow_mle_<hash>.pt python -m bench certify``: instead of 1-3, the
   full budget's certify step (28x28 small GLOW) per method and eps in {0.01, 0.05, 0.1, 0.5}/255 on
   ``BENCH_CERTIFY_N`` (default 1) Fashion-MNIST test images, batch 1, zonotope ``max_symbols`` 1500
   (:func:`full_size`; wall-clock seconds, about 10 minutes). Measured (MLE GLOW of the full run, first test
   image, 2-core CPU under load 8-11): IBP overflows (upper = inf) at 0.5, 1 and 4/255; symbolic is vacuous
   (upper/lower 6e13 at 0.01/255); zonotope upper/lower 1.74 (0.01/255, 62 s), 1.90 (0.05/255, 108 s),
   2.92 (0.1/255, 101 s), 594 (0.2/255), 4e7 (0.5/255, 155 s); with ``max_symbols`` 6000 still 3e5 at 0.5/255
   (368 s). The full budget's eps (0.5/255 and up) are beyond what these relaxations certify on this model.
   With the default ``max_symbols`` (4096), both models, eps {0.01, 0.05, 0.1}/255, one image: upper/lower
   MLE 1.74 / 1.89 / 2.54, hybrid 2.51 / 2.74 / 3.72; 481 s for all six (PGD included).
"""

from __future__ import annotations

import copy
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

EPS = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255)
METHODS = ("ibp", "symbolic", "zonotope")
OUT = Path("out/certify")
FIGURE = Path("docs/figures/certify.png")


def train_models(out: Path = OUT, base_epochs: int = 200, more_epochs: int = 40, seed: int = 0) -> dict[str, Path]:
    """Tiny GLOW on digits: MLE base, then ``more_epochs`` of MLE or of hybrid training (cached)."""
    from deepcheck import data
    from deepcheck.checkpoint import save_checkpoint
    from deepcheck.flows import build
    from deepcheck.train import train

    paths = {"mle": out / "glow_tiny_mle.pt", "hybrid": out / "glow_tiny_hybrid.pt"}
    if all(p.exists() for p in paths.values()) and not os.environ.get("BENCH_CERTIFY_RETRAIN"):
        return paths
    tr, va = data.load("digits", "train", seed=seed), data.load("digits", "val", seed=seed)
    base = build("glow", "tiny", tr.shape, n_bins=tr.n_bins, seed=seed)
    t0 = time.time()
    train(base, tr, val_data=va, mode="mle", epochs=base_epochs, lr=2e-3, warmup_steps=50, seed=seed,
          progress=False)
    print(f"MLE base: {base_epochs} epochs in {time.time() - t0:.0f} s")
    for name, mode in (("mle", "mle"), ("hybrid", "hybrid")):
        model = copy.deepcopy(base)
        t0 = time.time()
        r = train(model, tr, val_data=va, mode=mode, epochs=more_epochs, lr=1e-3, warmup_steps=10,
                  hybrid_lambda=0.5, attack_eps=2 / 255, attack_steps=5, seed=seed + 1, progress=False)
        print(f"{name}: +{more_epochs} epochs in {time.time() - t0:.0f} s, val bpd {r.val_bpd[-1]:.3f}")
        save_checkpoint(paths[name], model)
    return paths


def tightness(paths: dict[str, Path], n: int = 32, methods=METHODS, eps=EPS) -> list[dict]:
    from deepcheck import data
    from deepcheck.certify import nll_bounds
    from deepcheck.checkpoint import load_checkpoint

    x = data.load("digits", "test", seed=0, limit=n).pixels(torch.float32)
    rows = []
    _header()
    for name, path in paths.items():
        model = load_checkpoint(path).model.eval()
        for method in methods:
            for e in eps:
                t0 = time.process_time()
                b = nll_bounds(model, x, e, method=method, steps=100, restarts=2, batch_size=8)
                rows.append(_row(name, b, time.process_time() - t0))
    return rows


def _header() -> None:
    print(f"{'model':>7} {'method':>9} {'eps*255':>7} {'clean':>7} {'lower':>7} {'upper':>10} {'up/low':>8} "
          f"{'excess':>9} {'s':>5}")


def _row(name: str, b, seconds: float) -> dict:
    s = {"model": name, **b.summary(), "seconds": seconds}
    print(f"{name:>7} {b.method:>9} {b.eps * 255:7.2g} {s['clean_bpd']:7.3f} {s['lower_bpd']:7.3f} "
          f"{s['upper_bpd']:10.4g} {s['ratio_bpd']:8.4g} {s['excess_ratio_median']:9.4g} {s['seconds']:5.1f}",
          flush=True)
    return s


FULL_EPS = (0.01 / 255, 0.05 / 255, 0.1 / 255, 0.5 / 255)


def full_size(path: Path, n: int = 1, methods=("ibp", "symbolic", "zonotope"), eps=FULL_EPS,
              max_symbols: int = 1500) -> list[dict]:
    """The full budget's certify step on its own checkpoint (28x28 small GLOW, Fashion-MNIST): each method on
    the first ``n`` test images, ``batch_size`` 1, the zonotope with ``max_symbols`` (wall-clock seconds)."""
    from deepcheck import data
    from deepcheck.certify import nll_bounds
    from deepcheck.checkpoint import load_checkpoint

    model = load_checkpoint(path).model.eval()
    x = data.load("fashion-mnist", "test", seed=0, limit=n).pixels(torch.float32)
    rows = []
    print(f"\nfull size: {path.name}, {n} Fashion-MNIST test image(s), zonotope max_symbols {max_symbols}")
    _header()
    for method in methods:
        for e in eps:
            t0 = time.time()
            b = nll_bounds(model, x, e, method=method, steps=100, restarts=2, batch_size=1, max_symbols=max_symbols)
            rows.append(_row(path.stem.split("_")[1], b, time.time() - t0))
    return rows


def linear_vs_sdp(d: int = 8, cond: float = 10.0, n: int = 8, eps=(0.01, 0.1, 0.5)) -> None:
    from deepcheck.certify import nll_upper_bound
    from deepcheck.flows import LinearFlow
    from linflow import certified_perturbation, perturbation_bounds
    from tests.strategies import random_flow

    rng = np.random.default_rng(0)
    flow = random_flow(d, cond, rng)
    x = flow.mean + 1.5 * rng.standard_normal((n, d)) @ np.asarray(flow.A).T
    model = LinearFlow.from_linflow(flow)
    print(f"\nLinearFlow d={d}, cond {cond:g}, {n} points, L-inf: excess over the exact optimal NLL rise (median)")
    print(f"{'eps':>6} {'opt rise':>9} {'symbolic':>9} {'SDP':>9}")
    for e in eps:
        cert = certified_perturbation(flow, x, e, norm=np.inf, exact=True)
        opt = flow.nll(x) + np.asarray(cert.upper)
        ours = nll_upper_bound(model, torch.tensor(x), e, clamp=None, method="symbolic").numpy()
        sdp = flow.nll(x) + np.asarray(perturbation_bounds(flow, x, e, norm=np.inf, exact=False)[1])
        rise = np.median(opt - flow.nll(x))
        print(f"{e:6.3g} {rise:9.4g} {np.median(ours - opt):9.3g} {np.median(sdp - opt):9.3g}")


def figure(rows: list[dict], path: Path = FIGURE, method: str = "zonotope") -> Path:
    """The certified band against PGD against eps (:func:`deepcheck.figures.certified_band_figure`), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepcheck.figures import certified_band_figure
    from deepcheck.fileio import atomic_write

    chosen = [r for r in rows if r["method"] == method]
    fig = certified_band_figure(sorted(chosen, key=lambda r: (r["model"] != "mle", r["model"])), method=method,
                                title="tiny GLOW, digits, ")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def main() -> None:
    from deepcheck.fileio import atomic_write

    torch.set_num_threads(1)
    paths = train_models()
    full = os.environ.get("BENCH_CERTIFY_FULL")
    if full:  # a full-budget checkpoint, e.g. out/full/checkpoints/glow_mle_*.pt (minutes per zonotope row)
        rows = full_size(Path(full), n=int(os.environ.get("BENCH_CERTIFY_N", "1")))
        atomic_write(OUT / "bench_certify_full.json", json.dumps(rows, indent=1))
        return
    rows = tightness(paths, n=int(os.environ.get("BENCH_CERTIFY_N", "32")))
    atomic_write(OUT / "bench_certify.json", json.dumps(rows, indent=1))
    print(f"wrote {figure(rows)}")
    linear_vs_sdp()


if __name__ == "__main__":
    main()
