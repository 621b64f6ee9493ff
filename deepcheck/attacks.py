r"""Projected-gradient attacks on the likelihood of a flow: sample-specific (:func:`pgd`) and universal
(:func:`universal`), for the L2 and L-infinity balls (DESIGN R1-R4, REFERENCES "Attacks").

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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from linflow.validation import check_eps, check_likelihood, check_norm

from .flows.base import parameter_dtype

Tensor = torch.Tensor
LossFn = Callable[[nn.Module, Tensor], Tensor]

NORMS = ("l2", "linf")
DEFAULT_STEPS = 100
DEFAULT_RESTARTS = 1
DEFAULT_PATIENCE = 4
FLIP_PROB = 0.25


# ---------------------------------------------------------------------------------------------- checks
def _check_norm(norm: object) -> str:
    """``"l2"`` or ``"linf"`` (also accepts 2, ``float("inf")``, ``"inf"``, ``"2"``; L1 is not a PGD norm here)."""
    try:
        p = check_norm(norm)
    except ValueError:
        p = None
    if p not in (2.0, math.inf):
        raise ValueError(f"norm must be 'l2' or 'linf' (or 2, inf), got {norm!r}")
    return "l2" if p == 2.0 else "linf"


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_clamp(clamp: object) -> tuple[float, float] | None:
    if clamp is None:
        return None
    try:
        lo, hi = (float(c) for c in clamp)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"clamp must be None or a pair (lo, hi), got {clamp!r}") from None
    if not lo < hi:
        raise ValueError(f"clamp must satisfy lo < hi, got {clamp!r}")
    return lo, hi


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not hasattr(model, "log_prob"):
        raise TypeError("model must have a log_prob(x) method")
    return model


def _check_x(x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    return x


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


def default_loss(model: nn.Module, x: Tensor) -> Tensor:
    """Per-sample negative log-likelihood in nats, ``-model.log_prob(x)``, shape ``(B,)``."""
    return -model.log_prob(x)


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


def random_l2(shape: tuple[int, ...], eps: float, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    """Uniform in the L2 ball of radius ``eps``, per sample (Gaussian direction, radius ``eps U^{1/D}``)."""
    g = torch.randn(shape, generator=gen, dtype=dtype)
    dim = int(math.prod(shape[1:])) if len(shape) > 1 else 1
    r = eps * torch.rand(shape[0], generator=gen, dtype=dtype) ** (1.0 / dim)
    n = _per_sample_norm(g, "l2").clamp_min(torch.finfo(dtype).tiny)
    return g * _bcast(r / n, g)


def random_linf(shape: tuple[int, ...], eps: float, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    """Uniform in the box ``[-eps, eps]^D``."""
    return eps * (2.0 * torch.rand(shape, generator=gen, dtype=dtype) - 1.0)


def perturb_l2(delta: Tensor, eps: float, gen: torch.Generator) -> Tensor:
    """A kick for iterated local search: ``delta`` plus a uniform random point of the eps-ball."""
    return delta + random_l2(tuple(delta.shape), eps, gen, delta.dtype).to(delta.device)


def perturb_linf(delta: Tensor, eps: float, gen: torch.Generator) -> Tensor:
    """A kick for iterated local search: flip the sign of each coordinate of ``delta`` with probability
    ``FLIP_PROB`` (at a vertex of the box this is a random nearby vertex)."""
    flip = torch.rand(tuple(delta.shape), generator=gen, dtype=delta.dtype).to(delta.device) < FLIP_PROB
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
            gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
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


def _prepare(model, x, eps, norm, likelihood, steps, step_size, random_start, restarts, clamp, loss_fn, seed):
    model = _check_model(model)
    x = _check_x(x)
    eps = check_eps(eps)
    norm = _check_norm(norm)
    likelihood = check_likelihood(likelihood)
    steps = _check_int("steps", steps, 0)
    restarts = _check_int("restarts", restarts, 0)
    seed = _check_int("seed", seed, 0)
    clamp = _check_clamp(clamp)
    if step_size is not None:
        step_size = check_eps(step_size, "step_size")
        if step_size == 0:
            raise ValueError("step_size must be > 0")
    if not isinstance(random_start, bool):
        raise TypeError(f"random_start must be a bool, got {type(random_start).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError("loss_fn must be callable(model, x) -> per-sample loss")
    return model, x, eps, norm, likelihood, steps, step_size, random_start, restarts, clamp, loss_fn, seed


def pgd_with_info(model: nn.Module, x: Tensor, eps: float, *, norm: str = "linf", likelihood: str = "decrease",
                  steps: int = DEFAULT_STEPS, step_size: float | None = None, random_start: bool = False,
                  restarts: int = DEFAULT_RESTARTS, clamp: tuple[float, float] | None = (0.0, 1.0),
                  loss_fn: LossFn | None = None, adaptive: bool = True, patience: int = DEFAULT_PATIENCE,
                  seed: int = 0) -> tuple[Tensor, AttackInfo]:
    """:func:`pgd`, also returning an :class:`AttackInfo` (NLL before/after, per-step history)."""
    (model, x, eps, norm, likelihood, steps, step_size, random_start, restarts, clamp, loss_fn,
     seed) = _prepare(model, x, eps, norm, likelihood, steps, step_size, random_start, restarts, clamp, loss_fn, seed)
    spec = NORM_SPECS[norm]
    loss = loss_fn or default_loss
    sign = 1.0 if likelihood == "decrease" else -1.0
    alpha0 = step_size if step_size is not None else 2.0 * eps
    gen = torch.Generator().manual_seed(seed)
    x = x.detach()
    with attack_mode(model):
        def fn(delta: Tensor) -> tuple[Tensor, Tensor]:
            return _objective(model, loss, x, delta, sign)

        def project(delta: Tensor) -> Tensor:
            return _project(delta, x, eps, spec, clamp)

        with torch.no_grad():
            clean = loss(model, x).detach()
        best_delta, best_val, best_run, hists = None, None, None, []
        for run in range(1 + restarts):
            if run == 0 and not random_start:
                start = torch.zeros_like(x)
            else:
                start = spec.random(tuple(x.shape), eps, gen, x.dtype).to(x.device)
            start = project(start)
            delta, val, hist = _ascend(fn, start, project, spec, eps, steps, alpha0, adaptive, patience, gen)
            hists.append(sign * hist)
            if best_val is None:
                best_delta, best_val = delta, val
                best_run = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            else:
                better = val > best_val
                best_delta = torch.where(_bcast(better, delta), delta, best_delta)
                best_val = torch.where(better, val, best_val)
                best_run = torch.where(better, torch.full_like(best_run, run), best_run)
    x_adv = (x + best_delta).detach()
    if clamp is not None:
        x_adv = x_adv.clamp(*clamp)
    info = AttackInfo(nll_clean=clean, nll_adv=(sign * best_val).detach(),
                      history=torch.stack(hists).detach(), best_run=best_run)
    return x_adv, info


def pgd(model: nn.Module, x: Tensor, eps: float, *, norm: str = "linf", likelihood: str = "decrease",
        steps: int = DEFAULT_STEPS, step_size: float | None = None, random_start: bool = False,
        restarts: int = DEFAULT_RESTARTS, clamp: tuple[float, float] | None = (0.0, 1.0),
        loss_fn: LossFn | None = None, adaptive: bool = True, patience: int = DEFAULT_PATIENCE,
        seed: int = 0) -> Tensor:
    """Sample-specific PGD on the likelihood; returns ``x_adv`` (same shape, dtype and device as ``x``, detached).

    Maximises (``likelihood="decrease"``) or minimises (``"increase"``) the per-sample NLL
    ``loss_fn(model, x + delta)`` (default ``-model.log_prob``) over ``||delta|| <= eps`` (``norm`` ``"l2"``
    or ``"linf"``, per sample) and ``x + delta`` inside ``clamp`` (``None``: unbounded data). See the module
    docstring for the method (DESIGN R1-R3).

    Parameters
    ----------
    steps : forward+backward passes per run after the first evaluation (default 100).
    step_size : the initial step ``alpha`` (absolute, in the units of ``x``; default ``2 eps``).
    random_start : start the first run at a random point of the ball instead of ``delta = 0``.
    restarts : extra runs from random points of the ball; the best run per sample is kept (default 1).
    adaptive : monotone adaptive step (default). ``False`` gives plain PGD with the fixed step ``step_size``
        (the textbook attack, for comparison; the best iterate is still returned).
    patience : failed steps in a row before a kick (iterated local search, module docstring; default 4).
    seed : seeds the random starts (``torch.Generator``); same seed, same result on CPU.
    """
    return pgd_with_info(model, x, eps, norm=norm, likelihood=likelihood, steps=steps, step_size=step_size,
                         random_start=random_start, restarts=restarts, clamp=clamp, loss_fn=loss_fn,
                         adaptive=adaptive, patience=patience, seed=seed)[0]


# ---------------------------------------------------------------------------------------------- universal
def _as_batches(data: object, batch_size: int, dtype: torch.dtype) -> list[Tensor]:
    """A tensor (split along dim 0), an ImageData (its mid-bin pixels in the model's dtype) or an iterable
    of tensors (or of ``(x, label)`` pairs)."""
    if isinstance(data, Tensor):
        return list(torch.split(data.detach(), batch_size))
    if callable(getattr(data, "pixels", None)):
        return list(torch.split(data.pixels(dtype), batch_size))
    if isinstance(data, Iterable) and not isinstance(data, str | bytes):
        out = []
        for b in data:
            b = b[0] if isinstance(b, list | tuple) else b
            if not isinstance(b, Tensor):
                raise TypeError(f"data must yield tensors, got {type(b).__name__}")
            out.append(b.detach())
        if out:
            return out
    raise TypeError(f"data must be a tensor, an ImageData or an iterable of tensors, got {type(data).__name__}")


def universal(model: nn.Module, data: object, eps: float, *, norm: str = "l2", likelihood: str = "decrease",
              steps: int = DEFAULT_STEPS, step_size: float | None = None, random_start: bool = False,
              restarts: int = DEFAULT_RESTARTS, clamp: tuple[float, float] | None = (0.0, 1.0),
              loss_fn: LossFn | None = None, batch_size: int = 256, adaptive: bool = True,
              patience: int = DEFAULT_PATIENCE, init: Tensor | None = None, seed: int = 0) -> Tensor:
    """One perturbation ``delta`` for all of ``data`` that maximises (``"decrease"``) or minimises
    (``"increase"``) the MEAN NLL change ``mean_x [NLL(clamp(x + delta)) - NLL(x)]`` over ``||delta|| <= eps``.

    On the linear flow the objective is ``1/2 (m - mu + delta)^T P (m - mu + delta) + const`` (DESIGN R4),
    so the same core as :func:`pgd` (monotone adaptive steps, a run from zero plus ``restarts`` random runs)
    applied to the full-data mean reaches the exact universal optimum. Every step is one pass over ``data``
    (in batches of ``batch_size``). ``init`` (a perturbation of the returned shape) replaces the zero start of
    the first run: a warm start, e.g. the previous step's perturbation during adversarial training. Returns
    ``delta`` of shape ``(1, *x.shape[1:])`` (``(1, C, H, W)`` for images) or ``(d,)`` for vector data
    ``(n, d)``, detached, in the data's dtype and device.
    """
    batches = _as_batches(data, _check_int("batch_size", batch_size, 1), parameter_dtype(_check_model(model)))
    x0 = batches[0]
    (model, x0, eps, norm, likelihood, steps, step_size, random_start, restarts, clamp, loss_fn,
     seed) = _prepare(model, x0, eps, norm, likelihood, steps, step_size, random_start, restarts, clamp, loss_fn, seed)
    if any(b.shape[1:] != x0.shape[1:] for b in batches):
        raise ValueError("data batches must all have the same sample shape")
    n = sum(b.shape[0] for b in batches)
    if init is not None:
        if not isinstance(init, Tensor):
            raise TypeError(f"init must be a tensor or None, got {type(init).__name__}")
        if init.numel() != math.prod(x0.shape[1:]):
            raise ValueError(f"init must have {math.prod(x0.shape[1:])} elements (one sample), got {tuple(init.shape)}")
    spec = NORM_SPECS[norm]
    loss = loss_fn or default_loss
    sign = 1.0 if likelihood == "decrease" else -1.0
    alpha0 = step_size if step_size is not None else 2.0 * eps
    gen = torch.Generator().manual_seed(seed)
    shape = (1,) + tuple(x0.shape[1:])

    with attack_mode(model):
        def fn(delta: Tensor) -> tuple[Tensor, Tensor]:
            total = torch.zeros(1, dtype=x0.dtype, device=x0.device)
            grad = torch.zeros_like(delta)
            for b in batches:
                d = delta.detach().requires_grad_(True)
                with torch.enable_grad():
                    xb = b + d
                    if clamp is not None:
                        xb = xb.clamp(*clamp)
                    val = sign * loss(model, xb).sum() / n
                    (g,) = torch.autograd.grad(val, d)
                total = total + val.detach()
                grad = grad + g
            return total, grad

        def project(delta: Tensor) -> Tensor:
            return spec.project(delta, eps)

        best_delta, best_val = None, None
        for run in range(1 + restarts):
            if run == 0 and init is not None:
                start = init.detach().reshape(shape).to(dtype=x0.dtype, device=x0.device)
            elif run == 0 and not random_start:
                start = torch.zeros(shape, dtype=x0.dtype, device=x0.device)
            else:
                start = spec.random(shape, eps, gen, x0.dtype).to(x0.device)
            delta, val, _ = _ascend(fn, project(start), project, spec, eps, steps, alpha0, adaptive, patience, gen)
            if best_val is None or bool(val > best_val):
                best_delta, best_val = delta, val
    out = best_delta.detach()
    return out[0] if x0.ndim == 2 else out
