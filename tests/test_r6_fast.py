"""The cheaper arithmetic of the pooled solver of R6 (the same mathematics): the Anderson history's incremental Gram
matrix against a recomputed one and the correction against a plain least-squares reference; the crowd sub-problem
built from the dual (:class:`linflow.training.pooled_k._CrowdProblem`) against the Schur-complement sub-problem on
explicitly rotated points, in double and in single precision, with the full ``Phi`` of its result always in double
precision; the trust-region responses with per-row weights against row-by-row calls."""

from __future__ import annotations

import numpy as np
import pytest

from linflow.training.pooled import _pooled_dual, _prox_responses
from linflow.training.pooled_extrap import _Anderson
from linflow.training.pooled_k import _crowd_step, _CrowdProblem, _KProblem
from tests.test_r6_dual import REG
from tests.test_r6_k import CASES, _data, _start_dual


def _reference_correction(X: list[np.ndarray], F: list[np.ndarray], memory: int) -> np.ndarray | None:
    """Anderson type II from scratch: the last ``memory - 1`` differences, gamma by least squares (lstsq)."""
    if len(X) < 2:
        return None
    lo = max(0, len(X) - memory)
    dF = [np.ravel(F[j + 1] - F[j]) for j in range(lo, len(X) - 1)]
    dS = [np.ravel(X[j + 1] - X[j] + F[j + 1] - F[j]) for j in range(lo, len(X) - 1)]
    gam = np.linalg.lstsq(np.array(dF).T, np.ravel(F[-1]), rcond=None)[0]
    return (gam @ np.array(dS)).reshape(X[-1].shape)


@pytest.mark.parametrize("memory", [2, 4, 8])
def test_anderson_gram_is_the_recomputed_one_and_the_correction_least_squares(memory):
    rng = np.random.default_rng(memory)
    acc = _Anderson(memory)
    xs: list[np.ndarray] = []
    fs: list[np.ndarray] = []
    for call in range(15):
        if call == 9:  # a reset starts a fresh history
            acc.reset()
            xs, fs = [], []
        x, f = rng.standard_normal((30, 7)), rng.standard_normal((30, 7))
        xs.append(x)
        fs.append(f)
        out = acc.correction(x, f)
        ref = _reference_correction(xs, fs, memory)
        assert (out is None) == (ref is None)
        k = acc.size
        assert k == min(len(xs) - 1, memory - 1)
        if k:
            H = acc._F[:k]
            assert np.allclose(acc.gram[:k, :k], H @ H.T, rtol=1e-12, atol=1e-12 * np.abs(H @ H.T).max())
            hist = np.array([np.ravel(v) for v in acc.dF])  # oldest first: the reference's differences
            assert np.allclose(hist, [np.ravel(fs[j + 1] - fs[j]) for j in range(len(fs) - 1 - k, len(fs) - 1)],
                               rtol=0, atol=1e-15)
            assert np.allclose(out, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


def test_anderson_transform_carries_the_history_by_a_linear_map():
    rng = np.random.default_rng(3)
    acc = _Anderson(5)
    for _ in range(8):  # the ring wraps around
        acc.correction(rng.standard_normal((6, 4)), rng.standard_normal((6, 4)))
    M = rng.standard_normal((4, 3))
    before = [v @ M for v in acc.dF]
    acc.transform(lambda v: v @ M)
    after = acc.dF
    assert len(after) == len(before) == 4
    for a, b in zip(after, before, strict=True):
        assert np.allclose(a, b, rtol=0, atol=1e-14)
    H = np.array([np.ravel(v) for v in after])
    assert np.allclose(acc.gram[:4, :4], H @ H.T, rtol=1e-12)  # slot order is age order after a transform
    x, f = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    assert acc.correction(x, f).shape == (6, 3)  # the new variables' shape


def _moves(prob: _KProblem, M0: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The start and two feasible moves of the ``K``-means (each row within its own ball of radius ``r_i``)."""
    out = [M0]
    for scale in (1e-3, 1e-1):
        M = M0 + scale * rng.standard_normal(M0.shape)
        nrm = np.linalg.norm(M, axis=1)
        out.append(M * np.minimum(1.0, prob.r / np.maximum(nrm, 1e-300))[:, None])
    return out


@pytest.mark.parametrize("case", CASES)
def test_crowd_problem_is_the_sub_problem_on_rotated_points(case):
    """``_CrowdProblem`` (built from the dual, no rotated copy, no Cholesky factor) evaluates the sub-problem of the
    module docstring of :mod:`linflow.training.pooled_k` for the points rotated into the eigenbasis: ``Phi_K``,
    ``A Y_K``, the spectrum of ``S`` and the curvature factors agree with :class:`_KProblem` on ``X V`` to 1e-9 in
    double precision and to 1e-5 (relative) in single precision."""
    X = _data(case[0], case[2])
    eps = case[1]
    Xk, dual, _ = _start_dual(X, eps, 3)
    crowd = dual.c < dual.nu * 1.5
    assert 0 < crowd.sum() < Xk.shape[1]  # a genuine block
    Q = np.concatenate([dual.V[:, crowd], dual.V[:, ~crowd]], axis=1)
    K = np.arange(int(crowd.sum()))
    ref = _KProblem(Xk @ Q, dual.Mn @ Q, K, eps, REG, dual.k)
    rng = np.random.default_rng(case[2])
    for single, tol in ((False, 1e-9), (True, 1e-5)):
        prob = _CrowdProblem(Xk, dual, crowd, eps, REG, single)
        assert np.allclose(prob.M0, (dual.Mn @ Q)[:, K], rtol=0, atol=1e-12)
        assert np.allclose(prob.r, ref.r, rtol=0, atol=1e-7)  # radii: a difference of squares
        assert np.allclose(prob.a, ref.a, rtol=tol, atol=tol)
        assert prob.logdet_nn == pytest.approx(ref.logdet_nn, rel=1e-12, abs=1e-12)
        for MK in _moves(ref, prob.M0, rng):
            G, AY, s, _, nu = prob.evaluate(MK)
            G0, AY0, s0, _, nu0 = ref.evaluate(MK)
            assert AY.dtype == np.float64 and s.dtype == np.float64
            assert G == pytest.approx(G0, rel=tol, abs=tol)
            assert np.allclose(AY, AY0, rtol=0, atol=tol * np.abs(AY0).max())
            assert np.allclose(s, s0, rtol=0, atol=tol * s0.max())
            assert nu == pytest.approx(nu0, rel=tol, abs=tol)
    # at the start the block is the whole of Phi (C block diagonal in the eigenbasis)
    assert _CrowdProblem(Xk, dual, crowd, eps, REG, False).evaluate(prob.M0)[0] == pytest.approx(dual.G, rel=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_single_precision_crowd_step_returns_phi_in_double_precision(case):
    """With ``single`` the sub-solve only steers: the dual returned is the full ``Phi`` at feasible means, evaluated
    in double precision (the same value as a fresh evaluation), and it rose."""
    X = _data(case[0], case[2])
    eps = case[1]
    Xk, dual, rho = _start_dual(X, eps, 2)
    rose = 0
    for _ in range(4):
        new, rho, _ = _crowd_step(Xk, dual, eps, REG, 10, rho, _prox_responses, near=0.5, single=True)
        if new is None:
            continue
        rose += 1
        assert new.G > dual.G and new.V.dtype == np.float64 and new.Mn.dtype == np.float64
        assert np.all(np.linalg.norm(new.Mn, axis=1) <= eps * (1 + 1e-12))
        assert new.G == _pooled_dual(Xk, new.Mn, eps, REG, dual.k).G
        dual = new
    assert rose > 0


def test_trust_region_responses_with_per_row_weights_are_the_row_by_row_ones():
    rng = np.random.default_rng(11)
    d, eps = 9, 0.8
    gaps = np.concatenate([[0.0], rng.exponential(size=d - 1)])
    B = rng.standard_normal((60, d)) * 10 ** rng.uniform(-2, 1.5, size=(60, 1))
    g0 = rng.uniform(0.1, 5.0, size=60)
    C = _prox_responses(B, gaps, g0, eps)
    for i in range(60):
        assert np.allclose(C[i], _prox_responses(B[i:i + 1], gaps, float(g0[i]), eps)[0], rtol=1e-12, atol=1e-14)
    same = _prox_responses(B, gaps, np.full(60, 0.7), eps)  # equal weights: the one-reciprocal path
    assert np.allclose(same, _prox_responses(B, gaps, 0.7, eps), rtol=0, atol=0)
    assert _prox_responses(np.zeros((0, d)), gaps, 0.7, eps).shape == (0, d)  # no rows (an empty block)
