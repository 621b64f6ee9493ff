r"""A primal polish for the pooled dual of R6 (L2): the repair of :mod:`.pooled_primal`, iterated on the exact ``F``.

Any model gives an upper bound ``F(theta) >= min F`` (R6). :mod:`.pooled_primal` turns the filled space ``J`` of
the dual's primal by a Cayley rotation ``R(Z)`` (``Z = (A, b)``: the turn ``A`` of ``J`` against the unfilled
directions ``U``, the move ``b`` of the mean along ``J``) chosen on a model of ``F`` that counts the interior
points' kinks and the Lagrangian's price but not the points on the sphere, which then pay most of what is left.
With the eigenvalues ``s`` kept, the model at ``Z`` has the points' eigen-coordinates ``W(Z) = W R(Z) - 1 b_J^T``
and ``F(Z) = 1/2 mean_i phi(w_i(Z)) + const``, ``phi(w) = max_{||delta|| <= eps} (w + delta)^T diag(1/s)
(w + delta)`` (R1). Its gradient is exact by the envelope theorem: ``dF / dw_i = P (w_i + delta_i) / n`` at the
maximiser (one batched R1 solve gives all of them), and through the Cayley transform ``R = M^{-1} (I + S/2)``,
``M = I - S/2``, ``dF / dS = 1/2 M^{-T} W^T Gamma (I + R)^T``.

``F`` is not smooth: a point at or near R1's hard case (``eta - lambda`` small, ``lambda = 1 / s_min``) contributes
about ``lambda a_i ||r_i|| / n``, a norm of its coordinates ``r_i = w_{iJ}`` in the filled space, with ``a_i =
||delta_{iJ}||`` (the budget it spends there). Each polish step is therefore a proximal-gradient step with a
variable metric: those kinks are kept as norms of their residuals, linearised in ``Z`` (``r_i + [w_{iU}, -1] dZ``),
the rest of ``F`` by its exact gradient and the metric ``sigma H``, ``H`` the Lagrangian's price of the turn
(``(s_l - nu)^2 / (nu s_l)`` per unfilled direction ``l``, ``lambda`` for the mean) plus the curvature of the other
points (``lambda^2 / (n (eta_i - lambda))`` on ``[w_{iU}, -1]``, the second derivative of ``phi`` along ``J``
beyond the Lagrangian's). The sum of norms plus quadratic is minimised by reweighted least squares; the columns of
``dZ`` (one per direction of ``J``) share one normal matrix of size ``|U| + 1``. ``F`` is evaluated exactly at the
new ``Z``: kept if lower, else ``sigma`` quadruples (at most 8 times). The certificate is unchanged: the caller keeps
the lowest exact ``F`` it has seen.

Measured (MNIST-5k, reg 0.01): on the eps-1 dual of :mod:`.pooled_primal`'s measurement, ``F - Phi`` is 5.1e-5 at
the repaired model and 3.7e-5 after 4-8 polish steps (4-6 CPU s), where it stops improving: the sphere points near
the hard case pay 8.9e-6 instead of 1.8e-5, the interior points 2.1e-5 as before; at eps 3 (a dual after 55 s),
1.5e-3 -> 9.2e-4. Started from the repair's turn instead of ``Z = 0`` it ends higher (5.0e-5 at eps 1).
It does not stop but crawls: 16 steps reach 3.65e-5 (eps 1) and 9.07e-4 (eps 3), each step ~0.1-0.3% lower, the turn
``|Z|`` growing steadily. Tried without gain per CPU second: a smaller metric weight (``sigma`` 0.25, 0.05: the
first steps overshoot), 6 reweighting rounds, doubling an accepted step while ``F`` falls (2.2e-7 lower after 8
steps, at twice the evaluations). Every product with ``R`` is taken by blocks (:class:`.pooled_primal._Cayley`,
the points' columns stored as ``(J, U)``; ``O(n |U| |J|)`` instead of ``O(n d^2)``) and the model is built once, for
the best ``Z``: the same ``F`` and gradient to 1e-15, 8 steps at eps 1 in 6.4 instead of 7.8 CPU s (load ~10).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg

from ..secular import _lower_likelihood
from .objectives import _LOG_2PI
from .pooled_dual import _Dual
from .pooled_primal import _Cayley, _turned_model


class _Rotated:
    """The models ``(R(Z), b)`` around a dual's primal, with the exact ``F`` and its gradient in ``Z``."""

    def __init__(self, dual: _Dual, eps: float, k: int, reg: float) -> None:
        self.dual, self.eps, self.k, self.reg = dual, eps, k, reg
        s = dual.s
        self.J = dual.c < dual.nu
        self.jj, self.uu = np.flatnonzero(self.J), np.flatnonzero(~self.J)
        kJ, d = self.jj.size, s.size
        # the points' coordinates with the columns in the order (J, U): the products with R act on contiguous blocks
        self.Wq = np.ascontiguousarray(dual.W[:, np.concatenate([self.jj, self.uu])])
        self.Jb, self.Ub = slice(0, kJ), slice(kJ, d)
        sq = np.concatenate([np.full(k, max(reg, dual.nu)), s[self.jj], s[self.uu]])
        self.order = np.argsort(sq, kind="stable")
        self.inv = np.argsort(self.order)
        self.sfull = sq[self.order]
        self.const = 0.5 * (float(np.sum(np.log(self.sfull))) + self.sfull.size * _LOG_2PI
                            + reg * float(np.sum(1.0 / self.sfull)))

    def evaluate(self, Z: np.ndarray) -> dict:
        """``F(Z)``, its gradient, the rotated coordinates ``W(Z)`` (columns in the order ``(J, U)``: blocks
        ``self.Jb``, ``self.Ub``) and the R1 solution (multipliers, ``delta``); every product with ``R`` by blocks
        (:class:`.pooled_primal._Cayley`), ``O(n |U| |J|)``."""
        n = self.Wq.shape[0]
        rot = _Cayley(self.Jb, self.Ub, Z)
        E = rot.inv_m(self.Wq)  # W M^{-1}; W R = 2 W M^{-1} - W
        Wp = 2.0 * E - self.Wq
        Wp[:, self.Jb] -= Z[-1]
        Wf = np.concatenate([np.zeros((n, self.k)), Wp], axis=1)[:, self.order] if self.k else Wp[:, self.order]
        sol = _lower_likelihood(self.sfull, Wf, self.eps)
        Y = Wf + sol.C
        F = 0.5 * float(np.mean(np.sum(Y**2 / self.sfull, axis=1))) + self.const
        Gam = (Y / self.sfull / n)[:, self.inv][:, self.k:]
        # dF/dS = 1/2 M^{-T} W^T Gam (I + R)^T = (W M^{-1})^T (Gam M^{-T})  (I + R = 2 M^{-1}); only its (U, J) and
        # (J, U) blocks enter the gradient in A
        H = rot.inv_m(Gam, transpose=True)
        gA = E[:, self.Ub].T @ H[:, self.Jb] - H[:, self.Ub].T @ E[:, self.Jb]
        grad = np.concatenate([gA, -Gam[:, self.Jb].sum(0)[None]])
        CJ = sol.C[:, self.inv][:, self.k:][:, self.Jb]
        return {"F": F, "grad": grad, "W": Wp, "gap": sol.gap, "aJ": np.linalg.norm(CJ, axis=1)}

    def model(self, Z: np.ndarray) -> _Dual:
        """The rotated model as a :class:`_Dual` (as :func:`.pooled_primal._repaired_model` returns it)."""
        return _turned_model(self.dual, _Cayley(self.jj, self.uu, Z))


def _polish(dual: _Dual, eps: float, reg: float, Z0: np.ndarray | None = None, steps: int = 4, irls: int = 2,
            kink: float = 0.05, sigma: float = 1.0, deadline: float | None = None,
            floor: float = 1e-6) -> tuple[float, _Dual | None]:
    """At most ``steps`` polish steps (module docstring) from ``Z0`` (default: the dual's primal, no turn), each
    with ``irls`` reweighting rounds; points with ``(eta - lambda) / lambda < kink`` are kept as norms; ``sigma``
    is the initial weight of the metric; the reweighting treats residuals below ``floor`` times the largest as that
    (the normal matrix stays well conditioned; 1e-12 gave the same ``F`` on MNIST at eps 1). No step starts after
    the process time ``deadline``. Returns ``(F, model)``: the lowest exact ``F`` evaluated and its model (``(inf,
    None)`` when nothing or everything is filled)."""
    n, d = dual.W.shape
    if not (dual.c < dual.nu).any() or (dual.c < dual.nu).all():
        return np.inf, None
    rot = _Rotated(dual, eps, dual.k, reg)
    nu, s, uu = dual.nu, dual.s, rot.uu
    lam = 1.0 / nu
    Z = np.zeros((uu.size + 1, rot.jj.size)) if Z0 is None else Z0
    cur = rot.evaluate(Z)
    best = (cur["F"], Z)  # the model is built once, at the end
    KL = np.concatenate([(s[uu] - nu) ** 2 / (nu * s[uu]), [lam]])
    for _ in range(steps):
        if deadline is not None and time.process_time() > deadline:
            break
        Wp, g = cur["W"], cur["gap"] * nu
        X = np.concatenate([Wp[:, rot.Ub], -np.ones((n, 1))], axis=1)
        r0 = Wp[:, rot.Jb]
        kk = g < kink
        a = lam * cur["aJ"][kk] / n
        Xk, rk = X[kk], r0[kk]
        nr = np.linalg.norm(rk, axis=1)
        gk = Xk.T @ (rk * (a / np.maximum(nr, 1e-300))[:, None])  # the kinks' gradient at Z
        sm = ~kk
        om_s = lam**2 / (n * np.maximum(cur["gap"][sm], 1e-300))
        H = (X[sm] * om_s[:, None]).T @ X[sm]
        H[np.diag_indices_from(H)] += KL
        gs = cur["grad"] - gk
        for _ in range(8):
            if deadline is not None and time.process_time() > deadline:
                return best[0], rot.model(best[1])
            r = rk.copy()
            dZ = np.zeros_like(Z)
            for _ in range(irls):
                om = a / np.maximum(np.linalg.norm(r, axis=1), floor * max(float(nr.max(initial=0.0)), 1e-300))
                N = sigma * H + (Xk * om[:, None]).T @ Xk
                try:
                    dZ = -scipy.linalg.solve(N, gs + (Xk * om[:, None]).T @ rk, assume_a="pos")
                except (np.linalg.LinAlgError, ValueError):
                    return best[0], rot.model(best[1])
                r = rk + Xk @ dZ
            new = rot.evaluate(Z + dZ)
            if new["F"] < cur["F"]:
                Z, cur = Z + dZ, new
                if new["F"] < best[0]:
                    best = (new["F"], Z)
                break
            sigma *= 4.0
        else:
            break
    return best[0], rot.model(best[1])
