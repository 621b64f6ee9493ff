r"""Verification of the L1 / L-infinity attacks (R3) against independent methods.

Reference methods (none calls :mod:`linflow.box`; they work from the precision matrix ``P`` alone):

* :func:`vertex_max` -- the maximum of ``dNLL = delta^T P v + delta^T P delta / 2`` over an explicit list of
  vertices (the ``2d`` vertices ``+-eps e_j`` of the L1 ball, or all ``2^d`` sign vectors of the box built
  with :func:`itertools.product`). The maximum of a convex function over a polytope is at a vertex.
* :func:`face_min` -- the exact minimum of the strictly convex ``dNLL`` over the box or the L1 ball by
  enumerating all ``3^d`` faces: the minimiser lies in the relative interior of one face and minimises
  ``dNLL`` over that face's affine hull (one linear solve); the smallest feasible candidate is the optimum.
* :func:`bvls_min` -- the box minimum by scipy's bounded-variable least squares on ``||W (v + delta)||^2``
  (``W^T W = P``), an independent active-set solver.

Discrepancies are relative to ``eps ||P v||_1 + eps^2 sum|P|`` (the size of the two terms of ``dNLL`` on the
box), so that a value near 0 is not divided by 0.
"""

from __future__ import annotations

import itertools

import numpy as np

from . import check
from .cases import random_case


def _random_case(rng: np.random.Generator, d: int, log10_cond: float, log10_eps: tuple[float, float]):
    return random_case(rng, d, log10_cond, log10_eps, p_at_mean=0.1)


def scale(P: np.ndarray, v: np.ndarray, eps: float) -> float:
    """``eps ||P v||_1 + eps^2 sum_ij |P_ij|``: the size of ``dNLL`` over the box."""
    return float(eps * np.abs(P @ v).sum() + eps**2 * np.abs(P).sum()) + np.finfo(float).tiny


def dnll(P: np.ndarray, v: np.ndarray, D: np.ndarray) -> np.ndarray:
    """``delta^T P v + delta^T P delta / 2`` for the rows of ``D``."""
    D = np.atleast_2d(D)
    return D @ (P @ v) + 0.5 * np.einsum("ij,jk,ik->i", D, P, D)


def vertex_max(P: np.ndarray, v: np.ndarray, eps: float, norm: float) -> float:
    """Max of ``dNLL`` over the vertices of the L1 ball (``2d``) or of the box (``2^d``, itertools)."""
    d = len(v)
    if norm == 1.0:
        verts = eps * np.vstack([np.eye(d), -np.eye(d)])
    else:
        verts = eps * np.array(list(itertools.product((-1.0, 1.0), repeat=d)))
    return float(np.max(dnll(P, v, verts)))


def face_min(P: np.ndarray, v: np.ndarray, eps: float, norm: float) -> float:
    """Exact ``min dNLL`` over the box / L1 ball by enumerating its ``3^d`` faces (d <= 7)."""
    d = len(v)
    g = P @ v
    best = float(dnll(P, v, -v)[0]) if (np.abs(v).max() if norm == np.inf else np.abs(v).sum()) <= eps else np.inf
    for t in itertools.product((-1.0, 0.0, 1.0), repeat=d):
        t = np.array(t)
        S = t != 0
        x = np.zeros(d)
        if norm == np.inf:
            x[S] = eps * t[S]
            F = ~S
            if F.any():
                x[F] = np.linalg.solve(P[np.ix_(F, F)], -g[F] - P[np.ix_(F, S)] @ x[S])
            ok = np.all(np.abs(x) <= eps * (1 + 1e-9))
        else:
            if not S.any():
                continue
            k = int(S.sum())
            K = np.block([[P[np.ix_(S, S)], t[S, None]], [t[None, S], np.zeros((1, 1))]])
            x[S] = np.linalg.solve(K, np.concatenate([-g[S], [eps]]))[:k]
            ok = np.all(t[S] * x[S] >= -1e-12 * eps)
        if ok:
            best = min(best, float(dnll(P, v, x)[0]))
    return best


def bvls_min(flow, v: np.ndarray, eps: float) -> float:
    """``min dNLL`` over the box by scipy's bounded-variable least squares on ``||W (v + delta)||``."""
    from scipy.optimize import lsq_linear

    W = flow.eigvecs.T / np.sqrt(flow.eigvals)[:, None]
    res = lsq_linear(W, -W @ v, bounds=(-eps, eps), method="bvls", tol=1e-14, max_iter=10000)
    return float(dnll(flow.precision, v, np.clip(res.x, -eps, eps))[0])


# ---------------------------------------------------------------------------------------------- checks
@check("R3", "L1 lowering: vertex formula vs all 2d vertices", 1e-11)
def l1_formula_vs_vertices(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..box import perturbation_bounds

    n = 40 if quick else 400
    worst = 0.0
    for _ in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(1, 13)), rng.uniform(0, 6), (-6, 3))
        v = x - flow.mean
        lo, up = perturbation_bounds(flow, x, eps, norm=1)
        ref = vertex_max(flow.precision, v, eps, 1.0)
        worst = max(worst, abs(lo - ref) / scale(flow.precision, v, eps), abs(up - ref) / scale(flow.precision, v, eps))
    return worst, n, "d <= 12, cond <= 1e6, eps in [1e-6, 1e3]; both ends of the interval"


@check("R3", "L-inf lowering: blocked enumeration vs itertools brute force", 1e-11)
def linf_enumeration_vs_bruteforce(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..box import perturbation_bounds

    n = 20 if quick else 200
    worst = 0.0
    for _ in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(1, 9 if quick else 13)), rng.uniform(0, 6), (-6, 3))
        v = x - flow.mean
        lo, up = perturbation_bounds(flow, x, eps, norm=np.inf, exact=True)
        ref = vertex_max(flow.precision, v, eps, np.inf)
        worst = max(worst, abs(lo - ref) / scale(flow.precision, v, eps), abs(up - ref) / scale(flow.precision, v, eps))
    return worst, n, f"d <= {8 if quick else 12}, cond <= 1e6, eps in [1e-6, 1e3]"


@check("R3", "L-inf lowering: SDP rounding <= exact optimum <= SDP bound", 1e-9)
def linf_heuristic_bracket(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..box import certified_perturbation

    n = 12 if quick else 100
    worst, ratios, hits = 0.0, [], 0
    for i in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(2, 13)), rng.uniform(0, 6), (-3, 2))
        v = x - flow.mean
        opt = vertex_max(flow.precision, v, eps, np.inf)
        c = certified_perturbation(flow, x, eps, norm=np.inf, exact=False, seed=i)
        sc = scale(flow.precision, v, eps)
        worst = max(worst, (c.lower - opt) / sc, (opt - c.upper) / sc, 0.0)
        ratios.append(c.upper / opt)
        hits += c.lower >= opt - 1e-12 * sc
    return worst, n, (f"d <= 12, cond <= 1e6; rounding hit the optimum in {hits}/{n}; "
                      f"upper/opt median {np.median(ratios):.4f}, max {np.max(ratios):.4f}")


@check("R3", "L-inf lowering: Nesterov (SDP + c) <= pi/2 (opt + c), c = v^T P v / 2", 1e-6)
def linf_nesterov(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..box import perturbation_bounds

    n = 10 if quick else 80
    worst, ratios = 0.0, []
    for i in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(2, 11)), rng.uniform(0, 6), (-1, 1))
        v = x - flow.mean
        c = 0.5 * v @ flow.precision @ v
        opt = vertex_max(flow.precision, v, eps, np.inf)
        _, up = perturbation_bounds(flow, x, eps, norm=np.inf, exact=False, seed=i)
        ratio = (up + c) / (opt + c)
        ratios.append(ratio)
        worst = max(worst, ratio / (np.pi / 2) - 1.0, 0.0)
    return worst, n, f"ratio (SDP + c)/(opt + c): max {max(ratios):.4f} (pi/2 = 1.5708)"


@check("R3", "raising (L1 and L-inf): convex QP vs 3^d face enumeration", 1e-9)
def raising_vs_faces(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..box import perturbation_bounds

    n = 12 if quick else 120
    worst = 0.0
    for i in range(n):
        norm = 1.0 if i % 2 else np.inf
        flow, x, eps = _random_case(rng, int(rng.integers(1, 6 if quick else 8)), rng.uniform(0, 6), (-3, 1.5))
        v = x - flow.mean
        lo, up = perturbation_bounds(flow, x, eps, norm=norm, likelihood="increase")
        ref = face_min(flow.precision, v, eps, norm)
        sc = scale(flow.precision, v, eps)
        worst = max(worst, abs(up - ref) / sc, (lo - ref) / sc, (ref - up) / sc)
    return worst, n, "d <= 5 (7 full), cond <= 1e6; |achieved - exact| and the interval's validity"


@check("R3", "raising (L-inf): convex QP vs scipy BVLS", 1e-9)
def raising_vs_bvls(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..box import perturbation_bounds

    n = 20 if quick else 200
    worst = 0.0
    for _ in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(2, 31)), rng.uniform(0, 6), (-3, 1.5))
        v = x - flow.mean
        _, up = perturbation_bounds(flow, x, eps, norm=np.inf, likelihood="increase")
        ref = bvls_min(flow, v, eps)
        worst = max(worst, abs(up - ref) / scale(flow.precision, v, eps))
    return worst, n, "d <= 30, cond <= 1e6, eps in [1e-3, 30]"


@check("R3", "certificates: lower <= exact <= upper (all norms and directions, d <= 6)", 1e-10)
def certificates_valid(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..box import perturbation_bounds

    n = 6 if quick else 60
    worst, cases = 0.0, 0
    for _ in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(1, 7)), rng.uniform(0, 6), (-3, 1.5))
        v, P = x - flow.mean, flow.precision
        sc = scale(P, v, eps)
        for norm in (1.0, np.inf):
            for lk, ref in (("decrease", vertex_max(P, v, eps, norm)), ("increase", face_min(P, v, eps, norm))):
                for exact in (None, False):
                    if exact is False and (norm == 1.0 or lk == "increase"):
                        continue
                    lo, up = perturbation_bounds(flow, x, eps, norm=norm, likelihood=lk, exact=exact)
                    worst = max(worst, (lo - ref) / sc, (ref - up) / sc, 0.0)
                    cases += 1
    return worst, cases, "enumeration, SDP rounding, L1 formula, convex QPs"


@check("R3", "L-inf SDP bound: low-rank mixing method vs Clarabel (both certified)", 1e-5)
def sdp_mixing_vs_clarabel(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..box import perturbation_bounds

    n = 6 if quick else 40
    worst = 0.0
    for i in range(n):
        flow, x, eps = _random_case(rng, int(rng.integers(2, 21 if quick else 41)), rng.uniform(0, 4), (-2, 1))
        ups = [perturbation_bounds(flow, x, eps, norm=np.inf, exact=False, seed=i, sdp_solver=s)[1]
               for s in ("MIXING", "CLARABEL")]
        worst = max(worst, abs(ups[0] - ups[1]) / abs(ups[1]))
    return worst, n, f"d <= {20 if quick else 40}, cond <= 1e4; relative difference of the two certified bounds"


def _into_ball(delta: np.ndarray, eps: float, norm: float) -> tuple[np.ndarray, float]:
    """A reference point moved into the ball (L1: scaled; box: clipped) and its relative violation before."""
    size = np.abs(delta).sum() if norm == 1.0 else np.abs(delta).max()
    excess = max(float(size) / eps - 1.0, 0.0)
    if excess > 0:
        delta = delta / (1.0 + excess) if norm == 1.0 else np.clip(delta, -eps, eps)
    return delta, excess


def slsqp_min(P: np.ndarray, v: np.ndarray, eps: float, norm: float) -> tuple[np.ndarray, bool]:
    """``argmin dNLL`` over the L1 ball (split ``delta = p - q``, ``p, q >= 0``, ``sum(p + q) <= eps``) or the box
    (bounds) by scipy's SLSQP with the exact gradient. Returns the raw point (not moved into the ball: the
    caller checks feasibility) and SLSQP's success flag."""
    from scipy.optimize import minimize

    d = len(v)
    k = scale(P, v, eps)
    if norm == 1.0:
        def obj(z: np.ndarray) -> tuple[float, np.ndarray]:
            dd = z[:d] - z[d:]
            gr = P @ (v + dd) / k
            return float(dnll(P, v, dd)[0]) / k, np.concatenate([gr, -gr])

        res = minimize(obj, np.zeros(2 * d), jac=True, method="SLSQP", bounds=[(0, None)] * (2 * d),
                       constraints=[{"type": "ineq", "fun": lambda z: eps - z.sum(), "jac": lambda z: -np.ones(2 * d)}],
                       options={"ftol": 1e-15, "maxiter": 2000})
        return res.x[:d] - res.x[d:], bool(res.success)
    res = minimize(lambda z: (float(dnll(P, v, z)[0]) / k, P @ (v + z) / k), np.zeros(d), jac=True,
                   method="SLSQP", bounds=[(-eps, eps)] * d, options={"ftol": 1e-15, "maxiter": 2000})
    return res.x, bool(res.success)


def scs_min(P: np.ndarray, v: np.ndarray, eps: float, norm: float) -> tuple[np.ndarray | None, str]:
    """``argmin dNLL`` over the L1 ball or the box by cvxpy + SCS (tolerances 1e-10), written on ``delta`` with the
    Cholesky factor of ``P`` (the code under test uses the eigen-factor and Clarabel). Returns the raw point and
    the solver status (the point is ``None`` unless the status is ``optimal``)."""
    import cvxpy as cp

    d = len(v)
    L = np.linalg.cholesky(P)
    k = scale(P, v, eps)
    u = cp.Variable(d)  # delta = eps u
    obj = (eps * (P @ v) @ u + 0.5 * eps**2 * cp.sum_squares(L.T @ u)) / k
    cons = [cp.norm(u, 1) <= 1] if norm == 1.0 else [cp.abs(u) <= 1]
    prob = cp.Problem(cp.Minimize(obj), cons)
    try:
        prob.solve(solver=cp.SCS, eps_abs=1e-10, eps_rel=1e-10, max_iters=200000)
    except cp.SolverError as exc:
        return None, f"error: {exc}"
    return (eps * u.value if prob.status == "optimal" else None), str(prob.status)


def _raising_vs_reference(rng: np.random.Generator, quick: bool, reference: str) -> tuple[float, int, str]:
    from ..box import perturbation_bounds

    n = 12 if quick else 100
    worst, moved, rejected, cases, above = 0.0, 0, 0, 0, 0.0
    for i in range(n):
        norm = 1.0 if i % 2 else np.inf
        flow, x, eps = _random_case(rng, int(rng.integers(2, 13)), rng.uniform(0, 4), (-2, 1))
        v, P = x - flow.mean, flow.precision
        _, up = perturbation_bounds(flow, x, eps, norm=norm, likelihood="increase")
        if reference == "SLSQP":
            raw, ok = slsqp_min(P, v, eps, norm)
        else:
            raw, status = scs_min(P, v, eps, norm)
            ok = raw is not None
        if not ok:
            rejected += 1
            continue
        ref_point, excess = _into_ball(raw, eps, norm)
        moved += excess > 1e-12
        ref = float(dnll(P, v, ref_point)[0])  # a feasible point: the exact optimum can only be lower
        sc = scale(P, v, eps)
        above = max(above, (up - ref) / sc)
        worst = max(worst, abs(up - ref) / sc)
        cases += 1
    return worst, cases, (f"L1 and L-inf alternately, d <= 12, cond <= 1e4; references leaving the ball by > 1e-12 "
                          f"(relative) moved back into it: {moved}; rejected (failed / status not optimal): "
                          f"{rejected}; worst (ours - reference)/scale {above:.1e} (must be <= 0 up to rounding)")


@check("R3", "raising (L1 and L-inf): convex QP vs scipy SLSQP (reference feasibility checked first)", 1e-7)
def raising_vs_slsqp(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    """The R3 raising optimum against SLSQP's point, after that point is checked for feasibility: a point that
    leaves the ball by more than 1e-12 (relative) is moved back into it (L1 scaled, box clipped) and counted,
    and its objective is re-evaluated there; a failed SLSQP run is rejected and counted. The tolerance is SLSQP's
    accuracy (about 1e-8 relative to the scale), not the code's."""
    return _raising_vs_reference(rng, quick, "SLSQP")


@check("R3", "raising (L1 and L-inf): convex QP vs cvxpy/SCS (tol 1e-10, status checked)", 1e-7)
def raising_vs_scs(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    """The R3 raising optimum against SCS (first-order conic solver, a Cholesky formulation on ``delta``); only a
    status ``optimal`` counts, and its point is checked for feasibility like the SLSQP reference."""
    return _raising_vs_reference(rng, quick, "SCS")
