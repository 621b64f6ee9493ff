r"""The pooled dual of R6 with affine interior means: the block ascent of :mod:`linflow.training.pooled` at a cost
that scales with the rank of the interior data instead of their number.

**Why affine.** At a stationary point of the pooled dual ``Phi`` (:mod:`.pooled`, module docstring) every interior
mean (``||m_i|| < eps``) solves ``(lambda I - P) m_i = P (x_i - mu)``: off the filled space ``J`` it is an affine
function of ``x_i`` (``m_i = (lambda I - P)^+ P (x_i - mu)``), in ``J`` it is free up to the pooled budget. So the
interior means of the optimum lie (up to those free parts) in the family ``m_i = A x_i + a``. Measured on MNIST-5k
(reg 0.01) against duals after 600 CPU s of block ascent: replacing the interior means by their least-squares
affine fit (relative residual 1.6e-3 / 2.0e-3 at eps 1 / 3) changes ``Phi`` by +5.7e-11 / +9.8e-11: the family
reaches the optimum.

**The compressed dual.** With the interior set ``I`` and ``U`` an orthonormal basis of the columns of
``[X_I, 1]`` (rank ``r``: 417 of 663 at eps 1, 475 at eps 3, since the interior images are zero on the rare pixels),
the means ``m_I = U Z`` (``Z`` of shape ``(r, d)``) are exactly the affine ones, and with ``X_I = U Q``:
``sum_{i in I} (y_i - ybar)(y_i - ybar)^T = (Q + Z - u ybar^T)^T (Q + Z - u ybar^T)`` (``u = U^T 1``; ``1`` lies
in the span of ``U``), ``sum_{i in I} y_i = u^T (Q + Z)`` and ``sum_{i in I} ||m_i||^2 = ||Z||_F^2``. So
``cov(x + m)`` and the budget need ``r`` rows instead of ``|I|``, and ``Phi`` is that of the pooled dual with the
interior points replaced by ``r`` pseudo-points. The proximal block step of an interior point whose response stays
inside the ball is linear in ``(x_i, m_i)`` (``m^+ = ((lambda + rho) I - P)^{-1} (P (x_i - mu) + rho m_i)``), and
Anderson mixing is linear, with the same inner products (``U`` orthonormal): on the rows of ``Z`` the compressed
ascent takes the same steps as the ascent on all means, at the cost of ``n - |I| + r`` rows instead of ``n``.

**Safety.** The bound needs feasible means: every step forms the interior means ``U Z`` and checks their norms;
when one reaches ``eps (1 - margin / 2)``, the rows beyond ``eps (1 - margin)`` become *ghosts*: explicit rows
(starting at their compressed values), their compressed rows subtracted from the sums, so the means are unchanged;
the partition is rebuilt (an SVD) when the ghosts exceed 10% of the interior rows. The compressed ``Phi`` only
steers (accept a step if it rises): the caller re-evaluates ``Phi`` exactly at the explicit means before it enters
the certificate. The interior set is a guess (any partition is valid: it only decides which rows are compressed); a
partition whose affine projection ``U U^T m_I`` lowers ``Phi`` (beyond rounding) is not used.

**Measured** (``bench/r6_affine.py``, MNIST-5k, reg 0.01, one thread, 60 CPU s, same session; option ``affine=20``
of :func:`linflow.training.pooled._sample_pooled` against 0): a step works on about 3500 rows at eps 1 (1900
interior points of rank 436) and 1800 at eps 3 (3600 of rank 475) instead of 5000; a step, its ``Phi`` and Anderson's
mixing about 0.34 s against 0.46 s at eps 1 (a process-time profile). Shortfall of ``Phi`` to the 600-s
references at 15 / 30 / 45 / 60 s, eps 1:
2.5e-4 / 6.8e-5 / 3.4e-5 / 2.5e-5 before, 1.8e-4 / 4.6e-5 / 2.4e-5 / 1.9e-5 after (102 / 120 iterations; certified
relative gap 1.24e-7 / 9.2e-8); eps 3: 3.4e-3 / 8.5e-4 / 4.2e-4 / 3.0e-4 before, 5.0e-3 / 8.5e-4 / 3.5e-4 / 2.0e-4
after (128 / 137; 5.3e-6 / 3.6e-6). Earlier runs in the session, before two fixes (ghosts counted against the
pseudo-rows, which rebuilt the partition and reset the Anderson history after nearly every ghost event), were worse
than the plain ascent at eps 1. A time-constant gain (the steps are the same), not a faster rate: 1e-8 at eps 1
still needs the dual about 3x faster. Tried and dropped: L-BFGS on ``Z`` with the explicit means fixed (from the
eps-1 dual after 30 s, 30 s more: shortfall 5.4e-5 -> 3.2e-5, where the block ascent reaches 2.6e-5 in 20 s), and
over-relaxing the interior rows' step (gains ``Phi`` directly but fewer iterations: 3.6e-5 against 2.8e-5).
Off by default since the crowded-eigenspace sub-solve (``crowd``, :mod:`.pooled_k`): the two together did worse than
``crowd`` alone (the ``affine`` paragraph of :func:`linflow.training.pooled._sample_pooled`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg

from .objectives import _LOG_2PI
from .pooled_dual import _ball, _Dual
from .universal import _water_level


class _Partition:
    """The interior rows ``inner`` (a boolean mask), an orthonormal basis ``U`` of the columns of ``[X_I, 1]``,
    ``Q = U^T X_I`` and ``u = U^T 1``. The explicit rows ``XE`` are the other points followed by the ``ghost``
    interior rows (indices into ``I``): interior points made explicit since, whose compressed rows ``U_g Z`` are
    subtracted from the sums (:func:`_compressed`). :meth:`build` makes one from the means (interior: norm below
    ``eps (1 - margin)``), :meth:`with_ghosts` makes more interior rows explicit."""

    def __init__(self, X: np.ndarray, inner: np.ndarray, U: np.ndarray, ghost: np.ndarray | None = None) -> None:
        self.X, self.inner, self.U = X, inner, U
        self.Q = U.T @ X[inner]
        self.u = U.sum(axis=0)
        self.ghost = np.zeros(0, dtype=int) if ghost is None else ghost
        self.XD = X[inner][self.ghost]
        self._explicit_rows(np.vstack([X[~inner], self.XD]))

    def _explicit_rows(self, XE: np.ndarray) -> None:
        self.XE, self.XE32 = XE, XE.astype(np.float32)
        self.XQ = np.vstack([XE, self.Q])  # the points' part of the stacked rows ``[x_E + m_E; Q + Z]``
        self.U32 = self.U.astype(np.float32)

    @classmethod
    def build(cls, X: np.ndarray, Mn: np.ndarray, eps: float, margin: float, rtol: float = 1e-11) -> _Partition:
        inner = np.linalg.norm(Mn, axis=1) < eps * (1.0 - margin)
        XI = np.hstack([X[inner], np.ones((int(inner.sum()), 1))])
        Uf, sv, _ = scipy.linalg.svd(XI, full_matrices=False, lapack_driver="gesdd")
        r = int(np.sum(sv > rtol * sv[0])) if sv.size else 0
        return cls(X, inner, np.ascontiguousarray(Uf[:, :r]))

    def with_ghosts(self, more: np.ndarray) -> _Partition:
        """The partition with the interior rows ``more`` (indices into ``I``, not yet ghosts) made explicit."""
        new = object.__new__(_Partition)
        new.X, new.inner, new.U, new.Q, new.u = self.X, self.inner, self.U, self.Q, self.u
        new.ghost = np.concatenate([self.ghost, more])
        new.XD = self.X[self.inner][new.ghost]
        new._explicit_rows(np.vstack([self.XE, self.X[self.inner][more]]))
        return new

    def convert(self, new: _Partition, v: np.ndarray) -> np.ndarray:
        """Stacked variables ``[ME; Z]`` of this partition as those of ``new = self.with_ghosts(...)`` (the same
        means: the new explicit rows start at their compressed values)."""
        ne = self.XE.shape[0]
        more = new.ghost[self.ghost.size:]
        return np.vstack([v[:ne], self.U[more] @ v[ne:], v[ne:]])

    def explicit(self, v: np.ndarray) -> np.ndarray:
        """The means of all points (rows in the data's order) from stacked variables ``[ME; Z]``."""
        ne, ns = self.XE.shape[0], int((~self.inner).sum())
        Mn = np.empty((self.inner.size, v.shape[1]))
        MI = self.U @ v[ne:]
        MI[self.ghost] = v[ns:ne]
        Mn[~self.inner], Mn[self.inner] = v[:ns], MI
        return Mn

    def interior_norms(self, Z: np.ndarray) -> np.ndarray:
        """Norms of the compressed interior means ``U_i Z`` (ghost rows: 0), in single precision (for the check
        against ``eps (1 - margin / 2)`` only: the means are formed in double precision where ``Phi`` enters the bound
        and projected onto the ball there)."""
        norms = np.linalg.norm(self.U32 @ Z.astype(np.float32), axis=1).astype(float)
        norms[self.ghost] = 0.0
        return norms

    @property
    def rows(self) -> int:
        """Rows the compressed dual works with: the explicit rows plus the rank of the interior data."""
        return self.XE.shape[0] + self.Q.shape[0]


@dataclass
class _AffineDual:
    """The pooled dual at the explicit means ``ME`` (rows ``part.XE``) and the interior means ``U Z`` (ghost rows
    excepted), ``Phi = G`` evaluated on the compressed rows; the fields of
    :class:`~linflow.training.pooled_dual._Dual` that the ascent and ``F`` read (``Mn``, ``W``, ``yb``, ``c``,
    ``V``, ``nu``, ``s``, ``lam``) are available, the explicit ones on demand."""

    part: _Partition
    x: np.ndarray
    G: float
    yb: np.ndarray
    c: np.ndarray
    V: np.ndarray
    nu: float
    k: int
    reg: float
    s = _Dual.s
    lam = _Dual.lam
    flow = _Dual.flow

    @property
    def ME(self) -> np.ndarray:
        return self.x[: self.part.XE.shape[0]]

    @property
    def Z(self) -> np.ndarray:
        return self.x[self.part.XE.shape[0]:]

    @cached_property
    def Mn(self) -> np.ndarray:
        """The means of all points (feasible: :class:`_AffineAscent` keeps the interior ones inside the ball)."""
        return self.part.explicit(self.x)

    @cached_property
    def W(self) -> np.ndarray:
        """The points' coordinates ``(x_i - mu) V``."""
        return (self.part.X - self.yb) @ self.V


def _compressed(part: _Partition, x: np.ndarray, eps: float, reg: float, k: int) -> _AffineDual | None:
    """The compressed pooled dual (module docstring) at the stacked variables ``x = [ME; Z]``; None when the means
    overspend the budget. The ghost rows' compressed values ``x_g + U_g Z`` are subtracted from the sums. The
    caller keeps the interior means ``U Z`` inside the ball."""
    n, d = part.inner.size, x.shape[1]
    ne = part.XE.shape[0]
    ZD = part.U[part.ghost] @ x[ne:]
    tau = eps**2 - (float(np.sum(x**2)) - float(np.sum(ZD**2))) / n
    if tau < 0:
        return None
    R = part.XQ + x
    YD = part.XD + ZD
    yb = (R[:ne].sum(axis=0) + part.u @ R[ne:] - YD.sum(axis=0)) / n
    R[:ne] -= yb
    R[ne:] -= np.outer(part.u, yb)
    C = scipy.linalg.blas.dsyrk(1.0 / n, R, trans=1, lower=1)
    if part.ghost.size:
        C -= scipy.linalg.blas.dsyrk(1.0 / n, YD - yb, trans=1, lower=1)
    C[np.diag_indices(d)] += reg
    c, V = scipy.linalg.eigh(C, lower=True, driver="evd")
    call = np.sort(np.concatenate([np.full(k, float(reg)), c])) if k else c
    nu = _water_level(call, np.sqrt(tau)) if call[0] > 0 else float(call[0])
    G = 0.5 * (d + k + float(np.sum(np.log(np.maximum(call, nu)))) + (d + k) * _LOG_2PI)
    return _AffineDual(part, x, G, yb, c, V, nu, k, float(reg))


class _AffineAscent:
    """The proximal block ascent of :func:`linflow.training.pooled._sample_pooled` on the compressed dual, with
    its own Anderson history (``accel``, an :class:`~linflow.training.pooled_extrap._Anderson`) over the stacked
    variables ``[ME; Z]``. :meth:`advance` is a drop-in for one block step of the ascent. A new partition is built
    (an SVD of ``[X_I, 1]``) when the ghosts exceed ``max_ghosts`` of the interior rows."""

    def __init__(self, X: np.ndarray, eps: float, reg: float, k: int, accel, margin: float = 1e-2,
                 single: bool = True, max_ghosts: float = 0.1) -> None:
        self.X, self.eps, self.reg, self.k, self.accel, self.margin = X, eps, reg, k, accel, margin
        self.single, self.max_ghosts = single, max_ghosts
        self.part: _Partition | None = None
        self.rebuilds = self.ghosted = self.steps = self.wait = 0
        self.cooldown = 10  # block steps before a partition is tried again after one was refused

    def _enter(self, dual: _Dual) -> _AffineDual | None:
        """Compress ``dual`` (a new partition from its means); None when the affine projection lowers ``Phi`` by more
        than rounding (then no new partition is tried for ``cooldown`` calls). The bound is unaffected either way:
        the caller keeps the best exact ``Phi`` seen."""
        part = _Partition.build(self.X, dual.Mn, self.eps, self.margin)
        Z = part.U.T @ dual.Mn[part.inner]
        self.rebuilds += 1
        self.accel.reset()
        over = part.interior_norms(Z) > self.eps * (1 - self.margin / 2)
        x = np.vstack([dual.Mn[~part.inner], Z])
        new = None if over.any() else _compressed(part, x, self.eps, self.reg, self.k)
        if new is None or new.G < dual.G - 1e-12 * max(1.0, abs(dual.G)):  # beyond rounding (the same means if affine)
            self.part, self.wait = None, self.cooldown
            return None
        self.part = part
        return new

    def _step(self, dual: _AffineDual, rho: float, prox) -> np.ndarray:
        """The plain proximal block step from ``dual``, as stacked variables ``[ME; Z]`` (module docstring)."""
        part, eps = dual.part, self.eps
        p = 1.0 / dual.s
        gaps = np.maximum(dual.lam - p, 0.0)
        V = dual.V
        if self.single:  # the explicit rows' products in single precision, as in :func:`.pooled._prox_step`
            V32 = V.astype(np.float32)
            WE = part.XE32 @ V32 - (dual.yb @ V).astype(np.float32)
            BE = (WE * p.astype(np.float32) + np.float32(rho) * (dual.ME.astype(np.float32) @ V32)).astype(float)
            ME = (prox(BE, gaps, rho, eps).astype(np.float32) @ V32.T).astype(float)
        else:
            BE = ((part.XE - dual.yb) @ V) * p + rho * (dual.ME @ V)
            ME = prox(BE, gaps, rho, eps) @ V.T
        BI = ((part.Q - np.outer(part.u, dual.yb)) @ V) * p + rho * (dual.Z @ V)
        out = np.empty_like(dual.x)
        out[: ME.shape[0]] = ME
        out[ME.shape[0]:] = (BI / (rho + gaps)) @ V.T
        return out

    def advance(self, dual: _Dual | _AffineDual, rho: float, prox, single: bool = True) -> _AffineDual | None:
        """One block step (``prox(B, gaps, rho, eps)``: the per-point responses, :func:`.pooled._prox_responses`;
        ``single``: the explicit rows' products in single precision) from ``dual``: the new (compressed) dual if
        ``Phi`` rose, else None; then :attr:`part` is None when no step was tried (no partition: the caller takes a
        plain block step). When an interior mean reaches ``eps (1 - margin / 2)``, those beyond ``eps (1 - margin)``
        become ghosts (explicit rows; :meth:`_Partition.with_ghosts`, the Anderson history carried over)."""
        self.single = single
        if self.wait > 0:
            self.wait -= 1
            return None
        if not isinstance(dual, _AffineDual) or dual.part is not self.part:
            entered = self._enter(dual)
            if entered is None:
                return None
            dual = entered
        part, eps = dual.part, self.eps
        x = dual.x
        plain = self._step(dual, rho, prox)
        corr = self.accel.correction(x, plain - x)
        self.steps += 1
        for cand in ([plain - corr] if corr is not None else []) + [plain]:
            norms = part.interior_norms(cand[part.XE.shape[0]:])
            # ghosts when a row reaches eps (1 - margin / 2): then every row beyond eps (1 - margin), fewer events
            over = np.flatnonzero(norms > eps * (1 - self.margin)) if norms.max(initial=0.0) > eps * (
                1 - self.margin / 2) else np.zeros(0, dtype=int)
            cpart = part.with_ghosts(over) if over.size else part
            if over.size:
                cand = part.convert(cpart, cand)
            ne = cpart.XE.shape[0]
            cand[:ne] = _ball(cand[:ne], eps)
            new = _compressed(cpart, cand, eps, self.reg, self.k)
            if new is not None and new.G > dual.G:
                if cpart is not part:
                    _transfer(self.accel, lambda v, cpart=cpart: part.convert(cpart, v))
                    self.part = cpart
                    self.ghosted += over.size
                    if cpart.ghost.size > self.max_ghosts * int(cpart.inner.sum()):
                        self.part = None  # rebuild at the next step
                return new
        return None


def _transfer(accel, convert) -> None:
    """Carry an Anderson history over to new variables by a linear map (the Gram matrix recomputed)."""
    accel.transform(convert)
