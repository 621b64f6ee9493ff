"""The pooled R6 dual on affine interior means (:mod:`linflow.training.pooled_affine`): the compressed dual equals
the pooled dual at the explicit means (ghost rows included), its block step is the plain block step, every mean it
proposes is feasible, and the solver with the option ``affine`` stays below a status-checked cvxpy SDP optimum and
reaches it on hard-case-heavy data (where the optimum's interior means are affine, the restriction is exact)."""

from __future__ import annotations

import numpy as np
import pytest

from linflow import adversarial_fit
from linflow.training.damped import _damped_eval
from linflow.training.pooled import _prox_responses, _prox_step, _Reduced, _sample_pooled, _start
from linflow.training.pooled_affine import _AffineAscent, _AffineDual, _compressed, _Partition
from linflow.training.pooled_dual import _ball, _pooled_dual
from linflow.training.pooled_extrap import _Anderson
from linflow.validation import check_data

# the hard-case-heavy problems (points near the mean; constant coordinates and a thin direction) and the regulariser
# of the solver's tests
from tests.test_r6_solver import REG, _data


def _rare(seed: int) -> np.ndarray:
    """MNIST-like: every point spread over 3 coordinates, only 5 of 40 nonzero on 4 'rare' ones (where the filled
    space lies at the optimum): the interior data are rank-deficient (35 interior points, 4 pseudo-rows)."""
    rng = np.random.default_rng(seed)
    X = np.zeros((40, 7))
    X[:, :3] = rng.standard_normal((40, 3))
    X[:5, 3:] = 0.3 * rng.uniform(0, 1, (5, 4)) * (rng.random((5, 4)) < 0.7)
    return X


CASES = [("near-mean", 1.0, 13), ("near-mean", 2.0, 2), ("constant", 1.0, 3), ("rare", 0.6, 0), ("rare", 2.0, 1)]


def _X(kind: str, seed: int) -> np.ndarray:
    return _rare(seed) if kind == "rare" else _data(kind, seed)


def _sdp(X: np.ndarray, eps: float):
    """The S-lemma SDP optimum (cvxpy), its status checked before any comparison."""
    sdp = adversarial_fit(X, eps, attack="sample", reg=REG, solver="cvxpy", return_info=True)[1]
    assert sdp.status == "optimal" and sdp.solver_value == pytest.approx(sdp.objective, rel=1e-6)
    return sdp


def _affine_means(X: np.ndarray, eps: float, rng: np.random.Generator) -> np.ndarray:
    """Feasible means: about half the rows affine in ``x`` (well inside the ball), the rest random on the sphere."""
    n, d = X.shape
    Mn = rng.standard_normal((n, d))
    Mn *= eps / np.linalg.norm(Mn, axis=1, keepdims=True)
    inner = rng.random(n) < 0.5
    A, a = rng.standard_normal((d, d)), rng.standard_normal(d)
    MI = X[inner] @ A.T + a
    Mn[inner] = MI * (0.5 * eps / np.max(np.linalg.norm(MI, axis=1)))
    return Mn


@pytest.mark.parametrize("case", CASES)
def test_compressed_dual_is_the_pooled_dual_of_the_explicit_means(case):
    """``Phi`` on the compressed rows (``r`` pseudo-rows for the interior points) equals the pooled dual at the
    explicit means, before and after interior rows become ghosts whose explicit means then move."""
    kind, eps, seed = case
    rng = np.random.default_rng(seed)
    Xc = check_data(_X(kind, seed), REG)[0]
    red = _Reduced(Xc)
    X = Xc[:, red.keep]
    Mn = _affine_means(X, eps, rng)
    part = _Partition.build(X, Mn, eps, 1e-2)
    assert part.inner.any() and part.Q.shape[0] <= X.shape[1] + 1
    x = np.vstack([Mn[~part.inner], part.U.T @ Mn[part.inner]])
    assert np.allclose(part.explicit(x), Mn, atol=1e-13)  # affine means are exactly in the family
    ref = _pooled_dual(X, Mn, eps, REG, red.k)
    comp = _compressed(part, x, eps, REG, red.k)
    assert comp.G == pytest.approx(ref.G, rel=1e-12, abs=1e-12)
    assert np.allclose(comp.c, ref.c, rtol=1e-10, atol=1e-12) and comp.nu == pytest.approx(ref.nu, rel=1e-10)
    ghosts = np.flatnonzero(rng.random(int(part.inner.sum())) < 0.4)
    new = part.with_ghosts(ghosts)
    y = part.convert(new, x)
    assert np.allclose(new.explicit(y), Mn, atol=1e-13)
    assert _compressed(new, y, eps, REG, red.k).G == pytest.approx(ref.G, rel=1e-12, abs=1e-12)
    ne = new.XE.shape[0]
    y[ne - ghosts.size:ne] = _ball(rng.standard_normal((ghosts.size, X.shape[1])), eps)  # the ghosts move
    assert _compressed(new, y, eps, REG, red.k).G == pytest.approx(
        _pooled_dual(X, new.explicit(y), eps, REG, red.k).G, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_affine_block_step_is_the_plain_block_step_and_feasible(case):
    """From affine interior means, the compressed block step (double precision) proposes the plain block step's
    means wherever the interior responses stay inside the ball; every mean of every accepted step is feasible and
    its ``Phi`` (exact, at the explicit means) rises."""
    kind, eps, seed = case
    rng = np.random.default_rng(seed)
    Xc = check_data(_X(kind, seed), REG)[0]
    red = _Reduced(Xc)
    X = Xc[:, red.keep]
    n, d = X.shape
    ascent = _AffineAscent(X, eps, REG, red.k, _Anderson(1))  # memory 1: no Anderson mixing, the plain step
    dual = ascent._enter(_pooled_dual(X, _affine_means(X, eps, rng), eps, REG, red.k))
    assert isinstance(dual, _AffineDual)
    rho = 1.5 * dual.lam * d / n
    ascent.single = False
    step = ascent.part.explicit(ascent._step(dual, rho, _prox_responses))
    plain = _prox_step(dual, eps, rho)
    ok = np.linalg.norm(step, axis=1) < eps * (1 - 1e-9)
    ok |= ~ascent.part.inner  # explicit rows: the same trust-region step
    assert ok.any()
    assert np.allclose(step[ok], plain[ok], rtol=1e-9, atol=1e-12 * eps)
    for _ in range(30):
        new = ascent.advance(dual, rho, _prox_responses, single=False)
        if new is None:
            rho *= 3.0
            continue
        exact = _pooled_dual(X, new.Mn, eps, REG, red.k)
        assert np.all(np.linalg.norm(new.Mn, axis=1) <= eps * (1 + 1e-12))
        assert exact.G == pytest.approx(new.G, rel=1e-11, abs=1e-11) and new.G > dual.G
        dual = new


@pytest.mark.parametrize("case", CASES)
def test_affine_solver_never_above_the_sdp_and_reaches_it(case):
    """With ``affine=1`` (compressed steps from the first iteration): the certified lower bound never exceeds the
    status-checked SDP optimum, the objective is the exact R6 objective of the returned model, and the certificate
    closes to the SDP's accuracy: on these hard-case-heavy problems the affine family reaches the optimum."""
    kind, eps, seed = case
    X = _X(kind, seed)
    sdp = _sdp(X, eps)
    Xc, m, S = check_data(X, REG)
    flow, info = _sample_pooled(Xc, m, S, eps, REG, max_iter=3000, affine=1)
    scale = max(1.0, abs(sdp.objective))
    assert info.gap >= 0.0 and info.objective - info.gap <= sdp.objective + 1e-7 * scale
    assert info.objective >= sdp.objective - 1e-7 * scale
    assert info.objective == pytest.approx(_damped_eval(flow, Xc, eps, REG)[0], rel=1e-12, abs=1e-12)
    assert info.gap <= 1e-6 * scale


@pytest.mark.parametrize("kind, case_eps, seed", [("rare", 0.6, 0), ("rare", 2.0, 1)])
def test_affine_restriction_loses_nothing_at_the_optimum(kind, case_eps, seed):
    """On the rank-deficient 'rare' problems, at the plain solver's converged dual, the interior means' least-squares
    affine fit (the projection ``U U^T m_I``; fewer pseudo-rows than interior points, so a genuine restriction)
    leaves ``Phi`` at the optimum (the SDP's value, checked first) to rounding."""
    X, eps = _X(kind, seed), case_eps
    sdp = _sdp(X, eps)
    Xc, m, S = check_data(X, REG)
    red = _Reduced(Xc)
    Xk = Xc[:, red.keep]
    Mn = _start(Xc, m, S, eps, REG, None)[0][:, red.keep]
    dual = _pooled_dual(Xk, Mn, eps, REG, red.k)
    rho = 1.5 * dual.lam * Xk.shape[1] / Xk.shape[0]
    accel = _Anderson(8)
    for _ in range(3000):  # the solver's ascent: Anderson-accelerated block steps, accepted if Phi rises
        plain = _prox_step(dual, eps, rho)
        corr = accel.correction(dual.Mn, plain - dual.Mn)
        for cand in ([_ball(plain - corr, eps)] if corr is not None else []) + [plain]:
            new = _pooled_dual(Xk, cand, eps, REG, red.k)
            if new.G > dual.G:
                dual = new
                break
        else:
            rho *= 3.0
            accel.reset()
            if rho > 1e12:
                break
    scale = max(1.0, abs(sdp.objective))
    assert dual.G == pytest.approx(sdp.objective, abs=1e-6 * scale)
    part = _Partition.build(Xk, dual.Mn, eps, 1e-2)
    assert part.Q.shape[0] < int(part.inner.sum())  # a genuine restriction: fewer pseudo-rows than interior points
    fit = part.explicit(np.vstack([dual.Mn[~part.inner], part.U.T @ dual.Mn[part.inner]]))
    G = _pooled_dual(Xk, _ball(fit, eps), eps, REG, red.k).G
    assert G <= sdp.objective + 1e-7 * scale
    assert G >= dual.G - 1e-10 * scale


def test_affine_option_is_checked():
    Xc, m, S = check_data(_data("skewed", 0), REG)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="affine"):
            _sample_pooled(Xc, m, S, 1.0, REG, affine=bad)
