"""The robustness-accuracy trade-off (R7): closed forms, Pareto optimality by cvxpy, the sample case."""

import numpy as np
import pytest
from scipy.optimize import brentq

from linflow.tradeoff import ParetoFront, TradeoffCurve, pareto_points, tradeoff, universal_kl

from .test_training import data_with_moments, skewed_data

TIGHT = {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11}  # Clarabel


def gaussian_kl(S, Sigma):
    """KL(N(m, S) || N(m, Sigma)) from the matrix formula (independent of the eigenvalue formula)."""
    d = S.shape[0]
    return 0.5 * (np.trace(np.linalg.solve(Sigma, S)) - d + np.linalg.slogdet(Sigma)[1] - np.linalg.slogdet(S)[1])


def tau_for(s, eps):
    return brentq(lambda t: np.sum(np.maximum(t - s, 0.0)) - eps**2, s.min(), s.max() + 2 * eps**2 + 1, xtol=1e-15)


@pytest.fixture(scope="module")
def data():
    return skewed_data(40, 5, np.random.default_rng(0))


def test_worked_value_curve():
    X = data_with_moments(np.zeros(3), np.diag([4.0, 1.0, 0.25]), 30, np.random.default_rng(1))
    c = tradeoff(X, [0.0, 1.0], 1.0)
    assert isinstance(c, TradeoffCurve)
    np.testing.assert_allclose(c.water_level, [0.25, 1.125], rtol=1e-12)
    np.testing.assert_allclose(c.kl_formula, [0.0, 0.36649], atol=5e-6)
    np.testing.assert_allclose(c.accuracy_loss, c.kl_formula, atol=1e-12)
    np.testing.assert_allclose(c.rise, [2.0, 4 / 9], rtol=1e-10)
    assert c.ml_robust_nll - c.ml_clean_nll == pytest.approx(2.0, rel=1e-10)


def test_universal_curve_closed_forms_and_monotonicity(data):
    eps_t = np.array([0.0, 0.2, 0.5, 1.0, 2.0, 4.0])
    c = tradeoff(data, eps_t, 0.7)
    S = np.cov(data.T, bias=True)
    s = np.linalg.eigvalsh(S)
    V = np.linalg.eigh(S)[1]
    for k, e in enumerate(eps_t):
        tau = tau_for(s, e) if e > 0 else s.min()
        Sigma = (V * np.maximum(s, tau)) @ V.T
        assert c.accuracy_loss[k] == pytest.approx(gaussian_kl(S, Sigma), abs=1e-10)
        assert c.kl_formula[k] == pytest.approx(gaussian_kl(S, Sigma), abs=1e-10)
        assert c.rise[k] == pytest.approx(0.7**2 / (2 * tau), rel=1e-10)
    assert c.accuracy_loss[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(c.accuracy_loss) > 0) and np.all(np.diff(c.rise) < 0)
    np.testing.assert_allclose(c.rise, c.rise_formula, rtol=1e-10)


def test_pareto_points_land_on_the_universal_curve(data):
    """min KL s.t. rise <= r (cvxpy) lands on the water-filling curve, also between the training budgets."""
    eps_a = 0.7
    S = np.cov(data.T, bias=True)
    s = np.linalg.eigvalsh(S)
    r_ml = eps_a**2 / (2 * s.min())
    rises = np.array([0.9, 0.6, 0.3, 0.1]) * r_ml
    front = pareto_points(data, rises, eps_attack=eps_a, **TIGHT)
    assert isinstance(front, ParetoFront) and all(st == "optimal" for st in front.status)
    np.testing.assert_array_less(front.rise, rises * (1 + 1e-6))  # feasible
    np.testing.assert_allclose(front.rise, rises, rtol=1e-6)  # and binding
    taus = eps_a**2 / (2 * rises)
    eps_t = np.sqrt([np.sum(np.maximum(t - s, 0)) for t in taus])
    curve = tradeoff(data, eps_t, eps_a)
    np.testing.assert_allclose(curve.rise, rises, rtol=1e-10)
    np.testing.assert_allclose(front.accuracy_loss, curve.accuracy_loss, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(front.accuracy_loss, [universal_kl(s, t) for t in taus], rtol=1e-5, atol=1e-8)


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")  # the bound at the minimum (one feasible point)
def test_universal_robust_constraint_front_and_overtraining(data):
    """In (clean NLL, worst-case NLL), training at eps_train <= eps_a is on the front; beyond it is dominated."""
    eps_a = 0.7
    c = tradeoff(data, [0.3, 0.5, 0.7, 1.5], eps_a)
    front = pareto_points(data, c.robust_nll, eps_attack=eps_a, constraint="robust", **TIGHT)
    np.testing.assert_allclose(front.clean_nll[:2], c.clean_nll[:2], rtol=1e-9)
    # at eps_train = eps_a the bound is the minimum itself (one feasible point, a flat optimum): looser
    assert front.clean_nll[2] == pytest.approx(c.clean_nll[2], rel=1e-6)
    assert front.clean_nll[3] < c.clean_nll[3] - 1e-3  # over-training costs clean NLL for nothing
    assert front.robust_nll[3] <= c.robust_nll[3] + 1e-7
    assert c.robust_nll[2] == c.robust_nll.min()  # eps_train = eps_a is the most robust


def test_l1_universal_front_dominates_l1_training(data):
    eps_a = 0.7
    c = tradeoff(data, [0.0, 0.3, 0.7], eps_a, norm=1)
    front = pareto_points(data, c.rise, eps_attack=eps_a, norm=1)
    np.testing.assert_array_less(front.rise, c.rise * (1 + 1e-6))
    assert np.all(front.clean_nll <= c.clean_nll + 1e-6)
    # worst-case rise of an L1 universal attack on a mean-centred model: eps^2/2 max_j P_jj
    assert np.all(np.diff(c.rise) < 0)


def test_sample_front_dominates_the_training_curve():
    X = skewed_data(20, 3, np.random.default_rng(2))
    eps_a = 1.0
    c = tradeoff(X, [0.0, 0.25, 0.5], eps_a, attack="sample")  # eps_train = eps_a would make the bound the minimum
    assert np.all(np.diff(c.accuracy_loss) > 0) and np.all(np.diff(c.robust_nll) < 0)
    front = pareto_points(X, c.robust_nll, eps_attack=eps_a, attack="sample", constraint="robust")
    assert all(st == "optimal" for st in front.status)
    np.testing.assert_array_less(front.robust_nll, c.robust_nll + 1e-6 * np.abs(c.robust_nll))
    excess = c.clean_nll - front.clean_nll
    assert np.all(excess >= -1e-6)
    assert excess[0] == pytest.approx(0.0, abs=1e-6)  # the ML fit is on the front (its robust NLL is the bound)


def test_bad_input(data):
    with pytest.raises(ValueError, match="eps_train"):
        tradeoff(data, [-1.0], 1.0)
    with pytest.raises(ValueError, match="eps_attack"):
        tradeoff(data, [1.0], -1.0)
    with pytest.raises(ValueError, match="attack"):
        tradeoff(data, [1.0], 1.0, attack="pgd")
    with pytest.raises(ValueError, match="not convex"):
        pareto_points(data, [0.1], eps_attack=1.0, attack="sample")
    with pytest.raises(ValueError, match="constraint"):
        pareto_points(data, [0.1], eps_attack=1.0, constraint="kl")
    with pytest.raises(ValueError, match="eps_attack"):
        pareto_points(data, [0.1], eps_attack=0.0)
    with pytest.raises(NotImplementedError):
        pareto_points(data, [0.1], eps_attack=1.0, norm="linf")
    with pytest.raises(ValueError, match="bounds"):
        pareto_points(data, [-0.1], eps_attack=1.0)
