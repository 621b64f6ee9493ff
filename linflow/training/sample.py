r"""Sample-specific adversarial training (R6) as an exact convex program: the S-lemma SDP (L2), the LP (L1).

In natural parameters ``(P, h = P mu)`` the objective ``mean_i max_{||delta|| <= eps} NLL(x_i + delta) + reg/2
tr P`` is jointly convex; :func:`sample_program` states it in cvxpy and :func:`_sample_sdp` solves it. The
scalable default for L2 is the damped solver of :mod:`linflow.training.damped`.
"""

from __future__ import annotations

import time

import numpy as np

from ..model import LinearFlow
from .objectives import _LOG_2PI, FitInfo, _from_natural, _sample_objective, _solve


def sample_program(X: np.ndarray, eps: float, reg: float = 0.0, norm: float = 2) -> tuple:
    r"""The cvxpy pieces of R6 in natural parameters: ``(P, h, robust, clean, constraints)``.

    ``robust`` is an epigraph upper bound of ``mean_i max_{||delta|| <= eps} NLL(x_i + delta) + reg/2 tr P``,
    exact at the optimum of any program that minimises it or bounds it from above (see :func:`_sample_sdp` for
    the LMI); ``clean`` is ``mean_i NLL(x_i) + reg/2 tr P``. Both are convex; ``constraints`` must be imposed.
    """
    import cvxpy as cp

    n, d = X.shape
    P = cp.Variable((d, d), PSD=True)
    h = cp.Variable(d)
    t = cp.Variable(n)
    cons = []
    quad = cp.sum(cp.multiply(X @ P, X), axis=1)  # x_i^T P x_i, affine in P
    base = 0.5 * quad - X @ h  # q_i(0)
    if eps > 0 and norm == 2:
        lam = cp.Variable(n, nonneg=True)
        for i, x in enumerate(X):
            b = cp.reshape(P @ x - h, (d, 1), order="F")
            corner = cp.reshape(2 * t[i] - 2 * base[i] - lam[i] * eps**2, (1, 1), order="F")
            M = cp.bmat([[lam[i] * np.eye(d) - P, -b], [-b.T, corner]])
            cons.append(0.5 * (M + M.T) >> 0)
    elif eps > 0 and norm == 1:
        B = X @ P - np.ones((n, 1)) @ cp.reshape(h, (1, d), order="F")  # row i: (P x_i - h)^T
        cons.append(cp.reshape(t, (n, 1), order="F") @ np.ones((1, d))
                    >= cp.reshape(base, (n, 1), order="F") @ np.ones((1, d)) + eps * cp.abs(B)
                    + 0.5 * eps**2 * np.ones((n, 1)) @ cp.reshape(cp.diag(P), (1, d), order="F"))
    else:
        cons.append(t == base)
    common = 0.5 * cp.matrix_frac(h, P) - 0.5 * cp.log_det(P) + 0.5 * reg * cp.trace(P) + 0.5 * d * _LOG_2PI
    robust = cp.sum(t) / n + common
    clean = cp.sum(base) / n + common
    return P, h, robust, clean, cons


def _sample_sdp(X: np.ndarray, eps: float, reg: float, norm: float, backend: str,
                options: dict) -> tuple[LinearFlow, FitInfo]:
    r"""The exact convex program of R6 in natural parameters ``(P, h = P mu)``, with the mean free.

    Checked values (``X`` float64 ``(n, d)``, ``eps, reg >= 0``, ``norm`` 1.0 or 2.0, ``backend`` a cvxpy solver).

    ``min mean_i t_i + 1/2 h^T P^{-1} h - 1/2 log det P + reg/2 tr P`` where ``t_i`` bounds
    ``max_{||delta|| <= eps} q_i(delta)``, ``q_i(delta) = 1/2 (x_i+delta)^T P (x_i+delta) - h^T (x_i+delta)``
    ``= q_i(0) + b_i^T delta + 1/2 delta^T P delta`` with ``b_i = P x_i - h``.

    *L2*: ``t_i - q_i(delta) >= 0`` on the ball ``eps^2 - ||delta||^2 >= 0`` iff (S-lemma, exact since ``delta = 0``
    is strictly feasible for ``eps > 0``) there is ``nu_i >= 0`` with

    .. math:: t_i - q_i(\delta) - \nu_i (\epsilon^2 - \|\delta\|^2) \ge 0 \quad \text{for all } \delta

    (the multiplier term is *subtracted*: on the ball ``nu_i (eps^2 - ||delta||^2) >= 0``, so ``t_i - q_i >= 0``
    there; a ``+`` would not imply the constraint). Times 2 and with ``lam_i = 2 nu_i`` that is
    ``delta^T (lam_i I - P) delta - 2 b_i^T delta + 2 t_i - 2 q_i(0) - lam_i eps^2 >= 0`` for all ``delta``: a
    quadratic form in ``(delta, 1)``, non-negative everywhere iff its matrix is PSD (``2 q_i(0) = x_i^T P x_i -
    2 h^T x_i``):

    .. math:: \begin{pmatrix} \lambda_i I - P & -b_i \\ -b_i^T & 2 t_i - x_i^T P x_i + 2 h^T x_i
              - \lambda_i \epsilon^2 \end{pmatrix} \succeq 0 ,

    linear in ``(P, h, t, lam)`` (the identity is derived by :func:`linflow.symbolic.s_lemma_lmi`). *L1*: the
    maximum of the convex ``q_i`` over the cross-polytope is at a vertex ``+-eps e_j``, so
    ``t_i >= q_i(0) + eps |b_ij| + eps^2/2 P_jj`` for every ``j`` (exact, linear).
    """
    import cvxpy as cp

    P, h, robust, _, cons = sample_program(X, eps, reg, norm)
    prob = cp.Problem(cp.Minimize(robust), cons)
    t0 = time.perf_counter()
    backend = _solve(prob, backend, options)
    if P.value is None:
        raise RuntimeError(f"cvxpy ({backend}) failed on sample-specific training: status {prob.status}")
    flow = _from_natural(P.value, h.value)
    info = FitInfo(f"cvxpy/{backend}", str(prob.status), _sample_objective(flow, X, eps, norm, reg),
                   solver_value=float(prob.value), seconds=time.perf_counter() - t0)
    return flow, info
