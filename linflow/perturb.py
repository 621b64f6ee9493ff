r"""Optimal adversarial perturbations of a linear flow: sample-specific and universal (DESIGN R1-R4).

For a point ``x`` with ``v = x - mu`` a perturbation ``delta`` changes the negative log-likelihood by

.. math::  \Delta\mathrm{NLL}(\delta) = \delta^T P v + \tfrac12 \delta^T P \delta  \qquad (P = \Sigma^{-1}),

(the log-determinant cancels). ``likelihood="decrease"`` maximises it over ``||delta|| <= eps`` (the NLL goes
up, DESIGN R1 for L2), ``likelihood="increase"`` minimises it (the NLL goes down, DESIGN R2 for L2). For L2 the
problems are trust-region subproblems solved exactly in the flow's eigenbasis by :mod:`linflow.secular` (one
eigendecomposition per flow, the flow's own; the batch is vectorised). L1 and L-infinity (DESIGN R3) are
delegated to :func:`linflow.box.solve_box`.

The universal perturbation (DESIGN R4) maximises the *mean* change over the rows of ``X``. Because
``mean_x dNLL(delta) = delta^T P (m - mu) + 1/2 delta^T P delta`` with ``m`` the mean of the rows, it is the
sample-specific problem at ``v = m - mu``. For a maximum-likelihood fit (``mu = m``) that is the hard case of
R1: ``delta* = +-eps u_min`` and the mean NLL rises by ``eps^2 / (2 s_min)``.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from . import secular
from .model import LinearFlow
from .validation import check_eps, check_likelihood, check_norm, check_points

__all__ = [
    "optimal_perturbation",
    "optimal_nll_change",
    "nll_change",
    "universal_perturbation",
    "universal_nll_change",
]

# Options the exact L2 solver accepts. ``seed`` is accepted (and has no effect: the L2 solution is exact and
# deterministic) so that callers can pass the same options whatever the norm.
_L2_OPTIONS = frozenset({"seed"})


def _check_flow(flow: object) -> LinearFlow:
    if not isinstance(flow, LinearFlow):
        raise TypeError(f"flow must be a linflow.LinearFlow, got {type(flow).__name__}")
    return flow


def _check_l2_options(options: dict) -> None:
    unknown = sorted(set(options) - _L2_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s) for norm=2: {', '.join(unknown)} (accepted: {sorted(_L2_OPTIONS)})")


def _solve_l2(flow: LinearFlow, W: np.ndarray, eps: float, likelihood: str) -> np.ndarray:
    """The optimal ``C = U^T delta`` for the rows ``W = U^T v`` (R1 or R2)."""
    if likelihood == "decrease":  # inputs already validated: the flow's sorted positive eigenvalues, finite W
        return secular._lower_likelihood(flow.eigvals, W, eps, secular.DEFAULT_BLOCK_RTOL, secular.DEFAULT_MAXITER).C
    return secular._raise_likelihood(flow.eigvals, W, eps, secular.DEFAULT_MAXITER).C


def _solve_box(flow: LinearFlow, V: np.ndarray, eps: float, norm: float, likelihood: str,
               options: dict) -> np.ndarray:
    if importlib.util.find_spec(f"{__package__}.box") is None:
        raise NotImplementedError(f"norm={norm:g} needs linflow.box, which is not available")
    from . import box

    return np.asarray(box.solve_box(flow, V, eps, norm=norm, likelihood=likelihood, **options), dtype=np.float64)


def _change_in_eigenbasis(s: np.ndarray, W: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``sum_i c_i w_i / s_i + 1/2 sum_i c_i^2 / s_i`` per row: dNLL without subtracting two NLLs."""
    return np.sum(C * (W + 0.5 * C) / s, axis=1)


def _attack(flow: object, x: object, eps: object, norm: object, likelihood: object, options: dict,
            name: str = "x") -> tuple[LinearFlow, np.ndarray, np.ndarray, bool, float, np.ndarray | None]:
    """Validate, solve; return (flow, V, Delta, single, norm, C or None) with ``C = U^T Delta`` for L2."""
    flow = _check_flow(flow)
    V, single = check_points(name, x, flow.dim)
    eps = check_eps(eps)
    norm = check_norm(norm)
    likelihood = check_likelihood(likelihood)
    if norm == 2.0:
        _check_l2_options(options)
    V = V - flow.mean
    if eps == 0.0:
        Z = np.zeros_like(V)
        return flow, V, Z, single, norm, (Z if norm == 2.0 else None)
    if norm == 2.0:
        C = _solve_l2(flow, V @ flow.eigvecs, eps, likelihood)
        return flow, V, C @ flow.eigvecs.T, single, norm, C
    D = _solve_box(flow, V, eps, norm, likelihood, options)
    if D.shape != V.shape:
        raise RuntimeError(f"linflow.box.solve_box returned shape {D.shape}, expected {V.shape}")
    return flow, V, D, single, norm, None


def optimal_perturbation(flow: LinearFlow, x: np.ndarray, eps: float, *, norm: float | str = 2,
                         likelihood: str = "decrease", **options: object) -> np.ndarray:
    """The exact optimal perturbation ``delta`` with ``||delta||_norm <= eps`` for each point (DESIGN R1-R3).

    ``likelihood="decrease"``: ``argmax dNLL(delta)`` (R1 for L2: ``delta = U c`` with
    ``c_i = w_i / (eta s_i - 1)``, ``eta >= 1/s_min`` the root of ``||c|| = eps``; in the hard case ``eta = 1/s_min``
    and the missing norm lies along the first s_min eigenvector with a non-negative coefficient).
    ``likelihood="increase"``: ``argmin dNLL(delta)`` (R2: ``delta = -v`` if ``||v|| <= eps``, otherwise
    ``c_i = -w_i / (1 + eta s_i)``). Here ``v = x - mu``, ``w = U^T v``.

    Parameters
    ----------
    flow : the :class:`~linflow.LinearFlow`.
    x : one point ``(d,)`` or a batch ``(n, d)``; the result has the same shape.
    eps : budget ``>= 0`` (``0`` gives zeros).
    norm : 2 (exact, this module), 1 or ``np.inf`` (delegated to :func:`linflow.box.solve_box` with ``options``).
    likelihood : ``"decrease"`` or ``"increase"``.
    options : for norm 2 only ``seed`` (ignored: the solution is exact); anything else raises ``TypeError``.
    """
    _, _, D, single, _, _ = _attack(flow, x, eps, norm, likelihood, options)
    return D[0] if single else D


def nll_change(flow: LinearFlow, x: np.ndarray, delta: np.ndarray) -> float | np.ndarray:
    """``NLL(x + delta) - NLL(x) = delta^T P v + 1/2 delta^T P delta`` (``v = x - mu``), per point.

    Computed in the eigenbasis as ``sum_i c_i (w_i + c_i / 2) / s_i`` with ``c = U^T delta``, ``w = U^T v``,
    so a small change of a large NLL keeps its relative accuracy. ``delta`` has the shape of ``x``, or is one
    ``(d,)`` perturbation applied to every row of a batch ``x``. A float for one point, ``(n,)`` for a batch.
    """
    flow = _check_flow(flow)
    V, single = check_points("x", x, flow.dim)
    D, d_single = check_points("delta", delta, flow.dim)
    if not d_single and D.shape[0] != V.shape[0]:
        raise ValueError(f"delta must have shape {np.shape(x)} (like x) or ({flow.dim},), got {np.shape(delta)}")
    if single and not d_single:
        raise ValueError(f"delta must have shape ({flow.dim},) for one point x, got {np.shape(delta)}")
    U = flow.eigvecs
    W = (V - flow.mean) @ U
    C = np.broadcast_to(D @ U, W.shape)
    out = _change_in_eigenbasis(flow.eigvals, W, C)
    return float(out[0]) if single else out


def optimal_nll_change(flow: LinearFlow, x: np.ndarray, eps: float, *, norm: float | str = 2,
                       likelihood: str = "decrease", **options: object) -> float | np.ndarray:
    """The optimal NLL change itself, ``dNLL(delta*)`` per point (arguments as :func:`optimal_perturbation`).

    Positive for ``likelihood="decrease"`` (the NLL goes up), non-positive for ``"increase"``. For L2 it is
    evaluated from the solver's eigen-coordinates directly, with no rotation round trip. A float for one point.
    """
    flow, V, D, single, _, C = _attack(flow, x, eps, norm, likelihood, options)
    if C is None:
        C = D @ flow.eigvecs
    out = _change_in_eigenbasis(flow.eigvals, V @ flow.eigvecs, C)
    return float(out[0]) if single else out


def _mean_offset(flow: object, X: object) -> tuple[LinearFlow, np.ndarray]:
    flow = _check_flow(flow)
    Xb, _ = check_points("X", X, flow.dim)
    return flow, Xb.mean(axis=0)


def universal_perturbation(flow: LinearFlow, X: np.ndarray, eps: float, *, norm: float | str = 2,
                           likelihood: str = "decrease", **options: object) -> np.ndarray:
    """One ``delta`` of shape ``(d,)`` optimising the *mean* NLL change over the rows of ``X`` (DESIGN R4).

    ``mean_x dNLL = delta^T P (m - mu) + 1/2 delta^T P delta`` with ``m = mean(X)``: the sample-specific
    problem at the point ``m`` (so the same solvers, norms and options as :func:`optimal_perturbation`).
    For a maximum-likelihood fit and L2, ``delta = +-eps u_min``.
    """
    flow, m = _mean_offset(flow, X)
    return optimal_perturbation(flow, m, eps, norm=norm, likelihood=likelihood, **options)


def universal_nll_change(flow: LinearFlow, X: np.ndarray, eps: float, *, norm: float | str = 2,
                         likelihood: str = "decrease", **options: object) -> float:
    """The optimal mean NLL change over the rows of ``X`` under one perturbation (DESIGN R4).

    Equal to ``optimal_nll_change(flow, mean(X), eps, ...)``; for an ML fit and L2 (lowering)
    ``eps^2 / (2 s_min)``.
    """
    flow, m = _mean_offset(flow, X)
    return optimal_nll_change(flow, m, eps, norm=norm, likelihood=likelihood, **options)
