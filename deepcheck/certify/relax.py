r"""Linear relaxations of the scalar nonlinearities of the flows: ``f(y) in [a y + b_lo, a y + b_hi]`` for all
``y in [l, u]``, elementwise.

The slope ``a`` is the chord ``(f(u) - f(l)) / (u - l)`` (the derivative at the midpoint for intervals too
narrow for an accurate chord; any slope is sound). The offsets are the extremes of ``g(y) = f(y) - a y`` on
``[l, u]``; a differentiable ``g`` attains them at ``l``, ``u`` or a critical point ``f'(y) = a``, all of
which are listed in closed form below (and a kink: ReLU's 0), so ``b_lo = min g``, ``b_hi = max g`` over that
finite candidate set is exact up to the rounding slack ``FUNC_REL (|f(y)| + |a y|)`` of each evaluation
(:mod:`deepcheck.certify.forms`). Extra candidates are harmless (every candidate lies in ``[l, u]``).

===============  ===========================  =====================================================
``f``             ``f'``                       critical points of ``f(y) - a y``
===============  ===========================  =====================================================
``relu``          0 or 1                       none (kink at 0)
``exp``           ``exp y``                    ``log a``
``sigmoid``       ``s (1 - s)``                ``+- 2 atanh(sqrt(1 - 4a))``
``logsigmoid``    ``sigmoid(-y)``              ``log((1 - a) / a)``
``tanh``          ``1 - tanh^2``               ``+- atanh(sqrt(1 - a))``
===============  ===========================  =====================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .forms import ABS_SLACK, FUNC_REL

Tensor = torch.Tensor

_NARROW = 1e-7


def _relax(f: Callable[[Tensor], Tensor], df: Callable[[Tensor], Tensor],
           critical: Callable[[Tensor], list[Tensor]], lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, b_lo, b_hi)`` for ``f`` on ``[lo, hi]`` (module docstring)."""
    width = hi - lo
    narrow = width <= _NARROW * (1.0 + lo.abs() + hi.abs())
    chord = (f(hi) - f(lo)) / torch.where(narrow, torch.ones_like(width), width)
    a = torch.where(narrow, df(0.5 * (lo + hi)), chord)
    a = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    cands = [lo, hi] + [torch.nan_to_num(y, nan=0.0).clamp(lo, hi) for y in critical(a)]
    g_lo = g_hi = None
    for y in cands:
        fy, ay = f(y), a * y
        g = fy - ay
        slack = FUNC_REL * (fy.abs() + ay.abs()) + ABS_SLACK
        g_lo = g - slack if g_lo is None else torch.minimum(g_lo, g - slack)
        g_hi = g + slack if g_hi is None else torch.maximum(g_hi, g + slack)
    return a, g_lo, g_hi


@dataclass
class Monotone:
    """A non-decreasing elementwise function ``f`` with its derivative and the critical points of
    ``f(y) - a y``. ``image(lo, hi)`` is the exact interval image ``[f(lo), f(hi)]`` (with rounding slack), used
    by IBP; ``relaxation(lo, hi) -> (a, b_lo, b_hi)`` the linear relaxation, used by the symbolic method."""

    name: str
    f: Callable[[Tensor], Tensor]
    df: Callable[[Tensor], Tensor]
    critical: Callable[[Tensor], list[Tensor]]

    def relaxation(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _relax(self.f, self.df, self.critical, lo, hi)

    def image(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        flo, fhi = self.f(lo), self.f(hi)
        return flo - FUNC_REL * flo.abs() - ABS_SLACK, fhi + FUNC_REL * fhi.abs() + ABS_SLACK


def _sigmoid_critical(a: Tensor) -> list[Tensor]:
    y = 2.0 * torch.atanh(torch.sqrt((1.0 - 4.0 * a).clamp(min=0.0, max=1.0)))
    return [y, -y]


def _tanh_critical(a: Tensor) -> list[Tensor]:
    y = torch.atanh(torch.sqrt((1.0 - a).clamp(min=0.0, max=1.0)))
    return [y, -y]


relu = Monotone("relu", torch.relu, lambda y: (y > 0).to(y.dtype), lambda a: [torch.zeros_like(a)])
exp = Monotone("exp", torch.exp, torch.exp, lambda a: [torch.log(a)])
sigmoid = Monotone("sigmoid", torch.sigmoid, lambda y: torch.sigmoid(y) * torch.sigmoid(-y), _sigmoid_critical)
logsigmoid = Monotone("logsigmoid", F.logsigmoid, lambda y: torch.sigmoid(-y),
                      lambda a: [torch.log1p(-a) - torch.log(a)])
tanh = Monotone("tanh", torch.tanh, lambda y: 1.0 - torch.tanh(y) ** 2, _tanh_critical)
