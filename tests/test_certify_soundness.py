"""Soundness of ``deepcheck.certify``: the certified upper bound is never below any NLL reachable in the set.

On random tiny GLOW and RealNVP models (float64, ActNorm initialised on data, every weight perturbed: a fresh
flow is the identity or a pure scale), ``upper`` is compared with the best of PGD with restarts (run on the
float64 model) and of dense random sampling of the set (vertices and interior points of the box, points on
the L2 sphere, all clamped). A mutation test swaps the split rule for one that drops a latent's term and
checks that this same comparison catches it.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcheck.attacks import pgd
from deepcheck.certify import nll_upper_bound, rules
from deepcheck.flows import build
from deepcheck.flows.layers import Split
from tests.models import perturb_parameters

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
       method=st.sampled_from(["ibp", "symbolic", "zonotope"]), eps=st.sampled_from([0.0, 1e-3, 1e-2, 4e-2, 0.15]),
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
    for method in ("ibp", "symbolic", "zonotope"):
        upper = nll_upper_bound(model, x, 0.0, method=method)
        assert bool(torch.all(upper >= clean)) and bool(torch.all(upper - clean <= 1e-9 * (1 + clean.abs())))


# ---------------------------------------------------------------------------------------------- mutations
def _drop_split_latent(m, x):
    """Unsound: the factored-out latent of a split is dropped from the NLL (its 0.5 ||z||^2 goes missing)."""
    h, z, ld = ORIGINAL[Split](m, x)
    return h, z.scale(0.0), ld


ORIGINAL = dict(rules.RULES)


@pytest.mark.parametrize("method", ["ibp", "symbolic", "zonotope"])
def test_dropped_latent_is_caught(monkeypatch, method):
    """A rule that drops a term of the NLL makes the model-level comparison fail where the sound rules pass it
    (single-rule mutations are tested layer by layer in test_certify_rules.py)."""
    model, x = random_model("glow", 11, 0.1), inputs(11, n=4)
    assert bool(torch.all(gap(model, x, 0.02, "linf", method) >= 0))
    monkeypatch.setitem(rules.RULES, Split, _drop_split_latent)
    assert bool(torch.any(gap(model, x, 0.02, "linf", method) < 0))
