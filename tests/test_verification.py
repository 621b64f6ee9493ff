"""linflow.verification: the table runs every method the README names, each check passes on the code and fails
on a deliberately wrong one, the references are right on cases with a known answer, the shared generators do what
they say, and an unknown ``only`` tag is an error."""

import numpy as np
import pytest

import linflow.box
import linflow.perturb
import linflow.training
from linflow import LinearFlow
from linflow.verification import cases, load_all, run_checks, valid_tags

NEW_CHECKS = {  # README "checked against" methods that verify now runs (issue 10)
    "R2": "r2_kkt",
    "R3": ("raising_vs_slsqp", "raising_vs_scs"),
    "R4": "r4_vs_brute_force_average",
    "R6": "sdp_value_by_brute_force",
}


def _one(name):
    (res,) = run_checks(seed=0, quick=True, only=name, progress=False)
    return res


def test_every_readme_method_is_registered_under_its_result():
    by_name = {c.name: c.result for c in load_all()}
    for result, names in NEW_CHECKS.items():
        for name in (names,) if isinstance(names, str) else names:
            assert by_name.get(name) == result, name
    assert valid_tags() == ["R1", "R2", "R3", "R4", "R5", "R6", "R7", "SYM"]


def test_unknown_only_is_an_error_naming_the_valid_tags():
    with pytest.raises(ValueError, match=r"valid tags: R1, R2, R3, R4, R5, R6, R7, SYM"):
        run_checks(only="R9", progress=False)
    with pytest.raises(TypeError, match="only"):
        run_checks(only=3, progress=False)
    assert {r.name for r in run_checks(only="r2", progress=False)} >= {"r2_kkt"}  # tags are case-insensitive


@pytest.mark.parametrize("name", ["r2_kkt", "raising_vs_slsqp", "raising_vs_scs", "r4_vs_brute_force_average",
                                  "sdp_value_by_brute_force"])
def test_new_checks_pass_on_the_code(name):
    res = _one(name)
    assert res.passed and res.cases > 0, (res.worst, res.detail)


def test_r2_kkt_fails_on_a_wrong_perturbation(monkeypatch):
    real = linflow.perturb.optimal_perturbation
    monkeypatch.setattr(linflow.perturb, "optimal_perturbation", lambda *a, **k: 0.99 * real(*a, **k))
    assert not _one("r2_kkt").passed


def test_r4_brute_force_fails_on_a_wrong_universal_perturbation(monkeypatch):
    real = linflow.perturb.universal_perturbation
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])

    def wrong(flow, X, eps, **kw):  # a feasible but suboptimal direction (rotated by 90 degrees in 2-D)
        d = real(flow, X, eps, **kw)
        return rot @ d if d.size == 2 else 0.5 * d

    monkeypatch.setattr(linflow.perturb, "universal_perturbation", wrong)
    assert not _one("r4_vs_brute_force_average").passed


@pytest.mark.parametrize("name", ["raising_vs_slsqp", "raising_vs_scs"])
def test_r3_raising_checks_fail_on_a_wrong_value(monkeypatch, name):
    real = linflow.box.perturbation_bounds

    def wrong(flow, x, eps, **kw):
        lo, up = real(flow, x, eps, **kw)
        return lo, up + 1e-5 * abs(up) + 1e-300

    monkeypatch.setattr(linflow.box, "perturbation_bounds", wrong)
    assert not _one(name).passed


def test_r6_brute_force_fails_on_a_wrong_sdp_value(monkeypatch):
    real = linflow.training.adversarial_fit

    def wrong(*a, **k):
        flow, info = real(*a, **k)
        return flow, type(info)(**{**info.__dict__, "solver_value": info.solver_value * (1 + 1e-4)})

    monkeypatch.setattr(linflow.training, "adversarial_fit", wrong)
    assert not _one("sdp_value_by_brute_force").passed


def test_brute_force_averaged_reference_on_a_known_answer():
    """For the ML fit (m = mu, P = S^-1) the averaged change is delta^T P delta / 2: its maximum over the ball is
    eps^2 / (2 s_min) (lowering) and its minimum is 0, at delta = 0 (raising)."""
    from linflow.verification.averaged import brute_force_averaged

    rng = np.random.default_rng(3)
    for d in (1, 2, 3):
        X = cases.random_flow(d, 30.0, rng).sample(40, rng)
        flow = LinearFlow.fit(X)
        s_min = np.linalg.eigvalsh(np.cov(X.T, bias=True).reshape(d, d)).min()
        assert brute_force_averaged(flow, X, 0.3, "decrease") == pytest.approx(0.09 / (2 * s_min), rel=1e-9)
        assert brute_force_averaged(flow, X, 0.3, "increase") == pytest.approx(0.0, abs=1e-12)


def test_slsqp_reference_is_moved_into_the_ball():
    from linflow.verification.box import _into_ball

    d, excess = _into_ball(np.array([0.6, -0.5]), 1.0, 1.0)
    assert excess == pytest.approx(0.1) and np.abs(d).sum() == pytest.approx(1.0, rel=1e-15)
    d, excess = _into_ball(np.array([1.2, -0.5]), 1.0, np.inf)
    assert excess == pytest.approx(0.2) and np.array_equal(d, [1.0, -0.5])
    d, excess = _into_ball(np.array([0.2, -0.5]), 1.0, 1.0)
    assert excess == 0.0 and np.array_equal(d, [0.2, -0.5])


@pytest.mark.parametrize("d", [1, 2, 7])
def test_case_generators(d):
    rng = np.random.default_rng(d)
    s = cases.spd_eigvals(d, 1e4, rng, 0.5)
    if d > 1:
        assert s.max() == pytest.approx(0.5) and s.min() == pytest.approx(0.5e-4)
    flow = cases.random_flow(d, 1e4, rng, 0.5)
    ev = np.linalg.eigvalsh(flow.cov)
    assert ev.max() / ev.min() == pytest.approx(1e4 if d > 1 else 1.0, rel=1e-8)
    x = cases.point_at_radius(flow, 10.0, rng)
    v = x - flow.mean
    assert np.sqrt(v @ flow.precision @ v) == pytest.approx(10.0, rel=1e-10)
    x0 = cases.near_hard_point(flow, 0.0, rng)
    assert abs(flow.eigvecs[:, 0] @ (x0 - flow.mean)) <= 1e-12 * np.linalg.norm(x0 - flow.mean) + 1e-15
    Q = cases.random_orthogonal(d, rng)
    np.testing.assert_allclose(Q @ Q.T, np.eye(d), atol=1e-13)


def test_symbolic_is_a_reexport_of_the_derivations():
    import linflow.symbolic
    from linflow.verification import derivations

    assert linflow.symbolic.ALL is derivations.ALL
    assert linflow.symbolic.SymbolicCheck is derivations.SymbolicCheck
    for fn in derivations.ALL:
        assert "Scope:" in fn.__doc__, fn.__name__
