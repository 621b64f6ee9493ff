"""The L2 kernel (linflow.secular, R1, R2) at extreme scales: eps and ||w|| from 1e-300 to 1e300, where the root of
the secular equation leaves the double range and linflow.secular_scale rescales by powers of two.

The reference is independent of the kernel: the secular equation solved by geometric bisection in mpmath with 60
digits (mpmath numbers have an unbounded exponent, so no scaling is involved), the hard case decided exactly.
Before the rescaling, eps = 1e-170 with ||w|| ~ 1e200 returned c = 0 in both directions, and eps = 1e170 with
||w|| ~ 1e-200 returned NaN when lowering.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from linflow.secular import _lower_likelihood, _raise_likelihood, lower_likelihood, raise_likelihood

_DPS = 60


def _bisect(phi, hi):
    """The root of the decreasing ``phi`` in ``(hi 1e-1000, hi]`` by geometric bisection (``phi(hi) <= 0``)."""
    lo = hi * mpmath.mpf(10) ** -1000
    for _ in range(400):
        mid = mpmath.sqrt(lo * hi)
        if phi(mid) > 0:
            lo = mid
        else:
            hi = mid
    return hi


def mp_lower(s: np.ndarray, w: np.ndarray, eps: float) -> tuple[list, object]:
    """R1 in mpmath: ``(c, eta)``, ``c_i = a_i / (g + gap_i)`` with ``||c|| = eps``, or the hard case."""
    with mpmath.workdps(_DPS):
        S = [mpmath.mpf(float(x)) for x in s]
        p = [1 / x for x in S]
        gaps = [p[0] - q for q in p]
        a = [mpmath.mpf(float(x)) * q for x, q in zip(w, p)]
        E = mpmath.mpf(float(eps))
        block = [gi == 0 for gi in gaps]
        if all(ai == 0 for ai, b in zip(a, block) if b):
            off = [ai / gi if not b else mpmath.mpf(0) for ai, gi, b in zip(a, gaps, block)]
            n2 = mpmath.fsum(x**2 for x in off)
            if n2 <= E**2:  # the hard case: the missing norm on the first eigenvector, c_0 >= 0
                off[0] = mpmath.sqrt(E**2 - n2)
                return off, p[0]

        def phi(g):
            return mpmath.fsum((ai / (g + gi)) ** 2 for ai, gi in zip(a, gaps) if ai != 0) - E**2

        g = _bisect(phi, mpmath.sqrt(mpmath.fsum(x**2 for x in a)) / E)
        return [ai / (g + gi) for ai, gi in zip(a, gaps)], p[0] + g


def mp_raise(s: np.ndarray, w: np.ndarray, eps: float) -> tuple[list, object]:
    """R2 in mpmath: ``(c, eta)``, ``c_i = -a_i / (eta + p_i)`` with ``||c|| = eps``, or ``-w`` inside the ball."""
    with mpmath.workdps(_DPS):
        p = [1 / mpmath.mpf(float(x)) for x in s]
        W = [mpmath.mpf(float(x)) for x in w]
        E = mpmath.mpf(float(eps))
        if mpmath.fsum(x**2 for x in W) <= E**2:
            return [-x for x in W], mpmath.mpf(0)
        a = [x * q for x, q in zip(W, p)]

        def phi(eta):
            return mpmath.fsum((ai / (eta + q)) ** 2 for ai, q in zip(a, p)) - E**2

        eta = _bisect(phi, mpmath.sqrt(mpmath.fsum(x**2 for x in a)) / E)
        return [-ai / (eta + q) for ai, q in zip(a, p)], eta


def _check(C: np.ndarray, eta: np.ndarray, ref: tuple[list, object], eps: float) -> None:
    """``||C - c_ref|| <= 1e-12 eps`` (a few ulps of each entry); ``eta`` to 1e-9 where the reference is a double,
    ``inf`` where it is above the double range and ``>= 0`` below it. (The iteration stops on ``||c|| = eps`` to 4
    ulps plus one unevaluated Halley step: that pins ``c``; ``eta`` was seen 5e-11 off on one ordinary row of
    :func:`test_mixed_batch_rescales_only_the_far_rows`, g ~ 1e204, eps = 0.3, before the rescaling existed too.)"""
    c_ref, eta_ref = ref
    with mpmath.workdps(_DPS):
        err = mpmath.sqrt(mpmath.fsum((mpmath.mpf(float(x)) - y) ** 2 for x, y in zip(C, c_ref)))
        assert err <= mpmath.mpf("1e-12") * mpmath.mpf(float(eps)), (C, c_ref)
        if eta_ref > mpmath.mpf(float(np.finfo(np.float64).max)):
            assert eta == np.inf
        elif eta_ref > mpmath.mpf("1e-290"):
            assert abs(mpmath.mpf(float(eta)) - eta_ref) <= mpmath.mpf("1e-9") * eta_ref
        else:
            assert eta >= 0.0


SCALES = [1e-300, 1e-200, 1e-100, 1.0, 1e100, 1e200, 1e300]


def _spectrum(seed: int, d: int = 6, log_cond: float = 4.0, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = np.sort(10.0 ** rng.uniform(-log_cond, 0.0, d)) * 10.0**shift
    return s, rng.standard_normal(d)


@pytest.mark.parametrize("w_scale", SCALES)
@pytest.mark.parametrize("eps", [1e-300, 1e-170, 1e-50, 1.0, 1e50, 1e170, 1e300])
def test_extreme_eps_and_w_match_multiprecision(w_scale, eps):
    """Every combination of ||w|| and eps between 1e-300 and 1e300 (ratios up to 1e600), both directions."""
    s, w0 = _spectrum(0)
    W = (w0 * w_scale)[None]
    lo, up = lower_likelihood(s, W, eps), raise_likelihood(s, W, eps)
    _check(lo.C[0], lo.eta[0], mp_lower(s, W[0], eps), eps)
    _check(up.C[0], up.eta[0], mp_raise(s, W[0], eps), eps)


@pytest.mark.parametrize("case", [(1e-170, 1e200, 0.0), (1e170, 1e-200, 0.0), (1e-300, 1e150, 50.0),
                                  (1e-250, 1e100, -50.0), (1e200, 1e-100, -20.0), (1e-170, 1e200, 8.0)])
def test_extreme_covariance_scales_and_conditioning(case):
    """Spectra scaled by 1e-50 .. 1e50 and condition numbers up to 1e8 (a root far from 1 and gaps far from it)."""
    eps, w_scale, shift = case
    for seed, log_cond in ((1, 8.0), (2, 1.0)):
        s, w0 = _spectrum(seed, d=5, log_cond=log_cond, shift=shift)
        W = (w0 * w_scale)[None]
        lo, up = lower_likelihood(s, W, eps), raise_likelihood(s, W, eps)
        _check(lo.C[0], lo.eta[0], mp_lower(s, W[0], eps), eps)
        _check(up.C[0], up.eta[0], mp_raise(s, W[0], eps), eps)


@pytest.mark.parametrize("eps", [1e-170, 1e170])
def test_hard_case_at_extreme_scale(eps):
    """No mass on the s_min eigenvector: with eps = 1e170 and ||w|| ~ 1e-200 lowering is the hard case (the whole
    budget on u_min, c_0 >= 0); with eps = 1e-170 and ||w|| ~ 1e200 it is not (the root is ~1e370)."""
    s, w0 = _spectrum(3)
    w0[0] = 0.0
    W = (w0 * (1e-200 if eps > 1 else 1e200))[None]
    sol = lower_likelihood(s, W, eps)
    ref = mp_lower(s, W[0], eps)
    _check(sol.C[0], sol.eta[0], ref, eps)
    assert bool(sol.hard[0]) == (eps > 1)


@pytest.mark.parametrize("solver", [_lower_likelihood, _raise_likelihood])
def test_mixed_batch_rescales_only_the_far_rows(solver):
    """A batch mixing ordinary rows with rows at 1e200 and 1e-200 (eps = 1e-170 and 1e170): the ordinary rows are
    bit for bit what they are alone, the far rows match the reference, and ``overwrite=True`` changes nothing."""
    s, _ = _spectrum(4, d=7)
    rng = np.random.default_rng(5)
    W = rng.standard_normal((9, 7))
    W[1::3] *= 1e200
    W[2::3] *= 1e-200
    plain = W[::3]
    for eps in (1e-170, 0.3, 1e170):
        sol = solver(s, W.copy(), eps)
        again = solver(s, W.copy(), eps, overwrite=True)
        np.testing.assert_array_equal(sol.C, again.C)
        np.testing.assert_array_equal(sol.C[::3], solver(s, plain.copy(), eps).C)
        ref = mp_lower if solver is _lower_likelihood else mp_raise
        for r in range(W.shape[0]):
            _check(sol.C[r], sol.eta[r], ref(s, W[r], eps), eps)
