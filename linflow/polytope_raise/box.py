"""Raising over the L-infinity box (:mod:`linflow.polytope_raise`, "Box"): batched primal-dual active sets, the
homotopy path for the rows they leave, projected Newton steps, and the finite primal active-set method."""

from __future__ import annotations

import numpy as np

from .common import (
    _ROUND,
    DEFAULT_KKT_TOL,
    RaiseResult,
    _check,
    _finish,
    _padded,
    _principal,
    _quad,
    _rows_per_chunk,
    _size_groups,
    _stacked_solve,
    _stalled,
    frank_wolfe_gap,
)
from .homotopy import box_path


def _padded_solve(B: np.ndarray, valid: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Solve ``B y = R`` per row with the padding part of ``B`` replaced by the identity (``y`` is 0 there); ``B``
    is overwritten."""
    m, k = valid.shape
    vf = valid.astype(np.float64)
    M = B
    if not valid.all():
        M *= vf[:, :, None]
        M *= vf[:, None, :]
    idx = np.arange(k)
    M[:, idx, idx] += 1.0 - vf
    return _stacked_solve(M, R * vf)


def _box_solve(P: np.ndarray, Sig: np.ndarray, V: np.ndarray, G0: np.ndarray, up: np.ndarray, lo: np.ndarray,
               eps: float) -> np.ndarray:
    r"""``delta`` with ``delta_A = +-eps`` (``b_A``) and ``P_FF delta_F = -g_F - P_FA b_A``, stacked over rows.

    Rows with few free coordinates solve that system (size ``|F|``); the others the complement: with
    ``Sigma = P^{-1}`` and ``Sigma g = v``, ``delta = -v - Sigma_{:A} nu`` where ``Sigma_AA nu = -(b_A + v_A)``
    (size ``|A|``). Systems are padded to the largest size in the group.
    """
    m, d = up.shape
    fixed = np.where(up, eps, np.where(lo, -eps, 0.0))
    free = ~(up | lo)
    out = fixed.copy()
    k = free.sum(axis=1)
    small = k <= d - k
    step = _rows_per_chunk(d)
    for group, direct in ((np.flatnonzero(small & (k > 0)), True), (np.flatnonzero(~small), False)):
        for r in _size_groups(group, np.minimum(k, d - k)[group], step):
            rows = np.arange(r.size)[:, None]
            if direct:
                I, valid = _padded(k[r], free[r])
                rhs = -G0[r] - fixed[r] @ P
                y = _padded_solve(_principal(P, I), valid, rhs[rows, I])
                Dr = fixed[r].copy()
                Dr[rows, I] = np.where(valid, y, Dr[rows, I])
            else:
                J, valid = _padded(d - k[r], ~free[r])
                rhs = -(fixed[r] + V[r])
                nu = np.zeros((r.size, d))
                nu[rows, J] = np.where(valid, _padded_solve(_principal(Sig, J), valid, rhs[rows, J]),
                                       0.0)
                Dr = np.where(free[r], -V[r] - nu @ Sig, fixed[r])
            out[r] = Dr
    return out


def _box_pdas(P: np.ndarray, Sig: np.ndarray, V: np.ndarray, eps: float, max_iter: int,
              start: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The primal-dual active-set iteration on every row of ``V`` from the sets ``start = (up, lo)`` (default:
    those of the unconstrained minimiser ``-v``): ``(X, settled, iterations)``; ``X`` is the last iterate
    (unclipped: infeasible where the sets have not settled)."""
    n, d = V.shape
    c = np.diag(P)
    G0 = V @ P
    X = -V.copy()
    if start is None:
        up, lo = X - eps > 0.0, X + eps < 0.0
    else:
        up, lo = start[0].copy(), start[1] & ~start[0]
    act = np.arange(n)
    done = np.zeros(n, dtype=bool)
    iters = np.zeros(n, dtype=np.int64)
    hist = []
    for it in range(1, max_iter + 1):
        X[act] = _box_solve(P, Sig, V[act], G0[act], up[act], lo[act], eps)
        iters[act] = it
        lam_a = -(G0[act] + X[act] @ P)
        lam_a[~(up[act] | lo[act])] = 0.0
        nup = lam_a + c * (X[act] - eps) > 0.0
        nlo = (lam_a + c * (X[act] + eps) < 0.0) & ~nup
        changes = np.sum((nup != up[act]) | (nlo != lo[act]), axis=1)
        same = (changes == 0) & np.all(np.isfinite(X[act]), axis=1)
        done[act[same]] = True
        up[act], lo[act] = nup, nlo
        act = act[~same]
        if act.size == 0 or _stalled(hist, changes, it, act.size, done.size):
            break
    return np.nan_to_num(X), done, iters


def _box_projected_newton(P: np.ndarray, G0: np.ndarray, X: np.ndarray, eps: float, max_iter: int,
                          kkt_tol: float, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Bertsekas' (1982) projected Newton method from the feasible rows ``X``: a descent method, so it cannot cycle.

    With ``G = g + P x`` and ``w = min(eps / 10, ||x - clip(x - G / c)||_inf)`` the *binding* set is
    ``{x_i >= eps - w, G_i < 0} u {x_i <= -eps + w, G_i > 0}`` (``c = diag P``). The direction is Newton's on the
    free set (``P_FF p_F = -G_F``) and scaled steepest descent ``-G_i / c_i`` on the binding one; the step is
    ``x(alpha) = clip(x + alpha p)`` with the Armijo rule ``f(x) - f(x(alpha)) >= 1e-4 (alpha sum_F -G_i p_i +
    sum_B G_i (x_i - x_i(alpha)))``, ``alpha = 1, 1/2, ...``. Once the binding set is the optimal active set the
    full step solves the face exactly; a row stops when its certificate is below ``kkt_tol``.
    Returns ``(X, certified, iterations)``.
    """
    m, d = X.shape
    c = np.diag(P)
    iters = np.zeros(m, dtype=np.int64)
    ok = np.zeros(m, dtype=bool)
    act = np.arange(m)
    for it in range(1, max_iter + 1):
        _, kkt = frank_wolfe_gap(P, V[act], X[act], eps, np.inf)
        good = kkt <= kkt_tol
        ok[act[good]] = True
        act = act[~good]
        if act.size == 0:
            break
        iters[act] = it
        x, g0 = X[act], G0[act]
        G = g0 + x @ P
        w = np.minimum(0.1 * eps, np.max(np.abs(x - np.clip(x - G / c, -eps, eps)), axis=1))[:, None]
        bind = ((x >= eps - w) & (G < 0.0)) | ((x <= -eps + w) & (G > 0.0))
        free = ~bind
        ff = free.astype(np.float64)
        pb = np.where(bind, np.where(G < 0.0, eps, -eps) - x, 0.0)  # binding coordinates go to their bound
        p = pb.copy()
        idx = np.arange(d)
        step = _rows_per_chunk(d)
        for a in range(0, act.size, step):
            b = min(a + step, act.size)
            M = P[None, :, :] * ff[a:b, :, None] * ff[a:b, None, :]
            M[:, idx, idx] += 1.0 - ff[a:b]
            pf = _stacked_solve(M, -(G[a:b] + pb[a:b] @ P) * ff[a:b])
            p[a:b] = np.where(free[a:b], np.nan_to_num(pf), p[a:b])
        f0 = _quad(P, g0, x)
        alpha = np.ones(act.size)
        newx = x.copy()
        pending = np.arange(act.size)
        for _ in range(60):
            xt = np.clip(x[pending] + alpha[pending, None] * p[pending], -eps, eps)
            ft = _quad(P, g0[pending], xt)
            pred = alpha[pending] * np.sum(np.where(free[pending], -G[pending] * p[pending], 0.0), axis=1)
            pred += np.sum(np.where(bind[pending], G[pending] * (x[pending] - xt), 0.0), axis=1)
            acc = (f0[pending] - ft >= 1e-4 * np.maximum(pred, 0.0)) & (ft < f0[pending])
            newx[pending[acc]] = xt[acc]
            pending = pending[~acc]
            if pending.size == 0:
                break
            alpha[pending] *= 0.5
        X[act] = newx
    if act.size:
        _, kkt = frank_wolfe_gap(P, V[act], X[act], eps, np.inf)
        ok[act[kkt <= kkt_tol]] = True
    return X, ok, iters


def _box_primal_active_set(P: np.ndarray, g: np.ndarray, x: np.ndarray, eps: float,
                           max_iter: int) -> tuple[np.ndarray, bool, int]:
    r"""The primal active-set method (Nocedal & Wright, Alg. 16.3) for one row, from a feasible ``x``: finite.

    Working set ``W``: the coordinates at ``+-eps``. Each iteration minimises ``f`` on the face (``P_FF z_F =
    -g_F - P_FW x_W``). If ``z`` is feasible it becomes ``x`` and the multipliers ``lambda_i = -G_i`` (at
    ``+eps``) or ``G_i`` (at ``-eps``) are checked: all ``>= 0`` is optimality (KKT), else the most negative one
    leaves ``W``. Otherwise ``x`` moves towards ``z`` until the first coordinate reaches its bound (it joins ``W``).
    ``f`` decreases strictly between face minima, so no working set repeats. Returns ``(x, optimal, iterations)``.
    """
    x = x.copy()
    W = np.abs(x) >= eps
    x[W] = np.sign(x[W]) * eps
    for it in range(1, max_iter + 1):
        F = ~W
        z = x.copy()
        if F.any():
            rhs = -g[F] - P[np.ix_(F, W)] @ x[W]
            try:
                z[F] = np.linalg.solve(P[np.ix_(F, F)], rhs)
            except np.linalg.LinAlgError:
                return x, False, it
        viol = F & (np.abs(z) > eps)
        if not viol.any():
            x = z
            G = g + P @ x
            lam = np.where(W, -np.sign(x) * G, np.inf)
            k = int(np.argmin(lam))
            if lam[k] >= -_ROUND * (np.abs(P[k]) @ np.abs(x) + abs(g[k])):  # >= 0 up to the rounding of G_k
                return x, True, it
            W[k] = False
            continue
        p = z - x
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(viol, (np.sign(p) * eps - x) / p, np.inf)
        k = int(np.argmin(room))
        alpha = min(max(float(room[k]), 0.0), 1.0)
        x = np.clip(x + alpha * p, -eps, eps)
        x[k] = np.sign(p[k]) * eps
        W[k] = True
    return x, False, max_iter


def raise_box(P: np.ndarray, V: np.ndarray, eps: float, *, max_iter: int | None = None, pdas_iter: int = 12,
              pn_iter: int = 20, path_steps: int | None = None, kkt_tol: float = DEFAULT_KKT_TOL) -> RaiseResult:
    """``argmin g^T delta + delta^T P delta / 2`` s.t. ``|delta_i| <= eps`` for every row ``v`` of ``V`` (``g = P v``).

    Batched primal-dual active set from the sets of ``clip(-v)`` (at most ``pdas_iter`` iterations: fast, but it
    can cycle when ``P`` is far from an M-matrix); on the rows whose sets did not settle, the homotopy path (at
    most ``path_steps`` breakpoints, default ``4 d + 20``) proposes the face and at most 3 active-set iterations
    check it; on the rows still unsettled, the batched projected Newton method (at most ``pn_iter`` iterations, a
    descent method); on the rows still uncertified, the finite primal active-set method per row (at most
    ``max_iter`` iterations, default ``4 d + 20``), warm-started there. Rows with ``||v||_inf <= eps`` get
    ``delta = -v`` (interior); ``eps = 0`` gives ``delta = 0``. Pure arrays, no validation beyond shapes.
    """
    P, V, eps = _check(P, V, eps)
    n, d = V.shape
    max_iter = 4 * d + 20 if max_iter is None else int(max_iter)
    path_steps = 4 * d + 20 if path_steps is None else int(path_steps)
    if eps == 0.0:  # the ball is the point 0
        return _finish(P, V, np.zeros_like(V), eps, np.inf, np.ones(n, dtype=bool), np.zeros(n, dtype=np.int64),
                       kkt_tol)
    D = -V.copy()
    iters = np.zeros(n, dtype=np.int64)
    settled = np.ones(n, dtype=bool)
    rows = np.flatnonzero(np.max(np.abs(V), axis=1) > eps)
    if rows.size:
        Sig = np.linalg.inv(P)
        Sig = 0.5 * (Sig + Sig.T)
        X, done, it = _box_pdas(P, Sig, V[rows], eps, pdas_iter)
        iters[rows] = it
        rest = np.flatnonzero(~done)
        if rest.size and path_steps > 0:  # the homotopy proposes the face, the active-set step checks it
            up, lo, _, steps = box_path(Sig, V[rows[rest]], eps, min(d, 128), path_steps)
            xh, ok, it = _box_pdas(P, Sig, V[rows[rest]], eps, 3, (up, lo))
            X[rest[ok]], done[rest[ok]] = xh[ok], True
            iters[rows[rest]] += steps + it
            rest = rest[~ok]
        X = np.clip(X, -eps, eps)
        if rest.size:
            G0 = V[rows[rest]] @ P
            x0 = np.clip(-V[rows[rest]], -eps, eps)
            better = _quad(P, G0, x0) < _quad(P, G0, X[rest])
            xs = np.where(better[:, None], x0, X[rest])
            xr, ok, it2 = _box_projected_newton(P, G0, xs, eps, pn_iter, kkt_tol, V[rows[rest]])
            for j in np.flatnonzero(~ok):  # the finite method, warm-started by the projected Newton iterate
                xr[j], ok[j], k = _box_primal_active_set(P, G0[j], xr[j], eps, max_iter)
                it2[j] += k
            X[rest] = xr
            done[rest] = ok
            iters[rows[rest]] += it2
        settled[rows] = done
        D[rows] = X
    return _finish(P, V, D, eps, np.inf, settled, iters, kkt_tol)


