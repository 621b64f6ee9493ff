r"""A smooth primal step for the pooled dual of R6 (L2): the filled space kept, everything else free.

Any model gives an upper bound ``F(theta) >= min F`` (R6). The polish (:mod:`.pooled_polish`) turns the filled space
``J`` of the dual's primal and keeps the eigenvalues; this step keeps ``J`` (and the mean's component in it) and
frees the rest: the precision on the complement ``U`` of ``J``, the common eigenvalue of ``J`` and the mean in
``U``. In the model's eigenbasis ``V`` (eigenvalues ``s``, ``p = 1/s``, ``J`` the tied ``s = nu`` block, to which
the ``k`` coordinates constant in the data are tied when their eigenvalue is ``nu`` too),

.. math:: P(E, e, g) = V \begin{pmatrix} p_J (1 + e) I & 0 \\ 0 & D (I + E) D \end{pmatrix} V^\top, \qquad
          \mu(g) = \mu_0 + V_U D^{-1} g, \qquad D = \mathrm{diag}(p_U^{1/2}),

``E`` symmetric (``D`` whitens the start, so the Gaussian part of ``F`` has about unit curvature in ``E``).
``F`` is jointly convex in ``(P, h = P mu)`` (R6); here it is evaluated exactly (one eigendecomposition of the
``U`` block, one batched R1 attack) and its gradient is exact by the envelope theorem: with ``y_i = x_i + delta_i -
mu`` at R1's maximiser, ``dF/dP = 1/2 (mean_i y_i y_i^T - Sigma + reg I)`` and ``dF/dmu = -P mean_i y_i``. The one
place where R1's maximiser is not unique, its hard case (the top eigenspace ``J`` of ``P``, a point with no mass
there spending its unspent budget ``t_i`` anywhere on ``J``'s sphere), leaves the gradient unique in these
parameters: only ``tr`` of the ``J`` block of ``y_i y_i^T`` enters (``= t_i`` for every choice), the ``(J, U)``
block is not a parameter. So ``F`` is differentiable here as long as ``J`` stays the top eigenspace of ``P``
(``p_U < p_J (1 + e)``), and L-BFGS minimises it; every value it reports is the exact ``F`` of an actual model, so the
certificate is unchanged: the caller keeps the lowest exact ``F``. Steps leaving that domain are halved
(:func:`_lbfgs`: L-BFGS with a backtracking line search).

Measured (MNIST-5k, reg 0.01, one thread, load 6-8; issue 14, R6-PRIM). On the 600-CPU-s reference duals, from
the model after 16 polish steps: eps 3, ``F - Phi`` 1.126e-5 -> 1.060e-5 (60 evaluations, 26 CPU s; most of it in
the first 10), eps 1, 7.69e-7 -> 7.11e-7 (35, 16 s). Alternating 8 polish steps and 30 evaluations, 3 rounds at
eps 3: 1.027e-5 (51 s). On the duals a 60-s run reaches at 54 s, it gains more than further polish steps: eps 3,
8 polish steps (6.3 s) 6.14e-4, 16 steps 6.04e-4, 4 steps and 8 evaluations (6.3 s) 5.51e-4; eps 1, 8 steps (5.8 s)
3.97e-5, 4 steps and 10 evaluations (7.0 s) 3.89e-5. In the solver (option ``free`` of
:func:`linflow.training.pooled._sample_pooled`; ``bench/r6_prim.py``, 60 CPU s, relative certified gap, two runs
each) the gain is within the run-to-run spread of the ascent: eps 1, 1.27e-7 / 1.13e-7 without and 1.21e-7 /
1.20e-7 with; eps 3, 8.86e-6 / 7.27e-6 without and 9.16e-6 / 6.83e-6 with. In a pair of eps-3 runs with the same
ascent (108 iterations) the step lowered ``F`` by 1.75e-5 from the polish stopped at 57 s, 1.5e-6 below the
polish run to 60 s (7.25e-6 against 7.27e-6).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg

from ..secular import _lower_likelihood
from .objectives import _LOG_2PI
from .pooled_dual import _Dual


class _Free:
    """The models ``(E, e, g)`` around a model ``base`` (a :class:`_Dual` used as a model: ``V``, ``s``, ``yb``,
    ``W``; ``k`` constant coordinates at ``max(reg, nu)``), with the exact ``F`` and its gradient."""

    def __init__(self, base: _Dual, eps: float, reg: float) -> None:
        self.base, self.eps, self.reg = base, eps, reg
        s = base.s
        self.J = base.s <= base.nu * (1.0 + 1e-12)  # the tied filled block (c < nu in a dual, c = nu in a model)
        self.jj, self.uu = np.flatnonzero(self.J), np.flatnonzero(~self.J)
        self.k = base.k
        self.sk = max(reg, base.nu)
        self.tied = bool(self.jj.size) and self.sk == base.nu
        self.sJ = base.nu if self.jj.size else self.sk
        self.dU = np.sqrt(1.0 / s[self.uu])
        self.WJ = base.W[:, self.jj]
        self.WU = base.W[:, self.uu]
        m = self.uu.size
        self.iu = np.triu_indices(m)
        self.nE = self.iu[0].size
        self.size = self.nE + 1 + m
        self.calls = 0

    def unpack(self, z: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """``(E, e, g)`` from the vector ``z`` (``E`` by its upper triangle)."""
        m = self.uu.size
        E = np.zeros((m, m))
        E[self.iu] = z[: self.nE]
        E = E + np.triu(E, 1).T
        return E, float(z[self.nE]), z[self.nE + 1:]

    def parts(self, z: np.ndarray) -> dict | None:
        """The model at ``z``: the precisions ``pU`` of the ``U`` block with eigenvectors ``Q`` (in ``V_U``
        coordinates), the eigenvalue ``sJ`` of ``J`` and the mean's move in ``V_U`` coordinates; None outside the
        domain (``P`` not positive definite, or ``J`` no longer its top eigenspace: ``max pU >= 1 / sJ``)."""
        E, e, g = self.unpack(z)
        PU = (self.dU[:, None] * (np.eye(self.uu.size) + E)) * self.dU[None, :]
        pe, Q = scipy.linalg.eigh(PU, driver="evd")
        if pe[0] <= 0 or 1.0 + e <= 0 or pe[-1] * self.sJ >= 1.0 + e:  # P > 0 and J its top eigenspace
            return None
        return {"pU": pe, "Q": Q, "sJ": self.sJ / (1.0 + e), "shift": g / self.dU}

    def evaluate(self, z: np.ndarray, grad: bool = True) -> tuple[float, np.ndarray | None]:
        """``F`` at ``z`` and its gradient (``(inf, None)`` outside the domain of :meth:`parts`)."""
        self.calls += 1
        pm = self.parts(z)
        if pm is None:
            return np.inf, None
        n = self.WU.shape[0]
        Q, pU, sJ = pm["Q"], pm["pU"], pm["sJ"]
        WUq = (self.WU - pm["shift"]) @ Q
        kj = self.jj.size + (self.k if self.tied else 0)
        kc = 0 if self.tied else self.k
        sfull = np.concatenate([np.full(kj, sJ), np.full(kc, self.sk), 1.0 / pU])
        blocks = [self.WJ, np.zeros((n, self.k)), WUq] if self.k else [self.WJ, WUq]
        Wf = np.concatenate(blocks, axis=1)
        order = np.argsort(sfull, kind="stable")
        sol = _lower_likelihood(sfull[order], Wf[:, order], self.eps)
        Y = np.empty_like(Wf)
        Y[:, order] = Wf[:, order] + sol.C
        F = 0.5 * (float(np.mean(np.sum(Y**2 / sfull, axis=1))) + float(np.sum(np.log(sfull)))
                   + sfull.size * _LOG_2PI + self.reg * float(np.sum(1.0 / sfull)))
        if not grad:
            return F, None
        m = self.uu.size
        YU = Y[:, -m:]
        GU = 0.5 * (YU.T @ YU / n - np.diag(1.0 / pU) + self.reg * np.eye(m))  # dF/dP_UU in Q coordinates
        GV = Q @ GU @ Q.T  # in V_U coordinates
        DGD = self.dU[:, None] * GV * self.dU[None, :]
        gE = 2.0 * DGD[self.iu]
        gE[self.iu[0] == self.iu[1]] *= 0.5
        gJ = 0.5 * (float(np.sum(Y[:, :kj] ** 2)) / n - kj * sJ + kj * self.reg)  # tr of the J block of dF/dP
        ge = gJ * (1.0 / self.sJ)  # dP_J / de = p_J
        ybar = Q @ (pU * YU.mean(axis=0))  # P mean(y), U block, in V_U coordinates
        gg = -ybar / self.dU  # dmu = V_U D^{-1} dg
        return F, np.concatenate([gE, [ge], gg])

    def model(self, z: np.ndarray) -> _Dual:
        """The model at ``z`` as a :class:`_Dual` (``c`` its eigenvalues, ``J`` kept below ``nu``: ``s = max(c, nu)``
        with ``nu`` the new ``J`` eigenvalue; ``G = -inf``)."""
        pm = self.parts(z)
        b = self.base
        sJ = pm["sJ"]
        V = b.V.copy()
        V[:, self.uu] = b.V[:, self.uu] @ pm["Q"]
        c = np.empty(b.c.size)
        c[self.jj] = np.minimum(b.c[self.jj], sJ * (1 - 1e-12))  # filled: s = max(c, nu) = sJ
        c[self.uu] = 1.0 / pm["pU"]
        mu = b.yb + b.V[:, self.uu] @ pm["shift"]
        order = np.argsort(np.maximum(c, sJ), kind="stable")
        return _Dual(b.Mn, -np.inf, mu, b.Yc + b.yb - mu, c[order], V[:, order], sJ, b.k, b.reg)


def _lbfgs(fun, z: np.ndarray, maxcalls: int, memory: int, first: float,
           deadline: float | None) -> tuple[float, np.ndarray, int]:
    """Minimise ``fun`` (value and gradient; ``(inf, None)`` outside its domain) by L-BFGS (two-loop recursion) with
    a backtracking line search (Armijo, halving; a step out of the domain is halved too); the first step moves at
    most ``first`` in any coordinate. Stops after ``maxcalls`` evaluations, at the process time ``deadline``, or
    when no step decreases ``fun``. Returns ``(value, z, calls)`` at the last accepted point (the lowest of the
    accepted values; a rejected trial point may have been lower)."""
    F, g = fun(z)
    calls = 1
    if g is None:
        return F, z, calls
    S: list[tuple[np.ndarray, np.ndarray, float]] = []
    while calls < maxcalls and (deadline is None or time.process_time() < deadline):
        q = g.copy()
        alphas = []
        for s_, y_, r_ in reversed(S):
            a = r_ * float(s_ @ q)
            alphas.append(a)
            q -= a * y_
        if S:
            s_, y_, _ = S[-1]
            q *= float(s_ @ y_) / float(y_ @ y_)
        else:
            q *= first / max(float(np.abs(q).max()), 1e-300)
        for (s_, y_, r_), a in zip(S, reversed(alphas), strict=True):
            q += s_ * (a - r_ * float(y_ @ q))
        d = -q
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: restart from the gradient (none at a zero gradient)
            if not S:
                break
            S.clear()
            continue
        t = 1.0
        while calls < maxcalls and (deadline is None or time.process_time() < deadline):
            Fn, gn = fun(z + t * d)
            calls += 1
            if Fn <= F + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            break
        if not Fn < F:
            break
        sv, yv = t * d, gn - g
        if float(sv @ yv) > 0:
            S.append((sv, yv, 1.0 / float(sv @ yv)))
            S = S[-memory:]
        z, F, g = z + sv, Fn, gn
    return F, z, calls


def _free_step(base: _Dual, eps: float, reg: float, maxcalls: int = 50, memory: int = 20, first: float = 1e-3,
               deadline: float | None = None) -> tuple[float, _Dual | None, dict]:
    """L-BFGS (:func:`_lbfgs`) on ``F`` over ``(E, e, g)`` from the model ``base`` (module docstring), at most
    ``maxcalls`` evaluations (one R1 attack each), none started after the process time ``deadline``. Returns
    ``(F, model, info)``: the lowest exact ``F`` seen and its model (``(inf, None, {})`` when ``J`` or its
    complement is empty, or at the deadline)."""
    fr = _Free(base, eps, reg)
    if fr.jj.size == 0 or fr.uu.size == 0 or (deadline is not None and time.process_time() >= deadline):
        return np.inf, None, {}
    c0 = time.process_time()
    trace: list[tuple[float, float]] = []

    best = [np.inf, None]

    def fun(z: np.ndarray) -> tuple[float, np.ndarray | None]:
        out = fr.evaluate(z)
        trace.append((time.process_time() - c0, out[0]))
        if out[0] < best[0]:
            best[:] = [out[0], z.copy()]
        return out

    _lbfgs(fun, np.zeros(fr.size), maxcalls, memory, first, deadline)
    if best[1] is None:  # not even the start evaluated (deadline) or outside the domain
        return np.inf, None, {"calls": fr.calls, "trace": trace}
    return best[0], fr.model(best[1]), {"calls": fr.calls, "trace": trace}
