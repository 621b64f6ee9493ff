r"""The spread minorant of the damped R6 solver: hard-case points spread over a cluster of small eigenvalues.

At an iterate of :func:`linflow.training.damped._sample_damped` (flow ``N(mu, U diag(s) U^T)``, ``s`` ascending)
every point ``x_i`` has its exact worst perturbation ``delta_i = U c_i`` (R1), ``w_i = U^T (x_i - mu)``. Near the
optimum the smallest eigenvalues of the model cluster (a water-filled level, as in R5), and the points whose worst
perturbation lies mostly in that cluster ``E`` (the first ``r`` eigen-coordinates) are near R1's hard case: their
optimal perturbation is a *distribution* over a sphere in ``E``, not one point. Any distribution of feasible
perturbations gives a minorant of ``F`` (R6), so this module builds, for a cluster size ``r``:

* point ``i`` keeps its worst perturbation with weight ``omega_i``; with weight ``1 - omega_i`` its ``E``-part
  ``c_i^E`` is replaced by a mean-zero distribution on the sphere of radius ``rho_i = ||c_i^E||`` in ``E``
  (so the perturbation stays on the ``eps``-sphere) with second moment ``rho_i^2 B``, ``B`` a trace-one PSD
  ``r x r`` shape shared by all points (any such ``B`` is realised by the atoms ``+-rho_i sqrt(b_j) v_j``);
* the minorant's minimum is the weighted ML fit, of value ``1/2 (d + log det C + d log 2 pi)`` with ``C`` the
  weighted covariance ``+ reg I``. ``log det C`` is jointly concave in ``(omega, R = T(omega) B)``,
  ``T(omega) = mean_i (1 - omega_i) rho_i^2`` (``C`` is affine in them minus ``M M^T``, ``M`` affine in
  ``omega``); it is maximised by alternating a water-filling in ``R`` (``max log det(C_0 + J R J^T)`` over
  ``tr R <= T``: ``R = V diag((nu - 1/k_j)_+) V^T`` with ``V diag(k) V^T = (C_0^{-1})_{EE}``) with L-BFGS-B in
  ``omega`` over ``[0, 1]^n``.

Every value returned is the minimum of a true minorant (feasible perturbations), so it is a valid lower bound on
``min F`` whatever the cluster, the starting weights or the number of rounds: these only affect how tight it is.
The costs use that the alternatives differ from the points only in ``E``: one Cholesky factorisation plus
``O(d^2 r + n d r)`` per evaluation; only points with a share of their budget in ``E`` (above ``min_share``
of the largest) get a free weight, the others keep ``omega_i = 1``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.optimize import minimize

from .objectives import _LOG_2PI
from .universal import _water_level

# cluster widths: the first r eigen-coordinates with s_j <= s_min (1 + kappa) for each kappa
_CLUSTERS = (0.02, 0.2)


def _spread_parts(E0: np.ndarray, M0: np.ndarray, Ya: np.ndarray, CE: np.ndarray, n: int,
                  reg: float, om: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(M, C)`` of the mixture with weights ``om`` and spread ``R`` (r x r, already scaled by ``T``)."""
    r = CE.shape[1]
    a = (1.0 - om) / n
    M = M0.copy()
    M[:r] -= a @ CE
    C = E0.copy()
    # sum_i a_i (Zm Zm^T - Ya Ya^T) with Zm = Ya - [c^E, 0]: -Ya D^T - D Ya^T + D D^T, D supported on E
    YD = (Ya.T * a) @ CE  # (d, r)
    C[:, :r] -= YD
    C[:r, :] -= YD.T
    C[:r, :r] += (CE.T * a) @ CE + R
    C -= np.outer(M, M)
    C[np.diag_indices_from(C)] += reg
    return M, 0.5 * (C + C.T)


def _spread_minorant(Wc: np.ndarray, Cc: np.ndarray, reg: float, r: int, *, rounds: int = 1,
                     maxiter: int = 30, min_share: float = 1e-3) -> tuple[float, np.ndarray, np.ndarray]:
    r"""``(log det C, M, C)`` of the best spread minorant found for the cluster of the first ``r`` coordinates.

    ``Wc`` (n, d) the points and ``Cc`` (n, d) their worst perturbations, in the flow's eigen-coordinates relative
    to its mean (eigenvalues ascending). ``M`` and ``C`` are the mean and covariance (``+ reg I``) of the mixture,
    in the same coordinates; ``log det C`` is maximised (module docstring). Starts from ``omega = 0`` (all the
    ``E``-parts spread), then alternates water-filling and L-BFGS-B for ``rounds`` rounds.
    """
    n, d = Wc.shape
    rho2_all = np.sum(Cc[:, :r] ** 2, axis=1)
    # only points spending a share of their budget in E get a free weight (the others keep omega = 1)
    free = rho2_all > min_share * float(np.max(np.sum(Cc**2, axis=1)))
    Yall = Wc + Cc
    E0 = Yall.T @ Yall / n
    M0 = Yall.mean(axis=0)
    Ya = np.ascontiguousarray(Yall[free])
    CE = np.ascontiguousarray(Cc[free, :r])
    rho2 = rho2_all[free]
    if not np.any(free):
        C = E0 - np.outer(M0, M0)
        C[np.diag_indices_from(C)] += reg
        return float(np.linalg.slogdet(C)[1]), M0, C
    k_free = Ya.shape[0]
    eye_r = np.eye(d)[:, :r]

    def water(om: np.ndarray) -> np.ndarray:
        T = float(np.sum((1.0 - om) * rho2)) / n
        if T <= 0.0:
            return np.zeros((r, r))
        _, C0 = _spread_parts(E0, M0, Ya, CE, n, reg, om, np.zeros((r, r)))
        K = scipy.linalg.cho_solve(scipy.linalg.cho_factor(C0), eye_r)[:r]
        k, V = scipy.linalg.eigh(0.5 * (K + K.T))
        inv = 1.0 / np.maximum(k, 1e-300)
        nu = _water_level(np.sort(inv), np.sqrt(T))
        return (V * np.maximum(nu - inv, 0.0)) @ V.T

    def negf(om: np.ndarray, B: np.ndarray) -> tuple[float, np.ndarray]:
        T = float(np.sum((1.0 - om) * rho2)) / n
        M, C = _spread_parts(E0, M0, Ya, CE, n, reg, om, T * B)
        try:
            cf = scipy.linalg.cho_factor(C)
        except np.linalg.LinAlgError:
            return np.inf, np.zeros_like(om)
        logdet = 2.0 * float(np.sum(np.log(np.diag(cf[0]))))
        G = scipy.linalg.cho_solve(cf, eye_r)  # C^{-1}[:, :r]
        KEE = G[:r]
        YG = Ya @ G  # (n, r): (C^{-1} y_i)_E
        dq = -2.0 * np.sum(CE * YG, axis=1) + np.sum((CE @ KEE) * CE, axis=1)  # q(alternative mean) - q(point)
        CiM_E = G.T @ M
        grad = -(dq + rho2 * float(np.sum(KEE * B))) / n - 2.0 / n * (CE @ CiM_E)
        return -logdet, -grad

    om = np.zeros(k_free)
    best = (-np.inf, None, None)
    for _ in range(rounds):
        R = water(om)
        T = float(np.sum((1.0 - om) * rho2)) / n
        B = R / T if T > 0 else np.eye(r) / r
        res = minimize(negf, om, args=(B,), jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * k_free,
                       options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12})
        cand = res.x if res.fun <= negf(om, B)[0] else om
        T = float(np.sum((1.0 - cand) * rho2)) / n
        M, C = _spread_parts(E0, M0, Ya, CE, n, reg, cand, T * B)
        sign, logdet = np.linalg.slogdet(C)
        if sign > 0 and logdet > best[0]:
            best = (float(logdet), M, C)
        if np.allclose(cand, om, atol=1e-10):
            break
        om = cand
    return best  # type: ignore[return-value]


def _spread_bound(Wc: np.ndarray, Cc: np.ndarray, s: np.ndarray, reg: float, clusters: tuple[float, ...] = _CLUSTERS,
                  max_rank: int = 128) -> tuple[float, np.ndarray, np.ndarray]:
    """``(G, M, C)``: the best spread minorant over the cluster sizes ``r = #{s_j <= s_min (1 + kappa)}``
    (``kappa`` in ``clusters``, ``r <= max_rank``), ``G = 1/2 (d + log det C + d log 2 pi)`` its minimum, a lower
    bound on ``min F`` (R6); ``s`` the flow's eigenvalues (ascending), ``Wc``, ``Cc`` as in
    :func:`_spread_minorant`."""
    d = Wc.shape[1]
    best: tuple[float, np.ndarray, np.ndarray] = (-np.inf, np.zeros(d), np.eye(d))
    for r in sorted({min(int(np.count_nonzero(s <= s[0] * (1.0 + k))), max_rank) for k in clusters}):
        logdet, M, C = _spread_minorant(Wc, Cc, reg, r)
        G = 0.5 * (d + logdet + d * _LOG_2PI)
        if G > best[0]:
            best = (G, M, C)
    return best
