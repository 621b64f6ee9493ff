"""The L-infinity methods of :mod:`deepcheck.attacks.core` (R3): for lowering the likelihood (a convex
maximisation over the box on the linear flow, NP-hard, optimum at a vertex) the vertex search
:func:`vertex_search` (the default after a sign ascent, :func:`ascent_vertex_search`, or on large inputs after APGD,
:func:`~.apgd_vertex.apgd_vertex_search`) and its first version :func:`flip_search`; for
raising it (a concave maximisation, R2/R3) the per-coordinate :func:`rprop`.

Each takes the objective as ``fn(delta) -> (per-sample value, gradient)`` (maximised; one forward+backward
pass of the model) and ``project`` onto the feasible set (the eps-box intersected with the data box
``clamp``: a box, so the Euclidean projection is a per-coordinate clamp); the module knows nothing of models
or specs (the choice of method and its measured limits: :mod:`.core`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .spec import Gen, SampleGenerators, _draw

Tensor = torch.Tensor
Fn = Callable[[Tensor], tuple[Tensor, Tensor]]

VERTEX_FLIP_PROB = 0.5


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def _uniform_rows(gen: Gen, rows: Tensor, D: int, like: Tensor) -> Tensor:
    """Uniform ``(B, D)`` draws for the samples where ``rows`` is true (other rows: 1). With per-sample
    generators only those samples' streams advance, so a sample's draws do not depend on its batch."""
    if not isinstance(gen, SampleGenerators):
        return _draw(torch.rand, (rows.shape[0], D), gen, like.dtype).to(like.device)
    out = torch.ones((rows.shape[0], D), dtype=like.dtype)
    for i in torch.nonzero(rows.cpu()).flatten().tolist():
        out[i] = torch.rand(D, generator=gen.gens[i], dtype=like.dtype)
    return out.to(like.device)


def box_bounds(project: Callable[[Tensor], Tensor], delta: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-coordinate bounds ``lo <= delta <= hi`` of the feasible box, flattened ``(B, D)`` (the L-inf
    projection then the data clamp act per coordinate, so projecting ``+-eps`` gives them)."""
    B = delta.shape[0]
    return (project(torch.full_like(delta, -eps)).reshape(B, -1), project(torch.full_like(delta, eps)).reshape(B, -1))


def flip_search(fn: Callable[[Tensor], tuple[Tensor, Tensor]], delta: Tensor, project: Callable[[Tensor], Tensor],
                 eps: float, steps: int, gen: Gen,
                 start: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    r"""L-infinity vertex search, batched over samples: ``steps`` passes, each trying one coordinate flip per
    sample, ``delta_j -> -eps sign(delta_j)`` (then projected onto the data box), kept only if the true objective
    improves. Each sample tries its untried coordinates in the order of the first-order gain
    ``g_j (delta'_j - delta_j)`` at its current point (a flip can gain through curvature even when that is
    negative: the maximum of a convex quadratic over a box, R3); an accepted flip clears the tried set. When a
    sample has tried every coordinate (a local maximum over single flips) it jumps to a random nearby vertex
    (each coordinate of its best point moved to its opposite bound, box and clamp, with probability
    ``VERTEX_FLIP_PROB``) and searches again. Returns the best ``delta``, its objective and
    the history of best objectives ``(steps, B)``."""
    val, grad = start
    B = val.shape[0]
    flat = delta.reshape(B, -1)
    D = flat.shape[1]
    best, best_val = delta, val
    tried = torch.zeros((B, D), dtype=torch.bool, device=delta.device)
    rows = torch.arange(B, device=delta.device)
    hist = []
    hi = project(torch.full_like(delta, eps)).reshape(B, -1)  # the L-inf projection is per coordinate
    lo = project(torch.full_like(delta, -eps)).reshape(B, -1)
    for _ in range(steps):
        flat, g = delta.reshape(B, -1), grad.reshape(B, -1)
        at_hi, at_lo = flat >= hi, flat <= lo
        target = torch.where(at_hi, lo, torch.where(at_lo, hi, torch.where(g >= 0, hi, lo)))
        gain = (g * (target - flat)).masked_fill(tried, -math.inf)
        j = gain.argmax(dim=1)
        done = tried.all(dim=1)
        cand = flat.clone()
        cand[rows, j] = target[rows, j]
        if bool(done.any()):  # a kick: each coordinate of the best point to its opposite bound w.p. 1/2
            bflat = best.reshape(B, -1)
            opposite = torch.where(bflat >= hi, lo, torch.where(bflat <= lo, hi, torch.where(bflat >= 0, lo, hi)))
            flip = _draw(torch.rand, (B, D), gen, flat.dtype).to(flat.device) < VERTEX_FLIP_PROB
            cand = torch.where(done[:, None], torch.where(flip, opposite, bflat), cand)
        cand = project(cand.reshape(delta.shape))
        cval, cgrad = fn(cand)
        ok = (cval > val) | done
        okb = _bcast(ok, delta)
        delta, grad, val = torch.where(okb, cand, delta), torch.where(okb, cgrad, grad), torch.where(ok, cval, val)
        tried[rows, j] = True
        tried = tried & ~ok[:, None]
        better = val > best_val
        best = torch.where(_bcast(better, best), delta, best)
        best_val = torch.where(better, val, best_val)
        hist.append(best_val)
    return best, best_val, torch.stack(hist) if hist else val.new_zeros((0, B))




RPROP_UP, RPROP_DOWN = 1.2, 0.5
RPROP_ETA0 = 0.125
"""The initial per-coordinate step of :func:`rprop`, in units of ``alpha0`` (default ``2 eps``: ``eps / 4``)."""


def rprop(fn: Fn, delta: Tensor, project: Callable[[Tensor], Tensor], eps: float, steps: int, eta0: float,
          start: tuple[Tensor, Tensor] | None = None, up: float | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Monotone Rprop on the box (Riedmiller & Braun 1993, iRprop-), per coordinate and per sample: ``steps``
    passes of ``delta' = P(delta + eta * s)``, ``P`` the projection onto the box (a clamp), ``s = sign(g)``
    except ``s_j = 0`` where ``g_j`` changed sign since the last accepted step. Each coordinate has its own
    step ``eta_j`` (start ``eta0``): times ``up`` (default ``RPROP_UP`` = 1.2; 1.5 measured no better at the
    default budget) while its partial derivative keeps its sign (at most ``2 eps``),
    times 0.5 when it changes (at least ``1e-6 eps``). A candidate is accepted only if the sample's objective
    does not fall; a rejected one halves every step of that sample (a backtracking line search).

    Why not the sign step of :func:`~.core._ascend`, which moves every coordinate by the same ``alpha``: on
    the trained 28x28 flows the OOD (raising) optimum moves the foreground pixels by ``+-eps`` and the
    background pixels (at the clamp, in a narrow peak of the density) by ~1e-3, so one step size for all
    coordinates is capped at ~1e-3 by the background and 40 steps cannot leave the neighbourhood of ``x``:
    the attacked bits/dim was flat in eps (issue 14). Per-coordinate steps separate the two scales. On a
    concave objective (raising on the linear flow, R2/R3) it converges to the optimum of the box-constrained
    QP (``tests/test_bridge.py``). Returns the best ``delta``, its objective, its gradient and the history of
    best objectives ``(steps + 1, B)`` (``(steps, B)`` with ``start``)."""
    val, grad = fn(delta) if start is None else start
    B = val.shape[0]
    hist = [] if start is not None else [val]
    eta = torch.full_like(delta, eta0)
    prev = torch.zeros_like(delta)
    eta_max, eta_min = 2.0 * eps, eps * 1e-6
    up = RPROP_UP if up is None else up
    for _ in range(steps):
        s = grad.sign()
        same = s * prev
        eta = torch.where(same > 0, (eta * up).clamp(max=eta_max),
                          torch.where(same < 0, (eta * RPROP_DOWN).clamp(min=eta_min), eta))
        s = torch.where(same < 0, torch.zeros_like(s), s)
        cand = project(delta + eta * s)
        cval, cgrad = fn(cand)
        ok = cval >= val
        okb = _bcast(ok, delta)
        eta = torch.where(okb, eta, (eta * RPROP_DOWN).clamp(min=eta_min))
        delta, grad, val = torch.where(okb, cand, delta), torch.where(okb, cgrad, grad), torch.where(ok, cval, val)
        prev = torch.where(okb, s, torch.zeros_like(s))
        hist.append(val)
    return delta, val, grad, torch.stack(hist) if hist else val.new_zeros((0, B))


KICK_FRACTION = 0.1
"""The share of the coordinates (at least 2) that a small kick of :func:`vertex_search` flips."""
SECANT = True
"""The vertex search's secant curvature (:func:`vertex_search`); ``False``: the version before (``bench/``)."""


def vertex_search(fn: Fn, delta: Tensor, project: Callable[[Tensor], Tensor], eps: float, steps: int, gen: Gen,
                  start: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    r"""L-infinity vertex search with measured curvature, batched over samples: ``steps`` passes, each evaluating
    one candidate per sample, kept only if the true objective improves (R3: the maximum of a convex function
    over the box is at a vertex; on deep flows the candidates are judged by the model alone).

    Each coordinate ``j`` has a *flip* ``s_j``: to the opposite bound of the box (box and clamp; from an
    interior value, to the bound its partial derivative points to). Its predicted gain is the quadratic model
    ``p_j = g_j s_j + h_j s_j^2 / 2``, where ``h_j`` is the curvature measured the last time ``j`` was flipped
    alone: ``h_j = 2 (f(delta + s_j e_j) - f(delta) - g_j s_j) / s_j^2``, so the prediction is exact at that
    point and, on a quadratic (the linear flow), at every later point (``g`` changes, ``h_j = P_jj`` does not).
    Until then (with ``SECANT``) ``h_j`` is the secant ``(g'_j - g_j) / (d'_j - d_j)`` of the last evaluated
    candidate that moved ``j`` (kept or not; the same pass's gradient, so free): exact on a separable quadratic,
    biased by the other moved coordinates ``sum_{i != j} P_ij (d'_i - d_i) / (d'_j - d_j)`` otherwise, and only
    a ranking (every candidate is judged by the true objective). When no coordinate is predicted to gain and
    some have no curvature yet (e.g. pinned at the clamp since the start), those are all flipped at once: one
    pass measures all their secants. Without it (``h_j = 0`` until ``j`` is flipped alone) one coordinate's
    curvature is learnt per pass: on a separable linear flow with D = 400 the default reached 0.81-0.86 of the
    optimum, with it 1.000 (``tests/test_attack_strength.py``). Candidates: the ``k`` coordinates of largest positive
    predicted gain flipped together, ``k`` doubling on success and halving on failure (one coordinate when none
    is predicted to gain); a coordinate whose measured flip does not gain is not tried again until the gradient
    says otherwise. When no coordinate is left to try (a local maximum over single flips) the sample *kicks*
    from its best vertex, accepted whatever its value (if finite): first to the antipodal vertex (every
    coordinate flipped: near the mean the quadratic part is symmetric and the clamp decides), then alternately a
    random half of the coordinates flipped and a small kick (``KICK_FRACTION`` of them, at least 2) whose
    flipped coordinates are frozen until the next kick, so that the search does not simply undo it.
    Returns the best ``delta``, its objective and the history of best objectives ``(steps, B)``."""
    return _search(fn, delta, project, eps, steps, gen, start, None, 0)


def ascent_vertex_search(fn: Fn, delta: Tensor, project: Callable[[Tensor], Tensor], eps: float, steps: int,
                         alpha0: float, patience: int, gen: Gen) -> tuple[Tensor, Tensor, Tensor]:
    r"""The L-inf lowering method: ``1 + steps`` passes, per sample a monotone sign ascent
    ``delta' = P(delta + alpha sign(g))`` (kept only if the objective improves; ``alpha`` from ``alpha0``, doubled
    on success up to ``2 eps``, halved on failure) until it stalls -- ``patience`` failures in a row -- then
    :func:`vertex_search` from where it stopped, in the same passes (each sample switches on its own). The
    ascent moves every coordinate at each pass; the vertex search one or a few. Measured: on the 8x8 digits
    flows (eps 0.02) and the linear flows the ascent stalls within a few passes and the vertex search does the
    work; on the 28x28 flows at eps >= 0.125 the ascent still gains after 100 passes, and a fixed split (10 %
    ascent) reached only 0.13-0.57 of the best (``bench/bench_attacks.py``). Returns the best ``delta``, its
    objective and the history of best objectives ``(steps + 1, B)``."""
    start = fn(delta)
    best, best_val, hist = _search(fn, delta, project, eps, steps, gen, start, alpha0, patience)
    return best, best_val, torch.cat([start[0][None], hist])


def _search(fn: Fn, delta: Tensor, project: Callable[[Tensor], Tensor], eps: float, steps: int, gen: Gen,
            start: tuple[Tensor, Tensor], alpha0: float | None, patience: int) -> tuple[Tensor, Tensor, Tensor]:
    """The loop of :func:`vertex_search` (``alpha0=None``) and :func:`ascent_vertex_search`; history
    ``(steps, B)``."""
    val, grad = start
    hist = []
    B = val.shape[0]
    lo, hi = box_bounds(project, delta, eps)
    D = lo.shape[1]
    flat, g = delta.reshape(B, -1), grad.reshape(B, -1)
    best, best_val = flat, val
    alpha = torch.full((B,), alpha0 or 0.0, dtype=flat.dtype, device=flat.device)
    fails = torch.zeros(B, dtype=torch.long, device=flat.device)
    ascending = torch.full((B,), alpha0 is not None, dtype=torch.bool, device=flat.device)
    h = torch.zeros_like(flat)
    hs = torch.zeros_like(flat)  # secant curvature from multi-coordinate moves: (g'_j - g_j) / (d'_j - d_j)
    hsv = torch.zeros_like(flat, dtype=torch.bool)
    known = torch.zeros_like(flat, dtype=torch.bool)
    frozen = torch.zeros_like(known)
    kicks = torch.zeros(B, dtype=torch.long, device=flat.device)
    k = torch.ones(B, dtype=torch.long, device=flat.device)
    rows = torch.arange(B, device=flat.device)
    ranks = torch.arange(D, device=flat.device)
    n_kick = max(2, math.ceil(KICK_FRACTION * D))
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        target = torch.where(flat > mid, lo, torch.where(flat < mid, hi, torch.where(g >= 0, hi, lo)))
        step = target - flat
        p = g * step + 0.5 * (torch.where(known, h, torch.where(hsv, hs, 0.0)) if SECANT else h) * step * step
        eligible = (step != 0) & (~known | (p > 0)) & ~frozen & ~ascending[:, None]
        done = ~eligible.any(dim=1) & ~ascending
        order = p.masked_fill(~eligible, -math.inf).argsort(dim=1, descending=True)
        n_pos = ((p > 0) & eligible).sum(dim=1)
        kk = torch.minimum(k, n_pos.clamp(min=1))
        sel = torch.zeros_like(eligible)
        sel.scatter_(1, order, ranks.expand(B, D) < kk[:, None])
        sel &= eligible
        if SECANT:  # nothing predicted to gain: flip every coordinate with no curvature yet (measured, kept or not)
            blind = eligible & ~known & ~hsv
            probe = (n_pos == 0) & blind.any(dim=1) & ~done & ~ascending
            sel = torch.where(probe[:, None], blind, sel)
        cand = torch.where(sel, target, flat)
        if bool(done.any()):  # a kick from the best vertex: the antipode, then a random half or a small tabu kick
            bt = torch.where(best > mid, lo, hi)
            noise = _uniform_rows(gen, done, D, flat)
            small = noise.argsort(dim=1) < n_kick
            half = noise < VERTEX_FLIP_PROB
            m = kicks[:, None]
            flip = torch.where(m == 0, torch.ones_like(small), torch.where(m % 2 == 1, half, small))
            cand = torch.where(done[:, None], torch.where(flip, bt, best), cand)
            frozen = torch.where(done[:, None], flip & (m > 0) & (m % 2 == 0), frozen)
            kicks = kicks + done.long()
        cand = torch.where(ascending[:, None], flat + alpha[:, None] * g.sign(), cand)
        cand = project(cand.reshape(delta.shape)).reshape(B, -1)
        cval, cgrad = fn(cand.reshape(delta.shape))
        cg = cgrad.reshape(B, -1)
        if SECANT:
            dd = cand - flat
            moved = (dd != 0) & torch.isfinite(cval)[:, None]
            hs = torch.where(moved, (cg - g) / torch.where(moved, dd, torch.ones_like(dd)), hs)
            hsv |= moved
        single = (sel.sum(dim=1) == 1) & ~done & ~ascending
        if bool(single.any()):  # the measured curvature along the flipped coordinate: the true gain, exactly
            j = sel.float().argmax(dim=1)
            sj = step[rows, j]
            hj = 2.0 * ((cval - val) - g[rows, j] * sj) / (sj * sj).clamp_min(torch.finfo(flat.dtype).tiny)
            single &= torch.isfinite(hj)
            h[rows[single], j[single]] = hj[single]
            known[rows[single], j[single]] = True
        ok = (cval > val) | (done & torch.isfinite(cval))
        alpha = torch.where(ascending, torch.where(ok, (2.0 * alpha).clamp(max=2.0 * eps), 0.5 * alpha), alpha)
        fails = torch.where(ok, torch.zeros_like(fails), fails + 1)
        k = torch.where(done | ascending, torch.ones_like(k),
                        torch.where(ok, (2 * k).clamp(max=D), (k // 2).clamp(min=1)))
        okb = ok[:, None]
        flat, g, val = torch.where(okb, cand, flat), torch.where(okb, cg, g), torch.where(ok, cval, val)
        better = val > best_val
        best = torch.where(better[:, None], flat, best)
        best_val = torch.where(better, val, best_val)
        hist.append(best_val)
        ascending = ascending & (fails < patience)
    return best.reshape(delta.shape), best_val, torch.stack(hist) if hist else val.new_zeros((0, B))
