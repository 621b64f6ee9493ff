"""Soundness of ``deepcheck.certify``: the certified upper bound is never below any NLL reachable in the set.

On random tiny GLOW and RealNVP models (float64, ActNorm initialised on data, every weight perturbed: a fresh
flow is the identity or a pure scale), ``upper`` is compared with the best of PGD with restarts (run on the
float64 model) and of dense random sampling of the set (vertices and interior points of the box, points on
the L2 sphere, all clamped). Mutation tests swap single bound rules for unsound ones (a dropped term, a
swapped bound) and check that this same comparison catches them.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcheck.attacks import pgd
from deepcheck.certify import nll_upper_bound, relax, rules
from deepcheck.flows import build, perturb_parameters
from deepcheck.flows.layers import AffineCoupling, Split

SHAPE = (1, 4, 4)
EXAMPLES = max(8, settings.default.max_examples // 3)


def random_model(kind: str, seed: int, scale: float) -> torch.nn.Module:
    """A tiny float64 GLOW (2 levels, 1 step, hidden 4) or RealNVP (2 scales, hidden 4, 1 block) on 1x4x4."""
    kw = {"steps": 1, "hidden": 4} if kind == "glow" else {"hidden": 4, "blocks": 1}
    model = build(kind, "tiny", SHAPE, seed=seed, **kw).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.log_prob(torch.rand(16, *SHAPE, generator=gen, dtype=torch.float64))
    perturb_parameters(model, scale=scale, seed=seed + 1)
    return model.eval()


def inputs(seed: int, n: int = 2) -> torch.Tensor:
    """Points in [0, 1] with some coordinates on the box faces (where the clamp cuts the ball)."""
    gen = torch.Generator().manual_seed(seed + 7)
    x = torch.rand(n, *SHAPE, generator=gen, dtype=torch.float64)
    return torch.where(x < 0.15, torch.zeros_like(x), torch.where(x > 0.85, torch.ones_like(x), x))


def empirical_max(model: torch.nn.Module, x: torch.Tensor, eps: float, norm: str, n: int = 192,
                  seed: int = 0) -> torch.Tensor:
    """The best NLL found in the set ``||delta|| <= eps``, ``x + delta in [0, 1]``: PGD (2 restarts) and ``n``
    random points per sample."""
    gen = torch.Generator().manual_seed(seed)
    best = -model.log_prob(x)
    if eps == 0:
        return best.detach()
    adv = pgd(model, x, eps, norm=norm, steps=40, restarts=2, clamp=(0.0, 1.0), seed=seed)
    with torch.no_grad():
        best = torch.maximum(best, -model.log_prob(adv))
        for kind in range(3):
            shape = (n, *x.shape[1:])
            if norm == "linf":
                u = torch.rand(shape, generator=gen, dtype=x.dtype)
                d = eps * (2 * u - 1) if kind == 0 else eps * torch.sign(u - 0.5)
            else:
                d = torch.randn(shape, generator=gen, dtype=x.dtype)
                d = eps * d / d.reshape(n, -1).norm(dim=1).reshape(n, *([1] * len(SHAPE)))
                if kind == 0:
                    d = d * torch.rand((n, 1, 1, 1), generator=gen, dtype=x.dtype)
            for i in range(x.shape[0]):
                pts = (x[i] + d).clamp(0.0, 1.0)
                best[i] = torch.maximum(best[i], (-model.log_prob(pts)).max())
    return best.detach()


def assert_sound(upper: torch.Tensor, best: torch.Tensor) -> None:
    """``upper >= best`` up to float64 evaluation noise of ``best`` (1e-9 relative)."""
    tol = 1e-9 * (1 + best.abs())
    assert bool(torch.all(upper >= best - tol)), f"unsound: upper {upper.tolist()} < attained {best.tolist()}"


def gap(model: torch.nn.Module, x: torch.Tensor, eps: float, norm: str, method: str) -> torch.Tensor:
    """``upper - best attained`` per sample (negative: the bound is caught being unsound)."""
    return nll_upper_bound(model, x, eps, norm=norm, method=method) - empirical_max(model, x, eps, norm)


@settings(max_examples=EXAMPLES)
@given(kind=st.sampled_from(["glow", "realnvp"]), norm=st.sampled_from(["linf", "l2"]),
       method=st.sampled_from(["ibp", "symbolic"]), eps=st.sampled_from([0.0, 1e-3, 1e-2, 4e-2, 0.15]),
       seed=st.integers(0, 10_000), scale=st.sampled_from([0.02, 0.1, 0.2]))
def test_upper_bound_is_never_below_attained_nll(kind, norm, method, eps, seed, scale):
    model = random_model(kind, seed, scale)
    x = inputs(seed)
    upper = nll_upper_bound(model, x, eps, norm=norm, method=method)
    assert torch.isfinite(upper).all()
    assert_sound(upper, empirical_max(model, x, eps, norm, seed=seed))


@pytest.mark.parametrize("kind", ["glow", "realnvp"])
def test_eps_zero_bound_is_the_clean_nll(kind):
    """With eps = 0 the set is the point x (padded by rounding): upper = NLL(x) to 1e-9 relative."""
    model = random_model(kind, 3, 0.05)
    x = inputs(3)
    clean = -model.log_prob(x).detach()
    for method in ("ibp", "symbolic"):
        upper = nll_upper_bound(model, x, 0.0, method=method)
        assert bool(torch.all(upper >= clean)) and bool(torch.all(upper - clean <= 1e-9 * (1 + clean.abs())))


# ---------------------------------------------------------------------------------------------- mutations
def _drop_split_latent(m, x):
    """Unsound: the factored-out latent of a split is dropped from the NLL (its 0.5 ||z||^2 goes missing)."""
    h, z, ld = rules.RULES_ORIGINAL[Split](m, x)
    return h, z.scale(0.0), ld


def _coupling_logdet_upper(m, x):
    """Unsound: the coupling's log-det enters by its *upper* bound (the NLL needs the lower one)."""
    y, ld = rules.RULES_ORIGINAL[AffineCoupling](m, x)
    return y, ld.const(ld.bounds()[1])


def _swapped_relaxation(lo, hi):
    """Unsound: the offsets of the ReLU relaxation swapped (the remainder becomes negative)."""
    a, b_lo, b_hi = relax._relax(relax.relu.f, relax.relu.df, relax.relu.critical, lo, hi)
    return a, b_hi, b_lo


@pytest.mark.parametrize("mutant, method", [(_drop_split_latent, "ibp"), (_drop_split_latent, "symbolic"),
                                            (_coupling_logdet_upper, "ibp"), (_coupling_logdet_upper, "symbolic")])
def test_unsound_rules_are_caught(monkeypatch, mutant, method):
    """Each mutant makes the soundness comparison fail on a GLOW where the sound rules pass it."""
    model, x = random_model("glow", 11, 0.1), inputs(11, n=4)
    assert bool(torch.all(gap(model, x, 0.02, "linf", method) >= 0))
    cls = Split if mutant is _drop_split_latent else AffineCoupling
    monkeypatch.setattr(rules, "RULES_ORIGINAL", dict(rules.RULES), raising=False)
    monkeypatch.setitem(rules.RULES, cls, mutant)
    assert bool(torch.any(gap(model, x, 0.02, "linf", method) < 0))


def test_swapped_relu_relaxation_is_caught(monkeypatch):
    model, x = random_model("glow", 11, 0.1), inputs(11, n=4)
    monkeypatch.setattr(relax.relu, "relaxation", _swapped_relaxation)
    assert bool(torch.any(gap(model, x, 0.1, "linf", "symbolic") < 0))
