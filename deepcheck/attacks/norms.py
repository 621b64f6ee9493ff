"""The per-norm table of the attacks (:mod:`deepcheck.attacks.core`): for each ball, its step, its Euclidean
projection, its uniform random start and its kick for iterated local search (R1-R4, REFERENCES "Attacks").

* L2: the step ``delta + alpha g / ||g||_2`` (steepest ascent in the L2 geometry), the projection
  ``delta * min(1, eps / ||delta||_2)``, a uniform point of the ball (Gaussian direction, radius ``eps U^{1/D}``),
  the kick ``delta`` + a uniform point of the ball.
* L-inf: the step ``delta + alpha sign(g)`` (steepest ascent in the L-inf geometry), the projection (a clamp), a
  uniform point of the box, the kick: each coordinate's sign flipped with probability ``FLIP_PROB``.

With a data box ``clamp`` the ball's projection is followed by the clamp (:func:`_project`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .search import _bcast
from .spec import Gen, _draw

Tensor = torch.Tensor

FLIP_PROB = 0.25


# ---------------------------------------------------------------------------------------------- per-norm core
def _per_sample_norm(t: Tensor, norm: str) -> Tensor:
    flat = t.reshape(t.shape[0], -1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


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


def perturb_linf(delta: Tensor, eps: float, gen: Gen, prob: float = FLIP_PROB) -> Tensor:
    """A kick for iterated local search: flip the sign of each coordinate of ``delta`` with probability
    ``prob`` (default ``FLIP_PROB``; at a vertex of the box this is a random nearby vertex)."""
    flip = _draw(torch.rand, tuple(delta.shape), gen, delta.dtype).to(delta.device) < prob
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
