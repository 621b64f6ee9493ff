"""The attacks and the evaluation on REAL third-party flows, no mocks: zuko's NSF (2-D) and MAF (4-D), whose
``flow()`` returns a Distribution, and a normflows RealNVP (``NormalizingFlow`` with ``log_prob``), each trained
for 40 Adam steps by maximum likelihood on a small correlated Gaussian / two-blob data set (so the densities are
not near the identity), plus torch Distributions and plain callables.

Each attack must move ``log p`` in the requested direction by more than a trivial baseline: the best of 8 random
points of the same budget (sphere for L2, box vertices for L-inf) per sample; ``universal`` must beat the best of
8 random perturbations of its budget. The budget and the model's state (modes, ``requires_grad``) are checked.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepcheck.adapt import as_log_prob
from deepcheck.attacks import pgd, pgd_with_info, universal
from deepcheck.evaluate import bpd_against_eps, bpd_of

zuko = pytest.importorskip("zuko", reason="the test extra installs zuko")
nf = pytest.importorskip("normflows", reason="the test extra installs normflows")

EPS = 0.25
STEPS = 20


def _data(d: int, n: int, seed: int) -> torch.Tensor:
    """Two Gaussian blobs, correlated coordinates (float32)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g)
    mix = torch.eye(d) + 0.6 * torch.ones(d, d) / d
    sign = torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.0, 1.0)
    return z @ mix + 1.5 * sign


def _train(model: nn.Module, log_prob, d: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    x = _data(d, 256, seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        loss = -log_prob(model, x).mean()
        loss.backward()
        opt.step()
    return model


def _nsf() -> nn.Module:
    torch.manual_seed(0)
    return _train(zuko.flows.NSF(2, transforms=2, hidden_features=(16, 16)), lambda m, x: m().log_prob(x), 2, 0)


def _maf() -> nn.Module:
    torch.manual_seed(1)
    return _train(zuko.flows.MAF(4, transforms=2, hidden_features=(16, 16)), lambda m, x: m().log_prob(x), 4, 1)


def _realnvp() -> nn.Module:
    torch.manual_seed(2)
    flows = []
    for _ in range(4):
        flows += [nf.flows.AffineCouplingBlock(nf.nets.MLP([1, 16, 2], init_zeros=False)),
                  nf.flows.Permute(2, mode="swap")]
    model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(2), flows=flows)
    return _train(model, lambda m, x: m.log_prob(x), 2, 2)


@pytest.fixture(scope="module")
def flows() -> dict[str, tuple[nn.Module, int]]:
    return {"zuko-nsf": (_nsf(), 2), "zuko-maf": (_maf(), 4), "normflows-realnvp": (_realnvp(), 2)}


def _random_gains(lp, x: torch.Tensor, eps: float, norm: str, sign: float, seed: int) -> torch.Tensor:
    """``sign * (log p(x + r) - log p(x))`` for 8 random ``r`` on the budget's boundary (sphere for L2, box
    vertices for L-inf): shape ``(8, B)``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        base = lp.log_prob(x)
        for _ in range(8):
            r = torch.randn(x.shape, generator=g)
            r = eps * (r / r.norm(dim=1, keepdim=True) if norm == "l2" else r.sign())
            out.append(sign * (lp.log_prob(x + r) - base))
    return torch.stack(out)


def _state(model: nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def _odd_state(model: nn.Module) -> tuple[list[bool], list[bool]]:
    """A non-default state to restore: train mode, every other parameter frozen."""
    model.train()
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 2 == 0)
    return _state(model)


@pytest.mark.parametrize("name", ["zuko-nsf", "zuko-maf", "normflows-realnvp"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("likelihood", ["decrease", "increase"])
def test_pgd_moves_log_prob_more_than_random_search(flows, name, norm, likelihood):
    model, d = flows[name]
    before = _odd_state(model)
    x = _data(d, 48, seed=10)
    lp = as_log_prob(model)
    xa, info = pgd_with_info(model, x, EPS, norm=norm, likelihood=likelihood, clamp=None, steps=STEPS)
    assert _state(model) == before
    dist = (xa - x).norm(dim=1) if norm == "l2" else (xa - x).abs().amax(dim=1)
    assert float(dist.max()) <= EPS * (1 + 1e-5)
    sign = -1.0 if likelihood == "decrease" else 1.0
    with torch.no_grad():
        gain = sign * (lp.log_prob(xa) - lp.log_prob(x))
        # what the info reports is what the returned points have
        torch.testing.assert_close(info.nll_adv, -lp.log_prob(xa), rtol=1e-5, atol=1e-5)
    assert bool((gain >= -1e-5).all())  # the run from zero accepts only improvements
    rand = _random_gains(lp, x, EPS, norm, sign, seed=11)
    # measured (mean gain in nats): attack 0.25-0.69, a random point of the budget -0.03..0.03, the best of 8
    # random points 0.19-0.53 (the attack beat it by 0.013-0.17)
    assert float(gain.mean()) > float(rand.mean()) + 0.1
    assert float(gain.mean()) > float(rand.max(dim=0).values.mean()) + 0.005
    assert int(info.nonfinite.sum()) == 0


@pytest.mark.parametrize("name", ["zuko-nsf", "zuko-maf", "normflows-realnvp"])
@pytest.mark.parametrize("likelihood", ["decrease", "increase"])
def test_universal_beats_random_perturbations(flows, name, likelihood):
    model, d = flows[name]
    before = _odd_state(model)
    x = _data(d, 64, seed=20)
    lp = as_log_prob(model)
    delta = universal(model, x, 0.5, likelihood=likelihood, clamp=None, steps=STEPS, batch_size=24)
    assert _state(model) == before
    assert delta.shape == (d,) and float(delta.norm()) <= 0.5 * (1 + 1e-5)
    sign = -1.0 if likelihood == "decrease" else 1.0
    g = torch.Generator().manual_seed(21)
    with torch.no_grad():
        base = lp.log_prob(x)
        gain = float((sign * (lp.log_prob(x + delta) - base)).mean())
        rand = []
        for _ in range(8):
            r = torch.randn(d, generator=g)
            rand.append(float((sign * (lp.log_prob(x + 0.5 * r / r.norm()) - base)).mean()))
    # measured: attack 0.009-0.18, a random delta -0.10..0.10 on average, the best of 8 random deltas -0.02..0.18
    assert gain > 0.0 and gain > sum(rand) / len(rand) + 0.05 and gain > max(rand)


def test_each_kind_of_model_gives_the_same_attack(flows):
    """A zuko flow given as the factory, as its Distribution, as a bound method and as a lambda: same log-density,
    so the same deterministic attack; the loss_fn receives the object the user passed."""
    flow, _ = flows["zuko-nsf"]
    x = _data(2, 16, seed=30)
    ref = pgd(flow, x, EPS, norm="l2", clamp=None, steps=10)
    dist = flow()
    for m, kind in ((dist, "distribution"), (dist.log_prob, "callable"), (lambda t: flow().log_prob(t), "callable")):
        assert as_log_prob(m).kind == kind
        torch.testing.assert_close(pgd(m, x, EPS, norm="l2", clamp=None, steps=10), ref)
    seen = []

    def loss_fn(m, t):
        seen.append((m is flow, m.training, any(p.requires_grad for p in m.parameters())))
        return -m().log_prob(t)

    flow.train()
    for p in flow.parameters():
        p.requires_grad_(True)
    torch.testing.assert_close(pgd(flow, x, EPS, norm="l2", clamp=None, steps=10, loss_fn=loss_fn), ref)
    assert seen and all(s == (True, False, False) for s in seen)
    assert flow.training and all(p.requires_grad for p in flow.parameters())


def test_state_of_a_bound_method_owner_and_of_a_distribution_is_restored(flows):
    model, _ = flows["normflows-realnvp"]
    before = _odd_state(model)
    x = _data(2, 8, seed=40)
    assert as_log_prob(model.log_prob).modules == [model]
    pgd(model.log_prob, x, EPS, clamp=None, steps=3)
    assert _state(model) == before
    loc = nn.Parameter(torch.zeros(2))
    normal = torch.distributions.Independent(torch.distributions.Normal(loc, torch.ones(2)), 1)
    seen = []

    def loss_fn(m, t):
        seen.append(loc.requires_grad)
        return -m.log_prob(t)

    xa = pgd(normal, x, EPS, norm="l2", clamp=None, steps=5, loss_fn=loss_fn)
    assert seen and not any(seen) and loc.requires_grad
    # raising the NLL of a standard normal moves every point radially outwards by eps
    torch.testing.assert_close(xa.norm(dim=1), x.norm(dim=1) + EPS, rtol=1e-4, atol=1e-4)


def test_evaluate_on_a_third_party_flow(flows):
    model, _ = flows["zuko-maf"]
    x = _data(4, 20, seed=50)
    lp = as_log_prob(model)
    table = bpd_against_eps(model, x, [0.0, 0.1, 0.3], norm="l2", steps=10, clamp=None)
    assert table.shape == (3, 20)
    with torch.no_grad():
        expected = (-lp.log_prob(x) / (4 * torch.log(torch.tensor(2.0)))).double().numpy()
    torch.testing.assert_close(torch.from_numpy(table[0]), torch.from_numpy(expected), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(bpd_of(model, x)), torch.from_numpy(expected), rtol=1e-5, atol=1e-6)
    assert bool((table[2] >= table[1] - 1e-6).all()) and bool((table[1] >= table[0] - 1e-6).all())
    with pytest.raises(ValueError, match="clamp=None"):
        bpd_against_eps(model, x, [0.0, 0.1])  # unbounded data against the default clamp (0, 1)
