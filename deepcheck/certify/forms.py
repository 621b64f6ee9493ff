r"""Affine forms with an interval remainder: the value domain of certified bound propagation (R1-R3 lifted to
deep flows, issue 15).

A :class:`Form` encloses a tensor-valued function ``v(delta)`` of the input perturbation ``delta`` (flattened,
``K`` entries) over an input set ``S`` (:class:`InputSet`): for every ``delta in S`` and every element ``i``

.. math::  v_i(\delta) \in c_i + \sum_k G_{k,i}\,\delta_k + [-r_i, r_i] .

plus, in the ``"zonotope"`` mode, ``sum_m E_{m,i} e_m`` over error symbols ``e_m in [-1, 1]`` shared by all
tensors of one propagation. Three modes (:class:`Context`):

* ``"ibp"``: interval bound propagation. The generators ``G`` are kept only through the affine layers before
  the first nonlinearity (exact there, which is what makes the first layer exact for L2 balls); every
  nonlinear step returns a plain interval (``G = None``; monotone functions map ``[lo, hi]`` to
  ``[f(lo), f(hi)]``, products take the min and max of the four corner products).
* ``"symbolic"``: the form stays affine in ``delta`` through every layer; each nonlinear step is replaced by a
  linear relaxation (:mod:`deepcheck.certify.relax`, McCormick for products) whose offset width is added to
  the remainder ``r`` (symbolic intervals).
* ``"zonotope"``: as symbolic, but each relaxation's offset width becomes a *new error symbol* (DeepZ-style),
  so later affine layers propagate it with signed weights (cancellations kept) instead of ``|W|``; the
  remainder ``r`` then only carries rounding slack. **Symbol budget:** at the flows' layer boundaries the
  symbols are compacted to ``Context.max_symbols`` (:mod:`deepcheck.certify.reduce`), and a relaxation of ``n``
  elements per sample (batch ``b``) may only bring the count to ``MAX_SYMBOL_BYTES / (8 b n)`` (its coefficient
  tensor stays under the memory limit). A relaxation
  whose errors do not all fit gives symbols to its largest errors (max over the batch) and puts the others
  into the remainder ``r``, elementwise (what the symbolic mode does with all of them): a box term per element,
  sound because ``|rad_i e| <= rad_i``; only the correlation carried by those symbols is lost.

Concretisation (:meth:`Form.bounds`) maximises the linear part over ``S``: for the box ``[dlo, dhi]`` exactly,
``sum_k max(G_k dlo_k, G_k dhi_k)``, and for an L2 ball of radius ``eps`` also by the dual norm
``eps ||G||_2`` (the smaller of the two bounds is kept: ``S`` lies in both); error symbols add ``sum_m |E_m|``.

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
from typing import Protocol

import torch

Tensor = torch.Tensor


U = float(torch.finfo(torch.float64).eps)
"""Unit roundoff for any rounding mode (2^-52)."""
FUNC_ULPS = 16
"""Ulps allowed to each elementwise transcendental function evaluation (4x what libm documents)."""
FUNC_REL = FUNC_ULPS * U
ABS_SLACK = 1e-290
"""Absolute slack added per operation: covers underflow (subnormal spacing 5e-324 times any term count)."""
SYMBOL_MIN = 1e-12
"""Zonotope mode: relaxation errors below this (relative to ``1 + |value|``) go to the remainder, not a symbol."""
MAX_SYMBOL_BYTES = 2 * 2**30
"""The zonotope mode never allocates more error-symbol coefficients than this for one relaxation's tensor."""
MAX_SYMBOLS = 4096
"""The default symbol budget of one zonotope propagation (:mod:`deepcheck.certify.reduce`). Measured: the quick
budget's GLOW (8x8 digits, batch 8) holds at most ~1050 symbols (never compacted); the full budget's 28x28
GLOW adds ~3000 per flow step, and its cost grows with the count (one propagation: 155 s at 1500, 368 s at 6000,
on a loaded 2-core CPU)."""


def gamma(n: int) -> float:
    """``gamma_n = n u / (1 - n u)``, the relative error bound of an ``n``-term sum of products."""
    nu = n * U
    if nu >= 0.5:
        raise ValueError(f"a sum of {n} terms is too long for the float64 rounding bound")
    return nu / (1.0 - nu)


class Activation(Protocol):
    """What :meth:`Form.apply` needs of a non-decreasing elementwise function (e.g.
    :class:`deepcheck.certify.relax.Monotone`): its exact interval image and a linear relaxation on ``[lo, hi]``."""

    def image(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def relaxation(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


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
            if bool(((flat < clamp[0]) | (flat > clamp[1])).any()):
                raise ValueError(f"x lies outside the clamp box {clamp}: x itself must be admissible")
            dlo = torch.maximum(dlo, clamp[0] - flat)
            dhi = torch.minimum(dhi, clamp[1] - flat)
        return cls(x=x, dlo=dlo - pad, dhi=dhi + pad, eps=eps * (1 + 4 * U), norm=norm)


MODES = ("ibp", "symbolic", "zonotope")


def _flat_apply(fn: Callable[[Tensor], Tensor], g: Tensor) -> Tensor:
    """Apply a batch-first map to generators ``(B, K, *s)`` by folding ``K`` into the batch."""
    b, k = g.shape[:2]
    out = fn(g.reshape(b * k, *g.shape[2:]))
    return out.reshape(b, k, *out.shape[1:])


def _gen(t: Tensor, c: Tensor) -> Tensor:
    """A per-element constant of ``c``'s shape (or broadcastable to it) lifted to the generators' shape."""
    return t.unsqueeze(1) if t.dim() == c.dim() else t


def _lift(t: Tensor, c: Tensor) -> Tensor:
    """A per-sample ``(B, K)`` tensor broadcast against generators ``(B, K, *s)`` of elements shaped like ``c``."""
    return t.reshape(*t.shape, *([1] * (c.dim() - 1)))


@dataclass
class Context:
    """What all forms of one propagation share: the input set, the mode and the number of error symbols."""

    inp: InputSet
    mode: str
    n_symbols: int = 0
    max_symbols: int = MAX_SYMBOLS
    boxed: int = 0
    """Relaxation errors (elements) that did not fit the symbol budget and went to the remainder."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        check_max_symbols(self.max_symbols)

    compactions: int = 0
    """How often :func:`deepcheck.certify.reduce.compact` reduced the symbols to ``max_symbols``."""

    def room(self, b: int, n: int) -> int:
        """How many new symbols a relaxation of ``n`` elements per sample (batch ``b``) may add."""
        return max(0, MAX_SYMBOL_BYTES // (8 * b * n) - self.n_symbols)


def check_max_symbols(max_symbols: object) -> int:
    """``max_symbols`` validated: an int ``>= 0``."""
    if isinstance(max_symbols, bool) or not isinstance(max_symbols, int) or max_symbols < 0:
        raise ValueError(f"max_symbols must be an int >= 0, got {max_symbols!r}")
    return max_symbols


def _pad(e: Tensor | None, m: int, like: Tensor) -> Tensor:
    """Error-symbol coefficients ``(B, M', *s)`` padded with zeros to ``M`` symbols (symbols are numbered in
    creation order, so a form's symbols are a prefix of the context's)."""
    if e is None:
        return like.new_zeros(like.shape[0], m, *like.shape[1:])
    if e.shape[1] == m:
        return e
    return torch.cat([e, e.new_zeros(e.shape[0], m - e.shape[1], *e.shape[2:])], dim=1)


@dataclass
class Form:
    """An enclosure ``c + G delta + E e + [-r, r]`` of a tensor (module docstring)."""

    c: Tensor
    G: Tensor | None
    E: Tensor | None
    r: Tensor
    ctx: Context

    # ------------------------------------------------------------------ construction and concretisation
    @classmethod
    def input(cls, inp: InputSet, mode: str, max_symbols: int = MAX_SYMBOLS) -> Form:
        """``x + delta`` itself: the generators are the identity; ``max_symbols`` the zonotope's symbol budget."""
        x = inp.x
        b, k = x.shape[0], inp.dlo.shape[1]
        eye = torch.eye(k, dtype=x.dtype, device=x.device).expand(b, k, k).reshape(b, k, *x.shape[1:])
        return cls(x.clone(), eye.clone(), None, torch.zeros_like(x), Context(inp, mode, max_symbols=max_symbols))

    @property
    def inp(self) -> InputSet:
        return self.ctx.inp

    def _new(self, c: Tensor, G: Tensor | None, E: Tensor | None, r: Tensor) -> Form:
        return Form(c, G, E, r, self.ctx)

    def const(self, value: Tensor, rad: Tensor | float = 0.0) -> Form:
        """A constant (per sample, no generators) in the same context; ``rad`` its uncertainty."""
        return self._new(value, None, None, torch.zeros_like(value) + rad + ABS_SLACK)

    def _interval(self, lo: Tensor, hi: Tensor) -> Form:
        c = 0.5 * (lo + hi)
        return self._new(c, None, None, 0.5 * (hi - lo) + 2 * U * (lo.abs() + hi.abs()) + ABS_SLACK)

    def mag(self) -> Tensor:
        """An upper bound of ``|v|`` over the set (for rounding-error bounds)."""
        m = self.c.abs() + self.r
        if self.G is not None:
            m = m + (self.G.abs() * _lift(self.inp.wmax, self.c)).sum(dim=1)
        if self.E is not None:
            m = m + self.E.abs().sum(dim=1)
        return m

    def bounds(self) -> tuple[Tensor, Tensor]:
        """``(lo, hi)`` with ``lo <= v <= hi`` over the whole set (outward by the rounding bound)."""
        up = down = torch.zeros_like(self.c)
        n = 4
        if self.G is not None:
            a, b = self.G * _lift(self.inp.dlo, self.c), self.G * _lift(self.inp.dhi, self.c)
            up, down = torch.maximum(a, b).sum(dim=1), torch.minimum(a, b).sum(dim=1)
            if self.inp.norm == "l2":
                rad = self.inp.eps * self.G.pow(2).sum(dim=1).sqrt() * (1 + gamma(self.G.shape[1] + 4))
                up, down = torch.minimum(up, rad), torch.maximum(down, -rad)
            n += self.G.shape[1]
        if self.E is not None:
            e = self.E.abs().sum(dim=1)
            up, down = up + e, down - e
            n += self.E.shape[1]
        slack = gamma(n) * self.mag() + ABS_SLACK
        return self.c - self.r + down - slack, self.c + self.r + up + slack

    # ------------------------------------------------------------------ exact (structural) maps
    def map(self, fn: Callable[[Tensor], Tensor]) -> Form:
        """A batch-first map that only moves or selects elements (reshape, permute, slice)."""
        g = None if self.G is None else _flat_apply(fn, self.G)
        e = None if self.E is None else _flat_apply(fn, self.E)
        return self._new(fn(self.c), g, e, fn(self.r))

    @staticmethod
    def cat(forms: Sequence[Form], dim: int = 1) -> Form:
        """Concatenate along a per-sample dimension ``dim >= 1``."""
        f0 = forms[0]
        c = torch.cat([f.c for f in forms], dim)
        r = torch.cat([f.r for f in forms], dim)
        g = e = None
        if any(f.G is not None for f in forms):
            k = f0.inp.dlo.shape[1]
            g = torch.cat([f.G if f.G is not None else f.c.new_zeros(f.c.shape[0], k, *f.c.shape[1:])
                           for f in forms], dim + 1)
        if any(f.E is not None for f in forms):
            m = max(f.E.shape[1] for f in forms if f.E is not None)
            e = torch.cat([_pad(f.E, m, f.c) for f in forms], dim + 1)
        return f0._new(c, g, e, r)

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
        e = None if self.E is None else _flat_apply(fn0, self.E)
        r = absfn(self.r) + gamma(n_terms + 2) * scale + ABS_SLACK
        if wrad_fn is not None:
            r = r + (1 + gamma(n_terms + 2)) * wrad_fn(m)
        return self._new(c, g, e, r)

    def scale(self, k: Tensor | float, k_rad: Tensor | float = 0.0) -> Form:
        """``k v`` for a constant ``k`` broadcastable to the element shape, ``k`` known to ``+- k_rad``."""
        k = torch.as_tensor(k, dtype=self.c.dtype, device=self.c.device)
        m = self.mag()
        g = None if self.G is None else self.G * _gen(k, self.c)
        e = None if self.E is None else self.E * _gen(k, self.c)
        r = k.abs() * self.r + (3 * U * k.abs() + k_rad) * m * (1 + 2 * U) + ABS_SLACK
        return self._new(k * self.c, g, e, r)

    def shift(self, b: Tensor | float, b_rad: Tensor | float = 0.0) -> Form:
        """``v + b`` for a constant ``b`` known to ``+- b_rad``."""
        b = torch.as_tensor(b, dtype=self.c.dtype, device=self.c.device)
        c = self.c + b
        r = (self.r + b_rad + 2 * U * (self.c.abs() + b.abs()) + ABS_SLACK).expand_as(c).clone()
        return self._new(c, self.G, self.E, r)

    def __add__(self, other: Form) -> Form:
        c = self.c + other.c
        if self.G is None or other.G is None:
            g = self.G if other.G is None else other.G
        else:
            g = self.G + other.G
        if self.E is None or other.E is None:
            e = self.E if other.E is None else other.E
        else:
            m = max(self.E.shape[1], other.E.shape[1])
            e = _pad(self.E, m, self.c) + _pad(other.E, m, other.c)
        r = self.r + other.r + 2 * U * (self.mag() + other.mag()) + ABS_SLACK
        return self._new(c, g, e, r)

    def __neg__(self) -> Form:
        return self._new(-self.c, None if self.G is None else -self.G, None if self.E is None else -self.E, self.r)

    def __sub__(self, other: Form) -> Form:
        return self + (-other)

    def sum(self) -> Form:
        """The per-sample sum over all elements (a form of shape ``(B,)``)."""
        n = max(1, math.prod(self.c.shape[1:]))
        flat = self.c.reshape(self.c.shape[0], -1)
        m = self.mag().reshape(flat.shape).sum(dim=1)
        g = None if self.G is None else self.G.reshape(*self.G.shape[:2], -1).sum(dim=2)
        e = None if self.E is None else self.E.reshape(*self.E.shape[:2], -1).sum(dim=2)
        r = self.r.reshape(flat.shape).sum(dim=1) + gamma(n + 2) * m + ABS_SLACK
        return self._new(flat.sum(dim=1), g, e, r)

    # ------------------------------------------------------------------ nonlinear steps
    def _with_error(self, rad: Tensor) -> Form:
        """This form plus an error of at most ``rad`` per element: new symbols (zonotope) or the remainder.

        In the zonotope mode only elements whose error exceeds ``SYMBOL_MIN`` (relative to ``1 + |c|``) in some
        sample get a symbol (stable ReLUs, masked positions and rounding-level errors go to the remainder), and
        at most :meth:`Context.room` of them, the largest errors first; the rest go to the remainder (module
        docstring: symbol budget)."""
        if self.ctx.mode != "zonotope":
            return self._new(self.c, self.G, self.E, self.r + rad)
        b = self.c.shape[0]
        flat = rad.reshape(b, -1)
        big = flat > SYMBOL_MIN * (1.0 + self.c.abs().reshape(b, -1))
        idx = big.any(dim=0).nonzero().squeeze(1)
        n, k = flat.shape[1], int(idx.numel())
        room = self.ctx.room(b, n)
        if k > room:
            self.ctx.boxed += k - room
            largest = flat[:, idx].amax(dim=0).topk(room).indices
            idx, k = idx[largest.sort().values], room
        symbol = torch.zeros(n, dtype=torch.bool, device=flat.device)
        symbol[idx] = True
        small = torch.where(symbol.unsqueeze(0), torch.zeros_like(flat), flat).reshape(rad.shape)
        if k == 0:
            return self._new(self.c, self.G, self.E, self.r + small)
        start = self.ctx.n_symbols
        self.ctx.n_symbols += k
        new = flat.new_zeros(b, k, n)
        new[:, torch.arange(k, device=idx.device), idx] = flat[:, idx]
        e = torch.cat([_pad(self.E, start, self.c), new.reshape(b, k, *self.c.shape[1:])], dim=1)
        return self._new(self.c, self.G, e, self.r + small)

    def mul(self, other: Form) -> Form:
        r"""The product of two enclosed tensors. IBP: the interval product (min and max of the four corner
        products). Otherwise McCormick-style, from the exact identity

        .. math:: xy = x_0 y + y_0 x - x_0 y_0 + (x - x_0)(y - y_0), \quad |(x - x_0)(y - y_0)| \le r_x r_y,

        with ``[x_0 - r_x, x_0 + r_x]`` the concretised interval of ``x`` (likewise ``y``)."""
        xl, xh = self.bounds()
        yl, yh = other.bounds()
        if self.ctx.mode == "ibp":
            corners = torch.stack([xl * yl, xl * yh, xh * yl, xh * yh])
            c_lo, c_hi = corners.min(dim=0).values, corners.max(dim=0).values
            pad = 2 * U * (c_lo.abs() + c_hi.abs()) + ABS_SLACK
            return self._interval(c_lo - pad, c_hi + pad)
        x0, rx = 0.5 * (xl + xh), 0.5 * (xh - xl) + 2 * U * (xl.abs() + xh.abs())
        y0, ry = 0.5 * (yl + yh), 0.5 * (yh - yl) + 2 * U * (yl.abs() + yh.abs())
        prod = (self.scale(y0) + other.scale(x0)).shift(-x0 * y0, 2 * U * (x0 * y0).abs())
        return prod._with_error(rx * ry * (1 + 4 * U) + ABS_SLACK)

    def apply(self, act: Activation) -> Form:
        """``f(v)`` elementwise for a non-decreasing ``f`` (:class:`~deepcheck.certify.relax.Monotone`): IBP takes
        the interval image ``[f(lo), f(hi)]`` of the concretised ``[lo, hi]``; the other modes the linear
        relaxation ``f(y) in [a y + b_lo, a y + b_hi]`` on ``[lo, hi]`` applied to the form."""
        lo, hi = self.bounds()
        if self.ctx.mode == "ibp":
            return self._interval(*act.image(lo, hi))
        a, b_lo, b_hi = act.relaxation(lo, hi)
        mid, rad = 0.5 * (b_lo + b_hi), 0.5 * (b_hi - b_lo)
        out = self.scale(a).shift(mid, 2 * U * (b_lo.abs() + b_hi.abs()))
        return out._with_error(rad)
