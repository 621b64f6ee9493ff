"""The search methods of :mod:`deepcheck.attacks.core` added for issue 14: APGD (:func:`apgd`), the sparse starts of L2
restarts (:func:`sparse_starts`, screened by :func:`screen_moves`), the successive halving over starts of the L2
probe run (:func:`probe_search`) and the tangent-cone gradient at the data box (:func:`tangent`); the L-inf methods
(the vertex search :func:`flip_search`, re-exported here) are in :mod:`.vertex`. Each takes the objective as
``fn(delta) -> (per-sample value, gradient)`` (maximised; one forward+backward pass) or ``value(delta) -> per-sample
value`` (one forward pass) and a ``project`` onto the feasible set; the module knows nothing of models or specs (the
method and its measured limits: :mod:`.core`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .spec import Gen
from .vertex import flip_search  # noqa: F401  (moved to .vertex; importable from here as before)

Tensor = torch.Tensor

def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def apgd_checkpoints(steps: int) -> list[int]:
    """The checkpoints of APGD (Croce & Hein 2020): ``ceil(p_j steps)`` with ``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, below ``steps``."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    ks = (math.ceil(q * steps - 1e-9) for q in p[1:])  # 1e-9: 0.57 * 100 is 57.000000000000007
    return sorted({k for k in ks if 0 < k < steps})


def apgd(fn: Callable[[Tensor], tuple[Tensor, Tensor]], delta: Tensor, project: Callable[[Tensor], Tensor],
          step: Callable[[Tensor, Tensor, Tensor], Tensor], steps: int, alpha0: float,
          start: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""APGD (Croce & Hein 2020), per sample: ``steps`` passes of projected steps with momentum
    ``z = P(x_k + eta s(g_k))``, ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))``, ``a = 0.75``
    (``a = 1`` on the first step). At each checkpoint (:func:`apgd_checkpoints`) a sample whose objective rose
    on fewer than 75 % of the steps since the last one, or whose step and best value are both unchanged since
    it, halves ``eta`` and restarts from its best point. The first step is ``alpha0`` (default ``2 eps``: the
    conditional-gradient step of R1/R3). Returns the best ``delta``, its objective, its gradient and the
    history of best objectives ``(steps + 1, B)`` (``(steps, B)`` with ``start``)."""
    val, grad = fn(delta) if start is None else start
    B = val.shape[0]
    best, best_val, best_grad = delta, val, grad
    hist = [] if start is not None else [val]
    eta = torch.full((B,), alpha0, dtype=delta.dtype, device=delta.device)
    prev = delta
    checks = set(apgd_checkpoints(steps))
    rises = torch.zeros(B, dtype=torch.long, device=delta.device)
    last_k, last_eta, last_best = 0, eta.clone(), best_val.clone()
    for k in range(steps):
        z = project(step(delta, grad, eta))
        a = 1.0 if k == 0 else 0.75
        cand = project(delta + a * (z - delta) + (1.0 - a) * (delta - prev))
        cval, cgrad = fn(cand)
        rises = rises + (cval > val).long()
        prev, delta, val, grad = delta, cand, cval, cgrad
        better = val > best_val
        bb = _bcast(better, best)
        best, best_grad = torch.where(bb, delta, best), torch.where(bb, grad, best_grad)
        best_val = torch.where(better, val, best_val)
        hist.append(best_val)
        if k + 1 in checks:
            stall = (rises < 0.75 * (k + 1 - last_k)) | ((eta == last_eta) & (best_val <= last_best))
            last_eta = eta.clone()
            eta = torch.where(stall, 0.5 * eta, eta)
            sb = _bcast(stall, delta)
            delta, grad, val = torch.where(sb, best, delta), torch.where(sb, best_grad, grad), \
                torch.where(stall, best_val, val)
            prev = torch.where(sb, delta, prev)
            rises = torch.zeros_like(rises)
            last_k, last_best = k + 1, best_val.clone()
    return best, best_val, best_grad, torch.stack(hist) if hist else val.new_zeros((0, B))


def sparse_starts(value: Callable[[Tensor], Tensor], project: Callable[[Tensor], Tensor], shape: tuple[int, ...],
                  eps: float, like: Tensor, gen: Gen, max_candidates: int, k: int = 1) -> tuple[list[Tensor], int]:
    r"""The ``k`` best single-coordinate moves ``delta = s eps e_j`` (``s = +-1``, projected onto the ball and the
    data box) per sample, best first, screened by forward passes only (:func:`screen_moves`). On the trained
    digits flows the best L2 perturbation is sparse (one or two background pixels pushed by ~eps, their
    neighbours to the clamp) and lies in a basin that runs from zero or from random points of the ball rarely
    reach; the screen ranks these basins only roughly (rank correlation with the value after ascent ~0, but the
    best basin is among the first ~12), hence ``k`` starts for :func:`probe_search`. Returns the ``k`` starts and
    the number of forward passes."""
    starts, _, _, spent = screen_moves(value, project, shape, eps, like, gen, max_candidates, k)
    return starts, spent


def screen_moves(value: Callable[[Tensor], Tensor], project: Callable[[Tensor], Tensor], shape: tuple[int, ...],
                 eps: float, like: Tensor, gen: Gen, max_candidates: int,
                 k: int = 1) -> tuple[list[Tensor], Tensor, Tensor, int]:
    r"""The forward screen of the single-coordinate moves ``delta = s eps e_j``: each candidate is one forward
    pass of the whole batch (``value(delta) -> (B,)``, maximised); at most ``max_candidates`` of the ``2D``
    moves are screened (a seeded random subset, the same for every sample, when there are more). Returns the
    ``k`` best moves per sample (best first, projected), the move indices ``(B, k)`` (``j`` for ``+e_j``,
    ``D + j`` for ``-e_j``), their screened values ``(B, k)`` and the number of forward passes."""
    D = int(math.prod(shape[1:]))
    cand = torch.arange(2 * D)
    if len(cand) > max_candidates:
        # one subset for the whole batch; with per-sample generators a fixed stream, so that it does not depend
        # on which samples share the batch (sharding)
        shared = gen if isinstance(gen, torch.Generator) else torch.Generator().manual_seed(0)
        cand = cand[torch.randperm(2 * D, generator=shared)[:max_candidates]]
    B = shape[0]

    def move(c: Tensor) -> Tensor:  # one candidate per sample, c (B,) indices into the 2D moves
        delta = torch.zeros((B, D), dtype=like.dtype, device=like.device)
        sign = torch.where(c < D, 1.0, -1.0).to(dtype=like.dtype, device=like.device)
        delta[torch.arange(B, device=like.device), (c % D).to(like.device)] = sign * eps
        return project(delta.reshape(shape))

    vals = []
    for c in cand.tolist():
        with torch.no_grad():
            vals.append(value(move(torch.full((B,), c))))
    if not vals:
        z = torch.zeros((B, 0), dtype=torch.long)
        return [torch.zeros(shape, dtype=like.dtype, device=like.device)], z, z.to(like.dtype), 0
    top = torch.stack(vals, dim=1).topk(min(k, len(cand)), dim=1)  # (B, k), stable for ties
    idx = top.indices.cpu()
    return [move(cand[idx[:, i]]) for i in range(idx.shape[1])], cand[idx], top.values.cpu(), len(cand)


def sparse_start(value: Callable[[Tensor], Tensor], project: Callable[[Tensor], Tensor], shape: tuple[int, ...],
                 eps: float, like: Tensor, gen: Gen, max_candidates: int) -> tuple[Tensor, int]:
    r"""The best single-coordinate move per sample (:func:`sparse_starts` with ``k = 1``) and the number of
    forward passes spent."""
    starts, spent = sparse_starts(value, project, shape, eps, like, gen, max_candidates, 1)
    return starts[0], spent


def _pick(cands: list[tuple[Tensor, Tensor, Tensor]], order: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample ``b`` the candidate ``order[b]`` of ``cands`` (a list of ``(delta, value, gradient)``)."""
    d = torch.stack([c[0] for c in cands])  # (K, B, ...)
    rows = torch.arange(d.shape[1], device=d.device)
    o = order.to(d.device)
    return d[o, rows], torch.stack([c[1] for c in cands])[o, rows], torch.stack([c[2] for c in cands])[o, rows]


Step = Callable[[Tensor, Tensor, Tensor], Tensor]


def probe_search(fn: Callable[[Tensor], tuple[Tensor, Tensor]], starts: list[Tensor],
                 project: Callable[[Tensor], Tensor], step: Step | list[Step],
                 probe_steps: int | list[int], keep: int, keep_steps: int, finish_steps: int, alpha0: float,
                 incumbent: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Successive halving over starting points, batched over samples (each sample has its own ``starts[i]``):
    a short APGD probe (:func:`apgd`, ``probe_steps`` steps from ``alpha0``) from every start (``step``: one
    step for all, or a list cycled over the starts, whose first entry serves the later phases); the ``keep``
    best probes per sample go on for ``keep_steps`` steps each (step ``alpha0 / 2``); the best point found, or
    ``incumbent`` (e.g. the best of the earlier runs) where that is better, gets the last ``finish_steps``
    (step ``alpha0 / 4``). On the trained flows the objective has many basins (one per pushed pixel on the
    digits), a few ascent steps rank them well (the best basin is first or second after 5-10 steps) and a
    basin needs ~40-60 steps to converge: this spends the budget on the basins that rank best.
    ``probe_steps``: one for all starts, or one per start.
    Passes: ``len(starts) (1 + probe_steps) + keep keep_steps + finish_steps`` (+1 with ``incumbent``). Returns
    the best ``delta``, its objective, its gradient and the history of the best objective so far, one entry per
    pass."""
    hist: list[Tensor] = []
    probes = []
    cycle = step if isinstance(step, list) else [step]
    step = cycle[0]
    per = probe_steps if isinstance(probe_steps, list) else [probe_steps] * len(starts)
    for i, s in enumerate(starts):
        b, v, g, h = apgd(fn, s, project, cycle[i % len(cycle)], per[i], alpha0)
        probes.append((b, v, g))
        hist.extend(h if not hist else torch.maximum(h, hist[-1]))
    best = _pick(probes, torch.stack([p[1] for p in probes]).argmax(dim=0))
    order = torch.stack([p[1] for p in probes], dim=1).topk(min(keep, len(probes)), dim=1).indices
    for i in range(order.shape[1]):
        d, v, g = _pick(probes, order[:, i])
        d, v, g, h = apgd(fn, d, project, step, keep_steps, 0.5 * alpha0, start=(v, g))
        best = _better(best, (d, v, g))
        hist.extend(torch.maximum(h, hist[-1]))
    if incumbent is not None:
        v, g = fn(incumbent)
        best = _better(best, (incumbent, v, g))
        hist.append(torch.maximum(best[1], hist[-1]))
    d, v, g, h = apgd(fn, best[0], project, step, finish_steps, 0.25 * alpha0, start=(best[1], best[2]))
    hist.extend(torch.maximum(h, hist[-1]))
    return d, v, g, torch.stack(hist)


def _better(a: tuple[Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample the better of two ``(delta, value, gradient)`` (``a`` on ties)."""
    m = b[1] > a[1]
    mb = _bcast(m, a[0])
    return torch.where(mb, b[0], a[0]), torch.where(m, b[1], a[1]), torch.where(mb, b[2], a[2])


def tangent(fn: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor,
            clamp: tuple[float, float]) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    r"""``fn`` with its gradient projected onto the tangent cone of the data box at ``x + delta``: the
    components that push a coordinate at ``lo`` down or at ``hi`` up are zeroed (the projected gradient of
    the box constraint). An L2 step is normalised by the gradient's norm; on the trained flows the gradient
    is largest at background pixels already at the clamp, so without this the normalised step spends its
    length on moves the clamp undoes (the iterate stalled well inside the ball, ``||delta|| ~ 0.7 eps``)."""
    lo, hi = clamp

    def f(delta: Tensor) -> tuple[Tensor, Tensor]:
        val, grad = fn(delta)
        y = x + delta
        out = ((y <= lo) & (grad < 0)) | ((y >= hi) & (grad > 0))
        return val, torch.where(out, torch.zeros_like(grad), grad)

    return f


def sphere_step(step: Step, x: Tensor, clamp: tuple[float, float], eps: float) -> Step:
    r"""``step`` taken along the gradient projected onto the tangent space of the sphere ``||delta|| = eps``
    within the data box's active face (:func:`sphere_tangent`; fixed: the coordinates at the box whose gradient
    pushes out of it). On the trained digits flows the optimum on the sphere moves the perturbation's mass
    from one pushed pixel to another, a small part of a mostly radial gradient: the normalised step of the
    full gradient spends its length on the radial part, which the ball projection undoes; this one moves
    along the sphere at full length (and still stops at a KKT point of the ball and the box, where the
    projected gradient is zero)."""
    lo, hi = clamp

    def f(delta: Tensor, grad: Tensor, alpha: Tensor) -> Tensor:
        y = x + delta
        fixed = ((y <= lo) & (grad <= 0)) | ((y >= hi) & (grad >= 0))
        return step(delta, sphere_tangent(delta, grad, eps, fixed), alpha)

    return f


SPHERE_TOL = 1e-4  # relative: ``||delta|| >= (1 - SPHERE_TOL) eps`` is on the sphere


def sphere_tangent(delta: Tensor, grad: Tensor, eps: float, fixed: Tensor) -> Tensor:
    r"""Per sample on the sphere ``||delta|| = eps`` (to ``SPHERE_TOL``) with ``<g, delta_F> > 0`` (``F``: the
    coordinates not in ``fixed``; the gradient points out of the ball): ``g - (<g, delta_F> / ||delta_F||^2)
    delta_F``, the projection of ``g`` onto the tangent space of the sphere within the face of the box that
    ``fixed`` names; elsewhere ``g``. The components in ``fixed`` are zeroed in both cases."""
    grad = torch.where(fixed, torch.zeros_like(grad), grad)
    dfree = torch.where(fixed, torch.zeros_like(delta), delta)
    B = delta.shape[0]
    n2 = dfree.reshape(B, -1).pow(2).sum(dim=1)
    dot = (grad * dfree).reshape(B, -1).sum(dim=1)
    on = (delta.reshape(B, -1).norm(dim=1) >= (1 - SPHERE_TOL) * eps) & (dot > 0) & (n2 > 0)
    coef = torch.where(on, dot / torch.where(n2 > 0, n2, torch.ones_like(n2)), torch.zeros_like(n2))
    return grad - _bcast(coef, grad) * dfree
