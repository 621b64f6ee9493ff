"""The pooled dual bound of R6 (:mod:`linflow.training.pooled`, module docstring): its value and eigenstructure
at feasible per-point means, shared by the block ascent (:mod:`.pooled`) and the Newton-CG step
(:mod:`.pooled_newton`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg

from ..model import LinearFlow
from .objectives import _LOG_2PI
from .universal import _water_level


@dataclass
class _Dual:
    """The pooled dual at per-point means ``Mn`` (n, d): value ``G``, mean ``yb`` of ``x + m``, centred ``Yc``,
    eigenpairs ``(c, V)`` of ``cov(x + m) + reg I`` and the water level ``nu``. With ``k > 0`` the problem has ``k``
    further coordinates, constant in the data and left out of ``Mn`` (their means are 0): they add ``k`` eigenvalues
    ``reg`` to the water-filling (:func:`_pooled_dual`)."""

    Mn: np.ndarray
    G: float
    yb: np.ndarray
    Yc: np.ndarray
    c: np.ndarray
    V: np.ndarray
    nu: float
    k: int = 0
    reg: float = 0.0

    @property
    def s(self) -> np.ndarray:
        """Eigenvalues of the primal covariance ``Sigma = V diag(max(c, nu)) V^T`` (ascending)."""
        return np.maximum(self.c, self.nu)

    @cached_property
    def W(self) -> np.ndarray:
        """The points' coordinates ``(x_i - mu) V`` in the eigenbasis (shared by the step and the objective)."""
        return (self.Yc - self.Mn) @ self.V

    @property
    def lam(self) -> float:
        """``lambda = lambda_max(P) = 1 / max(nu, smallest eigenvalue of cov(x + m) + reg I)`` (the left-out
        constant coordinates included)."""
        low = min(float(self.c[0]), self.reg) if self.k else float(self.c[0])
        return 1.0 / max(self.nu, low)

    def flow(self) -> LinearFlow:
        V = self.V
        cov = (V * self.s) @ V.T
        return LinearFlow.from_gaussian(self.yb, 0.5 * (cov + cov.T))


def _ball(Mn: np.ndarray, eps: float | np.ndarray) -> np.ndarray:
    """Rows projected onto the ``eps``-ball (feasible means); ``eps`` may also give each row its own radius."""
    norms = np.sqrt(np.einsum("ij,ij->i", Mn, Mn))
    scale = np.minimum(1.0, eps / np.maximum(norms, np.finfo(float).tiny))
    return Mn * scale[:, None]


def _pooled_dual(X: np.ndarray, Mn: np.ndarray, eps: float, reg: float, k: int = 0) -> _Dual:
    """The pooled dual bound ``Phi`` (module docstring) at feasible means ``Mn`` (rows of norm ``<= eps``). ``k``:
    the number of further coordinates in which the data are constant, left out of ``X`` and ``Mn`` (means 0 there):
    ``cov(x + m) + reg I`` is then block-diagonal with a block ``reg I_k``, which enters the water-filling."""
    n, d = X.shape
    yb = X.mean(axis=0) + Mn.mean(axis=0)
    Yc = np.add(X, Mn)
    Yc -= yb
    # the lower triangle of Yc^T Yc / n (Yc^T is Fortran-ordered: no copy); eigh's divide-and-conquer driver is
    # the fastest here (MNIST-5k, d 663: evd 47 ms, evr 57 ms, ev 211 ms)
    C = scipy.linalg.blas.dsyrk(1.0 / n, Yc.T, trans=0, lower=1)
    C[np.diag_indices(d)] += reg
    c, V = scipy.linalg.eigh(C, lower=True, driver="evd", overwrite_a=True, check_finite=False)
    tau = max(eps**2 - float(np.einsum("ij,ij->", Mn, Mn)) / n, 0.0)
    call = np.sort(np.concatenate([np.full(k, float(reg)), c])) if k else c
    nu = _water_level(call, np.sqrt(tau)) if call[0] > 0 else float(call[0])
    G = 0.5 * (d + k + float(np.sum(np.log(np.maximum(call, nu)))) + (d + k) * _LOG_2PI)
    return _Dual(Mn, G, yb, Yc, c, V, nu, k, float(reg))
