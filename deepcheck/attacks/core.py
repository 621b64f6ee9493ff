r"""The functional core of the projected-gradient attacks of :mod:`deepcheck.attacks` (sample-specific
:func:`~deepcheck.attacks.pgd` and :func:`~deepcheck.attacks.universal`), for the L2 and L-infinity balls
(R1-R4, REFERENCES "Attacks"). It trusts its :class:`~deepcheck.attacks.spec.AttackSpec` (validated there).

The attack solves, per sample ``x`` (``likelihood="decrease"``, the in-distribution attack)

.. math::  \max_{\|\delta\| \le \varepsilon,\; lo \le x+\delta \le hi} \mathrm{NLL}(x + \delta)

or the minimisation (``likelihood="increase"``, the out-of-distribution attack). On the linear flow this is
the trust-region subproblem of R1 (a convex maximisation: the optimum is on the sphere, the KKT point
``(\eta I - P)\delta = P v`` with ``\eta \ge 1/s_{min}``), R2 (a convex minimisation) and R3 (L-infinity);
``tests/test_bridge.py`` checks that the defaults below reach those exact optima to 1e-3 relative.

The method: a functional core over a per-norm *step* (L2: ``delta + alpha g / ||g||_2``; L-inf:
``delta + alpha sign(g)``) and *projection* (onto the ball, then onto the data box ``clamp``). Every step costs
one forward and one backward pass (the candidate's loss and gradient come from the same pass); a run is
``1 + steps`` passes, whatever its method, except the L2 probe run (:func:`default_method` picks one per norm and
direction):

* ``"apgd"`` (L2, both directions): APGD (Croce & Hein 2020; :func:`~.search.apgd`: momentum 0.75, the step halved
  at checkpoints where progress stalled, restarting from the best point) for ``APGD_FRACTION`` of the steps, then
  the monotone ascent below from its best point, with the gradient projected onto the tangent cone of the data box
  (:func:`~.search.tangent`). With ``restarts >= 1`` the first restart is the *probe run* (:func:`_probe_run`,
  ``PROBE_RUN * steps`` passes): the ``PROBES`` best single-coordinate moves ``+-eps e_j``
  (:func:`~.search.sparse_starts`, screened by at most ``2 steps`` forward passes) and ``RANDOM_PROBES`` random
  points of the ball (where the screen cannot try all ``2 D`` moves: ``SPARSE_LARGE`` = 1 sparse probe, the others
  random, :func:`~.probe.probe_plan`; on image batches of 16x16 pixels or more, the 28x28 flows,
  :func:`~.probe.pattern_plan`: 1 sparse probe, 2 random ones and 4 structured patterns of :mod:`.patterns`, runs
  of pixels down a column or along a row at the object's edges and on the image border, 20 steps each from
  ``alpha0 / 4``, ``PATTERN_KEEP`` = 2 go on, no sphere steps) are each probed by a short APGD run, the ``KEEP``
  best go on, and the best of those and of run 0 gets the remaining passes (:func:`~.search.probe_search`, successive
  halving over starts); every other probe steps along the gradient projected onto the sphere's tangent within the
  box's active face (:func:`~.search.sphere_step`: on the sphere the basins are joined by moving the perturbation's
  mass from one pushed pixel to another, a small part of a mostly radial gradient that the plain normalised step
  barely follows). Where the screen leaves forward passes (the 8x8 digits: 66 after the 128 single moves) the
  ``PAIR_PROBES`` = 8 best *two-pixel* starts ``eps (s_i e_i + s_j e_j) / sqrt 2`` over pairs of the ``PAIR_TOP`` =
  12 best single moves (:mod:`.pairs`) are probed too, ``PAIR_STEPS`` = 4 steps each, their 40 passes taken from
  the finish (on the RealNVP digits' worst images the best point pushes two pixels by ~0.11-0.14 each, and the
  single-pixel starts ascend into the basin of one of them, 4-6 % lower). Why: on the trained flows the NLL over
  the L2 ball has many basins (on the digits one per
  background pixel pushed up by ~eps, its neighbours to the clamp, with values up to 1.5x apart); the run from zero
  and a single start stop in the wrong one, the forward screen ranks basins only roughly (rank correlation ~0, the
  best among the first ~12) but 5-10 ascent steps rank them well. Without the tangent cone the normalised step spent
  its length on background pixels already at the clamp (the iterate stalled at ``||delta|| ~ 0.7 eps`` on
  Fashion-MNIST).
  L2 *raising* on inputs of at least 256 coordinates (:mod:`.raising`, with ``restarts >= 1``): run 0 is Rprop
  from zero and run 1, instead of the probe run, a scaled ascent from its best point in a diagonal metric learnt
  from secants (pixel scales far apart; worst >= 0.996 of the best known on the 28x28 flows at the same 401 passes).
* ``"vertex"`` (L-inf lowering): per sample a monotone sign ascent until it stalls (``patience`` failures in a
  row), then the batched vertex search :func:`~.vertex.vertex_search`: per sample and pass one candidate vertex,
  kept only if the true objective improves -- the coordinates of largest predicted gain flipped to their
  opposite bound (gain = first order plus a curvature: measured on that coordinate's last single flip, exact on
  a quadratic, or until then the secant of the gradient along the last evaluated move of that coordinate), as
  many as succeed (doubling/halving); at a local maximum over single flips, kicks from the best vertex (the
  antipodal vertex first, then random halves and small tabu kicks). The maximum of a convex function over a box
  is at a vertex (R3). On inputs with at least ``LINF_LARGE_D`` = 256 coordinates (the 28x28 images) each run
  is instead APGD with the sign step for ``LINF_APGD_FRACTION`` = 60 % of its steps, then the vertex search
  from APGD's best point (:func:`~.apgd_vertex.apgd_vertex_search`): there the sign ascent never stalled in
  100 steps (the vertex search never ran) and the NLL has many basins, which the momentum crosses more often.
  After the runs (with ``restarts >= 1``), ``LINF_POLISH * steps`` = 200 more passes polish the best point
  (:func:`~.apgd_vertex.polish`: APGD from it with the first step ``alpha0 / 8`` for half of them, then the
  vertex search; one more history row).
  ``"flip"`` is its first version (:func:`~.vertex.flip_search`, first-order order only).
* ``"rprop"`` (L-inf raising): monotone Rprop on the box (:func:`~.vertex.rprop`): a step per coordinate,
  grown while its partial derivative keeps its sign and halved when it changes, candidates kept only if the
  objective does not fall. The sign step moves every coordinate by one ``alpha``; on trained 28x28 flows the
  OOD optimum moves foreground pixels by ``eps`` and background pixels by ~1e-3, so one step size stalled.
  Its restarts are *warm* (``RPROP_WARM``): from the best point so far with fresh steps, not a random point
  (on the 28x28 flows at eps 0.25 one 101-pass run is still converging and a random start is far off).
* ``"monotone"`` (the method of every norm before issue 14): a candidate is accepted per
  sample only if it improves that sample's objective; the step ``alpha`` doubles on success (up to a
  per-norm cap) and halves on failure. For a convex objective maximised over the ball (R1, R3) a full step
  (``alpha >= 2 eps``) is the conditional gradient step, which can only increase the objective; for the
  convex minimisation (R2) the halving is a backtracking line search. *Kicks* (iterated local search): a
  sample whose step failed ``patience`` times in a row jumps to a random perturbation of its best point
  (L-inf: sign flips of a random quarter of the coordinates; L2: plus a random point of the ball); the
  patience grows with each kick, so a backtracking that needs many halvings is never cut short.
* **restarts** -- the first run starts at ``delta = 0`` (from zero PGD finds the global optimum of R1,
  except at ``v = 0`` where the gradient vanishes), then ``restarts`` runs from random points of the ball
  (or the sparse start); the best per sample is kept.
* the loss is a **sum of per-sample losses**, so a sample's step does not depend on the batch size, and the
  model runs in eval mode with no parameter gradients (:func:`attack_mode` restores both afterwards).

Limits, measured in ``tests/test_bridge.py``, ``tests/test_attack_strength.py``,
``tests/test_attack_l2_strength.py``, ``tests/test_attack_linf_strength.py`` and ``bench/bench_attacks.py``
(default 100 steps, 1 restart: 202 forward+backward passes for L-inf, 402 for L-inf lowering on inputs with at
least ``LINF_LARGE_D`` coordinates; for L2 401, plus at most 200 forward-only screening passes, 194 on 8x8
images: 128 single moves and 66 pairs): exact to 1e-3 for L2 (both directions, hard case included) and for L-inf
raising on flows with condition number up to 100 (``tests/test_bridge.py``); L-inf raising exact to 1e-9 on
linear flows whose coordinates' scales span 1e-3..1e-1 (``tests/test_attack_linf_strength.py``; the sign step:
1e-3 off). L-inf lowering with the [0, 1] clamp binding, points near the mean and condition numbers up to 1e4
(the NP-hard core of R3, d = 8..12): the optimum on all 160 points of ``bench/bench_attacks.py`` and 400 more
(the first issue-14 flip search: worst 0.968; the monotone method: worst 0.65). On the trained digits flows
(quick run, 32 test images; the reference is the best of every attack run on them, strong runs of 400 steps x
4-8 runs included): L-inf lowering (eps 0.02) worst 0.993 / 0.996 (GLOW MLE / hybrid) and 0.969 / 0.965
(RealNVP; without the secant curvature 0.996 / 0.999 / 0.966 / 0.980, the flip search: 0.83 / 0.90 on RealNVP),
medians >= 0.997; L-inf raising (Rprop) >= 0.997; L2 lowering (eps
0.2), worst (median), GLOW MLE / hybrid 0.997 / 0.994 (0.999), RealNVP MLE 0.992 (0.999), RealNVP hybrid 0.992
(0.999) with the two-pixel probes (seeds 1, 2, 3: the same worst on both RealNVPs; before them 0.998 / 0.990 /
0.959 / 0.941, RealNVP MLE 0.986 at seeds 2 and 3, hybrid 0.941 at all three), against the best of every run made
on these images: an ascent from every single-coordinate start (``tests/test_attack_l2_strength.py``'s reference,
150 steps), earlier sessions' strong runs (400 steps x 4-8 runs), the defaults with and without the pairs at three
seeds and their variants. The remaining gaps (~1 %) are convergence within the best basin. The pairs are ranked
by their forward screen, which is rough (the best pair 1st-7th of 66 on the four worst images): 6 pair probes of
the 66 missed it on the hybrid's worst image (0.85, the finish then too short for the single start's basin), and
pairs of the best 8 moves cannot reach the RealNVP MLE's (its second pixel is the 11th single move). L2 raising
>= 0.999 (with and without the pairs). On the full runs' 28x28 flows (8 test images; the references are the best of
every run made, strong ones included, and on some images the defaults beat them: these fractions are upper estimates
of strength): OOD L-inf raising (MNIST images against the Fashion-MNIST models) at eps 0.25, against 400-step Rprop
runs polished by 300 more passes: worst 0.958-0.971 on MNIST with the warm restart (``RPROP_WARM``; a cold random
restart 0.883-0.911; the pipeline's 40 steps without restart 0.72-0.84), >= 0.993 on noise. L-inf lowering is short
of the best found (8 images; references: 150-500-step runs of the sign ascent, APGD and Rprop, the best point
polished twice by the vertex search and by small-step APGD + vertex search, ~1000-2500 passes; other runs beat them
on single images). Worst (median range) over GLOW / RealNVP, MLE / hybrid, before -> after the large-input rule and
the secant curvature: eps 0.03 0.29 (0.76-0.97) -> 0.35 (0.94-0.99); eps 0.06 0.32 (0.62-1.00) -> 0.50 (0.91-1.00);
eps 0.125 0.38 (0.76-1.00) -> 0.37 (0.89-0.98); eps 0.25 0.29 (0.67-0.94) -> 0.32 (0.82-0.86); per checkpoint the
worst rose in 10 of 16 cells and fell in 6 (by up to 0.08). Many basins, none found reliably at this budget; the
references' gains come from polishing the best point of ~1000 passes. Hence the polish (``LINF_POLISH``, 202 -> 402
passes); against the references raised by the polish variants' runs, before -> after: eps 0.03 0.351 (0.84-0.99) ->
0.355 (0.98-1.00); eps 0.06 0.50 (0.89-1.00) -> 0.58 (0.98-1.00); eps 0.125 0.37 (0.89-0.98) -> 0.38 (0.98-1.00);
eps 0.25 0.32 (0.75-0.84) -> 0.33 (0.86-0.99); the worst rose in all 16 cells (by 0.001-0.40; GLOW MLE / hybrid /
RealNVP hybrid at eps 0.25: 0.58 / 0.68 / 0.34 -> 0.77 / 0.90 / 0.74). The vertex search alone as the polish
(``LINF_POLISH_FRACTION = 0``) gained 0.10 on one cell (GLOW MLE, eps 0.03), <= 0.01 on the others; APGD for 75 % of
the polish: the same worst per eps (0.356 / 0.577 / 0.384 / 0.327), per cell -0.04..+0.09 against the default; a
first step ``alpha0 / 4``: down to 0.37 from 0.74 on RealNVP hybrid at eps 0.25. The remaining worst images (RealNVP
MLE at eps 0.125 / 0.25, RealNVP hybrid at 0.03) sit in another basin than the reference: polishing does not move
them. The L2 objective there has rare basins 2-7x higher than the usual ones in both directions (RealNVP hybrid, eps
1: the usual lowering basin pushes one pixel by ~eps plus a small dense tail, the high ones move ~10 pixels in
structured patterns), reached from random starts and rarely from sparse ones; from the default's end point 80 more
APGD steps gain 0-2 %: a search over basins more than a convergence problem. Hence ``probe_plan``'s rule: one sparse
probe and 11 random ones where the screen cannot try every single move. Against a strong run (200 steps x 4 runs,
seed 3; RealNVP hybrid eps 1: 400 x 4), worst (median), before -> after that rule: L2 lowering RealNVP hybrid eps
0.5 / 1 / 4 0.43 (0.95) / 0.14 (0.85) / 0.26 (0.68) -> 0.49 (0.92) / 0.30 (0.93) / 0.62 (0.95); RealNVP MLE eps 1 /
4 0.41 (0.97) / 0.25 (0.84) -> 0.41 (0.97) / 0.25 (0.82); GLOW MLE / hybrid eps 1 0.82 / 0.93 -> 0.82 / 0.86
(medians >= 0.98); L2 raising RealNVP MLE eps 1 0.22 (0.69) -> 0.23 (0.77). On large images the probe run then
became :func:`~.probe.pattern_plan` (structured starts, :mod:`.patterns`). Against the best of every run made since
(the strong runs above, the plan's variants, and per image 12 pattern starts x 100 APGD steps with two window sets:
the reference rose by up to 2.1x on single images), worst (median), sparse+random plan -> pattern plan: L2 lowering
RealNVP hybrid eps 0.5 / 1 / 4 0.49 (0.84) / 0.29 (0.76) / 0.44 (0.66) -> 0.55 (0.89) / 0.14 (0.83) / 0.44 (0.72);
RealNVP MLE eps 1 / 4 0.40 (0.87) / 0.25 (0.74) -> 0.55 (0.88) / 0.24 (0.72); GLOW MLE / hybrid eps 1 0.82 / 0.86 ->
0.84 / 0.93 (medians 0.98-0.99); L2 raising RealNVP MLE eps 1 0.23 (0.74) -> 0.28 (0.87); same passes (401
forward+backward, 200 forward-only screening). No single run finds every basin: the strong runs themselves reach
worst 0.20-0.96 of that reference. Ill-conditioned convex minimisation (R2) converges at a rate set by the condition
number. With ``clamp`` the L2 ball projection is followed by the clamp, the usual approximation of the projection
onto their intersection (for L-inf both are boxes: the clamp is the exact projection). """

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..adapt import as_log_prob
from .apgd_vertex import apgd_vertex_search, polish
from .norms import NORM_SPECS, NormSpec
from .probe import PROBE_RUN, SPHERE_PROBES, _probe_run, probe_plan  # noqa: F401  (public here as before)
from .raising import raising_run, uses_raising
from .search import _bcast, apgd, sparse_starts, tangent
from .spec import AttackSpec, Gen, LossFn, SampleGenerators
from .vertex import RPROP_ETA0, ascent_vertex_search, flip_search, rprop

Tensor = torch.Tensor

# ---------------------------------------------------------------------------------------------- model mode
@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and switch off ``requires_grad`` of every parameter; restore each
    module's own mode and each parameter's flag on exit (also on error): :meth:`deepcheck.adapt.LogProbModel.frozen`
    of the module."""
    with as_log_prob(model, strict=False).frozen():
        yield model


# ---------------------------------------------------------------------------------------------- PGD
@dataclass
class AttackInfo:
    """What :func:`pgd_with_info` saw. ``nll_clean``/``nll_adv``: per-sample NLL (nats; the ``loss_fn``
    value when one is given) before and after; ``history``: per-sample NLL of the best iterate so far, shape
    ``(runs, passes, B)`` (``passes = steps + 1``; ``PROBE_RUN * steps`` with the L2 probe run, the other runs
    padded with their last entry); ``best_run``: which run gave each sample's result (0 = the run from zero)."""

    nll_clean: Tensor
    nll_adv: Tensor
    history: Tensor
    best_run: Tensor


def _objective(model: nn.Module, loss_fn: LossFn, x: Tensor, delta: Tensor, sign: float) -> tuple[Tensor, Tensor]:
    """Per-sample objective ``sign * loss(x + delta)`` (to be maximised) and its gradient in ``delta``."""
    d = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        val = sign * loss_fn(model, x + d)
        if val.shape != (x.shape[0],):
            raise ValueError(f"loss_fn must return one value per sample, shape ({x.shape[0]},), got {tuple(val.shape)}")
        (grad,) = torch.autograd.grad(val.sum(), d)
    return val.detach(), grad.detach()


def _ascend(fn: Callable[[Tensor], tuple[Tensor, Tensor]], delta: Tensor, project: Callable[[Tensor], Tensor],
            spec: NormSpec, eps: float, steps: int, alpha0: float, adaptive: bool, patience: int,
            gen: Gen, start: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The monotone adaptive ascent: ``steps`` projected steps from ``delta``, each one forward+backward pass.

    ``fn(delta) -> (objective (B,), gradient)``, maximised. With ``adaptive``, a sample's candidate is accepted
    only if it improves its current objective; ``alpha`` doubles on success (capped at ``spec.max_step * eps``)
    and halves on failure. After ``patience * (1 + k)`` failures in a row, ``k`` the number of earlier jumps
    (a local maximum, to the resolution ``alpha0 / 2**(patience * (1 + k))``; the growing patience leaves
    room for the halving to reach any scale), the sample jumps to a random perturbation of its best point and
    ascends again with ``alpha0`` (iterated local search; the best point is kept). ``start``: the objective
    and gradient at ``delta`` when already known (saves the first pass). Returns the best ``delta``, its
    objective, the history of best objectives ``(steps + 1, B)`` (``(steps, B)`` with ``start``) and the
    gradient at the best ``delta``."""
    val, grad = fn(delta) if start is None else start
    best, best_val, best_grad = delta, val, grad
    hist = [] if start is not None else [val]
    B = val.shape[0]
    alpha = torch.full((B,), alpha0, dtype=delta.dtype, device=delta.device)
    fails = torch.zeros(B, dtype=torch.long, device=delta.device)
    kicks = torch.zeros_like(fails)
    alpha_max = max(spec.max_step * eps, alpha0)
    for _ in range(steps):
        cand = spec.step(delta, grad, alpha)
        jump = fails >= patience * (1 + kicks) if adaptive else torch.zeros_like(fails, dtype=torch.bool)
        if bool(jump.any()):
            if isinstance(gen, SampleGenerators):  # only the kicked samples' streams advance (batch-independent)
                rows = torch.nonzero(jump.cpu()).flatten().tolist()
                cand = cand.clone()
                cand[rows] = spec.perturb(best[rows], eps, gen.subset(rows)).to(cand.dtype)
            else:
                kick = spec.perturb(best, eps, gen)
                cand = torch.where(_bcast(jump, cand), kick, cand)
        cand = project(cand)
        cval, cgrad = fn(cand)
        if adaptive:
            ok = (cval > val) | jump
            okb = _bcast(ok, delta)
            delta = torch.where(okb, cand, delta)
            grad = torch.where(okb, cgrad, grad)
            val = torch.where(ok, cval, val)
            alpha = torch.where(jump, torch.full_like(alpha, alpha0),
                                torch.where(ok, (2.0 * alpha).clamp(max=alpha_max), 0.5 * alpha))
            fails = torch.where(ok, torch.zeros_like(fails), fails + 1)
            kicks = kicks + jump.long()
        else:
            delta, grad, val = cand, cgrad, cval
        better = val > best_val
        bb = _bcast(better, best)
        best, best_grad = torch.where(bb, delta, best), torch.where(bb, grad, best_grad)
        best_val = torch.where(better, val, best_val)
        hist.append(best_val)
    return best, best_val, torch.stack(hist) if hist else val.new_zeros((0, B)), best_grad


APGD_FRACTION = 0.6
RPROP_WARM = True
"""L-inf raising (``"rprop"``): every restart continues from the best point so far with fresh steps (a warm
restart) instead of a random point of the ball (``False``: the random start, the default before; ``bench/``).
Only when run 0 started from zero: with ``random_start=True`` the restarts stay random (a monotone run from a
random point can end above the clean NLL; only another start can bring such a row back below it)."""
LINF_ASCENT_FRACTION = 0.35
LINF_LARGE_D = 256
"""L-inf lowering (``"vertex"``) on inputs with at least this many coordinates (the 28x28 images; not the 8x8
digits): APGD for ``LINF_APGD_FRACTION`` of each run's steps, then the vertex search from its best point
(:func:`~.apgd_vertex.apgd_vertex_search`); below it, the sign ascent until it stalls, then the vertex
search."""
LINF_APGD_FRACTION = 0.6
LINF_POLISH = 2.0
"""L-inf lowering on inputs with at least ``LINF_LARGE_D`` coordinates: after the runs, ``LINF_POLISH * steps``
passes polish the best point (:func:`~.apgd_vertex.polish`: APGD from it with the first step
``alpha0 * LINF_POLISH_ALPHA`` for ``LINF_POLISH_FRACTION`` of the passes, then the vertex search; its history
is one more row of ``best_of_runs``'s). Only with ``restarts >= 1`` (a search, as at the defaults): single runs
(training's adversary, ``restarts=0``) keep their cost. 0: no polish (the default before; 202 passes at the
defaults, now 402)."""
LINF_POLISH_ALPHA = 0.125
LINF_POLISH_FRACTION = 0.5


def _run(fn: Callable[[Tensor], tuple[Tensor, Tensor]], delta: Tensor, project: Callable[[Tensor], Tensor],
         spec: NormSpec, eps: float, steps: int, alpha0: float, adaptive: bool, patience: int,
         gen: Gen, method: str) -> tuple[Tensor, Tensor, Tensor]:
    """One run of ``1 + steps`` passes. ``method="apgd"`` (the default): APGD (:func:`~.search.apgd`) for the first
    ``APGD_FRACTION`` of the steps (exploration with momentum), then the monotone adaptive ascent with kicks
    (:func:`_ascend`) from its best point for the rest (convergence to the resolution of the halving, and the
    iterated local search over vertices). ``"monotone"``: :func:`_ascend` alone (the method before APGD).
    L-inf: ``"vertex"``, :func:`~.vertex.ascent_vertex_search` (a sign ascent per sample until it stalls, then the
    vertex search; on inputs with at least ``LINF_LARGE_D`` coordinates
    :func:`~.apgd_vertex.apgd_vertex_search`, APGD then the vertex search); ``"flip"`` (the first issue-14
    version), :func:`_ascend` for ``LINF_ASCENT_FRACTION`` of the steps then
    :func:`~.vertex.flip_search`; ``"rprop"``: :func:`~.vertex.rprop` alone (first step
    ``RPROP_ETA0 * alpha0``).
    ``adaptive=False`` is plain fixed-step PGD in all."""
    if method == "monotone" or not adaptive:
        return _ascend(fn, delta, project, spec, eps, steps, alpha0, adaptive, patience, gen)[:3]
    if method == "rprop":
        best, best_val, _, hist = rprop(fn, delta, project, eps, steps, RPROP_ETA0 * alpha0)
        return best, best_val, hist
    if method == "vertex":
        if delta[0].numel() >= LINF_LARGE_D:
            return apgd_vertex_search(fn, delta, project, eps, steps, alpha0, gen, LINF_APGD_FRACTION, spec.step)
        return ascent_vertex_search(fn, delta, project, eps, steps, alpha0, patience, gen)
    if method == "flip":
        n1 = int(round(LINF_ASCENT_FRACTION * steps))
        best, best_val, h1, best_grad = _ascend(fn, delta, project, spec, eps, n1, alpha0, adaptive, patience, gen)
        best, best_val, h2 = flip_search(fn, best, project, eps, steps - n1, gen, start=(best_val, best_grad))
        return best, best_val, torch.cat([h1, h2])
    n1 = int(round(APGD_FRACTION * steps))
    best, best_val, best_grad, h1 = apgd(fn, delta, project, spec.step, n1, alpha0)
    best, best_val, h2, _ = _ascend(fn, best, project, spec, eps, steps - n1, alpha0, adaptive, patience, gen,
                                    start=(best_val, best_grad))
    return best, best_val, torch.cat([h1, h2])


# ---------------------------------------------------------------------------------------------- restarts
METHODS = ("default", "apgd", "single", "probe", "random", "sparse", "vertex", "flip", "rprop", "monotone")
METHOD = "default"  # what best_of_runs uses when not told; bench/bench_attacks.py sets "monotone" for "today"


def default_method(spec: AttackSpec) -> str:
    """The method of a run at default settings: ``"vertex"`` for L-inf lowering (the maximum of a convex
    function over a box is at a vertex, R3), ``"rprop"`` for L-inf raising (a concave maximisation on the
    linear flow, R2/R3: per-coordinate steps with backtracking converge to the box-constrained optimum; on deep
    flows they separate the pixels' very different scales), ``"apgd"`` for L2."""
    if spec.norm == "linf":
        return "vertex" if spec.sign > 0 else "rprop"
    return "apgd"


def best_of_runs(fn: Callable[[Tensor], tuple[Tensor, Tensor]], project: Callable[[Tensor], Tensor],
                 spec: AttackSpec, shape: tuple[int, ...], like: Tensor,
                 first: Tensor | None, method: str | None = None,
                 value: Callable[[Tensor], Tensor] | None = None,
                 x: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``1 + spec.restarts`` runs of :func:`_run` on ``fn`` (maximised); the best run per entry of the
    objective is kept (``fn`` returns one value per sample for PGD, a single value for the universal attack).

    Run 0 starts at ``first`` (``None``: a random point of the ball); the others at random points of the ball
    drawn from ``spec.generator()``, in ``like``'s dtype and device; every start is projected. With ``value``
    (a forward-only objective, per sample), ``method="apgd"``, the L2 norm, ``steps >= 2`` and
    ``restarts >= 1``, run 1 is instead the probe run (:func:`_probe_run`: at most ``2 * steps`` forward
    passes, then ``PROBE_RUN * steps`` forward+backward passes; every other probe on the sphere's tangent
    given ``x``, except with ``method="probe"``, the L2 default before them, kept for ``bench/``; two-pixel starts
    too, :mod:`.pairs`, except with ``"single"``, ``"probe"`` and ``"random"``, the defaults before them). With ``x``
    (the clean inputs, whose ``x + delta`` the projection keeps in ``spec.clamp``), ``method="apgd"`` and the
    L2 norm, the gradient is
    projected onto the tangent cone of the data box (:func:`~.search.tangent`). ``method="sparse"`` is the L2 default
    before the probe run (APGD runs, run 1 from the best single-coordinate move, no tangent cone; kept for
    ``bench/``). L-inf lowering (``"vertex"``) on inputs with at least ``LINF_LARGE_D`` coordinates and
    ``restarts >= 1``: after the runs, the polish of the best point (``LINF_POLISH``,
    :func:`~.apgd_vertex.polish`) is one more run (index ``1 + restarts``). Returns the best ``delta``, its
    objective, the run it came from (0 = the first run), and the histories of all runs ``(runs, passes, B)``
    (of the maximised objective; ``passes`` = ``steps + 1``, or
    ``PROBE_RUN * steps`` with the probe run: a shorter run's history is padded with its last entry)."""
    norm = NORM_SPECS[spec.norm]
    method = method or METHOD
    sphere = method != "probe"  # "probe": the L2 default before the sphere probes (kept for bench/)
    how = default_method(spec) if method in ("default", "single", "probe", "random") else method
    l2_default = how == "apgd" and spec.norm == "l2" and spec.adaptive
    if l2_default and x is not None and spec.clamp is not None:
        fn = tangent(fn, x, spec.clamp)
    gen = spec.generator()
    best_delta = best_val = best_run = None
    hists = []
    raising = (value is not None and l2_default and method not in ("single", "probe", "random")
               and uses_raising(spec.sign, spec.norm, spec.adaptive, spec.restarts, math.prod(shape[1:])))
    for run in range(1 + spec.restarts):
        if raising and run <= 1:  # L2 raising on large inputs: Rprop, then the metric run (.raising)
            start = best_delta if run else first if first is not None else norm.random(shape, spec.eps, gen, like.dtype)
            delta, val, hist = raising_run(run, fn, project, norm.step, start.to(like.device), spec.eps, spec.steps,
                                           PROBE_RUN * spec.steps, spec.alpha0, None if x is None or spec.clamp is None
                                           else (spec.clamp[0] - x, spec.clamp[1] - x))
        elif run == 1 and value is not None and l2_default and spec.steps >= 2:
            delta, val, hist = _probe_run(fn, value, project, spec, NORM_SPECS["l2"], shape, like, gen, best_delta,
                                          x if sphere else None, patterns=method not in ("probe", "random"),
                                          pairs=method not in ("single", "probe", "random"))
        else:
            if run == 0 and first is not None:
                start = first
            elif how == "rprop" and RPROP_WARM and spec.adaptive and first is not None and best_delta is not None:
                start = best_delta  # raising: continue from the best point with fresh steps (a warm restart)
            elif run == 1 and value is not None and how == "sparse" and spec.adaptive:
                start = sparse_starts(value, project, shape, spec.eps, like, gen, 2 * spec.steps)[0][0]
            else:
                start = norm.random(shape, spec.eps, gen, like.dtype).to(like.device)
            delta, val, hist = _run(fn, project(start), project, norm, spec.eps, spec.steps, spec.alpha0,
                                    spec.adaptive, spec.patience, gen, "apgd" if how == "sparse" else how)
        hists.append(hist)
        if best_val is None:
            best_delta, best_val = delta, val
            best_run = torch.zeros(val.shape[0], dtype=torch.long, device=val.device)
        else:
            better = val > best_val
            best_delta = torch.where(_bcast(better, delta), delta, best_delta)
            best_val = torch.where(better, val, best_val)
            best_run = torch.where(better, torch.full_like(best_run, run), best_run)
    if (how == "vertex" and spec.adaptive and LINF_POLISH > 0 and best_delta[0].numel() >= LINF_LARGE_D
            and spec.steps >= 1 and spec.restarts >= 1):
        delta, val, hist = polish(fn, best_delta, project, spec.eps, max(2, int(round(LINF_POLISH * spec.steps))),
                                  spec.alpha0 * LINF_POLISH_ALPHA, gen, LINF_POLISH_FRACTION, norm.step)
        hists.append(hist)
        better = val > best_val
        best_delta = torch.where(_bcast(better, delta), delta, best_delta)
        best_val = torch.where(better, val, best_val)
        best_run = torch.where(better, torch.full_like(best_run, len(hists) - 1), best_run)
    n = max(len(h) for h in hists)
    hists = [torch.cat([h, h[-1:].expand(n - len(h), *h.shape[1:])]) if len(h) < n else h for h in hists]
    return best_delta, best_val, best_run, torch.stack(hists)
