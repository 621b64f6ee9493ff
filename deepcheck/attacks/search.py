"""The search methods of :mod:`deepcheck.attacks.core` added for issue 14: APGD (:func:`apgd`) and the sparse
start of L2 restarts (:func:`sparse_start`); the L-inf methods (the vertex search :func:`flip_search`, re-exported
here) are in :mod:`.vertex`. Each
takes the objective as ``fn(delta) -> (per-sample value, gradient)`` (maximised; one forward+backward pass)
or ``value(delta) -> per-sample value`` (one forward pass) and a ``project`` onto the feasible set; the
module knows nothing of models or specs (the method and its measured limits: :mod:`.core`)."""

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


def sparse_start(value: Callable[[Tensor], Tensor], project: Callable[[Tensor], Tensor], shape: tuple[int, ...],
                 eps: float, like: Tensor, gen: Gen, max_candidates: int) -> tuple[Tensor, int]:
    r"""The best single-coordinate move ``delta = s eps e_j`` (``s = +-1``, projected onto the ball and the data
    box) per sample, screened by forward passes only: ``value(delta) -> (B,)``, maximised. Each candidate is one
    forward pass of the whole batch; at most ``max_candidates`` of the ``2D`` moves are screened (a seeded
    random subset, the same for every sample, when there are more). On the trained digits flows the best
    L2 perturbation is sparse (one background pixel pushed by ~eps, its neighbours to the clamp) and lies in a
    basin that runs from zero or from random points of the ball rarely reach; this start finds it. Returns the
    start and the number of forward passes spent."""
    D = int(math.prod(shape[1:]))
    cand = torch.arange(2 * D)
    if len(cand) > max_candidates:
        # one subset for the whole batch; with per-sample generators a fixed stream, so that it does not depend
        # on which samples share the batch (sharding)
        shared = gen if isinstance(gen, torch.Generator) else torch.Generator().manual_seed(0)
        cand = cand[torch.randperm(2 * D, generator=shared)[:max_candidates]]
    B = shape[0]
    best = torch.zeros(shape, dtype=like.dtype, device=like.device)
    best_val = None
    for c in cand.tolist():
        j, s = c % D, (1.0 if c < D else -1.0)
        delta = torch.zeros((B, D), dtype=like.dtype, device=like.device)
        delta[:, j] = s * eps
        delta = project(delta.reshape(shape))
        with torch.no_grad():
            v = value(delta)
        if best_val is None:
            best, best_val = delta, v
        else:
            better = v > best_val
            best = torch.where(_bcast(better, best), delta, best)
            best_val = torch.where(better, v, best_val)
    return best, len(cand)
