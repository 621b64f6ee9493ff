r"""A smooth bound on the filled subspace of the pooled dual of R6 (:mod:`linflow.training.pooled`), ascended by
L-BFGS over the interior means.

**Why a smooth bound.** At the optimum of the pooled dual ``Phi(m)`` on MNIST, unfilled eigenvalues of ``C =
cov(x + m) + reg I`` sit at the water level ``nu`` with zero fill (strict complementarity fails): the water-filled
``log det`` is only ``C^1`` where eigenvalues cross ``nu``, and the block steps crawl there (R6).

**The bound.** Fix orthonormal directions ``V_F`` (``d x f``, the "filled" ones) and restrict ``R`` to them. With
``U`` the complement and the Schur complement ``Sch = (V_F^T C^{-1} V_F)^{-1}``,

.. math:: \log\det(C + V_F R V_F^\top) = \log\det C + \log\det(V_F^\top C^{-1} V_F) + \log\det(Sch + R) .

Filling all of ``F`` and the ``k`` constant coordinates left out of ``m`` (value ``reg``) to one level,
``R = nu_F I - Sch`` with ``nu_F = (tau + tr Sch + k reg) / f'``, ``f' = f + k``, ``tau = eps^2 - mean_i
||m_i||^2``, gives

.. math:: \Phi_F(m) = \tfrac12\big(D + \log\det C + \log\det(V_F^\top C^{-1} V_F) + f' \log\nu_F
          + D\log 2\pi\big), \qquad D = d + k ,

a valid lower bound, ``Phi_F <= Phi`` (a feasible ``R`` of R6's pooled dual), whenever this ``R`` is PSD:
``lambda_max(Sch) <= nu_F`` and ``reg <= nu_F`` (:attr:`_FillValue.valid`); equal to ``Phi`` when ``F`` is exactly
the filled eigenspace of ``C``. One Cholesky factor of ``C``, no eigendecomposition; analytic in ``m`` for a fixed
``F`` (no eigenvalue crosses anything). Its gradient is

.. math:: \partial\Phi_F / \partial m_i = \big(W (y_i - \bar y) - m_i / \nu_F\big) / n, \qquad
          W = C^{-1} - C^{-1} V_F (Sch - Sch^2/\nu_F) V_F^\top C^{-1} = (C + V_F R V_F^\top)^{-1} ,

``y_i = x_i + m_i``: the gradient of ``Phi`` when ``F`` is the exact filled space (then ``W = P``, ``1/nu_F =
lambda``). Taking ``F`` = the eigenvectors of ``C`` that are filled or within ``delta`` (relative) above ``nu``
counts the near-level directions as filled with fill ``>= 0``, their state at the optimum; the interior means'
components along ``F`` then trade one to one against ``R`` (flat) instead of being slow.

**The ascent** (:func:`_fill_ascent`): L-BFGS (two-loop recursion, Armijo backtracking) on ``Phi_F`` over the
interior means (``||m_i|| < eps (1 - inner)``), the others fixed; a row that a step takes out of its ball is
projected back and frozen. ``F`` and the interior set are guesses that only steer the step: the caller gets the
full ``Phi`` at the resulting (ball-projected) means, evaluated in double precision by
:func:`linflow.training.pooled_dual._pooled_dual`, and keeps it only if it rose.

**Why it does not remove the slow modes** (measured, ``bench/r6_fill.py``; not used by the solver). Adding an
unfilled eigenvector ``u`` (``c_u > nu``) to the exact filled space gives ``nu_F = nu + (c_u - nu) / f'' < c_u``:
``R`` is indefinite and ``Phi_F > Phi`` (concavity of ``log``), so the near-level directions can never be counted
as filled at the current means. Outside validity ``Phi_F`` prices variance along ``u`` at ``1 / nu_F`` instead of
``1 / c_u``, so its ascent drives ``c_u`` further up: on MNIST-5k at eps 1 (a 40-s state, ``delta = 1e-3``, 5
directions added) ``lambda_max(Sch) / nu_F - 1`` grows from 8.8e-4 to 3.7e-3 in 10 L-BFGS steps while the true
``Phi`` falls; with ``delta = 1e-2`` ``Phi_F`` ends 1.6e-4 above the 600-s ``Phi_ref``. Hence ``keep_valid``;
then only ``delta = 0`` moves, where ``Phi_F = Phi`` and its gradient at the start, the near-level directions stay
in ``U`` with per-point curvature ``lambda (1 - nu / c_u)`` (2e-4 ``lambda`` at eps 1) and L-BFGS is slower per
CPU second than the default ascent: from 40-s states, 10 CPU s leave ``Phi`` short by 1.50e-5 (eps 1, from
1.71e-5) and 5.2e-4 (eps 3, from 6.3e-4) against 1.23e-5 and 2.6e-4 for the default; from 20-s states, 1.68e-4
(from 1.73e-4) and 2.54e-3 (from 2.69e-3) against 3.4e-5 and 1.40e-3, a filled direction reaching the level
(``R`` singular) within a few steps. ``F`` at the primal of ``Phi_F`` is no lower than at the dual's primal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .objectives import _LOG_2PI
from .pooled_dual import _ball, _Dual, _pooled_dual


@dataclass
class _FillValue:
    """``Phi_F`` at one point: value ``G``, gradient ``grad`` (rows of the free means), the level ``nu`` and
    ``lambda_max(Sch)`` (``sch_max``); ``valid`` when ``R = nu I - Sch`` is PSD (then ``G <= Phi``)."""

    G: float
    grad: np.ndarray | None
    nu: float
    sch_max: float
    valid: bool


class _FillBound:
    """``Phi_F`` (module docstring) as a function of the free rows ``MI`` of the means (``free``: a boolean mask over
    the rows of ``X``), the other rows of ``Mn`` fixed; ``VF`` (``d x f``, orthonormal) the filled directions, ``k``
    the constant coordinates left out (counted as filled)."""

    def __init__(self, X: np.ndarray, Mn: np.ndarray, free: np.ndarray, VF: np.ndarray, eps: float, reg: float,
                 k: int = 0) -> None:
        n, d = X.shape
        if VF.ndim != 2 or VF.shape[0] != d or VF.shape[1] + k == 0:
            raise ValueError(f"VF must be a (d, f) array with f + k > 0 (d = {d}, k = {k}), got shape {VF.shape}")
        self.n, self.d, self.eps, self.reg, self.k, self.VF = n, d, float(eps), float(reg), int(k), VF
        self.free = free
        self.shift = X.mean(axis=0) + Mn.mean(axis=0)  # centring against cancellation in the second moments
        Yf = X[~free] + Mn[~free] - self.shift
        self.sum_f = Yf.sum(axis=0)
        self.gram_f = Yf.T @ Yf
        self.XI = X[free] - self.shift
        self.m2_f = float(np.sum(Mn[~free] ** 2))

    def __call__(self, MI: np.ndarray, grad: bool = True) -> _FillValue:
        n, d, k, reg = self.n, self.d, self.k, self.reg
        Y = self.XI + MI
        mean = (self.sum_f + Y.sum(axis=0)) / n  # ybar - shift
        C = (self.gram_f + Y.T @ Y) / n - np.outer(mean, mean)
        C = 0.5 * (C + C.T)
        C[np.diag_indices(d)] += reg
        L = scipy.linalg.cho_factor(C, lower=True, check_finite=False)
        logdet_c = 2.0 * float(np.sum(np.log(np.diag(L[0]))))
        G = scipy.linalg.cho_solve(L, self.VF, check_finite=False)  # C^{-1} V_F
        A = self.VF.T @ G
        A = 0.5 * (A + A.T)
        a, Q = scipy.linalg.eigh(A)  # A = V_F^T C^{-1} V_F = Sch^{-1}
        f = self.VF.shape[1] + k
        tau = max(self.eps**2 - (self.m2_f + float(np.sum(MI**2))) / n, 0.0)
        nu = (tau + float(np.sum(1.0 / a)) + k * reg) / f
        val = 0.5 * ((d + k) * (1.0 + _LOG_2PI) + logdet_c + float(np.sum(np.log(a))) + f * np.log(nu))
        sch_max = 1.0 / float(a[0])
        valid = sch_max <= nu * (1.0 + 1e-12) and (k == 0 or reg <= nu)
        if not grad:
            return _FillValue(val, None, nu, sch_max, valid)
        Yc = Y - mean
        s = 1.0 / a
        B = (Q * (s - s**2 / nu)) @ Q.T  # Sch - Sch^2 / nu
        WY = scipy.linalg.cho_solve(L, Yc.T, check_finite=False).T - ((Yc @ G) @ B) @ G.T
        return _FillValue(val, (WY - MI / nu) / n, nu, sch_max, valid)


    def model(self, MI: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(mu, Sigma, nu_F)``: the primal of ``Phi_F`` at the free rows ``MI``, ``mu = mean(x + m)`` and ``Sigma =
        C + V_F R V_F^T`` with ``R = nu_F I - Sch`` (the constant coordinates at ``nu_F``); ``W`` of the gradient is
        ``Sigma^{-1}``."""
        n, d = self.n, self.d
        Y = self.XI + MI
        mean = (self.sum_f + Y.sum(axis=0)) / n
        C = (self.gram_f + Y.T @ Y) / n - np.outer(mean, mean)
        C = 0.5 * (C + C.T)
        C[np.diag_indices(d)] += self.reg
        nu = self(MI, grad=False).nu
        Sch = np.linalg.inv(self.VF.T @ np.linalg.solve(C, self.VF))
        Sigma = C + self.VF @ (nu * np.eye(self.VF.shape[1]) - 0.5 * (Sch + Sch.T)) @ self.VF.T
        return mean + self.shift, 0.5 * (Sigma + Sigma.T), nu


def _fill_space(dual: _Dual, delta: float) -> np.ndarray:
    """``V_F``: the eigenvectors of ``cov(x + m) + reg I`` that are filled or within ``delta`` (relative) above the
    water level (a guess that only steers the ascent)."""
    return dual.V[:, dual.c < dual.nu * (1.0 + delta)]


def _lbfgs_direction(g: np.ndarray, S: list[np.ndarray], Yd: list[np.ndarray], scale: float) -> np.ndarray:
    """The L-BFGS ascent direction ``H g`` (two-loop recursion) for a concave function, ``H`` approximating the
    inverse of minus its Hessian: pairs ``s`` (steps) and ``y`` (decreases of the gradient) with ``s^T y > 0``;
    ``scale`` the initial ``H0 = scale I`` (positive)."""
    q = g.copy()
    alphas = []
    for s, y in zip(reversed(S), reversed(Yd), strict=True):
        r = 1.0 / float(np.vdot(y, s))
        al = r * float(np.vdot(s, q))
        q -= al * y
        alphas.append((r, al))
    q *= scale
    for (s, y), (r, al) in zip(zip(S, Yd, strict=True), reversed(alphas), strict=True):
        q += s * (al - r * float(np.vdot(y, q)))
    return q


def _fill_ascent(X: np.ndarray, dual: _Dual, eps: float, reg: float, *, delta: float = 1e-3, iters: int = 30,
                 memory: int = 10, inner: float = 1e-3, deadline: float | None = None,
                 keep_valid: bool = True, trace: list | None = None) -> tuple[_Dual | None, dict]:
    """L-BFGS on ``Phi_F`` (module docstring) over the interior means of ``dual`` (rows with ``||m_i|| < eps (1 -
    inner)``), ``F`` from :func:`_fill_space` with ``delta``; at most ``iters`` iterations or until the process time
    ``deadline``. Returns ``(dual, info)``: the full pooled dual at the new means (projected onto the ``eps``-ball,
    in double precision) if its ``Phi`` rose above ``dual.G``, else None; ``info`` counts iterations, evaluations,
    frozen rows, the last ``Phi_F`` and its validity, the final (projected) means ``means``, the free rows ``rows``
    and ``VF``. With ``keep_valid`` (default) a step is accepted only where ``R`` stays PSD (so ``Phi_F <= Phi``).
    ``trace`` collects ``(process time, Phi_F, lambda_max(Sch) / nu_F - 1)`` (``<= 0``: valid)."""
    n, d = X.shape
    free = np.linalg.norm(dual.Mn, axis=1) < eps * (1.0 - inner)
    info = {"iters": 0, "evals": 0, "frozen": 0, "free": int(free.sum()), "f": 0, "valid": True, "G_F": np.nan}
    if not free.any():
        return None, info
    VF = _fill_space(dual, delta)
    info["f"] = VF.shape[1]
    if VF.shape[1] + dual.k == 0:  # nothing filled: no budget to pool
        return None, info
    prob = _FillBound(X, dual.Mn, free, VF, eps, reg, dual.k)
    MI = dual.Mn[free].copy()
    cur = prob(MI)
    info["evals"] += 1
    live = np.ones(MI.shape[0], dtype=bool)
    S: list[np.ndarray] = []
    Yd: list[np.ndarray] = []
    scale = n * cur.nu  # 1 / the stiffest per-point curvature, ~ lambda / n
    for _ in range(iters):
        if deadline is not None and time.process_time() > deadline:
            break
        g = cur.grad * live[:, None]
        p = _lbfgs_direction(g, S, Yd, scale) * live[:, None]
        slope = float(np.vdot(g, p))
        if slope <= 0:
            S.clear()
            Yd.clear()
            p, slope = scale * g, scale * float(np.vdot(g, g))
        if slope <= 0:
            break
        alpha, new = 1.0, None
        for _ in range(20):
            trial = MI + alpha * p
            out = np.linalg.norm(trial, axis=1) > eps * (1.0 - inner)
            trial = _ball(trial, eps * (1.0 - inner))
            val = prob(trial)
            info["evals"] += 1
            rise = val.G >= cur.G + 1e-4 * float(np.vdot(cur.grad, trial - MI)) and val.G > cur.G
            if rise and (val.valid or not keep_valid):
                new = (trial, val, out)
                break
            alpha *= 0.3
        if new is None:
            break
        trial, val, out = new
        s, y = trial - MI, cur.grad - val.grad
        if float(np.vdot(s, y)) > 0:
            S.append(s)
            Yd.append(y)
            if len(S) > memory:
                S.pop(0)
                Yd.pop(0)
            scale = float(np.vdot(s, y)) / float(np.vdot(y, y))
        live &= ~out
        MI, cur = trial, val
        info["iters"] += 1
        if trace is not None:
            trace.append((time.process_time(), cur.G, cur.sch_max / cur.nu - 1.0))
    info.update(frozen=int((~live).sum()), valid=bool(cur.valid), G_F=cur.G)
    Mn = dual.Mn.copy()
    Mn[free] = MI
    Mn = _ball(Mn, eps)
    info.update(means=Mn, rows=free, VF=VF)
    new_dual = _pooled_dual(X, Mn, eps, reg, dual.k)
    return (new_dual if new_dual.G > dual.G else None), info
