r"""The pooled dual's accelerators (R6, the pooled dual): Anderson mixing (:class:`_Anderson`) and extrapolation
along the ascent's recent drift (:class:`_Drift`).

The proximal block ascent of :func:`linflow.training.pooled._sample_pooled` on ``Phi(m)`` (concave in the means
``m``, each row in the ``eps``-ball) moves slowly but steadily along the directions its per-point model leaves out:
the coupling of all means through ``cov(x + m)`` (rotating the filled eigenspace of the primal covariance). Every
``period`` iterations the drift ``D = m_k - m_{k - period}`` is followed further: the means ``Pi(m_k + beta D)``
(``Pi``: each row projected onto the ball, so the means stay feasible) for ``beta = 1, 2, 4, ...`` while ``Phi``
increases, the best one kept (:func:`_extrapolate`). Each trial costs one evaluation of ``Phi`` (a covariance and an
``eigh``), about a quarter of a block step. Since any feasible means give a lower bound, the certificate is
unchanged: the bound is ``Phi`` at the means actually evaluated.

Measured (MNIST-5k, reg 0.01, one thread, load 11-16, CPU time). From the dual after 30 CPU s at eps 3, 20 CPU s
more: the ascent gains 4.4e-4 (35 iterations) without and 5.3e-4 (35 iterations, 5 trials gaining 4.2e-5 directly)
with a period of 10; a period of 5 met a failed step and a stiffer proximal weight (3.7e-4), and resetting the
Anderson history after an extrapolation cost more than it gained (4.1e-4). The whole solver, 60 CPU s
(``bench/bench_training.py --pooled-dual``), before / after: ``Phi`` at eps 1 -312.69777292 / -312.69777132
(83 / 81 iterations), at eps 3 -74.15283453 / -74.15276268 (91 / 92): against 600-CPU-s references (-312.69773932,
-74.15224054) the shortfall falls 3.36e-5 -> 3.20e-5 and 5.94e-4 -> 5.22e-4, i.e. 1-4% of CPU time: a small gain,
not the order of magnitude goal 1 needs.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .pooled_dual import _ball, _Dual, _pooled_dual


class _Drift:
    """The means of ``period`` iterations ago (:func:`_extrapolate` at every ``period``-th call of :meth:`step`)."""

    def __init__(self, period: int, max_doublings: int = 6) -> None:
        self.period, self.max_doublings = period, max_doublings
        self.calls = 0
        self.clean = True  # no failed block step since the anchor (set False by the caller)
        self.anchor: np.ndarray | None = None
        self.trials = 0
        self.gain = 0.0

    def step(self, X: np.ndarray, dual: _Dual, eps: float, reg: float) -> _Dual | None:
        """Called once per iteration of the ascent with its current dual: at every ``period``-th call, the
        extrapolated dual if ``Phi`` rose (else None); the anchor moves to the means returned. A period in which a
        block step failed (``clean`` False: the proximal weight grew) is not extrapolated: near a stall (rounding)
        the ascent must be allowed to stall, as before."""
        self.calls += 1
        if self.period <= 0 or self.calls % self.period:
            return None
        anchor, self.anchor = self.anchor, dual.Mn
        clean, self.clean = self.clean, True
        if anchor is None or not clean:
            return None
        new, trials = _extrapolate(X, dual, dual.Mn - anchor, eps, reg, self.max_doublings)
        self.trials += trials
        if new is None:
            return None
        self.gain += new.G - dual.G
        self.anchor = new.Mn
        return new


def _extrapolate(X: np.ndarray, dual: _Dual, D: np.ndarray, eps: float, reg: float,
                 max_doublings: int = 6) -> tuple[_Dual | None, int]:
    """``(best, trials)``: the dual at ``Pi(m + beta D)`` of highest ``Phi`` for ``beta = 1, 2, 4, ...`` (doubling
    while ``Phi`` rises, at most ``max_doublings + 1`` trials), None when none rises above ``dual``; ``Pi`` projects
    each row onto the ``eps``-ball, so every candidate is feasible and its ``Phi`` a valid lower bound."""
    best: _Dual | None = None
    beta, trials = 1.0, 0
    for _ in range(max_doublings + 1):
        trials += 1
        cand = _pooled_dual(X, _ball(dual.Mn + beta * D, eps), eps, reg, dual.k)
        if cand.G <= (dual.G if best is None else best.G):
            break
        best = cand
        beta *= 2.0
    return best, trials


class _Anderson:
    """Anderson acceleration (type II) of the fixed-point map ``m -> m^+``: keeps the last ``memory`` differences
    of the steps ``f_k = m^+_k - m_k`` (their Gram matrix updated incrementally) and of ``m_k + f_k``."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.reset()

    def reset(self) -> None:
        self.last: tuple[np.ndarray, np.ndarray] | None = None
        self.dF: list[np.ndarray] = []
        self.dS: list[np.ndarray] = []
        self.gram = np.zeros((0, 0))

    def correction(self, x: np.ndarray, f: np.ndarray) -> np.ndarray | None:
        """Record ``(x_k, f_k)``; return ``sum_j gamma_j (dX_j + dF_j)`` with ``gamma`` the least-squares
        coefficients of ``f_k`` on the ``dF_j`` (None while there is no history)."""
        if self.last is not None and self.memory > 1:
            x0, f0 = self.last
            df = f - f0
            self.dF.append(df)
            self.dS.append(x - x0 + df)
            k = len(self.dF)
            row = np.array([float(np.vdot(df, other)) for other in self.dF])
            gram = np.zeros((k, k))
            gram[: k - 1, : k - 1] = self.gram
            gram[k - 1, :], gram[:, k - 1] = row, row
            if k > self.memory - 1:
                self.dF.pop(0)
                self.dS.pop(0)
                gram = gram[1:, 1:]
            self.gram = gram
        self.last = (x, f)
        if not self.dF:
            return None
        k = len(self.dF)
        A = self.gram + (1e-12 * np.trace(self.gram) + 1e-300) * np.eye(k)
        rhs = np.array([float(np.vdot(df, f)) for df in self.dF])
        try:
            gam = scipy.linalg.solve(A, rhs, assume_a="pos")
        except (np.linalg.LinAlgError, ValueError):
            return None
        out = gam[0] * self.dS[0]
        for gj, ds in zip(gam[1:], self.dS[1:], strict=True):
            out += gj * ds
        return out
