"""Shared case generators for ``python -m linflow verify`` and the tests (``tests/strategies.py``).

Flows are built the right way: an orthogonal factor times drawn eigenvalues, so that the condition number is
controlled (never by filtering random matrices). Points are drawn at a chosen Mahalanobis radius, at the mean
(``v = 0``, the R1 hard case), or near the hard case (``v`` almost orthogonal to the smallest-variance
eigenvector ``u_min``).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import ortho_group

from ..model import LinearFlow


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed orthogonal ``d x d`` matrix (``d = 1`` gives ``+-1``)."""
    if d == 1:
        return np.array([[1.0 if rng.random() < 0.5 else -1.0]])
    return ortho_group.rvs(d, random_state=rng)


def spd_eigvals(d: int, cond: float, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """``d`` eigenvalues log-uniform in ``[scale/cond, scale]``, with both ends present (``d >= 2``)."""
    if d == 1:
        return np.array([scale])
    logs = rng.uniform(-np.log(cond), 0.0, size=d)
    logs[0], logs[1] = 0.0, -np.log(cond)
    return scale * np.exp(logs)


def random_spd(d: int, cond: float, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """``U diag(s) U^T`` (symmetrised) with Haar ``U`` and :func:`spd_eigvals` ``s``: condition number ``cond``."""
    U = random_orthogonal(d, rng)
    cov = (U * spd_eigvals(d, cond, rng, scale)) @ U.T
    return 0.5 * (cov + cov.T)


def random_flow(d: int, cond: float, rng: np.random.Generator, scale: float = 1.0) -> LinearFlow:
    """A flow ``N(mu, random_spd(d, cond, rng, scale))`` with a standard normal mean ``mu``."""
    cov = random_spd(d, cond, rng, scale)
    return LinearFlow.from_gaussian(rng.standard_normal(d), cov)


def point_at_radius(flow: LinearFlow, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A point at Mahalanobis distance exactly ``radius`` from the mean, in a uniformly random direction."""
    z = rng.standard_normal(flow.dim)
    return flow.mean + radius * flow.A @ (z / np.linalg.norm(z))


def near_hard_point(flow: LinearFlow, t: float, rng: np.random.Generator) -> np.ndarray:
    """``mu + base + t sqrt(s_min) u_min`` with ``base`` orthogonal to ``u_min`` (``t = 0``: exactly the R1 hard
    case in the flow's eigenbasis, up to the rounding of ``mu + v``)."""
    U, s = flow.eigvecs, flow.eigvals
    w = rng.standard_normal(flow.dim) * np.sqrt(s)
    w[0] = t * np.sqrt(s[0])
    return flow.mean + U @ w


def random_case(rng: np.random.Generator, d: int, log10_cond: float, log10_eps: tuple[float, float],
                *, log10_scale: tuple[float, float] = (0.0, 0.0), p_at_mean: float = 0.0
                ) -> tuple[LinearFlow, np.ndarray, float]:
    """``(flow, x, eps)``: a :func:`random_flow` (condition ``10**log10_cond``, scale log-uniform in
    ``10**log10_scale``), a point ``mu + r A z`` with ``r`` log-uniform in ``[1e-2, 10]`` (the mean itself with
    probability ``p_at_mean``) and ``eps`` log-uniform in ``10**log10_eps``."""
    flow = random_flow(d, 10.0**log10_cond, rng, 10.0 ** rng.uniform(*log10_scale))
    x = flow.mean + 10.0 ** rng.uniform(-2, 1) * flow.A @ rng.standard_normal(d)
    if p_at_mean > 0 and rng.random() < p_at_mean:
        x = flow.mean.copy()
    return flow, x, float(10.0 ** rng.uniform(*log10_eps))
