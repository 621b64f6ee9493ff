r"""The certified SDP upper bound and its rounding for L-infinity lowering beyond enumeration (R3).

``max_u Delta(eps u)`` over ``u in {-1, 1}^d`` (``Delta(delta) = g^T delta + delta^T P delta / 2``, ``g = P v``)
is homogenised with ``y = (u, t)``, ``t = +-1``: ``max_{y in {-1,1}^{d+1}} y^T Q y`` with
``Q = [[eps^2 P / 2, eps g / 2], [eps g^T / 2, 0]]``. Relaxing ``y y^T`` to ``X`` gives ``max tr(Q X)`` s.t.
``diag(X) = 1``, ``X >= 0``, whose dual is ``min 1^T z`` s.t. ``Diag(z) - Q >= 0``. Any ``z`` makes
``1^T z + (d + 1) max(0, -lambda_min(Diag(z) - Q))`` a valid upper bound (weak duality after shifting ``z`` into
feasibility), so the bound is rigorous whatever the solver's accuracy (:func:`_certify`). The relaxation is solved
by cvxpy (Clarabel or SCS) or by the low-rank mixing method; an achieved vertex comes from randomised
(Goemans-Williamson) rounding plus greedy one-flips (:func:`_round_sdp`). Callers pass checked values.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.linalg

SDP_CLARABEL_MAX_DIM = 24  # Clarabel is accurate but slow on big PSD blocks; the mixing method beyond this

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
    name = solver or ("CLARABEL" if d <= SDP_CLARABEL_MAX_DIM else "MIXING")
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

