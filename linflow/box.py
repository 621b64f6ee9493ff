r"""L1 and L-infinity attacks on a linear flow: exact where possible, certified where not (DESIGN R3).

For a point with ``v = x - mu`` and precision ``P``, a perturbation ``delta`` changes the NLL by

.. math::  \Delta(\delta) = \delta^T P v + \tfrac12 \delta^T P \delta = g^T\delta + \tfrac12 \delta^T P \delta,
           \qquad g = P v .

(DESIGN R3 writes the same problems for ``(v + delta)^T P (v + delta) = v^T P v + 2 Delta``, hence its factor 2.)

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
  system on the identified support solved exactly ("polish"), keeping the best.
  Either way the optimality is *certified* by the Frank-Wolfe (convexity) bound
  ``min Delta >= Delta(d) + min_{d' in ball} G^T (d' - d) = Delta(d) - G^T d - eps ||G||_*`` with
  ``G = P d + g`` and ``||.||_*`` the dual norm; at the optimum this gap is zero (to rounding).

**The SDP bound.** With ``y = (u, t)``, ``t = +-1`` and ``Q = [[eps^2 P / 2, eps g / 2], [eps g^T / 2, 0]]``,
``max_u Delta(eps u) = max_{y in {-1,1}^{d+1}} y^T Q y`` (flip ``y`` if ``t = -1``). Relaxing ``y y^T`` to
``X`` gives ``max tr(Q X)`` s.t. ``diag(X) = 1``, ``X >= 0``, whose dual is ``min 1^T z`` s.t.
``Diag(z) - Q >= 0``. Any ``z`` makes ``1^T z + (d + 1) max(0, -lambda_min(Diag(z) - Q))`` a valid upper
bound (weak duality after shifting ``z`` into feasibility), so the bound is rigorous whatever the solver's
accuracy. Adding ``c = v^T P v / 2`` to the corner makes ``Q`` PSD (it is then the homogenised
``(v + delta)^T P (v + delta) / 2``); for that PSD form the relaxation is within ``pi / 2`` of the optimum
(Nesterov 1998), i.e. ``SDP + c <= (pi / 2) (opt + c)``. The ratio on ``Delta`` itself can be larger when
``c`` dominates. The relaxation is solved by cvxpy (Clarabel, default for ``d <= 24``; or SCS) or, beyond,
by the low-rank "mixing method" (coordinate ascent on ``X = F F^T``, whose fixed point yields the dual guess
``z``); either way only the certified ``z``-bound is reported.

Public API: :func:`solve_box` (used by :mod:`linflow.perturb` for ``norm`` 1 and inf),
:func:`certified_perturbation` (a :class:`CertifiedPerturbation` with delta, bounds, exactness, method) and
:func:`perturbation_bounds` (the interval ``(lower, upper)`` on the optimal NLL change).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.linalg

from .model import LinearFlow
from .validation import check_eps, check_likelihood, check_norm, check_points

MAX_ENUMERATION_DIM = 26
"""Hard limit for exact vertex enumeration (``2^26`` vertices, a few seconds per point)."""

DEFAULT_MAX_EXACT_DIM = 20
_SDP_CLARABEL_MAX_DIM = 24  # Clarabel is accurate but slow on big PSD blocks; the mixing method beyond this
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


# ---------------------------------------------------------------------------------------------- helpers
def nll_change_batch(P: np.ndarray, V: np.ndarray, D: np.ndarray) -> np.ndarray:
    """``Delta_i = d_i^T P v_i + d_i^T P d_i / 2`` for the rows of ``V`` and ``D`` (no validation)."""
    PD = D @ P
    return np.einsum("ij,ij->i", PD, V) + 0.5 * np.einsum("ij,ij->i", PD, D)


def _dual_norm(G: np.ndarray, norm: float) -> np.ndarray:
    return np.max(np.abs(G), axis=1) if norm == 1.0 else np.sum(np.abs(G), axis=1)


def _frank_wolfe_gap(P: np.ndarray, V: np.ndarray, D: np.ndarray, eps: float, norm: float) -> np.ndarray:
    """``G^T d + eps ||G||_*`` with ``G = P (v + d)``: ``Delta(d) - gap <= min Delta`` by convexity."""
    G = (V + D) @ P
    return np.maximum(np.einsum("ij,ij->i", G, D) + eps * _dual_norm(G, norm), 0.0)


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


# ---------------------------------------------------------------------------------------------- L∞, SDP + rounding
@dataclass(frozen=True)
class _SDPResult:
    upper: float  # certified upper bound on max_u eps g^T u + eps^2 u^T P u / 2
    F: np.ndarray  # a factor of the relaxed moment matrix, X ~= F F^T (solver's, possibly inaccurate)


def _homogenised(P: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    """``Q = [[eps^2 P / 2, eps g / 2], [eps g^T / 2, 0]]``: ``y^T Q y = Delta(eps u)`` for ``y = (u, 1)``."""
    d = P.shape[0]
    Q = np.zeros((d + 1, d + 1))
    Q[:d, :d] = 0.5 * eps**2 * P
    Q[:d, d] = Q[d, :d] = 0.5 * eps * g
    return Q


def _certify(Qn: np.ndarray, z: np.ndarray) -> float:
    """A rigorous upper bound on ``max tr(Qn X)``, ``diag X = 1``, ``X >= 0``, from any dual guess ``z``:
    ``1^T z + (d + 1) t`` with ``t >= -lambda_min(Diag(z) - Qn)`` (then ``Diag(z + t) - Qn >= 0``, weak duality).
    eigvalsh is backward stable; the shift is padded by a generous multiple of its error bound."""
    m = Qn.shape[0]
    M = np.diag(z) - Qn
    lam_min = float(scipy.linalg.eigvalsh(0.5 * (M + M.T))[0])
    pad = 64.0 * m * np.finfo(np.float64).eps * float(np.linalg.norm(M, 2))
    return float(np.sum(z)) + m * (max(0.0, -lam_min) + pad)


def _sdp_cvxpy(Qn: np.ndarray, solver: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The dual SDP ``min 1^T z`` s.t. ``Diag(z) - Qn >= 0`` in cvxpy; returns ``(z, X)`` (``X`` its multiplier)."""
    z = cp.Variable(Qn.shape[0])
    con = cp.diag(z) - Qn >> 0
    prob = cp.Problem(cp.Minimize(cp.sum(z)), [con])
    kwargs = {"eps_abs": 1e-6, "eps_rel": 1e-6, "max_iters": 20000} if solver == "SCS" else {}
    try:
        prob.solve(solver=solver, **kwargs)
    except cp.error.SolverError:
        return None, None
    return z.value, con.dual_value


def _sdp_mixing(Qn: np.ndarray, rng: np.random.Generator, max_sweeps: int = 3000,
                rtol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    r"""The relaxation by the low-rank "mixing method" (Wang, Chang & Kolter 2017; Burer-Monteiro).

    ``X = F F^T`` with unit rows ``f_i`` of rank ``r > sqrt(2 (d + 1))``; block coordinate ascent
    ``f_i <- h_i / ||h_i||``, ``h_i = sum_{j != i} Qn_ij f_j`` maximises ``tr(Qn X)`` in ``f_i`` exactly. At a
    fixed point the dual guess is ``z_i = ||h_i|| + Qn_ii`` (complementary slackness ``(Diag(z) - Qn) X = 0``),
    which :func:`_certify` turns into a rigorous bound. Returns ``(z, F)``.
    """
    m = Qn.shape[0]
    r = int(np.ceil(np.sqrt(2.0 * m))) + 1
    F = rng.standard_normal((m, r))
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    Qo = Qn - np.diag(np.diag(Qn))
    prev = -np.inf
    for _ in range(max_sweeps):
        for i in range(m):
            h = Qo[i] @ F
            nrm = float(np.linalg.norm(h))
            if nrm > 0.0:
                F[i] = h / nrm
        val = float(np.einsum("ij,ij->", Qo @ F, F))
        if val - prev <= rtol * abs(val):
            break
        prev = val
    z = np.linalg.norm(Qo @ F, axis=1) + np.diag(Qn)
    return z, F


def _sdp_bound(P: np.ndarray, g: np.ndarray, eps: float, solver: str | None,
               rng: np.random.Generator) -> _SDPResult:
    """Certified SDP bound ``max tr(Q X)`` s.t. ``diag X = 1``, ``X >= 0`` and a factor of ``X`` for rounding.

    ``solver``: ``"CLARABEL"`` or ``"SCS"`` (cvxpy, dual SDP) or ``"MIXING"`` (low-rank coordinate ascent);
    default Clarabel for ``d <= 24`` and the mixing method beyond (Clarabel is slow on big PSD blocks, SCS
    slow on ill-conditioned ones). Whatever the solver returns, the bound is made rigorous by
    :func:`_certify`; an unsolved problem falls back to the valid ``z = lambda_max(Q) 1``.
    """
    d = P.shape[0]
    Q = _homogenised(P, g, eps)
    scale = float(np.max(np.abs(Q)))
    if scale == 0.0:
        return _SDPResult(0.0, np.eye(d + 1))
    Qn = Q / scale
    name = solver or ("CLARABEL" if d <= _SDP_CLARABEL_MAX_DIM else "MIXING")
    if name == "MIXING":
        z, F = _sdp_mixing(Qn, rng)
    else:
        z, X = _sdp_cvxpy(Qn, name)
        F = None
        if X is not None and np.all(np.isfinite(X)):
            w, E = scipy.linalg.eigh(0.5 * (X + X.T))
            F = E * np.sqrt(np.clip(w, 0.0, None))
    if z is None or not np.all(np.isfinite(z)):
        z = np.full(d + 1, float(scipy.linalg.eigvalsh(Qn)[-1]))
    if F is None:
        F = np.eye(d + 1)
    return _SDPResult(scale * _certify(Qn, z), F)


def _one_flip(P: np.ndarray, g: np.ndarray, eps: float, u: np.ndarray) -> np.ndarray:
    """Greedy best-improvement single sign flips of ``u`` until none raises ``eps g^T u + eps^2 u^T P u / 2``.

    Flipping ``u_k`` changes the objective by ``-2 eps u_k g_k - 2 eps^2 u_k (P u)_k + 2 eps^2 P_kk``.
    """
    u = u.copy()
    Pu = P @ u
    diag = np.diag(P)
    for _ in range(10 * u.size + 10):
        gain = -2.0 * eps * u * g - 2.0 * eps**2 * u * Pu + 2.0 * eps**2 * diag
        k = int(np.argmax(gain))
        if gain[k] <= 1e-14 * (eps * np.abs(g).sum() + eps**2 * np.abs(Pu).sum() + 1e-300):
            break
        Pu -= 2.0 * u[k] * P[:, k]
        u[k] = -u[k]
    return u


def _round_sdp(P: np.ndarray, g: np.ndarray, eps: float, F: np.ndarray, restarts: int,
               rng: np.random.Generator) -> np.ndarray:
    """Best vertex from random-hyperplane rounding of ``X = F F^T`` (``sign(F r)``, homogenising coordinate
    flipped to +1), the sign-gradient vertex and the leading direction of ``X``, the best few refined by
    greedy one-flips. Returns ``u in {-1, 1}^d``."""
    d = P.shape[0]
    Y = F @ rng.standard_normal((F.shape[1], restarts))
    Y = np.where(Y >= 0.0, 1.0, -1.0)
    cand = (Y[:d] * Y[d]).T  # (restarts, d)
    lead = scipy.linalg.svd(F, full_matrices=False)[0][:, 0]
    extra = [np.where(g >= 0.0, 1.0, -1.0), np.where(lead[:d] * (1.0 if lead[d] >= 0 else -1.0) >= 0.0, 1.0, -1.0)]
    cand = np.vstack([cand, *extra])
    vals = eps * cand @ g + 0.5 * eps**2 * np.einsum("ij,jk,ik->i", cand, P, cand)
    order = np.argsort(vals)[::-1][: min(8, len(vals))]
    best_u, best_val = cand[order[0]], -np.inf
    for i in order:
        u = _one_flip(P, g, eps, cand[i])
        val = eps * u @ g + 0.5 * eps**2 * u @ P @ u
        if val > best_val:
            best_u, best_val = u, val
    return best_u


# ---------------------------------------------------------------------------------------------- raising (convex QPs)
def _pdas_box(P: np.ndarray, v: np.ndarray, eps: float, max_iter: int) -> np.ndarray | None:
    r"""Primal-dual active set for ``min g^T d + d^T P d / 2`` s.t. ``|d_i| <= eps`` (``g = P v``).

    KKT: ``P d + g + lambda = 0`` with ``lambda_i >= 0`` where ``d_i = eps``, ``<= 0`` where ``d_i = -eps``,
    ``= 0`` where ``|d_i| < eps``. Active sets ``A+ = {lambda_i + c_i (d_i - eps) > 0}``,
    ``A- = {lambda_i + c_i (d_i + eps) < 0}`` (``c = diag P``); a repeated pair of sets is a KKT point, hence
    the optimum. Returns ``None`` if the sets do not settle within ``max_iter`` iterations.
    """
    d = v.size
    c = np.diag(P)
    x, lam = -v.copy(), np.zeros(d)
    prev = None
    for _ in range(max_iter):
        up = lam + c * (x - eps) > 0.0
        lo = (lam + c * (x + eps) < 0.0) & ~up
        key = (up.tobytes(), lo.tobytes())
        if key == prev:
            return x
        prev = key
        free = ~(up | lo)
        x = np.where(up, eps, np.where(lo, -eps, 0.0))
        if free.any():
            rhs = -(P[free] @ v) - P[np.ix_(free, ~free)] @ x[~free]
            x[free] = scipy.linalg.solve(P[np.ix_(free, free)], rhs, assume_a="pos")
        lam = -(P @ (x + v))
        lam[free] = 0.0
    return None


def _cvxpy_qp(flow: LinearFlow, v: np.ndarray, eps: float, norm: float) -> np.ndarray | None:
    """``argmin ||W (v + eps u)||^2 / ||W v||^2`` over ``u`` in the unit L1 ball or box with cvxpy, where
    ``W = diag(s^-1/2) U^T`` (so the objective is ``(v + delta)^T P (v + delta)``, normalised); CLARABEL, then
    SCS. Returns ``eps u`` or ``None``."""
    W = flow.eigvecs.T / np.sqrt(flow.eigvals)[:, None]
    a = W @ v
    r = max(float(np.linalg.norm(a)), 1e-300)
    u = cp.Variable(v.size)
    con = [cp.norm1(u) <= 1.0] if norm == 1.0 else [cp.abs(u) <= 1.0]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(a / r + (eps / r) * W @ u)), con)
    for solver in ("CLARABEL", "SCS"):
        try:
            prob.solve(solver=solver)
        except cp.error.SolverError:
            continue
        if u.value is not None and np.all(np.isfinite(u.value)):
            return eps * np.asarray(u.value, dtype=np.float64)
    return None


def _project_feasible(d: np.ndarray, eps: float, norm: float) -> np.ndarray:
    if norm == np.inf:
        return np.clip(d, -eps, eps)
    n1 = float(np.abs(d).sum())
    return d * (eps / n1) if n1 > eps else d


def _polish(P: np.ndarray, v: np.ndarray, eps: float, norm: float, d0: np.ndarray) -> list[np.ndarray]:
    """Exact KKT solutions on the active structure of an approximate solution ``d0`` (several thresholds).

    L1 (constraint active): support ``S``, signs ``sigma``: ``[[P_SS, sigma], [sigma^T, 0]] [d_S; l] =
    [-g_S; eps]``. Box: coordinates at a bound fixed, ``P_FF d_F = -g_F - P_FA d_A``. Only feasible
    candidates are returned.
    """
    g = P @ v
    out = []
    for tol in (1e-10, 1e-8, 1e-6, 1e-4):
        if norm == 1.0:
            S = np.abs(d0) > tol * eps
            if not S.any():
                continue
            sig = np.sign(d0[S])
            k = int(S.sum())
            K = np.zeros((k + 1, k + 1))
            K[:k, :k] = P[np.ix_(S, S)]
            K[:k, k] = K[k, :k] = sig
            try:
                sol = scipy.linalg.solve(K, np.concatenate([-g[S], [eps]]), assume_a="sym")
            except (scipy.linalg.LinAlgError, ValueError):
                continue
            d = np.zeros_like(v)
            d[S] = sol[:k]
            if np.all(np.sign(d[S]) == sig) and np.abs(d).sum() <= eps * (1 + 1e-12):
                out.append(_project_feasible(d, eps, norm))
        else:
            up, lo = d0 >= eps * (1 - tol), d0 <= -eps * (1 - tol)
            free = ~(up | lo)
            d = np.where(up, eps, np.where(lo, -eps, 0.0))
            if free.any():
                rhs = -g[free] - P[np.ix_(free, ~free)] @ d[~free]
                try:
                    d[free] = scipy.linalg.solve(P[np.ix_(free, free)], rhs, assume_a="pos")
                except (scipy.linalg.LinAlgError, ValueError):
                    continue
            if np.all(np.abs(d) <= eps * (1 + 1e-12)):
                out.append(_project_feasible(d, eps, norm))
    return out


def _raise(flow: LinearFlow, V: np.ndarray, eps: float, norm: float) -> tuple[np.ndarray, list[str]]:
    """Exact minimisers of ``Delta`` over the L1 ball or box for every row of ``V``."""
    P = flow.precision
    n, d = V.shape
    from .polytope_raise import raise_box, raise_l1  # batched exact active sets with a KKT certificate

    res = (raise_box if norm == np.inf else raise_l1)(P, V, eps)
    D = res.D.copy()
    methods = ["qp-interior" if it == 0 else "qp-active-set" for it in res.iterations]
    for i in np.flatnonzero(~res.certified):  # fallback: cvxpy, then the KKT polish, keep the best
        v = V[i]
        d0 = _cvxpy_qp(flow, v, eps, norm)
        cands = [] if d0 is None else [_project_feasible(d0, eps, norm)]
        cands += [c for c0 in cands[:1] for c in _polish(P, v, eps, norm, c0)]
        cands.append(D[i])
        Dc = np.array(cands)
        vals = nll_change_batch(P, np.broadcast_to(v, Dc.shape), Dc)
        D[i] = Dc[int(np.argmin(vals))]
        methods[i] = "qp-cvxpy"
    return D, methods


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
    r"""Optimal (or best certified) perturbations for ``norm`` 1 or inf, batched (DESIGN R3).

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
    enumeration limit; use :func:`certified_perturbation` for the certified interval.
    """
    if not isinstance(flow, LinearFlow):
        raise TypeError(f"flow must be a LinearFlow, got {type(flow).__name__}")
    p = _check_box_norm(norm)
    lk = check_likelihood(likelihood)
    eps = check_eps(eps)
    V, _ = check_points("V", V, flow.dim)
    return _solve(flow, V, eps, p, lk, _parse_options(options))[0]


@dataclass(frozen=True)
class CertifiedPerturbation:
    """A perturbation with a certified interval on the optimal NLL change (DESIGN R3).

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
                           likelihood: str = "decrease", **options: Any) -> CertifiedPerturbation:
    """The optimal perturbation of ``x`` (one point ``(d,)`` or a batch ``(n, d)``) with its certificate.

    For ``norm=2`` the exact solution of :mod:`linflow.perturb` (DESIGN R1/R2) is returned with
    ``lower == upper``; for 1 and inf see :func:`solve_box` (options as there).
    """
    if not isinstance(flow, LinearFlow):
        raise TypeError(f"flow must be a LinearFlow, got {type(flow).__name__}")
    p = check_norm(norm)
    lk = check_likelihood(likelihood)
    eps = check_eps(eps)
    X, single = check_points("x", x, flow.dim)
    V = X - flow.mean
    if p == 2.0:
        from . import perturb  # the L2 solver lives there (DESIGN R1/R2)

        D = np.atleast_2d(perturb.optimal_perturbation(flow, X, eps, norm=2, likelihood=lk, **options))
        lower = np.atleast_1d(perturb.optimal_nll_change(flow, X, eps, norm=2, likelihood=lk, **options))
        upper = lower.copy()
        methods = ["l2-secular"] * len(V)
    else:
        D, lower, upper, methods = _solve(flow, V, eps, p, lk, _parse_options(options))
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
    point, arrays for a batch. See :func:`certified_perturbation` for the perturbation itself (DESIGN R3).
    """
    cert = certified_perturbation(flow, x, eps, norm=norm, likelihood=likelihood, **options)
    return cert.lower, cert.upper
