"""L-infinity lowering attack on linear flows (R3): certified gap, time per point, and plain attacks.

For d in {8, 16, 50, 200}: random flows (condition numbers log-uniform in [1, 1e4]), points drawn from the
flow, eps in {0.1, 1} (eigenvalues of the covariance lie in [1e-4, 1]). Printed per (eps, d):

* the certified gap ``upper / lower`` of :func:`linflow.certified_perturbation` with ``exact=False``
  (SDP bound over the achieved SDP-rounding vertex; median and worst over models and points);
* for d <= 16 the exact optimum by vertex enumeration, and how often SDP rounding reached it;
* time per point (median) of the SDP path and, for d <= 16, of enumeration;
* exact enumeration time per point for d in {12, 16, 20, 24};
* FGSM (one sign-gradient step from zero, ``delta = eps sign(P v)``) and sign-gradient PGD from zero (``steps``
  steps of size ``2.5 eps / steps``, projected by clipping) as a fraction of the best certified value
  (the exact optimum where known, else the achieved lower end; also against the upper bound).

Then the raising QPs (L1 and L-infinity, R3) at d = 100, n = 1000, condition numbers 1e4 and 1e8: the batched
exact solver (:mod:`linflow.polytope_raise`: primal-dual active sets, the homotopy path on the rows where they
cycle) on the whole batch against one cvxpy (Clarabel) solve per point -- the path every L1 point took before --
and against the previous per-point L-infinity path (an active set per point, cvxpy where it failed), with the
certificate (KKT / Frank-Wolfe gap over its rounding scale) of every row and the work per row (active-set
iterations plus path breakpoints). Single BLAS thread, CPU time; per-point paths timed on a subset and scaled to
n, in the same process (the ratio is the figure to quote on a loaded machine). The L1 iteration runs compiled per
row where numba is installed (``pip install flowrobust[jit]``), batched numpy otherwise: the header says which,
and the CPU time of the first call in the process (JIT compilation, or loading numba's on-disk cache). Where numba
is installed each L1 row is followed by the numpy path's row (numba switched off) against the same cvxpy time:
the figure for a user without numba.

Run: ``python -m bench box`` (``python -c "import bench.bench_box as b; b.raising()"`` for the raising rows only).
"""

from __future__ import annotations

import time

import numpy as np
from scipy.stats import ortho_group

from bench.timing import median_cpu_time, median_time
from linflow import LinearFlow, box_qp, certified_perturbation
from linflow.polytope_raise import _jit, l1, raise_box, raise_l1

EPS_VALUES = (0.1, 1.0)
SETTINGS = {8: (10, 4), 16: (10, 4), 50: (8, 3), 200: (4, 2)}  # d: (models, points per model)


def random_flow(d: int, rng: np.random.Generator) -> LinearFlow:
    U = ortho_group.rvs(d, random_state=rng)
    log_cond = rng.uniform(0.0, 4.0)
    s = 10.0 ** rng.uniform(-log_cond, 0.0, d)
    cov = (U * s) @ U.T
    return LinearFlow.from_gaussian(rng.standard_normal(d), 0.5 * (cov + cov.T))


def dnll(P: np.ndarray, v: np.ndarray, delta: np.ndarray) -> float:
    return float(delta @ P @ v + 0.5 * delta @ P @ delta)


def fgsm(P: np.ndarray, v: np.ndarray, eps: float) -> np.ndarray:
    """One sign-gradient step from zero: ``eps sign(grad dNLL(0)) = eps sign(P v)`` (sign 0 -> +1)."""
    return eps * np.where(P @ v >= 0.0, 1.0, -1.0)


def sign_pgd(P: np.ndarray, v: np.ndarray, eps: float, steps: int) -> np.ndarray:
    """Sign-gradient ascent from zero, step ``2.5 eps / steps``, clipped to the box; the last iterate's best vertex
    rounding is not applied (a plain PGD as in attack libraries, keeping the best iterate)."""
    alpha = 2.5 * eps / steps
    delta = np.zeros_like(v)
    best, best_val = delta, 0.0
    for _ in range(steps):
        grad = P @ (v + delta)
        delta = np.clip(delta + alpha * np.where(grad >= 0.0, 1.0, -1.0), -eps, eps)
        val = dnll(P, v, delta)
        if val > best_val:
            best, best_val = delta.copy(), val
    return best


def run(eps: float, d: int, n_models: int, n_points: int, rng: np.random.Generator) -> tuple:
    gaps, hits, t_sdp, t_enum = [], 0, [], []
    r_fgsm, r_pgd10, r_pgd100, r_pgd_up = [], [], [], []
    n = 0
    for _ in range(n_models):
        flow = random_flow(d, rng)
        P = flow.precision
        for x in flow.sample(n_points, rng):
            v = x - flow.mean
            t0 = time.perf_counter()
            cert = certified_perturbation(flow, x, eps, norm=np.inf, exact=False, seed=n)
            t_sdp.append(time.perf_counter() - t0)
            gaps.append(cert.upper / cert.lower)
            best = cert.lower
            if d <= 16:
                t0 = time.perf_counter()
                ex = certified_perturbation(flow, x, eps, norm=np.inf, exact=True)
                t_enum.append(time.perf_counter() - t0)
                best = ex.lower
                hits += cert.lower >= best * (1 - 1e-12)
            r_fgsm.append(dnll(P, v, fgsm(P, v, eps)) / best)
            r_pgd10.append(dnll(P, v, sign_pgd(P, v, eps, 10)) / best)
            pgd100 = dnll(P, v, sign_pgd(P, v, eps, 100))
            r_pgd100.append(pgd100 / best)
            r_pgd_up.append(pgd100 / cert.upper)
            n += 1
    return (eps, d, n, np.median(gaps), np.max(gaps), f"{hits}/{n}" if d <= 16 else "n/a",
            np.median(t_sdp), np.median(t_enum) if t_enum else float("nan"),
            np.median(r_fgsm), np.min(r_fgsm), np.median(r_pgd10), np.min(r_pgd10),
            np.median(r_pgd100), np.min(r_pgd100), np.min(r_pgd_up))


def _old_linf_point(flow: LinearFlow, v: np.ndarray, eps: float) -> np.ndarray:
    """The per-point L-infinity raising path before the batched solver: an active set, cvxpy where it failed."""
    x = box_qp._pdas_box(flow.precision, v, eps, max_iter=3 * v.size + 20)
    return x if x is not None else box_qp._cvxpy_qp(flow, v, eps, np.inf)


def _cvxpy_point(flow: LinearFlow, v: np.ndarray, eps: float, norm: float) -> np.ndarray:
    """One cvxpy (Clarabel) solve followed by the KKT polish: the per-point L1 path before the batched solver."""
    d0 = box_qp._cvxpy_qp(flow, v, eps, norm)
    return min([d0, *box_qp._polish(flow.precision, v, eps, norm, d0)], key=lambda d: dnll(flow.precision, v, d))


def _raising_row(flow: LinearFlow, V: np.ndarray, norm: float, rel: float, subset: int) -> str:
    P, n = flow.precision, V.shape[0]
    solver = raise_box if norm == np.inf else raise_l1
    size = np.abs(V).max(axis=1) if norm == np.inf else np.abs(V).sum(axis=1)
    eps = rel * float(np.median(size))
    t_b = median_cpu_time(lambda: solver(P, V, eps), repeats=5)
    res = solver(P, V, eps)
    sub = V[:subset]
    t_c = median_cpu_time(lambda: [_cvxpy_point(flow, v, eps, norm) for v in sub], repeats=1, warmup=0) * n / subset
    old = "(= cvxpy) | -"
    if norm == np.inf:
        t_o = median_cpu_time(lambda: [_old_linf_point(flow, v, eps) for v in sub], repeats=1, warmup=0) * n / subset
        old = f"{t_o:.2f} | {t_o / t_b:.0f}x"
    label = "inf" if norm == np.inf else ("1 (numba)" if _jit.AVAILABLE and l1._USE_JIT else "1 (numpy)")
    row = (f"| {label} | {rel} | {t_b:.3f} | {t_c:.1f} | {t_c / t_b:.0f}x | {old} | "
           f"{res.certified.mean():.3f} | {res.kkt.max():.1e} | {np.median(res.iterations):.0f} / "
           f"{res.iterations.max()} |")
    if norm == 1.0 and _jit.AVAILABLE and l1._USE_JIT:  # the numpy path too: what a user without numba gets
        row += "\n" + _numpy_l1_row(P, V, eps, rel, t_c)
    return row


def _numpy_l1_row(P: np.ndarray, V: np.ndarray, eps: float, rel: float, t_c: float) -> str:
    """The L1 row again with the batched numpy iteration (numba switched off), against the same cvxpy time."""
    l1._USE_JIT = False
    try:
        t_b = median_cpu_time(lambda: raise_l1(P, V, eps), repeats=5)
        res = raise_l1(P, V, eps)
    finally:
        l1._USE_JIT = True
    return (f"| 1 (numpy) | {rel} | {t_b:.3f} | {t_c:.1f} | {t_c / t_b:.0f}x | (= cvxpy) | - | "
            f"{res.certified.mean():.3f} | {res.kkt.max():.1e} | {np.median(res.iterations):.0f} / "
            f"{res.iterations.max()} |")


def raising(d: int = 100, n: int = 1000, subset: int = 20, conds: tuple[float, ...] = (1e4, 1e8, 1e5)) -> None:
    """Rows: (norm, eps relative to the median ||v||, batched s, cvxpy per point scaled to n, ratio, old path,
    ratio, certified fraction, worst kkt, iterations + path breakpoints median / max) per condition number (1e5 last,
    so that the 1e4 and 1e8 problems stay those of earlier runs)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        _raising(d, n, subset, conds)
        return
    with threadpool_limits(limits=1):
        _raising(d, n, subset, conds)


def _raising(d: int, n: int, subset: int, conds: tuple[float, ...]) -> None:
    rng = np.random.default_rng(1)
    print(f"\nL1 / L-inf raising (convex QPs), d = {d}, n = {n} points drawn from the flow; CPU time, 1 BLAS thread;"
          f" per-point paths timed on {subset} points and scaled to n")
    rng0 = np.random.default_rng(2)  # its own stream: the timed problems below stay those of earlier runs
    flow0 = random_flow(d, rng0)
    V0 = flow0.sample(n, rng0) - flow0.mean
    t0 = time.process_time()
    raise_l1(flow0.precision, V0, 0.1 * float(np.median(np.abs(V0).sum(axis=1))))
    print(f"L1 per-row iteration: {'compiled (numba)' if _jit.AVAILABLE else 'numpy (numba not installed)'}; first "
          f"call in this process {time.process_time() - t0:.2f} s CPU (JIT compile or cache load included; the timed "
          "rows below run after a warm-up call)")
    for cond in conds:
        U = ortho_group.rvs(d, random_state=rng)
        s = np.exp(rng.uniform(-np.log(cond), 0.0, d))
        s[0], s[-1] = 1.0 / cond, 1.0
        cov = (U * s) @ U.T
        flow = LinearFlow.from_gaussian(rng.standard_normal(d), 0.5 * (cov + cov.T))
        V = flow.sample(n, rng) - flow.mean
        print(f"\ncondition number {cond:.0e}\n| norm | eps / median size | batched (s) | cvxpy per point, x n (s) | "
              "ratio | old per-point path, x n (s) | ratio | certified | worst kkt | "
              "iterations + breakpoints median / max |")
        print("|" + "---|" * 10)
        for norm in (np.inf, 1.0):
            for rel in (0.1, 0.5):
                print(_raising_row(flow, V, norm, rel, subset), flush=True)


def main() -> None:
    raising()
    rng = np.random.default_rng(0)
    rows = []
    print("L-inf lowering, cond log-uniform in [1, 1e4], points sampled from the flow")
    for eps in EPS_VALUES:
        for d, (n_models, n_points) in SETTINGS.items():
            rows.append(run(eps, d, n_models, n_points, rng))
            print(f"  eps={eps} d={d}: done ({rows[-1][2]} points)", flush=True)
    print("\n| eps | d | points | gap upper/lower median | worst | SDP rounding = exact | s/point SDP | "
          "s/point enum | FGSM/best median | worst | PGD-10/best median | worst | PGD-100/best median | worst | "
          "PGD-100/upper worst |")
    print("|" + "---|" * 15)
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.4f} | {r[4]:.4f} | {r[5]} | {r[6]:.3f} | {r[7]:.4f} | "
              f"{r[8]:.3f} | {r[9]:.3f} | {r[10]:.3f} | {r[11]:.3f} | {r[12]:.3f} | {r[13]:.3f} | {r[14]:.3f} |")
    print("best = exact optimum (enumeration) for d <= 16, else the achieved (certified lower) value; SDP by "
          "Clarabel for d <= 24, the mixing method beyond.")
    print("\nExact enumeration (exact=True), seconds per point, median of 3 runs on a batch of 4 points:")
    for d in (12, 16, 20, 24):
        flow = random_flow(d, rng)
        X = flow.sample(4, rng)
        t = median_time(lambda f=flow, X=X: certified_perturbation(f, X, 0.1, norm=np.inf, exact=True), repeats=3)
        print(f"  d={d}: {t / 4:.4f} s/point ({2**d} vertices)")


if __name__ == "__main__":
    main()
