r"""Exact, batched likelihood *raising* over the L-infinity box and the L1 ball: active sets with a KKT certificate.

For a point ``v = x - mu`` and precision ``P`` (symmetric positive definite) the raising attack (R3) solves the
convex QP

.. math::  \min_{\|\delta\| \le \varepsilon} \; f(\delta) = g^T\delta + \tfrac12 \delta^T P \delta ,
           \qquad g = P v ,

i.e. ``min (v + delta)^T P (v + delta)`` (the NLL change is ``f``). ``G = P (v + delta)`` is the gradient.

**Box** (``|delta_i| <= eps``). KKT: ``G_i = 0`` where ``|delta_i| < eps``, ``G_i <= 0`` where ``delta_i = eps``,
``G_i >= 0`` where ``delta_i = -eps``. Given the sets ``A+`` (at ``+eps``) and ``A-`` (at ``-eps``), the free
part solves ``P_FF delta_F = -g_F - P_FA delta_A``. The primal-dual active-set method (Hintermueller, Ito &
Kunisch 2002, a semismooth Newton method on ``delta = clip(delta - G / c)``) updates
``A+ = {lambda_i + c_i (delta_i - eps) > 0}``, ``A- = {lambda_i + c_i (delta_i + eps) < 0}`` with
``lambda = -G`` on the active set, ``0`` on the free one and ``c = diag P``. When the sets repeat, the iterate is an
exact KKT point (to the rounding of one linear solve): the method is finite when it terminates.

**L1 ball** (``||delta||_1 <= eps``). If ``||v||_1 <= eps`` the unconstrained minimiser ``delta = -v`` is feasible.
Otherwise the constraint is active with multiplier ``lambda > 0``: on the support ``S`` with signs ``sigma``,
``G_S = -lambda sigma``, ``|G_i| <= lambda`` off ``S`` and ``sigma^T delta_S = eps``, i.e. the bordered system

.. math::  \begin{pmatrix} P_{SS} & \sigma \\ \sigma^T & 0 \end{pmatrix}
           \begin{pmatrix} \delta_S \\ \lambda \end{pmatrix} = \begin{pmatrix} -g_S \\ \varepsilon \end{pmatrix}.

The active-set update is the semismooth Newton rule for ``delta = soft(delta - G / c, lambda / c)``: an index
joins ``S`` (sign ``-sign G_i``) where ``|G_i| > lambda``, and leaves it where ``sigma_i delta_i < 0``; the first
support and signs come from the same problem with ``P`` replaced by its diagonal (solved exactly by sorting).

Both iterations run on the whole batch at once, rows leaving it as their sets settle. Each face system is solved
in the smaller of two forms: on the free coordinates, or on the fixed ones through ``Sigma = P^{-1}`` (with
``Sigma g = v``); the systems are sorted by size, padded with identity rows and stacked into ``np.linalg.solve``.

**Finite termination.** The primal-dual iteration can cycle when ``P`` is far from an M-matrix (seen at
condition numbers 1e4-1e8). Rows whose sets have not settled after a few iterations continue (box: after a few
batched projected Newton steps, Bertsekas 1982) with the primal active-set method (Nocedal & Wright, Alg. 16.3),
one row at a time from a feasible warm start: ``f`` decreases strictly between face minima, so no working set
repeats and it ends, in finitely many steps, at a KKT point.

**Certificate.** For any feasible ``delta`` convexity gives ``f(delta) - min f <= G^T delta + eps ||G||_*``
(the Frank-Wolfe gap, ``||.||_*`` the dual norm). It is summed termwise from non-negative pieces
(``G_i delta_i + eps |G_i|`` for the box, ``G_i delta_i + |delta_i| ||G||_inf`` plus
``(eps - ||delta||_1) ||G||_inf`` for L1), so a KKT point yields a gap of rounding size. The returned ``kkt`` is
that gap divided by its natural rounding scale ``(eps + ||delta||) |P| (|v| + |delta|)``, summed the same way: a
componentwise backward error, at most ~``d`` units of rounding for an exact answer, independent of the condition
number of ``P``. A row that reaches no KKT point within the iteration limits or whose ``kkt`` exceeds ``kkt_tol``
is reported in ``certified = False`` for the caller's fallback (none was seen in the tests and benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RaiseResult", "raise_box", "raise_l1", "frank_wolfe_gap", "DEFAULT_KKT_TOL"]

DEFAULT_KKT_TOL = 1e-12
_CHUNK = 1 << 23  # float64 entries per stacked block of linear systems (64 MB)
_ROUND = 64 * float(np.finfo(np.float64).eps)  # sign tests on computed gradients allow this relative rounding


@dataclass(frozen=True)
class RaiseResult:
    """The minimisers of a batch of raising QPs with their certificates.

    Attributes
    ----------
    D : ``(n, d)`` the feasible ``delta`` per row (the optimum where ``certified``).
    value : ``(n,)`` ``f(delta) = g^T delta + delta^T P delta / 2``.
    gap : ``(n,)`` the Frank-Wolfe bound ``f(delta) - min f <= gap`` (so ``value - gap`` is a certified lower
        bound on the optimum).
    kkt : ``(n,)`` ``gap`` relative to its rounding scale (see the module docstring).
    certified : ``(n,)`` bool, the active sets settled and ``kkt <= kkt_tol``.
    iterations : ``(n,)`` active-set iterations per row (0 for interior rows).
    """

    D: np.ndarray
    value: np.ndarray
    gap: np.ndarray
    kkt: np.ndarray
    certified: np.ndarray
    iterations: np.ndarray


def _stacked_solve(M: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``np.linalg.solve`` on a stack of systems, singular slices returned as NaN rows."""
    try:
        return np.linalg.solve(M, R[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.full(R.shape, np.nan)
        for i in range(M.shape[0]):
            try:
                out[i] = np.linalg.solve(M[i], R[i])
            except np.linalg.LinAlgError:
                pass
        return out


def _rows_per_chunk(d: int) -> int:
    return max(1, _CHUNK // ((d + 1) * (d + 1)))


# ---------------------------------------------------------------------------------------------- certificate
def frank_wolfe_gap(P: np.ndarray, V: np.ndarray, D: np.ndarray, eps: float,
                    norm: float) -> tuple[np.ndarray, np.ndarray]:
    """``(gap, kkt)`` per row: the Frank-Wolfe bound ``f(delta) - min f <= gap`` and ``gap`` over its rounding scale.

    ``norm`` is ``np.inf`` (box) or ``1`` (L1 ball); ``D`` must be feasible. See the module docstring.
    """
    Y = V + D
    G = Y @ P
    Gs = (np.abs(V) + np.abs(D)) @ np.abs(P)  # magnitude of the terms of G (v + delta itself is rounded)
    if norm == np.inf:
        gap = np.sum(G * D + eps * np.abs(G), axis=1)
        scale = np.sum(Gs * (np.abs(D) + eps), axis=1)
    else:
        gmax = np.max(np.abs(G), axis=1)
        l1 = np.sum(np.abs(D), axis=1)
        gap = np.sum(G * D + np.abs(D) * gmax[:, None], axis=1) + np.maximum(eps - l1, 0.0) * gmax
        scale = np.max(Gs, axis=1) * (eps + l1) + np.sum(Gs * np.abs(D), axis=1)
    gap = np.maximum(gap, 0.0)
    kkt = np.divide(gap, scale, out=np.zeros_like(gap), where=scale > 0)
    return gap, kkt


def _finish(P: np.ndarray, V: np.ndarray, D: np.ndarray, eps: float, norm: float, settled: np.ndarray,
            iters: np.ndarray, kkt_tol: float) -> RaiseResult:
    value = np.einsum("ij,ij->i", D @ P, V + 0.5 * D)
    gap, kkt = frank_wolfe_gap(P, V, D, eps, norm)
    return RaiseResult(D, value, gap, kkt, settled & (kkt <= kkt_tol), iters)


def _check(P: np.ndarray, V: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, float]:
    P = np.asarray(P, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"P must be a square matrix, got shape {P.shape}")
    if V.ndim != 2 or V.shape[1] != P.shape[0]:
        raise ValueError(f"V must have shape (n, {P.shape[0]}), got {V.shape}")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return 0.5 * (P + P.T), V, float(eps)


# ---------------------------------------------------------------------------------------------- box
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
                y = _padded_solve(P[I[:, :, None], I[:, None, :]], valid, rhs[rows, I])
                Dr = fixed[r].copy()
                Dr[rows, I] = np.where(valid, y, Dr[rows, I])
            else:
                J, valid = _padded(d - k[r], ~free[r])
                rhs = -(fixed[r] + V[r])
                nu = np.zeros((r.size, d))
                nu[rows, J] = np.where(valid, _padded_solve(Sig[J[:, :, None], J[:, None, :]], valid, rhs[rows, J]),
                                       0.0)
                Dr = np.where(free[r], -V[r] - nu @ Sig, fixed[r])
            out[r] = Dr
    return out


def _box_pdas(P: np.ndarray, V: np.ndarray, eps: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The primal-dual active-set iteration on every row of ``V``: ``(X, settled, iterations)``; ``X`` is the last
    iterate (unclipped: infeasible where the sets have not settled)."""
    n, d = V.shape
    c = np.diag(P)
    G0 = V @ P
    Sig = np.linalg.inv(P)
    Sig = 0.5 * (Sig + Sig.T)
    X = -V.copy()
    lam = np.zeros_like(X)
    up = lam + c * (X - eps) > 0.0
    lo = (lam + c * (X + eps) < 0.0) & ~up
    act = np.arange(n)
    done = np.zeros(n, dtype=bool)
    iters = np.zeros(n, dtype=np.int64)
    for it in range(1, max_iter + 1):
        X[act] = _box_solve(P, Sig, V[act], G0[act], up[act], lo[act], eps)
        iters[act] = it
        lam_a = -(G0[act] + X[act] @ P)
        lam_a[~(up[act] | lo[act])] = 0.0
        nup = lam_a + c * (X[act] - eps) > 0.0
        nlo = (lam_a + c * (X[act] + eps) < 0.0) & ~nup
        same = np.all(nup == up[act], axis=1) & np.all(nlo == lo[act], axis=1)
        same &= np.all(np.isfinite(X[act]), axis=1)
        done[act[same]] = True
        up[act], lo[act] = nup, nlo
        act = act[~same]
        if act.size == 0:
            break
    return np.nan_to_num(X), done, iters


def _quad(P: np.ndarray, G0: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``f = g^T x + x^T P x / 2`` per row."""
    return np.einsum("ij,ij->i", X, G0 + 0.5 * (X @ P))


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
              pn_iter: int = 20, kkt_tol: float = DEFAULT_KKT_TOL) -> RaiseResult:
    """``argmin g^T delta + delta^T P delta / 2`` s.t. ``|delta_i| <= eps`` for every row ``v`` of ``V`` (``g = P v``).

    Batched primal-dual active set (at most ``pdas_iter`` iterations: fast, but it can cycle when ``P`` is far from
    an M-matrix); on the rows whose sets did not settle, the batched projected Newton method (at most ``pn_iter``
    iterations, a descent method); on the rows still uncertified, the finite primal active-set method per row
    (at most ``max_iter`` iterations, default ``4 d + 20``), warm-started there. Rows with ``||v||_inf <= eps`` get
    ``delta = -v`` (interior). Pure arrays, no validation beyond shapes.
    """
    P, V, eps = _check(P, V, eps)
    n, d = V.shape
    max_iter = 4 * d + 20 if max_iter is None else int(max_iter)
    D = -V.copy()
    iters = np.zeros(n, dtype=np.int64)
    settled = np.ones(n, dtype=bool)
    rows = np.flatnonzero(np.max(np.abs(V), axis=1) > eps)
    if rows.size:
        X, done, it = _box_pdas(P, V[rows], eps, pdas_iter)
        X = np.clip(X, -eps, eps)
        iters[rows] = it
        rest = np.flatnonzero(~done)
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


# ---------------------------------------------------------------------------------------------- L1
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


def _size_groups(rows: np.ndarray, size: np.ndarray, step: int, group: int = 64) -> list[np.ndarray]:
    """``rows`` sorted by system size and cut into groups of at most ``min(step, group)``: little padding."""
    order = rows[np.argsort(size, kind="stable")]
    width = max(1, min(step, group))
    return [order[a:a + width] for a in range(0, order.size, width)]


def _padded(k: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the indices of ``mask`` first (``(m, kmax)``, padded with other indices) and the validity mask."""
    kmax = max(int(k.max()), 1)
    order = np.argsort(~mask, axis=1, kind="stable")[:, :kmax]
    return order, np.arange(kmax)[None, :] < k[:, None]


def _bordered(B: np.ndarray, border: np.ndarray, corner: np.ndarray, valid: np.ndarray, R: np.ndarray,
              last: np.ndarray) -> np.ndarray:
    """Solve ``[[B, b], [b^T, c]] [y; t] = [R; last]`` per row, the invalid (padding) part of ``B`` replaced by the
    identity (and zeroed in ``b`` and ``R``, so that ``y`` is 0 there)."""
    m, k = valid.shape
    vf = valid.astype(np.float64)
    M = np.empty((m, k + 1, k + 1))
    Mk = M[:, :k, :k]
    Mk[...] = B
    if not valid.all():
        Mk *= vf[:, :, None]
        Mk *= vf[:, None, :]
    idx = np.arange(k)
    M[:, idx, idx] += 1.0 - vf
    M[:, :k, k] = M[:, k, :k] = border * vf
    M[:, k, k] = corner
    return _stacked_solve(M, np.concatenate([R * vf, last[:, None]], axis=1))


def _l1_solve(P: np.ndarray, Sig: np.ndarray, V: np.ndarray, G0: np.ndarray, S: np.ndarray, sig: np.ndarray,
              eps: float) -> tuple[np.ndarray, np.ndarray]:
    r"""``(delta, lambda)`` of the face problem ``min f`` s.t. ``delta_i = 0`` off ``S``, ``sigma_S^T delta_S = eps``.

    Rows with a small support solve the bordered system on ``S`` (size ``|S| + 1``). Rows with a large one use the
    complement: with ``Sigma = P^{-1}`` and ``Sigma g = v``, stationarity ``P delta + g + E nu + lambda sigma = 0``
    (``E`` the columns off ``S``) gives ``delta = -v - Sigma (E nu + lambda sigma)``, and the constraints give
    ``[[Sigma_CC, (Sigma sigma)_C], [., sigma^T Sigma sigma]] [nu; lambda] = [-v_C; -eps - sigma^T v]``
    (size ``|C| + 1``, ``C`` the complement). Systems are padded to the largest size in the group and stacked.
    """
    m, d = S.shape
    D = np.zeros((m, d))
    lam = np.zeros(m)
    k = S.sum(axis=1)
    small = k <= d - k
    step = _rows_per_chunk(d)
    for group, direct in ((np.flatnonzero(small), True), (np.flatnonzero(~small), False)):
        for r in _size_groups(group, np.minimum(k, d - k)[group], step):
            Sr, sr = S[r], sig[r] * S[r]
            rows = np.arange(r.size)[:, None]
            if direct:
                I, valid = _padded(k[r], Sr)
                sol = _bordered(P[I[:, :, None], I[:, None, :]], sr[rows, I], np.zeros(r.size), valid,
                                -G0[r][rows, I], np.full(r.size, eps))
                Dr = np.zeros((r.size, d))
                Dr[rows, I] = np.where(valid, sol[:, :-1], 0.0)
            else:
                J, valid = _padded(d - k[r], ~Sr)
                w = sr @ Sig
                Vr = V[r]
                sol = _bordered(Sig[J[:, :, None], J[:, None, :]], w[rows, J], np.sum(sr * w, axis=1), valid,
                                -Vr[rows, J], -eps - np.sum(sr * Vr, axis=1))
                nu = np.zeros((r.size, d))
                nu[rows, J] = np.where(valid, sol[:, :-1], 0.0)
                Dr = np.where(Sr, -Vr - nu @ Sig - sol[:, -1:] * w, 0.0)
            D[r], lam[r] = Dr, sol[:, -1]
    return D, lam


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


def raise_l1(P: np.ndarray, V: np.ndarray, eps: float, *, max_iter: int = 12,
             kkt_tol: float = DEFAULT_KKT_TOL) -> RaiseResult:
    """``argmin g^T delta + delta^T P delta / 2`` s.t. ``||delta||_1 <= eps`` for every row ``v`` of ``V``.

    Batched primal-dual active set on the support and signs (module docstring), at most ``max_iter`` iterations;
    rows whose sets did not settle continue with the finite primal active-set method, one row at a time, from a
    feasible point made of the last iterate. Rows with ``||v||_1 <= eps`` get ``delta = -v`` (interior).
    """
    P, V, eps = _check(P, V, eps)
    n, d = V.shape
    D = -V.copy()
    iters = np.zeros(n, dtype=np.int64)
    settled = np.ones(n, dtype=bool)
    rows = np.flatnonzero(np.sum(np.abs(V), axis=1) > eps)
    if rows.size:
        G0 = V[rows] @ P
        Sig = np.linalg.inv(P)
        Sig = 0.5 * (Sig + Sig.T)
        S, sig = _diag_l1_support(P, G0, eps)
        X = np.zeros_like(G0)
        act = np.arange(rows.size)
        done = np.zeros(rows.size, dtype=bool)
        for it in range(1, max_iter + 1):
            Xa, lam = _l1_solve(P, Sig, V[rows[act]], G0[act], S[act], sig[act], eps)
            X[act] = Xa
            iters[rows[act]] = it
            G = G0[act] + Xa @ P
            Sa, sa = S[act], sig[act]
            leave = Sa & (sa * Xa < 0.0)
            join = ~Sa & (np.abs(G) > lam[:, None])
            nS = (Sa & ~leave) | join
            nsig = np.where(join, np.where(G > 0.0, -1.0, 1.0), sa)
            same = ~np.any(leave | join, axis=1) & (lam >= 0.0) & np.all(np.isfinite(Xa), axis=1)
            nS[~nS.any(axis=1), 0] = True  # keep the system nonsingular (a row at zero support restarts)
            done[act[same]] = True
            S[act], sig[act] = nS, nsig
            act = act[~same]
            if act.size == 0:
                break
        X = np.nan_to_num(X)
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
