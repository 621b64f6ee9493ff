r"""Adversarial training of a linear flow (R5, R6): exact closed forms, convex programs, a scalable solver.

The flow is ``N(mu, Sigma)`` with precision ``P = Sigma^{-1}`` and natural offset ``h = P mu``. With the
(biased) sample covariance ``S`` of the data plus ``reg I``, the training objectives are

* **universal** (R5): ``min_{mu, Sigma} max_{||delta|| <= eps} E[NLL(x + delta)]``. By the identity of R4,
  ``E[NLL(x + delta)] = E[NLL(x)] + delta^T P (m - mu) + 1/2 delta^T P delta``, the optimal mean is the sample
  mean ``m`` (the inner max is even in ``m - mu`` and convex in it), and what is left is

  .. math:: J_U(P) = \tfrac12 [\mathrm{tr}(P S) - \log\det P + \epsilon^2 \max_{\|u\| \le 1} u^T P u]
            + \tfrac d2 \log 2\pi ,

  with ``max u^T P u = lambda_max(P)`` for L2 and ``max_j P_jj`` for L1 (a convex function is maximised over
  the cross-polytope at a vertex ``+-eps e_j``). For L2 the optimum is water-filling: ``Sigma* = V diag(max(s_i,
  tau)) V^T`` where ``S = V diag(s) V^T`` and ``sum_i (tau - s_i)_+ = eps^2`` (optimality: with
  ``p_i = min(1/s_i, 1/tau)`` the derivative of ``sum_i (p_i s_i - log p_i) + eps^2 / tau`` in ``1/tau``
  vanishes exactly at that ``tau``; see :func:`linflow.symbolic.water_filling_conditions`).
* **sample-specific** (R6): ``min_{P, h} F(P, h) = mean_x max_{||delta|| <= eps} NLL(x + delta) + reg/2 tr P``.
  In natural parameters ``NLL(y) = 1/2 y^T P y - h^T y + 1/2 h^T P^{-1} h - 1/2 log det P + d/2 log 2 pi``:
  linear in ``(P, h)`` plus a matrix-fractional and a ``-log det`` term, so ``F`` is jointly convex (a mean of
  pointwise maxima of convex functions). The S-lemma turns each inner maximum into an exact LMI
  (:func:`_sample_sdp`); the scalable default is a damped minorise-and-step method (:func:`_sample_damped`)
  with a certified optimality gap.

R5 and R6 differ: the sample attack spends its budget per point (a first-order term ``eps ||P v||`` for points
away from the mean), the universal one only on ``eps^2 lambda_max(P) / 2``; the R6 optimum's mean is not the
sample mean for skewed data, and the R5 model can be worse than the ML fit on the R6 objective (measured on
MNIST). They coincide when all points sit at the mean (each sample attack is then the universal one, R4).

All functions take data ``X`` of shape ``(n, d)``; ``eps = 0`` returns the maximum-likelihood fit.

Modules: :mod:`linflow.training.universal` (R5: water-filling, the cvxpy program), :mod:`linflow.training.sample`
(R6: the S-lemma SDP / L1 LP), :mod:`linflow.training.damped` (R6: the damped solver), and
:mod:`linflow.training.objectives` (FitInfo, the objectives, ``robust_nll``). This package holds the dispatcher
:func:`adversarial_fit` and re-exports every name that ``linflow.training`` held before the split.
"""

from __future__ import annotations

import time

import numpy as np

from ..model import LinearFlow
from ..validation import ATTACKS, check_attack, check_data, check_eps, check_norm
from .damped import _damped_eval as _damped_eval
from .damped import _mixture_minorant as _mixture_minorant
from .damped import _sample_damped
from .objectives import _LOG_2PI as _LOG_2PI
from .objectives import (
    FitInfo,
    _sample_objective,
    _universal_objective,
    robust_nll,
    sample_objective,
    universal_objective,
)
from .objectives import _from_natural as _from_natural
from .objectives import _natural as _natural
from .objectives import _solve as _solve
from .sample import _sample_sdp, sample_program
from .universal import _universal_cvxpy, _water_filling, water_filling, water_level

# The checks of training arguments are public in linflow.validation; their former private names stay importable.
_check_data = check_data
_check_attack = check_attack

_CVXPY_SOLVERS = {"cvxpy": "CLARABEL", "clarabel": "CLARABEL", "scs": "SCS"}

__all__ = ["adversarial_fit", "robust_nll", "water_level", "water_filling", "universal_objective",
           "sample_objective", "sample_program", "FitInfo", "ATTACKS"]


def _check_solver(solver: object) -> str | None:
    if solver is None:
        return None
    if not isinstance(solver, str) or solver.lower() not in _CVXPY_SOLVERS:
        raise ValueError(f"solver must be None (the default method), 'cvxpy', 'clarabel' or 'scs', got {solver!r}")
    return _CVXPY_SOLVERS[solver.lower()]



def adversarial_fit(X: np.ndarray, eps: float, *, attack: str = "universal", norm: float | str = 2,
                    solver: str | None = None, reg: float = 0.0, return_info: bool = False,
                    **options: object) -> LinearFlow | tuple[LinearFlow, FitInfo]:
    r"""Fit a linear flow to data ``X`` (n, d) by adversarial training (R5, R6).

    Parameters
    ----------
    X : data, ``n > d`` rows unless ``reg > 0``.
    eps : the attack budget used in training; ``0`` returns the maximum-likelihood fit ``LinearFlow.fit(X, reg)``.
    attack : ``"universal"`` (R5: ``min max_delta E[NLL(x + delta)]``) or ``"sample"`` (R6:
        ``min mean_x max_delta NLL(x + delta)``).
    norm : 2 or 1 (L-infinity is NP-hard: ``NotImplementedError``).
    solver : ``None`` -- the default method: the water-filling closed form (universal L2), the damped solver
        on the pooled dual (sample L2), or cvxpy/Clarabel where the exact program has no faster method (L1).
        ``"cvxpy"`` (= ``"clarabel"``) or ``"scs"``: the exact convex program (universal: ``min_P tr(PS) - log det P +
        eps^2 c(P)``; sample: the S-lemma SDP of :func:`_sample_sdp`).
    reg : added to the sample covariance (``S + reg I``), i.e. ``reg/2 tr P`` added to the objective.
    return_info : also return a :class:`FitInfo` (objective, solver status, iterations and certified gap).
    options : for the damped solver ``max_iter`` (1000: optima with points near the hard case converge
        sublinearly, 747 iterations were seen at d = 8, eps = 1), ``tol`` (1e-10, relative certified gap),
        ``progress`` (False, a tqdm bar), ``init`` (a starting LinearFlow), ``step`` (``"moment"`` or ``"natural"``),
        ``armijo`` (1e-4), ``max_mixed`` (64), ``memory`` (True: Frank-Wolfe memory on the dual), ``bound_every`` (20:
        the spread certificate's period; 0 with ``memory=False`` is the solver before issue 14), ``minorant``
        (``"pooled"``, the default: proximal ascent on the pooled dual, :mod:`linflow.training.pooled`, finished by
        the damped steps if it stalls; ``"mixture"``, the default when a damped-step option is given;
        ``"spread"``), ``clusters``, ``max_seconds`` (None, a CPU-time cap); for cvxpy, keyword arguments of
        ``solve``.

    The result is deterministic (no randomness is involved). The arguments are validated here, once; the
    solvers of :mod:`linflow.training.universal`, :mod:`~linflow.training.sample` and
    :mod:`~linflow.training.damped` take the checked values.
    """
    attack = check_attack(attack)
    norm = check_norm(norm)
    eps = check_eps(eps)
    reg = check_eps(reg, "reg")
    backend = _check_solver(solver)
    if not isinstance(return_info, bool):
        raise TypeError(f"return_info must be a bool, got {type(return_info).__name__}")
    X, m, S = check_data(X, reg)
    if norm == np.inf:
        raise NotImplementedError(
            "L-infinity adversarial training is not implemented: the inner maximisation of a convex quadratic "
            "over a box is NP-hard (R3), so there is no exact convex program"
        )
    t0 = time.perf_counter()
    if eps == 0.0:
        if options:
            raise TypeError(f"unexpected options for eps = 0 (maximum likelihood): {sorted(options)}")
        flow = LinearFlow.from_gaussian(m, S)
        obj = (_universal_objective(flow, S, 0.0, 2.0) if attack == "universal"
               else _sample_objective(flow, X, 0.0, 2.0, reg))
        info = FitInfo("maximum-likelihood", "optimal", obj, gap=0.0, seconds=time.perf_counter() - t0)
    elif attack == "universal" and norm == 2 and backend is None:
        if options:
            raise TypeError(f"unexpected options for the closed form: {sorted(options)}")
        sig, V, tau = _water_filling(S, eps)
        cov = (V * sig) @ V.T
        flow = LinearFlow.from_gaussian(m, 0.5 * (cov + cov.T))
        info = FitInfo("water-filling", "optimal", _universal_objective(flow, S, eps, 2.0), gap=0.0,
                       seconds=time.perf_counter() - t0)
    elif attack == "universal":
        flow, info = _universal_cvxpy(m, S, eps, norm, backend or "CLARABEL", dict(options))
    elif norm == 2 and backend is None:
        allowed = {"max_iter", "tol", "progress", "init", "armijo", "max_mixed", "step", "minorant", "bound_every",
                   "clusters", "memory", "max_seconds"}
        if set(options) - allowed:
            raise TypeError(f"unexpected options for the damped solver: {sorted(set(options) - allowed)}")
        flow, info = _sample_damped(X, m, S, eps, reg, **options)  # type: ignore[arg-type]
    else:
        flow, info = _sample_sdp(X, eps, reg, norm, backend or "CLARABEL", dict(options))
    return (flow, info) if return_info else flow

