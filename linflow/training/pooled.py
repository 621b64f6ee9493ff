r"""The pooled dual of R6 (L2) and a proximal block-ascent solver on it, with a certified gap.

**The pooled dual.** Let every point ``x_i`` have a feasible mean perturbation ``m_i`` (``||m_i|| <= eps``) and
let ``R`` be any PSD matrix with ``tr R <= tau = eps^2 - mean_i ||m_i||^2`` (the budget the means leave unspent,
pooled over the points). Then

.. math:: \min F \;\ge\; \Phi(m, R) = \tfrac12\big(d + \log\det(\mathrm{cov}_i(x_i + m_i) + \mathrm{reg}\,I + R)
          + d\log 2\pi\big).

*Proof.* Put ``t_i = eps^2 - ||m_i||^2 >= 0`` (so ``mean_i t_i = tau``) and ``M_i = m_i m_i^T + (t_i / tau) R``
(``R = 0`` when ``tau = 0``), so ``M_i >= m_i m_i^T`` and ``tr M_i <= eps^2``. For one ball constraint the
S-lemma makes the Shor relaxation exact (R6's LMI): ``max_{||delta|| <= eps} q_i(delta) = max {1/2 tr(P (x x^T
+ x m^T + m x^T + M)) - h^T (x + m) : M >= m m^T, tr M <= eps^2}``, which is ``>=`` its value at ``(m_i, M_i)``.
Averaging, ``F`` is ``>=`` everywhere the Gaussian NLL of the moments ``mean_i (x_i + m_i)`` and
``mean_i (x_i x_i^T + x_i m_i^T + m_i x_i^T + M_i)`` (+ ``reg/2 tr P``), whose minimum is the ML value above (the
covariance is ``cov(x + m) + mean_i (M_i - m_i m_i^T) + reg I = cov(x + m) + R + reg I``).
The best ``R`` is water-filling (R5): with ``cov(x + m) + reg I = V diag(c) V^T``,
``Phi = 1/2 (d + sum_j log max(c_j, nu) + d log 2 pi)``, ``sum_j (nu - c_j)_+ = tau``. Only the means are
variables: the per-point spreads of the old minorants (mixtures, mirror images, spheres,
:mod:`linflow.training.spread`) are all special cases of the pooled ``R``.

``Phi`` is concave in ``m`` (log det of an affine map minus the matrix-concave ``M M^T``, water-filled; the
budget is concave), and its gradient gives the primal: ``Sigma = V diag(max(c, nu)) V^T``, ``mu = mean(x + m)``,
``P = Sigma^{-1}``, ``lambda = 1 / max(nu, c_1) = lambda_max(P)``; ``d Phi / d m_i = (P (y_i - mu) - lambda m_i)
/ n``. At a stationary point each ``m_i`` solves ``(eta_i I - P) m_i = P (x_i - mu)`` with ``eta_i >= lambda``
and ``eta_i = lambda`` unless ``||m_i|| = eps``: the R1 conditions, with R1's hard case (``eta = lambda_max``)
exactly the interior points, whose unspent budget is the pooled ``R``. So the hard case, where ``F`` has a kink,
is a smooth interior point here.

**The solver** (:func:`_sample_pooled`) ascends ``Phi`` by a proximal block step: the per-point part of the
Hessian is ``(P - lambda I) / n``; with a proximal weight ``rho > 0``, each ``m_i`` moves to

.. math:: m_i^+ = \arg\max_{\|m\| \le \varepsilon} m^\top (P (x_i - \mu) + \rho m_i)
          + \tfrac12 m^\top (P - (\lambda + \rho) I) m ,

a concave trust-region problem (``P - (lambda + rho) I <= -rho I``), solved per point in the eigenbasis of
``Sigma`` by a monotone Newton iteration on ``1 / ||m(g)||`` (:func:`_prox_responses`). The sequence of steps is
Anderson-accelerated; a step is accepted only if ``Phi`` increases (else the plain step, else ``rho`` triples).
Every few iterations the exact objective ``F`` (one batched R1 attack, :func:`linflow.secular.lower_likelihood`)
is evaluated at the dual's primal. The certificate is ``min_k F(theta_k) - max_k Phi(m_k)`` (both sides rigorous,
up to rounding: the means are projected onto the ``eps``-ball before ``Phi`` is evaluated).

Coordinates in which the data are constant (121 border pixels of MNIST) are left out of the ascent
(:class:`_Reduced`): their means stay 0 (the steps never move them; by the reflection symmetry nothing is lost) and
they enter the water-filling as a block ``reg I``; the model is put back in full before ``F`` is evaluated.

Each option's maths is in ``docs/theory.md`` (R6), its measurements (``bench/bench_training.py``, ``bench/r6_*.py``;
MNIST-5k, 60 CPU s, one thread) in ``docs/performance.md``. The tail is linear and slow because the optimum is
degenerate at the water level (unfilled eigenvalues crowd at ``nu``). ``repair``, ``polish`` and ``free`` lower the
upper bound ``F``; ``single`` and ``crowd`` speed up the dual; ``newton``, ``extrapolate`` and ``affine`` are off.
"""

from __future__ import annotations

import time

import numpy as np

from ..model import LinearFlow
from ..secular import _lower_likelihood
from .objectives import _LOG_2PI, FitInfo
from .pooled_affine import _AffineAscent, _AffineDual
from .pooled_dual import _ball, _Dual, _pooled_dual
from .pooled_extrap import _Anderson, _Drift
from .pooled_k import _crowd_step, _CrowdSchedule
from .pooled_newton import _newton_step
from .pooled_polish import _polish
from .pooled_prim_smooth import _free_step
from .pooled_primal import _repaired_model
from .universal import _water_filling

_ASCENT_SHARE, _POLISH_SHARE = 0.90, 0.95  # of max_seconds: the ascent's end, the polish's end (then free)
_DOUBLING = True  # primal_every=None: the exact F during the ascent at iterations 10 * {0, 1, 2, 4, 8, ...} only
_SINGLE_UNTIL = 1e-8  # the relative gap below which the steps' products are taken in double precision (single)


def _prox_responses(B: np.ndarray, gaps: np.ndarray, g0: float | np.ndarray, eps: float,
                    maxiter: int = 100) -> np.ndarray:
    """Per row ``b``: ``argmax_{||c|| <= eps} c^T b - 1/2 sum_j (g0 + gaps_j) c_j^2`` (``gaps >= 0``, ``g0 > 0``).

    KKT: ``c_j = b_j / (g + gaps_j)`` with ``g >= g0`` and ``g = g0`` unless ``||c|| = eps``. If ``||c(g0)|| <=
    eps`` that is the answer; else ``g`` is the root of ``1 / ||c(g)|| = 1 / eps``, a concave increasing function
    of ``g`` (More & Sorensen), so Newton's method from ``g0`` (left of the root) increases monotonically to it.
    """
    g0 = np.broadcast_to(np.asarray(g0, dtype=float), (B.shape[0],))
    if g0.size and np.all(g0 == g0[0]):  # one weight for all rows: multiply by one reciprocal row
        C = B * (1.0 / (g0[0] + gaps))
    else:
        C = B / (g0[:, None] + gaps)
    norms = np.sqrt(np.einsum("ij,ij->i", C, C))
    out = np.flatnonzero(norms > eps)
    if out.size:
        Bo = B[out]
        Ba = Bo  # the active rows of Bo
        g = g0[out].copy()
        active = np.arange(out.size)
        inv, T = np.empty_like(Bo), np.empty_like(Bo)  # buffers: 1 / (g + gaps) and c_j^2 of the active rows
        for _ in range(maxiter):
            m = active.size
            np.add(g[active, None], gaps, out=inv[:m])
            np.reciprocal(inv[:m], out=inv[:m])
            np.multiply(Ba, inv[:m], out=T[:m])
            T[:m] *= T[:m]
            nn = np.sqrt(T[:m].sum(axis=1))
            slope = np.einsum("ij,ij->i", T[:m], inv[:m]) / nn**3  # d(1/||c||)/dg
            step = (1.0 / eps - 1.0 / nn) / slope
            g[active] += np.maximum(step, 0.0)
            keep = np.abs(nn / eps - 1.0) > 1e-14
            if not keep.all():
                active, Ba = active[keep], Ba[keep]
            if active.size == 0:
                break
        Co = Bo / (g[:, None] + gaps)
        C[out] = Co * (eps / np.sqrt(np.einsum("ij,ij->i", Co, Co)))[:, None]
    return C


def _prox_step(dual: _Dual, eps: float, rho: float, X32: np.ndarray | None = None) -> np.ndarray:
    """The proximal block step ``m -> m^+`` of :func:`_sample_pooled` (module docstring), in original coordinates.

    With ``X32`` (the points in single precision) the three products with the eigenvectors (the points' and the
    means' coordinates, and the step back) are computed in single precision and the result is projected onto the
    ``eps``-ball: a step only proposes feasible means, whose ``Phi`` the caller evaluates in double precision, so
    the bound stays rigorous; the exact coordinates ``W`` are then computed only where ``F`` is evaluated."""
    p = 1.0 / dual.s
    lam = dual.lam  # lambda_max(P) = 1 / max(nu, c_1)
    gaps = np.maximum(lam - p, 0.0)
    V = dual.V
    if X32 is not None:
        V32 = V.astype(np.float32)
        W = X32 @ V32
        W -= (dual.yb @ V).astype(np.float32)
        B = W * p.astype(np.float32) + np.float32(rho) * (dual.Mn.astype(np.float32) @ V32)
        C = _prox_responses(B.astype(float), gaps, rho, eps)
        return _ball((C.astype(np.float32) @ V32.T).astype(float), eps)
    MV = dual.Mn @ V
    B = dual.W * p + rho * MV  # P (x - mu) + rho m, in the eigenbasis of Sigma
    return _prox_responses(B, gaps, rho, eps) @ V.T


def _objective(X: np.ndarray, s: np.ndarray, U: np.ndarray, mu: np.ndarray, eps: float,
               reg: float) -> tuple[float, np.ndarray, np.ndarray]:
    """``(F, W, C)``: the exact R6 objective of ``N(mu, U diag(s) U^T)`` (one batched R1 attack), the points'
    eigen-coordinates ``W`` and their worst perturbations ``C`` (in the same coordinates)."""
    W = (X - mu) @ U
    F, C = _objective_at(W, s, eps, reg)
    return F, W, C


def _objective_at(W: np.ndarray, s: np.ndarray, eps: float, reg: float) -> tuple[float, np.ndarray]:
    """``(F, C)`` of :func:`_objective` from the eigen-coordinates ``W`` of the centred points (``s`` ascending)."""
    C = _lower_likelihood(s, W, eps).C
    q = np.mean(np.sum((W + C) ** 2 / s, axis=1))
    d = s.size
    return 0.5 * (q + float(np.sum(np.log(s))) + d * _LOG_2PI + reg * float(np.sum(1.0 / s))), C


class _Reduced:
    """The coordinates in which the data are constant (``const``, value ``xc``), left out of the ascent. The
    objective is invariant under reflecting them about ``xc`` (data and ball alike) and ``Phi`` is concave, so
    means with zero components there lose nothing; the bound stays valid for any feasible means in any case, and
    the primal is the full model: ``mu = xc``, covariance ``max(reg, nu) I`` on that block (:meth:`_Dual.flow`
    with the block put back)."""

    def __init__(self, X: np.ndarray) -> None:
        const = np.ptp(X, axis=0) == 0
        if const.all():
            const[:] = False
        self.const, self.keep, self.xc = const, ~const, X[0, const]
        self.k = int(const.sum())

    def model(self, dual: _Dual) -> tuple[np.ndarray, np.ndarray]:
        """``(s, order)``: the full model's eigenvalues (ascending) and the order that sorts ``[block, kept]``."""
        s = np.concatenate([np.full(self.k, max(dual.reg, dual.nu)), dual.s])
        order = np.argsort(s, kind="stable")
        return s[order], order

    def objective(self, dual: _Dual, eps: float, reg: float) -> float:
        """The exact R6 objective ``F`` of the full model: one batched R1 attack."""
        s, order = self.model(dual)
        W = np.concatenate([np.zeros((dual.W.shape[0], self.k)), dual.W], axis=1) if self.k else dual.W
        return _objective_at(W[:, order], s, eps, reg)[0]

    def flow(self, dual: _Dual) -> LinearFlow:
        """The full model ``N(mu, Sigma)`` of the dual's primal."""
        if self.k == 0:
            return dual.flow()
        d = self.keep.size
        V, kept = dual.V, np.flatnonzero(self.keep)
        cov = np.zeros((d, d))
        block = (V * dual.s) @ V.T
        cov[np.ix_(kept, kept)] = 0.5 * (block + block.T)
        cov[self.const, self.const] = max(dual.reg, dual.nu)
        mu = np.empty(d)
        mu[self.keep], mu[self.const] = dual.yb, self.xc
        return LinearFlow.from_gaussian(mu, cov)


def _start(X: np.ndarray, m: np.ndarray, S: np.ndarray, eps: float, reg: float,
           init: LinearFlow | None) -> tuple[np.ndarray, float, LinearFlow]:
    """Initial means: the worst perturbations at ``init`` (default: the R5 water-filling solution), with the
    fill of R1's hard case (points without mass on the ``s_min`` block) left in the pool. Returns ``(Mn, F, flow)``."""
    if init is None:
        sig, V, _ = _water_filling(S, eps)
        init = LinearFlow.from_gaussian(m, 0.5 * ((V * sig) @ V.T + ((V * sig) @ V.T).T))
    s, U = init.eigvals, init.eigvecs
    F, W, _ = _objective(X, s, U, init.mean, eps, reg)
    sol = _lower_likelihood(s, W, eps, 1e-9)
    C = sol.C.copy()
    C[sol.hard, 0] = 0.0
    return _ball(C @ U.T, eps), F, init


def _sample_pooled(X: np.ndarray, m: np.ndarray, S: np.ndarray, eps: float, reg: float, *, max_iter: int = 1000,
                   tol: float = 1e-10, progress: bool = False, init: LinearFlow | None = None, rho: float = 1.5,
                   memory: int = 8, primal_every: int | None = None, newton: int = 0, newton_every: int = 1,
                   repair: bool = True, polish: int = 8, single: bool = True, max_seconds: float | None = None,
                   polish_first: bool = True, extrapolate: int = 0, free: int = 16, affine: int = 0,
                   crowd: int = 60) -> tuple[LinearFlow, FitInfo]:
    r"""Proximal block ascent on the pooled dual of R6 (L2), Anderson-accelerated, with a certified gap.

    See the module docstring for the bound and the step. The initial proximal weight is ``rho`` (1.5) times
    ``lambda_max(P) d / n`` at the start (roughly the curvature that moving one point's mean along the top
    eigenspace of ``P`` meets through ``log det``; on MNIST-5k at eps 1, 1.5 is about 20 absolute); it triples
    when neither the accelerated nor the plain step increases the dual. ``memory`` (8) is the Anderson history,
    ``primal_every`` the period of the exact objective's evaluation at the dual's primal (and at the last
    iterate; also when ``max_seconds`` ends the run, with ``repair``); None: 3 without ``repair``, with it at
    iterations 0, 10, 20, 40, 80, ... (the period doubling: the polish gives the bound that counts, these only
    detect convergence; with ``single``'s 1e-8, MNIST-5k, eps 1, 60 CPU s: 2.19e-8 against 2.32e-8, within noise).
    ``repair`` (True): at each of those evaluations after the first, ``F`` is also evaluated at the repaired model
    of the dual's primal (:func:`linflow.training.pooled_primal._repaired_model`), kept when lower; False with
    ``primal_every=3`` is the solver before the repair. Returns the evaluated model of lowest objective ``F`` and
    ``FitInfo(gap = F - max Phi)``; converged when ``gap <= tol * max(1, |F|)``. ``max_seconds``: a CPU-time
    (process time) cap.
    ``newton``: with ``newton > 0``, every ``newton_every``-th iteration also tries one truncated Newton-CG step
    with at most ``newton`` conjugate-gradient products (:func:`linflow.training.pooled_newton._newton_step`,
    accepted only if ``Phi`` rises; the Anderson history is then reset); 0 (default) is the block ascent alone.
    ``polish`` (8): when the run ends unconverged, at most that many polish steps
    (:func:`linflow.training.pooled_polish._polish`: the repair iterated on the exact ``F``) from the last dual's
    primal, the model kept when its exact ``F`` is lower; with ``max_seconds`` the ascent then stops at 90% of it
    and the polish at ``max_seconds``. 0 is the solver before the polish.
    ``free`` (16): after the polish, at most that many evaluations (one R1 attack each) of the smooth primal step
    (:func:`linflow.training.pooled_prim_smooth._free_step`: L-BFGS on the exact ``F`` with the filled space kept and
    the precision on its complement, its eigenvalue and the mean free) from the polished model, kept when its exact
    ``F`` is lower; with ``max_seconds`` the polish then stops at 95% of it and this step at ``max_seconds``. 0 is the
    solver before this step; it needs ``polish > 0``.
    ``polish_first`` (True): when ``max_seconds`` ends the ascent, go straight to the polish (it starts with ``F`` at
    the dual's primal; with no model to turn, ``F`` there and at the repair) instead of evaluating those first.
    ``single`` (True): the block steps' products with the eigenvectors in single precision
    (:func:`_prox_step`; every ``Phi`` and ``F`` stays in double precision) until the first step that does not
    ascend or a relative gap of 1e-8 (1e-7 before); False is the solver before.
    ``extrapolate`` (0: off): every that many iterations the ascent also follows its drift over them, doubling while
    ``Phi`` rises (:mod:`linflow.training.pooled_extrap`; feasible means). Off: 1-4% on MNIST-5k, stalls small cases.
    ``affine`` (0: off): from that iteration on, the block steps run on the compressed dual of
    :mod:`linflow.training.pooled_affine` (interior means ``m_i = A x_i + a``); ``Phi`` enters the certificate only
    as evaluated exactly at the explicit, ball-projected means, at every evaluation of ``F`` and when the ascent
    ends. Off by default: worse than ``crowd`` alone (``bench/r6_affine.py``; docs/performance.md).
    ``crowd`` (60; 0: off): after a block step, at most that many proximal steps of the sub-solve on the eigenspace
    crowding at the water level, the other components fixed (:func:`linflow.training.pooled_k._crowd_step`; kept
    only if ``Phi`` rises) while they gain more per CPU second than block steps (:class:`.pooled_k._CrowdSchedule`);
    products with the fixed block in single precision while ``single`` holds. On MNIST-5k it cuts the 60-s gap ~3x.
    History rows: ``(F, gap, rho)``, the last one updated after the polish. Status ``"stalled"`` when no step
    ascends even at ``rho > 1e12`` (the dual is at its optimum to rounding, or the step is useless). Deterministic.
    """
    from tqdm.auto import tqdm

    n, d = X.shape
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not (isinstance(tol, float | int) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    if not (isinstance(rho, float | int) and rho > 0):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    doubling = _DOUBLING and primal_every is None and repair  # the default's evaluations, spaced out
    if primal_every is None:
        primal_every = 10 if repair else 3
    for name, flag in (("repair", repair), ("single", single), ("polish_first", polish_first)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    for name, val, low in (("newton", newton, 0), ("newton_every", newton_every, 1), ("primal_every", primal_every, 1),
                           ("polish", polish, 0), ("extrapolate", extrapolate, 0), ("free", free, 0),
                           ("affine", affine, 0), ("crowd", crowd, 0)):
        if isinstance(val, bool) or not isinstance(val, int | np.integer) or val < low:
            raise ValueError(f"{name} must be an int >= {low}, got {val!r}")
    if max_seconds is not None and not (isinstance(max_seconds, float | int) and max_seconds > 0):
        raise ValueError(f"max_seconds must be None or a positive number, got {max_seconds!r}")
    if init is not None and (not isinstance(init, LinearFlow) or init.dim != d):
        raise TypeError(f"init must be a LinearFlow of dimension {d}, got {init!r}")
    t0, c0 = time.perf_counter(), time.process_time()
    Mn, best_F, best_flow = _start(X, m, S, eps, reg, init)
    red = _Reduced(X)
    X = X[:, red.keep]
    dual = _pooled_dual(X, Mn[:, red.keep], eps, reg, red.k)
    X32 = X.astype(np.float32) if single else None
    best_G = dual.G
    accel = _Anderson(memory)
    drift = _Drift(extrapolate)
    aff = _AffineAscent(X, eps, reg, red.k, _Anderson(memory)) if affine else None
    rho = rho * dual.lam * d / n  # in units of lambda_max(P) d / n (module docstring)
    crowd_rho, sched = rho, _CrowdSchedule(crowd)
    history: list[tuple[float, float, float]] = []
    converged = stalled = False
    bar = tqdm(range(max_iter), desc="adversarial_fit(sample, pooled)", disable=not progress, leave=False)
    ascent_end = None if max_seconds is None else max_seconds * (_ASCENT_SHARE if polish else 1.0)
    for it in bar:
        out_of_time = ascent_end is not None and time.process_time() - c0 > ascent_end
        last = it == max_iter - 1 or out_of_time
        skip = out_of_time and polish > 0 and polish_first  # the polish evaluates F at the dual's primal itself
        q, r = divmod(it, primal_every)
        due = (r == 0 and (not doubling or q & (q - 1) == 0)) or it == max_iter - 1 or (out_of_time and repair)
        if isinstance(dual, _AffineDual) and (due or last):  # Phi exactly, at the explicit (feasible) means
            exact = _pooled_dual(X, _ball(dual.Mn, eps), eps, reg, red.k)
            best_G = max(best_G, exact.G)
        models = [exact if isinstance(dual, _AffineDual) else dual] if due and not skip else []
        if repair and models and it > 0:
            models.append(_repaired_model(models[0], eps))  # a candidate upper bound (pooled_primal)
        for model in models:
            F = red.objective(model, eps, reg) if model is not None else np.inf
            if F < best_F:
                best_F, best_flow = F, red.flow(model)
        gap = max(best_F - best_G, 0.0)
        if gap <= _SINGLE_UNTIL * max(1.0, abs(best_F)):
            X32 = None  # double-precision steps for the last digits
        history.append((best_F, gap, rho))
        bar.set_postfix(objective=f"{best_F:.10g}", gap=f"{gap:.2e}")
        if gap <= tol * max(1.0, abs(best_F)):
            converged = True
            break
        if last:
            break
        c_step, G_step = time.process_time(), dual.G
        new = aff.advance(dual, rho, _prox_responses, X32 is not None) if aff is not None and it >= affine else None
        if new is None and (aff is None or aff.part is None):  # the plain block step (no compressed step was tried)
            plain = _prox_step(dual, eps, rho, X32)
            corr = accel.correction(dual.Mn, plain - dual.Mn)
            for cand in ([_ball(plain - corr, eps)] if corr is not None else []) + [plain]:
                new = _pooled_dual(X, cand, eps, reg, red.k)
                if new.G > dual.G:
                    break
            else:
                new = None
        if new is not None:
            dual = new
        else:  # no ascent: a stiffer proximal term, a fresh history; stalled (rounding) when rho explodes
            rho *= 3.0
            X32 = None
            accel.reset()
            if aff is not None:
                aff.accel.reset()
            drift.clean = False  # no extrapolation over a period with a failed step
            if rho > 1e12:
                stalled = True
                break
        ext = drift.step(X, dual, eps, reg)
        if ext is not None:
            dual = ext
        if newton and it % newton_every == 0:
            if isinstance(dual, _AffineDual):
                dual = _pooled_dual(X, _ball(dual.Mn, eps), eps, reg, red.k)
            nd = _newton_step(X, dual, eps, reg, cg_iter=newton)
            if nd is not None:
                dual = nd
                accel.reset()
        sched.block(dual.G - G_step, time.process_time() - c_step)
        if sched.due():
            stop = None if ascent_end is None else c0 + ascent_end
            c_step, G_step = time.process_time(), dual.G
            full = _pooled_dual(X, _ball(dual.Mn, eps), eps, reg, red.k) if isinstance(dual, _AffineDual) else dual
            cd, crowd_rho, _ = _crowd_step(X, full, eps, reg, crowd, crowd_rho, _prox_responses, deadline=stop,
                                           min_rate=sched.rate, single=X32 is not None)
            dual = dual if cd is None else cd  # a crowd step leaves explicit means: the affine ascent re-enters
            sched.done(dual.G - G_step, time.process_time() - c_step)
        if not isinstance(dual, _AffineDual):
            best_G = max(best_G, dual.G)
    bar.close()
    if isinstance(dual, _AffineDual):
        dual = _pooled_dual(X, _ball(dual.Mn, eps), eps, reg, red.k)
        best_G = max(best_G, dual.G)
    if polish and not converged:
        deadline = None if max_seconds is None else c0 + max_seconds * (_POLISH_SHARE if free else 1.0)
        F, model = _polish(dual, eps, reg, steps=polish, deadline=deadline)
        if model is None and skip:  # nothing to turn: the evaluations the ascent skipped
            for cand in [dual] + ([_repaired_model(dual, eps)] if repair else []):
                F = red.objective(cand, eps, reg) if cand is not None else np.inf
                if F < best_F:
                    best_F, best_flow = F, red.flow(cand)
        if model is not None and F < best_F:
            F = red.objective(model, eps, reg)  # the exact F of the model returned, through the same path as above
            if F < best_F:
                best_F, best_flow = F, red.flow(model)
        if free and model is not None:  # the smooth primal step from the polished model (pooled_prim_smooth)
            deadline = None if max_seconds is None else c0 + max_seconds
            F, model, _ = _free_step(model, eps, reg, maxcalls=free, deadline=deadline)
            if model is not None and F < best_F:
                F = red.objective(model, eps, reg)  # the exact F of the model returned, as above
                if F < best_F:
                    best_F, best_flow = F, red.flow(model)
        history[-1] = (best_F, max(best_F - best_G, 0.0), rho)
        converged = bool(skip and best_F - best_G <= tol * max(1.0, abs(best_F)))  # the check the ascent skipped
    status = "converged" if converged else ("stalled" if stalled else "stopped")
    info = FitInfo("damped/pooled", status, best_F, gap=max(best_F - best_G, 0.0),
                   iterations=len(history), converged=converged, seconds=time.perf_counter() - t0,
                   history=tuple(history))
    return best_flow, info
