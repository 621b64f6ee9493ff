r"""The start of the secular root finder of :mod:`linflow.secular` (R1, R2): one blocked pass over the points that
forms ``A = W diag(p)``, the norms the iteration needs, and a proven lower bound on each row's root -- the root of
a grouped Jensen model of ``||c(g)||^2 = sum_i a_i^2 / (g + gap_i)^2`` (within each group of similar gaps,
``1 / (g + x)^2`` is convex, so the model lies below ``||c||^2`` and its root left of the true one). Starting
there, the safeguarded Newton iteration of :func:`linflow.secular.secular_root` needs about 2 passes over the
batch instead of 3.7 (lowering) or 5 (raising) from the one-group bound (``python -m bench l2``)."""

from __future__ import annotations

import numpy as np

from .secular_passes import _block_rows, _row_norm_scaled

_GROUPS = 40  # eigenvalue groups of the start's model (Jensen within each group)
# A row of the model's Newton iteration stops once its step is below this fraction of g: by quadratic convergence
# it is then within ~1e-6 of the model's root, well inside the model's own distance to the true root (~1e-3).
_GROUP_TOL = 3e-3


def _group_cuts(gaps: np.ndarray) -> np.ndarray:
    """Start columns of at most ``_GROUPS`` groups of columns with similar ``gap``: the zero gaps (the s_min block,
    always first) on their own, then runs log-spaced in ``gap``. ``gaps`` is monotone in the column (``s`` is
    sorted), so every group is a contiguous run of columns and ``np.add.reduceat`` sums it."""
    d = gaps.size
    z = int(np.count_nonzero(gaps == 0.0))
    cuts = [0] if z else []
    if z < d:
        lg = np.log(gaps[z:])
        lo, hi = float(lg.min()), float(lg.max())
        lab = np.minimum(((lg - lo) / max(hi - lo, 1e-300) * (_GROUPS - 1)).astype(np.int64), _GROUPS - 2)
        cuts += [z, *(z + 1 + np.flatnonzero(np.diff(lab))).tolist()]
    return np.array(cuts, dtype=np.int64)


def _group_root(WG: np.ndarray, m: np.ndarray, eps: float, g: np.ndarray, iters: int = 30) -> np.ndarray:
    r"""The root of the grouped model ``sum_G W_G / (g + m_G)^2 = eps^2`` (``m_G``: the group's ``a^2``-weighted mean
    gap, ``inf`` for an empty group: no pole, no term) by Newton on the concave ``eps / ||c_model|| - 1`` from
    ``g``, a point left of it. By Jensen (``1 / (g + x)^2`` is convex) each group's term is at most that group's part
    of ``||c(g)||^2``, so the model lies below ``||c||^2`` and its root is a lower bound on the true root; a tighter
    one than the one-group (Jensen) bounds it starts from. ``WG`` and ``m`` are group-major, ``(groups, rows)``:
    every operation below is then a long elementwise one."""
    g = np.array(g, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rows = np.arange(g.size)
        ga, Wa, ma = g[rows], WG, m  # the rows still iterated (all, until fewer than half of them move)
        for _ in range(iters):
            u = np.add(ma, ga)
            np.divide(1.0, u, out=u)
            t = u * u
            t *= Wa
            N2 = t.sum(axis=0)
            t *= u
            step = (np.sqrt(N2) / eps - 1.0) * N2 / t.sum(axis=0)
            step[~(step > 0)] = 0.0  # at or past the model's root (rounding), or NaN: it stays there
            ga += step
            moving = step > _GROUP_TOL * ga
            if not np.any(moving):
                break
            if 2 * np.count_nonzero(moving) < moving.size:  # a Newton step from the left stays left: rows that
                g[rows] = ga  # are not dropped may keep iterating
                rows, ga, Wa, ma = rows[moving], ga[moving], Wa[:, moving], ma[:, moving]
        g[rows] = ga
    return g


def _prepare(W: np.ndarray, p: np.ndarray, gaps: np.ndarray, eps: float, k: int,
             out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One blocked pass over ``W``: ``A = W p`` (``a_i = w_i / s_i``; written to ``out``, which may be ``W`` itself),
    ``||a||``, ``||a_B||`` (first ``k`` columns) and the start of the root: the root of the grouped Jensen model
    (:func:`_group_root`, started from the one-group bounds), a lower bound on the root (rounding may push it past:
    see :func:`linflow.secular.secular_root`'s ``start``); 0 where the sums overflow (the root is >= 0). The norms
    are sums of the group sums (the groups partition the columns); those are stored group-major."""
    n, d = W.shape
    A = np.empty_like(W) if out is None else out
    cuts = _group_cuts(gaps)
    K = cuts.size
    block_first = k > 0 and (cuts[1] if K > 1 else d) == k  # the s_min block is exactly the first group
    WG = np.empty((K, n))  # sum of a_i^2 over each group
    GG = np.empty((K, n))  # sum of a_i^2 gap_i over each group
    nb2 = np.zeros(n)
    step = _block_rows(d)
    buf = np.empty((min(step, n), d))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for i in range(0, n, step):
            j = min(i + step, n)
            a_, b_ = A[i:j], buf[: j - i]
            np.multiply(W[i:j], p, out=a_)
            np.multiply(a_, a_, out=b_)
            WG[:, i:j] = np.add.reduceat(b_, cuts, axis=1).T  # groups are contiguous runs of columns
            if k and not block_first:
                nb2[i:j] = b_[:, :k].sum(axis=1)
            b_ *= gaps
            GG[:, i:j] = np.add.reduceat(b_, cuts, axis=1).T
        n2 = WG.sum(axis=0)
        if block_first:
            nb2 = WG[0].copy()
        jg = GG.sum(axis=0)
    bad = ~np.isfinite(n2) | (n2 < 1e-250)
    a_norm, aB_norm = np.sqrt(n2), np.sqrt(nb2)
    if np.any(bad):
        a_norm[bad] = _row_norm_scaled(A[bad])
        aB_norm[bad] = _row_norm_scaled(A[bad][:, :k]) if k else 0.0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        start = np.where(bad, np.nan, a_norm / eps - jg / n2)
    fine = np.isfinite(n2) & np.isfinite(jg)  # every group sum is finite (they are non-negative)
    every = bool(np.all(fine))
    if every or np.any(fine):
        Wf, Gf = (WG, GG) if every else (WG[:, fine], GG[:, fine])
        with np.errstate(divide="ignore", invalid="ignore"):
            m = Gf / Wf  # the weighted mean gap of each group; an empty group (0 / 0) has none: inf, no term
            if not Wf.all():
                m[Wf == 0.0] = np.inf
            # one group alone: ||c(g)|| >= sqrt(W_G) / (g + m_G) (Jensen), so g >= sqrt(W_G) / eps - m_G
            left = np.fmax(np.max(np.sqrt(Wf) / eps - m, axis=0), 0.0)
        if every:
            start = _group_root(Wf, m, eps, np.fmax(start, left))
        else:
            start[fine] = _group_root(Wf, m, eps, np.fmax(start[fine], left))
    return A, a_norm, aB_norm, np.fmax(start, 0.0)
