r"""Shared pieces of adversarial training (R5, R6): the fit report, the objectives, natural parameters.

* :func:`universal_objective` ``J_U`` of R5 (the worst expected NLL under one perturbation, mean at the data mean);
* :func:`sample_objective` of R6 (``robust_nll`` with the sample attack ``+ reg/2 tr P``);
* :func:`robust_nll`: the mean worst-case NLL for either attack, exact via :mod:`linflow.perturb` (R1-R4);
* natural parameters ``(P, h = P mu)`` (:func:`_natural`, :func:`_from_natural`) and the cvxpy call with its
  Clarabel -> SCS fallback (:func:`_solve`), shared by the R5 and R6 convex programs.

The public functions validate their arguments; the underscored twins (``_universal_objective``,
``_sample_objective``, ``_robust_nll``) take checked values and are what the solvers call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from ..model import LinearFlow, check_flow
from ..perturb import _changes
from ..validation import as_float_array, check_attack, check_eps, check_norm

_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class FitInfo:
    """How an adversarial fit was obtained: the solver, its status, and (iterative solvers) its convergence.

    ``objective`` is the training objective at the returned model. ``gap`` is a certified upper bound on
    ``objective - optimum`` where the solver provides one (the damped solver: the value of the minorant's
    own minimum, R6), else NaN. ``solver_value`` is the optimal value the convex solver itself reported
    (cvxpy), to be compared with ``objective``, the exact objective re-evaluated at the returned model.
    ``history`` holds ``(objective, gap, step)`` per iteration.
    """

    solver: str
    status: str
    objective: float
    solver_value: float = float("nan")
    gap: float = float("nan")
    iterations: int = 0
    converged: bool = True
    seconds: float = 0.0
    history: tuple[tuple[float, float, float], ...] = field(default=(), repr=False)


def universal_objective(flow: LinearFlow, S: np.ndarray, eps: float, *, norm: float = 2) -> float:
    r"""The universal training objective ``J_U`` (R5) of ``flow`` on data of covariance ``S``, mean ``m=mu``.

    ``1/2 [tr(P S) + log det Sigma + eps^2 c(P)] + d/2 log 2 pi`` with ``c = lambda_max(P)`` (L2) or
    ``max_j P_jj`` (L1): the worst expected NLL over a universal perturbation when the flow's mean is the data
    mean (for another mean use :func:`robust_nll`).
    """
    return _universal_objective(check_flow(flow), S, check_eps(eps), check_norm(norm))


def _universal_objective(flow: LinearFlow, S: np.ndarray, eps: float, norm: float) -> float:
    """:func:`universal_objective` for checked values (``S`` the float64 covariance the fit was made on)."""
    P = flow.precision
    if norm == 2:
        c = 1.0 / flow.eigvals[0]
    elif norm == 1:
        c = float(np.max(np.diag(P)))
    else:
        raise NotImplementedError("universal L-infinity training is not a tractable exact program (R3)")
    return 0.5 * (float(np.sum(P * S)) + flow.logdet_cov + eps**2 * c) + 0.5 * flow.dim * _LOG_2PI


def _solve(prob: object, backend: str, options: dict) -> str:
    """Solve a cvxpy problem with ``backend``; if Clarabel fails numerically (it does, rarely, on the L1 sample
    program), retry once with SCS at tight tolerances. Returns the name of the solver that answered."""
    import cvxpy as cp

    try:
        prob.solve(solver=backend, **options)  # type: ignore[attr-defined]
        return backend
    except cp.error.SolverError:
        if backend != "CLARABEL" or options:
            raise
    prob.solve(solver="SCS", eps_abs=1e-10, eps_rel=1e-10, max_iters=200_000)  # type: ignore[attr-defined]
    return "SCS (after CLARABEL failed)"



def _natural(flow: LinearFlow) -> tuple[np.ndarray, np.ndarray]:
    P = flow.precision
    return P, P @ flow.mean


def _from_natural(P: np.ndarray, h: np.ndarray) -> LinearFlow:
    p, U = scipy.linalg.eigh(0.5 * (P + P.T))
    if p[0] <= 0:
        raise np.linalg.LinAlgError("precision lost positive definiteness")
    cov = (U / p) @ U.T
    return LinearFlow.from_gaussian((U / p) @ (U.T @ h), 0.5 * (cov + cov.T))


def sample_objective(flow: LinearFlow, X: np.ndarray, eps: float, *, norm: float = 2, reg: float = 0.0) -> float:
    """The sample-specific training objective of R6: ``robust_nll(flow, X, eps) + reg/2 tr(P)``."""
    flow, X, eps, norm = _checked_robust(flow, X, eps, norm)
    return _sample_objective(flow, X, eps, norm, check_eps(reg, "reg"))


def _sample_objective(flow: LinearFlow, X: np.ndarray, eps: float, norm: float, reg: float) -> float:
    """:func:`sample_objective` for checked values."""
    return _robust_nll(flow, X, eps, "sample", norm) + 0.5 * reg * float(np.trace(flow.precision))


def _checked_robust(flow: object, X: object, eps: object, norm: object) -> tuple[LinearFlow, np.ndarray, float, float]:
    flow = check_flow(flow)
    X = as_float_array("X", X, ndim=(2,))
    if X.shape[1] != flow.dim:
        raise ValueError(f"X must have {flow.dim} columns (the flow's dimension), got shape {X.shape}")
    return flow, X, check_eps(eps), check_norm(norm)


def robust_nll(flow: LinearFlow, X: np.ndarray, eps: float, *, attack: str = "sample",
               norm: float | str = 2) -> float:
    r"""The adversarial objective of ``flow`` on data ``X``: the mean worst-case NLL (nats), computed exactly.

    * ``"sample"``: ``mean_i [NLL(x_i) + max_{||delta_i|| <= eps} dNLL(x_i, delta_i)]`` with the exact per-row
      attack of :func:`linflow.perturb.optimal_nll_change` (R1, R3).
    * ``"universal"``: ``mean_i NLL(x_i) + max_{||delta|| <= eps} [delta^T P (m - mu) + 1/2 delta^T P delta]``
      (R4: the mean NLL change is the change at the data mean ``m``), again by ``optimal_nll_change``.

    Exact for ``norm`` 2 and 1. For ``norm = inf`` (NP-hard, R3) it is exact only while
    :mod:`linflow.box` enumerates the box's vertices (``d <= 20`` by default); beyond that it is the value of the
    best vertex found, a lower bound (use :func:`linflow.certified_perturbation` for the certified interval).
    """
    attack = check_attack(attack)
    flow, X, eps, norm = _checked_robust(flow, X, eps, norm)
    return _robust_nll(flow, X, eps, attack, norm)


def _robust_nll(flow: LinearFlow, X: np.ndarray, eps: float, attack: str, norm: float) -> float:
    """:func:`robust_nll` for checked values: the exact attack by :func:`linflow.perturb._changes`."""
    clean = float(np.mean(flow.nll(X)))
    if eps == 0.0:
        return clean
    if attack == "sample":
        rise = float(np.mean(_changes(flow, X - flow.mean, eps, norm, "decrease", {})))
    else:
        rise = float(_changes(flow, X.mean(axis=0)[None, :] - flow.mean, eps, norm, "decrease", {})[0])
    return clean + rise
