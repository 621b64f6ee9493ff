r"""L2 *raising* on large inputs (the 28x28 flows): Rprop, then a warm APGD continuation (issue 14, goal 4).

Raising the likelihood under an L2 budget minimises the NLL over the ball (R2 on the linear flow: a convex
minimisation whose rate, for a gradient method, is set by the condition number). On the trained 28x28 flows the
pixels' scales differ by orders of magnitude (foreground pixels move by a large share of ``eps``, background pixels
at the clamp by ~1e-3), so the normalised L2 step of APGD, one length for all coordinates, converges slowly: at the
defaults (100 steps, 1 restart: APGD from zero, then the probe run) it reached 0.29-0.49 of the NLL decrease that
this module's run reaches on the full run's RealNVP MLE (8 Fashion-MNIST images, eps 0.5; 0.10-0.25 at eps 2), and
0.62-0.99 on GLOW MLE (eps 0.5), where 400 steps of the same APGD come within 1 %. A run of 100 steps was a matter of
convergence, not of basins: 100 / 200 / 400 APGD steps reached 0.35-0.63 / 0.43-0.93 / 1.0 (GLOW MLE, eps 0.5).

Rprop (:func:`~.vertex.rprop`: a step per coordinate, grown while its partial derivative keeps its sign, halved when
it flips, a candidate kept only if the objective does not fall) separates those scales as it does for L-inf raising;
projected onto the L2 ball it gets within 0.80-0.92 of the best in 100 passes but then slows (the projection couples
the coordinates). APGD from Rprop's best point with a small first step (``alpha0 * WARM_ALPHA``, ``eps / 4`` at the
default ``alpha0 = 2 eps``) then converges. At the default budget (``restarts >= 1``): run 0 is Rprop from zero for
``steps`` passes and run 1, instead of the probe run, is APGD from the best point for ``PROBE_RUN * steps`` passes
(401 forward+backward passes, as before, and no forward-only screening). Other splits of the same 401 passes, GLOW MLE
eps 0.5 (worst fraction of the best known): Rprop 200 + APGD 200 0.966, Rprop 300 + APGD 100 0.94, two rounds of
Rprop + APGD (50 + 50, 150 + 150) 0.96; Rprop 100 + APGD 300 0.980. Restarts beyond the first are the random-start
APGD runs of :mod:`.core`; ``restarts=0`` (training's adversary) is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .search import _bcast, apgd
from .vertex import RPROP_ETA0, rprop

Tensor = torch.Tensor
Fn = Callable[[Tensor], tuple[Tensor, Tensor]]

LARGE_D = 256
"""L2 raising on inputs with at least this many coordinates (the 28x28 images, not the 8x8 digits) uses
:func:`raising_run` for runs 0 and 1 (with ``restarts >= 1``); ``0``: never (the default before, for ``bench/``)."""
WARM_ALPHA = 0.125
"""The first step of the APGD continuation, in units of ``alpha0``."""
METRIC = True
"""Run 1 is :func:`metric_run` (a diagonal metric learnt from secants); ``False``: APGD from Rprop's best point (the
default before, commit b0b6c9f; ``bench/``)."""


def uses_raising(sign: float, norm: str, adaptive: bool, restarts: int, numel: int) -> bool:
    """Whether runs 0 and 1 are :func:`raising_run`'s: L2, ``likelihood="increase"`` (``sign < 0``), adaptive steps,
    ``restarts >= 1`` and at least ``LARGE_D`` coordinates per sample."""
    return sign < 0 and norm == "l2" and adaptive and restarts >= 1 and 0 < LARGE_D <= numel


def raising_run(run: int, fn: Fn, project: Callable[[Tensor], Tensor], step: Callable[[Tensor, Tensor, Tensor], Tensor],
                start: Tensor, eps: float, steps: int, passes: int, alpha0: float,
                box: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Run 0: Rprop from ``start`` (projected) for ``steps`` steps (``1 + steps`` passes; first step ``RPROP_ETA0 *
    alpha0`` per coordinate). Run 1: from ``start`` (the best point so far) for ``passes`` passes, :func:`metric_run`
    (``METRIC``; its first step ``WARM_ALPHA * alpha0``) or APGD (first step ``WARM_ALPHA * alpha0``). ``box``: the
    bounds ``lo <= delta <= hi`` of the data box (``clamp - x``; ``None``: none). ``fn(delta) -> (objective,
    gradient)`` is maximised. Returns the best ``delta``, its objective and the history of best objectives (one row
    per pass)."""
    if run == 0:
        best, best_val, _, hist = rprop(fn, project(start), project, eps, steps, RPROP_ETA0 * alpha0)
        return best, best_val, hist
    if METRIC:
        lo, hi = box if box is not None else (torch.full_like(start, -torch.inf), torch.full_like(start, torch.inf))
        return metric_run(fn, start, project, eps, max(passes - 1, 1), WARM_ALPHA * alpha0, lo, hi)
    best, best_val, _, hist = apgd(fn, start, project, step, max(passes - 1, 1), WARM_ALPHA * alpha0)
    return best, best_val, hist


def metric_project(v: Tensor, h: Tensor, eps: float, lo: Tensor, hi: Tensor, iters: int = 64) -> Tensor:
    r"""Per sample the projection of ``v`` onto the ball ``||d||_2 <= eps`` intersected with the box
    ``lo <= d <= hi`` (``lo <= 0 <= hi``) in the diagonal metric ``h > 0``:
    ``argmin_d sum_j h_j (d_j - v_j)^2``. KKT: ``d_j(lam) = clip(h_j v_j / (h_j + lam), lo_j, hi_j)`` with the
    ball's multiplier ``lam >= 0``, ``lam (||d|| - eps) = 0``; ``||d(lam)||`` is non-increasing in ``lam`` and
    ``<= eps`` at ``lam = ||h v|| / eps``, so ``lam`` is found by bisection (``iters`` halvings, float64; the
    feasible end is returned)."""
    B = v.shape[0]
    vf, hf = v.reshape(B, -1).double(), h.reshape(B, -1).double()
    lo, hi = lo.reshape(B, -1).double(), hi.reshape(B, -1).double()

    def d_of(lam: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(hf * vf / (hf + lam[:, None]), lo), hi)

    zero = vf.new_zeros(B)
    inside = d_of(zero).norm(dim=1) <= eps
    lam_lo, lam_hi = zero, (hf * vf).norm(dim=1) / eps
    for _ in range(iters):
        mid = 0.5 * (lam_lo + lam_hi)
        over = d_of(mid).norm(dim=1) > eps
        lam_lo, lam_hi = torch.where(over, mid, lam_lo), torch.where(over, lam_hi, mid)
    return d_of(torch.where(inside, zero, lam_hi)).to(v.dtype).reshape(v.shape)


SECANT_WEIGHT = 0.3
""":func:`metric_run` moves each curvature ``h_j`` this far (geometrically) to a new secant: ``h_j <- s^w h_j^(1-w)``."""
SECANT_RANGE = 1e6
"""The curvatures of :func:`metric_run` are kept within this factor of their per-sample median."""


def metric_run(fn: Fn, delta: Tensor, project: Callable[[Tensor], Tensor], eps: float, steps: int, alpha0: float,
               lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""A projected scaled-gradient ascent in a diagonal metric learnt from secants: ``1 + steps`` passes of
    ``delta' = Pi_h(delta + t g / h)`` (``Pi_h``: :func:`metric_project`), kept only if the objective does not fall;
    ``t`` doubles on success (at most 1: the diagonal Newton step) and halves on failure. ``h_j``, the curvature of
    the minimised NLL along coordinate ``j``, is the secant ``-(g'_j - g_j) / (d'_j - d_j)`` of the last evaluated
    candidate that moved ``j`` (positive ones only), at first ``||g|| / alpha0`` for all (a first step of length
    ``alpha0``). Exact on a separable quadratic (Newton); coupled coordinates bias it."""
    val, grad = fn(delta)
    B = val.shape[0]
    hist = [val]
    best, best_val = delta, val
    lo, hi = lo.expand_as(delta).reshape(B, -1), hi.expand_as(delta).reshape(B, -1)
    gn = grad.reshape(B, -1).norm(dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
    h = (gn / alpha0)[:, None].expand(B, lo.shape[1]).clone()
    t = torch.ones_like(val)
    for _ in range(steps):
        flat, g = delta.reshape(B, -1), grad.reshape(B, -1)
        v = flat + t[:, None] * g / h
        cand = project(metric_project(v, h, eps, lo, hi).reshape(delta.shape))
        cval, cgrad = fn(cand)
        s, y = cand.reshape(B, -1) - flat, g - cgrad.reshape(B, -1)
        sec = y / torch.where(s != 0, s, torch.ones_like(s))
        ok_sec = (s != 0) & (sec > 0) & torch.isfinite(sec)
        h = torch.where(ok_sec, sec.clamp_min(torch.finfo(h.dtype).tiny) ** SECANT_WEIGHT * h ** (1 - SECANT_WEIGHT), h)
        med = h.median(dim=1, keepdim=True).values
        h = torch.minimum(torch.maximum(h, med / SECANT_RANGE), med * SECANT_RANGE)
        ok = cval >= val
        okb = _bcast(ok, delta)
        delta, grad, val = torch.where(okb, cand, delta), torch.where(okb, cgrad, grad), torch.where(ok, cval, val)
        t = torch.where(ok, (2 * t).clamp(max=1.0), 0.5 * t)
        better = val > best_val
        best, best_val = torch.where(_bcast(better, best), delta, best), torch.where(better, val, best_val)
        hist.append(best_val)
    return best, best_val, torch.stack(hist)
