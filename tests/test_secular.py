"""The batched trust-region kernel linflow.secular (R1, R2) in eigen-coordinates.

The reference is an independent 50-digit bisection on the secular equation (mpmath,
linflow.verification.l2.mp_lower_change / mp_raise_change), which decides the hard case exactly; values are
compared relative to the value scale eps ||diag(1/s) w|| + eps^2 / s_min (the size of the two terms of dNLL).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linflow.secular import block_size, lower_likelihood, raise_likelihood
from linflow.verification.l2 import mp_lower_change, mp_raise_change


@st.composite
def spectra_and_points(draw, max_dim: int = 20):
    """(s ascending, W (4, d), eps): cond up to 1e8, optional k-fold repeated s_min and a nearly repeated one
    (so that lumping eigenvalues that are not equal would be caught), rows with full, tiny
    (10^-30..1), zero and wildly scaled mass on the s_min block; eps in [1e-6, 1e3]."""
    d = draw(st.integers(1, max_dim))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    log_cond = draw(st.floats(0.0, 8.0))
    s = np.sort(10.0 ** rng.uniform(-log_cond, 0.0, d)) * 10.0 ** draw(st.floats(-2.0, 2.0))
    k = draw(st.integers(1, d)) if draw(st.booleans()) else 1
    s[:k] = s[0]
    if d > k and draw(st.booleans()):  # a nearly repeated s_min, 1e-14 .. 1e-2 relative above it
        s[k] = s[0] * (1.0 + 10.0 ** draw(st.floats(-14.0, -2.0)))
        s = np.sort(s)
    W = rng.standard_normal((4, d)) * np.sqrt(s) * 10.0 ** draw(st.floats(-3.0, 1.0))
    W[1, :k] *= 10.0 ** draw(st.floats(-30.0, 0.0))
    W[2, :k] = 0.0
    W[3] *= 10.0 ** rng.uniform(-4, 4, d)
    eps = 10.0 ** draw(st.floats(-6.0, 3.0))
    return s, W, eps


def _value(s: np.ndarray, W: np.ndarray, C: np.ndarray) -> np.ndarray:
    """dNLL in eigen-coordinates: sum_i c_i w_i / s_i + c_i^2 / (2 s_i)."""
    return np.sum(C * W / s + 0.5 * C * C / s, axis=1)


def _scale(s: np.ndarray, W: np.ndarray, eps: float) -> np.ndarray:
    return eps * np.linalg.norm(W / s, axis=1) + eps**2 / s[0]


@given(spectra_and_points())
@settings(max_examples=30)
def test_lower_matches_multiprecision_and_is_feasible(case):
    """R1: ||c|| = eps to 1e-14 relative (the final rescaling), value = 50-digit reference to 1e-12 of the
    value scale (the kernel is accurate to a few ulps of each term; 1e-12 leaves room for d = 20 sums and
    the 1e-12 relative lumping of the s_min block). Newton needs few iterations: at most 40 (17 seen)."""
    s, W, eps = case
    sol = lower_likelihood(s, W, eps)
    norms = np.linalg.norm(sol.C, axis=1)
    np.testing.assert_allclose(norms, eps, rtol=1e-14)
    assert sol.iterations <= 40
    assert np.all(sol.gap >= 0) and np.all(sol.eta >= 1 / s[0])
    vals = _value(s, W, sol.C)
    ref = np.array([mp_lower_change(s, w, eps) for w in W])
    assert np.all(np.abs(vals - ref) <= 1e-12 * _scale(s, W, eps))


@given(spectra_and_points())
@settings(max_examples=30)
def test_raise_matches_multiprecision_and_is_feasible(case):
    """R2: ||c|| <= eps (1 + 1e-14), = eps unless interior; value = 50-digit reference to 1e-12 of the scale."""
    s, W, eps = case
    sol = raise_likelihood(s, W, eps)
    norms = np.linalg.norm(sol.C, axis=1)
    inside = np.linalg.norm(W, axis=1) <= eps
    np.testing.assert_array_equal(sol.hard, inside)
    assert np.all(norms <= eps * (1 + 1e-14))
    np.testing.assert_allclose(norms[~inside], eps, rtol=1e-14)
    np.testing.assert_array_equal(sol.C[inside], -W[inside])
    assert sol.iterations <= 40
    ref = np.array([mp_raise_change(s, w, eps) for w in W])
    assert np.all(np.abs(_value(s, W, sol.C) - ref) <= 1e-12 * _scale(s, W, eps))


@given(spectra_and_points(max_dim=12))
@settings(max_examples=30)
def test_optimality_conditions_in_eigenbasis(case):
    """R1 KKT, coordinate-wise: (eta - 1/s_i) c_i = w_i / s_i with eta = 1/s_min + g; R2: (eta + 1/s_i) c_i =
    -w_i / s_i. Residuals relative to |w_i / s_i| + eta |c_i| (both sides' size): 1e-13 (a few ulps)."""
    s, W, eps = case
    p = 1 / s
    lo = lower_likelihood(s, W, eps)
    gaps = (s - s[0]) / (s * s[0])
    gaps[: block_size(s)] = 0.0
    res = (lo.gap[:, None] + gaps) * lo.C - W * p
    assert np.all(np.abs(res) <= 1e-13 * (np.abs(W * p) + (lo.gap[:, None] + gaps) * np.abs(lo.C)) + 1e-300)
    up = raise_likelihood(s, W, eps)
    res = (up.eta[:, None] + p) * up.C + W * p
    out = ~up.hard
    assert np.all(np.abs(res[out]) <= 1e-13 * (np.abs(W * p) + (up.eta[:, None] + p) * np.abs(up.C))[out])


# ------------------------------------------------------------------------------------- hard and near-hard
def test_hard_case_sign_convention_and_block():
    """Hard case (no mass on a 3-fold s_min block): g = 0, the norm is filled on the FIRST block coordinate with
    a non-negative coefficient; the other block coordinates stay 0. w = 0 gives c = eps e_0."""
    s = np.array([0.5, 0.5, 0.5, 2.0, 8.0])
    W = np.array([[0.0, 0.0, 0.0, 0.3, -0.2], [0.0] * 5])
    sol = lower_likelihood(s, W, 1.0)
    assert sol.hard.tolist() == [True, True]
    assert np.all(sol.gap == 0.0) and np.all(sol.eta == 2.0)
    # off the block: c_i = (w_i / s_i) / (1/s_min - 1/s_i), computed here by hand
    c3 = (0.3 / 2.0) / (2.0 - 0.5)
    c4 = (-0.2 / 8.0) / (2.0 - 0.125)
    np.testing.assert_allclose(sol.C[0], [np.sqrt(1 - c3**2 - c4**2), 0, 0, c3, c4], rtol=1e-15)
    np.testing.assert_array_equal(sol.C[1], [1.0, 0, 0, 0, 0])
    assert block_size(s) == 3


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_near_hard_sweep_converges_to_hard_solution(sign):
    """y = base + t u_min, t in {1e-12, ..., 1}: the value agrees with the 50-digit reference to 1e-12 of the
    scale at every t, and as t -> 0 the solution tends to the hard-case solution with the block coordinate's
    sign following w's (sign * t > 0): ||c(t) - c_hard|| = O(t) (checked <= 1e-3 eps at t <= 1e-8)."""
    rng = np.random.default_rng(11)
    s = np.sort(10.0 ** rng.uniform(-6, 0, 8))
    base = rng.standard_normal(8) * np.sqrt(s) * 1e-3
    base[0] = 0.0
    eps = 0.5
    hard = lower_likelihood(s, base[None], eps)
    assert hard.hard[0]
    c_hard = hard.C[0] * np.array([sign] + [1.0] * 7)
    for k in range(12, -1, -2):
        w = base.copy()
        w[0] = sign * 10.0**-k * np.sqrt(s[0])
        sol = lower_likelihood(s, w[None], eps)
        assert not sol.hard[0]
        ref = mp_lower_change(s, w, eps)
        assert abs(_value(s, w[None], sol.C)[0] - ref) <= 1e-12 * _scale(s, w[None], eps)[0]
        if k >= 8:
            assert np.linalg.norm(sol.C[0] - c_hard) <= 1e-3 * eps


def test_extreme_scales_do_not_overflow():
    """Huge and tiny coordinates (|w| ~ 1e200 and 1e-300) with s down to 1e-8: finite c with norm eps."""
    s = np.array([1e-8, 1e-3, 1.0])
    W = np.array([[1e200, -1e200, 1e200], [1e-300, 0.0, 1e-300], [0.0, 1e200, 0.0]])
    for eps in (1e-6, 1e3):
        for sol in (lower_likelihood(s, W, eps), raise_likelihood(s, W, eps)):
            assert np.all(np.isfinite(sol.C))
        np.testing.assert_allclose(np.linalg.norm(lower_likelihood(s, W, eps).C, axis=1), eps, rtol=1e-14)


def test_eps_zero_and_d1():
    s = np.array([2.0])
    W = np.array([[3.0], [-1.0], [0.0]])
    assert np.all(lower_likelihood(s, W, 0.0).C == 0) and np.all(raise_likelihood(s, W, 0.0).C == 0)
    np.testing.assert_allclose(lower_likelihood(s, W, 0.5).C[:, 0], [0.5, -0.5, 0.5])
    np.testing.assert_allclose(raise_likelihood(s, W, 0.5).C[:, 0], [-0.5, 0.5, 0.0])


def test_bad_input():
    s = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match="ascending"):
        lower_likelihood(np.array([2.0, 1.0]), np.ones((1, 2)), 1.0)
    with pytest.raises(ValueError, match="positive"):
        raise_likelihood(np.array([0.0, 1.0]), np.ones((1, 2)), 1.0)
    with pytest.raises(ValueError, match="W"):
        lower_likelihood(s, np.ones((1, 3)), 1.0)
    with pytest.raises(ValueError, match="W"):
        lower_likelihood(s, np.ones(2), 1.0)
    with pytest.raises(ValueError, match="W"):
        lower_likelihood(s, np.array([[np.nan, 1.0]]), 1.0)
    with pytest.raises(ValueError, match="eps"):
        raise_likelihood(s, np.ones((1, 2)), -1.0)
    with pytest.raises(TypeError, match="s"):
        lower_likelihood(np.array(["a", "b"]), np.ones((1, 2)), 1.0)


def test_secular_root_any_start_and_block_size():
    """secular_root reaches the same root (to 8 ulp) from a first guess left of it, right of it (the Newton
    point of a right guess is a lower bound, by concavity) or at the bracket ends; block_size lumps only
    eigenvalues within 1e-12 (relative) of s_min."""
    from linflow.secular import secular_root

    rng = np.random.default_rng(15)
    gaps = np.sort(rng.uniform(0.0, 5.0, 6))
    gaps[0] = 0.0
    A = rng.standard_normal((5, 6))
    eps = 0.3
    hi = np.linalg.norm(A, axis=1) / eps
    lo = np.abs(A[:, 0]) / eps
    ref, _ = secular_root(A, gaps, eps, lo, hi)
    for start in (lo, hi, 0.5 * (lo + hi), 0.999 * ref, 1.001 * ref):
        g, _ = secular_root(A, gaps, eps, lo, hi, start=start)
        np.testing.assert_allclose(g, ref, rtol=8 * np.finfo(float).eps)
    # and it is the root: ||a / (g + gaps)|| = eps
    np.testing.assert_allclose(np.linalg.norm(A / (ref[:, None] + gaps), axis=1), eps, rtol=1e-14)
    assert block_size(np.array([1.0, 1.0 + 1e-13, 1.0 + 1e-11, 2.0])) == 2
    assert block_size(np.array([3.0])) == 1
