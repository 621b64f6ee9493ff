"""Layer by layer soundness of the bound rules of ``deepcheck.certify.rules`` and mutation tests.

For one layer (random weights, float64), an input box ``x +- eps`` and each mode, every output (and log-det) of
the layer at sampled points of the box (vertices and interior points) must lie in the rule's enclosure.
Unsound rules (a dropped term, a swapped bound, injected by monkeypatching a single rule or relaxation) are
caught by the same check.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcheck.certify import relax, rules
from deepcheck.certify.forms import Form, InputSet
from deepcheck.flows.layers import ActNorm, AffineCoupling, GlowNet, InvConv1x1, LearnedPrior, ResNet, Split, Squeeze
from tests.models import perturb_parameters

SHAPE = (4, 4, 4)
MODES = ["ibp", "symbolic", "zonotope"]
EXAMPLES = max(10, settings.default.max_examples // 2)


def make_layer(kind: str, seed: int, scale: float) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _make_layer(kind, seed, scale)


def _make_layer(kind: str, seed: int, scale: float) -> torch.nn.Module:
    c = SHAPE[0]
    layer = {
        "actnorm": lambda: ActNorm(c),
        "invconv": lambda: InvConv1x1(c),
        "glow-coupling": lambda: AffineCoupling(c, 6, mask="channel", parity=seed % 2, scale="sigmoid", net="glow"),
        "realnvp-channel": lambda: AffineCoupling(c, 6, mask="channel", parity=seed % 2, scale="tanh", net="resnet"),
        "realnvp-checker": lambda: AffineCoupling(c, 6, mask="checkerboard", parity=seed % 2, scale="tanh",
                                                  net="resnet"),
        "glow-checker": lambda: AffineCoupling(c, 6, mask="checkerboard", parity=seed % 2, scale="sigmoid"),
        "squeeze": Squeeze,
        "split-prior": lambda: Split(c, learned_prior=True),
        "split": lambda: Split(c, learned_prior=False),
        "learned-prior": lambda: LearnedPrior(SHAPE),
        "glownet": lambda: GlowNet(c, 4, 6),
        "resnet": lambda: ResNet(c, 4, 6, 2),
        "conv-relu-conv": lambda: torch.nn.Sequential(torch.nn.Conv2d(c, 6, 3, padding=1), torch.nn.ReLU(),
                                                      torch.nn.Conv2d(6, c, 1)),
    }[kind]().double()
    with torch.no_grad():
        layer(torch.randn(8, *SHAPE, dtype=torch.float64))  # initialises ActNorm
    return perturb_parameters(layer, scale=scale, seed=seed).eval()


def outputs(layer: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = layer(x)
    return list(out) if isinstance(out, tuple) else [out]


def enclosures(layer: torch.nn.Module, x: torch.Tensor, eps: float, mode: str) -> list[tuple]:
    form = Form.input(InputSet.build(x, eps, "linf", None), mode)
    with torch.no_grad():
        out = rules.apply(layer, form)
    return [f.bounds() for f in (out if isinstance(out, tuple) else (out,))]


def violation(layer: torch.nn.Module, eps: float, mode: str, seed: int, n: int = 64) -> float:
    """The largest amount by which a sampled output leaves its enclosure (<= 0: none does)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, *SHAPE, generator=gen, dtype=torch.float64)
    boxes = enclosures(layer, x, eps, mode)
    worst = -float("inf")
    for kind in range(2):
        u = torch.rand(n, *SHAPE, generator=gen, dtype=torch.float64)
        d = eps * (2 * u - 1) if kind == 0 else eps * torch.sign(u - 0.5)
        for i in range(x.shape[0]):
            for out, (lo, hi) in zip(outputs(layer, x[i] + d), boxes):
                tol = 1e-9 * (1 + out.abs())
                worst = max(worst, float((lo[i] - out - tol).max()), float((out - hi[i] - tol).max()))
    return worst


KINDS = ["actnorm", "invconv", "glow-coupling", "realnvp-channel", "realnvp-checker", "glow-checker", "squeeze",
         "split-prior", "split", "learned-prior", "glownet", "resnet", "conv-relu-conv"]


@settings(max_examples=EXAMPLES)
@given(kind=st.sampled_from(KINDS), mode=st.sampled_from(MODES), eps=st.sampled_from([0.0, 1e-3, 0.05, 0.3]),
       seed=st.integers(0, 10_000), scale=st.sampled_from([0.05, 0.3]))
def test_every_rule_encloses_its_layer(kind, mode, eps, seed, scale):
    assert violation(make_layer(kind, seed, scale), eps, mode, seed) <= 0


def test_unknown_layer_is_a_type_error():
    x = Form.input(InputSet.build(torch.zeros(1, 2, dtype=torch.float64), 0.1, "linf", None), "ibp")
    with pytest.raises(TypeError, match="no certified bound rule for layer type Tanh"):
        rules.apply(torch.nn.Tanh(), x)


def test_uninitialised_actnorm_is_refused():
    x = Form.input(InputSet.build(torch.zeros(1, 2, 2, 2, dtype=torch.float64), 0.1, "linf", None), "ibp")
    with pytest.raises(ValueError, match="initialized=False"):
        rules.apply(ActNorm(2).double(), x)


# ---------------------------------------------------------------------------------------------- mutations
def _actnorm_without_bias(m, x):
    """Dropped term: ActNorm's bias."""
    k, k_rad = rules._exp_const(rules._p(m.logs))
    y, ld = ORIGINAL[ActNorm](m, x)
    return x.scale(k, k_rad), ld


def _coupling_without_shift(m, x):
    """Dropped term: the coupling's shift ``t`` (log-det unchanged)."""
    a, b = x.map(lambda t: t[:, : m.n_a]), x.map(lambda t: t[:, m.n_a:])
    log_s, s, _ = rules.coupling_scale(m, a)
    return Form.cat([a, b.mul(s)]), log_s.sum()


def _coupling_logdet_upper(m, x):
    """Swapped bound: the coupling's log-det is its upper bound (the NLL needs the lower one)."""
    y, ld = ORIGINAL[AffineCoupling](m, x)
    return y, ld.const(ld.bounds()[1])


def _split_logdet_dropped(m, x):
    """Dropped term: the learned prior's log-det ``-sum logs(h)``."""
    h, z, ld = ORIGINAL[Split](m, x)
    return h, z, ld.const(torch.zeros_like(ld.c))


ORIGINAL = dict(rules.RULES)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind, cls, mutant", [
    ("actnorm", ActNorm, _actnorm_without_bias),
    ("glow-coupling", AffineCoupling, _coupling_without_shift),
    ("glow-coupling", AffineCoupling, _coupling_logdet_upper),
    ("split-prior", Split, _split_logdet_dropped),
])
def test_mutated_rule_is_caught(monkeypatch, kind, cls, mutant, mode):
    layer = make_layer(kind, 4, 0.3)
    if kind == "glow-coupling":
        layer.parity = 0
    assert violation(layer, 0.05, mode, 4) <= 0
    monkeypatch.setitem(rules.RULES, cls, mutant)
    assert violation(layer, 0.05, mode, 4) > 0


def _swapped_image(lo, hi):
    flo, fhi = relax.Monotone.image(relax.relu, lo, hi)
    return fhi, flo


def _swapped_offsets(lo, hi):
    a, b_lo, b_hi = relax.Monotone.relaxation(relax.relu, lo, hi)
    return a, b_hi, b_lo


@pytest.mark.parametrize("mode, attr, mutant", [("ibp", "image", _swapped_image),
                                                ("symbolic", "relaxation", _swapped_offsets)])
def test_swapped_relu_bounds_are_caught(monkeypatch, mode, attr, mutant):
    """Swapped bound: ReLU's interval image (IBP) or relaxation offsets (symbolic) exchanged. (In the zonotope
    mode swapped offsets are harmless: the error symbol is symmetric.)"""
    layer = make_layer("conv-relu-conv", 5, 0.3)
    assert violation(layer, 0.3, mode, 5) <= 0
    monkeypatch.setattr(relax.relu, attr, mutant)
    assert violation(layer, 0.3, mode, 5) > 0
