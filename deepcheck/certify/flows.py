r"""Bound propagation through whole flows: the model-level rules, each mirroring its model's ``forward``.

``latents(model, x) -> (zs, logdet)``: enclosures of the latents (a list, finest first) and of the total
log-det, from the enclosure ``x`` of the input (:mod:`deepcheck.certify.rules` for the layers).

The :class:`~deepcheck.flows.linear.LinearFlow` ``z = A^{-1}(x - b)``, ``logdet = -log|det A|`` is done
rigorously although ``A^{-1}`` and ``det A`` are only computed approximately:

* with ``M`` the computed inverse and ``rho >= ||I - M A||_inf`` (rounding included) ``< 1``,
  ``||A^{-1} - M||_inf <= rho ||M||_inf / (1 - rho) =: e``, so ``z = M (x - b) + w`` with
  ``|w_i| <= e max_j |x_j - b_j|`` (added to the remainder);
* the computed LU factors satisfy ``L U = P (A + dA)`` with ``|dA| <= gamma_d |L||U|`` (Higham, Thm 9.3), so
  ``log|det A| = sum log|U_ii| - log|det(I + A^{-1} dA)|`` and the last term lies within
  ``+- d (-log(1 - ||A^{-1}||_inf ||dA||_inf))`` (every eigenvalue of ``I + X`` is within ``||X||`` of 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..flows.glow import Glow
from ..flows.layers import Chain
from ..flows.linear import LinearFlow
from ..flows.realnvp import RealNVP
from .forms import ABS_SLACK, FUNC_REL, Form, gamma
from .reduce import compact
from .rules import apply

MODEL_RULES: dict[type, object] = {}


def _zero(x: Form) -> Form:
    return x.const(x.c.new_zeros(x.c.shape[0]))


def _chain_compacted(flow: Chain, h: Form, live: list[Form]) -> tuple[Form, Form, list[Form]]:
    """The ``Chain`` rule (same operations, same order) with :func:`~deepcheck.certify.reduce.compact` after each
    layer: ``(h, chain logdet, live)``, ``live`` the other enclosures in use (rewritten when compacted)."""
    ld_chain = _zero(h)
    for layer in flow.layers:
        h, ld = apply(layer, h)
        ld_chain = ld_chain + ld
        h, (ld_chain, *live) = compact(h, [ld_chain, *live], h.ctx.max_symbols)
    return h, ld_chain, live


def _glow(model: Glow, x: Form) -> tuple[list[Form], Form]:
    h = x.shift(-0.5)
    logdet = _zero(x)
    zs = []
    for level, flow in enumerate(model.flows):
        h, _ = apply(model.squeeze, h)
        if type(flow) is Chain:
            h, ld, (logdet, *zs) = _chain_compacted(flow, h, [logdet, *zs])
        else:
            h, ld = apply(flow, h)
        logdet = logdet + ld
        if level < len(model.splits):
            h, z, ld = apply(model.splits[level], h)
            zs.append(z)
            logdet = logdet + ld
    if model.top is not None:
        h, ld = apply(model.top, h)
        logdet = logdet + ld
    zs.append(h)
    return zs, logdet


def _realnvp(model: RealNVP, x: Form) -> tuple[list[Form], Form]:
    h = x.shift(-0.5)
    logdet = _zero(x)
    zs = []
    for checker, channel, split in zip(model.checker, model.channel, model.splits):
        h, ld1 = apply(checker, h)
        h, _ = apply(model.squeeze, h)
        h, ld2 = apply(channel, h)
        h, z, ld3 = apply(split, h)
        zs.append(z)
        logdet = logdet + ld1 + ld2 + ld3
    h, ld = apply(model.final, h)
    zs.append(h)
    return zs, logdet + ld


def _inf_norm(a: torch.Tensor) -> float:
    """An upper bound of ``||a||_inf`` (max row sum of ``|a|``, rounding included)."""
    d = a.shape[1]
    return float(a.abs().sum(dim=1).max()) * (1 + gamma(d + 2))


def linear_inverse(A: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(M, e)``: an approximate inverse of ``A`` and a rigorous ``e >= ||A^{-1} - M||_inf``."""
    d = A.shape[0]
    M = torch.linalg.inv(A)
    eye = torch.eye(d, dtype=A.dtype, device=A.device)
    R = eye - M @ A
    rho = _inf_norm(R) + gamma(d + 2) * _inf_norm(M.abs() @ A.abs() + eye) + ABS_SLACK
    if rho >= 0.5:
        raise ValueError(f"A is too ill-conditioned to certify its inverse (||I - inv(A) A|| <= {rho:.3g})")
    return M, rho * _inf_norm(M) / (1 - rho) * (1 + 4 * gamma(4))


def log_abs_det_bounds(A: torch.Tensor, inv_norm: float) -> tuple[float, float]:
    """``lo <= log|det A| <= hi`` from the LU factors (module docstring); ``inv_norm >= ||A^{-1}||_inf``."""
    d = A.shape[0]
    LU, _ = torch.linalg.lu_factor(A)
    L = torch.tril(LU, -1) + torch.eye(d, dtype=A.dtype, device=A.device)
    U_ = torch.triu(LU)
    dA = gamma(d + 2) * _inf_norm(L.abs() @ U_.abs()) * (1 + gamma(d + 2))
    x = inv_norm * dA
    if x >= 0.5:
        raise ValueError("A is too ill-conditioned to certify log|det A|")
    logs = torch.log(torch.diagonal(U_).abs())
    value = float(logs.sum())
    rad = d * (-math.log1p(-x)) * (1 + 1e-12) + (FUNC_REL + gamma(d + 2)) * float(logs.abs().sum()) + ABS_SLACK
    return value - rad, value + rad


def _linear(model: LinearFlow, x: Form) -> tuple[list[Form], Form]:
    A = model.A.detach().to(torch.float64)
    b = model.b.detach().to(torch.float64)
    M, e = linear_inverse(A)
    v = x.shift(-b)
    z = v.linear(lambda t: t @ M.T, lambda t: t @ M.abs().T, None, A.shape[0])
    z.r = z.r + e * v.mag().max(dim=1, keepdim=True).values * (1 + 4 * gamma(4))
    lo, hi = log_abs_det_bounds(A, _inf_norm(M) + e)
    ld = x.c.new_full((x.c.shape[0],), -0.5 * (lo + hi))
    return [z], x.const(ld, 0.5 * (hi - lo) + 2 * gamma(4) * (abs(lo) + abs(hi)))


MODEL_RULES.update({Glow: _glow, RealNVP: _realnvp, LinearFlow: _linear})


def latents(model: nn.Module, x: Form) -> tuple[list[Form], Form]:
    """Enclosures of ``model``'s latents and total log-det over the input enclosure ``x``."""
    fn = MODEL_RULES.get(type(model))
    if fn is None:
        raise TypeError(f"no certified bound rule for model type {type(model).__name__}; covered: "
                        f"{sorted(c.__name__ for c in MODEL_RULES)}")
    return fn(model, x)
