r"""Upper bounds of the NLL from the enclosures of the latents and of the log-det (without the constant
``D/2 log 2 pi``):

.. math::  \mathrm{NLL} - \tfrac D2 \log 2\pi = \tfrac12 \sum_j z_j^2 - \log\lvert\det J\rvert .

* :func:`box_upper` (IBP): ``sum_j max(l_j^2, u_j^2) / 2 - min logdet`` from the intervals ``[l_j, u_j]``.
* :func:`chord_upper`: each square below its chord, ``z_j^2 <= (l_j + u_j) z_j - l_j u_j`` on ``[l_j, u_j]``,
  then ``sum_j chord_j / 2 - logdet`` (an affine form) maximised *jointly* over the set.
* :func:`gram_upper`: with the latents' forms ``z = c + A u + rho`` (``u in [-1, 1]^K`` the input perturbation,
  centred and scaled, and the error symbols; ``|rho| <= r``),

  .. math:: \tfrac12\lVert z\rVert^2 \le \tfrac12\lVert c\rVert^2 + c^T A u + \tfrac12 u^T A^T A u
            + \sum_j (|c_j| + \mathrm{rad}_j) r_j + \tfrac12 \lVert r\rVert^2 ,

  the linear part maximised jointly with ``-logdet`` (exactly, over the box), the quadratic part bounded by
  ``1^T |A^T A| 1 / 2 <= sum_j rad_j^2 / 2`` (``rad_j = sum_k |A_kj|``). On a box with an affine ``z`` the
  chord bound equals the same expression with ``sum_j rad_j^2``, so the Gram bound is never looser there; on an
  L2 ball the chord bound uses the dual norm, and the API takes the smaller of the two.

Rounding: every bound is computed in float64 and raised by ``gamma_n`` times the sum of the absolute values
of its terms, ``n`` the longest chain of additions (:mod:`deepcheck.certify.forms`).
"""

from __future__ import annotations

import torch

from .forms import ABS_SLACK, Form, U, _pad, gamma

_CHUNK = 512


def box_upper(zs: list[Form], logdet: Form) -> torch.Tensor:
    sq = 0.0
    for z in zs:
        lo, hi = z.bounds()
        half = 0.5 * torch.maximum(lo * lo, hi * hi)
        sq = sq + half.reshape(half.shape[0], -1).sum(dim=1) * (1 + gamma(half[0].numel() + 4))
    up = sq - logdet.bounds()[0]
    return up + 4 * U * up.abs() + ABS_SLACK


def _square_chord(z: Form) -> Form:
    """A form ``q >= z^2 / 2`` over the set: the chord ``((l + u) z - l u) / 2`` on ``[l, u]``, with the
    rounding of its coefficients added to the remainder."""
    lo, hi = z.bounds()
    k = 0.5 * (lo + hi)
    big = torch.maximum(lo.abs(), hi.abs())
    return z.scale(k).shift(-0.5 * lo * hi, 2 * U * (lo.abs() + hi.abs()) * big + U * (lo * hi).abs())


def chord_upper(zs: list[Form], logdet: Form) -> torch.Tensor:
    obj = -logdet
    for z in zs:
        obj = obj + _square_chord(z).sum()
    return obj.bounds()[1]


def _flat(zs: list[Form], name: str, k: int) -> torch.Tensor:
    """The latents' generator blocks side by side: ``(B, k, n)``."""
    parts = []
    for z in zs:
        t = getattr(z, name)
        b = z.c.shape[0]
        if name == "E":
            t = _pad(t, k, z.c)
        elif t is None:
            t = z.c.new_zeros(b, k, *z.c.shape[1:])
        parts.append(t.reshape(b, k, z.c[0].numel()))
    return torch.cat(parts, dim=2)


def gram_upper(zs: list[Form], logdet: Form) -> torch.Tensor:
    inp = logdet.inp
    m = max([0] + [f.E.shape[1] for f in (*zs, logdet) if f.E is not None])
    k = inp.dlo.shape[1]
    mid, w = 0.5 * (inp.dlo + inp.dhi), 0.5 * (inp.dhi - inp.dlo)
    c = torch.cat([z.c.reshape(z.c.shape[0], -1) for z in zs], dim=1)
    r = torch.cat([z.r.reshape(z.r.shape[0], -1) for z in zs], dim=1)
    G = _flat(zs, "G", k)
    n = c.shape[1]
    c0 = c + torch.einsum("bkn,bk->bn", G, mid)
    c0_abs = c.abs() + torch.einsum("bkn,bk->bn", G.abs(), mid.abs())
    A = torch.cat([G * w[:, :, None], _flat(zs, "E", m)], dim=1)  # (B, K + M, n), u in [-1, 1]
    ld_g = logdet.G if logdet.G is not None else c.new_zeros(c.shape[0], k)
    ld_e = _pad(logdet.E, m, logdet.c) if m else c.new_zeros(c.shape[0], 0)
    coef = torch.einsum("bkn,bn->bk", A, c0) - torch.cat([ld_g * w, ld_e], dim=1)
    coef_abs = torch.einsum("bkn,bn->bk", A.abs(), c0_abs) + torch.cat([(ld_g * w).abs(), ld_e.abs()], dim=1)
    const = 0.5 * c0.pow(2).sum(dim=1) - logdet.c - (ld_g * mid).sum(dim=1) + logdet.r
    const_abs = 0.5 * c0_abs.pow(2).sum(dim=1) + logdet.c.abs() + (ld_g * mid).abs().sum(dim=1) + logdet.r
    gram = c.new_zeros(c.shape[0])
    for s in range(0, A.shape[1], _CHUNK):
        gram = gram + torch.einsum("bkn,bln->bkl", A[:, s:s + _CHUNK], A).abs().sum(dim=(1, 2))
    rad = A.abs().sum(dim=1)
    gram_abs = rad.pow(2).sum(dim=1)
    cross = ((c0_abs + rad) * r).sum(dim=1) + 0.5 * r.pow(2).sum(dim=1)
    up = const + coef.abs().sum(dim=1) + 0.5 * gram + cross
    total_abs = const_abs + coef_abs.sum(dim=1) + 0.5 * gram_abs + cross
    return up + gamma(n + 2 * (A.shape[1] + k) + 16) * (total_abs + up.abs()) + ABS_SLACK
