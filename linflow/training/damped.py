r"""The damped minorise-and-step solver for sample-specific training (R6, L2) with a certified gap.

Kept in its own module: it is the scalable default of :func:`linflow.training.adversarial_fit` for
``attack="sample"``, ``norm=2`` and may be replaced by a faster solver with the same interface
``_sample_damped(X, m, S, eps, reg, **options) -> (LinearFlow, FitInfo)`` (checked values).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg

from ..model import LinearFlow
from ..secular import _lower_likelihood
from .objectives import _LOG_2PI, FitInfo, _from_natural, _natural
from .pooled import _sample_pooled
from .spread import _CLUSTERS, _spread_bound
from .universal import _water_filling


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
    s = flow.eigvals
    W = (X - flow.mean) @ flow.eigvecs
    C = _lower_likelihood(s, W, eps).C
    q = np.mean(np.sum((W + C) ** 2 / s, axis=1))
    F = 0.5 * (q + flow.logdet_cov + flow.dim * _LOG_2PI + reg * float(np.sum(1.0 / s)))
    return float(F), W, C


def _dual_mix(dual: tuple | None, flow: LinearFlow, MY: np.ndarray, CY: np.ndarray,
              reg: float) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """Mix the moments ``(E, M)`` of a remembered feasible mixture with those of a new minorant (``MY, CY`` in the
    flow's eigen-coordinates) with the weight maximising ``log det(E - M M^T + reg I)``: the per-point mixtures
    of feasible distributions stay feasible, so the value is again a lower bound (R6)."""
    from scipy.optimize import minimize_scalar

    U = flow.eigvecs
    d = U.shape[0]
    Mo = U @ MY + flow.mean
    Co = (U @ (0.5 * (CY + CY.T))) @ U.T
    Eo = Co + np.outer(Mo, Mo)
    Eo[np.diag_indices(d)] -= reg

    def value(E: np.ndarray, M: np.ndarray) -> float:
        C = E - np.outer(M, M)
        C[np.diag_indices(d)] += reg
        try:
            cf = scipy.linalg.cho_factor(C, check_finite=False)
        except np.linalg.LinAlgError:
            return -np.inf
        return 2.0 * float(np.sum(np.log(np.diag(cf[0]))))

    if dual is not None:
        Ed, Md = dual
        res = minimize_scalar(lambda g: -value((1 - g) * Ed + g * Eo, (1 - g) * Md + g * Mo), bounds=(0.0, 1.0),
                              method="bounded", options={"xatol": 1e-9})
        ends = (value(Ed, Md), value(Eo, Mo))
        g = float(res.x) if -res.fun >= max(ends) else (0.0 if ends[0] > ends[1] else 1.0)
        Eo, Mo = (1 - g) * Ed + g * Eo, (1 - g) * Md + g * Mo
    return (Eo, Mo), 0.5 * (d + value(Eo, Mo) + d * _LOG_2PI)


def _to_eigen(flow: LinearFlow, dual: tuple, reg: float) -> tuple[np.ndarray, np.ndarray]:
    E, M = dual
    C = E - np.outer(M, M)
    C[np.diag_indices_from(C)] += reg
    U = flow.eigvecs
    return U.T @ (M - flow.mean), U.T @ C @ U


def _line_search(flow: LinearFlow, F: float, MY: np.ndarray, CY: np.ndarray, decrease: float, alpha: float,
                 X: np.ndarray, eps: float, reg: float, armijo: float,
                 step: str) -> tuple[LinearFlow, float, np.ndarray, np.ndarray, float]:
    """The damped step of :func:`_sample_damped` from ``flow`` (objective ``F``) towards the ML fit ``(MY, CY)``
    of a minorant (given in the flow's eigen-coordinates relative to its mean): ``alpha`` halved from the given
    value until ``F`` decreases by ``armijo * alpha * decrease`` (or ``alpha < 1e-12``).
    Returns ``(candidate, F(candidate), W, C, alpha)``."""
    U = flow.eigvecs
    CY = (U @ (0.5 * (CY + CY.T))) @ U.T  # back to the original coordinates
    MY = U @ MY + flow.mean
    P, h = _natural(flow)
    P_ml = np.linalg.inv(0.5 * (CY + CY.T))
    P_ml = 0.5 * (P_ml + P_ml.T)
    h_ml = P_ml @ MY
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
            return cand, Fc, Wn, Cn, alpha
        alpha *= 0.5


def _pooled_then_damped(X: np.ndarray, m: np.ndarray, S: np.ndarray, eps: float, reg: float, max_iter: int,
                        tol: float, progress: bool, init: LinearFlow | None,
                        max_seconds: float | None) -> tuple[LinearFlow, FitInfo]:
    """``minorant="pooled"``: :func:`linflow.training.pooled._sample_pooled`; if its dual stalls (status
    ``"stalled"``: no ascent at any proximal weight, rounding) before the tolerance, the damped solver continues from
    its best model with the iterations left. The certificate is the best of both lower bounds (each valid)."""
    c0 = time.process_time()
    flow, info = _sample_pooled(X, m, S, eps, reg, max_iter=max_iter, tol=tol, progress=progress, init=init,
                                max_seconds=max_seconds)
    left = max_iter - info.iterations
    seconds = None if max_seconds is None else max_seconds - (time.process_time() - c0)
    if info.converged or info.status != "stalled" or left < 1 or (seconds is not None and seconds <= 0):
        return flow, info
    flow2, info2 = _sample_damped(X, m, S, eps, reg, max_iter=left, tol=tol, progress=progress, init=flow,
                                  max_seconds=seconds, minorant="mixture")
    lower = max(info.objective - info.gap, info2.objective - info2.gap)
    if info2.objective > info.objective:
        flow2, objective = flow, info.objective
    else:
        objective = info2.objective
    gap = max(objective - lower, 0.0)
    converged = bool(gap <= tol * max(1.0, abs(objective)))
    return flow2, FitInfo("damped/pooled", "converged" if converged else "stopped", objective, gap=gap,
                          iterations=info.iterations + info2.iterations, converged=converged,
                          seconds=info.seconds + info2.seconds, history=info.history + info2.history)


def _sample_damped(X: np.ndarray, m: np.ndarray, S: np.ndarray, eps: float, reg: float, *, max_iter: int = 1000,
                   tol: float = 1e-10, progress: bool = False, init: LinearFlow | None = None,
                   armijo: float = 1e-4, max_mixed: int = 64, step: str = "moment",
                   minorant: str | None = None, bound_every: int = 20,
                   clusters: tuple[float, ...] = _CLUSTERS, memory: bool = True,
                   max_seconds: float | None = None) -> tuple[LinearFlow, FitInfo]:
    r"""Damped minorise-and-step solver for R6 (L2), with a certified optimality gap.

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

    Three additions (issue 14), all keeping ``min G <= min F`` for every bound used:

    * ``memory=True`` (default): Frank-Wolfe on the dual. The moments ``(E, M)`` of the best feasible mixture
      found so far are kept; each new minorant's moments are mixed in with the weight maximising
      ``log det(E - M M^T + reg I)`` (:func:`_dual_mix`; a convex combination of per-point feasible mixtures is
      feasible). Each iteration line-searches towards the ML fit of that remembered mixture and towards the
      iterate's own minorant's (the old step) and keeps the lower ``F``. On the small hard-case tests it cut the
      iterations 2-11 times (898 -> 81); on the 8x8 digits (d = 64, eps 0.3-3) the certified gap after 150
      iterations fell 25-50 times. It converges sublinearly, like Frank-Wolfe.
    * the spread minorant (:mod:`linflow.training.spread`: hard-case points spread over a cluster of small
      eigenvalues, water-filled shape), computed every ``bound_every`` iterations (20; 0 = never) and at the
      returned model: a tighter certificate. ``minorant="spread"`` also steps to its minimiser.
    * the certificate is ``F(theta_k) - max_j min G_j`` over all iterations; when the step to one minorant's
      minimiser finds no decrease (a kink), the other (mixture <-> spread) is tried before stopping.

    ``minorant="pooled"`` (the default since issue 14, unless one of the options of the damped steps above --
    ``armijo``, ``max_mixed``, ``step``, ``bound_every``, ``clusters``, ``memory`` -- is given, which selects
    ``"mixture"``) runs a different method instead: proximal block ascent on the pooled dual
    (:func:`linflow.training.pooled._sample_pooled`, which takes ``max_iter``, ``tol``, ``progress``, ``init`` and
    ``max_seconds`` of these options; its FitInfo's solver is ``"damped/pooled"``); if its dual stalls before
    ``tol``, this solver continues from its model (:func:`_pooled_then_damped`). On MNIST-5k it certifies
    gaps 10-1000 times smaller within 60 s at eps >= 1 (``bench/bench_training.py``).

    ``bound_every=0, memory=False`` is the solver as it was before these additions. ``max_seconds`` stops after
    that many CPU seconds (process time; the result then depends on the machine's speed).

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
    if isinstance(bound_every, bool) or not isinstance(bound_every, int | np.integer) or bound_every < 0:
        raise ValueError(f"bound_every must be a non-negative int, got {bound_every!r}")
    if max_seconds is not None and not (isinstance(max_seconds, float | int) and max_seconds > 0):
        raise ValueError(f"max_seconds must be None or a positive number, got {max_seconds!r}")
    damped_only = [name for name, value, default in (("armijo", armijo, 1e-4), ("max_mixed", max_mixed, 64),
                                                     ("step", step, "moment"), ("bound_every", bound_every, 20),
                                                     ("clusters", clusters, _CLUSTERS), ("memory", memory, True))
                   if value != default]
    if minorant is None:  # the default: the pooled dual, unless an option of the damped steps was given
        minorant = "mixture" if damped_only else "pooled"
    if minorant not in ("spread", "mixture", "pooled"):
        raise ValueError(f"minorant must be 'spread', 'mixture' or 'pooled', got {minorant!r}")
    if init is not None and (not isinstance(init, LinearFlow) or init.dim != d):
        raise TypeError(f"init must be a LinearFlow of dimension {d}, got {init!r}")
    if minorant == "pooled":  # the proximal ascent on the pooled dual (linflow.training.pooled)
        if damped_only:
            raise ValueError(f"options {damped_only} belong to the damped solver, not to minorant='pooled'")
        return _pooled_then_damped(X, m, S, eps, reg, max_iter, tol, progress, init, max_seconds)
    t0, c0 = time.perf_counter(), time.process_time()
    if init is None:
        sig, V, _ = _water_filling(S, eps)
        init = LinearFlow.from_gaussian(m, (V * sig) @ V.T)
    flow = init
    F, Wc, Cc = _damped_eval(flow, X, eps, reg)
    history: list[tuple[float, float, float]] = []
    gap = float("inf")
    converged = False
    alpha_prev = alpha_mix = 1.0
    best_lb = -np.inf
    dual = None
    bar = tqdm(range(max_iter), desc="adversarial_fit(sample)", disable=not progress, leave=False)
    for it in bar:
        # everything in the flow's eigen-coordinates, relative to its mean: y - mu = U (w + c)
        s = flow.eigvals
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
        mix, spread = (MY, CY, slack), None
        if minorant == "spread" or (bound_every and it % bound_every == bound_every - 1):
            spread = G3, M3, C3 = _spread_bound(Wc, Cc, s, reg, clusters)
            if minorant == "spread" and G3 > Gmin:  # the step goes to this minorant's minimiser
                Gmin, MY, CY, slack = G3, M3, C3, 0.0
            best_lb = max(best_lb, G3)
        if memory:  # Frank-Wolfe on the dual: mix the new minorant's moments with the remembered ones
            dual, Gd = _dual_mix(dual, flow, MY, CY, reg)
            (MY, CY), slack = _to_eigen(flow, dual, reg), 0.0
            best_lb = max(best_lb, Gd)
        best_lb = max(best_lb, Gmin)
        gap = max(F - best_lb, 0.0)
        if gap <= tol * max(1.0, abs(F)):
            history.append((F, gap, 0.0))
            converged = True
            break
        alpha0 = min(1.0, 2.0 * alpha_prev)  # start from twice the last accepted step
        cand, Fc, Wn, Cn, alpha = _line_search(flow, F, MY, CY, max(gap - slack, 0.0), alpha0, X, eps, reg,
                                               armijo, step)
        alpha_prev = alpha if Fc < F else alpha_prev
        if memory:  # also the step to the iterate's own minorant (the old solver's step); keep the better
            res = _line_search(flow, F, mix[0], mix[1], max(F - Gmin - mix[2], 0.0), min(1.0, 2.0 * alpha_mix), X,
                               eps, reg, armijo, step)
            alpha_mix = res[4] if res[1] < F else alpha_mix
            if res[1] < Fc:
                cand, Fc, Wn, Cn, alpha = res
        # stalled at a kink: try the other targets (the iterate's own mixture minorant, the spread minorant) once
        fallbacks = ["mix"] if minorant == "spread" and not memory else []
        if (bound_every or minorant == "spread") and (memory or minorant != "spread"):
            fallbacks.append("spread")
        for target in fallbacks:
            if Fc < F:
                break
            if target == "mix":
                MY, CY, slack = mix
            else:
                _, MY, CY = spread if spread is not None else _spread_bound(Wc, Cc, s, reg, clusters)
                slack = 0.0
            cand, Fc, Wn, Cn, alpha = _line_search(flow, F, MY, CY, max(gap - slack, 0.0), 1.0, X, eps, reg,
                                                   armijo, step)
        if Fc >= F:  # no decrease even at the smallest step: stop (not certified)
            history.append((F, gap, 0.0))
            break
        flow, F, Wc, Cc = cand, Fc, Wn, Cn
        history.append((F, gap, alpha))
        bar.set_postfix(objective=f"{F:.10g}", gap=f"{gap:.2e}", step=alpha)
        if max_seconds is not None and time.process_time() - c0 > max_seconds:
            break
    bar.close()
    if not converged and bound_every:  # the certificate at the returned model (any valid bound counts)
        best_lb = max(best_lb, _spread_bound(Wc, Cc, flow.eigvals, reg, clusters)[0])
        gap = max(F - best_lb, 0.0)
        converged = bool(gap <= tol * max(1.0, abs(F)))
    info = FitInfo("damped", "converged" if converged else "stopped", F, gap=gap, iterations=len(history),
                   converged=converged, seconds=time.perf_counter() - t0, history=tuple(history))
    return flow, info
