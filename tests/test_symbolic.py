"""sympy derivations (linflow.symbolic): each verdict holds, can fail, and agrees with the numerical code."""

import numpy as np
import pytest
import sympy as sp

from linflow import symbolic
from linflow.tradeoff import universal_kl
from linflow.training import water_level


@pytest.mark.parametrize("fn", symbolic.ALL, ids=lambda f: f.__name__)
def test_each_derivation_holds(fn):
    res = fn()
    assert isinstance(res, symbolic.SymbolicCheck)
    assert res.verdict, res.claim
    assert res.result in {"R1", "R4", "R5", "R6", "R7"}


def test_zero_test_rejects_wrong_statements():
    """The verdicts can fail: the helper behind them rejects near-miss formulas."""
    s1, s2, eps = sp.symbols("s1 s2 epsilon", positive=True)
    assert symbolic._is_zero((s1 + s2 + eps**2) / 2 - (eps**2 + s2 + s1) / 2)
    assert not symbolic._is_zero((s1 + s2 + eps**2) / 2 - (eps**2 + s1 + s2) / 3)
    assert not symbolic._is_zero(sp.log(s1 / s2) - sp.log(s1) - sp.log(s2))


def test_symbolic_water_level_and_kl_agree_with_numerics():
    wf = symbolic.water_filling_conditions()
    kl = symbolic.tradeoff_kl()
    s1, s2, s3, eps, tau = sp.symbols("s1 s2 s3 epsilon tau", positive=True)
    tau_f = sp.lambdify((s1, s2, eps), wf.expressions["tau"])
    kl_f = sp.lambdify((s1, s2, tau), kl.expressions["kl"])
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = np.sort(rng.uniform(0.1, 1.0, size=2))
        # the derived case is a floor of exactly {s1, s2}: s2 < tau = (eps^2 + s1 + s2)/2 <=> eps^2 > s2 - s1, so
        # draw eps^2 above s2 - s1 (every draw reaches the asserts)
        e = np.sqrt((s[1] - s[0]) + rng.uniform(0.01, 0.25))
        big = s[1] + e**2 + 1.0  # above the water level, so the floor is exactly {s1, s2}
        t = water_level(np.array([s[0], s[1], big]), e)
        assert s[1] < t < big  # the floor is {s1, s2}, as derived
        assert tau_f(s[0], s[1], e) == pytest.approx(t, rel=1e-13)
        assert kl_f(s[0], s[1], t) == pytest.approx(universal_kl(np.array([s[0], s[1], big]), t), rel=1e-12)
    assert float(kl.expressions["worked_kl"]) == pytest.approx(0.36649, abs=5e-6)
    assert kl.expressions["worked_rise"] == sp.Rational(4, 9)


def test_symbolic_perturbation_matches_the_kkt_of_a_numeric_case():
    """delta_i = w_i / (eta s_i - 1) from the sympy KKT solution satisfies (eta I - P) delta = P w numerically."""
    res = symbolic.secular_equation_kkt()
    syms = sorted(res.expressions["delta"].free_symbols, key=lambda x: x.name)
    f = sp.lambdify(syms, res.expressions["delta"])
    vals = {"eta": 3.0, "s1": 0.5, "s2": 1.0, "s3": 2.0, "w1": 0.3, "w2": -1.0, "w3": 0.7}
    delta = np.array(f(*[vals[x.name] for x in syms]), dtype=float).ravel()
    P = np.diag(1 / np.array([0.5, 1.0, 2.0]))
    w = np.array([0.3, -1.0, 0.7])
    np.testing.assert_allclose((3.0 * np.eye(3) - P) @ delta, P @ w, rtol=1e-14)


def test_run_all():
    results = symbolic.run_all()
    assert len(results) == len(symbolic.ALL) and all(r.verdict for r in results)
