"""Hypothesis generators for linear flows, built the right way: an orthogonal factor times drawn
eigenvalues (the condition number is controlled), never by filtering random matrices. The generators themselves
live in :mod:`linflow.verification.cases` (shared with ``python -m linflow verify``)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from linflow import LinearFlow
from linflow.verification.cases import random_flow, random_orthogonal, spd_eigvals

__all__ = ["flow_point_eps", "flows", "random_flow", "random_orthogonal", "spd_eigvals"]


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
