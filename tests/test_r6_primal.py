"""The upper bound of the pooled R6 solver: the block Cayley rotation of the repair and polish
(:class:`linflow.training.pooled_primal._Cayley`), the polished model against a status-checked cvxpy SDP on
hard-case-heavy data, and the ``polish_first`` option of :func:`linflow.training.pooled._sample_pooled`."""

from __future__ import annotations

import numpy as np
import pytest

from linflow import adversarial_fit
from linflow.training.damped import _damped_eval
from linflow.training.pooled import _Reduced, _sample_pooled
from linflow.training.pooled_polish import _polish, _Rotated
from linflow.training.pooled_primal import _Cayley, _skew
from linflow.validation import check_data

# the hard-case-heavy problems (points near the mean; constant coordinates and a thin direction), the regulariser
# and the dual after a few plain block steps are those of the solver's tests
from tests.test_r6_solver import REG, _data, _dual_after


def _sdp(X: np.ndarray, eps: float):
    """The S-lemma SDP optimum (cvxpy), its status checked before any comparison."""
    sdp = adversarial_fit(X, eps, attack="sample", reg=REG, solver="cvxpy", return_info=True)[1]
    assert sdp.status == "optimal" and sdp.solver_value == pytest.approx(sdp.objective, rel=1e-6)
    return sdp


@pytest.mark.parametrize("scale", [1e-3, 0.3, 3.0])
def test_block_cayley_is_the_dense_cayley_transform(scale):
    """``_Cayley`` by blocks equals the dense ``(I - S/2)^{-1} (I + S/2)`` of the skew generator (``_skew``), with
    ``M^{-1}``, ``M^{-T}`` and the mean's move ``R[:, J] b``, for interleaved index arrays and for blocks given as
    slices, small and large turns; ``R`` is orthogonal."""
    rng = np.random.default_rng(7)
    d, kJ = 9, 3
    jj = np.array([1, 4, 8])
    uu = np.setdiff1d(np.arange(d), jj)
    Z = scale * rng.standard_normal((d - kJ + 1, kJ))
    S = _skew(d, jj, uu, Z)
    M = np.eye(d) - 0.5 * S
    R = np.linalg.solve(M, np.eye(d) + 0.5 * S)
    Y = rng.standard_normal((5, d))
    rot = _Cayley(jj, uu, Z)
    np.testing.assert_allclose(rot.dense(), R, rtol=0, atol=1e-12 * max(1.0, scale**2))
    np.testing.assert_allclose(rot.dense().T @ rot.dense(), np.eye(d), rtol=0, atol=1e-12)
    np.testing.assert_allclose(rot.inv_m(Y), Y @ np.linalg.inv(M), rtol=0, atol=1e-12)
    np.testing.assert_allclose(rot.inv_m(Y, transpose=True), Y @ np.linalg.inv(M).T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rot.shift(), R[:, jj] @ Z[-1], rtol=0, atol=1e-12 * max(1.0, scale**2))
    perm = np.concatenate([jj, uu])  # the same turn with the columns stored in blocks (J, U)
    blocked = _Cayley(slice(0, kJ), slice(kJ, d), Z)
    np.testing.assert_allclose(blocked.rotate(Y[:, perm]), (Y @ R)[:, perm], rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", [("near-mean", 1.0, 13), ("near-mean", 2.0, 2), ("constant", 1.0, 3)])
def test_polished_model_is_exact_and_never_below_the_sdp(case):
    """At a dual short of its optimum: the polish's F at random turns is the exact R6 objective of the model it
    describes (recomputed through the flow, independently of the block rotation); the returned model's F is exact,
    not above F at the dual's primal, and never below the SDP optimum (solved, status checked first)."""
    kind, eps, seed = case
    X = _data(kind, seed)
    sdp = _sdp(X, eps)
    scale = max(1.0, abs(sdp.objective))
    for steps in (2, 8):
        Xc, red, dual = _dual_after(X, eps, steps)
        assert (dual.c < dual.nu).any() and not (dual.c < dual.nu).all()  # the precondition: something to turn
        rot = _Rotated(dual, eps, dual.k, REG)
        rng = np.random.default_rng(seed + steps)
        for size in (1e-3, 0.1):
            Z = size * rng.standard_normal((rot.uu.size + 1, rot.jj.size))
            exact = _damped_eval(red.flow(rot.model(Z)), Xc, eps, REG)[0]
            assert rot.evaluate(Z)["F"] == pytest.approx(exact, rel=1e-10, abs=1e-10)
            assert exact >= sdp.objective - 1e-7 * scale
        F, model = _polish(dual, eps, REG, steps=6)
        exact = _damped_eval(red.flow(model), Xc, eps, REG)[0]
        assert F == pytest.approx(exact, rel=1e-12, abs=1e-12)
        assert F <= red.objective(dual, eps, REG) + 1e-12 * scale
        assert F >= sdp.objective - 1e-7 * scale


def test_polish_at_the_fixed_point_returns_the_sdp_optimum(monkeypatch):
    """At the dual the solver ends with after 600 iterations (``tol=0``: it never stops as converged, so the polish
    runs), the certified gap is at rounding level, and the polished model's exact F equals the SDP optimum (solved,
    checked first) to the SDP's accuracy and is never below it: the polish does not leave the optimum."""
    from linflow.training import pooled

    X, eps = _data("near-mean", 13), 1.0
    sdp = _sdp(X, eps)
    scale = max(1.0, abs(sdp.objective))
    Xc, m, S = check_data(X, REG)
    seen = []

    def recording(dual, *args, **kwargs):
        seen.append(dual)
        return _polish(dual, *args, **kwargs)

    monkeypatch.setattr(pooled, "_polish", recording)
    _, info = _sample_pooled(Xc, m, S, eps, REG, max_iter=600, tol=0.0)
    assert len(seen) == 1 and info.gap <= 1e-9 * scale
    dual, red = seen[0], _Reduced(Xc)
    assert (dual.c < dual.nu).any() and not (dual.c < dual.nu).all()  # filled directions and interior points remain
    F, model = _polish(dual, eps, REG, steps=6)
    exact = _damped_eval(red.flow(model), Xc, eps, REG)[0]
    assert F == pytest.approx(exact, rel=1e-12, abs=1e-12)
    assert F >= sdp.objective - 1e-7 * scale
    assert F == pytest.approx(sdp.objective, rel=1e-6, abs=1e-6)
    assert F <= red.objective(dual, eps, REG) + 1e-12 * scale


def test_polish_first_option():
    """``polish_first`` only changes what happens when ``max_seconds`` ends the ascent: without a time limit the
    results are identical; with a limit that ends it at once, both settings return the exact objective of the
    returned model, certified against the SDP (solved, checked first); a bad value is named."""
    X, eps = _data("near-mean", 13), 1.0
    sdp = _sdp(X, eps)
    scale = max(1.0, abs(sdp.objective))
    Xc, m, S = check_data(X, REG)
    a = _sample_pooled(Xc, m, S, eps, REG, max_iter=8, polish_first=False)[1]
    b = _sample_pooled(Xc, m, S, eps, REG, max_iter=8)[1]
    assert a.objective == b.objective and a.gap == b.gap and a.history == b.history
    for first in (False, True):
        for seconds in (1e-4, 0.05):
            flow, info = _sample_pooled(Xc, m, S, eps, REG, max_iter=3000, max_seconds=seconds, polish_first=first)
            assert info.objective == pytest.approx(_damped_eval(flow, Xc, eps, REG)[0], rel=1e-12, abs=1e-12)
            assert info.objective - info.gap <= sdp.objective + 1e-7 * scale
            assert info.objective >= sdp.objective - 1e-7 * scale
    with pytest.raises(TypeError, match="polish_first"):
        _sample_pooled(Xc, m, S, eps, REG, polish_first=1)


def _free_case(kind: str, eps: float, seed: int, steps: int):
    """A dual short of its optimum with something filled and something not, and the smooth step's parametrisation
    around its primal (:class:`linflow.training.pooled_prim_smooth._Free`)."""
    from linflow.training.pooled_prim_smooth import _Free

    X = _data(kind, seed)
    Xc, red, dual = _dual_after(X, eps, steps)
    assert (dual.c < dual.nu).any() and not (dual.c < dual.nu).all()  # the precondition: J and U both non-empty
    return X, Xc, red, dual, _Free(dual, eps, REG)


@pytest.mark.parametrize("case", [("near-mean", 1.0, 13, 4), ("near-mean", 2.0, 2, 8), ("constant", 1.0, 3, 4)])
def test_free_step_value_is_the_exact_objective_and_its_gradient_matches_differences(case):
    """The smooth primal step's ``F`` at random ``(E, e, g)`` is the exact R6 objective of the model it describes
    (recomputed through the flow, independently), and its envelope gradient matches central differences of that
    exact ``F`` along each block of parameters (``E``, ``e``, ``g``) where the model stays in the smooth domain."""
    kind, eps, seed, steps = case
    X, Xc, red, dual, fr = _free_case(kind, eps, seed, steps)
    rng = np.random.default_rng(seed)
    for size in (0.0, 1e-3, 3e-2):
        z = size * rng.standard_normal(fr.size)
        F, g = fr.evaluate(z)
        assert np.isfinite(F)
        exact = _damped_eval(red.flow(fr.model(z)), Xc, eps, REG)[0]
        assert F == pytest.approx(exact, rel=1e-10, abs=1e-10)
        for block in (slice(0, fr.nE), slice(fr.nE, fr.nE + 1), slice(fr.nE + 1, fr.size)):
            dz = np.zeros(fr.size)
            dz[block] = rng.standard_normal(dz[block].size)
            dz /= np.linalg.norm(dz)
            h = 1e-6
            fd = (fr.evaluate(z + h * dz, grad=False)[0] - fr.evaluate(z - h * dz, grad=False)[0]) / (2 * h)
            assert fd == pytest.approx(float(g @ dz), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("case", [("near-mean", 1.0, 13, 4), ("near-mean", 2.0, 2, 8), ("constant", 1.0, 3, 4)])
def test_free_step_lowers_f_and_never_goes_below_the_sdp(case):
    """The step returns the exact F of the model it returns, not above F at its start, never below the SDP optimum
    (solved, status checked first); outside the domain (``J`` no longer the top eigenspace) ``evaluate`` is inf."""
    from linflow.training.pooled_prim_smooth import _free_step

    kind, eps, seed, steps = case
    X, Xc, red, dual, fr = _free_case(kind, eps, seed, steps)
    sdp = _sdp(X, eps)
    scale = max(1.0, abs(sdp.objective))
    F0 = red.objective(dual, eps, REG)
    F, model, info = _free_step(dual, eps, REG, maxcalls=30)
    exact = _damped_eval(red.flow(model), Xc, eps, REG)[0]
    assert F == pytest.approx(exact, rel=1e-12, abs=1e-12)
    assert F <= F0 + 1e-12 * scale
    assert F >= sdp.objective - 1e-7 * scale
    z = np.zeros(fr.size)
    z[fr.nE] = -0.999  # the eigenvalue of J 1000 times larger: J is no longer the top eigenspace of P
    assert fr.evaluate(z) == (np.inf, None)


def test_free_option_of_the_solver():
    """``free`` runs the smooth step after the polish: with it the solver returns the exact objective of the model
    it returns, not above the one without it (same ascent: no time limit), certified against the SDP (solved,
    checked first), with and without a time limit; a bad value is named."""
    X, eps = _data("near-mean", 13), 1.0
    sdp = _sdp(X, eps)
    scale = max(1.0, abs(sdp.objective))
    Xc, m, S = check_data(X, REG)
    off = _sample_pooled(Xc, m, S, eps, REG, max_iter=8, free=0)[1]
    flow, on = _sample_pooled(Xc, m, S, eps, REG, max_iter=8, free=16)
    assert on.objective < off.objective and on.objective - on.gap == off.objective - off.gap  # it runs and helps here
    for seconds in (None, 0.05):
        flow, info = _sample_pooled(Xc, m, S, eps, REG, max_iter=8 if seconds is None else 3000, max_seconds=seconds)
        assert info.objective == pytest.approx(_damped_eval(flow, Xc, eps, REG)[0], rel=1e-12, abs=1e-12)
        assert info.objective - info.gap <= sdp.objective + 1e-7 * scale
        assert info.objective >= sdp.objective - 1e-7 * scale
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="free"):
            _sample_pooled(Xc, m, S, eps, REG, free=bad)
