"""L-inf lowering on large inputs (:mod:`.core`, ``LINF_LARGE_D``): APGD (:mod:`.search`) then the vertex search
(:mod:`.vertex`); a module of its own because :mod:`.search` imports :mod:`.vertex`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .search import apgd
from .spec import Gen
from .vertex import Fn, vertex_search

Tensor = torch.Tensor


def apgd_vertex_search(fn: Fn, delta: Tensor, project: Callable[[Tensor], Tensor], eps: float, steps: int,
                       alpha0: float, gen: Gen, fraction: float,
                       step: Callable[[Tensor, Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    r"""``1 + steps`` passes: APGD (:func:`~.search.apgd`, the sign ``step``) from ``delta`` for ``fraction`` of
    the steps, then :func:`~.vertex.vertex_search` from its best point for the rest: the L-inf lowering method on
    large inputs (:mod:`.core`, ``LINF_LARGE_D``). On the trained 28x28 flows the NLL over the box has many basins
    and the per-sample sign ascent of :func:`~.vertex.ascent_vertex_search` never stalls within 100 steps; APGD's
    momentum and step halving at stalls reach better basins at eps 0.03-0.125 (``bench/bench_attacks.py``).
    Returns the best ``delta``, its objective and the history of best objectives ``(steps + 1, B)``."""
    n1 = int(round(fraction * steps))
    best, best_val, best_grad, h1 = apgd(fn, delta, project, step, n1, alpha0)
    best, best_val, h2 = vertex_search(fn, best, project, eps, steps - n1, gen, start=(best_val, best_grad))
    return best, best_val, torch.cat([h1, h2])


def polish(fn: Fn, best: Tensor, project: Callable[[Tensor], Tensor], eps: float, passes: int, alpha0: float,
           gen: Gen, fraction: float,
           step: Callable[[Tensor, Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    r"""``passes`` passes (at least 2) from the best point of the runs: :func:`apgd_vertex_search` with the small
    first step ``alpha0`` (APGD for ``fraction`` of the steps, then the vertex search; ``fraction = 0``: the
    vertex search alone, with its kicks). A local search around ``best``: the objective only rises (its best
    point is the start or better). Returns the best ``delta``, its objective and the history ``(passes, B)``."""
    if fraction <= 0.0:
        start = fn(best)
        out, val, hist = vertex_search(fn, best, project, eps, passes - 1, gen, start=start)
        return out, val, torch.cat([start[0][None], hist])
    return apgd_vertex_search(fn, best, project, eps, passes - 1, alpha0, gen, fraction, step)
