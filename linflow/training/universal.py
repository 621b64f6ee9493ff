r"""Universal adversarial training (R5): water-filling in closed form and the convex program in cvxpy.

``min_P J_U(P) = 1/2 [tr(P S) - log det P + eps^2 c(P)] + d/2 log 2 pi`` with ``c = lambda_max`` (L2) or
``max_j P_jj`` (L1), the mean fixed at the sample mean. For L2 the optimum is water-filling:
``Sigma* = V diag(max(s_i, tau)) V^T`` with ``sum_i (tau - s_i)_+ = eps^2`` (:func:`water_level`).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg

from ..model import LinearFlow
from ..validation import as_float_array, check_eps
from .objectives import _LOG_2PI, FitInfo, _solve, _universal_objective


def water_level(s: np.ndarray, eps: float) -> float:
    r"""The water level ``tau`` of R5: the unique root of ``sum_i (tau - s_i)_+ = eps^2``.

    Exact, no iteration: with ``s`` sorted ascending and ``c_k = s_1 + ... + s_k``, the candidates are
    ``tau_k = (eps^2 + c_k) / k``; the answer is ``tau_k`` for the largest ``k`` with ``s_k <= tau_k`` (the
    floor covers exactly the ``k`` smallest eigenvalues). ``eps = 0`` gives ``s_min``.
    """
    s = np.sort(as_float_array("s", s, ndim=(1,)))
    eps = check_eps(eps)
    if s[0] < 0:
        raise ValueError(f"s must be non-negative (eigenvalues of a covariance), got min {s[0]:.3g}")
    return _water_level(s, eps)


def _water_level(s: np.ndarray, eps: float) -> float:
    """:func:`water_level` for checked values: ``s`` float64, non-negative, sorted ascending; ``eps >= 0``."""
    if eps == 0.0:
        return float(s[0])
    k = np.arange(1, s.size + 1)
    tau = (eps**2 + np.cumsum(s)) / k
    kstar = int(np.nonzero(s <= tau)[0][-1])
    return float(max(tau[kstar], s[0]))


def water_filling(S: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``(eigvals of Sigma*, eigvecs V, tau)`` for a covariance ``S`` (R5).

    ``Sigma* = V diag(max(s, tau)) V^T`` with ``tau`` from :func:`water_level`.
    """
    s, V = scipy.linalg.eigh(S)
    tau = water_level(s, eps)
    return np.maximum(s, tau), V, tau


def _water_filling(S: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`water_filling` for checked values (``S`` positive definite, as :func:`linflow.validation.check_data`
    returns it; ``eps >= 0``)."""
    s, V = scipy.linalg.eigh(S)
    tau = _water_level(s, eps)
    return np.maximum(s, tau), V, tau


def _universal_cvxpy(m: np.ndarray, S: np.ndarray, eps: float, norm: float, backend: str,
                     options: dict) -> tuple[LinearFlow, FitInfo]:
    """``min_P tr(P S) - log det P + eps^2 c(P)`` with cvxpy (``c`` = lambda_max or max diag; R5).

    Checked values: ``m``, ``S`` from :func:`linflow.validation.check_data`, ``eps >= 0``, ``norm`` 1.0 or 2.0,
    ``backend`` a cvxpy solver name."""
    import cvxpy as cp

    d = S.shape[0]
    P = cp.Variable((d, d), PSD=True)
    obj = cp.sum(cp.multiply(P, S)) - cp.log_det(P)  # tr(PS), S symmetric (cheaper to compile than P @ S)
    if eps > 0:  # a separate problem for eps = 0 (REFERENCES: an eps = 0 parameter confused solvers)
        obj = obj + eps**2 * (cp.lambda_max(P) if norm == 2 else cp.max(cp.diag(P)))
    prob = cp.Problem(cp.Minimize(obj))
    t0 = time.perf_counter()
    backend = _solve(prob, backend, options)
    if P.value is None:
        raise RuntimeError(f"cvxpy ({backend}) failed on universal training: status {prob.status}")
    Pv = 0.5 * (P.value + P.value.T)
    flow = LinearFlow.from_gaussian(m, np.linalg.inv(Pv))
    info = FitInfo(f"cvxpy/{backend}", str(prob.status), _universal_objective(flow, S, eps, norm),
                   solver_value=0.5 * float(prob.value) + 0.5 * d * _LOG_2PI, seconds=time.perf_counter() - t0)
    return flow, info

