"""The smooth filled-subspace bound ``Phi_F`` of the pooled dual (linflow.training.pooled_fill) against the water-filled
``Phi`` and a status-checked cvxpy SDP, on the small hard-case-heavy cases of tests/test_r6_k.py (rare coordinates
exactly zero in most points, a constant coordinate): ``Phi_F = Phi`` at the exact filled eigenspace, its gradient
agrees with central differences, ``Phi_F <= Phi <= SDP`` wherever ``R`` is PSD, every mean the ascent returns is
feasible and the true ``Phi`` never falls through it."""

from __future__ import annotations

import numpy as np
import pytest

from linflow.training.pooled_dual import _pooled_dual
from linflow.training.pooled_fill import _fill_ascent, _fill_space, _FillBound
from tests.test_r6_dual import REG, _ascent, sdp_references
from tests.test_r6_k import CASES, _data, _feasible


@pytest.fixture(scope="module")
def sdps():
    return sdp_references(CASES, _data)


def _state(case, steps: int = 40):
    """``(Xk, dual, free)``: the reduced points, the dual after ``steps`` block steps, its interior rows."""
    X = _data(case[0], case[2])
    eps = case[1]
    Xk, duals, _ = _ascent(X, eps, steps)
    dual = duals[-1]
    return Xk, dual, np.linalg.norm(dual.Mn, axis=1) < eps * (1.0 - 1e-3)


@pytest.mark.parametrize("case", CASES)
def test_phi_f_is_phi_at_the_filled_eigenspace(case):
    """With ``F`` the eigenvectors of ``C`` below the water level (and the constant coordinates), ``R = nu_F I - Sch``
    is the water-filling itself: ``Phi_F = Phi`` to rounding, ``nu_F = nu`` and ``R`` is PSD."""
    Xk, dual, free = _state(case)
    eps = case[1]
    assert free.any() and np.any(dual.c < dual.nu)
    val = _FillBound(Xk, dual.Mn, free, _fill_space(dual, 0.0), eps, REG, dual.k)(dual.Mn[free])
    assert val.G == pytest.approx(dual.G, rel=1e-12, abs=0)
    assert val.nu == pytest.approx(dual.nu, rel=1e-10)
    assert val.valid


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_phi_f_gradient_matches_central_differences(case, delta):
    """The gradient ``(W (y_i - ybar) - m_i / nu_F) / n`` along random directions of the free rows, against central
    differences of the value, for a fixed ``F`` (PSD ``R`` or not: the formula is the derivative either way)."""
    Xk, dual, free = _state(case)
    eps = case[1]
    rng = np.random.default_rng(7)
    # a generic F: the filled space plus (with delta) more eigenvectors, turned by a small random rotation
    VF = _fill_space(dual, delta)
    VF = np.linalg.qr(VF + 0.05 * rng.standard_normal(VF.shape))[0]
    prob = _FillBound(Xk, dual.Mn, free, VF, eps, REG, dual.k)
    MI = dual.Mn[free] * 0.9
    val = prob(MI)
    for _ in range(3):
        D = rng.standard_normal(MI.shape)
        h = 1e-5
        fd = (prob(MI + h * D, grad=False).G - prob(MI - h * D, grad=False).G) / (2 * h)
        assert float(np.vdot(val.grad, D)) == pytest.approx(fd, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_phi_f_is_below_phi_and_the_sdp_where_r_is_psd(sdps, case):
    """Moving the interior means with ``F`` held: wherever ``R = nu_F I - Sch`` is PSD, ``Phi_F <= Phi <= SDP
    optimum``; adding an unfilled eigenvector to the filled space always makes ``R`` indefinite (``nu_F`` becomes
    ``nu + (c_u - nu) / f'``, below ``c_u``), and then ``Phi_F > Phi``."""
    X, sdp = sdps[case]
    Xk, dual, free = _state(case)
    eps = case[1]
    VF = _fill_space(dual, 0.0)
    prob = _FillBound(Xk, dual.Mn, free, VF, eps, REG, dual.k)
    rng = np.random.default_rng(3)
    seen = 0
    for scale in (1e-3, 1e-2, 3e-2, 1e-1):
        for _ in range(5):
            Mn = dual.Mn.copy()
            Mn[free] += scale * rng.standard_normal(Mn[free].shape)
            Mn[free] *= np.minimum(1.0, eps * (1 - 1e-3) / np.linalg.norm(Mn[free], axis=1))[:, None]
            val = prob(Mn[free], grad=False)
            phi = _pooled_dual(Xk, Mn, eps, REG, dual.k).G
            assert phi <= sdp + 1e-7 * max(1.0, abs(sdp))
            if val.valid:
                seen += 1
                assert val.G <= phi + 1e-10 * max(1.0, abs(phi))
    assert seen >= 5  # the check was exercised
    above = np.flatnonzero(dual.c > dual.nu)
    if above.size:
        VF2 = np.concatenate([VF, dual.V[:, above[:1]]], axis=1)
        val = _FillBound(Xk, dual.Mn, free, VF2, eps, REG, dual.k)(dual.Mn[free], grad=False)
        assert not val.valid and val.G > dual.G


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("delta", [0.0, 0.3])
def test_fill_ascent_returns_feasible_means_and_never_lowers_phi(sdps, case, delta):
    """The ascent's result: None, or the dual at feasible means whose ``Phi`` rose and stays below the SDP; with
    ``keep_valid`` its last ``Phi_F`` is a valid bound below that ``Phi``."""
    _, sdp = sdps[case]
    Xk, dual, _ = _state(case, steps=10)
    eps = case[1]
    for _ in range(3):
        trace: list = []
        new, info = _fill_ascent(Xk, dual, eps, REG, delta=delta, iters=15, trace=trace)
        assert _feasible(info["means"], eps)
        assert all(r <= 1e-12 for _, _, r in trace)  # every accepted iterate kept R PSD
        if new is None:
            assert _pooled_dual(Xk, info["means"], eps, REG, dual.k).G <= dual.G
            break
        assert _feasible(new.Mn, eps)
        assert new.G > dual.G
        assert new.G <= sdp + 1e-7 * max(1.0, abs(sdp))
        if info["valid"]:
            assert info["G_F"] <= new.G + 1e-10 * max(1.0, abs(new.G))
        dual = new


def test_fill_bound_rejects_an_empty_filled_space():
    X = np.random.default_rng(0).standard_normal((6, 3))
    with pytest.raises(ValueError, match="VF"):
        _FillBound(X, np.zeros_like(X), np.ones(6, dtype=bool), np.zeros((3, 0)), 1.0, REG, 0)
