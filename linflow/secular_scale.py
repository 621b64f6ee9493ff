r"""Exact power-of-two rescaling for the rows of the L2 kernel (:mod:`linflow.secular`, R1, R2) whose root lies
outside the floating-point range.

**Why.** The root finder brackets the root ``g`` of ``||c(g)|| = eps``, ``c_i(g) = a_i / (g + gap_i)``, by
``lo = ||a_B|| / eps`` and ``hi = ||a|| / eps`` (and the raising root ``eta`` by ``[0, ||a|| / eps]``). With
``eps = 1e-170`` and ``||w|| ~ 1e200`` the root itself is about ``1e370``: ``hi`` overflows, and both directions
returned ``c = 0``; with ``eps = 1e170`` and ``||w|| ~ 1e-200`` (lowering) the root is about ``1e-366`` and
``lo`` underflows to 0, giving ``c_B = a_B / 0``.

**The invariance.** For powers of two ``2^i`` and ``2^j``,

.. math::  c_i = \frac{a_i}{g + \mathrm{gap}_i}
           = 2^{i} \, \frac{a_i 2^{-i-j}}{g 2^{-j} + \mathrm{gap}_i 2^{-j}} ,
           \qquad \|c\| = \varepsilon \iff \|2^{-i} c\| = 2^{-i} \varepsilon ,

so ``(a, gap, eps) -> (2^{-i-j} a, 2^{-j} gap, 2^{-i} eps)`` maps the problem to one with root ``g' = 2^{-j} g``
and solution ``c' = 2^{-i} c``; the same holds for raising with ``gap = p`` and ``g = eta``. (In terms of the
original data: ``s -> 2^j s``, ``w -> 2^{-i} w``, ``eps -> 2^{-i} eps``; both objectives are multiplied by
``2^{-2i-j} > 0`` and keep their optimisers up to the factor ``2^{-i}``.) Multiplying by a power of two is exact
in floating point unless it underflows or overflows, so the rescaled problem is the same problem, not an
approximation of it. We take ``2^i`` the binary exponent of ``eps`` (``eps' in [1/2, 1)``) and ``2^j`` that of
``max_i |a_i| / eps``, which puts ``hi' = ||a'|| / eps'`` in ``[1/2, 2 sqrt(d))`` and (R1: ``g >= |a_i| / eps -
gap_i``, the bound of the start) the root at ``O(1)`` unless the gaps dominate. ``j`` is raised where needed so
that ``2^{-j} max gap <= 2^1000``: the rescaled gaps never overflow (small gaps may underflow: where
``gap_i 2^{-j}`` is below ``2^-1074`` it is below ``g'`` by more than the double range whenever ``g' >= 2^-74``,
so ``g' + gap'_i`` rounds as before). The solution is ``c = 2^i c'``; ``eta = 2^j eta'`` and ``g = 2^j g'`` are
returned as floats, i.e. ``inf`` or ``0`` where the true multiplier lies outside the double range (``c`` is
unaffected).

Rows are rescaled where ``hi`` is outside ``[2^-1000, 2^1000]`` or (R1) ``0 < lo < 2^-1000``; rows of ordinary
scale take the unscaled path unchanged (the test costs O(n)). Entries ``a_i = w_i / s_i`` that overflow are
outside this remedy (``w`` and ``s`` must make ``a`` finite).
"""

from __future__ import annotations

import numpy as np

_LIMIT = 2.0**1000


def far_rows(a_norm: np.ndarray, eps: float, aB_norm: np.ndarray | None = None) -> np.ndarray:
    """The rows whose bracket ``hi = ||a|| / eps`` (or, R1 with ``aB_norm``, ``0 < lo = ||a_B|| / eps``) lies outside
    ``[2^-1000, 2^1000]``: their root needs the rescaling of the module docstring. Rows with ``a = 0`` are not far."""
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        hi = a_norm / eps
        far = (a_norm > 0) & ~((hi >= 1.0 / _LIMIT) & (hi <= _LIMIT))
        if aB_norm is not None:
            far |= (aB_norm > 0) & ~(aB_norm / eps >= 1.0 / _LIMIT)
    return far


def exponents(A: np.ndarray, gaps: np.ndarray, eps: float) -> tuple[int, np.ndarray]:
    """``(i, j)``: the shared exponent ``i`` of ``eps`` and one ``j`` per row of ``A`` (module docstring)."""
    i = int(np.frexp(eps)[1])
    amax = np.max(np.abs(A), axis=1)
    j = np.frexp(amax)[1].astype(np.int64) - i
    top = float(np.max(gaps))
    if top > 0:
        j = np.maximum(j, int(np.frexp(top)[1]) - 1000)
    return i, j


def groups(j: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The rows sharing each value of ``j``: ``[(j, rows), ...]``."""
    vals, inv = np.unique(j, return_inverse=True)
    return [(int(v), np.flatnonzero(inv == t)) for t, v in enumerate(vals)]
