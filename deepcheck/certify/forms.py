r"""Affine forms with an interval remainder: the value domain of certified bound propagation (R1-R3 lifted to
deep flows, issue 15).

A :class:`Form` encloses a tensor-valued function ``v(delta)`` of the input perturbation ``delta`` (flattened,
``K`` entries) over an input set ``S`` (:class:`InputSet`): for every ``delta in S`` and every element ``i``

.. math::  v_i(\delta) \in c_i + \sum_k G_{k,i}\,\delta_k + [-r_i, r_i] .

``G = None`` is a plain interval (centre ``c``, radius ``r``): that is interval bound propagation (IBP). With
``G`` the form is exact through affine layers, and nonlinear layers add their linear relaxation's slack to
``r`` (:mod:`deepcheck.certify.relax`); concretisation (:meth:`Form.bounds`) maximises the linear part over
``S``: for a box ``[dlo, dhi]`` exactly, ``sum_k max(G_k dlo_k, G_k dhi_k)``, and for an L2 ball of radius
``eps`` also by the dual norm ``eps ||G||_2`` (the smaller of the two bounds is kept: ``S`` lies in both).

**Soundness margin (independent of the rounding mode).** All arithmetic is float64. Every operation adds to
``r`` a bound on its own rounding error, using the unit roundoff ``u = 2^-52`` (the machine epsilon, valid for
round-to-nearest *and* directed rounding): a sum of ``n`` products computed in any order, with or without
FMA, is within ``gamma_n = n u / (1 - n u)`` times the sum of the products' magnitudes (Higham, Thm 3.1);
each element's magnitude is bounded by ``mag = |c| + r + sum_k |G_k| max|delta_k|``. Elementwise
transcendental functions (``exp``, ``tanh``, ``log-sigmoid``...) are assumed accurate to ``FUNC_ULPS`` ulps
(glibc/SLEEF document <= 4); every result also gets ``ABS_SLACK`` for underflow. Constants computed from the
parameters (``exp(logs)``, the 1x1 convolution's ``P L U``) carry their own radius. The certified quantity is
the NLL in exact real arithmetic of the model's parameters (converted exactly to float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

Tensor = torch.Tensor

if TYPE_CHECKING:
    from .relax import Monotone

U = float(torch.finfo(torch.float64).eps)
"""Unit roundoff for any rounding mode (2^-52)."""
FUNC_ULPS = 16
"""Ulps allowed to each elementwise transcendental function evaluation (4x what libm documents)."""
FUNC_REL = FUNC_ULPS * U
ABS_SLACK = 1e-290
INTERVAL_FACTOR = 1.0
"""Absolute slack added per operation: covers underflow (subnormal spacing 5e-324 times any term count)."""


def gamma(n: int) -> float:
    """``gamma_n = n u / (1 - n u)``, the relative error bound of an ``n``-term sum of products."""
    nu = n * U
    if nu >= 0.5:
        raise ValueError(f"a sum of {n} terms is too long for the float64 rounding bound")
    return nu / (1.0 - nu)


@dataclass(frozen=True)
class InputSet:
    """The perturbation set ``S``: the box ``dlo <= delta <= dhi`` (shape ``(B, K)``, the eps-ball of the
    L-infinity norm intersected with the clamp box, or the box hull of the L2 ball with it) and, for
    ``norm="l2"``, also ``||delta||_2 <= eps``. ``x`` is the clean input, shape ``(B, *input_shape)``."""

    x: Tensor
    dlo: Tensor
    dhi: Tensor
    eps: float
    norm: str

    @property
    def wmax(self) -> Tensor:
        """``max |delta_k|`` over ``S``, shape ``(B, K)``."""
        return torch.maximum(self.dlo.abs(), self.dhi.abs())

    @classmethod
    def build(cls, x: Tensor, eps: float, norm: str, clamp: tuple[float, float] | None) -> InputSet:
        """``S`` for clean inputs ``x`` (float64); the box is widened by ``2 u (|x| + eps)`` so that every
        rounded ``fl(x + delta)`` of an admissible ``delta`` lies in it."""
        flat = x.reshape(x.shape[0], -1)
        pad = 2 * U * (flat.abs() + eps) + ABS_SLACK
        dlo = torch.full_like(flat, -eps)
        dhi = torch.full_like(flat, eps)
        if clamp is not None:
            dlo = torch.maximum(dlo, clamp[0] - flat)
            dhi = torch.minimum(dhi, clamp[1] - flat)
            if bool((dlo > dhi + pad).any()):
                raise ValueError(f"x lies outside the clamp box {clamp}: the perturbation set is empty")
            dhi = torch.maximum(dhi, dlo)
        return cls(x=x, dlo=dlo - pad, dhi=dhi + pad, eps=eps * (1 + 4 * U), norm=norm)


def _flat_apply(fn: Callable[[Tensor], Tensor], g: Tensor) -> Tensor:
    """Apply a batch-first map to generators ``(B, K, *s)`` by folding ``K`` into the batch."""
    b, k = g.shape[:2]
    out = fn(g.reshape(b * k, *g.shape[2:]))
    return out.reshape(b, k, *out.shape[1:])


def _gen(t: Tensor, c: Tensor) -> Tensor:
    """A per-element constant of ``c``'s shape (or broadcastable to it) lifted to the generators' shape."""
    return t.unsqueeze(1) if t.dim() == c.dim() else t


@dataclass
class Form:
    """An enclosure ``c + G delta + [-r, r]`` of a tensor over the input set ``inp`` (module docstring)."""

    c: Tensor
    G: Tensor | None
    r: Tensor
    inp: InputSet
    symbolic: bool

    # ------------------------------------------------------------------ construction and concretisation
    @classmethod
    def input(cls, inp: InputSet, symbolic: bool) -> Form:
        """``x + delta`` itself: generators the identity (exact; IBP drops them at its first nonlinearity)."""
        x = inp.x
        b, k = x.shape[0], inp.dlo.shape[1]
        eye = torch.eye(k, dtype=x.dtype, device=x.device).expand(b, k, k).reshape(b, k, *x.shape[1:])
        return cls(x.clone(), eye.clone(), torch.zeros_like(x), inp, symbolic)

    def const(self, value: Tensor, rad: Tensor | float = 0.0) -> Form:
        """A constant (per sample, no generators) with the same input set; ``rad`` its uncertainty."""
        r = torch.zeros_like(value) + rad + ABS_SLACK
        return Form(value, None, r, self.inp, self.symbolic)

    def mag(self) -> Tensor:
        """An upper bound of ``|v|`` over the input set (for rounding-error bounds)."""
        m = self.c.abs() + self.r
        if self.G is not None:
            w = self.inp.wmax.reshape(*self.inp.wmax.shape, *([1] * (self.c.dim() - 1)))
            m = m + (self.G.abs() * w).sum(dim=1)
        return m

    def bounds(self) -> tuple[Tensor, Tensor]:
        """``(lo, hi)`` with ``lo <= v <= hi`` over the whole input set (outward by the rounding bound)."""
        if self.G is None:
            slack = 2 * U * (self.c.abs() + self.r) + ABS_SLACK
            return self.c - self.r - slack, self.c + self.r + slack
        shape = (*self.inp.dlo.shape, *([1] * (self.c.dim() - 1)))
        dlo, dhi = self.inp.dlo.reshape(shape), self.inp.dhi.reshape(shape)
        a, b = self.G * dlo, self.G * dhi
        up = torch.maximum(a, b).sum(dim=1)
        down = torch.minimum(a, b).sum(dim=1)
        if self.inp.norm == "l2":
            rad = self.inp.eps * self.G.pow(2).sum(dim=1).sqrt()
            up, down = torch.minimum(up, rad), torch.maximum(down, -rad)
        slack = gamma(self.G.shape[1] + 4) * self.mag() + ABS_SLACK
        if self.inp.norm == "l2":  # the L2 norm itself is rounded: a relative bound on the radius term
            slack = slack + gamma(self.G.shape[1] + 4) * self.inp.eps * self.G.abs().sum(dim=1)
        return self.c - self.r + down - slack, self.c + self.r + up + slack

    # ------------------------------------------------------------------ exact (structural) maps
    def map(self, fn: Callable[[Tensor], Tensor]) -> Form:
        """A batch-first map that only moves or selects elements (reshape, permute, slice)."""
        g = None if self.G is None else _flat_apply(fn, self.G)
        return Form(fn(self.c), g, fn(self.r), self.inp, self.symbolic)

    @staticmethod
    def cat(forms: Sequence[Form], dim: int = 1) -> Form:
        """Concatenate along a per-sample dimension ``dim >= 1``."""
        f0 = forms[0]
        c = torch.cat([f.c for f in forms], dim)
        r = torch.cat([f.r for f in forms], dim)
        if all(f.G is None for f in forms):
            return Form(c, None, r, f0.inp, f0.symbolic)
        k = f0.inp.dlo.shape[1]
        gs = [f.G if f.G is not None else f.c.new_zeros(f.c.shape[0], k, *f.c.shape[1:]) for f in forms]
        return Form(c, torch.cat(gs, dim + 1), r, f0.inp, f0.symbolic)

    # ------------------------------------------------------------------ affine arithmetic
    def linear(self, fn0: Callable[[Tensor], Tensor], absfn: Callable[[Tensor], Tensor], bias: Tensor | None,
               n_terms: int, wrad_fn: Callable[[Tensor], Tensor] | None = None) -> Form:
        """``L v + bias`` for a linear map ``L`` given as ``fn0`` (batch-first, no bias), with ``absfn`` the map
        with absolute weights ``|L|``, each output a sum of ``n_terms`` products; ``wrad_fn`` (the map with the
        weights' own uncertainty radius) adds the effect of inexact weights."""
        m = self.mag()
        c = fn0(self.c)
        scale = absfn(m)
        if bias is not None:
            c = c + bias
            scale = scale + bias.abs()
        g = None if self.G is None else _flat_apply(fn0, self.G)
        r = absfn(self.r) + gamma(n_terms + 2) * scale + ABS_SLACK
        if wrad_fn is not None:
            r = r + (1 + gamma(n_terms + 2)) * wrad_fn(m)
        return Form(c, g, r, self.inp, self.symbolic)

    def scale(self, k: Tensor | float, k_rad: Tensor | float = 0.0) -> Form:
        """``k v`` for a constant ``k`` broadcastable to the element shape, ``k`` known to ``+- k_rad``."""
        k = torch.as_tensor(k, dtype=self.c.dtype, device=self.c.device)
        m = self.mag()
        g = None if self.G is None else self.G * _gen(k, self.c)
        r = k.abs() * self.r + (3 * U * k.abs() + k_rad) * m * (1 + 2 * U) + ABS_SLACK
        return Form(k * self.c, g, r, self.inp, self.symbolic)

    def shift(self, b: Tensor | float, b_rad: Tensor | float = 0.0) -> Form:
        """``v + b`` for a constant ``b`` known to ``+- b_rad``."""
        b = torch.as_tensor(b, dtype=self.c.dtype, device=self.c.device)
        c = self.c + b
        r = self.r + b_rad + 2 * U * (self.c.abs() + b.abs()) + ABS_SLACK
        return Form(c, self.G, r.expand_as(c).clone() if r.shape != c.shape else r, self.inp, self.symbolic)

    def __add__(self, other: Form) -> Form:
        c = self.c + other.c
        if self.G is None or other.G is None:
            g = self.G if other.G is None else other.G
        else:
            g = self.G + other.G
        r = self.r + other.r + 2 * U * (self.mag() + other.mag()) + ABS_SLACK
        return Form(c, g, r, self.inp, self.symbolic)

    def __neg__(self) -> Form:
        return Form(-self.c, None if self.G is None else -self.G, self.r, self.inp, self.symbolic)

    def __sub__(self, other: Form) -> Form:
        return self + (-other)

    def sum(self) -> Form:
        """The per-sample sum over all elements (a form of shape ``(B,)``)."""
        n = max(1, math.prod(self.c.shape[1:]))
        flat = self.c.reshape(self.c.shape[0], -1)
        m = self.mag().reshape(flat.shape).sum(dim=1)
        g = None if self.G is None else self.G.reshape(*self.G.shape[:2], -1).sum(dim=2)
        r = self.r.reshape(flat.shape).sum(dim=1) + gamma(n + 2) * m + ABS_SLACK
        return Form(flat.sum(dim=1), g, r, self.inp, self.symbolic)

    def mul(self, other: Form) -> Form:
        r"""The product of two enclosed tensors (McCormick-style, exact identity)

        .. math:: xy = x_0 y + y_0 x - x_0 y_0 + (x - x_0)(y - y_0), \quad |(x - x_0)(y - y_0)| \le r_x r_y,

        with ``[x_0 - r_x, x_0 + r_x]`` the concretised interval of ``x`` (likewise ``y``); per element the
        interval product (min and max of the four corner products) where it is narrower. IBP: the interval
        product."""
        xl, xh = self.bounds()
        yl, yh = other.bounds()
        x0, rx = 0.5 * (xl + xh), 0.5 * (xh - xl) + 2 * U * (xl.abs() + xh.abs())
        y0, ry = 0.5 * (yl + yh), 0.5 * (yh - yl) + 2 * U * (yl.abs() + yh.abs())
        corners = torch.stack([xl * yl, xl * yh, xh * yl, xh * yh])
        c_lo, c_hi = corners.min(dim=0).values, corners.max(dim=0).values
        pad = 2 * U * (c_lo.abs() + c_hi.abs()) + ABS_SLACK
        if not self.symbolic:
            return self._interval(c_lo - pad, c_hi + pad)
        prod = self.scale(y0) + other.scale(x0)
        prod = prod.shift(-x0 * y0, 2 * U * (x0 * y0).abs())
        prod.r = prod.r + rx * ry * (1 + 4 * U) + ABS_SLACK
        return prod.narrowest(c_lo - pad, c_hi + pad)

    def _interval(self, lo: Tensor, hi: Tensor) -> Form:
        c = 0.5 * (lo + hi)
        return Form(c, None, 0.5 * (hi - lo) + 2 * U * (lo.abs() + hi.abs()) + ABS_SLACK, self.inp, self.symbolic)

    def narrowest(self, lo: Tensor, hi: Tensor) -> Form:
        """Per element, this form or the interval ``[lo, hi]`` (another enclosure of the same tensor), whichever
        is narrower after concretisation (an element enclosed by an interval gets zero generators)."""
        flo, fhi = self.bounds()
        box = self._interval(lo, hi)
        use = INTERVAL_FACTOR * (hi - lo) < (fhi - flo)
        if not bool(use.any()):
            return self
        g = None if self.G is None else torch.where(use.unsqueeze(1), torch.zeros_like(self.G), self.G)
        return Form(torch.where(use, box.c, self.c), g, torch.where(use, box.r, self.r), self.inp, self.symbolic)

    def apply(self, act: Monotone) -> Form:
        """``f(v)`` elementwise for a non-decreasing ``f`` (:class:`~deepcheck.certify.relax.Monotone`): IBP takes
        the interval image ``[f(lo), f(hi)]`` of the concretised ``[lo, hi]``; the symbolic method the linear
        relaxation ``f(y) in [a y + b_lo, a y + b_hi]`` on ``[lo, hi]``, applied to the form, or per element
        the interval image where that is narrower (:meth:`narrowest`)."""
        lo, hi = self.bounds()
        flo, fhi = act.image(lo, hi)
        if not self.symbolic:
            return self._interval(flo, fhi)
        a, b_lo, b_hi = act.relaxation(lo, hi)
        mid, rad = 0.5 * (b_lo + b_hi), 0.5 * (b_hi - b_lo)
        return self.scale(a).shift(mid, rad + 2 * U * (b_lo.abs() + b_hi.abs())).narrowest(flo, fhi)
