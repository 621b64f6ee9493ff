"""Raising over the L1 ball (:mod:`linflow.polytope_raise`, "L1 ball"): damped primal-dual active sets on the
bordered system (batched numpy, or compiled per row by :mod:`._jit` where numba is installed), the homotopy path
for the rows they leave, and the finite primal active-set method.

**Damping.** The primal-dual step exchanges every violator at once: support coordinates of the wrong sign leave,
coordinates with ``|G_i| > lambda`` join. At condition numbers near 1e8 with small ``eps`` the first exchange
overshoots (about twice the coordinates that should leave do) and the iteration cycles on every row; the symptom
is a negative budget multiplier ``lambda``. At 1e5-1e6 rows alternate between two supports with ``lambda >= 0``
(a 2-cycle) or crawl. A row is therefore *damped* from the first iteration with ``lambda < 0``, or from the first
(the fifth or later) whose number of set changes is not below that of two iterations before: it then exchanges
only the ``ceil(0.3 k)`` most wrong-signed of its ``k`` leaving coordinates and the ``ceil(0.6 k)`` largest
``|G_i| - lambda`` of its joining ones. Measured at d = 100, n = 1000, eps = 0.1 x the median ``||v||_1``
(``python -m bench box``): at condition number 1e8 every row settles in a median of 20 iterations (at most 32)
where the undamped iteration settled none; at 1e5 and 1e6, where the ``lambda < 0`` rule alone left some rows to
the 50-iteration limit and the homotopy (at most 167 and 189 iterations + breakpoints; numpy path 0.69 s and
0.40 s), the slowest row settles in 24 (0.32 s and 0.28 s); at 1e4 the median stays 9 (the slowest: 14 -> 17).
Settling is checked, not assumed: the final face must pass the exchange test with no violator and
``lambda >= 0``, and the certificate.
"""

from __future__ import annotations

import numpy as np

from . import _jit
from .common import (
    _ROUND,
    DEFAULT_KKT_TOL,
    RaiseResult,
    _check,
    _finish,
    _quad,
    _rows_per_chunk,
    _stacked_solve,
)
from .homotopy import l1_path

_USE_JIT = True  # the compiled per-row iteration of :mod:`._jit` where numba is installed (False: the numpy path)
_GROUP_VOLUME = 1 << 17  # float64 entries per stacked group of face systems (1 MB)
_DAMP = 0.3  # the fraction of the wrong-signed support coordinates a damped row drops per iteration
_DAMP_JOIN = 0.6  # and of the coordinates off the support it adds
_CRAWL_FROM = 5  # the first iteration at which a row whose set changes stop falling is damped


def _diag_l1_support(P: np.ndarray, G0: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Support and signs of ``argmin g^T d + d^T diag(P) d / 2`` s.t. ``||d||_1 <= eps`` (constraint active):
    ``d_i = -sign(g_i) (|g_i| - lambda)_+ / P_ii`` with ``lambda`` from ``sum_i (|g_i| - lambda)_+ / P_ii = eps``
    (piecewise linear and decreasing in ``lambda``: exact after sorting ``|g|``)."""
    c = np.diag(P)
    a = np.abs(G0)
    order = np.argsort(-a, axis=1)
    a_s = np.take_along_axis(a, order, axis=1)
    w_s = 1.0 / c[order]
    cw = np.cumsum(w_s, axis=1)
    caw = np.cumsum(a_s * w_s, axis=1)
    # with the k largest in the support: lambda_k = (caw_k - eps) / cw_k; valid while lambda_k >= a_(k+1)
    lam = (caw - eps) / cw
    nxt = np.concatenate([a_s[:, 1:], np.zeros((a.shape[0], 1))], axis=1)
    ok = lam >= nxt
    k = np.argmax(ok, axis=1)  # first valid k (always exists: lambda_d >= 0 iff ||d||_1 constraint binds)
    lam_k = np.maximum(lam[np.arange(a.shape[0]), k], 0.0)
    S = a > lam_k[:, None]
    S[np.arange(a.shape[0]), order[:, 0]] = True  # at least the steepest coordinate
    sig = np.where(G0 > 0.0, -1.0, 1.0)
    return S, sig


def _extended(M: np.ndarray) -> np.ndarray:
    """``M`` bordered by a zero row and column: index ``d`` is the padding slot."""
    d = M.shape[0]
    Me = np.zeros((d + 1, d + 1))
    Me[:d, :d] = M
    return Me


class _Workspace:
    """Flat buffers reused across the stacked solves of one call: blocks of a few MB allocated afresh for every
    group cost page faults comparable to the LU factorisations themselves."""

    def __init__(self) -> None:
        self._buf: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
        size = int(np.prod(shape))
        buf = self._buf.get(name)
        if buf is None or buf.size < size:
            buf = self._buf[name] = np.empty(max(size, 2 * (0 if buf is None else buf.size)), dtype=dtype)
        return buf[:size].reshape(shape)


def _bordered(Me: np.ndarray, I: np.ndarray, border: np.ndarray, corner: np.ndarray, R: np.ndarray,
              last: np.ndarray, work: _Workspace) -> np.ndarray:
    """Solve ``[[B, b], [b^T, c]] [y; t] = [R; last]`` per row with ``B = Me[I, I]``: ``I`` padded with the index
    ``d`` of the extended matrix ``Me`` (:func:`_extended`) and ``border``, ``R`` (the shape of ``I``) 0 there: the
    padding becomes an identity block with ``y = 0``."""
    m, k = I.shape
    n1 = Me.shape[0]
    M = work.get("M", (m, k + 1, k + 1))
    flat = work.get("flat", (m, k, k), np.intp)
    np.add((I * n1)[:, :, None], I[:, None, :], out=flat)
    block = work.get("block", (m, k, k))
    np.take(Me.ravel(), flat, out=block, mode="clip")
    M[:, :k, :k] = block
    diag = np.arange(k)
    M[:, diag, diag] += I == n1 - 1
    M[:, :k, k] = M[:, k, :k] = border
    M[:, k, k] = corner
    rhs = np.empty((m, k + 1))
    rhs[:, :k] = R
    rhs[:, k] = last
    return _stacked_solve(M, rhs)


def _volume_groups(rows: np.ndarray, size: np.ndarray, volume: int) -> list[np.ndarray]:
    """``rows`` sorted by system size and cut into groups whose padded systems hold at most ``volume`` entries
    (``len(group) (max size + 2)^2``; at least one row each): little padding, few calls for small systems."""
    order = np.argsort(size, kind="stable")
    rows, size = rows[order], size[order]
    out, a = [], 0
    while a < rows.size:
        # the largest b with (b - a) (size[b - 1] + 2)^2 <= volume (size is sorted)
        window = size[a:a + volume // 4 + 1]  # no group holds more than volume / 4 rows
        fits = np.flatnonzero(np.arange(1, window.size + 1) > volume // (window + 2) ** 2)
        b = a + max(int(fits[0]) if fits.size else window.size, 1)
        out.append(rows[a:b])
        a = b
    return out


def _padded_index(k: np.ndarray, mask: np.ndarray, pad: int) -> np.ndarray:
    """Per row, the indices of ``mask`` in increasing order (``k`` = the row counts), padded with ``pad`` to the
    largest count."""
    out = np.full((mask.shape[0], max(int(k.max(initial=0)), 1)), pad, dtype=np.intp)
    r, c = np.nonzero(mask)
    out[r, np.arange(r.size) - np.repeat(np.cumsum(k) - k, k)] = c
    return out


def _l1_solve(P: np.ndarray, Sig: np.ndarray, V: np.ndarray, G0: np.ndarray, S: np.ndarray, sig: np.ndarray,
              eps: float, work: _Workspace | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""``(delta, lambda, G = P (v + delta))`` of the face problem ``min f`` s.t. ``delta_i = 0`` off ``S``,
    ``sigma_S^T delta_S = eps``.

    Rows with a small support solve the bordered system on ``S`` (size ``|S| + 1``). Rows with a large one use the
    complement: with ``Sigma = P^{-1}`` and ``Sigma g = v``, stationarity ``P delta + g + E nu + lambda sigma = 0``
    (``E`` the columns off ``S``) gives ``delta = -v - Sigma (E nu + lambda sigma)``, and the constraints give
    ``[[Sigma_CC, (Sigma sigma)_C], [., sigma^T Sigma sigma]] [nu; lambda] = [-v_C; -eps - sigma^T v]``
    (size ``|C| + 1``, ``C`` the complement). Systems are padded to the largest size in the group and stacked.
    """
    m, d = S.shape
    E = np.broadcast_to(np.asarray(eps, dtype=np.float64), (m,))
    D = np.zeros((m, d + 1))
    G = np.empty((m, d))
    lam = np.zeros(m)
    k = S.sum(axis=1)
    small = k <= d - k + 8  # the direct form also for small supports: accurate for budgets far below |v|
    volume = min(_rows_per_chunk(d) * (d + 1) ** 2, _GROUP_VOLUME)
    work = _Workspace() if work is None else work
    SR = np.zeros((m, d + 1))  # sigma on S, 0 elsewhere and in the padding column
    np.copyto(SR[:, :d], sig, where=S)
    for group, direct in ((np.flatnonzero(small), True), (np.flatnonzero(~small), False)):
        if not group.size:
            continue
        if direct:
            Me, diag = _extended(P), np.append(np.diag(P), 0.0)
            RHS = np.zeros((m, d + 1))
            np.negative(G0, out=RHS[:, :d])
        else:
            Me = _extended(Sig)
            W = np.zeros((m, d + 1))
            if 2 * group.size > m:  # most rows: one product over all of them beats gathering and scattering rows
                W[:, :d] = SR[:, :d] @ Sig
            else:
                W[group, :d] = SR[group, :d] @ Sig
        for r in _volume_groups(group, np.minimum(k, d - k)[group], volume):
            rc = r[:, None]
            if direct:
                I = _padded_index(k[r], S[r], d)
                c = 2.0 * np.max(diag[I], axis=1)  # = 2 max |P_SS| (P is positive definite)
                # the border scaled by c: pivoting takes the budget row first, so a budget far below |v| survives
                sol = _bordered(Me, I, c[:, None] * SR[rc, I], np.zeros(r.size), RHS[rc, I], c * E[r], work)
                sol[:, -1] *= c
                D[rc, I] = sol[:, :-1]
            else:
                J = _padded_index(d - k[r], ~S[r], d)
                sr, w, Vr = SR[r, :d], W[r, :d], V[r]
                sol = _bordered(Me, J, W[rc, J], np.einsum("ij,ij->i", sr, w),
                                np.where(J < d, -V[rc, np.minimum(J, d - 1)], 0.0),
                                -E[r] - np.einsum("ij,ij->i", sr, Vr), work)
                nu = np.zeros((r.size, d + 1))
                nu[np.arange(r.size)[:, None], J] = sol[:, :-1]
                Dr = nu[:, :d] @ Sig
                Dr += Vr
                Dr += sol[:, -1:] * w
                D[r, :d] = np.where(S[r], -Dr, 0.0)
                G[r] = -nu[:, :d] - sol[:, -1:] * sr  # P (v + delta) = -(E nu + lambda sigma)
            lam[r] = sol[:, -1]
    D = D[:, :d]
    if small.any():
        G[small] = G0[small] + D[small] @ P
    return D, lam, G


def _l1_primal_active_set(P: np.ndarray, g: np.ndarray, x: np.ndarray, eps: float,
                          max_iter: int) -> tuple[np.ndarray, bool, int]:
    r"""The primal active-set method on the L1 ball for one row, from a feasible ``x``: finite.

    Inside the orthant of the current signs ``sigma`` the ball is ``{sigma_i x_i >= 0, sigma^T x <= eps}``. The
    working set holds ``x_i = 0`` for ``i`` outside the support ``S`` and, when flagged, the budget
    ``sigma_S^T x_S = eps``. Face minimum: the bordered system (budget on) or ``P_SS z_S = -g_S`` (off). If ``z``
    is feasible it becomes ``x``; with ``G = g + P x`` and ``Lambda = -sigma_i G_i`` (``i in S``, budget on; else 0)
    the multiplier of ``x_i = 0`` is ``Lambda - |G_i|`` in the orthant ``sigma_i = -sign G_i``: the most negative
    one joins ``S``; if none, ``Lambda < 0`` releases the budget; otherwise ``x`` is a KKT point. If ``z`` is not
    feasible, ``x`` moves towards it until a coordinate reaches 0 (it leaves ``S``) or the budget is reached (it
    joins the working set). Returns ``(x, optimal, iterations)``.
    """
    x = x.copy()
    S = x != 0.0
    sig = np.where(x > 0.0, 1.0, -1.0)
    on = bool(np.abs(x).sum() >= eps * (1.0 - 1e-15))
    for it in range(1, max_iter + 1):
        z = np.zeros_like(x)
        lam = 0.0
        k = int(S.sum())
        if k:
            Pss = P[np.ix_(S, S)]
            try:
                if on:
                    K = np.zeros((k + 1, k + 1))
                    K[:k, :k] = Pss
                    K[:k, k] = K[k, :k] = sig[S]
                    sol = np.linalg.solve(K, np.concatenate([-g[S], [eps]]))
                    z[S], lam = sol[:k], float(sol[k])
                else:
                    z[S] = np.linalg.solve(Pss, -g[S])
            except np.linalg.LinAlgError:
                return x, False, it
        wrong = S & (sig * z < 0.0)
        over = (not on) and float(sig[S] @ z[S]) > eps
        if not wrong.any() and not over:
            x = z
            G = g + P @ x
            mu = np.where(S, np.inf, lam - np.abs(G))
            j = int(np.argmin(mu))
            if mu[j] < -_ROUND * (np.abs(P[j]) @ np.abs(x) + abs(g[j])):
                S[j] = True
                sig[j] = -1.0 if G[j] > 0.0 else 1.0
                continue
            if on and lam < 0.0:
                on = False
                continue
            return x, True, it
        p = z - x
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(wrong, x / (x - z), np.inf)
        j = int(np.argmin(room))
        a_coord = float(room[j])
        a_sum = np.inf
        if over:
            sx, sz = float(sig[S] @ x[S]), float(sig[S] @ z[S])
            a_sum = (eps - sx) / (sz - sx)
        alpha = min(max(min(a_coord, a_sum), 0.0), 1.0)
        x = x + alpha * p
        if a_coord <= a_sum:
            x[j] = 0.0
            S[j] = False
        else:
            on = True
        x[S] = np.where(sig[S] * x[S] < 0.0, 0.0, x[S])
    return x, False, max_iter


def _l1_feasible_start(P: np.ndarray, g: np.ndarray, x: np.ndarray, S: np.ndarray, sig: np.ndarray,
                       eps: float) -> np.ndarray:
    """A feasible point from an active-set iterate: wrong-signed entries dropped, then scaled onto the budget; or
    the diagonal-model solution if that is better."""
    y = np.where(S & (sig * x > 0.0), x, 0.0)
    l1 = float(np.abs(y).sum())
    y = y * (eps / l1) if l1 > 0 else y
    c = np.diag(P)
    a = np.abs(g)
    order = np.argsort(-a)
    lam = (np.cumsum(a[order] / c[order]) - eps) / np.cumsum(1.0 / c[order])
    k = int(np.argmax(lam >= np.append(a[order][1:], 0.0)))
    z = -np.sign(g) * np.maximum(a - max(lam[k], 0.0), 0.0) / c
    return y if (l1 > 0 and _quad(P, g[None], y[None])[0] <= _quad(P, g[None], z[None])[0]) else z


def _damped(flag: np.ndarray, viol: np.ndarray, damped: np.ndarray, frac: float) -> np.ndarray:
    """On the ``damped`` rows keep only the ``ceil(frac k)`` largest violations ``viol`` of the ``k`` coordinates
    flagged in ``flag`` (ties kept). Whole arrays where every row is damped (no row gathers)."""
    if not damped.any():
        return flag
    every = bool(damped.all())
    rows = None if every else np.flatnonzero(damped)
    f = flag if every else flag[rows]
    v = np.where(f, viol if every else viol[rows], -np.inf)
    keep = np.ceil(frac * f.sum(axis=1)).astype(np.int64)
    # the keep-th largest (the largest, -inf, where nothing is flagged): ascending position d - max(keep, 1)
    thr = np.sort(v, axis=1)[np.arange(v.shape[0]), v.shape[1] - np.maximum(keep, 1)]
    if every:
        return flag & (v >= thr[:, None])
    out = flag.copy()
    out[rows] &= v >= thr[:, None]
    return out


def _l1_pdas(P: np.ndarray, Sig: np.ndarray, V: np.ndarray, G0: np.ndarray, S: np.ndarray, sig: np.ndarray,
             eps: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The damped primal-dual active-set iteration on the support and signs (module docstring) from ``(S, sig)``, at
    most ``max_iter`` iterations (``eps`` a number or one per row): ``(X, settled, iterations, S, sig, lambda)`` (the
    last iterate, sets and multiplier). Compiled, one row at a time, where numba is installed (:mod:`._jit`); batched
    otherwise: the same iteration, each row running until it settles, its multiplier is not finite (a singular
    face) or ``max_iter``. (The batched path used to stop the whole batch once its undamped rows' set changes
    stopped falling -- a rule from before the damping: at condition number 1e5, d = 100, eps = 0.1 x the median
    ``||v||_1``, it sent every row to the homotopy after 4 iterations, 1.2 s where the rows settle here in a median
    of 18 iterations, 0.46 s.)"""
    if _jit.AVAILABLE and _USE_JIT:
        E = np.ascontiguousarray(np.broadcast_to(np.asarray(eps, dtype=np.float64), (G0.shape[0],)))
        return _jit.pdas_rows(P, Sig, np.ascontiguousarray(V), np.ascontiguousarray(G0), np.ascontiguousarray(S),
                              np.ascontiguousarray(sig, dtype=np.float64), E, int(max_iter), _DAMP, _DAMP_JOIN,
                              _CRAWL_FROM)
    S, sig = S.copy(), sig.copy()
    X = np.zeros_like(G0)
    L = np.zeros(G0.shape[0])
    iters = np.zeros(G0.shape[0], dtype=np.int64)
    act = np.arange(G0.shape[0])
    done = np.zeros(G0.shape[0], dtype=bool)
    damped = np.zeros(G0.shape[0], dtype=bool)
    work = _Workspace()
    before = np.full((2, G0.shape[0]), np.iinfo(np.int64).max)  # set changes one and two iterations ago
    for it in range(1, max_iter + 1):
        Xa, lam, G = _l1_solve(P, Sig, V[act], G0[act], S[act], sig[act], eps if np.ndim(eps) == 0 else eps[act],
                               work)
        X[act], L[act] = Xa, lam
        iters[act] = it
        Sa, sa = S[act], sig[act]
        leave = Sa & (sa * Xa < 0.0)
        join = ~Sa & (np.abs(G) > lam[:, None])
        changes = np.sum(leave | join, axis=1)
        # damped from the first overshoot (lambda < 0) or the first iteration (from the _CRAWL_FROM-th on) whose
        # number of set changes is not below that of two iterations before (a crawl or a 2-cycle)
        damped[act] |= (lam < 0.0) | ((changes >= before[1, act]) & (it >= _CRAWL_FROM))
        before[1, act], before[0, act] = before[0, act], changes
        leave = _damped(leave, -sa * Xa, damped[act], _DAMP)
        join = _damped(join, np.abs(G) - lam[:, None], damped[act], _DAMP_JOIN)
        nS = (Sa & ~leave) | join
        nsig = np.where(join, np.where(G > 0.0, -1.0, 1.0), sa)
        same = (changes == 0) & (lam >= 0.0) & np.all(np.isfinite(Xa), axis=1)
        nS[~nS.any(axis=1), 0] = True  # keep the system nonsingular (a row at zero support restarts)
        done[act[same]] = True
        S[act], sig[act] = nS, nsig
        act = act[~same & np.isfinite(lam)]
        if act.size == 0:
            break
    return np.nan_to_num(X), done, iters, S, sig, L


def raise_l1(P: np.ndarray, V: np.ndarray, eps: float, *, max_iter: int = 50, path_steps: int | None = None,
             start: str = "top", kkt_tol: float = DEFAULT_KKT_TOL) -> RaiseResult:
    """``argmin g^T delta + delta^T P delta / 2`` s.t. ``||delta||_1 <= eps`` for every row ``v`` of ``V``.

    The damped primal-dual active set (module docstring), at most ``max_iter`` iterations, from the support and signs of
    the unconstrained minimiser (``start="top"``) or of the diagonal model (``"diagonal"``). On the rows whose sets
    did not settle, the homotopy path from the unconstrained minimiser (at most ``path_steps`` events, default
    ``4 d + 20``) proposes the face and at most 3 active-set iterations check it. Rows still unsettled continue
    with the finite primal active-set method, one row at a time, from a feasible point made of the last iterate.
    Rows with ``||v||_1 <= eps`` get ``delta = -v`` (interior).
    """
    P, V, eps = _check(P, V, eps)
    if start not in ("top", "diagonal"):
        raise ValueError(f"start must be 'top' or 'diagonal', got {start!r}")
    n, d = V.shape
    path_steps = 4 * d + 20 if path_steps is None else int(path_steps)
    if eps == 0.0:  # the ball is the point 0
        return _finish(P, V, np.zeros_like(V), eps, 1.0, np.ones(n, dtype=bool), np.zeros(n, dtype=np.int64),
                       kkt_tol)
    D = -V.copy()
    iters = np.zeros(n, dtype=np.int64)
    settled = np.ones(n, dtype=bool)
    rows = np.flatnonzero(np.sum(np.abs(V), axis=1) > eps)
    if rows.size:
        Vr, G0 = V[rows], V[rows] @ P
        Sig = np.linalg.inv(P)
        Sig = 0.5 * (Sig + Sig.T)
        if start == "top":
            S, sig = Vr != 0.0, -np.sign(Vr)
        else:
            S, sig = _diag_l1_support(P, G0, eps)
        X, done, it, S, sig, _ = _l1_pdas(P, Sig, Vr, G0, S, sig, eps, max_iter)
        iters[rows] = it
        rest = np.flatnonzero(~done)
        if rest.size and path_steps > 0:  # the homotopy proposes the face, the active-set step checks it
            Sh, sh, _, steps = l1_path(Sig, Vr[rest], eps, min(d, 128), path_steps)
            Sh[~Sh.any(axis=1), 0] = True
            xh, ok, it, Sh, sh, _ = _l1_pdas(P, Sig, Vr[rest], G0[rest], Sh, np.where(sh == 0.0, 1.0, sh), eps, 3)
            X[rest[ok]], done[rest[ok]] = xh[ok], True
            iters[rows[rest]] += steps + it
            S[rest], sig[rest] = Sh, sh
        for j in np.flatnonzero(~done):  # the finite method, warm-started from the last active-set iterate
            x0 = _l1_feasible_start(P, G0[j], X[j], S[j], sig[j], eps)
            X[j], done[j], k = _l1_primal_active_set(P, G0[j], x0, eps, 8 * d + 50)
            iters[rows[j]] += k
        l1 = np.sum(np.abs(X), axis=1)
        over = l1 > eps
        X[over] *= (eps / l1[over])[:, None]  # rounding only
        settled[rows] = done
        D[rows] = X
    return _finish(P, V, D, eps, 1.0, settled, iters, kkt_tol)
