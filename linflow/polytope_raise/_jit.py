r"""Compiled per-row solves for the L1 ball (:func:`linflow.polytope_raise.l1._l1_pdas`), used
where ``numba`` is installed (a core dependency: the numpy path stays below 100x per-point cvxpy at eps 0.1); the
batched numpy path runs the same iteration (up to rounding) and is the fallback.

For each row, with ``S`` its support, ``sigma`` its signs and ``C`` the complement, the face problem
``min g^T delta + delta^T P delta / 2`` s.t. ``delta_C = 0``, ``sigma_S^T delta_S = eps`` is solved in one of two
equivalent forms (the smaller system):

* direct: ``[[P_SS, c sigma_S], [c sigma_S^T, 0]] [delta_S; lambda / c] = [-g_S; c eps]`` (``c = 2 max_S P_ii``);
  ``G = g + P delta``;
* complement: with ``Sigma = P^{-1}`` and ``w = Sigma sigma``,
  ``[[Sigma_CC, w_C], [w_C^T, sigma^T w]] [nu; lambda] = [-v_C; -eps - sigma^T v]`` (the Gram matrix of the columns
  ``e_i``, ``i in C``, and ``sigma_S`` in the inner product ``Sigma``: positive definite, solved by Cholesky, LU if
  rounding makes a pivot non-positive);
  ``delta_S = -(v + Sigma_{S,C} nu + lambda w_S)`` and ``G = P (v + delta) = -(E nu + lambda sigma)``.

A singular system leaves the row's ``delta`` and ``lambda`` NaN (the caller treats it as not settled). ``P`` and
``Sigma`` are symmetric: the loops read them by rows.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import numpy as np

# numba is imported (and the loops compiled, or loaded from numba's cache) on the first call, not on
# ``import linflow``: the import alone costs ~0.15 s.
AVAILABLE = importlib.util.find_spec("numba") is not None


def _face_one(P, Sig, v, g0, Sr, sr, eps, idx, x, G):  # pragma: no cover - compiled
    """One row's face solve into ``x`` and ``G``; returns ``lambda`` (NaN, with ``x``, ``G`` NaN, if singular)."""
    d = v.shape[0]
    k = 0
    for i in range(d):
        if Sr[i]:
            k += 1
    x[:] = 0.0
    if k <= d - k + 8:
        n = 0
        c = 0.0
        for i in range(d):
            if Sr[i]:
                idx[n] = i
                n += 1
                if P[i, i] > c:
                    c = P[i, i]
        c *= 2.0
        M, b = _bordered(P, idx, k, sr, c, g0)
        b[k] = c * eps
        y = _solve_or_nan(M, b, x, G)
        if y.shape[0] == 0:
            return np.nan
        for a in range(k):
            x[idx[a]] = y[a]
        for i in range(d):
            G[i] = g0[i]
        for a in range(k):  # P symmetric: rows, contiguous
            ia, ya = idx[a], y[a]
            for i in range(d):
                G[i] += P[ia, i] * ya
        return y[k] * c
    q = 0
    for i in range(d):
        if not Sr[i]:
            idx[q] = i
            q += 1
    w = np.zeros(d)
    for j in range(d):
        if Sr[j]:
            sj = sr[j]
            for i in range(d):
                w[i] += Sig[j, i] * sj
    corner = 0.0
    sv = 0.0
    for j in range(d):
        if Sr[j]:
            corner += sr[j] * w[j]
            sv += sr[j] * v[j]
    M, b = _bordered(Sig, idx, q, w, 1.0, v)
    M[q, q] = corner
    b[q] = -eps - sv
    y = np.empty(q + 1)
    if not _chol_solve(M, b, y):  # positive definite in exact arithmetic; LU where rounding says otherwise
        y = _solve_or_nan(M, b, x, G)
        if y.shape[0] == 0:
            return np.nan
    t = y[q]
    u = np.empty(d)
    for i in range(d):
        u[i] = v[i] + t * w[i]
    for a in range(q):
        ia, ya = idx[a], y[a]
        for i in range(d):
            u[i] += Sig[ia, i] * ya
    for i in range(d):
        if Sr[i]:
            x[i] = -u[i]
            G[i] = -t * sr[i]
    for a in range(q):
        G[idx[a]] = -y[a]
    return t


def _bordered(A, idx, k, border, scale, rhs):  # pragma: no cover - compiled
    """The bordered system ``[[A_SS, scale border_S], [scale border_S^T, 0]] y = [-rhs_S, 0]`` over the ``k``
    coordinates ``S = idx[:k]``; the caller sets the corner and the last right-hand side."""
    M = np.zeros((k + 1, k + 1))
    b = np.zeros(k + 1)
    for a in range(k):
        ia = idx[a]
        for e in range(k):
            M[a, e] = A[ia, idx[e]]
        M[a, k] = scale * border[ia]
        M[k, a] = scale * border[ia]
        b[a] = -rhs[ia]
    return M, b


def _solve_or_nan(M, b, x, G):  # pragma: no cover - compiled
    """``M^{-1} b`` by LU; if ``M`` is singular, ``x`` and ``G`` are set to NaN and an empty array returned."""
    try:
        return np.linalg.solve(M, b)
    except Exception:
        x[:] = np.nan
        G[:] = np.nan
        return np.empty(0)


def _chol_solve(M, b, y):  # pragma: no cover - compiled
    """``y = M^{-1} b`` by a Cholesky factorisation (lower, built in a copy); False (``y`` undefined) if a pivot is
    not positive or not finite."""
    n = b.shape[0]
    L = np.zeros((n, n))
    for j in range(n):
        s = M[j, j]
        for p in range(j):
            s -= L[j, p] * L[j, p]
        if not s > 0.0 or not np.isfinite(s):
            return False
        ljj = np.sqrt(s)
        L[j, j] = ljj
        for i in range(j + 1, n):
            t = M[i, j]
            for p in range(j):
                t -= L[i, p] * L[j, p]
            L[i, j] = t / ljj
    for i in range(n):  # L z = b
        t = b[i]
        for p in range(i):
            t -= L[i, p] * y[p]
        y[i] = t / L[i, i]
    for i in range(n - 1, -1, -1):  # L^T y = z
        t = y[i]
        for p in range(i + 1, n):
            t -= L[p, i] * y[p]
        y[i] = t / L[i, i]
    return True


def _keep_largest(flag, viol, frac):  # pragma: no cover - compiled
    """Clear ``flag`` except at the ``ceil(frac k)`` largest ``viol`` of its ``k`` set entries (ties kept)."""
    k = 0
    for i in range(flag.shape[0]):
        if flag[i]:
            k += 1
    if k == 0:
        return
    vals = np.empty(k)
    n = 0
    for i in range(flag.shape[0]):
        if flag[i]:
            vals[n] = viol[i]
            n += 1
    vals.sort()
    thr = vals[k - int(np.ceil(frac * k))]
    for i in range(flag.shape[0]):
        if flag[i] and viol[i] < thr:
            flag[i] = False


def _pdas_rows(P, Sig, V, G0, S, sig, eps, max_iter, damp, damp_join, crawl_from):  # pragma: no cover - compiled
    """The damped primal-dual active set of :func:`linflow.polytope_raise.l1._l1_pdas`, one row at a time:
    ``(X, settled, iterations, S, sigma, lambda)``."""
    m, d = V.shape
    S = S.copy()
    sig = sig.copy()
    X = np.zeros((m, d))
    L = np.zeros(m)
    done = np.zeros(m, dtype=np.bool_)
    iters = np.zeros(m, dtype=np.int64)
    idx = np.empty(d, dtype=np.int64)
    G = np.empty(d)
    leave = np.empty(d, dtype=np.bool_)
    join = np.empty(d, dtype=np.bool_)
    vl = np.empty(d)
    vj = np.empty(d)
    for r in range(m):
        x = X[r]
        Sr = S[r]
        sr = sig[r]
        damped = False
        before1 = before2 = np.iinfo(np.int64).max  # set changes one and two iterations ago
        for it in range(1, max_iter + 1):
            lam = _face_one(P, Sig, V[r], G0[r], Sr, sr, eps[r], idx, x, G)
            L[r] = lam
            iters[r] = it
            if not np.isfinite(lam):
                break
            changes = 0
            for i in range(d):
                vl[i] = -sr[i] * x[i]
                vj[i] = abs(G[i]) - lam
                leave[i] = Sr[i] and vl[i] > 0.0
                join[i] = (not Sr[i]) and vj[i] > 0.0
                if leave[i] or join[i]:
                    changes += 1
            if changes == 0 and lam >= 0.0:
                done[r] = True
                break
            if lam < 0.0 or (changes >= before2 and it >= crawl_from):  # overshoot, crawl or 2-cycle (as numpy)
                damped = True
            before2, before1 = before1, changes
            if damped:
                _keep_largest(leave, vl, damp)
                _keep_largest(join, vj, damp_join)
            anyS = False
            for i in range(d):
                if join[i]:
                    Sr[i] = True
                    sr[i] = -1.0 if G[i] > 0.0 else 1.0
                elif leave[i]:
                    Sr[i] = False
                anyS = anyS or Sr[i]
            if not anyS:
                Sr[0] = True  # keep the system nonsingular (a row at zero support restarts)
    for r in range(m):
        for i in range(d):
            if not np.isfinite(X[r, i]):
                X[r, i] = 0.0
    return X, done, iters, S, sig, L


@cache
def _compiled():  # pragma: no cover - exercised only where numba is installed
    """The compiled ``_pdas_rows``; the helpers it calls are rebound to their compiled versions first (numba
    resolves them as globals when it compiles the caller, at its first call)."""
    global _bordered, _chol_solve, _face_one, _keep_largest, _solve_or_nan
    import numba

    jit = numba.njit(cache=True, nogil=True)
    _bordered, _chol_solve, _solve_or_nan = jit(_bordered), jit(_chol_solve), jit(_solve_or_nan)
    _face_one, _keep_largest = jit(_face_one), jit(_keep_largest)
    return jit(_pdas_rows)


def pdas_rows(P, Sig, V, G0, S, sig, eps, max_iter, damp, damp_join, crawl_from):  # pragma: no cover
    """:func:`_pdas_rows`, compiled by numba (only where :data:`AVAILABLE`)."""
    if not AVAILABLE:
        raise RuntimeError("numba is not installed (pip install numba)")
    return _compiled()(P, Sig, V, G0, S, sig, eps, max_iter, damp, damp_join, crawl_from)
