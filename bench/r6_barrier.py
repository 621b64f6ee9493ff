"""R6 on MNIST-5k (issue 14 goal 1): Newton-CG on the barrier-smoothed dual ``Phi_mu``
(:mod:`linflow.training.pooled_barrier`) against the default's block and crowd steps, as ``Phi - Phi_ref`` (the 600-s
reference duals) against CPU seconds, one thread.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/r6_barrier.py default EPS [T] [after=S ...]
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/r6_barrier.py barrier EPS MU FACTOR STEPS CG [SEC SHIFT BALL INT]

``default``: one 60-CPU-s run of the default (``_sample_pooled``), the best ``Phi`` evaluated so far at CPU marks and
the certified relative gap; with ``T`` it saves the means at the first block step after ``T`` CPU s
(``/tmp/r6bar/state_EPS.npy``, reduced coordinates). With ``after=S`` (and ``newton=CG newton_every=K mu=MU``) the
option ``newton``'s step is the barrier one (:func:`linflow.training.pooled_barrier._barrier_newton`, kept only if the
true ``Phi`` rises) from ``S`` CPU s on (the alternation (c)).
``barrier``: from that saved state, barrier Newton-CG steps only: ``mu`` from ``MU``, times ``FACTOR`` after ``STEPS``
accepted steps (or a failed one); ``CG`` conjugate-gradient products; for ``SEC`` CPU s (30); preconditioner shift
``SHIFT kappa d`` (5e-4); ``BALL`` 1: the ball barrier on the interior points; ``INT`` 1: only those points move.

Measured (R6-BARRIER, 2026-12-02, eps 1 from the default's state at 27.5 CPU s, Phi - Phi_ref = -1.52e-5; after ~25
more CPU s): default -3.1e-6; barrier mu 1e-8, CG 20: -5.1e-6; CG 10: -6.6e-6 (mu 1e-9: same); CG 40: -1.3e-5;
path-following mu 1e-5 -> x0.3 every 2 steps: -8.8e-6 after 60 s. eps 3 (state at 25.9 s, -4.8e-4; +30 s): default
-5.7e-5, barrier CG 10: -9.4e-5. See docs/theory.md R6, "What did not help".
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bench.bench_training import mnist5k  # noqa: E402
from linflow.training import pooled, pooled_barrier, pooled_k  # noqa: E402
from linflow.training.pooled_barrier import _barrier_newton, _barrier_step, _barrier_value  # noqa: E402
from linflow.training.pooled_dual import _pooled_dual  # noqa: E402
from linflow.validation import check_data  # noqa: E402

REF = {1.0: -312.69773932, 3.0: -74.15224054}  # Phi of the 600-s reference duals (/tmp/r6dual)
MARKS = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55)


def _default(eps: float, Xc: np.ndarray, m: np.ndarray, S: np.ndarray, args: list[str]) -> None:
    save = float(args[0]) if args and "=" not in args[0] else None
    kw = dict(a.split("=") for a in args if "=" in a)
    after, mu = float(kw.pop("after", "inf")), float(kw.pop("mu", "1e-8"))
    opts = {k: int(v) for k, v in kw.items()}
    c0, traj, saved, stats = [0.0], [], [False], [0, 0.0]
    dual_of = pooled._pooled_dual

    def spy(*a, **k):
        d = dual_of(*a, **k)
        traj.append((time.process_time() - c0[0], d.G))
        return d

    step_of = pooled._prox_step

    def prox(dual, *a, **k):
        if save is not None and not saved[0] and time.process_time() - c0[0] > save:
            np.save(f"/tmp/r6bar/state_{eps:g}.npy", dual.Mn)
            saved[0] = True
        return step_of(dual, *a, **k)

    def newton(X, dual, eps, reg, cg_iter):
        if time.process_time() - c0[0] < after:
            return None
        t = time.process_time()
        out = _barrier_newton(X, dual, eps, reg, mu, cg_iter=cg_iter)
        stats[0] += 1
        stats[1] += time.process_time() - t
        return out

    pooled._pooled_dual = pooled_k._pooled_dual = pooled_barrier._pooled_dual = spy
    pooled._prox_step, pooled._newton_step = prox, newton
    with threadpool_limits(1):
        c0[0] = time.process_time()
        _, info = pooled._sample_pooled(Xc, m, S, eps, 0.01, max_iter=10_000, tol=1e-10, max_seconds=60.0, **opts)
    ref, best, at = REF.get(eps, 0.0), -np.inf, {}
    for t, G in traj:
        best = max(best, G)
        at.update({mk: best - ref for mk in MARKS if t <= mk})
    print(f"eps {eps:g} {args}: gap {info.gap / abs(info.objective):.3e} F-ref {info.objective - ref:.2e} barrier "
          f"steps {stats[0]} ({stats[1]:.1f} s) | " + " ".join(f"{k}:{v:.2e}" for k, v in sorted(at.items())))


def _barrier(eps: float, Xc: np.ndarray, args: list[str]) -> None:
    mu, factor, steps, cg = float(args[0]), float(args[1]), int(args[2]), int(args[3])
    seconds = float(args[4]) if len(args) > 4 else 30.0
    shift = float(args[5]) if len(args) > 5 else 5e-4
    ball = len(args) > 6 and args[6] == "1"
    interior = len(args) > 7 and args[7] == "1"
    red = pooled._Reduced(Xc)
    X = Xc[:, red.keep]
    ref = REF.get(eps, 0.0)
    with threadpool_limits(1):
        c0 = time.process_time()
        bar = _barrier_value(_pooled_dual(X, np.load(f"/tmp/r6bar/state_{eps:g}.npy"), eps, 0.01, red.k), eps, mu)
        best, count = bar.dual.G, 0
        print(f"start {best - ref:.3e}")
        while time.process_time() - c0 < seconds:
            new, tries = _barrier_step(X, bar, eps, 0.01, cg_iter=cg, ball=ball, interior=interior,
                                       shift=shift * bar.kappa * X.shape[1])
            if new is not None:
                bar, count, best = new, count + 1, max(best, new.dual.G)
            print(f"t {time.process_time() - c0:6.1f} mu {mu:.1e} tries {tries} Phi-ref {best - ref:.4e}", flush=True)
            if new is None or count >= steps:
                mu, count = mu * factor, 0
                bar = _barrier_value(bar.dual, eps, mu)


def main() -> None:
    mode, eps = sys.argv[1], float(sys.argv[2])
    Xc, m, S = check_data(mnist5k(), 0.01)
    if mode == "default":
        _default(eps, Xc, m, S, sys.argv[3:])
    else:
        _barrier(eps, Xc, sys.argv[3:])


if __name__ == "__main__":
    main()
