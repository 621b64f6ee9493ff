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
    """Anderson acceleration (type II) of the fixed-point map ``m -> m^+``: keeps the last ``memory - 1``
    differences of the steps ``f_k = m^+_k - m_k`` and of ``m_k + f_k``, each history stacked in one array (a
    ring: slot order, not age order; the least-squares fit does not depend on the order of its columns) and its
    Gram matrix updated incrementally: one new row per call (one matrix-vector product over the history), the
    coefficients by a second, the correction by a third. Everything in double precision; the same numbers as a
    list-and-``vdot`` loop up to the order of summation."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.cap = max(memory - 1, 0)
        self._F = self._S = np.zeros((0, 0))
        self.shape: tuple[int, ...] = (0,)
        self.reset()

    def reset(self) -> None:
        self.last: tuple[np.ndarray, np.ndarray] | None = None
        self.size = 0  # history columns in use (slots 0 .. size - 1)
        self.head = 0  # the oldest slot once the ring is full
        self.gram = np.zeros((self.cap, self.cap))

    @property
    def dF(self) -> list[np.ndarray]:
        """The step differences in the history, oldest first (copies)."""
        return [self._F[j].reshape(self.shape).copy() for j in self._order()]

    @property
    def dS(self) -> list[np.ndarray]:
        """The differences of ``m_k + f_k``, oldest first (copies)."""
        return [self._S[j].reshape(self.shape).copy() for j in self._order()]

    def _order(self) -> list[int]:
        return [(self.head + j) % self.size for j in range(self.size)] if self.size else []

    def _slot(self, length: int) -> int:
        """The slot for a new column of ``length`` entries (the oldest one once the ring is full)."""
        if self._F.shape != (self.cap, length):
            self._F, self._S = np.empty((self.cap, length)), np.empty((self.cap, length))
        if self.size < self.cap:
            self.size += 1
            return self.size - 1
        slot, self.head = self.head, (self.head + 1) % self.cap
        return slot

    def transform(self, convert) -> None:
        """Carry the history over to new variables by a linear map ``convert`` (the Gram matrix recomputed)."""
        if self.last is not None:
            self.last = (convert(self.last[0]), convert(self.last[1]))
        if not self.size:
            return
        Fs, Ss = [convert(v) for v in self.dF], [convert(v) for v in self.dS]
        self.shape = np.shape(Fs[0])
        F, S = np.array([np.ravel(v) for v in Fs]), np.array([np.ravel(v) for v in Ss])
        self._F, self._S = np.empty((self.cap, F.shape[1])), np.empty((self.cap, F.shape[1]))
        k = self.size
        self._F[:k], self._S[:k], self.head = F, S, 0
        self.gram[:k, :k] = F @ F.T

    def correction(self, x: np.ndarray, f: np.ndarray) -> np.ndarray | None:
        """Record ``(x_k, f_k)``; return ``sum_j gamma_j (dX_j + dF_j)`` with ``gamma`` the least-squares
        coefficients of ``f_k`` on the ``dF_j`` (None while there is no history)."""
        fv = np.ravel(f)
        if self.last is not None and self.cap > 0:
            x0, f0 = self.last
            slot = self._slot(fv.size)
            self.shape = np.shape(f)
            df = np.subtract(fv, np.ravel(f0), out=self._F[slot])
            ds = np.subtract(np.ravel(x), np.ravel(x0), out=self._S[slot])
            ds += df
            k = self.size
            row = self._F[:k] @ df
            self.gram[slot, :k] = row
            self.gram[:k, slot] = row
        self.last = (x, f)
        if not self.size:
            return None
        k = self.size
        gram = self.gram[:k, :k]
        A = gram + (1e-12 * np.trace(gram) + 1e-300) * np.eye(k)
        rhs = self._F[:k] @ fv
        try:
            gam = scipy.linalg.solve(A, rhs, assume_a="pos")
        except (np.linalg.LinAlgError, ValueError):
            return None
        return (gam @ self._S[:k]).reshape(np.shape(x))
