r"""Adversarial training of a linear flow (DESIGN R5, R6): exact closed forms, convex programs, a scalable solver.

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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from .model import LinearFlow
from .validation import as_float_array, check_eps, check_norm

_LOG_2PI = float(np.log(2.0 * np.pi))
ATTACKS = ("universal", "sample")
_CVXPY_SOLVERS = {"cvxpy": "CLARABEL", "clarabel": "CLARABEL", "scs": "SCS"}


@dataclass(frozen=True)
class FitInfo:
    """How an adversarial fit was obtained: the solver, its status, and (iterative solvers) its convergence.

    ``objective`` is the training objective at the returned model. ``gap`` is a certified upper bound on
    ``objective - optimum`` where the solver provides one (the damped solver: the value of the minorant's
    own minimum, DESIGN R6), else NaN. ``solver_value`` is the optimal value the convex solver itself reported
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


# ---------------------------------------------------------------------------------------------- checks
def _check_data(X: object, reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``X`` (n, d); return it with its mean and biased covariance + ``reg I`` (nonsingular)."""
    X = as_float_array("X", X, ndim=(2,))
    n, d = X.shape
    if reg == 0.0 and n <= d:
        raise ValueError(
            f"X has n={n} samples for d={d} dimensions: its sample covariance is singular (rank <= n - 1); "
            "pass reg > 0 to fit on S + reg * I"
        )
    m = X.mean(axis=0)
    C = X - m
    S = C.T @ C / n
    S = 0.5 * (S + S.T) + reg * np.eye(d)
    s = scipy.linalg.eigvalsh(S)
    if s[0] <= max(s[-1], np.finfo(np.float64).tiny) * d * np.finfo(np.float64).eps * 10:
        raise ValueError(
            f"the sample covariance of X is singular (smallest eigenvalue {s[0]:.3g}); pass reg > 0"
        )
    return X, m, S


def _check_attack(attack: object) -> str:
    if attack not in ATTACKS:
        raise ValueError(f"attack must be 'universal' or 'sample', got {attack!r}")
    return str(attack)


def _check_solver(solver: object) -> str | None:
    if solver is None:
        return None
    if not isinstance(solver, str) or solver.lower() not in _CVXPY_SOLVERS:
        raise ValueError(f"solver must be None (the default method), 'cvxpy', 'clarabel' or 'scs', got {solver!r}")
    return _CVXPY_SOLVERS[solver.lower()]


# ---------------------------------------------------------------------------------------------- R5
def water_level(s: np.ndarray, eps: float) -> float:
    r"""The water level ``tau`` of DESIGN R5: the unique root of ``sum_i (tau - s_i)_+ = eps^2``.

    Exact, no iteration: with ``s`` sorted ascending and ``c_k = s_1 + ... + s_k``, the candidates are
    ``tau_k = (eps^2 + c_k) / k``; the answer is ``tau_k`` for the largest ``k`` with ``s_k <= tau_k`` (the
    floor covers exactly the ``k`` smallest eigenvalues). ``eps = 0`` gives ``s_min``.
    """
    s = np.sort(as_float_array("s", s, ndim=(1,)))
    eps = check_eps(eps)
    if s[0] < 0:
        raise ValueError(f"s must be non-negative (eigenvalues of a covariance), got min {s[0]:.3g}")
    if eps == 0.0:
        return float(s[0])
    k = np.arange(1, s.size + 1)
    tau = (eps**2 + np.cumsum(s)) / k
    kstar = int(np.nonzero(s <= tau)[0][-1])
    return float(max(tau[kstar], s[0]))


def water_filling(S: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``(eigvals of Sigma*, eigvecs V, tau)`` for a covariance ``S`` (DESIGN R5).

    ``Sigma* = V diag(max(s, tau)) V^T`` with ``tau`` from :func:`water_level`.
    """
    s, V = scipy.linalg.eigh(S)
    tau = water_level(s, eps)
    return np.maximum(s, tau), V, tau


def universal_objective(flow: LinearFlow, S: np.ndarray, eps: float, *, norm: float = 2) -> float:
    r"""The universal training objective ``J_U`` (DESIGN R5) of ``flow`` on data of covariance ``S``, mean ``m=mu``.

    ``1/2 [tr(P S) + log det Sigma + eps^2 c(P)] + d/2 log 2 pi`` with ``c = lambda_max(P)`` (L2) or
    ``max_j P_jj`` (L1): the worst expected NLL over a universal perturbation when the flow's mean is the data
    mean (for another mean use :func:`robust_nll`).
    """
    norm = check_norm(norm)
    eps = check_eps(eps)
    P = flow.precision
    if norm == 2:
        c = 1.0 / flow.eigvals[0]
    elif norm == 1:
        c = float(np.max(np.diag(P)))
    else:
        raise NotImplementedError("universal L-infinity training is not a tractable exact program (DESIGN R3)")
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


def _universal_cvxpy(m: np.ndarray, S: np.ndarray, eps: float, norm: float, backend: str,
                     options: dict) -> tuple[LinearFlow, FitInfo]:
    """``min_P tr(P S) - log det P + eps^2 c(P)`` with cvxpy (``c`` = lambda_max or max diag; DESIGN R5)."""
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
    info = FitInfo(f"cvxpy/{backend}", str(prob.status), universal_objective(flow, S, eps, norm=norm),
                   solver_value=0.5 * float(prob.value) + 0.5 * d * _LOG_2PI, seconds=time.perf_counter() - t0)
    return flow, info


# ---------------------------------------------------------------------------------------------- R6
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
    """The sample-specific training objective of DESIGN R6: ``robust_nll(flow, X, eps) + reg/2 tr(P)``."""
    reg = check_eps(reg, "reg")
    return robust_nll(flow, X, eps, attack="sample", norm=norm) + 0.5 * reg * float(np.trace(flow.precision))


def sample_program(X: np.ndarray, eps: float, reg: float = 0.0, norm: float = 2) -> tuple:
    r"""The cvxpy pieces of DESIGN R6 in natural parameters: ``(P, h, robust, clean, constraints)``.

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
    r"""The exact convex program of DESIGN R6 in natural parameters ``(P, h = P mu)``, with the mean free.

    ``min mean_i t_i + 1/2 h^T P^{-1} h - 1/2 log det P + reg/2 tr P`` where ``t_i`` bounds
    ``max_{||delta|| <= eps} q_i(delta)``, ``q_i(delta) = 1/2 (x_i+delta)^T P (x_i+delta) - h^T (x_i+delta)``.

    *L2*: ``q_i(delta) <= t_i`` on the ball iff (S-lemma, exact since ``delta = 0`` is strictly feasible) there is
    ``lam_i >= 0`` with ``lam_i (eps^2 - ||delta||^2) - q_i(delta) + t_i >= 0`` for all ``delta``, i.e. with
    ``b_i = P x_i - h`` (and the multiplier doubled)

    .. math:: \begin{pmatrix} \lambda_i I - P & -b_i \\ -b_i^T & 2 t_i - x_i^T P x_i + 2 h^T x_i
              - \lambda_i \epsilon^2 \end{pmatrix} \succeq 0 ,

    linear in ``(P, h, t, lam)``. *L1*: the maximum of the convex ``q_i`` over the cross-polytope is at a vertex
    ``+-eps e_j``, so ``t_i >= q_i(0) + eps |b_ij| + eps^2/2 P_jj`` for every ``j`` (exact, linear).
    """
    import cvxpy as cp

    P, h, robust, _, cons = sample_program(X, eps, reg, norm)
    prob = cp.Problem(cp.Minimize(robust), cons)
    t0 = time.perf_counter()
    backend = _solve(prob, backend, options)
    if P.value is None:
        raise RuntimeError(f"cvxpy ({backend}) failed on sample-specific training: status {prob.status}")
    flow = _from_natural(P.value, h.value)
    info = FitInfo(f"cvxpy/{backend}", str(prob.status), sample_objective(flow, X, eps, norm=norm, reg=reg),
                   solver_value=float(prob.value), seconds=time.perf_counter() - t0)
    return flow, info


def _mixture_minorant(E0: np.ndarray, M0: np.ndarray, Za: np.ndarray, Zm: np.ndarray, reg: float, n: int,
                      spread: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Best weights ``omega`` in ``[0, 1]^K`` for the mixture minorant of :func:`_sample_damped`.

    ``E0`` and ``M0`` are the second moment and mean of the ``n`` worst-case points (any fixed orthonormal
    coordinates and origin), ``Za`` (K, d) ``K`` of those points, each with an alternative: a distribution of
    mean ``Zm[i]`` and second moment ``Zm[i] Zm[i]^T + spread[i] E_r`` with ``E_r`` the projection on the first
    ``r`` coordinates (a point mass when ``spread = 0``, else uniform on a sphere there). Point ``i`` keeps weight
    ``omega_i / n``, its alternative gets ``(1 - omega_i) / n``, every other point ``1/n``. Maximises
    ``log det C(omega)``, ``C`` the weighted covariance ``+ reg I`` (concave: a second moment linear in
    ``omega`` minus ``M M^T``, which is matrix-concave). Returns ``(omega, M, C)``.
    """
    from scipy.optimize import minimize

    K, d = Zm.shape
    D = Zm - Za  # alternative mean minus point
    Er = np.zeros(d)
    Er[:r] = 1.0

    def parts(om: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = (1.0 - om) / n
        M = M0 + a @ D
        C = E0 + (Zm.T * a) @ Zm - (Za.T * a) @ Za - np.outer(M, M)
        C[np.diag_indices(d)] += reg + float(a @ spread) * Er
        return M, 0.5 * (C + C.T)

    def negf(om: np.ndarray) -> tuple[float, np.ndarray]:
        M, C = parts(om)
        try:
            cf = scipy.linalg.cho_factor(C)
        except np.linalg.LinAlgError:
            return np.inf, np.zeros_like(om)
        logdet = 2.0 * float(np.sum(np.log(np.diag(cf[0]))))
        Ci_m, Ci_z = scipy.linalg.cho_solve(cf, Zm.T), scipy.linalg.cho_solve(cf, Za.T)
        qm, qz = np.sum(Zm.T * Ci_m, axis=0), np.sum(Za.T * Ci_z, axis=0)
        trE = float(np.trace(scipy.linalg.cho_solve(cf, np.eye(d)[:, :r])[:r]))
        grad = -(qm + spread * trE - qz) / n + 2.0 / n * (D @ scipy.linalg.cho_solve(cf, M))
        return -logdet, -grad

    res = minimize(negf, np.ones(K), jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * K,
                   options={"maxiter": 200, "ftol": 1e-15, "gtol": 1e-12})
    om = res.x if res.fun <= negf(np.ones(K))[0] else np.ones(K)
    M, C = parts(om)
    return om, M, C


def _damped_eval(flow: LinearFlow, X: np.ndarray, eps: float, reg: float) -> tuple[float, np.ndarray, np.ndarray]:
    """``(F, W, C)``: the R6 objective with one projection ``W = (X - mu) U`` and one batched exact attack
    ``C = U^T delta*`` (:func:`linflow.secular.lower_likelihood`); ``F = mean NLL(x + delta*) + reg/2 tr P``."""
    from .secular import lower_likelihood

    s = flow.eigvals
    W = (X - flow.mean) @ flow.eigvecs
    C = lower_likelihood(s, W, eps).C
    q = np.mean(np.sum((W + C) ** 2 / s, axis=1))
    F = 0.5 * (q + flow.logdet_cov + flow.dim * _LOG_2PI + reg * float(np.sum(1.0 / s)))
    return float(F), W, C


def _sample_damped(X: np.ndarray, m: np.ndarray, S: np.ndarray, eps: float, reg: float, *, max_iter: int = 1000,
                   tol: float = 1e-10, progress: bool = False, init: LinearFlow | None = None,
                   armijo: float = 1e-4, max_mixed: int = 64, step: str = "moment") -> tuple[LinearFlow, FitInfo]:
    r"""Damped minorise-and-step solver for DESIGN R6 (L2), with a certified optimality gap.

    At the iterate ``theta_k = (P_k, h_k)`` let ``delta_i`` be the exact worst perturbation of ``x_i`` and
    ``y_i = x_i + delta_i``. Any mixture ``G_k(theta) = mean_i sum_j w_ij NLL_theta(x_i + delta_ij) + reg/2 tr P``
    of *feasible* perturbations (``w_i`` a probability vector) satisfies ``G_k <= F`` everywhere, and its minimum
    is the weighted maximum-likelihood fit (``mu`` = the weighted mean, ``Sigma`` = the weighted covariance
    ``+ reg I``), of value ``1/2 (d + log det Sigma + d log 2 pi)``. So

    * ``gap_k = F(theta_k) - min G_k >= F(theta_k) - min F``: a certified bound on the suboptimality;
    * stepping from ``theta_k`` towards ``theta_ML`` decreases ``G_k`` and hence (same directional derivative)
      ``F``. The full step -- the naive fixed point -- can diverge at large eps, so the step ``alpha`` (tried
      first at twice the last accepted step, at most 1) is halved until ``F`` decreases by
      ``armijo * alpha * (G_k(theta_k) - min G_k)``. Two paths: ``step="moment"`` (default) moment-matches the
      mixture ``(1 - alpha) N(theta_k) + alpha (adversarial points)``, i.e. damps the mean and covariance; it
      minimises ``(1 - alpha) KL(N(theta_k) || N(theta)) + alpha G_k(theta)``, so ``G_k`` decreases along it.
      ``step="natural"`` interpolates ``(P, h)`` linearly, where ``F`` is convex. Both agree on small problems;
      on MNIST at large eps the moment path took steps 4-30 times longer.

    With ``delta_ij = delta_i`` alone, ``G_k`` touches ``F`` at ``theta_k`` with the same gradient (Danskin),
    which suffices away from kinks. But the optimum often puts points in the hard case of R1 (two optimal
    perturbations, mirror images across the ``u_min`` axis; a whole sphere of them when ``s_min`` is repeated,
    as it is in every direction the data do not span when ``n <= d``), where ``F`` has a kink and one
    perturbation per point leaves a gap that does not close. So for the (at most ``max_mixed``) points whose
    alternative -- the mirrored perturbation, or the uniform distribution over that sphere -- is within
    ``n * gap`` of optimal, ``G_k`` mixes the optimal point and the alternative with a weight chosen to
    maximise ``min G_k`` (a concave problem in the weights, :func:`_mixture_minorant`); points exactly tied on a
    repeated ``s_min`` (every point, in directions where the data are constant) take the uniform spread, which
    is what the optimum's rotational symmetry there requires.

    Cost per iteration: eigendecompositions and one batched exact attack, ``O(d^3 + n d^2)``.
    Stops when ``gap_k <= tol * max(1, |F|)``.
    """
    from tqdm.auto import tqdm

    n, d = X.shape
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not (isinstance(tol, float | int) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    if step not in ("natural", "moment"):
        raise ValueError(f"step must be 'natural' or 'moment', got {step!r}")
    if init is not None and (not isinstance(init, LinearFlow) or init.dim != d):
        raise TypeError(f"init must be a LinearFlow of dimension {d}, got {init!r}")
    t0 = time.perf_counter()
    if init is None:
        sig, V, _ = water_filling(S, eps)
        init = LinearFlow.from_gaussian(m, (V * sig) @ V.T)
    flow = init
    F, Wc, Cc = _damped_eval(flow, X, eps, reg)
    history: list[tuple[float, float, float]] = []
    gap = float("inf")
    converged = False
    alpha_prev = 1.0
    bar = tqdm(range(max_iter), desc="adversarial_fit(sample)", disable=not progress, leave=False)
    for _ in bar:
        # everything in the flow's eigen-coordinates, relative to its mean: y - mu = U (w + c)
        U, s = flow.eigvecs, flow.eigvals
        Yc = Wc + Cc
        gain = np.sum(Cc * (Wc + 0.5 * Cc) / s, axis=1)
        r = int(np.count_nonzero(s <= s[0] * (1.0 + 1e-9)))  # multiplicity of s_min (to rounding)
        Cm = Cc.copy()
        if r == 1:  # the mirror image across the u_min axis: feasible, optimal in the hard case
            Cm[:, 0] *= -1.0
            spread = np.zeros(n)
        else:  # spread the s_min-eigenspace part uniformly over its sphere (its mean is 0)
            spread = np.sum(Cc[:, :r] ** 2, axis=1) / r
            Cm[:, :r] = 0.0
        loss = gain - np.sum(Cm * (Wc + 0.5 * Cm) / s, axis=1) - 0.5 * spread * np.sum(1.0 / s[:r])
        if r > 1:  # exact ties (hard case on a repeated s_min, e.g. constant pixels): spread them, by symmetry
            tied = loss <= 1e-12 * np.maximum(np.abs(gain), 1e-300)
            Yc[tied] = Wc[tied] + Cm[tied]
            spread_fixed = float(np.sum(spread[tied])) / n
        else:
            tied = np.zeros(n, dtype=bool)
            spread_fixed = 0.0
        E0 = Yc.T @ Yc / n
        E0[np.arange(r), np.arange(r)] += spread_fixed
        MY = Yc.mean(axis=0)
        CY = E0 - np.outer(MY, MY) + reg * np.eye(d)
        Gmin = 0.5 * (d + np.linalg.slogdet(CY)[1] + d * _LOG_2PI)
        gap = max(F - Gmin, 0.0)
        slack = 0.0
        amb = np.nonzero((np.sum(Cc[:, :r] ** 2, axis=1) > 0) & (loss < n * gap) & ~tied)[0]
        if amb.size:
            amb = amb[np.argsort(loss[amb])[:max_mixed]]
            om, M2, C2 = _mixture_minorant(E0, MY, Yc[amb], (Wc + Cm)[amb], reg, n, spread[amb], r)
            G2 = 0.5 * (d + np.linalg.slogdet(C2)[1] + d * _LOG_2PI)
            if G2 > Gmin:
                Gmin, MY, CY = G2, M2, C2
                gap = max(F - Gmin, 0.0)
                slack = float(np.sum((1.0 - om) * loss[amb]) / n)
        if gap <= tol * max(1.0, abs(F)):
            history.append((F, gap, 0.0))
            converged = True
            break
        CY = (U @ (0.5 * (CY + CY.T))) @ U.T  # back to the original coordinates
        MY = U @ MY + flow.mean
        P, h = _natural(flow)
        P_ml = np.linalg.inv(0.5 * (CY + CY.T))
        P_ml = 0.5 * (P_ml + P_ml.T)
        h_ml = P_ml @ MY
        decrease = max(gap - slack, 0.0)
        alpha = min(1.0, 2.0 * alpha_prev)  # start from twice the last accepted step
        while True:
            if step == "natural":
                cand = _from_natural(P + alpha * (P_ml - P), h + alpha * (h_ml - h))
            else:  # moments of the mixture (1 - alpha) N(theta_k) + alpha (adversarial points), moment-matched
                mu_a = (1 - alpha) * flow.mean + alpha * MY
                dk, dy = flow.mean - mu_a, MY - mu_a
                cov_a = (1 - alpha) * (flow.cov + np.outer(dk, dk)) + alpha * (CY + np.outer(dy, dy))
                cand = LinearFlow.from_gaussian(mu_a, 0.5 * (cov_a + cov_a.T))
            Fc, Wn, Cn = _damped_eval(cand, X, eps, reg)
            if Fc <= F - armijo * alpha * decrease or alpha < 1e-12:
                break
            alpha *= 0.5
        if Fc >= F:  # no decrease even at the smallest step: stop (not certified)
            history.append((F, gap, 0.0))
            break
        flow, F, Wc, Cc, alpha_prev = cand, Fc, Wn, Cn, alpha
        history.append((F, gap, alpha))
        bar.set_postfix(objective=f"{F:.10g}", gap=f"{gap:.2e}", step=alpha)
    bar.close()
    info = FitInfo("damped", "converged" if converged else "stopped", F, gap=gap, iterations=len(history),
                   converged=converged, seconds=time.perf_counter() - t0, history=tuple(history))
    return flow, info


# ---------------------------------------------------------------------------------------------- public
def adversarial_fit(X: np.ndarray, eps: float, *, attack: str = "universal", norm: float | str = 2,
                    solver: str | None = None, reg: float = 0.0, return_info: bool = False,
                    **options: object) -> LinearFlow | tuple[LinearFlow, FitInfo]:
    r"""Fit a linear flow to data ``X`` (n, d) by adversarial training (DESIGN R5, R6).

    Parameters
    ----------
    X : data, ``n > d`` rows unless ``reg > 0``.
    eps : the attack budget used in training; ``0`` returns the maximum-likelihood fit ``LinearFlow.fit(X, reg)``.
    attack : ``"universal"`` (R5: ``min max_delta E[NLL(x + delta)]``) or ``"sample"`` (R6:
        ``min mean_x max_delta NLL(x + delta)``).
    norm : 2 or 1 (L-infinity is NP-hard: ``NotImplementedError``).
    solver : ``None`` -- the default method: the water-filling closed form (universal L2), the damped solver
        (sample L2), or cvxpy/Clarabel where the exact program has no faster method (L1). ``"cvxpy"`` (=
        ``"clarabel"``) or ``"scs"``: the exact convex program (universal: ``min_P tr(PS) - log det P +
        eps^2 c(P)``; sample: the S-lemma SDP of :func:`_sample_sdp`).
    reg : added to the sample covariance (``S + reg I``), i.e. ``reg/2 tr P`` added to the objective.
    return_info : also return a :class:`FitInfo` (objective, solver status, iterations and certified gap).
    options : for the damped solver ``max_iter`` (1000: optima with points near the hard case converge
        sublinearly, 747 iterations were seen at d = 8, eps = 1), ``tol`` (1e-10, relative certified gap),
        ``progress`` (False, a tqdm bar), ``init`` (a starting LinearFlow), ``step`` (``"moment"`` or ``"natural"``),
        ``armijo`` (1e-4), ``max_mixed`` (64); for cvxpy, keyword arguments of ``solve``.

    The result is deterministic (no randomness is involved).
    """
    attack = _check_attack(attack)
    norm = check_norm(norm)
    eps = check_eps(eps)
    reg = check_eps(reg, "reg")
    backend = _check_solver(solver)
    if not isinstance(return_info, bool):
        raise TypeError(f"return_info must be a bool, got {type(return_info).__name__}")
    X, m, S = _check_data(X, reg)
    if norm == np.inf:
        raise NotImplementedError(
            "L-infinity adversarial training is not implemented: the inner maximisation of a convex quadratic "
            "over a box is NP-hard (DESIGN R3), so there is no exact convex program"
        )
    t0 = time.perf_counter()
    if eps == 0.0:
        if options:
            raise TypeError(f"unexpected options for eps = 0 (maximum likelihood): {sorted(options)}")
        flow = LinearFlow.from_gaussian(m, S)
        obj = universal_objective(flow, S, 0.0) if attack == "universal" else sample_objective(flow, X, 0.0, reg=reg)
        info = FitInfo("maximum-likelihood", "optimal", obj, gap=0.0, seconds=time.perf_counter() - t0)
    elif attack == "universal" and norm == 2 and backend is None:
        if options:
            raise TypeError(f"unexpected options for the closed form: {sorted(options)}")
        sig, V, tau = water_filling(S, eps)
        cov = (V * sig) @ V.T
        flow = LinearFlow.from_gaussian(m, 0.5 * (cov + cov.T))
        info = FitInfo("water-filling", "optimal", universal_objective(flow, S, eps), gap=0.0,
                       seconds=time.perf_counter() - t0)
    elif attack == "universal":
        flow, info = _universal_cvxpy(m, S, eps, norm, backend or "CLARABEL", dict(options))
    elif norm == 2 and backend is None:
        allowed = {"max_iter", "tol", "progress", "init", "armijo", "max_mixed", "step"}
        if set(options) - allowed:
            raise TypeError(f"unexpected options for the damped solver: {sorted(set(options) - allowed)}")
        flow, info = _sample_damped(X, m, S, eps, reg, **options)  # type: ignore[arg-type]
    else:
        flow, info = _sample_sdp(X, eps, reg, norm, backend or "CLARABEL", dict(options))
    return (flow, info) if return_info else flow


def robust_nll(flow: LinearFlow, X: np.ndarray, eps: float, *, attack: str = "sample",
               norm: float | str = 2) -> float:
    r"""The adversarial objective of ``flow`` on data ``X``: the mean worst-case NLL (nats), computed exactly.

    * ``"sample"``: ``mean_i [NLL(x_i) + max_{||delta_i|| <= eps} dNLL(x_i, delta_i)]`` with the exact per-row
      attack :func:`linflow.perturb.optimal_nll_change` (DESIGN R1, R3).
    * ``"universal"``: ``mean_i NLL(x_i) + max_{||delta|| <= eps} [delta^T P (m - mu) + 1/2 delta^T P delta]``
      (DESIGN R4: the mean NLL change is the change at the data mean ``m``), again by ``optimal_nll_change``.

    Exact for ``norm`` 2 and 1. For ``norm = inf`` (NP-hard, DESIGN R3) it is exact only while
    :mod:`linflow.box` enumerates the box's vertices (``d <= 20`` by default); beyond that it is the value of the
    best vertex found, a lower bound (use :func:`linflow.certified_perturbation` for the certified interval).
    """
    from .perturb import optimal_nll_change

    if not isinstance(flow, LinearFlow):
        raise TypeError(f"flow must be a LinearFlow, got {type(flow).__name__}")
    attack = _check_attack(attack)
    norm = check_norm(norm)
    eps = check_eps(eps)
    X = as_float_array("X", X, ndim=(2,))
    if X.shape[1] != flow.dim:
        raise ValueError(f"X must have {flow.dim} columns (the flow's dimension), got shape {X.shape}")
    clean = float(np.mean(flow.nll(X)))
    if eps == 0.0:
        return clean
    if attack == "sample":
        rise = float(np.mean(optimal_nll_change(flow, X, eps, norm=norm, likelihood="decrease")))
    else:
        rise = float(optimal_nll_change(flow, X.mean(axis=0), eps, norm=norm, likelihood="decrease"))
    return clean + rise
