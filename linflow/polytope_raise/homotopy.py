r"""Homotopy (LARS-type) paths for the raising QPs (:mod:`linflow.polytope_raise`, "Homotopy"): the optimal face
as a function of ``eps``, followed from the unconstrained minimiser ``delta = -v`` (``eps = ||v||``) downwards.

With ``Sigma = P^{-1}``, ``u = v + delta`` and ``G = P u`` (so ``u = Sigma G``), the solution is piecewise linear
in ``eps`` (or in the multiplier), with one event -- a coordinate joining or leaving a small index set ``C`` --
per breakpoint. On each piece the unknowns solve a system in ``Sigma_CC``; its inverse ``K = Sigma_CC^{-1}`` is
updated by one rank-one bordering (join) or downdating (leave) step per event, for all rows at once (padded slots).

**Box.** ``C`` = the coordinates at the bounds, ``delta_C = eps s_C``; ``G`` is zero off ``C`` and
``G_C = K (v_C + eps s_C) = a + eps b``, so ``delta = Sigma G - v = alpha + eps beta`` is linear in ``eps``.
Going down from ``eps = ||v||_inf``: a free coordinate joins ``C`` when ``|delta_i| = eps`` (sign
``s_i = sign delta_i``); a bound coordinate leaves it when its multiplier ``-s_i G_i`` reaches 0.

**L1 ball.** ``C`` = the coordinates off the support (``delta_C = 0``), ``sigma`` the signs on the support ``S``,
``G_S = -lambda sigma_S``, ``G_C = nu``. With ``w = Sigma sigma``, ``u_C = v_C`` gives ``nu = K (v_C + lambda w_C)
= a + lambda b`` and ``delta = p + lambda q`` (``p = Sigma a - v``, ``q = Sigma b - w``); the budget is
``eps(lambda) = sigma^T p + lambda sigma^T q``, decreasing in ``lambda``. Going up from ``lambda = 0``: a support
coordinate joins ``C`` when ``delta_i`` reaches 0; a coordinate of ``C`` leaves it (joins the support with
``sigma_i = -sign nu_i``) when ``|nu_i| = lambda``; the path stops at the ``lambda`` with ``eps(lambda) = eps``.

The path only *proposes* the final face (the inverse updates lose accuracy at condition numbers near 1e8): the
callers solve that face exactly and check it with the primal-dual active-set step and the certificate. A row whose
path breaks down (a non-positive Schur complement, more than ``cap`` indices in ``C``, more than ``max_steps``
events) is returned as not settled.
"""

from __future__ import annotations

import numpy as np

from .common import _CHUNK


class _PaddedInverse:
    """``K = M_CC^{-1}`` per row for index sets ``C`` stored in slots (``idx``, ``-1`` for an empty slot; empty
    rows and columns of ``K`` are zero), updated by rank-one steps. The slot capacity grows (8 at a time) up to
    ``cap``."""

    def __init__(self, M: np.ndarray, m: int, cap: int):
        self.M, self.cap = M, cap
        self.K = np.zeros((m, min(cap, 8), min(cap, 8)))
        self.idx = np.full((m, self.K.shape[1]), -1, dtype=np.int64)

    def take(self, keep: np.ndarray) -> None:
        self.K, self.idx = self.K[keep], self.idx[keep]

    def _grow(self) -> bool:
        m, c = self.idx.shape
        if c >= self.cap:
            return False
        c2 = min(c + 8, self.cap)
        K = np.zeros((m, c2, c2))
        K[:, :c, :c] = self.K
        self.K = K
        self.idx = np.concatenate([self.idx, np.full((m, c2 - c), -1, dtype=np.int64)], axis=1)
        return True

    def update(self, add: np.ndarray, coord: np.ndarray, slot: np.ndarray,
               live: np.ndarray | None = None) -> np.ndarray:
        """Per row (where ``live``): add coordinate ``coord`` to ``C`` (where ``add``) or remove the index in slot
        ``slot``. Returns ``ok`` (False where the set is full or the Schur complement is not positive)."""
        if live is not None:
            add = add & live
        valid = self.idx >= 0
        if np.any(add & valid.all(axis=1)):
            self._grow()
            valid = self.idx >= 0
        m, c = self.idx.shape
        rows = np.arange(m)
        K = self.K
        empty = np.argmax(~valid, axis=1)
        full = valid.all(axis=1)
        cc = self.M[np.where(valid, self.idx, 0), coord[:, None]] * valid
        w = np.matmul(K, cc[:, :, None])[:, :, 0]
        mjj = self.M[coord, coord]
        gamma = mjj - np.sum(cc * w, axis=1)
        ok = ~add | (~full & (gamma > 1e-14 * np.abs(mjj)))
        s = np.where(add, 0, slot)
        kss = K[rows, s, s]
        ok &= add | (kss > 0.0)
        if live is not None:
            ok |= ~live
        act = ok if live is None else ok & live
        x = np.where(add[:, None], w, K[rows, s, :])
        ea = np.flatnonzero(add & act)
        x[ea, empty[ea]] = -1.0
        piv = np.where(add, gamma, kss)
        coef = np.where(act, np.where(add, 1.0, -1.0) / np.where(act, piv, 1.0), 0.0)
        K += (coef[:, None] * x)[:, :, None] * x[:, None, :]
        er = np.flatnonzero(~add & act)
        K[er, s[er], :] = 0.0
        K[er, :, s[er]] = 0.0
        self.idx[er, s[er]] = -1
        self.idx[ea, empty[ea]] = coord[ea]
        return ok

    def solve(self, *R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``K r_C`` for each row of each ``(m, d)`` array in ``R``: ``(Y, F)``, ``Y`` ``(m, slots, len(R))`` on
        the slots (0 on empty ones) and ``F`` ``(len(R) m, d)`` the stacked results scattered back (0 off ``C``)."""
        m, d = R[0].shape
        valid = self.idx >= 0
        gather = np.where(valid, self.idx, 0)
        rc = np.stack([np.take_along_axis(r, gather, axis=1) * valid for r in R], axis=2)
        Y = np.matmul(self.K, rc)
        F = np.zeros((len(R) * m, d + 1))
        scatter = np.where(valid, self.idx, d)
        for t in range(len(R)):
            np.put_along_axis(F[t * m:(t + 1) * m], scatter, Y[:, :, t], axis=1)
        return Y, F[:, :d]


def _chunks(n: int, cap: int) -> list[slice]:
    step = max(1, 2 * _CHUNK // (cap * cap))  # K at full capacity: at most 128 MB
    return [slice(a, min(a + step, n)) for a in range(0, n, step)]


def _roots(x: np.ndarray, cur: np.ndarray, lastmask: np.ndarray, down: bool) -> np.ndarray:
    """The finite roots ``x`` strictly beyond ``cur`` in the direction of the path (below it and positive if
    ``down``, above it if not), else ``-inf`` / ``inf``. Where ``lastmask`` (the index that just changed, whose
    root at ``cur`` was just crossed) the root must lie beyond ``cur`` by a relative ``1e-9``."""
    c = cur[:, None]
    if down:
        lim = np.where(lastmask, c * (1.0 - 1e-9), c)
        return np.where(np.isfinite(x) & (x < lim) & (x > 0.0), x, -np.inf)
    lim = np.where(lastmask, c * (1.0 + 1e-9), c)
    return np.where(np.isfinite(x) & (x > lim), x, np.inf)


def box_path(Sig: np.ndarray, V: np.ndarray, eps: float, cap: int,
             max_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The box path (module docstring) for rows with ``||v||_inf > eps``: ``(up, lo, ok, steps)``, the proposed
    sets at ``+eps`` / ``-eps`` per row, whether the path reached ``eps``, and the number of events."""
    n, d = V.shape
    up, lo = np.zeros((n, d), dtype=bool), np.zeros((n, d), dtype=bool)
    ok, steps = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    for sl in _chunks(n, cap):
        up[sl], lo[sl], ok[sl], steps[sl] = _box_path_chunk(Sig, V[sl], eps, cap, max_steps)
    return up, lo, ok, steps


def _finished(live: np.ndarray, it: int, max_steps: int, steps: np.ndarray, act: np.ndarray) -> bool:
    """No row left on the path, or the event budget spent (the rows left keep ``steps = it``, not reached)."""
    if live.any() and it < max_steps:
        return False
    steps[act[live]] = it
    return True


def _compact(inv: _PaddedInverse, keep: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray] | tuple[np.ndarray, ...]:
    """Drop the rows that left the path from ``inv`` and from every per-row array, once they are 15 % of the rows
    (until then they wait in place, frozen)."""
    if keep.sum() >= 0.85 * keep.size:
        return arrays
    inv.take(keep)
    return [z[keep] for z in arrays]


def _pick(full: np.ndarray, slots: np.ndarray, idx: np.ndarray, down: bool) -> tuple[np.ndarray, ...]:
    """The next event per row from the roots on the coordinates off ``C`` (``full``) and on the slots of ``C``:
    ``(coordinate, root, in_C, slot)``."""
    rows = np.arange(full.shape[0])
    arg = np.argmax if down else np.argmin
    jf, js = arg(full, axis=1), arg(slots, axis=1)
    vf, vs = full[rows, jf], slots[rows, js]
    inC = vs > vf if down else vs < vf
    return np.where(inC, idx[rows, js], jf), np.where(inC, vs, vf), inC, js


def _box_path_chunk(Sig, V, eps, cap, max_steps):
    n, d = V.shape
    up, lo = np.zeros((n, d), dtype=bool), np.zeros((n, d), dtype=bool)
    ok, steps = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    inv = _PaddedInverse(Sig, n, cap)
    act = np.arange(n)
    Va = V.copy()
    S = np.zeros((n, d))  # signs on C, 0 elsewhere
    alpha, beta = -V.copy(), np.zeros((n, d))
    Y = np.zeros((n, inv.idx.shape[1], 2))  # G_C = a + eps b on the slots
    cur = np.full(n, np.inf)
    last = np.full(n, -1)
    live = np.ones(n, dtype=bool)
    cols = np.arange(d)
    for it in range(max_steps + 1):
        m = act.size
        rows = np.arange(m)
        inC = S != 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            jp = alpha / (1.0 - beta)  # delta_i = eps: joins at +eps
            jm = -alpha / (1.0 + beta)  # delta_i = -eps
            lv = -Y[:, :, 0] / Y[:, :, 1]  # the multiplier of a bound reaches 0
        lastF = cols[None, :] == last[:, None]
        full = np.where(inC, -np.inf, np.maximum(_roots(jp, cur, lastF, True), _roots(jm, cur, lastF, True)))
        slots = _roots(lv, cur, inv.idx == last[:, None], True)
        j, nxt, leave, slot = _pick(full, slots, inv.idx, True)
        stop = live & (nxt <= eps)
        fin = act[stop]
        up[fin], lo[fin], ok[fin], steps[fin] = S[stop] > 0, S[stop] < 0, True, it
        live &= ~stop
        if _finished(live, it, max_steps, steps, act):
            break
        act, Va, S, alpha, beta, cur, last, j, nxt, leave, slot, live = _compact(
            inv, live, act, Va, S, alpha, beta, cur, last, j, nxt, leave, slot, live)
        rows = np.arange(act.size)
        good = inv.update(~leave, j, slot, live)
        dj = alpha[rows, j] + nxt * beta[rows, j]
        S[rows, j] = np.where(live, np.where(leave, 0.0, np.where(dj > 0.0, 1.0, -1.0)), S[rows, j])
        cur, last = np.where(live, nxt, cur), np.where(live, j, last)
        bad = live & ~good
        steps[act[bad]] = it + 1
        live &= good
        Y, F = inv.solve(Va, S)
        AB = F @ Sig
        alpha, beta = AB[:act.size] - Va, AB[act.size:]
    return up, lo, ok, steps


def l1_path(Sig: np.ndarray, V: np.ndarray, eps: float, cap: int, max_steps: int,
            start: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
    """The L1 path (module docstring) for rows with ``||v||_1 > eps``: ``(S, sigma, ok, steps)``, the proposed
    support and signs per row, whether the path reached ``eps``, and the number of events.

    ``start = (sigma, lambda)``: a point on the path per row (an exact face solution for a budget above ``eps``,
    ``sigma`` zero off the support); default the top, ``sigma = -sign v``, ``lambda = 0``."""
    n, d = V.shape
    sig0, lam0 = (-np.sign(V), np.zeros(n)) if start is None else start
    S, sig = np.zeros((n, d), dtype=bool), np.zeros((n, d))
    ok, steps = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    for sl in _chunks(n, cap):
        S[sl], sig[sl], ok[sl], steps[sl] = _l1_path_chunk(Sig, V[sl], eps, cap, max_steps, sig0[sl], lam0[sl])
    return S, sig, ok, steps


def _l1_path_chunk(Sig, V, eps, cap, max_steps, sig0, lam0):
    n, d = V.shape
    Sout, sig_out = np.zeros((n, d), dtype=bool), np.zeros((n, d))
    ok, steps = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    inv = _PaddedInverse(Sig, n, cap)
    act = np.arange(n)
    Va = V.copy()
    sig = sig0.copy()
    good = np.ones(n, dtype=bool)
    off = sig == 0.0
    order = np.argsort(~off, axis=1, kind="stable")  # per row, the coordinates of C first
    for t in range(int(off.sum(axis=1).max(initial=0))):
        add = good & (off.sum(axis=1) > t)
        good &= inv.update(add, order[:, t], np.zeros(n, dtype=np.int64), add)
    cur = lam0.astype(np.float64).copy()
    last = np.full(n, -1)
    w = sig @ Sig
    live = good.copy()
    steps[~good] = 0
    cols = np.arange(d)
    for it in range(max_steps + 1):
        m = act.size
        rows = np.arange(m)
        Y, F = inv.solve(Va, w)
        PQ = F @ Sig
        p, q = PQ[:m] - Va, PQ[m:] - w
        inC = sig == 0.0
        sp, sq = np.sum(sig * p, axis=1), np.sum(sig * q, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            lam_stop = (eps - sp) / sq
            leave = -p / q  # a support coordinate reaches 0
            jneg = Y[:, :, 0] / (1.0 - Y[:, :, 1])  # nu_i = lambda: joins the support with sigma_i = -1
            jpos = -Y[:, :, 0] / (1.0 + Y[:, :, 1])  # nu_i = -lambda: sigma_i = +1
        lastS = inv.idx == last[:, None]
        full = np.where(inC, np.inf, _roots(leave, cur, cols[None, :] == last[:, None], False))
        slots = np.where(inv.idx >= 0, np.minimum(_roots(jneg, cur, lastS, False), _roots(jpos, cur, lastS, False)),
                         np.inf)
        j, nxt, join, slot = _pick(full, slots, inv.idx, False)
        stop = live & (lam_stop <= nxt) & np.isfinite(lam_stop) & (sq < 0.0)
        fin = act[stop]
        Sout[fin], sig_out[fin], ok[fin], steps[fin] = ~inC[stop], sig[stop], True, it
        dead = live & ~stop & ~np.isfinite(nxt)
        steps[act[dead]] = it
        live &= ~stop & ~dead
        if _finished(live, it, max_steps, steps, act):
            break
        act, Va, sig, cur, last, j, nxt, join, slot, w, Y, live = _compact(
            inv, live, act, Va, sig, cur, last, j, nxt, join, slot, w, Y, live)
        rows = np.arange(act.size)
        nu = Y[rows, slot, 0] + nxt * Y[rows, slot, 1]
        good = inv.update(~join, j, slot, live)
        old_s = sig[rows, j]
        new_s = np.where(live, np.where(join, np.where(nu > 0.0, -1.0, 1.0), 0.0), old_s)
        sig[rows, j] = new_s
        w += (new_s - old_s)[:, None] * Sig[j]
        cur, last = np.where(live, nxt, cur), np.where(live, j, last)
        bad = live & ~good
        steps[act[bad]] = it + 1
        live &= good
    return Sout, sig_out, ok, steps
