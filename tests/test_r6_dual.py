"""The pooled dual's drift extrapolation (linflow.training.pooled_extrap) against a status-checked cvxpy SDP, on
small hard-case-heavy data (points near the mean, constant coordinates, a covariance with repeated eigenvalues):
every extrapolated dual value comes from feasible means and stays below the SDP optimum, the solver with it
converges to that optimum (its fixed point), and the option is checked."""

from __future__ import annotations

import numpy as np
import pytest

from linflow import adversarial_fit
from linflow.training.damped import _damped_eval
from linflow.training.pooled import _pooled_dual, _prox_step, _Reduced, _sample_pooled, _start
from linflow.training.pooled_extrap import _Drift, _extrapolate
from linflow.validation import check_data

REG = 0.05


def _data(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "near-mean":  # most points near the mean: R1's hard case at the optimum (interior means)
        X = 0.02 * rng.standard_normal((20, 5))
        X[:4] += 2.0 * rng.standard_normal((4, 5))
    elif kind == "constant":  # two constant coordinates (left out of the ascent) and a thin direction
        X = rng.standard_normal((16, 6))
        X[:, :2] = 0.3
        X[:, 2] *= 0.01
    else:  # a cross: covariance a multiple of I, every eigenvalue repeated
        X = np.vstack([np.eye(3), -np.eye(3)]) * 0.8
    return X


CASES = [("near-mean", 1.0, 13), ("near-mean", 2.0, 2), ("constant", 1.0, 3), ("cross", 2.0, 0)]


def sdp_references(cases, data) -> dict:
    """``{(kind, eps, seed): (X, SDP optimum)}`` for ``data(kind, seed)``: status-checked cvxpy references."""
    out = {}
    for kind, eps, seed in cases:
        X = data(kind, seed)
        sdp = adversarial_fit(X, eps, attack="sample", reg=REG, solver="cvxpy", return_info=True)[1]
        # a reference only when the SDP solved and its value is the exact objective at its own solution
        assert sdp.status == "optimal" and sdp.solver_value == pytest.approx(sdp.objective, rel=1e-6)
        out[(kind, eps, seed)] = (X, sdp.objective)
    return out


@pytest.fixture(scope="module")
def sdps():
    return sdp_references(CASES, _data)


def _ascent(X: np.ndarray, eps: float, steps: int):
    """``(Xk, duals, rho)``: the reduced points, the duals of ``steps`` plain proximal block steps from the start
    and their proximal weight."""
    Xc, m, S = check_data(X, REG)
    red = _Reduced(Xc)
    Xk = Xc[:, red.keep]
    dual = _pooled_dual(Xk, _start(Xc, m, S, eps, REG, None)[0][:, red.keep], eps, REG, red.k)
    rho = 1.5 * dual.lam * Xc.shape[1] / Xc.shape[0]
    duals = [dual]
    for _ in range(steps):
        new = _pooled_dual(Xk, _prox_step(duals[-1], eps, rho), eps, REG, red.k)
        duals.append(new if new.G > duals[-1].G else duals[-1])
    return Xk, duals, rho


@pytest.mark.parametrize("case", CASES)
def test_extrapolated_dual_is_feasible_rises_and_stays_below_the_sdp(sdps, case):
    """From every pair of iterates of the block ascent: the extrapolated means are in the ball, their ``Phi`` is
    recomputed independently, above the current dual's and never above the SDP optimum; None means no rise."""
    X, opt = sdps[case]
    eps = case[1]
    Xk, duals, _ = _ascent(X, eps, 12)
    rises = 0
    for a, b in zip(duals[:-3], duals[3:], strict=True):
        new, trials = _extrapolate(Xk, b, b.Mn - a.Mn, eps, REG)
        assert 1 <= trials <= 7
        if new is None:
            continue
        rises += 1
        assert np.all(np.linalg.norm(new.Mn, axis=1) <= eps * (1 + 1e-12))
        again = _pooled_dual(Xk, new.Mn, eps, REG, b.k).G
        assert again == new.G and new.G > b.G
        assert new.G <= opt + 1e-9 * max(1.0, abs(opt))
    if duals[-1].G > duals[3].G:  # the ascent still moves (the cross converges at once): its drift is worth following
        assert rises > 0


def test_drift_acts_every_period_and_moves_its_anchor():
    X = _data("near-mean", 2)
    Xk, duals, _ = _ascent(X, 2.0, 9)
    drift = _Drift(3)
    out = [drift.step(Xk, d, 2.0, REG) for d in duals[:9]]
    assert all(o is None for i, o in enumerate(out) if (i + 1) % 3)  # only every third call acts
    assert out[2] is None  # the first period only sets the anchor
    assert drift.trials >= 2  # calls 6 and 9 tried
    for o in out[5::3]:
        if o is not None:
            assert drift.gain > 0 and o.G > duals[5].G - 1e-300
    assert _Drift(0).step(Xk, duals[-1], 2.0, REG) is None


@pytest.mark.parametrize("case", CASES)
def test_solver_with_extrapolation_reaches_the_sdp_optimum(sdps, case):
    """The solver with the drift extrapolation (``extrapolate=10``, 2) and without (the default): converged, the
    certified lower bound never above the SDP optimum, the exact objective of the returned model never below it,
    both equal to it."""
    X, opt = sdps[case]
    eps = case[1]
    Xc, m, S = check_data(X, REG)
    scale = max(1.0, abs(opt))
    for opts in ({"extrapolate": 10}, {}, {"extrapolate": 2}):
        flow, info = _sample_pooled(Xc, m, S, eps, REG, max_iter=3000, **opts)
        low = info.objective - info.gap
        assert low <= opt + 1e-7 * scale
        assert info.objective >= opt - 1e-7 * scale
        assert info.objective == pytest.approx(_damped_eval(flow, Xc, eps, REG)[0], rel=1e-12, abs=1e-12)
        assert abs(low - opt) <= 1e-6 * scale  # the dual's fixed point is the optimum
        assert info.gap <= 1e-6 * scale


def test_extrapolate_option_is_checked():
    Xc, m, S = check_data(_data("near-mean", 2), REG)
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(ValueError, match="extrapolate"):
            _sample_pooled(Xc, m, S, 1.0, REG, extrapolate=bad)
