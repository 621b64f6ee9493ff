r"""The batched trust-region kernel of the exact L2 attacks, in eigen-coordinates (R1, R2).

Inputs are the eigenvalues ``s`` of ``Sigma`` (ascending, ``s[0] = s_min``), the eigen-coordinates
``W = U^T (X - mu)`` of a batch of points (one row per point) and a budget ``eps > 0``. With ``p_i = 1/s_i``
(the precision's eigenvalues) every function below returns, per row ``w``, the optimal ``c = U^T delta``.

**Lowering the likelihood (R1)** -- :func:`lower_likelihood`:

.. math::  \max_{\|c\|_2 \le \varepsilon} \; (w + c)^T \operatorname{diag}(p) (w + c).

``c`` is optimal iff there is ``eta >= p_max = 1/s_min`` with ``(eta I - diag(p)) c = diag(p) w`` and
``||c|| = eps`` (the model is negative definite in the minimisation form, so the constraint is active and the
second-order condition is ``eta >= p_max``). We solve in the **gap variable** ``g = eta - p_max >= 0``, with
``gap_i = p_max - p_i = (s_i - s_min) / (s_i s_min) >= 0`` computed without cancellation, so that

.. math::  c_i(g) = \frac{a_i}{g + \mathrm{gap}_i}, \qquad a_i = p_i w_i, \qquad \|c(g)\| = \varepsilon .

Writing it in ``g`` rather than ``eta`` keeps full relative accuracy in ``g`` when the root is close to the pole
``eta = p_max`` (near the hard case), where ``eta`` itself would have lost all digits of ``eta - p_max``.

The **s_min block** ``B = {i : s_i <= s_min (1 + block_rtol)}`` (repeated smallest eigenvalues) is one
eigenspace: its gaps are set to exactly 0. If ``a_B = 0`` and ``||c(0)|| <= eps`` this is the **hard case**:
``g = 0`` (``eta = p_max``), ``c_i = a_i / gap_i`` off the block, and the missing norm
``sqrt(eps^2 - ||c_off||^2)`` is put on the *first* eigenvector of the block with a **non-negative
coefficient** (``c_0 >= 0``; sign convention: the optimum is then ``+-``, we return the ``+`` one). At
``w = 0`` this gives ``c = eps e_0``, i.e. ``delta = +eps u_min``. When ``a_B != 0``, however tiny, the
optimum is unique and its block part is aligned with ``w``'s block part (``c_B = a_B / g``).

**Raising the likelihood (R2)** -- :func:`raise_likelihood`: ``min_{||c|| <= eps} (w+c)^T diag(p) (w+c)`` is
convex. If ``||w|| <= eps``, ``c = -w``; otherwise ``c_i = -w_i / (1 + eta s_i) = -a_i / (eta + p_i)`` with
``eta > 0`` the root of ``||c(eta)|| = eps`` (KKT: ``(diag(p) + eta I) c = -diag(p) w``, ``eta >= 0``).

**The root finder** (:func:`secular_root`) solves ``||c(g)|| = eps`` for ``c_i(g) = a_i / (g + gap_i)`` with all
``gap_i >= 0``. The function ``psi(g) = eps / ||c(g)|| - 1`` is increasing and *concave* on ``g > -min gap``
(More & Sorensen 1983, Lemma 3.x: ``1 / ||(H + lambda I)^{-1} b||`` is concave), so Newton's method started
left of the root stays left of it and converges monotonically, quadratically near the root; it is nearly
linear, unlike ``||c||^2 - eps^2``. The Newton step has the scale-free form
``g+ = g + (||c||/eps - 1) ||c||^2 / sum_i c_i^2 / (g + gap_i)``; by concavity a Newton step from *any* point
lands left of the root. Safeguards: a bracket ``[lo, hi]`` with ``lo = ||a_B|| / eps`` (where ``||c|| >= eps``)
and ``hi = ||a|| / eps`` (where ``||c|| <= eps``); the first guess is the better of two cheap lower bounds:
``max_i |a_i|/eps - gap_i`` and the root of a model that applies Jensen's inequality (``1/(g + x)^2`` is convex)
within each of up to 40 groups of similar ``gap`` (log-spaced), ``sum_G W_G / (g + m_G)^2 = eps^2`` with ``W_G``
the group's ``sum a_i^2`` and ``m_G`` its ``a^2``-weighted mean gap; the model lies below ``||c||^2``, so its
root is a lower bound, typically within 1e-3 of the root (if rounding pushes a guess past the root, its Newton
point becomes the lower end); when a Newton step fails to halve ``||c||/eps - 1`` (the
steep start of a near-hard case), the next trial is the geometric midpoint ``sqrt(lo hi)``; once the excess
``||c||/eps - 1`` is below 1e-5 after a successful step, one last Halley step (cubic: excess ~1e-15) is taken
without evaluation, using ``psi'' = 3 (1 - t) / (r q^2)`` from one more sum in the same pass.
Sums of squares are computed in cache-sized blocks of rows, with a per-row rescaling wherever they overflow or
underflow (:mod:`linflow.secular_passes`). At the end ``||c|| = eps`` to 4 ulps (the rare row further off is
rescaled to it). 2 passes over the batch (plus one to build the start and one to write ``c``) are typical, at
most ~10 iterations on the hardest rows seen (near-hard, cond 1e10).

**Roots outside the double range** (:mod:`linflow.secular_scale`). Where ``hi = ||a|| / eps`` lies outside
``[2^-1000, 2^1000]`` (e.g. ``eps = 1e-170``, ``||w|| ~ 1e200``: the root is ~1e370) or, lowering, ``lo =
||a_B|| / eps`` below ``2^-1000``, the row is solved in the rescaled problem ``(a, gap, eps) -> (2^{-i-j} a,
2^{-j} gap, 2^{-i} eps)``, whose root is ``2^{-j} g`` and solution ``2^{-i} c``: identical in exact arithmetic,
and exact in floating point too (powers of two), with the root near 1. ``c = 2^i c'`` is returned; ``eta`` (and
``gap``) are ``inf`` or ``0`` where the true value leaves the double range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .secular_passes import _ratio_and_slope, _row_norm, _solution
from .secular_scale import exponents, far_rows, groups
from .secular_start import _prepare
from .validation import as_float_array, check_eps

_EPS = float(np.finfo(np.float64).eps)
DEFAULT_BLOCK_RTOL = 1e-12
DEFAULT_MAXITER = 200
_FINAL_STEP = 1e-5


@dataclass(frozen=True)
class TRSolution:
    """The solution of a batch of trust-region subproblems in eigen-coordinates.

    Attributes
    ----------
    C : ``(n, d)``, the optimal ``c = U^T delta`` per row.
    eta : ``(n,)``, the Lagrange multiplier (R1: ``eta >= 1/s_min``; R2: ``eta >= 0``); ``inf`` where it exceeds
        the double range (e.g. ``eps = 1e-170``, ``||w|| ~ 1e200``: ``C`` is exact all the same, see
        :mod:`linflow.secular_scale`).
    gap : ``(n,)``, R1: ``g = eta - 1/s_min >= 0`` (accurate even when tiny; ``inf`` or ``0`` where it leaves the
        double range); R2: equal to ``eta``.
    hard : ``(n,)`` bool, R1: the hard case (``g = 0``, norm filled along the s_min eigenspace);
        R2: the interior case ``||w|| <= eps`` (``c = -w``, ``eta = 0``).
    iterations : the largest number of root-finder iterations any row needed.
    """

    C: np.ndarray
    eta: np.ndarray
    gap: np.ndarray
    hard: np.ndarray
    iterations: int


def _check_inputs(s: object, W: object, eps: object) -> tuple[np.ndarray, np.ndarray, float]:
    s = as_float_array("s", s, ndim=(1,))
    if np.any(s <= 0):
        raise ValueError("s must be positive (eigenvalues of a covariance)")
    if np.any(np.diff(s) < 0):
        raise ValueError("s must be sorted ascending (s[0] = s_min)")
    W = as_float_array("W", W, ndim=(2,))
    if W.shape[1] != s.shape[0]:
        raise ValueError(f"W must have shape (n, {s.shape[0]}) to match s, got {W.shape}")
    return s, W, check_eps(eps)


def block_size(s: np.ndarray, block_rtol: float = DEFAULT_BLOCK_RTOL) -> int:
    """Number ``k`` of eigenvalues in the s_min block: ``s_i <= s_min (1 + block_rtol)`` (``s`` ascending)."""
    return int(np.searchsorted(s, s[0] * (1.0 + block_rtol), side="right"))


def secular_root(A: np.ndarray, gaps: np.ndarray, eps: float, lo: np.ndarray, hi: np.ndarray,
                 maxiter: int = DEFAULT_MAXITER, start: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Per row, the root ``g`` in ``[lo, hi]`` of ``||c(g)|| = eps`` with ``c_i(g) = a_i / (g + gap_i)``.

    Requires ``gap_i >= 0``, ``||c(lo)|| >= eps >= ||c(hi)||`` (``lo`` may be 0 only where the row's ``a``
    vanishes on ``gap_i = 0``). ``start`` (default ``lo``) is a first guess anywhere in ``[lo, hi]``, e.g. a
    lower bound that rounding might have pushed past the root: a Newton step from *any* point lands left of
    the root (concavity), so a guess found right of the root still yields a new lower end. Then safeguarded
    Newton on the concave ``psi(g) = eps/||c(g)|| - 1`` from the left (see the module docstring). Returns the
    roots (the left end of the final bracket, where ``||c|| >= eps`` to rounding) and the number of iterations.
    """
    lo = np.array(lo, dtype=np.float64)
    hi = np.array(hi, dtype=np.float64)
    start = lo.copy() if start is None else np.minimum(np.maximum(start, lo), hi)
    r_lo, q_lo, t_lo = _ratio_and_slope(A, gaps, start, eps, curvature=False)  # t only after a loop step
    right = r_lo < 1.0 - 4 * _EPS
    if np.any(right):  # the guess overshot: it is an upper end, and its Newton point a lower one
        j = np.flatnonzero(right)
        hi[j] = start[j]
        newton = start[j] + (r_lo[j] - 1.0) * q_lo[j]
        lo[j] = np.fmax(lo[j], np.minimum(newton, start[j]))
        r_lo[j], q_lo[j], t_lo[j] = _ratio_and_slope(A, gaps, lo[j], eps, rows=j, curvature=False)
    lo[~right] = start[~right]
    active = r_lo - 1.0 > 4 * _EPS
    bisect = np.zeros(lo.shape, dtype=bool)
    prev = r_lo - 1.0
    it = 0
    while np.any(active) and it < maxiter:
        it += 1
        idx = np.flatnonzero(active)
        l, h = lo[idx], hi[idx]
        newton = l + (r_lo[idx] - 1.0) * q_lo[idx]
        geo = np.where(l > 0, np.sqrt(l) * np.sqrt(h), 0.5 * h)
        trial = np.where(bisect[idx] & (newton < geo), geo, newton)
        bad = ~(trial > l) | ~(trial < h)
        trial = np.where(bad, 0.5 * (l + h), trial)
        r, q, t = _ratio_and_slope(A, gaps, trial, eps, rows=None if idx.size == lo.size else idx)
        # ||c(trial)|| = eps to rounding: trial is the root (treated as a lower end, ending the iteration)
        left = (r >= 1.0) | (np.abs(r - 1.0) <= 4 * _EPS)
        # left of the root (||c|| >= eps): new lower end; right of it: new upper end.
        lo[idx] = np.where(left, trial, l)
        hi[idx] = np.where(left, h, trial)
        r_lo[idx] = np.where(left, r, r_lo[idx])
        q_lo[idx] = np.where(left, q, q_lo[idx])
        t_lo[idx] = np.where(left, t, t_lo[idx])
        excess = r_lo[idx] - 1.0
        # a step that did not halve the excess (or landed right of the root) triggers a bisection next time
        bisect[idx] = ~left | (excess > 0.5 * prev[idx])
        prev[idx] = excess
        done = (excess <= 4 * _EPS) | (hi[idx] - lo[idx] <= 4 * _EPS * hi[idx])
        # Close to the root (the last step more than halved the excess, now <= 1e-5) one Halley step,
        # g + (r - 1) q / (1 + 1.5 (r - 1)(1 - t)), leaves an excess O(1e-15): take it without evaluating.
        final = ~done & left & ~bisect[idx] & (excess <= _FINAL_STEP)
        if np.any(final):
            j = idx[final]
            e = r_lo[j] - 1.0
            halley = lo[j] + e * q_lo[j] / (1.0 + 1.5 * e * (1.0 - t_lo[j]))
            lo[j] = np.minimum(halley, hi[j])
            done |= final
        active[idx[done]] = False
    return lo, it


def lower_likelihood(s: np.ndarray, W: np.ndarray, eps: float, *, block_rtol: float = DEFAULT_BLOCK_RTOL,
                     maxiter: int = DEFAULT_MAXITER) -> TRSolution:
    """Solve ``max_{||c|| <= eps} (w+c)^T diag(1/s) (w+c)`` for every row ``w`` of ``W`` (R1).

    ``s`` ascending and positive, ``W`` of shape ``(n, d)``. See the module docstring for the optimality
    conditions, the gap variable, the s_min block and the hard-case sign convention. ``eps = 0`` gives
    ``C = 0``, ``eta = 1/s_min`` and ``hard = False``.
    """
    s, W, eps = _check_inputs(s, W, eps)
    return _lower_likelihood(s, W, eps, float(block_rtol), maxiter)


def _lower_likelihood(s: np.ndarray, W: np.ndarray, eps: float, block_rtol: float = DEFAULT_BLOCK_RTOL,
                      maxiter: int = DEFAULT_MAXITER, overwrite: bool = False) -> TRSolution:
    """:func:`lower_likelihood` for checked values (``s`` float64 ascending positive, ``W`` float64 ``(n, d)``,
    ``eps`` a float ``>= 0``): the kernel behind :mod:`linflow.perturb`, which validates its arguments once.
    ``overwrite=True`` lets it use ``W``'s memory (C-contiguous ``W`` only) for ``A`` and then for ``C``: the
    caller's ``W`` is then lost (``C`` is returned in it)."""
    n, d = W.shape
    s_min = s[0]
    p = 1.0 / s
    if eps == 0.0:
        z = np.zeros(n)
        return TRSolution(np.zeros_like(W), z + p[0], z, np.zeros(n, dtype=bool), 0)
    k = block_size(s, block_rtol)
    gaps = (s - s_min) / (s * s_min)
    gaps[:k] = 0.0
    own = overwrite and W.flags.c_contiguous and W.flags.writeable
    A, a_norm, aB_norm, start = _prepare(W, p, gaps, eps, k, out=W if own else None)  # a_i = w_i / s_i, the start
    far = far_rows(a_norm, eps, aB_norm)
    if not np.any(far):  # the common case: every root within the double range
        C, g, hard, iters = _lower_rows(A, a_norm, aB_norm, start, gaps, eps, k, maxiter, own)
        return TRSolution(C, p[0] + g, g, hard, iters)
    C = A if own else np.empty_like(A)
    g = np.zeros(n)
    hard = np.zeros(n, dtype=bool)
    near = np.flatnonzero(~far)
    Af = A[far]
    iters = 0
    if near.size:
        C[near], g[near], hard[near], iters = _lower_rows(A[near], a_norm[near], aB_norm[near], start[near], gaps,
                                                          eps, k, maxiter, False)
    rows = np.flatnonzero(far)
    i, js = exponents(Af, gaps, eps)
    for j, r in groups(js):  # the exact power-of-two rescaling of linflow.secular_scale
        gj = np.ldexp(gaps, -j)
        Ar, an, abn, st = _prepare(np.ldexp(Af[r], -i - j), np.ones(d), gj, np.ldexp(eps, -i), k)
        Cr, gr, hr, it = _lower_rows(Ar, an, abn, st, gj, np.ldexp(eps, -i), k, maxiter, True)
        with np.errstate(over="ignore"):  # g beyond the double range: inf (c is unaffected)
            C[rows[r]], g[rows[r]], hard[rows[r]] = np.ldexp(Cr, i), np.ldexp(gr, j), hr
        iters = max(iters, it)
    return TRSolution(C, p[0] + g, g, hard, iters)


def _lower_rows(A: np.ndarray, a_norm: np.ndarray, aB_norm: np.ndarray, start: np.ndarray, gaps: np.ndarray,
                eps: float, k: int, maxiter: int, own: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """R1 from :func:`linflow.secular_start._prepare`'s output: ``(C, g, hard, iterations)`` (``C`` in ``A``'s memory
    if ``own``)."""
    n = A.shape[0]
    hi = a_norm / eps
    lo = np.minimum(aB_norm / eps, hi)
    start = np.fmax(lo, start)
    # hard case: no mass on the block and ||c(0)|| <= eps (off-block c_i = a_i / gap_i)
    maybe_hard = aB_norm == 0.0
    hard = np.zeros(n, dtype=bool)
    if np.any(maybe_hard):
        idx = np.flatnonzero(maybe_hard)
        r0, _, _ = _ratio_and_slope(A, gaps, np.zeros(idx.size), eps, rows=idx, curvature=False)
        hard[idx[r0 <= 1.0]] = True
    g = np.zeros(n)
    iters = 0
    easy = ~hard
    if np.all(easy):
        g, iters = secular_root(A, gaps, eps, lo, hi, maxiter, start)
    elif np.any(easy):
        g[easy], iters = secular_root(A[easy], gaps, eps, lo[easy], hi[easy], maxiter, start[easy])
    C, norms = _solution(A, gaps, g, easy, eps, out=A if own else None)  # easy rows: ||c|| = eps (4 ulps)
    if np.any(hard):
        off = norms[hard]
        fill = np.sqrt(np.maximum((eps - off) * (eps + off), 0.0))
        C[hard, 0] = fill
    return C, g, hard, iters


def raise_likelihood(s: np.ndarray, W: np.ndarray, eps: float, *,
                     maxiter: int = DEFAULT_MAXITER) -> TRSolution:
    """Solve ``min_{||c|| <= eps} (w+c)^T diag(1/s) (w+c)`` for every row ``w`` of ``W`` (R2).

    Interior case ``||w|| <= eps``: ``c = -w``, ``eta = 0`` (``hard`` is True for these rows). Otherwise
    ``c_i = -w_i / (1 + eta s_i)`` with ``eta > 0`` the root of ``||c(eta)|| = eps``, found by the same
    safeguarded Newton iteration with ``gap_i = 1/s_i`` and ``a_i = w_i / s_i``.
    """
    s, W, eps = _check_inputs(s, W, eps)
    return _raise_likelihood(s, W, eps, maxiter)


def _raise_likelihood(s: np.ndarray, W: np.ndarray, eps: float, maxiter: int = DEFAULT_MAXITER,
                      overwrite: bool = False) -> TRSolution:
    """:func:`raise_likelihood` for checked values (as :func:`_lower_likelihood`, ``overwrite`` too)."""
    n, d = W.shape
    if eps == 0.0:
        z = np.zeros(n)
        return TRSolution(np.zeros_like(W), z, z, np.all(W == 0, axis=1), 0)
    w_all = _row_norm(W)
    inside = w_all <= eps
    eta = np.zeros(n)
    iters = 0
    out = ~inside
    if not np.any(out):
        return TRSolution(-W, eta, eta.copy(), inside, iters)
    p = 1.0 / s
    everyone = bool(np.all(out))
    own = overwrite and W.flags.c_contiguous and W.flags.writeable
    Wo = W if everyone else W[out]
    A, a_norm, _, start = _prepare(Wo, p, p, eps, 0, out=Wo if own else None)
    far = far_rows(a_norm, eps)
    if np.any(far):  # roots outside the double range: the exact power-of-two rescaling of linflow.secular_scale
        Co, eta_o, iters = _raise_far(A, a_norm, start, p, eps, maxiter, far, own)
    else:
        Co, eta_o, iters = _raise_rows(A, a_norm, start, p, eps, maxiter, own)
    if everyone:
        return TRSolution(Co, eta_o, eta_o.copy(), inside, iters)
    C = np.negative(W, out=W if own else None)
    C[out] = Co
    eta[out] = eta_o
    return TRSolution(C, eta, eta.copy(), inside, iters)


def _raise_rows(A: np.ndarray, a_norm: np.ndarray, start: np.ndarray, p: np.ndarray, eps: float, maxiter: int,
                own: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """R2 for rows outside the ball from :func:`linflow.secular_start._prepare`'s output: ``(C, eta, iterations)``
    (``C`` in ``A``'s memory if ``own``)."""
    eta, iters = secular_root(A, p, eps, np.zeros(A.shape[0]), a_norm / eps, maxiter, start)
    # -a_i / (eta + p_i) = -w_i / (1 + eta s_i) (the sign of a descent), norm eps to 4 ulps
    C, _ = _solution(A, p, eta, np.ones(A.shape[0], dtype=bool), eps, negate=True, out=A if own else None)
    return C, eta, iters


def _raise_far(A: np.ndarray, a_norm: np.ndarray, start: np.ndarray, p: np.ndarray, eps: float, maxiter: int,
               far: np.ndarray, own: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`_raise_rows` with the rows ``far`` solved in the rescaled problem (:mod:`linflow.secular_scale`)."""
    n, d = A.shape
    C = A if own else np.empty_like(A)
    eta = np.zeros(n)
    near = np.flatnonzero(~far)
    Af = A[far]
    iters = 0
    if near.size:
        C[near], eta[near], iters = _raise_rows(A[near], a_norm[near], start[near], p, eps, maxiter, False)
    rows = np.flatnonzero(far)
    i, js = exponents(Af, p, eps)
    for j, r in groups(js):
        pj = np.ldexp(p, -j)
        Ar, an, _, st = _prepare(np.ldexp(Af[r], -i - j), np.ones(d), pj, np.ldexp(eps, -i), 0)
        Cr, er, it = _raise_rows(Ar, an, st, pj, np.ldexp(eps, -i), maxiter, True)
        with np.errstate(over="ignore"):  # eta beyond the double range: inf (c is unaffected)
            C[rows[r]], eta[rows[r]] = np.ldexp(Cr, i), np.ldexp(er, j)
        iters = max(iters, it)
    return C, eta, iters
