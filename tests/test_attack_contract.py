"""The input contract of the attacks (issue 11): each silent wrong answer measured on the old main is now a clear
error or a reported event. The models are torch Distributions and plain callables (real densities; no mocks of
the attack): a 2-D Gaussian mixture for unbounded data, an 8-bit-range Gaussian for [0, 255] pixels, and
densities that are -inf or NaN outside the unit ball for the non-finite candidates.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import distributions as D

from deepcheck.adapt import as_log_prob
from deepcheck.attacks import NonFiniteWarning, pgd, pgd_with_info, universal


def _mixture() -> D.Distribution:
    """A 2-D mixture of three Gaussians (float32): a nonlinear, unbounded density."""
    loc = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]])
    comp = D.Independent(D.Normal(loc, torch.tensor([[1.0, 0.5], [0.7, 1.2], [1.5, 0.8]])), 1)
    return D.MixtureSameFamily(D.Categorical(torch.tensor([0.3, 0.5, 0.2])), comp)


def _unbounded(n: int = 200, seed: int = 0) -> torch.Tensor:
    return 2.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def _ball_model(kind: str):
    """``log N(x; 0, I)`` inside the unit ball; outside, ``-inf`` (kind "inf": log of 0) or NaN (kind "nan": log of
    a negative number). The NLL grows towards the sphere, so the likelihood-lowering attack runs into it."""
    normal = D.Independent(D.Normal(torch.zeros(2), torch.ones(2)), 1)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        r = x.norm(dim=1)
        edge = torch.log(torch.relu(1.0 - r)) if kind == "inf" else torch.log(1.0 - r)
        return normal.log_prob(x) + edge

    return log_prob


def _inside(n: int = 6) -> torch.Tensor:
    ang = torch.linspace(0.0, 2 * math.pi, n + 1)[:-1]
    return 0.5 * torch.stack([ang.cos(), ang.sin()], dim=1)


# ------------------------------------------------------------------------------------------- data and clamp
def test_pixels_in_0_255_against_the_default_clamp_are_refused_and_clamp_0_255_keeps_the_budget():
    """Old main: the default clamp (0, 1) on [0, 255] data at L-inf eps 0.03 moved a pixel by 253.9."""
    model = D.Independent(D.Normal(torch.full((4,), 128.0, dtype=torch.float64), 40.0), 1)
    x = torch.tensor([[0.5, 0.2, 0.9, 0.1], [3.0, 200.0, 17.0, 255.0], [0.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"rows \[1\] \(1 of 3\).*clamp=None.*clamp=\(0, 255\)"):
        pgd(model, x, 0.03)
    with pytest.raises(ValueError, match=r"data lies outside clamp=\(0, 1\) in rows \[1\]"):
        universal(model, x, 0.03, norm="linf")
    xa = pgd(model, x, 0.03, clamp=(0, 255), likelihood="increase", steps=10)
    assert float((xa - x).abs().max()) <= 0.03 * (1 + 1e-12)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 255.0
    assert bool((model.log_prob(xa) >= model.log_prob(x)).all())


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("likelihood", ["decrease", "increase"])
@pytest.mark.parametrize("starts", [dict(restarts=0), dict(random_start=True, restarts=2)])
def test_unbounded_data_with_clamp_none_respects_the_budget(norm, likelihood, starts):
    """Old main: 89 % of the rows of unbounded 2-D data came back moved beyond L2 eps 0.25 (up to 1.86). The cause
    was the default clamp (0, 1): x outside it was clamped into it, i.e. moved by up to its distance to the box
    (the ball projection itself was exact). Now that is an error, and clamp=None keeps every row in the ball."""
    model, x, eps = _mixture(), _unbounded(), 0.25
    with pytest.raises(ValueError, match="outside clamp"):
        pgd(model, x, eps, norm=norm)
    xa, info = pgd_with_info(model, x, eps, norm=norm, likelihood=likelihood, clamp=None, steps=15, **starts)
    d = xa - x
    size = d.norm(dim=1) if norm == "l2" else d.abs().amax(dim=1)
    rounding = 4 * torch.finfo(x.dtype).eps * float(x.abs().max())  # x + delta - x in float32
    assert float(size.max()) <= eps + rounding
    sign = 1.0 if likelihood == "decrease" else -1.0
    assert bool((sign * (info.nll_adv - info.nll_clean) >= -1e-5).all())
    assert float(sign * (info.nll_adv - info.nll_clean).mean()) > 0.05


def test_a_box_inside_which_the_data_lies_is_respected_with_the_budget():
    model = _mixture()
    x = torch.rand(50, 2, generator=torch.Generator().manual_seed(3)) * 2 - 1
    for norm in ("l2", "linf"):
        xa = pgd(model, x, 0.3, norm=norm, clamp=(-1, 1), steps=10, random_start=True)
        size = (xa - x).norm(dim=1) if norm == "l2" else (xa - x).abs().amax(dim=1)
        assert float(size.max()) <= 0.3 * (1 + 1e-5) and float(xa.abs().max()) <= 1.0


# ------------------------------------------------------------------------------------------- non-finite input
def test_non_finite_rows_are_named():
    """Old main: a NaN/inf row came back unattacked as NaN."""
    model = _mixture()
    x = _unbounded(5)
    x[1, 0], x[3, 1] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"x has non-finite values \(NaN or inf\) in rows \[1, 3\] \(2 of 5\)"):
        pgd(model, x, 0.1, clamp=None)
    with pytest.raises(ValueError, match=r"data has non-finite values .* rows \[3\] \(1 of 1\)"):
        universal(model, x[[0, 2, 4, 3]], 0.1, clamp=None, batch_size=3)  # row 3 of the data is batch 2's row 0


def test_a_model_whose_log_prob_is_nan_or_minus_inf_at_the_data_is_refused():
    """Old main: a NaN log_prob (or universal on NaN data) gave delta = 0 without a word."""
    x = _unbounded(4)

    def nan_model(t):
        return torch.full((t.shape[0],), float("nan")) + t.sum(dim=1)

    for attack in (pgd, universal):
        with pytest.raises(ValueError, match=r"log_prob is not finite at the clean input in rows \[0, 1, 2, 3\]"):
            attack(nan_model, x, 0.1, clamp=None)
    outside = torch.tensor([[0.2, 0.1], [3.0, 0.0]])  # row 1 outside the unit ball: log p = -inf there
    with pytest.raises(ValueError, match=r"not finite at the clean input in rows \[1\] \(1 of 2\)"):
        pgd(_ball_model("inf"), outside, 0.1, clamp=None)
    with pytest.raises(ValueError, match=r"loss_fn\(model, x\) is not finite .* rows \[1\]"):
        pgd(_mixture(), x[:2], 0.1, clamp=None, loss_fn=lambda m, t: -m.log_prob(t) / (t[:, 0] - t[1, 0]))


# ------------------------------------------------------------------------------------------- non-finite candidates
@pytest.mark.parametrize("kind", ["inf", "nan"])
def test_candidates_with_a_non_finite_objective_are_rejected_counted_and_warned(kind):
    """Old main: an attack that drove log_prob to -inf returned that point without a word."""
    model, x = _ball_model(kind), _inside()
    with pytest.warns(NonFiniteWarning, match="non-finite objective"):
        xa, info = pgd_with_info(model, x, 1.0, norm="l2", clamp=None, steps=30)
    assert int(info.nonfinite.sum()) > 0 and info.nonfinite.shape == (6,)
    with torch.no_grad():
        lp = model(xa)
    assert bool(torch.isfinite(lp).all()) and bool(torch.isfinite(info.nll_adv).all())
    torch.testing.assert_close(info.nll_adv, -lp)
    assert bool((info.nll_adv > info.nll_clean + 1.0).all())  # it still climbed towards the sphere
    with pytest.raises(FloatingPointError, match="non-finite objective"):
        pgd(model, x, 1.0, norm="l2", clamp=None, steps=30, nonfinite="raise")


def test_an_attack_without_a_non_finite_candidate_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWarning)
        _, info = pgd_with_info(_ball_model("inf"), _inside(), 0.1, norm="l2", clamp=None, steps=10)
    assert int(info.nonfinite.sum()) == 0


def test_universal_rejects_non_finite_candidates():
    model, x = _ball_model("inf"), _inside()
    with pytest.warns(NonFiniteWarning, match="universal"):
        delta = universal(model, x, 1.0, clamp=None, steps=30)
    with torch.no_grad():
        assert bool(torch.isfinite(model(x + delta)).all())
        assert float(-model(x + delta).mean()) > float(-model(x).mean())


def test_a_sample_with_no_finite_iterate_is_returned_unchanged():
    """Random starts far outside the model's finite region, no steps: nothing finite was seen, so x itself
    (with its clean NLL) is returned, and the warning says so."""
    normal = D.Independent(D.Normal(torch.zeros(2), torch.ones(2)), 1)

    def model(t):
        return normal.log_prob(t) + torch.log(torch.relu(1e-3 - t.norm(dim=1)))

    x = torch.zeros(3, 2)
    with pytest.warns(NonFiniteWarning):
        xa, info = pgd_with_info(model, x, 1.0, norm="l2", clamp=None, steps=0, random_start=True, restarts=0)
    assert torch.equal(xa, x)
    torch.testing.assert_close(info.nll_adv, info.nll_clean)


# ------------------------------------------------------------------------------------------- options and models
def test_bad_nonfinite_option_and_bad_models_are_named():
    with pytest.raises(ValueError, match="nonfinite"):
        pgd(_mixture(), _unbounded(2), 0.1, clamp=None, nonfinite="ignore")
    for bad in (object(), 3, lambda a, b: a):
        with pytest.raises(TypeError, match="model must be"):
            pgd(bad, _unbounded(2), 0.1, clamp=None)
    with pytest.raises(TypeError, match="model must be"):
        as_log_prob(lambda: 3.0)  # a zero-argument callable that does not return a Distribution
    with pytest.raises(ValueError, match=r"log_prob must return one value per sample, shape \(2,\)"):
        pgd(lambda t: t, _unbounded(2), 0.1, clamp=None)


def test_adapter_kinds_dtype_and_device():
    mix = _mixture()
    assert as_log_prob(mix).kind == "distribution" and as_log_prob(lambda: mix).kind == "factory"
    assert as_log_prob(mix.log_prob).kind == "callable"
    lp64 = as_log_prob(D.Normal(torch.zeros(3, dtype=torch.float64), 1.0))
    assert lp64.dtype == torch.float64 and lp64.device == torch.device("cpu")
    lp = as_log_prob(lambda: mix)
    assert as_log_prob(lp) is lp and "factory" in repr(lp)


def test_a_module_whose_forward_is_the_log_density_runs_in_eval_mode_and_is_restored():
    class Density(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.loc = torch.nn.Parameter(torch.tensor([0.5, -0.5]))
            self.drop = torch.nn.Dropout(0.5)  # in train mode it would make the objective random

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return -0.5 * (self.drop(x - self.loc) ** 2).sum(dim=1)

    net = Density().train()
    lp = as_log_prob(net)
    assert lp.kind == "callable" and lp.modules == [net]
    x = _unbounded(8)
    xa, info = pgd_with_info(net, x, 0.2, norm="l2", clamp=None, steps=5)
    assert net.training and net.drop.training and net.loc.requires_grad
    # eval mode: the objective is the exact quadratic, raised by moving each point radially away from loc by eps
    r0, r1 = (x - net.loc).norm(dim=1), (xa - net.loc).norm(dim=1)
    torch.testing.assert_close(r1.detach(), r0.detach() + 0.2, rtol=1e-4, atol=1e-4)


def test_with_its_own_loss_fn_the_model_may_be_any_object():
    """Old main: a zuko flow with a loss_fn was refused because the model check ran first."""

    class Energy(torch.nn.Module):  # no log_prob, forward takes two arguments
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))

        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return scale * (self.w * x**2).sum(dim=1)

    net = Energy().train()
    x = _unbounded(4)
    with pytest.raises(TypeError, match="model must be"):
        pgd(net, x, 0.1, clamp=None)
    seen = []

    def loss_fn(m, t):
        seen.append((m is net, m.training, m.w.requires_grad))
        return m(t, torch.tensor(1.0))

    xa = pgd(net, x, 0.1, clamp=None, loss_fn=loss_fn, steps=5, norm="linf")
    assert seen and all(s == (True, False, False) for s in seen) and net.training and net.w.requires_grad
    torch.testing.assert_close(xa, x + 0.1 * x.sign())  # the energy grows fastest along sign(x) in L-inf
    assert as_log_prob(net, strict=False).kind == "opaque"
    with pytest.raises(TypeError, match="no log-density"):
        as_log_prob(net, strict=False).log_prob(x)
