"""The zonotope's symbol budget (``deepcheck.certify.reduce.compact`` and the per-relaxation memory cap of
``deepcheck.certify.forms``): sound at every budget, never tighter than the exact range it replaces, and
actually used.

* On random tiny GLOW models, the certified ``upper`` at small budgets (compaction after every step) is compared
  with the best NLL PGD and dense sampling find (the helpers of ``test_certify_soundness``).
* ``compact`` on random forms: every tensor's exact range over the symbol box (per element, and of random
  linear functionals of ``h``) is contained in the compacted form's range, and per element the range is the
  same (the dropped part becomes one fresh symbol of the same width).
* With the memory limit shrunk, relaxations that do not fit go to the remainder: no MemoryError, still sound.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcheck.certify import api, forms, nll_bounds, nll_upper_bound
from deepcheck.certify.flows import latents
from deepcheck.certify.forms import Form, InputSet
from deepcheck.certify.reduce import compact
from tests.test_certify_soundness import assert_sound, empirical_max, inputs, random_model

EXAMPLES = max(8, settings.default.max_examples // 4)


def _context_after(model: torch.nn.Module, x: torch.Tensor, eps: float, budget: int) -> forms.Context:
    zs, logdet = latents(model, Form.input(InputSet.build(x, eps, "linf", (0.0, 1.0)), "zonotope", budget))
    return logdet.ctx


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([1e-3, 1e-2, 4e-2, 0.15]), budget=st.sampled_from([0, 20, 60]),
       scale=st.sampled_from([0.02, 0.1, 0.2]))
def test_compacted_bound_is_never_below_attained_nll(seed, eps, budget, scale):
    model, x = random_model("glow", seed, scale), inputs(seed)
    upper = nll_upper_bound(model, x, eps, method="zonotope", max_symbols=budget)
    assert torch.isfinite(upper).all()
    assert_sound(upper, empirical_max(model, x, eps, "linf", seed=seed))


def test_compaction_happens_and_only_loosens():
    """At a budget below the symbol count the compaction runs (the count ends at most max(budget, n)) and the
    bound is sound and, on this model, not below the full zonotope's."""
    model, x = random_model("glow", 5, 0.1), inputs(5, n=3)
    full = _context_after(model, x, 0.02, forms.MAX_SYMBOLS)
    small = _context_after(model, x, 0.02, 10)
    assert full.compactions == 0 and full.n_symbols > 10
    assert small.compactions > 0 and small.n_symbols < full.n_symbols
    up_full = nll_upper_bound(model, x, 0.02, method="zonotope")
    up_small = nll_upper_bound(model, x, 0.02, method="zonotope", max_symbols=10)
    assert bool(torch.all(up_small >= up_full - 1e-9 * up_full.abs()))
    assert_sound(up_small, empirical_max(model, x, 0.02, "linf"))


def _random_forms(seed: int, m: int) -> tuple[Form, list[Form]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 2, 2, generator=gen, dtype=torch.float64)
    inp = InputSet.build(x, 0.1, "linf", None)
    h = Form.input(inp, "zonotope", max_symbols=m // 2)
    h.ctx.n_symbols = m

    def form(shape: tuple[int, ...], k: int) -> Form:
        g = torch.randn(2, 12, *shape, generator=gen, dtype=torch.float64)
        e = torch.randn(2, k, *shape, generator=gen, dtype=torch.float64) * torch.rand(k, generator=gen).pow(4)[
            (None, slice(None)) + (None,) * len(shape)]
        c = torch.randn(2, *shape, generator=gen, dtype=torch.float64)
        return Form(c, g, e, torch.rand(2, *shape, generator=gen, dtype=torch.float64) * 1e-3, h.ctx)

    return form((3, 2, 2), m), [form((), m - 3), form((5,), m), form((4,), 2)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compact_contains_the_exact_range(seed):
    """Per element the compacted range equals the old one (to rounding) and contains it; a linear functional
    ``a^T h`` (exact range: the box maximum of its coefficients) never gets a tighter range."""
    h, others = _random_forms(seed, 40)
    h2, others2 = compact(h, others, 20)
    assert h.ctx.n_symbols == 20 and h.ctx.compactions == 1  # 8 kept + one fresh symbol per element of h (12)
    assert h2.E.shape[1] == 20 and others2[0].E.shape[1] <= 8
    for old, new in zip([h, *others], [h2, *others2]):
        lo, hi = old.bounds()
        lo2, hi2 = new.bounds()
        tol = 1e-13 * (1 + lo.abs() + hi.abs())  # the rounding slack of bounds() shrinks with fewer symbols
        assert bool(torch.all(lo2 <= lo + tol)) and bool(torch.all(hi2 >= hi - tol))
        torch.testing.assert_close(hi2, hi, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(lo2, lo, rtol=1e-12, atol=1e-12)
    gen = torch.Generator().manual_seed(seed + 100)
    for _ in range(5):
        a = torch.randn(3, 2, 2, generator=gen, dtype=torch.float64)
        lo, hi = h.scale(a).sum().bounds()
        lo2, hi2 = h2.scale(a).sum().bounds()
        assert bool(torch.all(lo2 <= lo + 1e-12)) and bool(torch.all(hi2 >= hi - 1e-12))


def test_compact_below_budget_is_a_no_op():
    h, others = _random_forms(3, 40)
    h2, others2 = compact(h, others, 40)
    assert h2 is h and all(a is b for a, b in zip(others, others2)) and h.ctx.compactions == 0


def test_memory_cap_boxes_instead_of_raising(monkeypatch):
    """With the per-tensor memory limit shrunk to a few symbols' worth, the relaxations box their errors (counted
    in ``Context.boxed``) instead of raising MemoryError, and the bound stays sound."""
    model, x = random_model("glow", 7, 0.1), inputs(7)
    monkeypatch.setattr(forms, "MAX_SYMBOL_BYTES", 8 * 2 * 16 * 3)  # 3 symbols of 16 elements
    ctx = _context_after(model, x, 0.02, forms.MAX_SYMBOLS)
    assert ctx.boxed > 0
    upper = nll_upper_bound(model, x, 0.02, method="zonotope")
    assert_sound(upper, empirical_max(model, x, 0.02, "linf"))


def test_nan_enclosure_gives_infinite_upper(monkeypatch):
    """NaN in the enclosures (an overflowing interval: measured with IBP on the 28x28 GLOW) means nothing is known:
    the upper bound is +inf, never NaN."""
    model, x = random_model("glow", 2, 0.05), inputs(2)
    monkeypatch.setattr(api, "box_upper", lambda zs, logdet: torch.full((x.shape[0],), math.nan,
                                                                        dtype=torch.float64))
    assert bool(torch.all(nll_upper_bound(model, x, 0.01, method="ibp") == math.inf))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_bad_max_symbols_is_named(bad):
    model, x = random_model("glow", 1, 0.05), inputs(1)
    with pytest.raises(ValueError, match="max_symbols"):
        nll_bounds(model, x, 0.01, method="zonotope", max_symbols=bad)
