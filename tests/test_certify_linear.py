"""``deepcheck.certify`` on the torch LinearFlow against the exact optimum of linflow (R1 for L2, R3 for
L-infinity by vertex enumeration); the comparison with linflow's SDP certificate is measured in
``bench/bench_certify.py``.

On a linear flow ``z = M (x + delta - b)`` is affine, so the symbolic/zonotope bound is the maximum over the set
of ``sum_j ((l_j + u_j) z_j - l_j u_j) / 2 - logdet`` with ``[l_j, u_j]`` the exact range of ``z_j``; each
chord exceeds ``z_j^2 / 2`` by at most ``(u_j - l_j)^2 / 8``, so (a theorem, tested below)

    opt <= upper <= opt + sum_j (u_j - l_j)^2 / 8,

and the IBP bound ``sum_j max(l_j^2, u_j^2) / 2 - logdet`` is never below the symbolic one.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcheck.certify import nll_bounds, nll_upper_bound
from deepcheck.flows import LinearFlow
from linflow import certified_perturbation
from tests.strategies import random_flow

EXAMPLES = max(10, settings.default.max_examples // 2)


def case(d: int, log_cond: float, seed: int, n: int = 3):
    rng = np.random.default_rng(seed)
    flow = random_flow(d, 10.0**log_cond, rng)
    x = flow.mean + 1.5 * rng.standard_normal((n, d)) @ np.asarray(flow.A).T
    return flow, x, LinearFlow.from_linflow(flow)


def exact_worst_nll(flow, x: np.ndarray, eps: float, norm: str) -> np.ndarray:
    opts = {"exact": True} if norm == "linf" else {}
    cert = certified_perturbation(flow, x, eps, norm=np.inf if norm == "linf" else 2, **opts)
    assert np.all(cert.exact), cert.method  # the reference must be an exact optimum
    return flow.nll(x) + np.asarray(cert.upper)


def latent_widths(flow, eps: float, norm: str) -> np.ndarray:
    M = np.linalg.inv(np.asarray(flow.A))
    return 2 * eps * (np.abs(M).sum(axis=1) if norm == "linf" else np.linalg.norm(M, axis=1))


@settings(max_examples=EXAMPLES)
@given(d=st.integers(1, 6), log_cond=st.floats(0.0, 2.0), seed=st.integers(0, 2**31),
       eps=st.sampled_from([0.0, 1e-3, 0.05, 0.5]), norm=st.sampled_from(["linf", "l2"]))
def test_bounds_bracket_the_exact_optimum(d, log_cond, seed, eps, norm):
    flow, x, model = case(d, log_cond, seed)
    opt = exact_worst_nll(flow, x, eps, norm)
    tol = 1e-9 * (1 + np.abs(opt))
    ups = {m: nll_upper_bound(model, torch.tensor(x), eps, norm=norm, clamp=None, method=m).numpy()
           for m in ("ibp", "symbolic", "zonotope")}
    for m, up in ups.items():
        assert np.all(up >= opt - tol), (m, up, opt)
    slack = (latent_widths(flow, eps, norm) ** 2).sum() / 8
    assert np.all(ups["symbolic"] <= opt + slack * (1 + 1e-9) + tol)
    assert np.all(ups["symbolic"] <= ups["ibp"] + tol)
    np.testing.assert_allclose(ups["zonotope"], ups["symbolic"], rtol=1e-12, atol=1e-12)


def test_lower_is_attained_and_reaches_the_optimum_at_small_eps():
    """``lower`` is the NLL at the returned witness, which lies in the set; PGD finds R3's vertex here."""
    flow, x, model = case(5, 1.0, 3)
    eps = 0.02
    b = nll_bounds(model, torch.tensor(x), eps, clamp=None, method="symbolic", restarts=3)
    assert float(b.delta.abs().max()) <= eps
    np.testing.assert_allclose(b.lower.numpy(), flow.nll(x + b.delta.numpy()), rtol=1e-12)
    opt = exact_worst_nll(flow, x, eps, "linf")
    assert np.all(b.lower.numpy() <= opt + 1e-9) and np.all(b.upper.numpy() >= opt - 1e-9)
    np.testing.assert_allclose(b.lower.numpy(), opt, rtol=1e-6)


@settings(max_examples=EXAMPLES)
@given(d=st.integers(1, 6), log_cond=st.floats(0.0, 2.0), seed=st.integers(0, 2**31),
       eps=st.sampled_from([1e-3, 0.05, 0.5]))
def test_gram_bound_is_sound_and_never_looser_than_the_chord_on_a_box(d, log_cond, seed, eps):
    """Affine latents on a box: the chord bound is the Gram bound with ``sum_j rad_j^2`` in place of
    ``1^T |A^T A| 1`` (objective module), so Gram <= chord; both stay above the exact optimum."""
    from deepcheck.certify.flows import latents
    from deepcheck.certify.forms import Form, InputSet
    from deepcheck.certify.objective import chord_upper, gram_upper

    flow, x, model = case(d, log_cond, seed)
    opt = exact_worst_nll(flow, x, eps, "linf") - 0.5 * d * np.log(2 * np.pi)
    zs, logdet = latents(model, Form.input(InputSet.build(torch.tensor(x), eps, "linf", None), "zonotope"))
    gram, chord = gram_upper(zs, logdet).numpy(), chord_upper(zs, logdet).numpy()
    tol = 1e-9 * (1 + np.abs(opt))
    assert np.all(gram >= opt - tol) and np.all(chord >= opt - tol)
    assert np.all(gram <= chord + tol)
