r"""A sub-solve of the pooled dual of R6 on the block where it is slow (:mod:`linflow.training.pooled`).

**Where the dual is slow.** At the optimum of the pooled dual ``Phi(m)`` on MNIST the filled eigenspace of
``Sigma`` and the unfilled eigenvalues crowding at the water level ``nu`` lie in the span of the pixels that are
zero in every interior point (points with ``||m_i|| < eps``): a block of about 200 of the 663 coordinates, in
which the data are very sparse. The proximal block ascent crawls there (strict complementarity fails at the water
level). This module ascends ``Phi`` over one block ``K`` of the means' components (all points), the other
components held fixed, at a fraction of the cost of a full step, and many times in a row.

**The sub-problem.** Split the coordinates into ``K`` and ``N``, fix ``m_N`` and write ``Z`` for the centred
``x_N + m_N`` (``n x |N|``). With ``R`` restricted to ``K`` (plus the constant coordinates left out by
:class:`linflow.training.pooled._Reduced`), the Schur complement gives

.. math:: \log\det(\mathrm{cov}(x + m) + \mathrm{reg}\,I + R) = \log\det C_{NN} + \log\det(S(m_K) + R),
          \qquad S(m_K) = \tfrac1n Y_K^\top A\, Y_K + \mathrm{reg}\,I ,

with ``Y_K = x_K + m_K``, ``C_NN = Z^T Z / n + reg I`` (fixed) and ``A = I - 11^T / n - Z (Z^T Z + n reg
I)^{-1} Z^T`` (PSD; applied through a Cholesky factor of ``Z^T Z + n reg I``). The best ``R`` is water-filling
(R5) of the eigenvalues of ``S`` and the constant block's ``reg`` with the budget ``tau = eps^2 - mean_i
||m_i||^2``; call the value ``Phi_K(m_K)``. Restricting ``R`` only lowers the bound, so ``Phi_K <= Phi`` (equal
when the optimal ``R`` lives in ``K``), and ``Phi_K`` is concave in ``m_K``. Its gradient is ``((A Y_K T)_i -
lambda m_iK) / n`` with ``T = (S + R^*)^{-1}``, ``lambda = lambda_max(T)``: the ``K``-rows of the full gradient
(R6, the pooled dual). Each row is constrained to ``||m_iK||^2 <= r_i^2 = eps^2 - ||m_iN||^2``.

**The step** (:func:`_k_ascent`) is the proximal block step of :func:`linflow.training.pooled._prox_step` on
``Phi_K`` with each point's own curvature: with ``a_i = A_ii`` (``1 - 1/n`` less the point's ridge leverage in
``N``), each ``m_iK`` maximises ``m^T (T ((A Y_K)_i - a_i m_iK) + rho m_iK) + 1/2 m^T (a_i T - (lambda + rho) I) m``
on its ball of radius ``r_i`` (:func:`linflow.training.pooled._prox_responses` on rows scaled by ``1 / (a_i r_i)``;
the model's gradient at ``m_iK`` is the true one, so the optimum is a fixed point), Anderson-accelerated, a step
accepted only if ``Phi_K`` rises. One step costs about ``4 n |N| |K| + 4 n |K|^2`` flops against about ``4 n d^2``
for a full step (on the crowded eigenspace, :class:`_CrowdProblem`, the products with the fixed block carry only the
move of the means and run in single precision while the solver's block steps do; the set-up needs no rotated copy of
the points: on MNIST-5k a sub-step about 1.6x and the set-up about 2x cheaper). The caller evaluates the full
``Phi`` at the means returned and keeps them only if it rose, so the certificate never depends on ``K`` (a guess
that only steers the step).

**Which block.** ``Phi`` and the balls are rotation invariant, so ``K`` may be any set of orthonormal directions.
:func:`_crowd_step` (used by the solver, option ``crowd``) takes the eigenvectors of ``cov(x + m) + reg I`` that
are filled or within 5% above ``nu`` (about 100-140 of them on MNIST); there ``C`` is block diagonal at the start,
so ``Phi_K = Phi`` exactly. :func:`_k_coordinates` gives the pixel block (the rare pixels and those carrying the
crowded eigenvectors). Measured from the dual after 30 CPU s at eps 3 (shortfall 9.2e-4 against a 600-s
``Phi_ref``), 20 more CPU s: the block ascent alone reaches 4.3e-4; with 60 sub-steps after each block step, 1.7e-4
on the pixel block (237 pixels; 150 sub-steps: 1.4e-4) and 1.2e-4 on the crowded eigenspace (140 directions); at
eps 1 (from 5.5e-5) 2.7e-5 against 1.2e-5 (pixel block). The sub-ascent itself converges linearly, not fast: on
the eps-3 state 120 sub-steps gain 6.8e-4, their increments shrinking slowly. Early in a run the crowded space is
not yet where the ascent is slow, so :class:`_CrowdSchedule` runs a sub-solve only while it out-gains the block
steps per CPU second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import scipy.linalg

from .objectives import _LOG_2PI
from .pooled_dual import _ball, _Dual, _pooled_dual
from .pooled_extrap import _Anderson
from .universal import _water_level


def _k_coordinates(X: np.ndarray, dual: _Dual, eps: float, energy: float = 1e-5, near: float = 1e-2,
                   inner: float = 1e-3) -> np.ndarray:
    """The block ``K`` (indices into ``X``'s columns): the coordinates that are zero in every interior point of
    ``dual`` (``||m_i|| < eps (1 - inner)``), together with those that carry more than ``energy`` of the squared
    norm of an eigenvector of ``cov(x + m) + reg I`` that is filled or within ``near`` (relative) above the water
    level. Sorted; a guess that only steers the step."""
    interior = np.linalg.norm(dual.Mn, axis=1) < eps * (1.0 - inner)
    rare = np.flatnonzero(np.all(X[interior] == 0.0, axis=0)) if interior.any() else np.zeros(0, dtype=int)
    crowd = dual.c < dual.nu * (1.0 + near)
    heavy = np.flatnonzero(np.sum(dual.V[:, crowd] ** 2, axis=1) > energy)
    return np.union1d(rare, heavy)


class _KProblem:
    """The sub-problem ``Phi_K`` (module docstring) at fixed ``m_N``: ``X`` (n, d) the points, ``Mn`` the current
    means (its ``N``-columns are kept), ``K`` the free coordinates, ``k`` the constant coordinates left out.
    ``single`` (False here; see :class:`_CrowdProblem`): the step's products with the eigenvectors of ``S`` in single
    precision (the step only proposes feasible means; ``Phi_K`` decides, in double precision)."""

    single = False

    def __init__(self, X: np.ndarray, Mn: np.ndarray, K: np.ndarray, eps: float, reg: float, k: int) -> None:
        n, d = X.shape
        N = np.setdiff1d(np.arange(d), K)
        self.n, self.d, self.K, self.eps, self.reg, self.k = n, d, K, eps, reg, k
        YN = X[:, N] + Mn[:, N]
        self.Z = YN - YN.mean(axis=0)
        G = scipy.linalg.blas.dsyrk(1.0, self.Z, trans=1, lower=1)  # Z^T Z (lower triangle)
        G[np.diag_indices(N.size)] += n * reg
        self.chol = scipy.linalg.cho_factor(G, lower=True, check_finite=False)
        # log det C_NN = log det(Z^T Z + n reg I) - |N| log n
        self.logdet_nn = 2.0 * float(np.sum(np.log(np.diag(self.chol[0])))) - N.size * np.log(n)
        self.XK = X[:, K]
        self.rn2 = np.sum(Mn[:, N] ** 2, axis=1)
        self.r = np.sqrt(np.maximum(eps**2 - self.rn2, 0.0))
        # the diagonal of A (each point's own curvature factor): 1 - 1/n - its ridge leverage in N
        half = scipy.linalg.solve_triangular(self.chol[0], self.Z.T, lower=True, check_finite=False)
        self.a = np.clip(1.0 - 1.0 / n - np.sum(half**2, axis=0), 1e-3, 1.0)

    def evaluate(self, MK: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, float]:
        """``(Phi_K, AY, s, V, nu)`` at the ``K``-means ``MK``: ``AY = A Y_K`` and the eigenpairs of ``S``."""
        n = self.n
        Y = self.XK + MK
        AY = Y - Y.mean(axis=0)
        AY -= self.Z @ scipy.linalg.cho_solve(self.chol, self.Z.T @ Y, check_finite=False)
        Sm = AY.T @ Y / n
        G, s, V, nu = self._value(0.5 * (Sm + Sm.T), MK)
        return G, AY, s, V, nu

    def _value(self, Sm: np.ndarray, MK: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
        """``(Phi_K, s, V, nu)`` from ``Y_K^T A Y_K / n`` (symmetric; ``reg I`` is added here)."""
        Sm[np.diag_indices_from(Sm)] += self.reg
        s, V = scipy.linalg.eigh(Sm, driver="evd", check_finite=False)
        tau = max(self.eps**2 - float(np.mean(self.rn2 + np.einsum("ij,ij->i", MK, MK))), 0.0)
        call = np.sort(np.concatenate([np.full(self.k, self.reg), s])) if self.k else s
        nu = _water_level(call, np.sqrt(tau)) if call[0] > 0 else float(call[0])
        D = self.d + self.k
        G = 0.5 * (D + self.logdet_nn + float(np.sum(np.log(np.maximum(call, nu)))) + D * _LOG_2PI)
        return G, s, V, nu

    def step(self, MK: np.ndarray, AY: np.ndarray, s: np.ndarray, V: np.ndarray, nu: float, rho: float,
             prox: Callable) -> np.ndarray:
        """The proximal block step on ``Phi_K`` (module docstring): feasible ``K``-means; ``prox`` is
        :func:`linflow.training.pooled._prox_responses` (passed in: :mod:`.pooled` imports this module)."""
        p = 1.0 / np.maximum(s, nu)
        low = min(float(s[0]), self.reg) if self.k else float(s[0])
        lam = 1.0 / max(nu, low)
        gaps = np.maximum(lam - p, 0.0)
        a = self.a[:, None]
        dt = np.float32 if self.single else np.float64  # single: the three products with V steer only
        Vd = V.astype(dt, copy=False)

        def cast(M: np.ndarray) -> np.ndarray:
            return M.astype(dt, copy=False)

        B = (cast(AY - a * MK) @ Vd) * p + rho * (cast(MK) @ Vd)  # T ((A Y_K)_i - a_i m_iK) + rho m_iK, basis of S
        out = np.zeros_like(MK)
        live = self.r > 0
        r, a = self.r[live][:, None], self.a[live]
        g0 = (rho + lam * (1.0 - a)) / a
        out[live] = cast(prox(B[live].astype(float, copy=False) / (r * a[:, None]), gaps, g0, 1.0) * r) @ Vd.T
        return _ball(out, self.r)  # each row onto its own ball (rounding)


class _CrowdProblem(_KProblem):
    r""":class:`_KProblem` for the crowded eigenspace (:func:`_crowd_step`), built from the dual itself. In the
    eigenbasis ``V = [V_K, V_N]`` of ``cov(x + m) + reg I = V diag(c) V^T`` the centred ``Z = Y_c V_N`` has
    orthogonal columns, ``Z^T Z + n reg I = n diag(c_N)`` and ``Z^T Y_c V_K = 0``, so with ``D = M_K - M_K^0`` (the
    move of the ``K``-means since the start, ``D_c`` its centred rows) and ``H = Z^T D``:

    .. math:: A Y_K = Y_c V_K + D_c - Z\,\mathrm{diag}(1 / (n c_N)) H, \qquad
              Y_K^\top A Y_K = (Y_c V_K + D_c)^\top (Y_c V_K + D_c) - H^\top \mathrm{diag}(1 / (n c_N)) H,

    ``log det C_NN = sum log c_N`` and ``a_i = 1 - 1/n - sum_j Z_ij^2 / (n c_j)``: the sub-problem of the module
    docstring exactly (no Cholesky factor, no rotated copy of the points; these identities hold to the rounding of
    ``eigh``, so ``Phi_K`` is the value of a problem within rounding of it, the same at every evaluation). With
    ``single`` the two products with ``Z`` (``n |N| |K|`` each) are computed in single precision: they carry only
    the move ``D`` (small against ``Y_c V_K``), and ``Phi_K`` only steers the sub-solve; the caller evaluates the
    full ``Phi`` in double precision at the (ball-projected) means, which alone enter the bound."""

    def __init__(self, X: np.ndarray, dual: _Dual, crowd: np.ndarray, eps: float, reg: float,
                 single: bool = True) -> None:
        n, d = X.shape
        q = int(crowd.sum())
        self.n, self.d, self.K, self.eps, self.reg, self.k = n, d, np.arange(q), eps, reg, dual.k
        self.single = single
        self.VK = dual.V[:, crowd]
        self.Y0 = dual.Yc @ self.VK  # Y_c V_K: the centred K-coordinates at the start
        self.M0 = dual.Mn @ self.VK
        VN = dual.V[:, ~crowd]
        self.Z = (dual.Yc.astype(np.float32) @ VN.astype(np.float32)) if single else dual.Yc @ VN
        cN = dual.c[~crowd]
        self.dinv = 1.0 / (n * cN)
        self.logdet_nn = float(np.sum(np.log(cN)))
        self.rn2 = np.maximum(np.einsum("ij,ij->i", dual.Mn, dual.Mn) - np.einsum("ij,ij->i", self.M0, self.M0), 0.0)
        self.r = np.sqrt(np.maximum(eps**2 - self.rn2, 0.0))
        lev = np.einsum("ij,ij,j->i", self.Z, self.Z, self.dinv.astype(self.Z.dtype)).astype(float)
        self.a = np.clip(1.0 - 1.0 / n - lev, 1e-3, 1.0)

    def evaluate(self, MK: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, float]:
        """``(Phi_K, AY, s, V, nu)`` at the ``K``-means ``MK`` (class docstring; ``AY`` in double precision)."""
        D = MK - self.M0
        Yc = self.Y0 + (D - D.mean(axis=0))
        H = (self.Z.T @ D.astype(self.Z.dtype)).astype(float)
        AY = Yc - self.Z @ (H * self.dinv[:, None]).astype(self.Z.dtype)
        Hs = H * np.sqrt(self.dinv)[:, None]
        Sm = (Yc.T @ Yc - Hs.T @ Hs) / self.n
        G, s, V, nu = self._value(0.5 * (Sm + Sm.T), MK)
        return G, AY, s, V, nu


def _k_ascent(X: np.ndarray, Mn: np.ndarray, k: int, eps: float, reg: float, K: np.ndarray, steps: int,
              rho: float, prox: Callable, memory: int = 8, deadline: float | None = None, min_rate: float = 0.0,
              trace: list[float] | None = None) -> tuple[np.ndarray, float, int]:
    """At most ``steps`` accepted proximal block steps on ``Phi_K`` from the feasible means ``Mn`` (module
    docstring; ``k`` constant coordinates left out), stopping early at the process time ``deadline`` or when the
    last three accepted steps gained less than ``min_rate`` per CPU second (the caller's rate of a full step). Returns
    ``(Mn, rho, accepted)``: the new feasible means (the columns outside ``K`` unchanged), the proximal weight
    reached (tripled after every failed step) and the number of accepted steps; ``trace`` collects ``Phi_K`` after
    each. ``Phi`` at the result is the caller's to evaluate. ``prox``:
    :func:`linflow.training.pooled._prox_responses` (passed in, since :mod:`.pooled` imports this module)."""
    prob = _KProblem(X, Mn, K, eps, reg, k)
    MK, rho, accepted = _ascend(prob, Mn[:, K].copy(), steps, rho, prox, memory, deadline, min_rate, trace)
    out = Mn.copy()
    out[:, K] = MK
    return out, rho, accepted


def _ascend(prob: _KProblem, MK: np.ndarray, steps: int, rho: float, prox: Callable, memory: int = 8,
            deadline: float | None = None, min_rate: float = 0.0,
            trace: list[float] | None = None) -> tuple[np.ndarray, float, int]:
    """The loop of :func:`_k_ascent` on a built sub-problem ``prob`` (a :class:`_KProblem` or
    :class:`_CrowdProblem`) from its ``K``-means ``MK``: ``(MK, rho, accepted)``; it also stops when a step fails
    at ``rho`` above 1e12 (stalled, as the block ascent; the proximal weight would otherwise grow to overflow over
    repeated sub-solves at an optimum)."""
    G, AY, s, V, nu = prob.evaluate(MK)
    accel = _Anderson(memory)
    accepted = 0
    seen = [(time.process_time(), G)]
    for _ in range(2 * steps + 4):
        now = time.process_time()
        if accepted >= steps or (deadline is not None and now > deadline):
            break
        if len(seen) > 3 and seen[-1][1] - seen[-4][1] < min_rate * (now - seen[-4][0]):
            break
        plain = prob.step(MK, AY, s, V, nu, rho, prox)
        corr = accel.correction(MK, plain - MK)
        cands = [plain]
        if corr is not None:
            cands.insert(0, _ball(plain - corr, prob.r))
        for cand in cands:
            new = prob.evaluate(cand)
            if new[0] > G:
                MK, (G, AY, s, V, nu) = cand, new
                accepted += 1
                seen.append((time.process_time(), G))
                if trace is not None:
                    trace.append(G)
                break
        else:
            if rho > 1e12:  # no ascent at any step length: stalled (at the sub-problem's optimum, to rounding)
                break
            rho *= 3.0
            accel.reset()
    return MK, rho, accepted


def _crowd_step(X: np.ndarray, dual: _Dual, eps: float, reg: float, steps: int, rho: float, prox: Callable,
                near: float = 0.05, deadline: float | None = None, min_rate: float = 0.0,
                single: bool = False) -> tuple[_Dual | None, float, int]:
    """The sub-solve on the crowded eigenspace (module docstring): :func:`_k_ascent` in the eigenbasis ``V`` of
    ``cov(x + m) + reg I``, on the eigenvectors whose eigenvalue is filled or within ``near`` (relative) above the
    water level. ``Phi`` is rotation invariant (so is each ball), so the sub-problem is the one of the module
    docstring for the rotated points ``X V`` (built without rotating them: :class:`_CrowdProblem`; ``single``:
    its products with the fixed block in single precision). Returns ``(dual, rho, accepted)``: the full pooled dual
    at the new means (projected onto the ``eps``-ball, evaluated in double precision) if its ``Phi`` rose, else
    None; the proximal weight reached (the one given when no sub-step ascended) and the number of accepted
    sub-steps. ``prox``, ``deadline``, ``min_rate``:
    see :func:`_k_ascent`."""
    crowd = dual.c < dual.nu * (1.0 + near)
    q = int(crowd.sum())
    if q == 0 or q == crowd.size:
        return None, rho, 0
    prob = _CrowdProblem(X, dual, crowd, eps, reg, single)
    MK, out_rho, accepted = _ascend(prob, prob.M0.copy(), steps, rho, prox, deadline=deadline, min_rate=min_rate)
    if not accepted:  # nothing ascended: the next sub-problem (after block steps) starts from the same weight
        return None, rho, 0
    rho = out_rho
    new = _pooled_dual(X, _ball(dual.Mn + (MK - prob.M0) @ prob.VK.T, eps), eps, reg, dual.k)
    return (new if new.G > dual.G else None), rho, accepted


class _CrowdSchedule:
    """When to run :func:`_crowd_step` inside the block ascent, and how long. Early on the crowded eigenspace is not
    yet where the ascent is slow and a full block step gains more per CPU second; so each sub-solve runs while its
    gain per CPU second stays above the full steps' recent rate (:attr:`rate`), and a sub-solve whose whole gain of
    ``Phi`` per CPU second (its set-up included) falls below that rate doubles the number of iterations to the next
    one (at most ``max_wait``); one above it brings the next one back to the next iteration. The first sub-solve
    comes at iteration ``first`` (10): on MNIST-5k earlier ones never paid, and at eps 0.3 the ascent converges in
    11 iterations without them (6 CPU s, against 15 s with a sub-solve from the first iteration on)."""

    def __init__(self, steps: int, max_wait: int = 16, first: int = 10) -> None:
        self.steps, self.max_wait = steps, max_wait
        self.wait, self.skip = first + 1, 1
        self.rate = 0.0

    def block(self, gain: float, seconds: float) -> None:
        """Record a full block step's gain of ``Phi`` and its CPU time (an average of the recent rates)."""
        rate = max(gain, 0.0) / max(seconds, 1e-9)
        self.rate = rate if self.rate == 0.0 else 0.5 * (self.rate + rate)

    def due(self) -> bool:
        """Whether the sub-solve runs at this iteration (call once per iteration)."""
        self.wait -= 1
        return self.steps > 0 and self.wait <= 0

    def done(self, gain: float, seconds: float) -> None:
        """Record a sub-solve's gain of ``Phi`` and its CPU time."""
        self.skip = 1 if gain > self.rate * seconds and gain > 0 else min(2 * self.skip, self.max_wait)
        self.wait = self.skip
