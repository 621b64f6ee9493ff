r"""L1 and L-infinity attacks on a linear flow: exact where possible, certified where not (R3).

For a point with ``v = x - mu`` and precision ``P``, a perturbation ``delta`` changes the NLL by

.. math::  \Delta(\delta) = \delta^T P v + \tfrac12 \delta^T P \delta = g^T\delta + \tfrac12 \delta^T P \delta,
           \qquad g = P v .

(R3 writes the same problems for ``(v + delta)^T P (v + delta) = v^T P v + 2 Delta``, hence its factor 2.)

* **L1, lowering the likelihood** (``max Delta`` over ``||delta||_1 <= eps``): ``Delta`` is convex, so its
  maximum over the cross-polytope is at one of the ``2d`` vertices ``+-eps e_j``:
  ``max Delta = max_j (eps |g_j| + eps^2 P_jj / 2)``. Exact, O(d^2) per point, batched.
* **L-infinity, lowering**: ``max Delta`` over the box ``|delta_i| <= eps`` (NP-hard in general). The maximum
  of a convex function over a box is at a vertex ``delta = eps u``, ``u in {-1, 1}^d``. Exact by enumeration
  of the ``2^d`` vertices (blocked matrix products, memory-bounded) up to a dimension limit; beyond it the
  SDP relaxation of the homogenised problem (below) gives a certified upper bound, and randomised
  (Goemans-Williamson) rounding of its solution plus greedy one-flip improvement gives an achieved vertex.
* **Raising the likelihood** (``min Delta``, both norms): a strictly convex QP, solved exactly for the whole
  batch by :mod:`linflow.polytope_raise` (active sets whose fixed point *is* the KKT system, ending in a finite
  primal active-set method); a row whose certificate is not below 1e-12 falls back to cvxpy, then the KKT
  system on the identified support solved exactly ("polish"), keeping the best (:mod:`linflow.box_qp`).
  Either way the optimality is *certified* by the Frank-Wolfe (convexity) bound
  ``min Delta >= Delta(d) + min_{d' in ball} G^T (d' - d) = Delta(d) - G^T d - eps ||G||_*`` with
  ``G = P d + g`` and ``||.||_*`` the dual norm; at the optimum this gap is zero (to rounding).

Modules: this one holds the option parsing, the L1 vertex formula, the L-infinity enumeration and the dispatch
(:func:`solve_box`, :func:`certify_box`); :mod:`linflow.box_sdp` the certified SDP bound and its rounding;
:mod:`linflow.box_qp` the convex raising QPs and their Frank-Wolfe certificate. With ``c = v^T P v / 2`` added in
the corner of the homogenised form ``Q`` of :mod:`linflow.box_sdp` (it is then PSD, the form
``(v + delta)^T P (v + delta) / 2``), the SDP relaxation is within ``pi / 2`` of the optimum (Nesterov 1998), i.e.
``SDP + c <= (pi / 2) (opt + c)``; the ratio on ``Delta`` itself can be larger when ``c`` dominates.

The public door for perturbations of every norm is :mod:`linflow.perturb` (it calls :func:`solve_box` and
:func:`certify_box`); this module imports nothing from it. ``certified_perturbation``, ``perturbation_bounds``
and ``CertifiedPerturbation`` live in :mod:`linflow.perturb`; ``linflow/__init__`` also binds them here, so that
``from linflow.box import certified_perturbation`` keeps working without an import from this module to perturb.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .box_qp import _frank_wolfe_gap, _raise, nll_change_batch
from .box_sdp import _round_sdp, _sdp_bound
from .model import LinearFlow, check_flow
from .validation import check_eps, check_likelihood, check_norm, check_points

__all__ = ["solve_box", "certify_box", "nll_change_batch", "MAX_ENUMERATION_DIM", "DEFAULT_MAX_EXACT_DIM"]

MAX_ENUMERATION_DIM = 26
"""Hard limit for exact vertex enumeration (``2^26`` vertices, a few seconds per point)."""

DEFAULT_MAX_EXACT_DIM = 20
_OPTIONS = ("exact", "seed", "max_exact_dim", "restarts", "sdp_solver")
_BLOCK_ELEMENTS = 1 << 22  # at most ~4M float64 values (32 MB) per enumeration block


# ---------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class _Options:
    exact: bool | None = None
    seed: int = 0
    max_exact_dim: int = DEFAULT_MAX_EXACT_DIM
    restarts: int = 64
    sdp_solver: str | None = None


def _parse_options(options: dict[str, Any]) -> _Options:
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; supported options are {list(_OPTIONS)}")
    exact = options.get("exact")
    if exact is not None and not isinstance(exact, bool | np.bool_):
        raise TypeError(f"exact must be True, False or None, got {type(exact).__name__}")
    ints = {}
    for name, default, low in (("seed", 0, 0), ("max_exact_dim", DEFAULT_MAX_EXACT_DIM, 0), ("restarts", 64, 1)):
        val = options.get(name, default)
        if isinstance(val, bool) or not isinstance(val, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(val).__name__}")
        if val < low:
            raise ValueError(f"{name} must be >= {low}, got {val}")
        ints[name] = int(val)
    if ints["max_exact_dim"] > MAX_ENUMERATION_DIM:
        raise ValueError(f"max_exact_dim must be <= {MAX_ENUMERATION_DIM}, got {ints['max_exact_dim']}")
    solver = options.get("sdp_solver")
    if solver is not None:
        if not isinstance(solver, str):
            raise TypeError(f"sdp_solver must be a str or None, got {type(solver).__name__}")
        if solver.upper() not in ("CLARABEL", "SCS", "MIXING"):
            raise ValueError(f"sdp_solver must be 'CLARABEL', 'SCS' or 'MIXING', got {solver!r}")
        solver = solver.upper()
    return _Options(None if exact is None else bool(exact), ints["seed"], ints["max_exact_dim"],
                    ints["restarts"], solver)


def _check_box_norm(norm: object) -> float:
    p = check_norm(norm)
    if p == 2.0:
        raise ValueError("norm must be 1 or np.inf for linflow.box (norm 2 is solved by linflow.perturb)")
    return p


# ---------------------------------------------------------------------------------------------- L1, lowering
def _l1_lower(P: np.ndarray, V: np.ndarray, eps: float) -> np.ndarray:
    """The best of the ``2d`` vertices ``+-eps e_j``: ``j = argmax eps |g_j| + eps^2 P_jj / 2``, sign of ``g_j``."""
    G = V @ P
    score = eps * np.abs(G) + 0.5 * eps**2 * np.diag(P)
    j = np.argmax(score, axis=1)
    rows = np.arange(V.shape[0])
    D = np.zeros_like(V)
    D[rows, j] = np.where(G[rows, j] >= 0.0, eps, -eps)
    return D


# ---------------------------------------------------------------------------------------------- L∞, enumeration
def _all_signs(k: int) -> np.ndarray:
    """All ``2^k`` sign vectors in ``{-1, 1}^k`` as rows (``k = 0`` gives one empty row)."""
    idx = np.arange(1 << k)[:, None]
    return (((idx >> np.arange(k)) & 1) * 2 - 1).astype(np.float64)


def _enumerate_vertices(P: np.ndarray, V: np.ndarray, eps: float) -> np.ndarray:
    r"""Exact ``argmax_{u in {-1,1}^d} eps g^T u + eps^2 u^T P u / 2`` for every row, by blocked enumeration.

    Split ``u = (h, l)`` into a high block (``d - b`` signs) and a low block (``b`` signs). Then
    ``f(h, l) = a(h) + c(l) + eps^2 h^T P_hl l`` where ``a`` and ``c`` hold the block-diagonal quadratic and
    linear terms. The cross term for a chunk of ``h`` rows against all ``l`` is one matrix product, shared by
    all points of the batch; points are processed in groups, so memory stays below a small multiple of
    ``_BLOCK_ELEMENTS`` values whatever the batch size.
    """
    n, d = V.shape
    group = max(1, _BLOCK_ELEMENTS // (1 << max(min(d, 11), d - min(d, 11))))
    if n > group:
        return np.concatenate([_enumerate_vertices(P, V[i:i + group], eps) for i in range(0, n, group)])
    b = min(d, 11)
    Gm = V @ P
    L = _all_signs(b)
    H = _all_signs(d - b)
    Pll, Phh, Phl = P[d - b:, d - b:], P[: d - b, : d - b], P[: d - b, d - b:]
    quad_l = 0.5 * eps**2 * np.einsum("ij,jk,ik->i", L, Pll, L)
    quad_h = 0.5 * eps**2 * np.einsum("ij,jk,ik->i", H, Phh, H)
    lin_l = eps * Gm[:, d - b:] @ L.T  # (n, 2^b)
    lin_h = eps * Gm[:, : d - b] @ H.T  # (n, 2^(d-b))
    cross = eps**2 * H @ Phl  # (2^(d-b), b)
    best = np.full(n, -np.inf)
    best_h = np.zeros(n, dtype=np.int64)
    best_l = np.zeros(n, dtype=np.int64)
    chunk = max(1, _BLOCK_ELEMENTS // (n * L.shape[0]))
    for start in range(0, H.shape[0], chunk):
        stop = min(start + chunk, H.shape[0])
        M = cross[start:stop] @ L.T + quad_h[start:stop, None] + quad_l[None, :]  # (k, 2^b)
        F = M[None, :, :] + lin_h[:, start:stop, None] + lin_l[:, None, :]  # (n, k, 2^b)
        flat = F.reshape(n, -1)
        arg = np.argmax(flat, axis=1)
        val = flat[np.arange(n), arg]
        better = val > best
        best[better] = val[better]
        best_h[better] = start + arg[better] // L.shape[0]
        best_l[better] = arg[better] % L.shape[0]
    U = np.concatenate([H[best_h], L[best_l]], axis=1)
    return eps * U


# ---------------------------------------------------------------------------------------------- core
def _solve(flow: LinearFlow, V: np.ndarray, eps: float, norm: float, likelihood: str,
           opts: _Options) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Deltas, certified (lower, upper) on the optimal ``Delta`` and the method per row."""
    P = flow.precision
    n, d = V.shape
    if eps == 0.0:
        z = np.zeros(n)
        return np.zeros_like(V), z, z.copy(), ["zero-budget"] * n
    if likelihood == "increase":
        D, methods = _raise(flow, V, eps, norm)
        achieved = nll_change_batch(P, V, D)
        gap = _frank_wolfe_gap(P, V, D, eps, norm)
        return D, achieved - gap, achieved, methods
    if norm == 1.0:
        D = _l1_lower(P, V, eps)
        val = nll_change_batch(P, V, D)
        return D, val, val.copy(), ["l1-vertex"] * n
    if opts.exact is True and d > MAX_ENUMERATION_DIM:
        raise ValueError(f"exact=True enumerates 2^d vertices and is limited to d <= {MAX_ENUMERATION_DIM}, "
                         f"got d={d}; pass exact=None or False for the certified SDP interval")
    enumerate_ = opts.exact is True or (opts.exact is None and d <= opts.max_exact_dim)
    if enumerate_:
        D = _enumerate_vertices(P, V, eps)
        val = nll_change_batch(P, V, D)
        return D, val, val.copy(), ["enumeration"] * n
    D = np.zeros_like(V)
    upper = np.zeros(n)
    G = V @ P
    for i in range(n):
        rng = np.random.default_rng([opts.seed, i])
        sdp = _sdp_bound(P, G[i], eps, opts.sdp_solver, rng)
        u = _round_sdp(P, G[i], eps, sdp.F, opts.restarts, rng)
        D[i] = eps * u
        upper[i] = sdp.upper
    lower = nll_change_batch(P, V, D)
    return D, lower, np.maximum(upper, lower), ["sdp-rounding"] * n


def solve_box(flow: LinearFlow, V: np.ndarray, eps: float, *, norm: float, likelihood: str,
              **options: Any) -> np.ndarray:
    r"""Optimal (or best certified) perturbations for ``norm`` 1 or inf, batched (R3).

    Parameters
    ----------
    flow : the linear flow.
    V : ``(n, d)`` batch of ``v = x - mu`` (float64).
    eps : budget ``>= 0``.
    norm : ``1`` or ``np.inf`` (aliases as in :func:`linflow.validation.check_norm`).
    likelihood : ``"decrease"`` (maximise ``Delta = delta^T P v + delta^T P delta / 2``) or ``"increase"``
        (minimise it).
    options : ``exact`` (``None``: enumerate the box vertices if ``d <= max_exact_dim``; ``True``: always
        enumerate, ``ValueError`` for ``d > 26``; ``False``: SDP + rounding), ``seed`` (rounding), ``max_exact_dim``
        (default 20), ``restarts`` (random hyperplanes, default 64), ``sdp_solver`` (``"CLARABEL"``, ``"SCS"`` or
        ``"MIXING"``; default Clarabel for ``d <= 24``, the low-rank mixing method beyond).

    Returns
    -------
    The ``(n, d)`` batch of deltas with ``||delta|| <= eps``. Exact except for L-infinity lowering beyond the
    enumeration limit; use :func:`linflow.certified_perturbation` for the certified interval.

    A public door of its own (it validates its arguments); :func:`linflow.perturb.optimal_perturbation` calls it
    for ``norm`` 1 and inf.
    """
    check_flow(flow)
    p = _check_box_norm(norm)
    lk = check_likelihood(likelihood)
    eps = check_eps(eps)
    V, _ = check_points("V", V, flow.dim)
    return _solve(flow, V, eps, p, lk, _parse_options(options))[0]


def certify_box(flow: LinearFlow, V: np.ndarray, eps: float, *, norm: float, likelihood: str,
                **options: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Deltas, certified ``(lower, upper)`` on the optimal ``Delta`` and the method per row (R3).

    For *checked* values only (the caller is the public door :func:`linflow.perturb.certified_perturbation`):
    ``V`` a float64 ``(n, d)`` batch of ``x - mu``, ``eps >= 0`` a float, ``norm`` 1.0 or ``np.inf``, ``likelihood``
    ``"decrease"`` or ``"increase"``. Only ``options`` are parsed here (as in :func:`solve_box`).
    """
    return _solve(flow, V, eps, norm, likelihood, _parse_options(options))
