"""The crowded-block sub-solve of the pooled dual (linflow.training.pooled_k) against a status-checked cvxpy SDP, on
small hard-case-heavy data whose rare coordinates are exactly zero in most points (as MNIST's rare pixels): the
sub-problem is the Schur-complement form of ``Phi``, every step gives feasible means whose ``Phi`` rises and stays
below the SDP optimum, the step is a fixed point at the optimum, and the solver with it converges."""

from __future__ import annotations

import numpy as np
import pytest

from linflow.training.damped import _damped_eval
from linflow.training.pooled import _pooled_dual, _prox_responses, _prox_step, _sample_pooled
from linflow.training.pooled_k import _crowd_step, _k_ascent, _k_coordinates, _KProblem
from linflow.validation import check_data
from tests.test_r6_dual import REG, _ascent, sdp_references


def _data(kind: str, seed: int) -> np.ndarray:
    """Points near the mean (R1's hard case at the optimum) in the first coordinates, rare coordinates that are
    exactly zero except in a few points; ``const`` adds a constant coordinate (left out of the ascent)."""
    rng = np.random.default_rng(seed)
    n, d, rare = (24, 6, 3) if kind == "rare" else (20, 7, 3)
    X = 0.03 * rng.standard_normal((n, d))
    X[:5, : d - rare] += 1.5 * rng.standard_normal((5, d - rare))
    X[:, d - rare:] = 0.0
    X[:3, d - rare:] = rng.exponential(size=(3, rare))  # rare pixels: nonzero in 3 points only
    if kind == "const":
        X[:, 0] = 0.4
    return X


CASES = [("rare", 1.0, 0), ("rare", 2.0, 1), ("const", 1.0, 2), ("const", 0.5, 3)]


@pytest.fixture(scope="module")
def sdps():
    return sdp_references(CASES, _data)


def _start_dual(X: np.ndarray, eps: float, steps: int):
    """``(Xk, dual, rho)``: the reduced points and the dual after ``steps`` plain proximal block steps."""
    Xk, duals, rho = _ascent(X, eps, steps)
    return Xk, duals[-1], rho


def _feasible(Mn: np.ndarray, eps: float) -> bool:
    return bool(np.all(np.linalg.norm(Mn, axis=1) <= eps * (1.0 + 1e-12)))


@pytest.mark.parametrize("case", CASES)
def test_sub_problem_is_phi_in_schur_form(sdps, case):
    """``Phi_K <= Phi`` for any block (``R`` restricted), with equality to rounding in the eigenbasis of
    ``cov(x + m) + reg I`` when the block holds every filled eigenvector (then ``C`` is block diagonal)."""
    X, _ = sdps[case]
    eps = case[1]
    Xk, dual, _ = _start_dual(X, eps, 3)
    n, d = Xk.shape
    rng = np.random.default_rng(5)
    for size in range(1, d):
        K = np.sort(rng.choice(d, size, replace=False))
        G = _KProblem(Xk, dual.Mn, K, eps, REG, dual.k).evaluate(dual.Mn[:, K])[0]
        assert G <= dual.G + 1e-12 * max(1.0, abs(dual.G))
    crowd = dual.c < dual.nu * 1.5
    assert 0 < crowd.sum() < d  # the case is a test of the block form
    Q = np.concatenate([dual.V[:, crowd], dual.V[:, ~crowd]], axis=1)
    K = np.arange(int(crowd.sum()))
    G = _KProblem(Xk @ Q, dual.Mn @ Q, K, eps, REG, dual.k).evaluate((dual.Mn @ Q)[:, K])[0]
    assert G == pytest.approx(dual.G, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_crowd_step_is_feasible_rises_and_stays_below_the_sdp(sdps, case):
    X, opt = sdps[case]
    eps = case[1]
    Xk, dual, rho = _start_dual(X, eps, 2)
    scale = max(1.0, abs(opt))
    rose = 0
    for _ in range(6):
        new, rho, _ = _crowd_step(Xk, dual, eps, REG, 10, rho, _prox_responses, near=0.5)
        if new is None:
            continue
        rose += 1
        assert new.G > dual.G and _feasible(new.Mn, eps)
        assert new.G == _pooled_dual(Xk, new.Mn, eps, REG, dual.k).G  # the full Phi at the means returned
        assert new.G <= opt + 1e-7 * scale  # a lower bound on the optimum of R6
        dual = new
    assert rose > 0  # the step does something on these problems
    # the rare coordinates' sub-problem (the block K of the data) also gives feasible means whose Phi is a bound
    K = _k_coordinates(Xk, dual, eps)
    if 0 < K.size < Xk.shape[1]:
        Mn, _, _ = _k_ascent(Xk, dual.Mn, dual.k, eps, REG, K, 5, rho, _prox_responses)
        assert _feasible(Mn, eps) and _pooled_dual(Xk, Mn, eps, REG, dual.k).G <= opt + 1e-7 * scale


@pytest.mark.parametrize("case", CASES[:3])
def test_crowd_step_is_a_fixed_point_at_the_optimum(sdps, case):
    """Alternating block steps and crowd steps reaches the SDP optimum; there the crowd step gains nothing above
    the optimum and moves the means only within the (degenerate) optimal set's rounding."""
    X, opt = sdps[case]
    eps = case[1]
    Xk, dual, rho = _start_dual(X, eps, 0)
    krho = rho
    scale = max(1.0, abs(opt))
    for _ in range(400):
        new = _pooled_dual(Xk, _prox_step(dual, eps, rho), eps, REG, dual.k)
        dual = new if new.G > dual.G else dual
        kd, krho, _ = _crowd_step(Xk, dual, eps, REG, 5, min(krho, 1e6), _prox_responses, near=0.5)
        dual = dual if kd is None else kd
        if dual.G >= opt - 1e-9 * scale:
            break
    assert opt - 1e-7 * scale <= dual.G <= opt + 1e-7 * scale  # converged to the SDP optimum (to its accuracy)
    before = dual.G
    new, _, _ = _crowd_step(Xk, dual, eps, REG, 20, rho, _prox_responses, near=0.5)
    if new is not None:
        assert new.G - before <= 1e-7 * scale and new.G <= opt + 1e-7 * scale and _feasible(new.Mn, eps)


@pytest.mark.parametrize("case", CASES)
def test_solver_with_crowd_steps_reaches_the_sdp(sdps, case):
    X, opt = sdps[case]
    eps = case[1]
    Xc, m, S = check_data(X, REG)
    scale = max(1.0, abs(opt))
    for crowd in (5, 0):
        flow, info = _sample_pooled(Xc, m, S, eps, REG, max_iter=3000, crowd=crowd)
        assert info.objective - info.gap <= opt + 1e-7 * scale  # the certificate never above the optimum
        assert info.objective >= opt - 1e-7 * scale
        assert info.objective == pytest.approx(_damped_eval(flow, X, eps, REG)[0], rel=1e-12, abs=1e-12)
        assert info.gap <= 1e-6 * scale


def test_crowd_option_is_checked():
    X = _data("rare", 0)
    Xc, m, S = check_data(X, REG)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="crowd"):
            _sample_pooled(Xc, m, S, 1.0, REG, crowd=bad)


def test_crowd_schedule_backs_off_and_returns():
    from linflow.training.pooled_k import _CrowdSchedule

    late = _CrowdSchedule(10, first=3)
    assert [it for it in range(4) if late.due()] == [3]  # the first sub-solve at iteration `first`
    sched = _CrowdSchedule(10, max_wait=4, first=0)
    assert sched.due()  # the first iteration tries the sub-solve
    runs = []
    for it in range(12):
        if sched.due():
            runs.append(it)
            sched.done(0.0 if it < 8 else 10.0, 1.0)  # useless sub-solves first, then useful ones
    assert runs == [0, 2, 6, 10, 11]  # waits 1, 2, 4, 4 (capped), then every iteration again
    sched.block(2.0, 1.0)
    sched.block(4.0, 1.0)
    assert sched.rate == 3.0 and not _CrowdSchedule(0).due()
    sched.done(2.9, 1.0)  # below the block steps' rate: back off
    assert sched.skip == 2
