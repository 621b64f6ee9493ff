r"""Raising the likelihood under L1 / L-infinity budgets: exact convex QPs with a certificate (R3).

``min Delta(delta) = g^T delta + delta^T P delta / 2`` (``g = P v``) over the L1 ball or the box is a strictly
convex QP, solved for the whole batch by :mod:`linflow.polytope_raise` (batched active sets whose fixed point
*is* the KKT system, ending in a finite primal active-set method). A row whose certificate is not below 1e-12
falls back to cvxpy, then the KKT system on the identified support is solved exactly (:func:`_polish`); the best
candidate is kept. (:func:`_pdas_box`, the former per-point L-infinity method, remains as the benchmark's
baseline.) Optimality is certified by the Frank-Wolfe (convexity) bound
``min Delta >= Delta(d) - G^T d - eps ||G||_*`` with ``G = P (v + d)`` and ``||.||_*`` the dual norm
(:func:`_frank_wolfe_gap`), zero (to rounding) at the optimum. Callers pass checked values.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import scipy.linalg

from .model import LinearFlow
from .polytope_raise import raise_box, raise_l1


def nll_change_batch(P: np.ndarray, V: np.ndarray, D: np.ndarray) -> np.ndarray:
    """``Delta_i = d_i^T P v_i + d_i^T P d_i / 2`` for the rows of ``V`` and ``D`` (no validation)."""
    PD = D @ P
    return np.einsum("ij,ij->i", PD, V) + 0.5 * np.einsum("ij,ij->i", PD, D)


def _dual_norm(G: np.ndarray, norm: float) -> np.ndarray:
    return np.max(np.abs(G), axis=1) if norm == 1.0 else np.sum(np.abs(G), axis=1)


def _frank_wolfe_gap(P: np.ndarray, V: np.ndarray, D: np.ndarray, eps: float, norm: float) -> np.ndarray:
    """``G^T d + eps ||G||_*`` with ``G = P (v + d)``: ``Delta(d) - gap <= min Delta`` by convexity."""
    G = (V + D) @ P
    return np.maximum(np.einsum("ij,ij->i", G, D) + eps * _dual_norm(G, norm), 0.0)


def _pdas_box(P: np.ndarray, v: np.ndarray, eps: float, max_iter: int) -> np.ndarray | None:
    r"""Primal-dual active set for ``min g^T d + d^T P d / 2`` s.t. ``|d_i| <= eps`` (``g = P v``).

    KKT: ``P d + g + lambda = 0`` with ``lambda_i >= 0`` where ``d_i = eps``, ``<= 0`` where ``d_i = -eps``,
    ``= 0`` where ``|d_i| < eps``. Active sets ``A+ = {lambda_i + c_i (d_i - eps) > 0}``,
    ``A- = {lambda_i + c_i (d_i + eps) < 0}`` (``c = diag P``); a repeated pair of sets is a KKT point, hence
    the optimum. Returns ``None`` if the sets do not settle within ``max_iter`` iterations.
    """
    d = v.size
    c = np.diag(P)
    x, lam = -v.copy(), np.zeros(d)
    prev = None
    for _ in range(max_iter):
        up = lam + c * (x - eps) > 0.0
        lo = (lam + c * (x + eps) < 0.0) & ~up
        key = (up.tobytes(), lo.tobytes())
        if key == prev:
            return x
        prev = key
        free = ~(up | lo)
        x = np.where(up, eps, np.where(lo, -eps, 0.0))
        if free.any():
            rhs = -(P[free] @ v) - P[np.ix_(free, ~free)] @ x[~free]
            x[free] = scipy.linalg.solve(P[np.ix_(free, free)], rhs, assume_a="pos")
        lam = -(P @ (x + v))
        lam[free] = 0.0
    return None


def _cvxpy_qp(flow: LinearFlow, v: np.ndarray, eps: float, norm: float) -> np.ndarray | None:
    """``argmin ||W (v + eps u)||^2 / ||W v||^2`` over ``u`` in the unit L1 ball or box with cvxpy, where
    ``W = diag(s^-1/2) U^T`` (so the objective is ``(v + delta)^T P (v + delta)``, normalised); CLARABEL, then
    SCS. Returns ``eps u`` or ``None``."""
    W = flow.eigvecs.T / np.sqrt(flow.eigvals)[:, None]
    a = W @ v
    r = max(float(np.linalg.norm(a)), 1e-300)
    u = cp.Variable(v.size)
    con = [cp.norm1(u) <= 1.0] if norm == 1.0 else [cp.abs(u) <= 1.0]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(a / r + (eps / r) * W @ u)), con)
    for solver in ("CLARABEL", "SCS"):
        try:
            prob.solve(solver=solver)
        except cp.error.SolverError:
            continue
        if u.value is not None and np.all(np.isfinite(u.value)):
            return eps * np.asarray(u.value, dtype=np.float64)
    return None


def _project_feasible(d: np.ndarray, eps: float, norm: float) -> np.ndarray:
    if norm == np.inf:
        return np.clip(d, -eps, eps)
    n1 = float(np.abs(d).sum())
    return d * (eps / n1) if n1 > eps else d


def _polish(P: np.ndarray, v: np.ndarray, eps: float, norm: float, d0: np.ndarray) -> list[np.ndarray]:
    """Exact KKT solutions on the active structure of an approximate solution ``d0`` (several thresholds).

    L1 (constraint active): support ``S``, signs ``sigma``: ``[[P_SS, sigma], [sigma^T, 0]] [d_S; l] =
    [-g_S; eps]``. Box: coordinates at a bound fixed, ``P_FF d_F = -g_F - P_FA d_A``. Only feasible
    candidates are returned.
    """
    g = P @ v
    out = []
    for tol in (1e-10, 1e-8, 1e-6, 1e-4):
        if norm == 1.0:
            S = np.abs(d0) > tol * eps
            if not S.any():
                continue
            sig = np.sign(d0[S])
            k = int(S.sum())
            K = np.zeros((k + 1, k + 1))
            K[:k, :k] = P[np.ix_(S, S)]
            K[:k, k] = K[k, :k] = sig
            try:
                sol = scipy.linalg.solve(K, np.concatenate([-g[S], [eps]]), assume_a="sym")
            except (scipy.linalg.LinAlgError, ValueError):
                continue
            d = np.zeros_like(v)
            d[S] = sol[:k]
            if np.all(np.sign(d[S]) == sig) and np.abs(d).sum() <= eps * (1 + 1e-12):
                out.append(_project_feasible(d, eps, norm))
        else:
            up, lo = d0 >= eps * (1 - tol), d0 <= -eps * (1 - tol)
            free = ~(up | lo)
            d = np.where(up, eps, np.where(lo, -eps, 0.0))
            if free.any():
                rhs = -g[free] - P[np.ix_(free, ~free)] @ d[~free]
                try:
                    d[free] = scipy.linalg.solve(P[np.ix_(free, free)], rhs, assume_a="pos")
                except (scipy.linalg.LinAlgError, ValueError):
                    continue
            if np.all(np.abs(d) <= eps * (1 + 1e-12)):
                out.append(_project_feasible(d, eps, norm))
    return out


def _raise(flow: LinearFlow, V: np.ndarray, eps: float, norm: float) -> tuple[np.ndarray, list[str]]:
    """Exact minimisers of ``Delta`` over the L1 ball or box for every row of ``V``."""
    P = flow.precision
    res = (raise_box if norm == np.inf else raise_l1)(P, V, eps)  # batched exact active sets, KKT certificate
    D = res.D.copy()
    methods = ["qp-interior" if it == 0 else "qp-active-set" for it in res.iterations]
    for i in np.flatnonzero(~res.certified):  # fallback: cvxpy, then the KKT polish, keep the best
        v = V[i]
        d0 = _cvxpy_qp(flow, v, eps, norm)
        cands = [] if d0 is None else [_project_feasible(d0, eps, norm)]
        cands += [c for c0 in cands[:1] for c in _polish(P, v, eps, norm, c0)]
        cands.append(D[i])
        Dc = np.array(cands)
        vals = nll_change_batch(P, np.broadcast_to(v, Dc.shape), Dc)
        D[i] = Dc[int(np.argmin(vals))]
        methods[i] = "qp-cvxpy"
    return D, methods

