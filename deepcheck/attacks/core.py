r"""The functional core of the projected-gradient attacks of :mod:`deepcheck.attacks` (sample-specific
:func:`~deepcheck.attacks.pgd` and :func:`~deepcheck.attacks.universal`), for the L2 and L-infinity balls
(R1-R4, REFERENCES "Attacks"). It trusts its :class:`~deepcheck.attacks.spec.AttackSpec` (validated there).

The attack solves, per sample ``x`` (``likelihood="decrease"``, the in-distribution attack)

.. math::  \max_{\|\delta\| \le \varepsilon,\; lo \le x+\delta \le hi} \mathrm{NLL}(x + \delta)

or the minimisation (``likelihood="increase"``, the out-of-distribution attack). On the linear flow this is
the trust-region subproblem of DESIGN R1 (a convex maximisation: the optimum is on the sphere, the KKT point
``(\eta I - P)\delta = P v`` with ``\eta \ge 1/s_{min}``), R2 (a convex minimisation) and R3 (L-infinity);
``tests/test_bridge.py`` checks that the defaults below reach those exact optima to 1e-3 relative.

The method: a functional core over a per-norm *step* (L2: ``delta + alpha g / ||g||_2``; L-inf:
``delta + alpha sign(g)``) and *projection* (onto the ball, then onto the data box ``clamp``), with

* **monotone adaptive steps** -- a candidate is accepted per sample only if it improves that sample's
  objective; the step ``alpha`` doubles on success (up to a per-norm cap) and halves on failure. Every step
  costs one forward and one backward pass (the candidate's loss and gradient come from the same pass). For a
  convex objective maximised over the ball (R1, R3) a full step (``alpha >= 2 eps``) is the conditional
  gradient step ``argmax_{||d|| <= eps} g^T d``, which can only increase the objective; in L2 it is the power
  iteration that converges to ``u_min``. For the convex minimisation (R2) the halving is a backtracking line
  search on the projected normalised gradient.
* **restarts** -- the first run starts at ``delta = 0`` (from zero PGD finds the global optimum of R1, except
  at ``v = 0`` where the gradient vanishes), then ``restarts`` runs from random points of the ball (which fix
  ``v = 0``); the best per sample is kept.
* **kicks** (iterated local search) -- a sample whose step failed ``patience`` times in a row sits at a local
  optimum; it jumps to a random perturbation of its best point (L-inf: sign flips of a random quarter of the
  coordinates; L2: plus a random point of the ball) and climbs again, the best point being kept. This is
  what finds the global vertex of R3 in most cases; the patience grows with each kick, so a backtracking that
  needs many halvings (R2 with ``||v|| << eps``) is never cut short.
* the loss is a **sum of per-sample losses**, so a sample's step does not depend on the batch size, and the
  model runs in eval mode with no parameter gradients (:func:`attack_mode` restores both afterwards).

Limits, measured in ``tests/test_bridge.py`` and ``bench/bench_attacks.py``: exact to 1e-3 for L2 (both
directions, hard case included) and for L-inf raising on flows with condition number up to 100; L-inf lowering
is a heuristic when the box is large against the point's offset (``eps sqrt(d) >~ ||x - mu||``: the NP-hard
core of R3), where it reached a median 0.98 and a worst 0.87 of the optimum (d = 6..10). Ill-conditioned
convex minimisation (R2) converges at a rate set by the condition number. With ``clamp`` the L2 ball
projection is followed by the clamp, the usual approximation of the projection onto their intersection.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .spec import AttackSpec, LossFn, SampleGenerators

Tensor = torch.Tensor

FLIP_PROB = 0.25


Gen = torch.Generator | SampleGenerators


def _draw(fn: Callable, shape: tuple[int, ...], gen: Gen, dtype: torch.dtype) -> Tensor:
    """``fn(shape, generator=gen)`` (``torch.rand``/``torch.randn``), or per sample from a SampleGenerators."""
    if not isinstance(gen, SampleGenerators):
        return fn(shape, generator=gen, dtype=dtype)
    if len(gen) != shape[0]:
        raise ValueError(f"sample_seeds has {len(gen)} seeds for a batch of {shape[0]} samples")
    return torch.stack([fn(shape[1:], generator=g, dtype=dtype) for g in gen.gens]) if shape[0] else \
        torch.empty(shape, dtype=dtype)


# ---------------------------------------------------------------------------------------------- model mode
@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and switch off ``requires_grad`` of every parameter; restore each
    module's own mode and each parameter's flag on exit (also on error)."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------- per-norm core
def _per_sample_norm(t: Tensor, norm: str) -> Tensor:
    flat = t.reshape(t.shape[0], -1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def step_l2(delta: Tensor, grad: Tensor, alpha: Tensor) -> Tensor:
    """``delta + alpha * g / ||g||_2`` per sample (a zero gradient gives a zero step)."""
    n = _per_sample_norm(grad, "l2")
    safe = torch.where(n > 0, n, torch.ones_like(n))
    return delta + _bcast(alpha / safe, grad) * grad


def step_linf(delta: Tensor, grad: Tensor, alpha: Tensor) -> Tensor:
    """``delta + alpha * sign(g)`` per sample."""
    return delta + _bcast(alpha, grad) * grad.sign()


def project_l2(delta: Tensor, eps: float) -> Tensor:
    """The Euclidean projection of each sample's ``delta`` onto ``{||d||_2 <= eps}``."""
    n = _per_sample_norm(delta, "l2")
    scale = torch.where(n > eps, eps / torch.where(n > 0, n, torch.ones_like(n)), torch.ones_like(n))
    return delta * _bcast(scale, delta)


def project_linf(delta: Tensor, eps: float) -> Tensor:
    """The Euclidean projection onto ``{||d||_inf <= eps}`` (a clamp)."""
    return delta.clamp(-eps, eps)


def random_l2(shape: tuple[int, ...], eps: float, gen: Gen, dtype: torch.dtype) -> Tensor:
    """Uniform in the L2 ball of radius ``eps``, per sample (Gaussian direction, radius ``eps U^{1/D}``)."""
    g = _draw(torch.randn, shape, gen, dtype)
    dim = int(math.prod(shape[1:])) if len(shape) > 1 else 1
    r = eps * _draw(torch.rand, (shape[0],), gen, dtype) ** (1.0 / dim)
    n = _per_sample_norm(g, "l2").clamp_min(torch.finfo(dtype).tiny)
    return g * _bcast(r / n, g)


def random_linf(shape: tuple[int, ...], eps: float, gen: Gen, dtype: torch.dtype) -> Tensor:
    """Uniform in the box ``[-eps, eps]^D``."""
    return eps * (2.0 * _draw(torch.rand, shape, gen, dtype) - 1.0)


def perturb_l2(delta: Tensor, eps: float, gen: Gen) -> Tensor:
    """A kick for iterated local search: ``delta`` plus a uniform random point of the eps-ball."""
    return delta + random_l2(tuple(delta.shape), eps, gen, delta.dtype).to(delta.device)


def perturb_linf(delta: Tensor, eps: float, gen: Gen) -> Tensor:
    """A kick for iterated local search: flip the sign of each coordinate of ``delta`` with probability
    ``FLIP_PROB`` (at a vertex of the box this is a random nearby vertex)."""
    flip = _draw(torch.rand, tuple(delta.shape), gen, delta.dtype).to(delta.device) < FLIP_PROB
    return torch.where(flip, -delta, delta)


@dataclass(frozen=True)
class NormSpec:
    """What PGD needs to know about a norm: its step, its projection, its random start, and the largest
    useful step in units of eps (L-inf: 2 eps jumps to a vertex; L2: larger steps approach the power step)."""

    step: Callable[[Tensor, Tensor, Tensor], Tensor]
    project: Callable[[Tensor, float], Tensor]
    random: Callable[[tuple[int, ...], float, torch.Generator, torch.dtype], Tensor]
    perturb: Callable[[Tensor, float, torch.Generator], Tensor]
    max_step: float


NORM_SPECS = {
    "l2": NormSpec(step_l2, project_l2, random_l2, perturb_l2, max_step=8.0),
    "linf": NormSpec(step_linf, project_linf, random_linf, perturb_linf, max_step=2.0),
}


def _project(delta: Tensor, x: Tensor, eps: float, spec: NormSpec, clamp: tuple[float, float] | None) -> Tensor:
    delta = spec.project(delta, eps)
    if clamp is not None:
        delta = (x + delta).clamp(*clamp) - x
    return delta


# ---------------------------------------------------------------------------------------------- PGD
@dataclass
class AttackInfo:
    """What :func:`pgd_with_info` saw. ``nll_clean``/``nll_adv``: per-sample NLL (nats; the ``loss_fn``
    value when one is given) before and after; ``history``: per-sample NLL of the accepted iterate, shape
    ``(runs, steps + 1, B)``; ``best_run``: which run gave each sample's result (0 = the run from zero)."""

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
            gen: Gen) -> tuple[Tensor, Tensor, Tensor]:
    """The functional core: ``steps`` projected steps from ``delta``, each one forward+backward pass.

    ``fn(delta) -> (objective (B,), gradient)``, maximised. With ``adaptive``, a sample's candidate is accepted
    only if it improves its current objective; ``alpha`` doubles on success (capped at ``spec.max_step * eps``)
    and halves on failure. After ``patience * (1 + k)`` failures in a row, ``k`` the number of earlier jumps
    (a local maximum, to the resolution ``alpha0 / 2**(patience * (1 + k))``; the growing patience leaves
    room for the halving to reach any scale), the sample jumps to a random perturbation of its best point and
    ascends again with ``alpha0`` (iterated local search; the best point is kept). Returns the best ``delta``,
    its objective and the history of best objectives ``(steps + 1, B)``."""
    val, grad = fn(delta)
    best, best_val = delta, val
    hist = [val]
    B = val.shape[0]
    alpha = torch.full((B,), alpha0, dtype=delta.dtype, device=delta.device)
    fails = torch.zeros(B, dtype=torch.long, device=delta.device)
    kicks = torch.zeros_like(fails)
    alpha_max = max(spec.max_step * eps, alpha0)
    for _ in range(steps):
        cand = spec.step(delta, grad, alpha)
        jump = fails >= patience * (1 + kicks) if adaptive else torch.zeros_like(fails, dtype=torch.bool)
        if bool(jump.any()):
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
        best = torch.where(_bcast(better, best), delta, best)
        best_val = torch.where(better, val, best_val)
        hist.append(best_val)
    return best, best_val, torch.stack(hist)




# ---------------------------------------------------------------------------------------------- restarts
def best_of_runs(fn: Callable[[Tensor], tuple[Tensor, Tensor]], project: Callable[[Tensor], Tensor],
                 spec: AttackSpec, shape: tuple[int, ...], like: Tensor,
                 first: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``1 + spec.restarts`` runs of :func:`_ascend` on ``fn`` (maximised); the best run per entry of the
    objective is kept (``fn`` returns one value per sample for PGD, a single value for the universal attack).

    Run 0 starts at ``first`` (``None``: a random point of the ball); the others at random points of the ball
    drawn from ``spec.generator()``, in ``like``'s dtype and device; every start is projected. Returns the
    best ``delta``, its objective, the run it came from (0 = the first run), and the histories of all runs
    ``(runs, steps + 1, B)`` (of the maximised objective)."""
    norm = NORM_SPECS[spec.norm]
    gen = spec.generator()
    best_delta = best_val = best_run = None
    hists = []
    for run in range(1 + spec.restarts):
        if run == 0 and first is not None:
            start = first
        else:
            start = norm.random(shape, spec.eps, gen, like.dtype).to(like.device)
        delta, val, hist = _ascend(fn, project(start), project, norm, spec.eps, spec.steps, spec.alpha0,
                                   spec.adaptive, spec.patience, gen)
        hists.append(hist)
        if best_val is None:
            best_delta, best_val = delta, val
            best_run = torch.zeros(val.shape[0], dtype=torch.long, device=val.device)
        else:
            better = val > best_val
            best_delta = torch.where(_bcast(better, delta), delta, best_delta)
            best_val = torch.where(better, val, best_val)
            best_run = torch.where(better, torch.full_like(best_run, run), best_run)
    return best_delta, best_val, best_run, torch.stack(hists)
