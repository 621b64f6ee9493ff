"""The L-infinity attacks at default settings (issue 14, goal 4): lowering reaches the optimum in the NP-hard
regime of R3 with the clamp binding, raising reaches the exact box-constrained optimum when the coordinates'
scales differ by orders of magnitude (the cause of the stalled OOD attack), and the OOD curve is monotone.

References are independent of the code under test: vertex enumeration (``tests/test_attack_strength.py``,
checked there against linflow's exact L-inf solver) and linflow's exact L-inf raising (R3).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from deepcheck.attacks import core, pgd, pgd_with_info
from deepcheck.attacks.search import flip_search as flip_search_reexported
from deepcheck.attacks.spec import SampleGenerators
from deepcheck.attacks.vertex import flip_search, rprop, vertex_search
from deepcheck.flows import LinearFlow as TorchLinearFlow
from deepcheck.reproduce import compute_phenomena as phen
from deepcheck.reproduce.budget import BUDGETS
from linflow import LinearFlow, optimal_nll_change
from linflow.verification.cases import random_spd


def test_flip_search_is_still_importable_from_search():
    assert flip_search_reexported is flip_search


def _quadratic(P: torch.Tensor, b: torch.Tensor):
    """Per-sample ``f(delta) = b . delta + delta^T P delta / 2`` and its gradient (the NLL change of R3)."""
    calls = []

    def fn(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(delta.clone())
        return (delta * b).sum(1) + 0.5 * torch.einsum("bi,ij,bj->b", delta, P, delta), b + delta @ P

    return fn, calls


def test_vertex_search_finds_the_enumerated_optimum_of_a_quadratic_over_a_box():
    rng = np.random.default_rng(5)
    d, B, eps = 10, 6, 0.1
    P = torch.tensor(random_spd(d, 1e4, rng, scale=1.0))
    b = torch.tensor(rng.standard_normal((B, d)) * 0.01)
    x = torch.tensor(rng.uniform(0, 1, (B, d)))
    x[:, :3] = torch.tensor(rng.uniform(0, eps / 2, (B, 3)))  # the clamp at 0 binds on three coordinates

    def project(delta):
        return (x + delta.clamp(-eps, eps)).clamp(0, 1) - x

    fn, calls = _quadratic(P, b)
    start = project(torch.zeros(B, d, dtype=torch.float64))
    best, best_val, hist = vertex_search(fn, start, project, eps, 60, torch.Generator().manual_seed(0),
                                         start=fn(start))
    assert len(calls) == 61 and hist.shape == (60, B) and torch.all(hist.diff(dim=0) >= 0)
    assert torch.equal(project(best), best)
    np.testing.assert_allclose(best_val.numpy(), fn(best)[0].numpy(), rtol=1e-12)
    lo, hi = np.maximum(-eps, -x.numpy()), np.minimum(eps, 1 - x.numpy())
    S = np.array(list(itertools.product([0.0, 1.0], repeat=d)))
    Pn = P.numpy()
    for i in range(B):
        V = lo[i] + S * (hi[i] - lo[i])
        ref = (V @ b[i].numpy() + 0.5 * np.einsum("kj,jl,kl->k", V, Pn, V)).max()
        np.testing.assert_allclose(best_val[i].item(), ref, rtol=1e-12)


def _scaled_flow(rng: np.random.Generator, d: int) -> LinearFlow:
    """A Gaussian whose standard deviations span 1e-3..1e-1 (mild correlations): the pixels of a trained
    flow, some in a narrow peak of the density (background) and some spread (foreground)."""
    sd = np.sqrt(10 ** rng.uniform(-6, -2, d))
    corr = random_spd(d, 10.0, rng, scale=1.0)
    c = np.sqrt(np.diag(corr))
    return LinearFlow.from_gaussian(rng.uniform(0.3, 0.7, d), corr / np.outer(c, c) * np.outer(sd, sd))


def test_linf_raising_default_is_exact_when_the_scales_differ():
    """The cause of the stalled OOD attack, on the linear flow: one sign step for every coordinate is capped by
    the narrowest one. The default (Rprop, per-coordinate steps) reaches linflow's exact optimum to 1e-9 (1e-6
    with the OOD curve's 40 steps and no restart); the uniform-step monotone method stays >= 1e-4 off."""
    rng = np.random.default_rng(0)
    worst_monotone = 0.0
    for _ in range(3):
        flow = _scaled_flow(rng, 12)
        X = flow.mean + rng.choice([-1, 1], (4, 12)) * rng.uniform(0.05, 0.2, (4, 12))
        eps = 0.1
        exact = optimal_nll_change(flow, X, eps, norm=np.inf, likelihood="increase")
        assert np.all(exact < 0)
        model = TorchLinearFlow.from_linflow(flow, dtype=torch.float64)
        for kw, rtol in (({}, 1e-9), (dict(steps=40, restarts=0), 1e-6)):
            x_adv = pgd(model, torch.tensor(X), eps, norm="linf", likelihood="increase", clamp=None, **kw)
            assert np.abs(x_adv.numpy() - X).max() <= eps * (1 + 1e-12)
            got = flow.nll(x_adv.numpy()) - flow.nll(X)
            assert np.all(got >= exact * (1 + 1e-9))  # never below the optimum (both negative)
            np.testing.assert_allclose(got, exact, rtol=rtol, atol=0)
        _, info = pgd_with_info(model, torch.tensor(X), eps, norm="linf", likelihood="increase", clamp=None,
                                steps=40, restarts=0)
        before, core.METHOD = core.METHOD, "monotone"
        try:
            x_mono = pgd(model, torch.tensor(X), eps, norm="linf", likelihood="increase", clamp=None, steps=40,
                         restarts=0)
        finally:
            core.METHOD = before
        mono = flow.nll(x_mono.numpy()) - flow.nll(X)
        worst_monotone = max(worst_monotone, float(np.max(np.abs(mono - exact) / np.abs(exact))))
        assert torch.all(info.history[0].diff(dim=0) <= 0)  # the NLL never rises along the run
    assert worst_monotone >= 1e-4


def test_rprop_is_monotone_and_stays_in_the_box():
    rng = np.random.default_rng(1)
    d, B, eps = 8, 5, 0.05
    P = torch.tensor(random_spd(d, 100.0, rng, scale=1.0))
    b = torch.tensor(rng.standard_normal((B, d)))
    x = torch.tensor(rng.uniform(0, 1, (B, d)))

    def project(delta):
        return (x + delta.clamp(-eps, eps)).clamp(0, 1) - x

    fn, calls = _quadratic(-P, -b)  # concave: the raising problem
    delta, val, grad, hist = rprop(fn, torch.zeros(B, d, dtype=torch.float64), project, eps, 30, eps / 4)
    assert len(calls) == 31 and hist.shape == (31, B) and torch.all(hist.diff(dim=0) >= 0)
    assert all(torch.equal(project(c), c) for c in calls)
    np.testing.assert_allclose(val.numpy(), fn(delta)[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), fn(delta)[1].numpy(), rtol=1e-12)


def test_ood_curve_is_the_best_over_the_nested_balls(monkeypatch):
    """An attack that gets weaker at larger eps (as the OOD attack of the full runs did) cannot make the
    reported curve rise: each eps reports the best over the balls it contains."""
    rows = np.array([[5.0, 6.0], [4.0, 6.5], [4.5, 5.0], [4.2, 7.0]])  # eps 0 (clean), then the grid

    def fake(net, x, grid, **kw):
        assert list(grid) == sorted(grid) and len(grid) == len(rows)
        return rows

    budget = BUDGETS["smoke"].with_settings(ood={"eps_grid": (0.0, 0.02, 0.05, 0.1)})
    grid = sorted({float(e) for e in budget.ood.eps_grid} | {0.0})
    assert len(grid) == 4
    monkeypatch.setattr(phen, "bpd_against_eps", fake)
    monkeypatch.setattr(phen, "bpd_of", lambda net, x: np.array([3.0, 3.0]))
    res = phen.ood_curve({"m": None}, np.zeros(2), np.zeros(2), budget, seed=0)["models"]["m"]
    expect = np.minimum.accumulate(rows, axis=0)
    np.testing.assert_allclose(res["median_bpd"], np.median(expect, axis=1))
    np.testing.assert_allclose(res["mean_bpd"], expect.mean(axis=1))
    assert np.all(np.diff(res["median_bpd"]) <= 0)


def test_attack_curves_are_the_best_over_the_nested_balls(monkeypatch):
    """The in-distribution curve likewise: an attack that finds less at a larger eps (the full runs' RealNVP
    MLE L-inf mean fell from 100.8 to 85.1 bits/dim between eps 0.063 and 0.125) reports the best over the
    balls each eps contains, per image; growth and the maximum growth read the accumulated curve."""
    rows = np.array([[1.0, 2.0], [3.0, 2.5], [2.0, 6.0], [2.5, 4.0]])  # eps 0 (clean), then the grid

    def fake(net, x, grid, **kw):
        assert list(grid) == sorted(grid) and len(grid) == len(rows) and kw["likelihood"] == "decrease"
        return rows

    budget = BUDGETS["smoke"].with_settings(eval={"eps": (0.01, 0.02, 0.05), "norms": ("linf",), "strong_n": 0})
    assert phen.eps_grid(budget, "linf") == [0.0, 0.01, 0.02, 0.05]
    monkeypatch.setattr(phen, "bpd_against_eps", fake)
    res = phen.attack_curves({"m": None}, np.zeros(2), budget, seed=0)["linf"]
    expect = np.maximum.accumulate(rows, axis=0)
    np.testing.assert_allclose(res["per_image"]["m"], expect)
    np.testing.assert_allclose(res["mean_bpd"]["m"], expect.mean(axis=1))
    np.testing.assert_allclose(res["median_bpd"]["m"], np.median(expect, axis=1))
    assert np.all(np.diff(res["mean_bpd"]["m"]) >= 0) and res["max_growth"]["m"] == expect.mean(axis=1)[-1] / 1.5


def test_vertex_search_with_sample_seeds_does_not_depend_on_the_batch():
    """With per-sample generators (the sharded evaluation) every candidate a sample evaluates, kicks included,
    is the same alone as in its batch (samples reach their local maxima, and kick, at different passes)."""
    rng = np.random.default_rng(4)
    d, B, eps = 6, 4, 0.1
    P = torch.tensor(random_spd(d, 1e3, rng, scale=1.0))
    b = torch.tensor(rng.standard_normal((B, d)) * 0.02)
    x = torch.tensor(rng.uniform(0, 1, (B, d)))

    def run(rows):
        def project(delta):
            return (x[rows] + delta.clamp(-eps, eps)).clamp(0, 1) - x[rows]

        fn, calls = _quadratic(P, b[rows])
        start = project(torch.zeros(len(rows), d, dtype=torch.float64))
        vertex_search(fn, start, project, eps, 40, SampleGenerators([10 + r for r in rows]), start=fn(start))
        return torch.stack(calls)

    whole = run(list(range(B)))
    for i in range(B):
        torch.testing.assert_close(run([i])[:, 0], whole[:, i], rtol=0, atol=0)
