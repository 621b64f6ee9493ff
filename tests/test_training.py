"""Adversarial training (R5, R6): closed forms and fast solvers against cvxpy, duals and brute force."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import brentq, minimize, minimize_scalar

from linflow import LinearFlow
from linflow.training import (
    FitInfo,
    adversarial_fit,
    robust_nll,
    universal_objective,
    water_filling,
    water_level,
)

LOG_2PI = np.log(2 * np.pi)


# ------------------------------------------------------------------ independent references (no linflow solvers)
def data_with_moments(mean, cov, n, rng):
    """n points whose sample mean and biased sample covariance are exactly ``mean`` and ``cov``."""
    d = len(mean)
    Z = rng.standard_normal((n, d))
    Z -= Z.mean(axis=0)
    Q, _ = np.linalg.qr(Z)  # orthonormal columns, orthogonal to the ones vector
    return np.sqrt(n) * Q @ np.linalg.cholesky(cov).T + mean


def skewed_data(n, d, rng):
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ A + 0.5 * rng.exponential(size=(n, d)) ** 2


def trs_rise_dual(flow, x, eps):
    """max_{||delta||<=eps} NLL(x + delta) - NLL(x) by TRS duality: a 1-D convex minimisation over the multiplier.

    max (v+d)^T P (v+d) = min_{eta > p_max} v^T P v + v^T P (eta I - P)^{-1} P v + eta eps^2, so the rise is
    1/2 min_eta [sum_i p_i^2 w_i^2 / (eta - p_i) + eta eps^2] (eigen-coordinates w, p = 1/s).
    """
    p = 1.0 / flow.eigvals
    w = flow.coords(x)
    pmax = p.max()
    a = p**2 * w**2

    def f(u):
        g = np.exp(u)  # eta - p_max, kept separate so that eta - p_i never rounds to zero
        return 0.5 * (np.sum(a / ((pmax - p) + g)) + (pmax + g) * eps**2)

    hi = np.log(pmax + np.sqrt(a.sum()) / eps + 1.0) + 3.0
    best = minimize_scalar(f, bounds=(np.log(pmax) - 45.0, hi), method="bounded",
                           options={"xatol": 1e-13, "maxiter": 2000})
    return min(best.fun, f(np.log(pmax) - 45.0))


def brute_robust_nll(flow, X, eps):
    return float(np.mean([flow.nll(x) + trs_rise_dual(flow, x, eps) for x in X]))


def brute_robust_nll_circle(flow, X, eps):
    """d = 2 only: the maximum over the circle by a dense grid of angles, refined by a bounded 1-D search."""
    th = np.linspace(0.0, 2 * np.pi, 20001)
    D = eps * np.stack([np.cos(th), np.sin(th)], axis=1)
    out = []
    for x in X:
        vals = flow.nll(x + D)
        k = int(np.argmax(vals))
        r = minimize_scalar(lambda t, x=x: -flow.nll(x + eps * np.array([np.cos(t), np.sin(t)])),
                            bounds=(th[max(k - 1, 0)], th[min(k + 1, th.size - 1)]), method="bounded",
                            options={"xatol": 1e-12})
        out.append(max(vals[k], -r.fun))
    return float(np.mean(out))


def brute_robust_nll_l1(flow, X, eps):
    """L1 ball: the maximum of a convex function is at one of the 2d vertices +-eps e_j; enumerate them."""
    d = flow.dim
    V = np.concatenate([eps * np.eye(d), -eps * np.eye(d)])
    return float(np.mean([np.max(flow.nll(x + V)) for x in X]))


def l1_universal_dual(S, eps):
    """max over the simplex of log det(S + eps^2 diag(lam)) (the Lagrange dual of universal L1 training), scipy.

    Its value v gives the primal optimum 1/2 (d + v) + d/2 log 2 pi.
    """
    d = S.shape[0]

    def neg(z):
        lam = np.exp(z - z.max())
        lam /= lam.sum()
        return -np.linalg.slogdet(S + eps**2 * np.diag(lam))[1]

    best = min((minimize(neg, z0, method="BFGS", options={"gtol": 1e-12}) for z0 in
                (np.zeros(d), -np.diag(S) / np.diag(S).max())), key=lambda r: r.fun)
    return 0.5 * (d - best.fun) + 0.5 * d * LOG_2PI


# ------------------------------------------------------------------ R5: water-filling
@given(st.lists(st.floats(1e-4, 1e3), min_size=1, max_size=12), st.floats(0.0, 30.0))
def test_water_level_solves_its_equation(s, eps):
    s = np.array(s)
    tau = water_level(s, eps)
    if eps == 0:
        assert tau == s.min()
        return
    hi = s.max() * (1 + 1e-9) + 2 * eps**2  # f(hi) > 0 even when eps^2 is below the rounding of s
    ref = brentq(lambda t: np.sum(np.maximum(t - s, 0.0)) - eps**2, s.min(), hi, xtol=1e-14, rtol=1e-15)
    assert tau == pytest.approx(ref, rel=1e-12)


def test_worked_value_of_design_r7():
    rng = np.random.default_rng(0)
    X = data_with_moments(np.array([1.0, -2.0, 0.5]), np.diag([4.0, 1.0, 0.25]), 50, rng)
    sig, V, tau = water_filling(np.diag([4.0, 1.0, 0.25]), 1.0)
    assert tau == pytest.approx(1.125, rel=1e-14)
    flow = adversarial_fit(X, 1.0)
    np.testing.assert_allclose(flow.cov, np.diag([4.0, 1.125, 1.125]), atol=1e-12)
    np.testing.assert_allclose(flow.mean, [1.0, -2.0, 0.5], atol=1e-12)
    ml = adversarial_fit(X, 0.0)
    kl = np.mean(flow.nll(X)) - np.mean(ml.nll(X))  # = KL(N(m,S) || N(m,Sigma*)) on exact moments
    assert kl == pytest.approx(0.36649, abs=5e-6)
    rise = robust_nll(flow, X, 1.0, attack="universal") - np.mean(flow.nll(X))
    assert rise == pytest.approx(4 / 9, rel=1e-10)
    ml_rise = robust_nll(ml, X, 1.0, attack="universal") - np.mean(ml.nll(X))
    assert ml_rise == pytest.approx(2.0, rel=1e-10)


@pytest.mark.parametrize("d,eps,seed", [(3, 0.5, 0), (6, 2.0, 1), (10, 0.3, 2), (10, 5.0, 3)])
def test_universal_closed_form_matches_cvxpy(d, eps, seed):
    rng = np.random.default_rng(seed)
    X = skewed_data(4 * d, d, rng)
    flow, info = adversarial_fit(X, eps, return_info=True)
    ref, rinfo = adversarial_fit(X, eps, solver="cvxpy", return_info=True)
    assert info.solver == "water-filling" and rinfo.solver == "cvxpy/CLARABEL"
    assert info.objective <= rinfo.objective * (1 + 1e-12)
    assert abs(info.objective - rinfo.objective) <= 1e-7 * abs(rinfo.objective)
    assert abs(info.objective - rinfo.solver_value) <= 1e-7 * abs(rinfo.objective)
    # the objective is the exact worst expected NLL: compare with the universal attack on the data
    assert robust_nll(flow, X, eps, attack="universal") == pytest.approx(info.objective, rel=1e-12)
    # mu* = m, and the eigenvectors of S are kept: Sigma* = U diag(max(s_i, tau)) U^T with S = U diag(s) U^T, so
    # Sigma* commutes with S and U^T Sigma* U is diagonal (floor eigenvalues may coincide, so compare the matrices)
    np.testing.assert_allclose(flow.mean, X.mean(axis=0), atol=1e-12)
    S = np.cov(X.T, bias=True)
    s, U = np.linalg.eigh(S)
    tau = brentq(lambda t: np.sum(np.maximum(t - s, 0)) - eps**2, s.min(), s.max() + eps**2, xtol=1e-14 * s.max(),
                 rtol=1e-15)
    np.testing.assert_allclose(flow.cov @ S, S @ flow.cov, atol=1e-10 * np.linalg.norm(S, 2) ** 2)
    np.testing.assert_allclose(U.T @ flow.cov @ U, np.diag(np.maximum(s, tau)), atol=1e-10 * np.linalg.norm(S, 2))


def test_universal_l2_objective_equals_its_dual():
    """Water-filling's value equals the dual 1/2 (d + sum_i log max(s_i, tau)) + d/2 log 2 pi."""
    rng = np.random.default_rng(4)
    X = skewed_data(30, 5, rng)
    _, info = adversarial_fit(X, 1.5, return_info=True)
    s = np.linalg.eigvalsh(np.cov(X.T, bias=True))
    tau = brentq(lambda t: np.sum(np.maximum(t - s, 0)) - 1.5**2, s.min(), s.max() + 3)
    assert info.objective == pytest.approx(0.5 * (5 + np.sum(np.log(np.maximum(s, tau)))) + 2.5 * LOG_2PI,
                                           rel=1e-12)


@pytest.mark.parametrize("d,eps,seed", [(3, 1.0, 5), (5, 0.4, 6), (6, 3.0, 7)])
def test_universal_l1_cvxpy_matches_dual_and_vertex_enumeration(d, eps, seed):
    rng = np.random.default_rng(seed)
    X = skewed_data(5 * d, d, rng)
    S = np.cov(X.T, bias=True)
    flow, info = adversarial_fit(X, eps, norm=1, return_info=True)
    assert info.solver.startswith("cvxpy")
    assert info.objective == pytest.approx(l1_universal_dual(S, eps), rel=1e-7)
    # the universal L1 attack on the data, by the package and by brute force over the vertices
    V = np.concatenate([eps * np.eye(d), -eps * np.eye(d)])
    brute = max(np.mean(flow.nll(X + v)) for v in V)
    assert robust_nll(flow, X, eps, attack="universal", norm=1) == pytest.approx(brute, rel=1e-12)
    assert info.objective == pytest.approx(brute, rel=1e-12)
    # it beats the L2-trained model and the ML fit on the L1 objective
    for other in (adversarial_fit(X, eps), adversarial_fit(X, 0.0)):
        assert info.objective <= universal_objective(other, S, eps, norm=1) + 1e-9


# ------------------------------------------------------------------ R6: sample-specific
SAMPLE_CASES = [(2, 20, 0.5, 0), (2, 20, 5.0, 1), (4, 30, 1.0, 2), (8, 40, 2.0, 3)]


@pytest.fixture(scope="module")
def sample_fits():
    out = {}
    for d, n, eps, seed in SAMPLE_CASES:
        X = skewed_data(n, d, np.random.default_rng(100 + seed))
        out[(d, n, eps, seed)] = (X, adversarial_fit(X, eps, attack="sample", return_info=True),
                                  adversarial_fit(X, eps, attack="sample", solver="cvxpy", return_info=True))
    return out


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_sdp_value_is_tight_by_brute_force(sample_fits, case):
    """The S-lemma SDP's reported optimum equals the robust objective evaluated independently at its solution."""
    X, _, (flow, info) = sample_fits[case]
    brute = brute_robust_nll_circle(flow, X, case[2]) if case[0] == 2 else brute_robust_nll(flow, X, case[2])
    assert info.solver_value == pytest.approx(brute, rel=1e-6)
    assert info.objective == pytest.approx(brute, rel=1e-9)


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_damped_solver_reaches_the_sdp(sample_fits, case):
    X, (flow, info), (_, sdp) = sample_fits[case]
    eps = case[2]
    assert info.converged and info.solver in ("damped", "damped/pooled")
    assert abs(info.objective - sdp.objective) <= 1e-6 * abs(sdp.objective)
    assert info.objective == pytest.approx(brute_robust_nll(flow, X, eps), rel=1e-9)
    # the certificate: gap >= objective - optimum (the SDP value, up to its own accuracy)
    assert info.gap >= info.objective - sdp.objective - 1e-6 * abs(sdp.objective)
    # it beats the ML fit and the universal solution on its own objective
    for other in (adversarial_fit(X, 0.0), adversarial_fit(X, eps)):
        assert info.objective <= robust_nll(other, X, eps) + 1e-10


@pytest.mark.parametrize("case", [(2, 20, 5.0, 1), (4, 30, 1.0, 2)])
def test_natural_parameter_steps_reach_the_same_optimum(sample_fits, case):
    X, (_, info), (_, sdp) = sample_fits[case]
    _, nat = adversarial_fit(X, case[2], attack="sample", step="natural", return_info=True)
    assert nat.converged
    assert abs(nat.objective - sdp.objective) <= 1e-6 * abs(sdp.objective)


def test_damped_certificate_bounds_the_suboptimality_of_early_iterates(sample_fits):
    X, (_, final), _ = sample_fits[(4, 30, 1.0, 2)]
    for k in (1, 2, 3):
        _, info = adversarial_fit(X, 1.0, attack="sample", return_info=True, max_iter=k)
        assert info.iterations == k and not info.converged
        assert info.gap >= info.objective - final.objective - 1e-12
        assert info.objective >= final.objective - 1e-10


def test_sample_optimal_mean_is_not_the_sample_mean_for_skewed_data(sample_fits):
    X, (flow, _), _ = sample_fits[(4, 30, 1.0, 2)]
    assert np.linalg.norm(flow.mean - X.mean(axis=0)) > 1e-3


def test_sample_and_universal_coincide_when_the_data_sit_at_one_point():
    """R6 vs R5: with every point at the mean, each sample attack is the universal attack (R4), so the two
    trainings solve the same problem; both give the water-filling of reg * I."""
    X = np.tile([1.0, 2.0, -1.0], (4, 1))
    uni, a = adversarial_fit(X, 1.0, reg=0.5, return_info=True)
    smp, b = adversarial_fit(X, 1.0, attack="sample", reg=0.5, return_info=True)
    _, c = adversarial_fit(X, 1.0, attack="sample", reg=0.5, solver="cvxpy", return_info=True)
    assert b.converged and a.objective == pytest.approx(b.objective, rel=1e-12)
    assert c.objective == pytest.approx(b.objective, rel=1e-7)
    np.testing.assert_allclose(smp.cov, (0.5 + 1 / 3) * np.eye(3), atol=1e-12)  # tau = reg + eps^2 / d
    np.testing.assert_allclose(uni.cov, smp.cov, atol=1e-12)


@pytest.mark.parametrize("d,n,eps,seed", [(2, 12, 0.7, 0), (4, 20, 1.5, 1)])
def test_sample_l1_program_by_vertex_enumeration(d, n, eps, seed):
    X = skewed_data(n, d, np.random.default_rng(200 + seed))
    flow, info = adversarial_fit(X, eps, attack="sample", norm=1, return_info=True)
    brute = brute_robust_nll_l1(flow, X, eps)
    assert info.solver_value == pytest.approx(brute, rel=1e-6)
    assert info.objective == pytest.approx(brute, rel=1e-10)
    for other in (adversarial_fit(X, 0.0), adversarial_fit(X, eps, norm=1, attack="universal"),
                  adversarial_fit(X, eps, attack="sample")):
        assert info.objective <= brute_robust_nll_l1(other, X, eps) + 1e-6 * abs(info.objective)


def test_sample_l1_program_where_clarabel_failed():
    """A case on which Clarabel raised SolverError here (verification, full mode): the SCS retry answers."""
    from linflow.verification.training import _data

    rng = np.random.default_rng([0, 1])  # the data sequence of that check: 3 budgets per size
    datasets = [_data(n, d, rng) for d, n in ((2, 15), (4, 30), (8, 40)) for _ in range(3)]
    X = datasets[7]  # d = 8, n = 40, with eps = 1
    flow, info = adversarial_fit(X, 1.0, attack="sample", norm=1, solver="cvxpy", return_info=True)
    assert info.objective == pytest.approx(brute_robust_nll_l1(flow, X, 1.0), rel=1e-12)
    assert info.solver_value == pytest.approx(info.objective, rel=1e-6)


# ------------------------------------------------------------------ eps = 0, regularisation
@pytest.mark.parametrize("attack,norm,solver", [("universal", 2, None), ("universal", 2, "cvxpy"),
                                                ("sample", 2, None), ("sample", 2, "cvxpy"),
                                                ("universal", 1, None), ("sample", 1, None)])
def test_eps_zero_is_the_ml_fit(attack, norm, solver):
    X = skewed_data(25, 3, np.random.default_rng(9))
    flow, info = adversarial_fit(X, 0.0, attack=attack, norm=norm, solver=solver, return_info=True)
    ml = LinearFlow.fit(X)
    np.testing.assert_allclose(flow.mean, ml.mean, atol=1e-12)
    np.testing.assert_allclose(flow.cov, ml.cov, atol=1e-12)
    assert info.objective == pytest.approx(np.mean(ml.nll(X)), rel=1e-12)


def test_cvxpy_eps_zero_program_matches_ml():
    """The separate eps = 0 cvxpy program (not the shortcut) reproduces maximum likelihood."""
    from linflow.training import _universal_cvxpy

    X = skewed_data(25, 4, np.random.default_rng(10))
    S = np.cov(X.T, bias=True)
    flow, _ = _universal_cvxpy(X.mean(0), S, 0.0, 2.0, "CLARABEL", {})
    assert np.mean(flow.nll(X)) == pytest.approx(np.mean(LinearFlow.fit(X).nll(X)), rel=1e-7)


def test_reg_enables_fewer_samples_than_dimensions():
    X = skewed_data(5, 8, np.random.default_rng(11))
    with pytest.raises(ValueError, match="reg"):
        adversarial_fit(X, 1.0)
    with pytest.raises(ValueError, match="reg"):
        adversarial_fit(X, 1.0, attack="sample")
    flow, info = adversarial_fit(X, 1.0, reg=0.1, return_info=True)
    _, ref = adversarial_fit(X, 1.0, reg=0.1, solver="cvxpy", return_info=True)
    assert info.objective == pytest.approx(ref.objective, rel=1e-7)
    flow_s, info_s = adversarial_fit(X, 1.0, attack="sample", reg=0.1, return_info=True)
    assert info_s.converged
    assert info_s.objective == pytest.approx(brute_robust_nll(flow_s, X, 1.0)
                                             + 0.05 * np.trace(flow_s.precision), rel=1e-9)
    _, sdp = adversarial_fit(X, 1.0, attack="sample", reg=0.1, solver="cvxpy", return_info=True)
    assert info_s.objective == pytest.approx(sdp.objective, rel=1e-6)


# ------------------------------------------------------------------ robust_nll
def test_robust_nll_sample_and_universal_against_brute_force():
    rng = np.random.default_rng(12)
    X = skewed_data(15, 3, rng)
    flow = LinearFlow.from_gaussian(rng.standard_normal(3), np.diag([2.0, 0.5, 0.1]))
    assert robust_nll(flow, X, 0.8) == pytest.approx(brute_robust_nll(flow, X, 0.8), rel=1e-10)
    # universal: E over the data of NLL(x + delta), maximised over one delta = the TRS at the data mean
    m = X.mean(axis=0)
    ref = np.mean(flow.nll(X)) + trs_rise_dual(flow, m, 0.8)
    assert robust_nll(flow, X, 0.8, attack="universal") == pytest.approx(ref, rel=1e-10)
    assert robust_nll(flow, X, 0.0) == pytest.approx(np.mean(flow.nll(X)), rel=1e-15)
    assert robust_nll(flow, X, 0.8, norm=1) == pytest.approx(brute_robust_nll_l1(flow, X, 0.8), rel=1e-12)


# ------------------------------------------------------------------ bad input
def test_bad_input():
    X = skewed_data(20, 3, np.random.default_rng(13))
    with pytest.raises(ValueError, match="X"):
        adversarial_fit(X[0], 1.0)
    with pytest.raises(ValueError, match="eps"):
        adversarial_fit(X, -1.0)
    with pytest.raises(TypeError, match="eps"):
        adversarial_fit(X, "1")
    with pytest.raises(ValueError, match="attack"):
        adversarial_fit(X, 1.0, attack="pgd")
    with pytest.raises(ValueError, match="norm"):
        adversarial_fit(X, 1.0, norm=3)
    with pytest.raises(NotImplementedError, match="NP-hard"):
        adversarial_fit(X, 1.0, norm=np.inf)
    with pytest.raises(ValueError, match="solver"):
        adversarial_fit(X, 1.0, solver="mosek")
    with pytest.raises(ValueError, match="reg"):
        adversarial_fit(X, 1.0, reg=-0.1)
    with pytest.raises(TypeError, match="options"):
        adversarial_fit(X, 1.0, max_iter=3)  # the closed form takes no options
    with pytest.raises(TypeError, match="options"):
        adversarial_fit(X, 1.0, attack="sample", nonsense=1)
    with pytest.raises(ValueError, match="max_iter"):
        adversarial_fit(X, 1.0, attack="sample", max_iter=0)
    with pytest.raises(ValueError, match="step"):
        adversarial_fit(X, 1.0, attack="sample", step="newton")
    with pytest.raises(TypeError, match="init"):
        adversarial_fit(X, 1.0, attack="sample", init=np.eye(3))
    with pytest.raises(ValueError, match="singular"):
        adversarial_fit(np.column_stack([X, np.ones(20)]), 1.0)  # a constant coordinate
    with pytest.raises(TypeError, match="flow"):
        robust_nll(np.eye(3), X, 1.0)
    flow = LinearFlow.fit(X)
    with pytest.raises(ValueError, match="X"):
        robust_nll(flow, X[:, :2], 1.0)
    with pytest.raises(ValueError, match="attack"):
        robust_nll(flow, X, 1.0, attack="both")
    with pytest.raises(ValueError, match="s must"):
        water_level(np.array([-1.0, 2.0]), 1.0)


def test_fit_info_is_frozen():
    X = skewed_data(20, 3, np.random.default_rng(14))
    _, info = adversarial_fit(X, 1.0, return_info=True)
    assert isinstance(info, FitInfo)
    with pytest.raises(AttributeError):
        info.objective = 0.0  # type: ignore[misc]
    assert scipy.linalg.norm(info.history) == 0.0  # the closed form has no iterations
