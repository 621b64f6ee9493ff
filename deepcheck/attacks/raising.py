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

from .search import apgd
from .vertex import RPROP_ETA0, rprop

Tensor = torch.Tensor
Fn = Callable[[Tensor], tuple[Tensor, Tensor]]

LARGE_D = 256
"""L2 raising on inputs with at least this many coordinates (the 28x28 images, not the 8x8 digits) uses
:func:`raising_run` for runs 0 and 1 (with ``restarts >= 1``); ``0``: never (the default before, for ``bench/``)."""
WARM_ALPHA = 0.125
"""The first step of the APGD continuation, in units of ``alpha0``."""


def uses_raising(sign: float, norm: str, adaptive: bool, restarts: int, numel: int) -> bool:
    """Whether runs 0 and 1 are :func:`raising_run`'s: L2, ``likelihood="increase"`` (``sign < 0``), adaptive steps,
    ``restarts >= 1`` and at least ``LARGE_D`` coordinates per sample."""
    return sign < 0 and norm == "l2" and adaptive and restarts >= 1 and 0 < LARGE_D <= numel


def raising_run(run: int, fn: Fn, project: Callable[[Tensor], Tensor], step: Callable[[Tensor, Tensor, Tensor], Tensor],
                start: Tensor, eps: float, steps: int, passes: int, alpha0: float) -> tuple[Tensor, Tensor, Tensor]:
    """Run 0: Rprop from ``start`` (projected) for ``steps`` steps (``1 + steps`` passes; first step ``RPROP_ETA0 *
    alpha0`` per coordinate). Run 1: APGD from ``start`` (the best point so far) for ``passes`` passes, its first
    step ``WARM_ALPHA * alpha0``. ``fn(delta) -> (objective, gradient)`` is maximised. Returns the best ``delta``, its
    objective and the history of best objectives (one row per pass)."""
    if run == 0:
        best, best_val, _, hist = rprop(fn, project(start), project, eps, steps, RPROP_ETA0 * alpha0)
        return best, best_val, hist
    best, best_val, _, hist = apgd(fn, start, project, step, max(passes - 1, 1), WARM_ALPHA * alpha0)
    return best, best_val, hist
