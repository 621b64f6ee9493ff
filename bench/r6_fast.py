"""R6 on MNIST-5k (issue 14 goal 1): the CPU cost of one call of each part of the pooled solver
(:mod:`linflow.training.pooled`), to compare two trees (run it on each, interleaved, same session).

The state: the means after ``--steps`` plain proximal block steps at ``--eps`` from the solver's start (or a saved
``(5000, 663)`` array of means in the reduced coordinates, ``--state``). Parts: ``_pooled_dual`` (covariance and
``eigh``), the single-precision block step ``_prox_step``, ``_prox_responses``, one Anderson correction of the
block's size (history 7), and the crowd sub-solve ``_crowd_step`` with 1 and 21 sub-steps (``min_rate`` 0), whence
the cost per sub-step and of its set-up and final full evaluation. Milliseconds of process time, one thread.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/r6_fast.py [--eps 3] [--steps 20] [--state means.npy]
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_training import mnist5k  # noqa: E402


def _ms(f, rep: int) -> float:
    f()
    t = time.process_time()
    for _ in range(rep):
        f()
    return 1e3 * (time.process_time() - t) / rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--state", type=str, default=None)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    from linflow.training import pooled as P
    from linflow.training import pooled_k as PK
    from linflow.training.pooled_dual import _pooled_dual
    from linflow.training.pooled_extrap import _Anderson
    from linflow.validation import check_data

    reg, eps = 0.01, args.eps
    Xc, m, S = check_data(mnist5k(), reg)
    red = P._Reduced(Xc)
    Xk = np.ascontiguousarray(Xc[:, red.keep])
    with threadpool_limits(1):
        if args.state:
            d = _pooled_dual(Xk, np.load(args.state), eps, reg, red.k)
        else:
            d = _pooled_dual(Xk, P._start(Xc, m, S, eps, reg, None)[0][:, red.keep], eps, reg, red.k)
            rho0 = 1.5 * d.lam * Xk.shape[1] / Xk.shape[0]
            for _ in range(args.steps):
                new = _pooled_dual(Xk, P._prox_step(d, eps, rho0), eps, reg, red.k)
                d = new if new.G > d.G else d
        rho = 1.5 * d.lam * Xk.shape[1] / Xk.shape[0]
        X32 = Xk.astype(np.float32)
        p = 1.0 / d.s
        gaps = np.maximum(d.lam - p, 0.0)
        B = d.W * p + rho * (d.Mn @ d.V)
        rng = np.random.default_rng(0)
        xs = [d.Mn + 1e-4 * rng.standard_normal(d.Mn.shape) for _ in range(10)]

        def anderson() -> None:
            acc = _Anderson(8)
            for i in range(9):
                acc.correction(xs[i], xs[i + 1] - xs[i])

        kw = {"single": True} if "single" in inspect.signature(PK._crowd_step).parameters else {}

        def crowd(steps: int):
            return lambda: PK._crowd_step(Xk, d, eps, reg, steps, rho, P._prox_responses, **kw)

        res = {"pooled_dual": _ms(lambda: _pooled_dual(Xk, d.Mn, eps, reg, red.k), 6),
               "prox_step (single)": _ms(lambda: P._prox_step(d, eps, rho, X32), 6),
               "prox_responses": _ms(lambda: P._prox_responses(B, gaps, rho, eps), 6),
               "anderson": _ms(anderson, 2) / 9,
               "crowd 1": _ms(crowd(1), 3), "crowd 21": _ms(crowd(21), 2)}
    res["crowd per sub-step"] = (res["crowd 21"] - res["crowd 1"]) / 20
    res["crowd set-up + end"] = res["crowd 1"] - res["crowd per sub-step"]
    q = int((d.c < d.nu * 1.05).sum())
    print(f"eps {eps:g}, crowded directions {q} ({'single' if kw else 'double'} sub-solve), ms per call:")
    for k, v in res.items():
        print(f"  {k:22s} {v:8.1f}")


if __name__ == "__main__":
    main()
