r"""The blocked passes over a batch that the secular root finder of :mod:`linflow.secular` makes (R1, R2).

Every function here walks the rows of ``A`` (``a_i = w_i / s_i`` per row) in blocks that fit in cache and, for a
per-row shift ``g``, works with ``c_i = a_i / (g + gap_i)`` (``gap_i >= 0`` shared by all rows). What keeps a pass
cheap:

- the denominators ``g + gap_i`` of a block are the rank-2 product ``[g, 1] @ [1; gap]`` (BLAS): each entry is
  ``g * 1 + 1 * gap_i``, two exact products added with one rounding -- bit for bit ``g + gap_i``, written faster
  than by numpy's broadcasting add (:func:`_outer_sum`);
- ``c_i`` and ``c_i / (g + gap_i)`` are divisions (one rounding each), not products with a reciprocal;
- row dot products use ``np.vecdot`` where numpy has it (``einsum`` otherwise);
- sums of squares that overflow or underflow are recomputed for those rows only, with a per-row scale.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1 << 17  # elements per block of rows (1 MiB per buffer): in cache, yet few Python-level calls
_vecdot = getattr(np, "vecdot", None)  # numpy >= 2.0
_RESCALE_ULPS = 4  # a solution row whose norm is this close to eps (in ulps) is left as it is (see _solution)


def _rowdot(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``sum_j X_ij Y_ij`` per row."""
    return np.einsum("ij,ij->i", X, Y) if _vecdot is None else _vecdot(X, Y)


def _block_rows(d: int) -> int:
    """Rows per block: ``_CHUNK`` elements."""
    return max(1, _CHUNK // max(d, 1))


def _shift_factors(g: np.ndarray, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[g, 1]`` (one row per shift) and ``[1; gap]``: their product is the table ``g + gap_i``
    (:func:`_outer_sum`)."""
    G = np.empty((g.size, 2))
    G[:, 0] = g
    G[:, 1] = 1.0
    return G, np.vstack((np.ones_like(gaps), gaps))


def _outer_sum(G: np.ndarray, Q: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[r, i] = g[r] + gap_i`` as the product ``G @ Q`` of :func:`_shift_factors` (``G = [g, 1]``,
    ``Q = [1; gap]``). Each entry is ``g * 1 + 1 * gap_i``: both products are exact, so the one rounding of their
    sum gives exactly ``g + gap_i`` (finite values); BLAS writes the block faster than ``np.add.outer``."""
    return np.matmul(G, Q, out=out)


def _row_norm_scaled(X: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row computed after dividing by its largest entry (no overflow or underflow)."""
    m = np.max(np.abs(X), axis=1)
    safe = np.where(m > 0, m, 1.0)
    return m * np.sqrt(np.sum((X / safe[:, None]) ** 2, axis=1))


def _row_norm(X: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row; rows whose sum of squares overflows or underflows are recomputed scaled by
    their largest entry."""
    return _row_norm_flagged(X)[0]


def _row_norm_flagged(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_row_norm` and the mask of the rows that needed the scaled recomputation."""
    with np.errstate(over="ignore", under="ignore"):
        N2 = _rowdot(X, X)
    out = np.sqrt(N2)
    bad = ~np.isfinite(N2) | (N2 < 1e-250)
    if np.any(bad):
        out[bad] = _row_norm_scaled(X[bad])
    return out, bad


def _ratio_and_slope_scaled(A: np.ndarray, gaps: np.ndarray, g: np.ndarray,
                            eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_ratio_and_slope` with each row's ``c`` scaled by its largest ``|c_i|`` and its ``1/(g + gap_i)``
    by the largest of those (over entries with ``c_i != 0``): every sum is O(1), nothing overflows."""
    den = g[:, None] + gaps[None, :]
    nz = A != 0
    C = np.divide(A, den, out=np.zeros_like(A), where=nz)
    m = np.max(np.abs(C), axis=1)
    Ch = C / np.where(m > 0, m, 1.0)[:, None]
    dmin = np.min(np.where(nz, den, np.inf), axis=1)
    dmin = np.where(np.isfinite(dmin), dmin, 1.0)
    Uh = np.divide(dmin[:, None], den, out=np.zeros_like(den), where=nz)  # in (0, 1]
    W2 = Ch * Ch
    N2 = np.sum(W2, axis=1)
    S1h = np.sum(W2 * Uh, axis=1)
    S2h = np.sum(W2 * Uh * Uh, axis=1)
    r = m * np.sqrt(N2) / eps
    pos = S1h > 0
    q = np.divide(N2 * dmin, S1h, out=np.full(N2.shape, np.inf), where=pos)
    t = np.divide(S2h * N2, S1h * S1h, out=np.ones(N2.shape), where=pos)
    return r, q, np.where(np.isfinite(t), t, 1.0)


def _sums(A: np.ndarray, gaps: np.ndarray, g: np.ndarray, rows: np.ndarray | None,
          curvature: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``sum_i c_i^2``, ``sum_i c_i^2 / (g + gap_i)`` and (if ``curvature``) ``sum_i c_i^2 / (g + gap_i)^2`` per
    row, in cache-sized blocks of rows."""
    n = A.shape[0] if rows is None else rows.size
    d = A.shape[1]
    N2 = np.empty(n)
    S = np.empty(n)
    S2 = np.empty(n) if curvature else None
    step = _block_rows(d)
    G, Q = _shift_factors(g, gaps)
    zero = bool(np.any(g == 0.0))
    R = np.empty((min(step, n), d))
    C = np.empty_like(R)
    for i in range(0, n, step):
        j = min(i + step, n)
        r_, c_ = R[: j - i], C[: j - i]
        _outer_sum(G[i:j], Q, r_)
        if zero:
            r_[r_ == 0.0] = np.inf  # a_i = 0 there: c_i = 0 (and so is c_i / (g + gap_i))
        np.divide(A[i:j] if rows is None else A[rows[i:j]], r_, out=c_)
        N2[i:j] = _rowdot(c_, c_)
        np.divide(c_, r_, out=r_)  # c_i / (g + gap_i)
        S[i:j] = _rowdot(c_, r_)
        if curvature:
            S2[i:j] = _rowdot(r_, r_)
    return N2, S, S2


def _ratio_and_slope(A: np.ndarray, gaps: np.ndarray, g: np.ndarray, eps: float, rows: np.ndarray | None = None,
                     curvature: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row (of ``A``, or of ``A[rows]`` with ``g`` matching ``rows``): ``r = ||c(g)|| / eps``, the Newton
    step numerator ``q = ||c||^2 / S1`` and the curvature ratio ``t = S2 ||c||^2 / S1^2 >= 1``, where
    ``S_k = sum_i c_i^2 / (g + gap_i)^k``. With ``psi = eps/||c|| - 1``: ``psi' = 1/(r q)`` and
    ``psi'' = 3 (1 - t) / (r q^2) <= 0``. ``curvature=False`` skips ``S2`` (one row sum) and returns ``t = 1``
    except on the rows recomputed with a scale.

    ``c_i = a_i / (g + gap_i)``; a zero denominator only occurs where ``a_i = 0`` (a row at ``g = 0`` has no
    mass on the zero gaps), and that entry counts as 0. Fast path: plain sums of squares, computed in blocks
    of rows that fit in cache; rows whose sums overflow or underflow are recomputed with a per-row scale.
    """
    n = A.shape[0] if rows is None else rows.size
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        N2, S, S2 = _sums(A, gaps, g, rows, curvature)
    with np.errstate(over="ignore", invalid="ignore"):  # such rows are redone below
        r = np.sqrt(N2) / eps
        q = np.divide(N2, S, out=np.full(n, np.inf), where=S > 0)
        if S2 is None:
            t = np.ones(n)
            bad = ~np.isfinite(N2) | ~np.isfinite(S) | (N2 < 1e-250)
        else:
            t = np.divide(S2, S, out=np.ones(n), where=S > 0) * np.where(S > 0, q, 1.0)
            bad = ~np.isfinite(N2) | ~np.isfinite(S) | ~np.isfinite(S2) | ~np.isfinite(t) | (N2 < 1e-250)
    if np.any(bad):
        Ab = A[bad] if rows is None else A[rows[bad]]
        r[bad], q[bad], t[bad] = _ratio_and_slope_scaled(Ab, gaps, g[bad], eps)
    return r, q, t


def _solution(A: np.ndarray, gaps: np.ndarray, g: np.ndarray, scale: np.ndarray | None = None, radius: float = 0.0,
              *, negate: bool = False, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``C = a_i / (g + gap_i)`` (``-a_i / (g + gap_i)`` if ``negate``; 0 where ``a_i = 0``) and its row norms, in
    cache-sized blocks of rows; ``out`` (``A`` itself is allowed: each block is read before it is written) receives
    ``C``, which is written once.

    Rows with ``scale`` true get norm ``radius``: those whose norm is further than ``_RESCALE_ULPS`` ulps from it are
    rescaled in the same block (rows of a root found by :func:`linflow.secular.secular_root` are within 4 ulps, so
    this is rare: a rescaling would move them by rounding only). Rows whose sum of squares overflows or underflows get
    a scaled norm and are rescaled after. With ``negate`` the denominators are ``[-g, -1] @ [1; gap] = -(g + gap)``
    exactly, so the sign costs nothing."""
    n, d = A.shape
    C = np.empty_like(A) if out is None else out
    norms = np.empty(n)
    step = _block_rows(d)
    G, Q = _shift_factors(g, gaps)
    if negate:
        np.negative(G, out=G)
    zero = bool(np.any(g == 0.0))
    R = np.empty((min(step, n), d))
    late = []
    tol = _RESCALE_ULPS * np.finfo(np.float64).eps
    for i in range(0, n, step):
        j = min(i + step, n)
        c_, r_ = C[i:j], R[: j - i]
        _outer_sum(G[i:j], Q, r_)
        if zero:
            r_[r_ == 0.0] = np.inf
        np.divide(A[i:j], r_, out=c_)
        nb, bad = _row_norm_flagged(c_)
        if np.any(bad):
            late.extend((i + np.flatnonzero(bad & (scale[i:j] if scale is not None else False))).tolist())
        norms[i:j] = nb
        if scale is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                f = radius / nb
            fix = np.flatnonzero(scale[i:j] & (nb > 0) & ~bad & (np.abs(f - 1.0) > tol))
            if fix.size:
                c_[fix] *= f[fix, None]
    for r in late:
        if norms[r] > 0:
            C[r] *= radius / norms[r]
    return C, norms
