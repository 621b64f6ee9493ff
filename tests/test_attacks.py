"""deepcheck.attacks: the per-norm pieces against brute force, the contract (shapes, budget, clamp, seeds, model
state, errors), and the attacks on a tiny GLOW with randomised weights. The exact optima are in test_bridge.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcheck.attacks import (
    attack_mode,
    pgd,
    pgd_with_info,
    project_l2,
    project_linf,
    random_l2,
    random_linf,
    step_l2,
    step_linf,
    universal,
)
from deepcheck.flows import LinearFlow as TorchLinearFlow
from linflow import LinearFlow
from tests.strategies import random_flow

from .models import randomised_tiny_glow


@pytest.fixture(scope="module")
def glow():
    return randomised_tiny_glow(n_bins=256)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(3)
    k = torch.randint(0, 256, (6, 1, 8, 8), generator=g)
    # smooth-ish images with saturated pixels, so the clamp matters
    k[:, :, :2] = 0
    k[:, :, -2:] = 255
    return (k.float() + 0.5) / 256


def _linear(seed: int = 0, d: int = 5):
    flow = random_flow(d, 10.0, np.random.default_rng(seed))
    return flow, TorchLinearFlow.from_linflow(flow)


# ------------------------------------------------------------------------------------------- per-norm pieces
def test_projections_are_euclidean_projections():
    """Against brute force: the projection is the nearest point of the ball among many feasible candidates."""
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    eps = 1.0
    for project, sample in ((project_l2, random_l2), (project_linf, random_linf)):
        p = project(x, eps)
        cands = sample((20000, 4), eps, g, torch.float64)
        for i in range(5):
            best = (cands - x[i]).norm(dim=1).min()
            assert (p[i] - x[i]).norm() <= best + 1e-12
        inside = 0.5 * x / x.norm(dim=1).max()  # inside both balls: unchanged
        assert torch.equal(project(inside, eps), inside)
    np.testing.assert_allclose(project_l2(x, eps).norm(dim=1).numpy(), 1.0, rtol=1e-14)
    assert project_linf(x, eps).abs().max() <= eps


def test_random_starts_fill_the_ball():
    g = torch.Generator().manual_seed(0)
    r = random_l2((4000, 3), 2.0, g, torch.float64).norm(dim=1)
    assert r.max() <= 2.0
    # uniform in a 3-ball: P(r <= 2 t) = t^3
    assert abs(float((r <= 1.0).double().mean()) - 1 / 8) < 0.02
    b = random_linf((4000, 3), 2.0, g, torch.float64)
    assert b.abs().max() <= 2.0 and abs(float((b > 0).double().mean()) - 0.5) < 0.03


def test_steps_have_the_stated_length_and_direction():
    g = torch.tensor([[3.0, -4.0], [0.0, 0.0]], dtype=torch.float64)
    d0 = torch.zeros_like(g)
    alpha = torch.tensor([0.5, 0.5], dtype=torch.float64)
    s2 = step_l2(d0, g, alpha)
    assert torch.allclose(s2[0], torch.tensor([0.3, -0.4], dtype=torch.float64)) and torch.all(s2[1] == 0)
    si = step_linf(d0, g, alpha)
    assert torch.equal(si[0], torch.tensor([0.5, -0.5], dtype=torch.float64)) and torch.all(si[1] == 0)


# ------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("likelihood", ["decrease", "increase"])
def test_glow_budget_clamp_direction_and_shape(glow, images, norm, likelihood):
    eps = 4 / 255 if norm == "linf" else 0.5
    x_adv = pgd(glow, images, eps, norm=norm, likelihood=likelihood, steps=15, restarts=0)
    assert x_adv.shape == images.shape and x_adv.dtype == images.dtype and not x_adv.requires_grad
    d = (x_adv - images).reshape(len(images), -1)
    size = d.norm(dim=1) if norm == "l2" else d.abs().amax(dim=1)
    assert torch.all(size <= eps * (1 + 1e-5))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    with torch.no_grad():
        before, after = glow.bpd(images), glow.bpd(x_adv)
    assert torch.all(after > before) if likelihood == "decrease" else torch.all(after < before)


@pytest.mark.parametrize("likelihood", ["decrease", "increase"])
def test_glow_attack_is_monotone_in_eps(glow, images, likelihood):
    bpd = []
    for eps in (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255):
        x_adv = pgd(glow, images, eps, norm="linf", likelihood=likelihood, steps=15, restarts=0)
        with torch.no_grad():
            bpd.append(float(glow.bpd(x_adv).mean()))
    steps = np.diff(bpd) if likelihood == "decrease" else -np.diff(bpd)
    assert np.all(steps > 0), bpd


def test_model_mode_and_requires_grad_are_restored(glow, images):
    glow.train()
    flags = [p.requires_grad for p in glow.parameters()]
    first = next(glow.parameters())
    first.requires_grad_(False)  # a mixed state must come back as it was
    sub = next(m for m in glow.modules() if m is not glow)
    sub.eval()  # ... also for a submodule whose mode differs from its parent's
    try:
        seen = {}

        def spy(model, x):
            seen["training"] = any(m.training for m in model.modules())
            seen["grad"] = any(p.requires_grad for p in model.parameters())
            return -model.log_prob(x)

        pgd(glow, images[:2], 2 / 255, steps=2, restarts=0, loss_fn=spy)
        assert seen == {"training": False, "grad": False}
        assert glow.training and not sub.training and not first.requires_grad
        assert [p.requires_grad for p in glow.parameters()][1:] == flags[1:]
        with pytest.raises(RuntimeError):
            with attack_mode(glow):
                raise RuntimeError("inside")
        assert glow.training and not sub.training
        assert all(p.grad is None for p in glow.parameters())
    finally:
        first.requires_grad_(flags[0])
        glow.eval()


def test_seed_determinism_and_batch_independence():
    flow, model = _linear()
    X = torch.tensor(flow.sample(5, np.random.default_rng(1)))
    a = pgd(model, X, 0.3, norm="l2", clamp=None, seed=4)
    assert torch.equal(a, pgd(model, X, 0.3, norm="l2", clamp=None, seed=4))
    # with random_start the seed matters
    r1 = pgd(model, X, 0.3, norm="l2", clamp=None, random_start=True, steps=1, restarts=0, seed=1)
    r2 = pgd(model, X, 0.3, norm="l2", clamp=None, random_start=True, steps=1, restarts=0, seed=2)
    assert not torch.equal(r1, r2)
    # the loss is a sum of per-sample losses: a sample's attack does not depend on its batch
    kw = dict(norm="linf", clamp=None, restarts=0, patience=10**6, steps=30)
    whole = pgd(model, X, 0.2, **kw)
    alone = torch.cat([pgd(model, X[i:i + 1], 0.2, **kw) for i in range(len(X))])
    assert torch.allclose(whole, alone, rtol=0, atol=1e-12)


def test_info_history_and_clean_values():
    flow, model = _linear()
    X = flow.sample(4, np.random.default_rng(2))
    x_adv, info = pgd_with_info(model, torch.tensor(X), 0.5, norm="l2", clamp=None, steps=12, restarts=2)
    np.testing.assert_allclose(info.nll_clean.numpy(), flow.nll(X), rtol=1e-12)
    np.testing.assert_allclose(info.nll_adv.numpy(), flow.nll(x_adv.numpy()), rtol=1e-12)
    assert info.history.shape == (3, 3 * 12, 4)  # the L2 probe run (run 1) has PROBE_RUN * steps passes
    assert torch.all(info.history.diff(dim=1) >= 0)  # best-so-far, lowering the likelihood: non-decreasing
    assert torch.all(info.nll_adv >= info.history[:, -1].max(dim=0).values - 1e-12)
    assert info.best_run.shape == (4,) and int(info.best_run.max()) <= 2
    _, inc = pgd_with_info(model, torch.tensor(X), 0.5, norm="l2", likelihood="increase", clamp=None, steps=12)
    assert torch.all(inc.history.diff(dim=1) <= 0) and torch.all(inc.nll_adv < inc.nll_clean)


def test_loss_scale_does_not_change_the_attack():
    """Normalised / sign steps and the accept test are invariant to a positive scaling of the loss."""
    flow, model = _linear()
    X = torch.tensor(flow.sample(3, np.random.default_rng(3)))
    a = pgd(model, X, 0.3, norm="l2", clamp=None, steps=20)
    b = pgd(model, X, 0.3, norm="l2", clamp=None, steps=20, loss_fn=lambda m, x: -4.0 * m.log_prob(x))
    assert torch.allclose(a, b, atol=1e-12)


def test_plain_fixed_step_pgd_is_weaker_on_the_hard_case():
    """adaptive=False is textbook PGD (fixed step); at the mean it cannot leave delta = 0 without a random start."""
    flow, model = _linear()
    x = torch.tensor(flow.mean[None, :])
    plain = pgd(model, x, 0.3, norm="l2", clamp=None, adaptive=False, step_size=0.05, restarts=0)
    assert torch.equal(plain, x)
    ours = pgd(model, x, 0.3, norm="l2", clamp=None)
    assert float((ours - x).norm()) == pytest.approx(0.3, rel=1e-12)


def test_universal_on_images_and_imagedata(glow, images):
    eps = 2 / 255
    delta = universal(glow, images, eps, norm="linf", steps=10, restarts=0)
    assert delta.shape == (1, 1, 8, 8) and float(delta.abs().max()) <= eps * (1 + 1e-6)
    with torch.no_grad():
        assert glow.bpd((images + delta).clamp(0, 1)).mean() > glow.bpd(images).mean()
    from deepcheck.data import ImageData

    data = ImageData((images * 256).floor().to(torch.uint8), torch.zeros(len(images), dtype=torch.long), 256, "t")
    d2 = universal(glow, data, eps, norm="linf", steps=10, restarts=0, batch_size=4)
    assert torch.allclose(d2, delta, atol=1e-6)  # mid-bin pixels of the same levels, split into two batches


def test_universal_vector_shape_and_init():
    flow, model = _linear()
    X = torch.tensor(flow.sample(20, np.random.default_rng(4)))
    d = universal(model, X, 0.5, clamp=None)
    assert d.shape == (5,)
    again = universal(model, X, 0.5, clamp=None, init=d, steps=0, restarts=0)
    assert torch.allclose(again, d, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="init"):
        universal(model, X, 0.5, clamp=None, init=torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(norm="l1"), ValueError, "norm"),
        (dict(likelihood="up"), ValueError, "likelihood"),
        (dict(eps=-1.0), ValueError, "eps"),
        (dict(eps="1"), TypeError, "eps"),
        (dict(steps=-1), ValueError, "steps"),
        (dict(steps=2.0), TypeError, "steps"),
        (dict(restarts=-1), ValueError, "restarts"),
        (dict(clamp=(1.0, 0.0)), ValueError, "clamp"),
        (dict(clamp=3), TypeError, "clamp"),
        (dict(step_size=0.0), ValueError, "step_size"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(loss_fn=lambda m, x: -m.log_prob(x).sum()), ValueError, "loss_fn"),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, word):
    _, model = _linear()
    x = torch.zeros(2, 5, dtype=torch.float64)
    args = dict(eps=0.1, clamp=None, steps=2)
    args.update(kwargs)
    eps = args.pop("eps")
    with pytest.raises(exc, match=word):
        pgd(model, x, eps, **args)


def test_bad_model_and_data():
    with pytest.raises(TypeError, match="model"):
        pgd(object(), torch.zeros(1, 2), 0.1)
    _, model = _linear()
    with pytest.raises(TypeError, match="x"):
        pgd(model, np.zeros((1, 5)), 0.1)
    with pytest.raises(TypeError, match="data"):
        universal(model, 3, 0.1)
    with pytest.raises(ValueError, match="batch"):
        pgd(model, torch.zeros(5, dtype=torch.float64), 0.1)


def test_eps_zero_returns_the_input():
    flow, model = _linear()
    X = torch.tensor(flow.sample(3, np.random.default_rng(5)))
    assert torch.equal(pgd(model, X, 0.0, norm="l2", clamp=None), X)
    assert LinearFlow  # imported for the strategies' flows


def test_options_are_validated_once_in_a_frozen_spec_and_shown_in_the_signature():
    import dataclasses
    import inspect

    from deepcheck.attacks import AttackSpec

    spec = AttackSpec.build(0.1, norm=2, likelihood="increase", clamp=[0, 1])
    assert (spec.norm, spec.sign, spec.alpha0, spec.clamp) == ("l2", -1.0, 0.2, (0.0, 1.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.eps = 1.0  # type: ignore[misc]
    _, model = _linear()
    with pytest.raises(TypeError, match="stepz"):
        pgd(model, torch.zeros(2, 5, dtype=torch.float64), 0.1, stepz=3)
    for fn, norm in ((pgd, "linf"), (universal, "l2")):
        params = inspect.signature(fn).parameters
        assert params["norm"].default == norm and params["steps"].default == 100 and params["seed"].default == 0
        assert params["restarts"].kind is inspect.Parameter.KEYWORD_ONLY
    assert {"batch_size", "init"} <= set(inspect.signature(universal).parameters)
