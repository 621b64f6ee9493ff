r"""L2 *raising* on large inputs (the 28x28 flows): Rprop, then a scaled ascent in a learnt diagonal metric (issue 14,
goal 4).

Raising the likelihood under an L2 budget minimises the NLL over the ball and the data box (R2 on the linear flow: a
convex minimisation whose rate, for a gradient method, is set by the condition number). On the trained 28x28 flows the
pixels' scales differ by orders of magnitude (foreground pixels move by a large share of ``eps``, background pixels
at the clamp by ~1e-3), so the normalised L2 step of APGD, one length for all coordinates, converges slowly: at the
defaults (100 steps, 1 restart: APGD from zero, then the probe run) it reached 0.29-0.49 of the NLL decrease that
Rprop + APGD below reaches on the full run's RealNVP MLE (8 Fashion-MNIST images, eps 0.5; 0.10-0.25 at eps 2).

Rprop (:func:`~.vertex.rprop`: a step per coordinate, grown while its partial derivative keeps its sign, halved when it
flips, a candidate kept only if the objective does not fall) separates those scales as it does for L-inf raising, but
projected onto the L2 ball it slows after ~100 passes (the projection couples the coordinates). At the default budget
(``restarts >= 1``): run 0 is Rprop from zero for ``steps`` passes and run 1, instead of the probe run, starts from its
best point for ``PROBE_RUN * steps`` passes (401 forward+backward passes, as before; no forward-only screening). Run 1
was APGD with the first step ``alpha0 * WARM_ALPHA`` (commit b0b6c9f; ``METRIC = False``); it is now :func:`metric_run`:
``delta' = Pi_h(delta + t g / h)``, a diagonal Newton step whose curvatures ``h_j`` are learnt from the secants of the
evaluated candidates (damped, ``SECANT_WEIGHT``), and ``Pi_h`` the exact projection onto ball and box in the metric
``h`` (:func:`metric_project`; a Euclidean projection after a scaled step does not stop at a KKT point of the ball).
Measured on the full run's checkpoints (8 Fashion-MNIST test images, eps 0.5 / 2; the reference per image is the best of
a strong run of the Rprop + APGD default, 400 steps x 8 runs at seed 3, and of every default and variant run on them),
worst (median) fraction, Rprop + APGD -> metric run: GLOW MLE 0.964 (0.985) -> 1.000 (1.000) / 0.802 (0.935) -> 0.999
(1.000); GLOW hybrid 0.997 (1.000) -> 0.999 (1.000) / 0.967 (0.979) -> 0.997 (1.000); RealNVP MLE 0.684 (0.913) -> 0.999
(1.000) / 0.562 (0.907) -> 0.999 (1.000); RealNVP hybrid 0.621 (0.914) -> 1.000 (1.000) / 0.508 (0.873) -> 0.997
(1.000). At 401 passes it beats the 4007-pass strong run on 49 of the 64 images (by up to 1.6x on RealNVP MLE, eps 2).
Head to head (the better of the two per image as the reference) at eps 1 and 4 on the same images, and on 8 MNIST
(``mnist5k``) images at eps 0.5 and 2 against the same checkpoints: the metric run's worst >= 0.999 in all 16 cells,
Rprop + APGD's 0.49-1.000. Its projection costs ~2 ms per pass for 8 images (64 bisection halvings; a pass of the
RealNVP is ~35 ms). Variants (same cells; worst over the 8): the exact Euclidean projection alone (``SECANT_WEIGHT =
0``: no learnt metric) 0.52-0.98, no better than APGD; undamped secants (1) 0.89; 0.1: 0.979; 0.2: 0.996; 0.3 (the
default): 0.997. On the coupled box case of ``tests/test_attack_raising.py`` (foreground scales 0.01-0.5 in a random
rotation, background 1e-3, eps 2; exact optimum by cvxpy), worst of 4 points at seeds 1 / 2: APGD + probe run 0.898 /
0.906, Rprop + APGD 0.962 / 0.972, metric run 0.979 / 0.982 (weight 0.1: 0.982 / 0.985; 0.2: 0.982 / 0.983; 1: 0.961 /
0.959; momentum 0.5 or steps up to twice the Newton step: no better). Restarts beyond the first are the random-start
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
""":func:`metric_run` moves each curvature ``h_j`` this far (geometrically) towards a new secant ``s``:
``h_j <- s^w h_j^(1-w)``."""
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
    val, grad = fn(delta)  # monotone (a candidate is kept only if it does not fall): the iterate is the best point
    B = val.shape[0]
    hist = [val]
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
        hist.append(val)
    return delta, val, torch.stack(hist)
