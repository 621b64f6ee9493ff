"""The barrier-smoothed pooled dual of R6 (linflow.training.pooled_barrier): the fill against its defining equations,
the value against the water-filled dual as mu -> 0, the gradient and Hessian-vector product against central finite
differences (eigenvalues near and below the water level, constant coordinates), and the Newton step's feasibility."""

from __future__ import annotations

import numpy as np
import pytest

from linflow.training.pooled_barrier import _barrier_fill, _barrier_step, _barrier_value, _BarrierCurvature
from linflow.training.pooled_dual import _ball, _pooled_dual

REG = 0.05


def _problem(seed: int, n: int = 20, d: int = 8, eps: float = 0.8, k: int = 0, near: bool = False):
    """Points with a spread of scales (some directions thinner than the water level), means partly interior;
    ``near``: the two smallest eigenvalues of ``cov(x + m) + reg I`` above the water level moved to 1e-3 and 3e-3
    (relative) above it (the points' singular values reset; ``nu`` depends only on the filled ones)."""
    from linflow.training.universal import _water_level

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.geomspace(2.0, 0.05, d)
    Mn = _ball(0.4 * rng.standard_normal((n, d)), eps)
    Mn[: n // 3] *= 0.3  # interior points leave budget to the pool
    if near:
        Y = X + Mn
        ybar = Y.mean(axis=0)
        U, sv, Wt = np.linalg.svd(Y - ybar, full_matrices=False)
        c = sv**2 / n + REG
        tau = eps**2 - float(np.sum(Mn**2)) / n
        nu = _water_level(np.sort(np.concatenate([c, np.full(k, REG)])), np.sqrt(tau))
        above = np.flatnonzero(c > nu)
        above = above[np.argsort(c[above])][:2]
        assert nu > REG and above.size == 2
        c[above] = nu * np.array([1.001, 1.003])
        X = (U * np.sqrt((c - REG) * n)) @ Wt + ybar - Mn
    return X, Mn, eps


def _fd_grad(X, Mn, eps, k, mu):
    """``(Phi_mu, d Phi_mu / d m)`` from the module's formula in original coordinates."""
    bar = _barrier_value(_pooled_dual(X, Mn, eps, REG, k), eps, mu)
    cur = _BarrierCurvature(bar)
    return bar.G, cur.grad() @ bar.dual.V.T


@pytest.mark.parametrize("mu", [1e-2, 1e-6, 1e-10])
def test_barrier_fill_solves_its_equations(mu):
    """``1 / (c + r) + mu / r = kappa`` for every eigenvalue, ``sum r = tau``, ``r > 0``; as ``mu -> 0`` the fill
    tends to the water-filling ``(nu - c)_+`` (R5)."""
    rng = np.random.default_rng(3)
    c = np.sort(rng.uniform(0.01, 2.0, 12))
    c[3:6] = c[2] * (1 + np.array([1e-6, 1e-4, 1e-2]))  # crowded near each other
    tau = 0.3
    r, kappa = _barrier_fill(c, tau, mu)
    assert np.all(r > 0)
    assert r.sum() == pytest.approx(tau, rel=1e-12)
    np.testing.assert_allclose(1.0 / (c + r) + mu / r, kappa, rtol=1e-12)
    from linflow.training.universal import _water_level

    nu = _water_level(c, np.sqrt(tau))
    if mu <= 1e-10:
        np.testing.assert_allclose(r, np.maximum(nu - c, 0.0), atol=1e-4)
        assert kappa == pytest.approx(1.0 / nu, rel=1e-4)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="tau"):
            _barrier_fill(c, bad, mu)
    with pytest.raises(ValueError, match="mu"):
        _barrier_fill(c, tau, 0.0)


@pytest.mark.parametrize("k", [0, 3])
def test_barrier_value_below_and_tends_to_the_water_filled_dual(k):
    """``R_mu`` is feasible for the water-filling (``tr = tau``, ``R > 0``), so ``log det(C + R_mu) <= H`` (the
    true ``Phi``); and ``Phi_mu -> Phi`` as ``mu -> 0`` (``mu log det R -> 0``)."""
    X, Mn, eps = _problem(5)
    dual = _pooled_dual(X, Mn, eps, REG, k)
    assert np.any(dual.c < dual.nu)  # some directions filled
    n = X.shape[0]
    tau = eps**2 - float(np.sum(Mn**2)) / n
    errs = []
    for mu in (1e-3, 1e-5, 1e-7, 1e-9, 1e-11):
        bar = _barrier_value(dual, eps, mu)
        assert np.all(bar.r > 0) and bar.r.sum() == pytest.approx(tau, rel=1e-12)
        call = np.concatenate([dual.c, np.full(k, REG)])
        logdet = float(np.sum(np.log(call + bar.r)))
        D = call.size
        assert 0.5 * (D + logdet + D * np.log(2 * np.pi)) <= dual.G + 1e-12
        errs.append(abs(bar.G - dual.G))
    assert errs[-1] < 1e-8 and errs == sorted(errs, reverse=True)


@pytest.mark.parametrize(("k", "near", "mu"), [(0, False, 1e-3), (3, False, 1e-5), (0, True, 1e-6), (2, True, 1e-8)])
def test_barrier_gradient_and_hessian_vector_product_match_finite_differences(k, near, mu):
    """The gradient of ``Phi_mu`` against central differences of its value, the Hessian-vector product against
    central differences of the gradient (filled directions, eigenvalues just above the level, constant
    coordinates)."""
    X, Mn, eps = _problem(7 + k, k=k, near=near)
    bar = _barrier_value(_pooled_dual(X, Mn, eps, REG, k), eps, mu)
    dual = bar.dual
    assert np.any(dual.c < dual.nu) or (k and REG < dual.nu)
    if near:
        gap = dual.c[dual.c > dual.nu][:2] / dual.nu - 1.0
        assert gap.max() < 4e-3  # eigenvalues crowd just above the level
    cur = _BarrierCurvature(bar)
    G, g = _fd_grad(X, Mn, eps, k, mu)
    rng = np.random.default_rng(1)
    h = 1e-5
    for _ in range(3):
        v = 0.05 * rng.standard_normal(Mn.shape)
        dG = (_fd_grad(X, Mn + h * v, eps, k, mu)[0] - _fd_grad(X, Mn - h * v, eps, k, mu)[0]) / (2 * h)
        assert dG == pytest.approx(float(np.vdot(g, v)), rel=1e-6, abs=1e-12)
        hh = 1e-6
        fd = (_fd_grad(X, Mn + hh * v, eps, k, mu)[1] - _fd_grad(X, Mn - hh * v, eps, k, mu)[1]) / (2 * hh)
        hv = cur.hess_vec(v @ dual.V) @ dual.V.T
        assert np.abs(fd - hv).max() <= 1e-5 * np.abs(hv).max()
        assert float(np.vdot(v @ dual.V, cur.hess_vec(v @ dual.V))) < 0  # concave


def test_barrier_path_following_reaches_the_certified_optimum():
    """Newton-CG steps on ``Phi_mu`` raise it, at feasible means whose ``dual.G`` is the true water-filled ``Phi``
    (recomputed independently); following the path (mu from 1e-3 down to 1e-8) the true ``Phi`` reaches the optimum
    of the R6 problem, certified independently by the block ascent (its gap 0: ``min F = max Phi``)."""
    from linflow.training.pooled import _sample_pooled
    from linflow.validation import check_data

    X, Mn, eps = _problem(11, n=30, d=8)
    Xc, m, S = check_data(X, REG)
    _, info = _sample_pooled(Xc, m, S, eps, REG, max_iter=5000, tol=1e-13, polish=0)
    assert info.converged
    bar = _barrier_value(_pooled_dual(X, Mn, eps, REG, 0), eps, 1e-3)
    first, tries = _barrier_step(X, bar, eps, REG, cg_iter=50)
    assert first is not None and first.G > bar.G and tries >= 1
    assert np.all(np.linalg.norm(first.dual.Mn, axis=1) <= eps * (1 + 1e-12))
    assert first.dual.G == pytest.approx(_pooled_dual(X, first.dual.Mn, eps, REG, 0).G, rel=0, abs=1e-12)
    bar = first
    for mu in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8):
        bar = _barrier_value(bar.dual, eps, mu)
        for _ in range(30):
            nxt, _ = _barrier_step(X, bar, eps, REG, cg_iter=50)
            if nxt is None:
                break
            bar = nxt
    assert bar.dual.G <= info.objective + 1e-12  # a lower bound
    assert info.objective - bar.dual.G < 1e-11


@pytest.mark.parametrize("mu", [1e-3, 1e-7])
def test_ball_barrier_gradient_and_hessian_vector_product_match_finite_differences(mu):
    """With the ball barrier on the interior points (``inner``): gradient and Hessian-vector product of ``Phi_mu``
    against central differences; outside a ball the value is ``-inf``."""
    X, Mn, eps = _problem(4, near=True)
    inner = np.einsum("ij,ij->i", Mn, Mn) < 0.9 * eps**2
    assert 0 < inner.sum() < inner.size

    def val_grad(M):
        bar = _barrier_value(_pooled_dual(X, M, eps, REG, 0), eps, mu, inner)
        return bar.G, _BarrierCurvature(bar, eps).grad() @ bar.dual.V.T

    bar = _barrier_value(_pooled_dual(X, Mn, eps, REG, 0), eps, mu, inner)
    cur = _BarrierCurvature(bar, eps)
    g = val_grad(Mn)[1]
    rng = np.random.default_rng(2)
    for _ in range(3):
        v = 0.05 * rng.standard_normal(Mn.shape)
        h = 1e-5
        dG = (val_grad(Mn + h * v)[0] - val_grad(Mn - h * v)[0]) / (2 * h)
        assert dG == pytest.approx(float(np.vdot(g, v)), rel=1e-6)
        h = 1e-6
        fd = (val_grad(Mn + h * v)[1] - val_grad(Mn - h * v)[1]) / (2 * h)
        hv = cur.hess_vec(v @ bar.dual.V) @ bar.dual.V.T
        assert np.abs(fd - hv).max() <= 1e-5 * np.abs(hv).max()
    out = Mn.copy()
    i = int(np.flatnonzero(inner)[0])
    out[i] *= 1.01 * eps / np.linalg.norm(out[i])
    assert _barrier_value(_pooled_dual(X, out, eps, REG, 0), eps, mu, inner).G == -np.inf
    with pytest.raises(ValueError, match="eps"):
        _BarrierCurvature(bar)


def test_barrier_curvature_on_some_rows_is_the_restriction_of_the_full_one():
    """``rows`` (only those points move): gradient and Hessian-vector product are the rows of the full ones (the
    full ones checked against finite differences above) for ``v`` zero outside ``rows``; with the ball barrier."""
    X, Mn, eps = _problem(9, near=True)
    inner = np.einsum("ij,ij->i", Mn, Mn) < 0.9 * eps**2
    bar = _barrier_value(_pooled_dual(X, Mn, eps, REG, 2), eps, 1e-6, inner)
    rows = np.flatnonzero(inner)
    full, part = _BarrierCurvature(bar, eps), _BarrierCurvature(bar, eps, rows)
    np.testing.assert_allclose(part.grad(), full.grad()[rows], rtol=0, atol=1e-14)
    v = np.zeros(Mn.shape)
    v[rows] = np.random.default_rng(0).standard_normal((rows.size, Mn.shape[1]))
    np.testing.assert_allclose(part.hess_vec(v[rows]), full.hess_vec(v)[rows], rtol=0,
                               atol=1e-12 * np.abs(full.hess_vec(v)).max())


def test_interior_barrier_step_moves_only_the_interior_points():
    """``interior=True``: the points on the sphere keep their means; ``Phi_mu`` rises."""
    X, Mn, eps = _problem(11, n=30, d=8)
    Mn = Mn * (eps / np.linalg.norm(Mn, axis=1))[:, None]  # all on the sphere, then 8 inside
    Mn[:8] *= 0.5
    bar = _barrier_value(_pooled_dual(X, Mn, eps, REG, 0), eps, 1e-4)
    new, _ = _barrier_step(X, bar, eps, REG, cg_iter=20, interior=True)
    assert new is not None and new.G > bar.G
    np.testing.assert_allclose(new.dual.Mn[8:], Mn[8:], rtol=0, atol=1e-14)  # rotated back: rounding only
    assert np.abs(new.dual.Mn[:8] - Mn[:8]).max() > 1e-6
