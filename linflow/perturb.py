r"""Optimal adversarial perturbations of a linear flow: sample-specific and universal (R1-R4).

For a point ``x`` with ``v = x - mu`` a perturbation ``delta`` changes the negative log-likelihood by

.. math::  \Delta\mathrm{NLL}(\delta) = \delta^T P v + \tfrac12 \delta^T P \delta  \qquad (P = \Sigma^{-1}),

(the log-determinant cancels). ``likelihood="decrease"`` maximises it over ``||delta|| <= eps`` (the NLL goes
up, R1 for L2), ``likelihood="increase"`` minimises it (the NLL goes down, R2 for L2). For L2 the
problems are trust-region subproblems solved exactly in the flow's eigenbasis by :mod:`linflow.secular` (one
eigendecomposition per flow, the flow's own; the batch is vectorised). L1 and L-infinity (R3) are
delegated to the polytope solvers of :mod:`linflow.box`.

This module is the one public door for perturbations of every norm: it validates the arguments once and
dispatches by norm (L2 to :mod:`linflow.secular`, L1 / L-infinity to :mod:`linflow.box`, which imports nothing
from here). :func:`certified_perturbation` and :func:`perturbation_bounds` add a certified interval on the
optimum (R1-R3).

The universal perturbation (R4) maximises the *mean* change over the rows of ``X``. Because
``mean_x dNLL(delta) = delta^T P (m - mu) + 1/2 delta^T P delta`` with ``m`` the mean of the rows, it is the
sample-specific problem at ``v = m - mu``. For a maximum-likelihood fit (``mu = m``) that is the hard case of
R1: ``delta* = +-eps u_min`` and the mean NLL rises by ``eps^2 / (2 s_min)``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import secular
from .model import LinearFlow, check_flow
from .validation import check_eps, check_likelihood, check_norm, check_points

__all__ = [
    "optimal_perturbation",
    "optimal_nll_change",
    "nll_change",
    "universal_perturbation",
    "universal_nll_change",
    "certified_perturbation",
    "perturbation_bounds",
    "CertifiedPerturbation",
]

# Options the exact L2 solver accepts. ``seed`` is accepted (and has no effect: the L2 solution is exact and
# deterministic) so that callers can pass the same options whatever the norm.
_L2_OPTIONS = frozenset({"seed"})


def _check_l2_options(options: dict) -> None:
    unknown = sorted(set(options) - _L2_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s) for norm=2: {', '.join(unknown)} (accepted: {sorted(_L2_OPTIONS)})")


def _solve_l2(flow: LinearFlow, W: np.ndarray, eps: float, likelihood: str) -> np.ndarray:
    """The optimal ``C = U^T delta`` for the rows ``W = U^T v`` (R1 or R2). ``W`` must be a temporary: the kernel
    reuses its memory (``C`` is returned in it)."""
    if likelihood == "decrease":
        return secular._lower_likelihood(flow.eigvals, W, eps, overwrite=True).C
    return secular._raise_likelihood(flow.eigvals, W, eps, overwrite=True).C


def _box_module(norm: float) -> Any:
    """:mod:`linflow.box`, imported where it is first needed (``NotImplementedError`` if it is missing)."""
    if importlib.util.find_spec(f"{__package__}.box") is None:
        raise NotImplementedError(f"norm={norm:g} needs linflow.box, which is not available")
    from . import box

    return box


def _solve_box(flow: LinearFlow, V: np.ndarray, eps: float, norm: float, likelihood: str,
               options: dict) -> np.ndarray:
    box = _box_module(norm)
    return np.asarray(box.solve_box(flow, V, eps, norm=norm, likelihood=likelihood, **options), dtype=np.float64)


def _change_in_eigenbasis(s: np.ndarray, W: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``sum_i c_i w_i / s_i + 1/2 sum_i c_i^2 / s_i`` per row: dNLL without subtracting two NLLs."""
    return np.sum(C * (W + 0.5 * C) / s, axis=1)


def _checked(flow: object, x: object, eps: object, norm: object, likelihood: object, options: dict,
             name: str = "x") -> tuple[LinearFlow, np.ndarray, bool, float, float, str]:
    """The one validation of a perturbation request: ``(flow, x as (n, d), single, eps, norm, likelihood)``.

    Everything below the public functions of this module takes these checked values. :func:`linflow.box.solve_box`
    is a public door of its own and re-checks its (already valid) arguments when norm 1 or inf is dispatched to it.
    """
    flow = check_flow(flow)
    X, single = check_points(name, x, flow.dim)
    eps = check_eps(eps)
    norm = check_norm(norm)
    likelihood = check_likelihood(likelihood)
    if norm == 2.0:
        _check_l2_options(options)
    return flow, X, single, eps, norm, likelihood


def _solved(flow: LinearFlow, V: np.ndarray, eps: float, norm: float, likelihood: str,
            options: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """``(Delta, C or None)`` for checked values and the rows ``V = x - mu``; ``C = U^T Delta`` for L2."""
    if eps == 0.0:
        Z = np.zeros_like(V)
        return Z, (Z if norm == 2.0 else None)
    if norm == 2.0:
        C = _solve_l2(flow, V @ flow.eigvecs, eps, likelihood)
        return C @ flow.eigvecs.T, C
    D = _solve_box(flow, V, eps, norm, likelihood, options)
    if D.shape != V.shape:
        raise RuntimeError(f"linflow.box.solve_box returned shape {D.shape}, expected {V.shape}")
    return D, None


def _changes(flow: LinearFlow, V: np.ndarray, eps: float, norm: float, likelihood: str,
             options: dict) -> np.ndarray:
    """The optimal ``dNLL`` per row of ``V = x - mu``, for checked values (in the eigenbasis, see ``nll_change``)."""
    D, C = _solved(flow, V, eps, norm, likelihood, options)
    if C is None:
        C = D @ flow.eigvecs
    return _change_in_eigenbasis(flow.eigvals, V @ flow.eigvecs, C)


def optimal_perturbation(flow: LinearFlow, x: np.ndarray, eps: float, *, norm: float | str = 2,
                         likelihood: str = "decrease", **options: object) -> np.ndarray:
    """The exact optimal perturbation ``delta`` with ``||delta||_norm <= eps`` for each point (R1-R3).

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
    flow, X, single, eps, norm, likelihood = _checked(flow, x, eps, norm, likelihood, options)
    D, _ = _solved(flow, X - flow.mean, eps, norm, likelihood, options)
    return D[0] if single else D


def nll_change(flow: LinearFlow, x: np.ndarray, delta: np.ndarray) -> float | np.ndarray:
    """``NLL(x + delta) - NLL(x) = delta^T P v + 1/2 delta^T P delta`` (``v = x - mu``), per point.

    Computed in the eigenbasis as ``sum_i c_i (w_i + c_i / 2) / s_i`` with ``c = U^T delta``, ``w = U^T v``,
    so a small change of a large NLL keeps its relative accuracy. ``delta`` has the shape of ``x``, or is one
    ``(d,)`` perturbation applied to every row of a batch ``x``. A float for one point, ``(n,)`` for a batch.
    """
    flow = check_flow(flow)
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
    flow, X, single, eps, norm, likelihood = _checked(flow, x, eps, norm, likelihood, options)
    out = _changes(flow, X - flow.mean, eps, norm, likelihood, options)
    return float(out[0]) if single else out


def universal_perturbation(flow: LinearFlow, X: np.ndarray, eps: float, *, norm: float | str = 2,
                           likelihood: str = "decrease", **options: object) -> np.ndarray:
    """One ``delta`` of shape ``(d,)`` optimising the *mean* NLL change over the rows of ``X`` (R4).

    ``mean_x dNLL = delta^T P (m - mu) + 1/2 delta^T P delta`` with ``m = mean(X)``: the sample-specific
    problem at the point ``m`` (so the same solvers, norms and options as :func:`optimal_perturbation`).
    For a maximum-likelihood fit and L2, ``delta = +-eps u_min``.
    """
    flow, Xb, _, eps, norm, likelihood = _checked(flow, X, eps, norm, likelihood, options, "X")
    D, _ = _solved(flow, Xb.mean(axis=0)[None, :] - flow.mean, eps, norm, likelihood, options)
    return D[0]


def universal_nll_change(flow: LinearFlow, X: np.ndarray, eps: float, *, norm: float | str = 2,
                         likelihood: str = "decrease", **options: object) -> float:
    """The optimal mean NLL change over the rows of ``X`` under one perturbation (R4).

    Equal to ``optimal_nll_change(flow, mean(X), eps, ...)``; for an ML fit and L2 (lowering)
    ``eps^2 / (2 s_min)``.
    """
    flow, Xb, _, eps, norm, likelihood = _checked(flow, X, eps, norm, likelihood, options, "X")
    return float(_changes(flow, Xb.mean(axis=0)[None, :] - flow.mean, eps, norm, likelihood, options)[0])
@dataclass(frozen=True)
class CertifiedPerturbation:
    """A perturbation with a certified interval on the optimal NLL change (R3).

    ``lower <= optimum <= upper``; ``achieved`` is the NLL change of ``delta`` itself: it equals ``lower`` for
    ``likelihood="decrease"`` (a maximum) and ``upper`` for ``"increase"`` (a minimum). ``exact`` is true
    where an exact method was used (L2 and L1 formulae, vertex enumeration, convex QPs): there ``lower`` and
    ``upper`` agree to rounding. ``method`` names the method per point. Arrays for a batch, scalars for one
    point.
    """

    delta: np.ndarray
    lower: np.ndarray | float
    upper: np.ndarray | float
    achieved: np.ndarray | float
    exact: np.ndarray | bool
    method: tuple[str, ...] | str


def certified_perturbation(flow: LinearFlow, x: np.ndarray, eps: float, *, norm: object,
                           likelihood: str = "decrease", **options: object) -> CertifiedPerturbation:
    """The optimal perturbation of ``x`` (one point ``(d,)`` or a batch ``(n, d)``) with its certificate.

    For ``norm=2`` the exact solution (R1/R2) is returned with ``lower == upper``; for 1 and inf see
    :func:`linflow.box.solve_box` (options as there) and :func:`linflow.box.certify_box`.
    """
    flow, X, single, eps, p, lk = _checked(flow, x, eps, norm, likelihood, options)
    V = X - flow.mean
    if p == 2.0:  # exact (R1/R2): lower == upper
        C = np.zeros_like(V) if eps == 0.0 else _solve_l2(flow, V @ flow.eigvecs, eps, lk)
        D = C @ flow.eigvecs.T
        lower = _change_in_eigenbasis(flow.eigvals, V @ flow.eigvecs, C)
        upper = lower.copy()
        methods = ["l2-secular"] * len(V)
    else:
        D, lower, upper, methods = _box_module(p).certify_box(flow, V, eps, norm=p, likelihood=lk, **options)
    exact = np.array([m != "sdp-rounding" for m in methods])
    achieved = upper if lk == "increase" else lower
    if single:
        return CertifiedPerturbation(D[0], float(lower[0]), float(upper[0]), float(achieved[0]), bool(exact[0]),
                                     methods[0])
    return CertifiedPerturbation(D, lower, upper, achieved.copy(), exact, tuple(methods))


def perturbation_bounds(flow: LinearFlow, x: np.ndarray, eps: float, *, norm: object,
                        likelihood: str = "decrease", **options: Any) -> tuple[Any, Any]:
    """A certified interval ``(lower, upper)`` on the optimal NLL change at ``x`` under ``||delta|| <= eps``.

    ``lower <= max_delta Delta <= upper`` (``decrease``) or ``lower <= min_delta Delta <= upper``
    (``increase``), with ``Delta = delta^T P v + delta^T P delta / 2``. The achieved end comes from evaluating
    the returned perturbation; the other from the SDP dual bound (L-infinity lowering beyond enumeration), the
    Frank-Wolfe bound (convex raising) or the exact value (L2, L1 lowering, enumeration). Floats for one
    point, arrays for a batch. See :func:`certified_perturbation` for the perturbation itself (R3).
    """
    cert = certified_perturbation(flow, x, eps, norm=norm, likelihood=likelihood, **options)
    return cert.lower, cert.upper
