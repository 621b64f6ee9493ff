"""Hypothesis generators for linear flows, built the right way: an orthogonal factor times drawn
eigenvalues (the condition number is controlled), never by filtering random matrices."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from scipy.stats import ortho_group

from linflow import LinearFlow


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed orthogonal matrix (d = 1 gives +-1)."""
    if d == 1:
        return np.array([[1.0 if rng.random() < 0.5 else -1.0]])
    return ortho_group.rvs(d, random_state=rng)


def spd_eigvals(d: int, cond: float, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """``d`` eigenvalues log-uniform in ``[scale/cond, scale]``, with both ends present (d >= 2)."""
    if d == 1:
        return np.array([scale])
    logs = rng.uniform(-np.log(cond), 0.0, size=d)
    logs[0], logs[1] = 0.0, -np.log(cond)
    return scale * np.exp(logs)


def random_flow(d: int, cond: float, rng: np.random.Generator, scale: float = 1.0) -> LinearFlow:
    """A flow N(mu, U diag(s) U^T) with a random mean, random U and the given condition number."""
    U = random_orthogonal(d, rng)
    s = spd_eigvals(d, cond, rng, scale)
    cov = (U * s) @ U.T
    return LinearFlow.from_gaussian(rng.standard_normal(d), 0.5 * (cov + cov.T))


@st.composite
def flows(draw, min_dim: int = 1, max_dim: int = 20, max_log10_cond: float = 8.0) -> LinearFlow:
    """A random LinearFlow with d in [min_dim, max_dim] and condition number up to 10**max_log10_cond."""
    d = draw(st.integers(min_dim, max_dim))
    log_cond = draw(st.floats(0.0, max_log10_cond))
    log_scale = draw(st.floats(-2.0, 2.0))
    seed = draw(st.integers(0, 2**32 - 1))
    return random_flow(d, 10.0**log_cond, np.random.default_rng(seed), 10.0**log_scale)


@st.composite
def flow_point_eps(draw, min_dim: int = 1, max_dim: int = 20, max_log10_cond: float = 8.0,
                   min_log10_eps: float = -6.0, max_log10_eps: float = 3.0):
    """(flow, x, eps): a flow, a point at a random Mahalanobis distance, and a budget."""
    flow = draw(flows(min_dim, max_dim, max_log10_cond))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    radius = 10.0 ** draw(st.floats(-3.0, 1.0))
    x = flow.mean + radius * flow.A @ rng.standard_normal(flow.dim)
    eps = 10.0 ** draw(st.floats(min_log10_eps, max_log10_eps))
    return flow, x, eps
