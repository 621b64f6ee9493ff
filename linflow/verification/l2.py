r"""Verification of the exact L2 attacks (R1, R2) against independent methods (R4: ``averaged``).

Reference methods (each shares no code with :mod:`linflow.secular`; all take the precision matrix ``P`` or
the flow's raw eigenvalues and solve the problem their own way):

* :func:`sdp_lower_change` -- R1 as the S-lemma SDP (exact for one quadratic constraint), cvxpy + Clarabel:
  ``max_{||u|| <= 1} u^T Q u + 2 b^T u = min tau`` s.t. ``[[lam I - Q, -b], [-b^T, tau - lam]] >= 0``,
  ``lam >= 0``, with ``Q = eps^2 P / 2``, ``b = eps P v / 2`` (``delta = eps u``).
* :func:`cvx_raise_change` -- R2 as a convex second-order-cone program in cvxpy.
* :func:`mp_lower_change` / :func:`mp_raise_change` -- the secular equation solved by 50-digit bisection
  (mpmath) in the gap variable, with the hard case decided exactly; the reference for near-hard sweeps.
* :func:`brute_force_lower_change` -- a dense grid on the sphere (d <= 3), polished by Nelder-Mead.

Discrepancies are relative to the value scale ``eps ||P v|| + eps^2 / s_min`` (the size of the two terms of
``dNLL = delta^T P v + delta^T P delta / 2`` on the ball), so that a value near 0 is not divided by 0.
"""

from __future__ import annotations

import numpy as np

from . import check
from .cases import random_case, random_flow

# ---------------------------------------------------------------------------------------------- references


def value_scale(P: np.ndarray, v: np.ndarray, eps: float) -> float:
    """``eps ||P v|| + eps^2 ||P||_2``: the scale of ``dNLL`` over the ball (relative discrepancies use it)."""
    return float(eps * np.linalg.norm(P @ v) + eps**2 * np.linalg.norm(P, 2))


def dnll(P: np.ndarray, v: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``delta^T P v + delta^T P delta / 2`` (rows of ``delta``), straight from the matrix ``P``."""
    delta = np.atleast_2d(delta)
    return delta @ (P @ v) + 0.5 * np.einsum("ij,jk,ik->i", delta, P, delta)


def sdp_lower_change(P: np.ndarray, v: np.ndarray, eps: float, tol: float | None = 1e-10) -> float:
    """R1 optimum ``max_{||delta|| <= eps} dNLL`` by the S-lemma SDP (cvxpy, Clarabel with gap and feasibility
    tolerances ``tol``; ``None``: Clarabel's defaults, 1e-8)."""
    import cvxpy as cp

    d = P.shape[0]
    Q = 0.5 * eps**2 * P
    b = 0.5 * eps * (P @ v)
    k = max(np.linalg.norm(Q, 2), np.linalg.norm(b), np.finfo(float).tiny)
    Q, b = Q / k, b / k
    lam = cp.Variable(nonneg=True)
    tau = cp.Variable()
    M = cp.bmat([[lam * np.eye(d) - Q, -b.reshape(d, 1)],
                 [-b.reshape(1, d), cp.reshape(tau - lam, (1, 1), order="C")]])
    prob = cp.Problem(cp.Minimize(tau), [0.5 * (M + M.T) >> 0])
    opts = {} if tol is None else {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol}
    prob.solve(solver=cp.CLARABEL, **opts)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"S-lemma SDP failed: {prob.status}")
    return float(tau.value) * k


def cvx_raise_change(P: np.ndarray, v: np.ndarray, eps: float) -> float:
    """R2 optimum ``min_{||delta|| <= eps} dNLL`` as a second-order-cone program (cvxpy, Clarabel)."""
    import cvxpy as cp

    d = P.shape[0]
    L = np.linalg.cholesky(P)
    k = max(eps * np.linalg.norm(P @ v), eps**2 * np.linalg.norm(P, 2), np.finfo(float).tiny)
    u = cp.Variable(d)
    obj = (eps * (P @ v) @ u + 0.5 * eps**2 * cp.sum_squares(L.T @ u)) / k
    prob = cp.Problem(cp.Minimize(obj), [cp.norm(u, 2) <= 1])
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    if prob.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"convex R2 solve failed: {prob.status}")
    return float(prob.value) * k


def _mp_root(a: list, gaps: list, eps, lo, hi, mp) -> object:
    """Bisection for ``sum a_i^2 / (g + gap_i)^2 = eps^2`` on ``[lo, hi]`` (decreasing in g), until the bracket
    is ``10^-(dps - 10)`` of its lower end (at most 2000 halvings)."""
    rel = mp.mpf(10) ** (10 - mp.dps)
    for _ in range(2000):
        if hi - lo <= rel * lo:
            break
        mid = (lo + hi) / 2
        phi = mp.fsum((ai / (mid + gi)) ** 2 for ai, gi in zip(a, gaps) if ai != 0)
        if phi > eps**2:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mp_lower_change(s: np.ndarray, w: np.ndarray, eps: float, dps: int = 50) -> float:
    """R1 optimum in eigen-coordinates (``s`` ascending, ``w = U^T v``) in ``dps``-digit arithmetic.

    Bisection on ``g = eta - 1/s_min`` for ``sum_i (w_i/s_i)^2 / (g + 1/s_min - 1/s_i)^2 = eps^2``; exact hard
    case when every ``w_i`` with ``s_i == s_min`` is 0 and the off-block sum at ``g = 0`` is ``<= eps^2``.
    Returns ``max dNLL = sum_i a_i c_i + c_i^2 / (2 s_i)``.
    """
    import mpmath

    with mpmath.workdps(dps):
        mp = mpmath.mp
        S = [mp.mpf(float(x)) for x in s]
        p = [1 / x for x in S]
        gaps = [p[0] - pi for pi in p]
        a = [mp.mpf(float(wi)) * pi for wi, pi in zip(w, p)]
        E = mp.mpf(float(eps))
        block = [g == 0 for g in gaps]
        a_norm = mp.sqrt(mp.fsum(ai**2 for ai in a))
        if all(ai == 0 for ai, b in zip(a, block) if b):
            off = mp.fsum((ai / gi) ** 2 for ai, gi, b in zip(a, gaps, block) if not b and ai != 0)
            if off <= E**2:  # hard case: g = 0, fill the rest along the block (it adds fill^2 p_max / 2)
                c = [0 if b else ai / gi for ai, gi, b in zip(a, gaps, block)]
                val = mp.fsum(ai * ci + ci**2 * pi / 2 for ai, ci, pi in zip(a, c, p))
                return float(val + (E**2 - off) * p[0] / 2)
        g = _mp_root(a, gaps, E, mp.mpf(0), a_norm / E, mp)
        c = [ai / (g + gi) if ai != 0 else 0 for ai, gi in zip(a, gaps)]
        return float(mp.fsum(ai * ci + ci**2 * pi / 2 for ai, ci, pi in zip(a, c, p)))


def mp_raise_change(s: np.ndarray, w: np.ndarray, eps: float, dps: int = 50) -> float:
    """R2 optimum ``min dNLL`` in eigen-coordinates, in ``dps``-digit arithmetic (bisection on ``eta``)."""
    import mpmath

    with mpmath.workdps(dps):
        mp = mpmath.mp
        p = [1 / mp.mpf(float(x)) for x in s]
        W = [mp.mpf(float(wi)) for wi in w]
        E = mp.mpf(float(eps))
        if mp.fsum(wi**2 for wi in W) <= E**2:
            return float(-mp.fsum(wi**2 * pi for wi, pi in zip(W, p)) / 2)
        a = [wi * pi for wi, pi in zip(W, p)]
        eta = _mp_root(a, p, E, mp.mpf(0), mp.sqrt(mp.fsum(ai**2 for ai in a)) / E, mp)
        c = [-ai / (eta + pi) for ai, pi in zip(a, p)]
        return float(mp.fsum(ai * ci + ci**2 * pi / 2 for ai, ci, pi in zip(a, c, p)))


def _sphere_grid(d: int, m: int) -> np.ndarray:
    """Unit vectors on a grid with angle step ~ pi / (2 m) (d <= 3)."""
    if d == 1:
        return np.array([[1.0], [-1.0]])
    if d == 2:
        t = np.linspace(0, 2 * np.pi, 8 * m, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    th = np.linspace(0, np.pi, 2 * m)
    ph = np.linspace(0, 2 * np.pi, 4 * m, endpoint=False)
    T, F = np.meshgrid(th, ph)
    return np.stack([np.sin(T) * np.cos(F), np.sin(T) * np.sin(F), np.cos(T)], axis=-1).reshape(-1, 3)


def brute_force_lower_change(P: np.ndarray, v: np.ndarray, eps: float, m: int = 200) -> float:
    """R1 optimum for ``d <= 3``: the best of a dense sphere grid, polished by Nelder-Mead on the sphere."""
    from scipy.optimize import minimize

    d = P.shape[0]
    if d > 3:
        raise ValueError(f"brute force needs d <= 3, got {d}")
    dirs = _sphere_grid(d, m)
    vals = dnll(P, v, eps * dirs)
    best = float(vals.max())
    if d == 1:
        return best
    u0 = dirs[int(np.argmax(vals))]
    scale = value_scale(P, v, eps)

    def neg(z: np.ndarray) -> float:
        u = u0 + z
        return -float(dnll(P, v, eps * u / np.linalg.norm(u))[0])

    res = minimize(neg, np.zeros(d), method="Nelder-Mead",
                   options={"xatol": 1e-13, "fatol": 1e-16 * scale, "maxiter": 6000})
    return max(best, -float(res.fun))


# ---------------------------------------------------------------------------------------------- generators


def _random_flow(rng: np.random.Generator, d: int, log10_cond: float):
    return random_flow(d, 10.0**log10_cond, rng, 10.0 ** rng.uniform(-1, 1))


def _random_case(rng: np.random.Generator, d: int, log10_cond: float, log10_eps: tuple[float, float]):
    return random_case(rng, d, log10_cond, log10_eps, log10_scale=(-1.0, 1.0))


def _rel(a: float, b: float, scale: float) -> float:
    return abs(a - b) / scale


# ---------------------------------------------------------------------------------------------- checks


@check("R1", "secular Newton vs S-lemma SDP (cvxpy/Clarabel)", 1e-8)
def r1_vs_sdp(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..perturb import optimal_nll_change

    n = 8 if quick else 40
    worst = 0.0
    for _ in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(1, 7 if quick else 13)), rng.uniform(0, 4), (-2, 1))
        v = x - flow.mean
        ref = sdp_lower_change(flow.precision, v, eps)
        worst = max(worst, _rel(optimal_nll_change(flow, x, eps), ref, value_scale(flow.precision, v, eps)))
    return worst, n, "d <= 6 (12 full), cond <= 1e4, eps in [1e-2, 10]"


@check("R1", "secular Newton vs brute force on the sphere (d <= 3)", 1e-7)
def r1_vs_brute_force(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..perturb import optimal_nll_change

    n = 6 if quick else 30
    worst = 0.0
    for i in range(n):
        flow, x, eps = _random_case(rng, 1 + i % 3, rng.uniform(0, 3), (-2, 1))
        if i % 4 == 3:
            x = flow.mean.copy()  # the hard case
        v = x - flow.mean
        ref = brute_force_lower_change(flow.precision, v, eps)
        worst = max(worst, _rel(optimal_nll_change(flow, x, eps), ref, value_scale(flow.precision, v, eps)))
    return worst, n, "grid + Nelder-Mead polish; every 4th case at the mean"


@check("R1", "KKT residual ||(eta I - P) delta - P v|| with eta >= 1/s_min, ||delta|| = eps", 1e-9)
def r1_kkt(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..perturb import optimal_perturbation

    n = 40 if quick else 400
    worst = 0.0
    for _ in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(1, 21)), rng.uniform(0, 8), (-6, 3))
        P = flow.precision
        Pv = P @ (x - flow.mean)
        delta = optimal_perturbation(flow, x, eps)
        eta = delta @ (P @ delta + Pv) / eps**2
        res = np.linalg.norm(eta * delta - P @ delta - Pv) / (np.linalg.norm(Pv) + abs(eta) * eps)
        dual = max(0.0, 1.0 - eta * flow.eigvals[0])  # second-order condition eta >= 1/s_min
        feas = abs(np.linalg.norm(delta) / eps - 1.0)
        worst = max(worst, res, dual, feas)
    return worst, n, "d <= 20, cond <= 1e8, eps in [1e-6, 1e3]; max of residual, 1 - eta s_min, | ||delta||/eps - 1 |"


@check("R1", "near-hard sweep y = base + t u_min vs 50-digit bisection (mpmath)", 1e-12)
def r1_near_hard(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..perturb import optimal_nll_change

    ts = [0.0] + [10.0**-k for k in range(12, -1, -2)]
    n_flows = 2 if quick else 8
    worst, cases = 0.0, 0
    for _ in range(n_flows):
        flow = _random_flow(rng, int(rng.integers(2, 9)), rng.uniform(0, 6))
        U, s = flow.eigvecs, flow.eigvals
        base = U[:, 1:] @ (rng.standard_normal(flow.dim - 1) * np.sqrt(s[1:]))  # orthogonal to u_min
        for eps in (1e-3, 1.0) if quick else (1e-6, 1e-3, 1.0, 1e3):
            for t in ts:
                v = base + t * U[:, 0] * np.sqrt(s[0])
                w = U.T @ v
                if t == 0.0:
                    w[0] = 0.0  # exactly orthogonal in the flow's own eigenbasis
                    v = U @ w
                x = flow.mean + v
                w = flow.coords(x)  # the reference solves the problem the function is given (x - mu rounds)
                ref = mp_lower_change(s, w, eps)
                got = optimal_nll_change(flow, x, eps)
                scale = eps * np.linalg.norm(w / s) + eps**2 / s[0]
                worst = max(worst, _rel(got, ref, scale))
                cases += 1
    return worst, cases, "t in {0, 1e-12, ..., 1}; discrepancy relative to eps||Pv|| + eps^2/s_min"


@check("R1", "repeated smallest eigenvalues (k-fold s_min, hard and easy) vs 50-digit bisection", 1e-10)
def r1_repeated(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..model import LinearFlow
    from ..perturb import optimal_nll_change, optimal_perturbation

    n = 6 if quick else 40
    worst, cases = 0.0, 0
    for _ in range(n):
        d = int(rng.integers(2, 9))
        k = int(rng.integers(2, d + 1))
        s = np.sort(10.0 ** rng.uniform(-4, 0, d))
        s[:k] = s[0]
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        flow = LinearFlow((Q * np.sqrt(s)) @ Q.T, rng.standard_normal(d))
        U, sf = flow.eigvecs, flow.eigvals
        for mass in (0.0, 1e-9, 1.0):
            w = rng.standard_normal(d) * np.sqrt(sf)
            w[:k] *= mass
            x = flow.mean + U @ w
            for eps in (1e-3, 1.0, 30.0):
                ref = mp_lower_change(sf, flow.coords(x), eps)
                scale = eps * np.linalg.norm(w / sf) + eps**2 / sf[0]
                worst = max(worst, _rel(optimal_nll_change(flow, x, eps), ref, scale))
                delta = optimal_perturbation(flow, x, eps)
                worst = max(worst, abs(np.linalg.norm(delta) / eps - 1.0))
                cases += 1
    return worst, cases, "block mass 0, 1e-9, 1; eps 1e-3, 1, 30; flows built from A (SVD)"


@check("R2", "secular Newton vs convex SOCP (cvxpy/Clarabel)", 1e-8)
def r2_vs_cvx(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..perturb import optimal_nll_change

    n = 8 if quick else 40
    worst = 0.0
    for _ in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(1, 9 if quick else 21)), rng.uniform(0, 4), (-2, 1))
        v = x - flow.mean
        ref = cvx_raise_change(flow.precision, v, eps)
        got = optimal_nll_change(flow, x, eps, likelihood="increase")
        worst = max(worst, _rel(got, ref, value_scale(flow.precision, v, eps)))
    return worst, n, "d <= 8 (20 full), cond <= 1e4, eps in [1e-2, 10]"


@check("R2", "secular Newton vs 50-digit bisection (mpmath), cond up to 1e8", 1e-12)
def r2_vs_mp(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..perturb import optimal_nll_change

    n = 10 if quick else 100
    worst = 0.0
    for _ in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(1, 21)), rng.uniform(0, 8), (-6, 3))
        w = flow.coords(x)
        s = flow.eigvals
        ref = mp_raise_change(s, w, eps)
        scale = eps * np.linalg.norm(w / s) + eps**2 / s[0]
        worst = max(worst, _rel(optimal_nll_change(flow, x, eps, likelihood="increase"), ref, scale))
    return worst, n, "d <= 20, cond <= 1e8, eps in [1e-6, 1e3]"


@check("R2", "KKT residual: P(v + delta) + lam delta = 0, lam >= 0, lam (eps - ||delta||) = 0, ||delta|| <= eps",
       1e-9)
def r2_kkt(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    r"""R2 ``min_{||delta|| <= eps} dNLL`` is convex, so the KKT conditions are necessary and sufficient. From the
    returned ``delta`` alone: the multiplier ``lam = -delta^T P (v + delta) / ||delta||^2`` (least squares on the
    stationarity ``P (v + delta) + lam delta = 0``; ``lam = 0`` when ``delta = 0``), then the worst of the
    stationarity residual, ``max(0, -lam)`` (sign), ``lam (eps - ||delta||)`` (complementary slackness) and
    ``max(0, ||delta|| / eps - 1)`` (feasibility), each made relative (gradient scale ``||P v|| + ||P|| eps``)."""
    from ..perturb import optimal_perturbation

    n = 40 if quick else 400
    worst, inside, parts = 0.0, 0, np.zeros(4)
    for i in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(1, 21)), rng.uniform(0, 8), (-6, 3))
        if i % 5 == 4:
            eps = float(np.linalg.norm(x - flow.mean)) * rng.uniform(1.0, 3.0)  # the interior case delta = -v
        P = flow.precision
        v = x - flow.mean
        delta = optimal_perturbation(flow, x, eps, likelihood="increase")
        G = P @ (v + delta)
        nd = float(np.linalg.norm(delta))
        lam = -float(delta @ G) / nd**2 if nd > 0 else 0.0
        gscale = float(np.linalg.norm(P @ v) + np.linalg.norm(P, 2) * eps)
        r = np.array([np.linalg.norm(G + lam * delta) / gscale, max(0.0, -lam) * eps / gscale,
                      abs(lam) * max(eps - nd, 0.0) / gscale, max(0.0, nd / eps - 1.0)])
        parts = np.maximum(parts, r)
        inside += nd < eps * (1 - 1e-9)
        worst = max(worst, float(r.max()))
    return worst, n, (f"d <= 20, cond <= 1e8, eps in [1e-6, 1e3] + every 5th inside the ball ({inside} interior); "
                      "worst stationarity {:.1e}, sign {:.1e}, slackness {:.1e}, feasibility {:.1e}".format(*parts))
