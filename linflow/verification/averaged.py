r"""Verification of the universal perturbation (R4) against brute force on the averaged NLL.

R4: ``max_{||delta|| <= eps} mean_i [NLL(x_i + delta) - NLL(x_i)]`` (and the ``min`` for raising) equals the
sample-specific problem at the data mean. The reference here never goes through that reduction: it evaluates the
averaged objective point by point with :meth:`LinearFlow.nll` (the density itself) on a dense grid of the sphere
(lowering; the maximum of a convex function is on the boundary) or of the ball (raising), and polishes the best
grid point by SLSQP on the ball (the analytic gradient only guides the search; every value compared is
``LinearFlow.nll`` at a feasible point). The other checks: the ML-fit closed form ``+-eps u_min``, and the
reduction itself (universal = sample-specific at ``mean(X)``, = mean of the per-row ``dNLL``).
"""

from __future__ import annotations

import numpy as np

from . import check
from .l2 import _random_case, _random_flow, _rel, _sphere_grid, dnll, value_scale


def averaged_change(flow, X: np.ndarray, D: np.ndarray) -> np.ndarray:
    """``mean_i NLL(x_i + delta) - mean_i NLL(x_i)`` for each row ``delta`` of ``D``, by direct evaluation."""
    D = np.atleast_2d(D)
    base = float(np.mean(flow.nll(X)))
    Y = (X[None, :, :] + D[:, None, :]).reshape(-1, X.shape[1])
    return flow.nll(Y).reshape(len(D), len(X)).mean(axis=1) - base


def brute_force_averaged(flow, X: np.ndarray, eps: float, likelihood: str, m: int = 60) -> float:
    """The optimum of the averaged NLL change over the L2 ball (``d <= 3``): dense grid (sphere for lowering,
    sphere times 41 radii for raising), then SLSQP on the ball from the best grid point; the best feasible value."""
    from scipy.optimize import minimize

    d = X.shape[1]
    sign = -1.0 if likelihood == "decrease" else 1.0  # minimise sign * change
    dirs = _sphere_grid(d, m if likelihood == "decrease" else m // 3)
    pts = eps * dirs if likelihood == "decrease" else (eps * np.linspace(0, 1, 41)[:, None, None] * dirs).reshape(-1, d)
    vals = sign * averaged_change(flow, X, pts)
    best = float(vals.min())
    start = pts[int(np.argmin(vals))]
    P, m_mu = flow.precision, X.mean(axis=0) - flow.mean
    res = minimize(lambda z: (sign * float(averaged_change(flow, X, z)[0]), sign * (P @ (m_mu + z))), start,
                   jac=True, method="SLSQP", options={"ftol": 1e-16, "maxiter": 500},
                   constraints=[{"type": "ineq", "fun": lambda z: eps**2 - z @ z, "jac": lambda z: -2 * z}])
    z = res.x if np.linalg.norm(res.x) <= eps else res.x * eps / np.linalg.norm(res.x)
    return sign * min(best, sign * float(averaged_change(flow, X, z)[0]))


@check("R4", "universal vs brute force on the averaged NLL (LinearFlow.nll on a grid + SLSQP, d <= 3)", 1e-8)
def r4_vs_brute_force_average(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    """Data from another Gaussian (so the flow is not the ML fit and ``mean(X) != mu``), both directions; the
    value of ``universal_perturbation``'s delta by direct evaluation and ``universal_nll_change`` both against the
    brute-force optimum; ``||delta|| <= eps`` checked."""
    from ..perturb import universal_nll_change, universal_perturbation

    n = 6 if quick else 30
    worst, behind = 0.0, 0.0
    for i in range(n):
        flow, _, eps = _random_case(rng, 1 + i % 3, rng.uniform(0, 3), (-2, 0.5))
        X = _random_flow(rng, flow.dim, rng.uniform(0, 2)).sample(25, rng) + 0.3 * rng.standard_normal(flow.dim)
        lik = ("decrease", "increase")[(i // 3) % 2]
        delta = universal_perturbation(flow, X, eps, likelihood=lik)
        got = float(averaged_change(flow, X, delta)[0])
        ref = brute_force_averaged(flow, X, eps, lik)
        sc = value_scale(flow.precision, X.mean(axis=0) - flow.mean, eps)
        sign = 1.0 if lik == "decrease" else -1.0
        behind = max(behind, sign * (ref - got) / sc)  # > 0: brute force found a better point than the code
        worst = max(worst, _rel(got, ref, sc), _rel(universal_nll_change(flow, X, eps, likelihood=lik), ref, sc),
                    max(np.linalg.norm(delta) / eps - 1.0, 0.0))
    return worst, n, f"d = 1, 2, 3, n = 25 rows, both directions; brute force ahead of the code by {behind:.1e}"


@check("R4", "universal for an ML fit = +-eps u_min, mean rise eps^2/(2 s_min)", 1e-9)
def r4_ml_fit(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..model import LinearFlow
    from ..perturb import universal_nll_change, universal_perturbation

    n = 5 if quick else 30
    worst = 0.0
    for _ in range(n):
        d = int(rng.integers(1, 16))
        X = _random_flow(rng, d, rng.uniform(0, 6)).sample(4 * d + 10, rng)
        flow = LinearFlow.fit(X)
        eps = 10.0 ** rng.uniform(-3, 1)
        delta = universal_perturbation(flow, X, eps)
        rise = eps**2 / (2 * flow.eigvals[0])
        align = abs(abs(delta @ flow.eigvecs[:, 0]) / eps - 1.0)
        val = abs(universal_nll_change(flow, X, eps) / rise - 1.0)
        worst = max(worst, align, val)
    return worst, n, "max of | |<delta, u_min>|/eps - 1 | and the relative value error"


@check("R4", "universal = sample-specific at mean(X), and = mean of per-row dNLL (matrix formula)", 1e-9)
def r4_mean_reduction(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
    from ..perturb import optimal_nll_change, universal_nll_change, universal_perturbation

    n = 6 if quick else 40
    worst = 0.0
    for i in range(n):
        flow, _, eps = _random_case(rng, int(rng.integers(1, 13)), rng.uniform(0, 5), (-3, 1))
        X = flow.sample(30, rng) + rng.standard_normal(flow.dim)
        lik = ("decrease", "increase")[i % 2]
        delta = universal_perturbation(flow, X, eps, likelihood=lik)
        val = universal_nll_change(flow, X, eps, likelihood=lik)
        m = X.mean(axis=0)
        P = flow.precision
        mean_direct = float(np.mean([dnll(P, x - flow.mean, delta)[0] for x in X]))
        scale = value_scale(P, m - flow.mean, eps)
        worst = max(worst, _rel(val, optimal_nll_change(flow, m, eps, likelihood=lik), scale),
                    _rel(val, mean_direct, scale))
    return worst, n, "both likelihood directions"
