"""The public L2 attacks of linflow.perturb (R1, R2, R4) against independent methods.

Independent references: cvxpy (the S-lemma SDP for R1, a convex QCQP for R2), brute force on the sphere (d <= 3),
random feasible perturbations, and the optimality conditions checked with the flow's *precision matrix* (not the
eigen-coordinates the solver uses). Tolerances are relative to the natural scale of each quantity and stated in
each test's docstring.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linflow import (
    LinearFlow,
    nll_change,
    optimal_nll_change,
    optimal_perturbation,
    universal_nll_change,
    universal_perturbation,
)
from linflow.verification.l2 import brute_force_lower_change, cvx_raise_change, mp_lower_change, sdp_lower_change

from .strategies import flow_point_eps, random_flow


def _value_scale(flow: LinearFlow, x: np.ndarray, eps: float) -> float:
    """The scale of dNLL at (x, eps): |delta^T P v| + delta^T P delta <= eps ||P v|| + eps^2 / s_min."""
    v = x - flow.mean
    return eps * np.linalg.norm(flow.precision @ v) + eps**2 / flow.eigvals[0]


# ---------------------------------------------------------------------------------------------- feasibility, KKT
@given(flow_point_eps())
def test_lowering_is_feasible_and_satisfies_kkt(case):
    """R1 optimality: ||delta|| = eps (to 1e-12), eta >= 1/s_min and (eta I - P) delta = P v.

    eta is recovered from the *matrix* equation by least squares on delta (eta = delta^T (P delta + P v) / eps^2),
    and the residual is measured relative to ||P v|| + eta eps (the size of the two sides' terms): 1e-9 allows
    for the conditioning of P (up to 1e8) times rounding in forming P itself.
    """
    flow, x, eps = case
    delta = optimal_perturbation(flow, x, eps)
    assert delta.shape == x.shape
    assert np.linalg.norm(delta) <= eps * (1 + 1e-12)
    assert np.linalg.norm(delta) >= eps * (1 - 1e-12)  # the constraint is active for a convex objective
    P = flow.precision
    Pv = P @ (x - flow.mean)
    eta = delta @ (P @ delta + Pv) / eps**2
    # second order: eta >= p_max = 1/s_min (relative slack for rounding)
    assert eta >= (1.0 / flow.eigvals[0]) * (1 - 1e-9)
    resid = eta * delta - P @ delta - Pv
    scale = np.linalg.norm(Pv) + eta * eps
    assert np.linalg.norm(resid) <= 1e-8 * scale


@given(flow_point_eps())
def test_raising_is_feasible_and_satisfies_kkt(case):
    """R2 optimality: ||delta|| <= eps, (P + eta I) delta = -P v with eta >= 0 and eta (||delta|| - eps) = 0.

    Interior case (||v|| <= eps): delta = -v to rounding. Residual relative to ||P v|| + eta eps as in R1.
    """
    flow, x, eps = case
    delta = optimal_perturbation(flow, x, eps, likelihood="increase")
    v = x - flow.mean
    assert np.linalg.norm(delta) <= eps * (1 + 1e-12)
    if np.linalg.norm(v) <= eps * (1 - 1e-9):
        np.testing.assert_allclose(delta, -v, atol=1e-12 * np.linalg.norm(v))
        return
    P = flow.precision
    Pv = P @ v
    eta = -delta @ (P @ delta + Pv) / eps**2
    assert eta >= -1e-9 * np.linalg.norm(Pv) / eps
    assert np.linalg.norm(delta) >= eps * (1 - 1e-12)
    resid = P @ delta + eta * delta + Pv
    assert np.linalg.norm(resid) <= 1e-8 * (np.linalg.norm(Pv) + abs(eta) * eps)


@given(flow_point_eps(max_dim=12), st.integers(0, 2**32 - 1))
def test_value_beats_random_feasible_perturbations(case, seed):
    """The optimum is >= (R1) / <= (R2) dNLL of 200 random perturbations on the sphere and inside the ball.

    Slack 1e-10 of the value scale eps ||P v|| + eps^2 / s_min (rounding in the dNLL formula).
    """
    flow, x, eps = case
    rng = np.random.default_rng(seed)
    R = rng.standard_normal((200, flow.dim))
    R *= eps / np.linalg.norm(R, axis=1, keepdims=True)
    R[100:] *= rng.random((100, 1))
    X = np.broadcast_to(x, R.shape)
    rand = nll_change(flow, X, R)
    scale = _value_scale(flow, x, eps)
    assert optimal_nll_change(flow, x, eps) >= rand.max() - 1e-10 * scale
    assert optimal_nll_change(flow, x, eps, likelihood="increase") <= rand.min() + 1e-10 * scale


# ----------------------------------------------------------------------------------- independent solvers
@given(flow_point_eps(min_dim=1, max_dim=3, max_log10_cond=3.0, min_log10_eps=-2.0, max_log10_eps=1.0))
@settings(max_examples=20)
def test_lowering_matches_brute_force_on_sphere(case):
    """R1 value = the best of a dense sphere grid polished by Nelder-Mead (d <= 3), to 1e-7 of the value scale
    (the polish reaches ~1e-10; the grid alone is O(h^2) = 1e-5 below). The grid never beats the solver."""
    flow, x, eps = case
    best = optimal_nll_change(flow, x, eps)
    ref = brute_force_lower_change(flow.precision, x - flow.mean, eps)
    scale = _value_scale(flow, x, eps)
    assert ref <= best + 1e-12 * scale
    assert abs(ref - best) <= 1e-7 * scale


@given(flow_point_eps(min_dim=1, max_dim=8, max_log10_cond=4.0, min_log10_eps=-2.0, max_log10_eps=1.0))
@settings(max_examples=10)
def test_lowering_matches_s_lemma_sdp(case):
    """R1 value = the S-lemma SDP (exact relaxation, cvxpy + Clarabel at 1e-10 tolerances) to 1e-8 of the value
    scale: interior-point accuracy on a problem scaled to O(1), for cond <= 1e4 (agreement seen: ~1e-12)."""
    flow, x, eps = case
    ref = sdp_lower_change(flow.precision, x - flow.mean, eps)
    assert abs(optimal_nll_change(flow, x, eps) - ref) <= 1e-8 * _value_scale(flow, x, eps)


@given(flow_point_eps(min_dim=1, max_dim=12, max_log10_cond=4.0, min_log10_eps=-2.0, max_log10_eps=1.0))
@settings(max_examples=10)
def test_raising_matches_convex_solve(case):
    """R2 value = a convex SOCP in cvxpy (Clarabel, 1e-10 tolerances) to 1e-8 of the value scale."""
    flow, x, eps = case
    ref = cvx_raise_change(flow.precision, x - flow.mean, eps)
    got = optimal_nll_change(flow, x, eps, likelihood="increase")
    assert abs(got - ref) <= 1e-8 * _value_scale(flow, x, eps)


# ------------------------------------------------------------------------------------------- special cases
def test_point_at_mean_is_hard_case_plus_eps_umin():
    """v = 0: delta = +eps u_min (sign convention: non-negative coefficient on u_min), dNLL = eps^2/(2 s_min)."""
    rng = np.random.default_rng(3)
    flow = random_flow(6, 1e3, rng)
    eps = 0.7
    delta = optimal_perturbation(flow, flow.mean, eps)
    np.testing.assert_allclose(delta, eps * flow.eigvecs[:, 0], atol=1e-14)
    val = optimal_nll_change(flow, flow.mean, eps)
    assert val == pytest.approx(eps**2 / (2 * flow.eigvals[0]), rel=1e-13)
    np.testing.assert_allclose(optimal_perturbation(flow, flow.mean, eps, likelihood="increase"), 0.0)


@pytest.mark.parametrize("log10_cond", [0.0, 3.0, 8.0])
def test_near_hard_sweep_public(log10_cond):
    """y = base + t sqrt(s_min) u_min with base orthogonal to u_min, t in {0, 1e-12, ..., 1}, eps in {1e-6, 1e-2,
    1, 1e3}: feasible to 1e-12, value = 50-digit bisection on the flow's own spectrum to 1e-12 of the value
    scale (a few ulps per term), KKT residual with the precision matrix <= 1e-8 (cond(P) times rounding)."""
    rng = np.random.default_rng(12)
    flow = random_flow(10, 10.0**log10_cond, rng)
    U, s = flow.eigvecs, flow.eigvals
    base = flow.mean + U[:, 1:] @ (rng.standard_normal(9) * np.sqrt(s[1:]))
    P = flow.precision
    for eps in (1e-6, 1e-2, 1.0, 1e3):
        for t in [0.0] + [10.0**-k for k in range(12, -1, -2)]:
            x = base + t * np.sqrt(s[0]) * U[:, 0]
            delta = optimal_perturbation(flow, x, eps)
            assert np.linalg.norm(delta) <= eps * (1 + 1e-12)
            ref = mp_lower_change(s, flow.coords(x), eps)
            assert abs(optimal_nll_change(flow, x, eps) - ref) <= 1e-12 * _value_scale(flow, x, eps)
            Pv = P @ (x - flow.mean)
            eta = delta @ (P @ delta + Pv) / eps**2
            assert eta * s[0] >= 1 - 1e-9
            assert np.linalg.norm(eta * delta - P @ delta - Pv) <= 1e-8 * (np.linalg.norm(Pv) + eta * eps)


def test_repeated_smallest_eigenvalues():
    """A 3-fold s_min (flow built from A: the SVD gives the tie to rounding). At the mean every unit vector of
    the s_min eigenspace is optimal: delta lies in it (P delta = delta / s_min to 1e-10) and the rise is
    eps^2 / (2 s_min); with mass on the block or off it, values match the 50-digit bisection to 1e-12."""
    rng = np.random.default_rng(13)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    s = np.array([0.01, 0.01, 0.01, 0.5, 1.0, 3.0])
    flow = LinearFlow((Q * np.sqrt(s)) @ Q.T, rng.standard_normal(6))
    eps = 0.3
    delta = optimal_perturbation(flow, flow.mean, eps)
    assert np.linalg.norm(delta) == pytest.approx(eps, rel=1e-14)
    np.testing.assert_allclose(flow.precision @ delta, delta / 0.01, atol=1e-10 * eps / 0.01)
    assert optimal_nll_change(flow, flow.mean, eps) == pytest.approx(eps**2 / (2 * 0.01), rel=1e-12)
    for block_mass in (0.0, 1e-10, 1.0):
        w = rng.standard_normal(6)
        w[:3] *= block_mass
        x = flow.mean + flow.eigvecs @ w
        ref = mp_lower_change(flow.eigvals, flow.coords(x), eps)
        assert abs(optimal_nll_change(flow, x, eps) - ref) <= 1e-12 * _value_scale(flow, x, eps)


def test_box_norms_dispatch(monkeypatch):
    """norm 1 / inf go to linflow.box.solve_box with (flow, V = x - mu, eps, norm, likelihood, **options); when
    linflow.box is missing, NotImplementedError."""
    import linflow.perturb as perturb

    rng = np.random.default_rng(14)
    flow = random_flow(4, 10.0, rng)
    X = flow.sample(3, rng)
    calls = []

    def fake_solve_box(flow_, V, eps, *, norm, likelihood, **options):
        calls.append((V.copy(), eps, norm, likelihood, options))
        return np.full_like(V, eps / V.shape[1])

    import linflow.box

    monkeypatch.setattr(linflow.box, "solve_box", fake_solve_box)
    D = optimal_perturbation(flow, X, 0.5, norm="linf", likelihood="increase", seed=3)
    np.testing.assert_allclose(D, 0.125)
    V, eps, norm, lik, opts = calls[-1]
    np.testing.assert_allclose(V, X - flow.mean)
    assert (eps, norm, lik, opts) == (0.5, np.inf, "increase", {"seed": 3})
    val = optimal_nll_change(flow, X[0], 0.5, norm=1)
    assert val == pytest.approx(nll_change(flow, X[0], np.full(4, 0.125)), rel=1e-12)
    monkeypatch.setattr(perturb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(NotImplementedError):
        optimal_perturbation(flow, X, 0.5, norm=1)


def test_eps_zero_and_d1():
    """eps = 0 gives zeros (both directions); d = 1: delta = eps sign(v) (lowering), the exact 1-D optimum."""
    rng = np.random.default_rng(4)
    flow = random_flow(5, 10.0, rng)
    X = flow.sample(4, rng)
    assert np.all(optimal_perturbation(flow, X, 0.0) == 0.0)
    assert np.all(optimal_nll_change(flow, X, 0.0, likelihood="increase") == 0.0)
    f1 = LinearFlow(np.array([[2.0]]), np.array([1.0]))
    for x, eps in [(3.0, 0.5), (-1.0, 2.0), (1.0, 0.25)]:
        # away from the mean: push away from it; at the mean (hard case): +eps along the eigenvector u_min
        expected = eps * np.sign(x - 1.0) if x != 1.0 else eps * f1.eigvecs[0, 0]
        d = optimal_perturbation(f1, np.array([x]), eps)
        assert d[0] == pytest.approx(expected, rel=1e-15)
        up = optimal_perturbation(f1, np.array([x]), eps, likelihood="increase")
        assert up[0] == pytest.approx(-np.sign(x - 1.0) * min(eps, abs(x - 1.0)), rel=1e-15, abs=1e-300)


def test_universal_ml_fit_is_eps_umin():
    """R4: for an ML fit the universal attack is +-eps u_min and raises the mean NLL by eps^2 / (2 s_min).

    The mean NLL rise is also checked directly: mean over rows of nll_change (no solver formula).
    """
    rng = np.random.default_rng(5)
    truth = random_flow(8, 1e4, rng)
    X = truth.sample(200, rng)
    flow = LinearFlow.fit(X)
    eps = 0.3
    delta = universal_perturbation(flow, X, eps)
    assert delta.shape == (8,)
    assert abs(delta @ flow.eigvecs[:, 0]) == pytest.approx(eps, rel=1e-9)
    rise = eps**2 / (2 * flow.eigvals[0])
    assert universal_nll_change(flow, X, eps) == pytest.approx(rise, rel=1e-9)
    assert np.mean(nll_change(flow, X, delta)) == pytest.approx(rise, rel=1e-7)


def test_universal_equals_sample_specific_at_mean():
    """R4: universal(X) = optimal_perturbation at mean(X) for a flow that is not the ML fit; and the mean of
    the per-row changes equals the universal optimum, which beats random unit directions."""
    rng = np.random.default_rng(6)
    flow = random_flow(7, 1e3, rng)
    X = flow.sample(50, rng) + 0.5
    for lik in ("decrease", "increase"):
        u = universal_perturbation(flow, X, 0.4, likelihood=lik)
        np.testing.assert_allclose(u, optimal_perturbation(flow, X.mean(0), 0.4, likelihood=lik), atol=1e-14)
        val = universal_nll_change(flow, X, 0.4, likelihood=lik)
        assert np.mean(nll_change(flow, X, u)) == pytest.approx(val, rel=1e-10)
        # ... and beats 2000 random directions on the sphere (and 2000 random points inside the ball for raising)
        dirs = rng.standard_normal((2000, 7))
        dirs *= 0.4 / np.linalg.norm(dirs, axis=1, keepdims=True)
        cands = np.vstack([dirs, dirs * rng.uniform(0, 1, (2000, 1)) ** (1 / 7)])
        rand = np.array([np.mean(nll_change(flow, X, c)) for c in cands])
        sign = 1.0 if lik == "decrease" else -1.0  # decrease likelihood: maximise the mean NLL change
        assert np.all(sign * rand <= sign * val + 1e-12 * abs(val))


def test_batch_matches_single_points():
    rng = np.random.default_rng(7)
    flow = random_flow(9, 1e5, rng)
    X = flow.sample(6, rng)
    D = optimal_perturbation(flow, X, 0.2)
    for i in range(6):
        np.testing.assert_allclose(D[i], optimal_perturbation(flow, X[i], 0.2), rtol=1e-13, atol=1e-16)
    vals = optimal_nll_change(flow, X, 0.2)
    np.testing.assert_allclose(vals, nll_change(flow, X, D), rtol=1e-12)


def test_nll_change_matches_difference_of_nlls():
    """nll_change agrees with NLL(x + delta) - NLL(x) where the subtraction is harmless (moderate NLL)."""
    rng = np.random.default_rng(8)
    flow = random_flow(5, 10.0, rng)
    X = flow.sample(5, rng)
    D = rng.standard_normal((5, 5))
    np.testing.assert_allclose(nll_change(flow, X, D), flow.nll(X + D) - flow.nll(X), rtol=1e-10)
    np.testing.assert_allclose(nll_change(flow, X, D[0]), flow.nll(X + D[0]) - flow.nll(X), rtol=1e-10)


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_input():
    rng = np.random.default_rng(9)
    flow = random_flow(3, 10.0, rng)
    x = flow.mean + 1.0
    with pytest.raises(ValueError, match="eps"):
        optimal_perturbation(flow, x, -1.0)
    with pytest.raises(ValueError, match="eps"):
        optimal_perturbation(flow, x, np.nan)
    with pytest.raises(TypeError, match="eps"):
        optimal_perturbation(flow, x, "1")
    with pytest.raises(ValueError, match="x"):
        optimal_perturbation(flow, np.array([1.0, np.inf, 0.0]), 1.0)
    with pytest.raises(ValueError, match="x"):
        optimal_perturbation(flow, np.ones(4), 1.0)
    with pytest.raises(ValueError, match="x"):
        optimal_perturbation(flow, np.ones((2, 2, 3)), 1.0)
    with pytest.raises(TypeError, match="x"):
        optimal_perturbation(flow, np.array(["a", "b", "c"]), 1.0)
    with pytest.raises(TypeError, match="x"):
        optimal_perturbation(flow, np.ones(3, dtype=complex), 1.0)
    with pytest.raises(ValueError, match="norm"):
        optimal_perturbation(flow, x, 1.0, norm=3)
    with pytest.raises(ValueError, match="likelihood"):
        optimal_perturbation(flow, x, 1.0, likelihood="up")
    with pytest.raises(TypeError, match="option"):
        optimal_perturbation(flow, x, 1.0, restarts=3)
    # ``seed`` is accepted for every norm; the exact L2 answer does not depend on it
    np.testing.assert_array_equal(optimal_perturbation(flow, x, 1.0, seed=1), optimal_perturbation(flow, x, 1.0))
    with pytest.raises(TypeError, match="flow"):
        optimal_perturbation(np.eye(3), x, 1.0)
    with pytest.raises(ValueError, match="delta"):
        nll_change(flow, np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="X"):
        universal_perturbation(flow, np.ones((4, 2)), 1.0)
