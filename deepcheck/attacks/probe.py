"""The L2 *probe run* of :mod:`deepcheck.attacks.core` (issue 14, goal 4): the restart of the default L2 attack,
a successive halving over starts -- the best single-coordinate moves and random points of the ball are each
probed by a short APGD run, the best few go on, and the best of those and of the earlier runs gets the remaining
passes (:func:`~.search.probe_search`); on small images two-pixel starts join them (:mod:`.pairs`), on large
images (:func:`uses_patterns`) the structured starts of :mod:`.patterns` (:func:`pattern_plan`). Why, and the
measured limits: the module docstring of :mod:`.core`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .pairs import pair_starts
from .patterns import PATTERN_LENGTH, pattern_starts
from .search import probe_search, screen_moves, sparse_starts, sphere_step
from .spec import AttackSpec, Gen

Tensor = torch.Tensor
NormLike = Any  # a core.NormSpec (not imported: core imports this module)

PROBES = 8  # sparse starts probed by the L2 probe run (the best single-coordinate moves)
RANDOM_PROBES = 4  # and random points of the ball
PROBE_FRACTION = 0.08  # steps per probe, in units of ``steps``
KEEP = 3  # probes that go on
SPHERE_PROBES = True  # every other probe steps along the sphere's tangent (sphere_step); False: the default before
KEEP_FRACTION = 0.3  # their steps each, in units of ``steps``
PROBE_RUN = 3  # the probe run's passes, in units of ``steps``
SPARSE_LARGE = 1  # sparse probes where the screen cannot try every single-coordinate move (28x28); the rest random
PATTERN_PROBES = 4  # large images: structured starts (.patterns) probed instead (0: the sparse + random plan)
PATTERN_FRACTION = 0.2  # the probe steps of the plan with patterns, in units of ``steps``
PATTERN_KEEP = 2  # pattern probes that go on
PATTERN_SPARSE = 1  # and sparse probes (best single-coordinate moves), screened by a third of the forward passes
PATTERN_RANDOM = 2  # and random points of the ball
PAIR_PROBES = 8  # two-pixel starts (.pairs) probed besides the others where the screen leaves forward passes
PAIR_TOP = 12  # the pairs are drawn from this many best single moves per sample
PAIR_STEPS = 4  # APGD steps of each pair probe (their passes come from the finish)
PATTERN_ALPHA = 0.25  # their first step, in units of ``alpha0`` (2 eps: a larger step leaves the pattern's basin)


def probe_plan(steps: int, dim: int = 0) -> tuple[int, int, int, int, int, int]:
    """``(sparse, random, probe_steps, keep, keep_steps, finish_steps)`` of the L2 probe run for ``steps``:
    ``PROBE_RUN * steps`` passes in all (the probes take at most half), the incumbent's evaluation included
    (``steps >= 2``). ``dim``: the number of coordinates per sample; where the screen's ``2 steps`` forward
    passes cannot try all ``2 dim`` single-coordinate moves, only ``SPARSE_LARGE`` probes are sparse and the
    others random (on the 28x28 flows the sparse starts lead to the low basins, one pixel pushed by ~eps; the
    high ones, up to 3-7x higher, move ~10 pixels in structured patterns and are reached from random starts)."""
    total = PROBE_RUN * steps
    s = max(1, round(PROBE_FRACTION * steps))
    n = max(1, min(PROBES + RANDOM_PROBES, total // (2 * (1 + s))))
    n_random = n * RANDOM_PROBES // (PROBES + RANDOM_PROBES)
    if dim > steps:  # 2 dim moves > 2 steps screened
        n_random = n - min(SPARSE_LARGE, n)
    keep = min(KEEP, n)
    s2 = round(KEEP_FRACTION * steps)
    finish = max(0, total - n * (1 + s) - keep * s2 - 1)
    return n - n_random, n_random, s, keep, s2, finish


def pattern_plan(steps: int) -> tuple[int, int, int, int, int, int, int]:
    """``(sparse, random, patterns, probe_steps, keep, keep_steps, finish_steps)`` of the L2 probe run on large
    images (:func:`uses_patterns`): ``PATTERN_SPARSE`` single-coordinate starts, ``PATTERN_RANDOM`` random points
    of the ball and ``PATTERN_PROBES`` structured starts, probed for ``PATTERN_FRACTION * steps`` steps each; the
    ``PATTERN_KEEP`` best go on for ``KEEP_FRACTION * steps``, the best of them and of the earlier runs
    finishes; ``PROBE_RUN * steps`` forward+backward passes in all, the incumbent's evaluation included (the
    probes take at most two thirds; the patterns are the last to go when they do not fit)."""
    total = PROBE_RUN * steps
    s = max(1, round(PATTERN_FRACTION * steps))
    n = max(1, min(PATTERN_SPARSE + PATTERN_RANDOM + PATTERN_PROBES, 2 * total // (3 * (1 + s))))
    p = max(1, n - PATTERN_SPARSE - PATTERN_RANDOM) if PATTERN_PROBES else 0
    k = min(PATTERN_SPARSE, n - p)
    r = n - p - k
    s2 = max(1, round(KEEP_FRACTION * steps))
    keep = max(0, min(PATTERN_KEEP, n, (total - n * (1 + s) - 1) // s2))
    finish = max(0, total - n * (1 + s) - keep * s2 - 1)
    return k, r, p, s, keep, s2, finish


def uses_patterns(steps: int, shape: tuple[int, ...]) -> bool:
    """Whether the probe run starts from structured patterns (:mod:`.patterns`): ``PATTERN_PROBES > 0``, image
    batches ``(B, C, H, W)`` with ``H, W >= 2 PATTERN_LENGTH`` and more coordinates than ``steps`` (where the
    forward screen cannot try every single-coordinate move: the 28x28 flows, not the 8x8 digits)."""
    return (PATTERN_PROBES > 0 and len(shape) == 4 and min(shape[2:]) >= 2 * PATTERN_LENGTH
            and math.prod(shape[1:]) > steps)


def _probe_run(fn: Callable[[Tensor], tuple[Tensor, Tensor]], value: Callable[[Tensor], Tensor],
               project: Callable[[Tensor], Tensor], spec: AttackSpec, norm: NormLike, shape: tuple[int, ...],
               like: Tensor,
               gen: Gen, incumbent: Tensor, x: Tensor | None = None,
               patterns: bool = True, pairs: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The L2 restart of the default method: :func:`~.search.probe_search` over the best single-coordinate
    moves (:func:`~.search.sparse_starts`, at most ``2 steps`` forward passes) and random points of the ball
    (with ``patterns``, ``x`` and a clamp on large images, :func:`uses_patterns`: :func:`pattern_plan`'s sparse,
    random and structured starts, :func:`~.patterns.pattern_starts`, screened by a third and two thirds of the
    ``2 steps`` forward passes, the probes' first step ``PATTERN_ALPHA * alpha0``),
    finishing from the best of the probes and ``incumbent`` (the best of the earlier runs); ``probe_plan(steps)``
    gives the ``PROBE_RUN * steps`` forward+backward passes. With ``x`` (the clean inputs) and ``SPHERE_PROBES``,
    every other probe (the 2nd, 4th, ...) steps along the sphere's tangent (:func:`~.search.sphere_step`).
    With ``pairs`` and at least 2 sparse probes (the 8x8 digits, not the linear flows of more than ``steps``
    coordinates): ``PAIR_PROBES`` two-pixel starts too (:func:`~.pairs.pair_starts` over the ``PAIR_TOP`` best
    single moves, screened by the forward passes the single moves leave of the ``2 steps``: 66 after 128 on the
    digits), probed ``PAIR_STEPS`` steps each, their passes taken from the finish (which keeps at least
    ``steps // 2``). ``norm`` is the L2 entry of :data:`.norms.NORM_SPECS` (its ``random`` start and ``step``)."""
    if patterns and x is not None and spec.clamp is not None and uses_patterns(spec.steps, shape):
        k, r, p, s, keep, s2, finish = pattern_plan(spec.steps)
        screen = 2 * spec.steps
        starts = sparse_starts(value, project, shape, spec.eps, like, gen, screen // 3, k)[0][:k] if k else []
        starts += [project(norm.random(shape, spec.eps, gen, like.dtype).to(like.device)) for _ in range(r)]
        starts += pattern_starts(value, project, x, spec.eps, p, screen - screen // 3)[0]
        delta, val, _, hist = probe_search(fn, starts, project, norm.step, s, keep, s2, finish,
                                           PATTERN_ALPHA * spec.alpha0, incumbent)
        return delta, val, hist
    k, r, s, keep, s2, finish = probe_plan(spec.steps, int(math.prod(shape[1:])))
    screen = 2 * spec.steps
    starts, moves, _, spent = screen_moves(value, project, shape, spec.eps, like, gen, screen, max(k, PAIR_TOP))
    starts = starts[:k]
    n_pairs = max(0, min(PAIR_PROBES, (finish - spec.steps // 2) // (1 + PAIR_STEPS))) if pairs and k >= 2 else 0
    two = pair_starts(value, project, moves[:, :PAIR_TOP], shape, spec.eps, like, n_pairs, screen - spent)[0]
    finish -= len(two) * (1 + PAIR_STEPS)
    starts += [project(norm.random(shape, spec.eps, gen, like.dtype).to(like.device)) for _ in range(r)]
    step = norm.step
    if SPHERE_PROBES and x is not None and spec.clamp is not None:
        step = [norm.step, sphere_step(norm.step, x, spec.clamp, spec.eps)]
    steps = [s] * len(starts) + [PAIR_STEPS] * len(two)
    delta, val, _, hist = probe_search(fn, starts + two, project, step, steps, keep, s2, finish, spec.alpha0,
                                       incumbent)
    return delta, val, hist
