r"""Projected-gradient attacks on the likelihood of a flow: sample-specific (:func:`pgd`) and universal
(:func:`universal`), for the L2 and L-infinity balls (R1-R4, REFERENCES "Attacks").

Per sample ``x`` the attack solves (``likelihood="decrease"``, the in-distribution attack)

.. math::  \max_{\|\delta\| \le \varepsilon,\; lo \le x+\delta \le hi} \mathrm{NLL}(x + \delta)

or the minimisation (``likelihood="increase"``, the out-of-distribution attack); :func:`universal` solves it
for the mean NLL change over a data set with one ``delta``. Layout: :mod:`.spec` holds the options (the frozen
:class:`~deepcheck.attacks.spec.AttackSpec`, validated once at these entry points); :mod:`.core` the method
(per-norm step/projection table, monotone adaptive steps, kicks, restarts) and its measured limits;
:mod:`.guard` the input contract and the guard against non-finite objectives. The model may be any density
model :func:`deepcheck.adapt.as_log_prob` accepts (a module with ``log_prob``, a Distribution, a zuko flow, a
callable ``x -> log_prob``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..adapt import LogProbModel
from ..data import as_pixels
from .core import _objective, attack_mode, best_of_runs
from .guard import AttackInfo, FiniteGuard, NonFiniteWarning, check_clean, check_finite, check_in_clamp
from .norms import (
    FLIP_PROB,
    NORM_SPECS,
    NormSpec,
    _project,
    perturb_l2,
    perturb_linf,
    project_l2,
    project_linf,
    random_l2,
    random_linf,
    step_l2,
    step_linf,
)
from .spec import (
    DEFAULT_PATIENCE,
    DEFAULT_RESTARTS,
    DEFAULT_STEPS,
    NONFINITE_MODES,
    NORMS,
    AttackSpec,
    LossFn,
    _check_int,
    _check_model,
    _check_x,
    default_loss,
    options_signature,
)

__all__ = ["pgd", "pgd_with_info", "universal", "attack_mode", "AttackInfo", "AttackSpec", "NormSpec", "NORM_SPECS",
           "NORMS", "DEFAULT_STEPS", "DEFAULT_RESTARTS", "DEFAULT_PATIENCE", "FLIP_PROB", "default_loss", "step_l2",
           "step_linf", "project_l2", "project_linf", "random_l2", "random_linf", "perturb_l2", "perturb_linf",
           "LossFn", "NonFiniteWarning", "NONFINITE_MODES"]

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------- helpers
def _loss(spec: AttackSpec, model: object) -> LossFn:
    """The per-sample loss (the core maximises ``sign`` times it): ``-log_prob`` through the adapter, or the
    user's ``loss_fn`` called with the model object the user passed (not the adapter)."""
    user = spec.loss_fn
    if user is None:
        return default_loss
    return lambda _lp, x: user(model, x)  # type: ignore[arg-type]


def _keep_finite(best_delta: Tensor, best_val: Tensor, fallback_val: Tensor) -> tuple[Tensor, Tensor]:
    """Entries of ``best_val`` that stayed non-finite (every iterate rejected: possible only from random or
    ``init`` starts) get ``delta = 0`` and ``fallback_val`` (the clean objective)."""
    lost = ~torch.isfinite(best_val)
    if bool(lost.any()):
        mask = lost.reshape((-1,) + (1,) * (best_delta.ndim - 1)) if lost.numel() > 1 else lost.reshape(())
        best_delta = torch.where(mask, torch.zeros_like(best_delta), best_delta)
        best_val = torch.where(lost, fallback_val, best_val)
    return best_delta, best_val


# ---------------------------------------------------------------------------------------------- PGD
@options_signature(leading=("model", "x", "eps"), returns="tuple[Tensor, AttackInfo]")
def pgd_with_info(model: object, x: Tensor, eps: float, **options: object) -> tuple[Tensor, AttackInfo]:
    """:func:`pgd`, also returning an :class:`AttackInfo` (NLL before/after, per-step history, and
    ``nonfinite``: per sample, the number of candidates rejected for a non-finite objective)."""
    spec = AttackSpec.build(eps, **options)
    lp = _check_model(model, spec.loss_fn)
    x = _check_x(x).detach()
    norm = NORM_SPECS[spec.norm]
    loss, sign = _loss(spec, model), spec.sign
    check_finite(x, "x")
    check_in_clamp(x, spec.clamp, "x")
    with lp.frozen():
        with torch.no_grad():
            clean = loss(lp, x).detach()
        check_clean(clean, x.shape[0], spec.loss_fn is not None)
        guard = FiniteGuard(lambda delta: _objective(lp, loss, x, delta, sign), spec.nonfinite)

        def project(delta: Tensor) -> Tensor:
            return _project(delta, x, spec.eps, norm, spec.clamp)

        def value(delta: Tensor) -> Tensor:  # forward only (screening); a non-finite value never wins
            v = sign * loss(lp, x + delta)
            return torch.where(torch.isfinite(v), v, torch.full_like(v, -math.inf))

        first = None if spec.random_start else torch.zeros_like(x)
        best_delta, best_val, best_run, hists = best_of_runs(guard, project, spec, tuple(x.shape), x, first,
                                                             value=value, x=x)
    best_delta, best_val = _keep_finite(best_delta, best_val, sign * clean)
    guard.warn("pgd")
    x_adv = (x + best_delta).detach()
    if spec.clamp is not None:
        x_adv = x_adv.clamp(*spec.clamp)
    info = AttackInfo(nll_clean=clean, nll_adv=(sign * best_val).detach(), history=(sign * hists).detach(),
                      best_run=best_run, nonfinite=guard.count)
    return x_adv, info


@options_signature(leading=("model", "x", "eps"))
def pgd(model: object, x: Tensor, eps: float, **options: object) -> Tensor:
    """Sample-specific PGD on the likelihood; returns ``x_adv`` (same shape, dtype and device as ``x``, detached).

    Maximises (``likelihood="decrease"``) or minimises (``"increase"``) the per-sample NLL
    ``loss_fn(model, x + delta)`` (default ``-log_prob``) over ``||delta|| <= eps`` (``norm`` ``"l2"``
    or ``"linf"``, default ``"linf"``, per sample) and ``x + delta`` inside ``clamp`` (default ``(0, 1)``;
    ``None``: unbounded data). See :mod:`deepcheck.attacks.core` for the method (R1-R3).

    ``model``: an ``nn.Module`` (or any object) with ``log_prob(x)``, a ``torch.distributions.Distribution``, a
    zero-argument callable returning one (a zuko flow), or a callable ``x -> log_prob(x)``
    (:func:`deepcheck.adapt.as_log_prob`). Every module found runs in eval mode with no parameter gradients;
    each one's mode and each parameter's ``requires_grad`` are restored afterwards.

    The input contract (:mod:`deepcheck.attacks.guard`): ``x`` with NaN/inf entries, ``x`` outside ``clamp``
    (pass ``clamp=None`` for unbounded data or ``clamp=(lo, hi)`` with the data's range), or a non-finite
    objective at ``x`` is a ``ValueError`` naming the rows. With ``x`` inside ``clamp`` (or ``clamp=None``)
    ``||x_adv - x|| <= eps`` holds up to rounding in ``x``'s dtype. A candidate whose objective is non-finite
    (NaN, or ``log_prob`` driven to -inf/+inf) is rejected and the best finite iterate returned, with one
    :class:`NonFiniteWarning` (counts per sample in ``pgd_with_info``'s ``info.nonfinite``).

    Parameters (keyword-only; names and defaults are the fields of :class:`AttackSpec`)
    ----------
    steps : forward+backward passes per run after the first evaluation (default 100).
    step_size : the initial step ``alpha`` (absolute, in the units of ``x``; default ``2 eps``).
    random_start : start the first run at a random point of the ball instead of ``delta = 0``.
    restarts : extra runs from random points of the ball; the best run per sample is kept (default 1).
    loss_fn : ``loss_fn(model, x) -> (B,)`` replaces the NLL; it receives ``model`` as passed, which may then be
        any object (an ``nn.Module`` among them is still frozen and restored).
    adaptive : monotone adaptive step (default). ``False`` gives plain PGD with the fixed step ``step_size``
        (the textbook attack, for comparison; the best iterate is still returned).
    patience : failed steps in a row before a kick (iterated local search, :mod:`.core`; default 4).
    seed : seeds the random starts (``torch.Generator``); same seed, same result on CPU.
    nonfinite : ``"warn"`` (default: reject non-finite candidates, warn once) or ``"raise"``
        (``FloatingPointError`` at the first one).
    sample_seeds : one seed per sample of ``x`` (replaces ``seed``): sample ``i``'s random starts and kicks
        come from its own generator, so its result does not depend on the rest of the batch (sharding).
    """
    return pgd_with_info(model, x, eps, **options)[0]


# ---------------------------------------------------------------------------------------------- universal
def _as_batches(data: object, batch_size: int, model: LogProbModel) -> list[Tensor]:
    """A tensor (split along dim 0, as is), an ImageData (its mid-bin pixels in the model's dtype, via
    :func:`deepcheck.data.as_pixels`) or an iterable of tensors (or of ``(x, label)`` pairs)."""
    if isinstance(data, Tensor):
        return list(torch.split(data.detach(), batch_size))
    if callable(getattr(data, "pixels", None)):
        x = as_pixels(data, like=model).to(dtype=model.dtype, device=model.device)  # type: ignore[arg-type]
        return list(torch.split(x, batch_size))
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


@options_signature(leading=("model", "data", "eps"), defaults={"norm": "l2"},
                   extra={"batch_size": 256, "init": None})
def universal(model: object, data: object, eps: float, *, norm: str = "l2", batch_size: int = 256,
              init: Tensor | None = None, **options: object) -> Tensor:
    """One perturbation ``delta`` for all of ``data`` that maximises (``"decrease"``) or minimises
    (``"increase"``) the MEAN NLL change ``mean_x [NLL(clamp(x + delta)) - NLL(x)]`` over ``||delta|| <= eps``.

    The options and the accepted models are those of :func:`pgd` (default ``norm="l2"`` here), and so is the
    input contract: data rows with NaN/inf, rows outside ``clamp`` and a non-finite objective at the clean data
    are a ``ValueError`` naming the rows (counted over all of ``data``); a candidate ``delta`` with a
    non-finite mean objective is rejected, with one :class:`NonFiniteWarning`. On the linear flow the
    objective is ``1/2 (m - mu + delta)^T P (m - mu + delta) + const`` (R4), so the same core as :func:`pgd`
    (monotone adaptive steps, a run from zero plus ``restarts`` random runs) applied to the full-data mean
    reaches the exact universal optimum. Every step is one pass over ``data`` (in batches of ``batch_size``).
    ``init`` (a perturbation of the returned shape) replaces the zero start of the first run: a warm start,
    e.g. the previous step's perturbation during adversarial training. Returns ``delta`` of shape
    ``(1, *x.shape[1:])`` (``(1, C, H, W)`` for images) or ``(d,)`` for vector data ``(n, d)``, detached, in
    the data's dtype and device.
    """
    spec = AttackSpec.build(eps, norm=norm, **options)
    lp = _check_model(model, spec.loss_fn)
    batches = _as_batches(data, _check_int("batch_size", batch_size, 1), lp)
    x0 = _check_x(batches[0])
    if any(b.shape[1:] != x0.shape[1:] for b in batches):
        raise ValueError("data batches must all have the same sample shape")
    n = sum(b.shape[0] for b in batches)
    if init is not None:
        if not isinstance(init, Tensor):
            raise TypeError(f"init must be a tensor or None, got {type(init).__name__}")
        if init.numel() != math.prod(x0.shape[1:]):
            raise ValueError(f"init must have {math.prod(x0.shape[1:])} elements (one sample), got {tuple(init.shape)}")
    norm_spec = NORM_SPECS[spec.norm]
    loss, sign, clamp = _loss(spec, model), spec.sign, spec.clamp
    shape = (1,) + tuple(x0.shape[1:])
    offsets = [0]
    for b in batches:
        check_finite(b, "data", offsets[-1])
        check_in_clamp(b, clamp, "data", offsets[-1])
        offsets.append(offsets[-1] + b.shape[0])

    with lp.frozen():
        with torch.no_grad():
            for b, off in zip(batches, offsets):
                check_clean(loss(lp, b), b.shape[0], spec.loss_fn is not None, off)

        def fn(delta: Tensor) -> tuple[Tensor, Tensor]:
            total = torch.zeros(1, dtype=x0.dtype, device=x0.device)
            grad = torch.zeros_like(delta)
            for b in batches:
                d = delta.detach().requires_grad_(True)
                with torch.enable_grad():
                    xb = b + d
                    if clamp is not None:
                        xb = xb.clamp(*clamp)
                    val = sign * loss(lp, xb).sum() / n
                    (g,) = torch.autograd.grad(val, d)
                total = total + val.detach()
                grad = grad + g
            return total, grad

        def project(delta: Tensor) -> Tensor:
            return norm_spec.project(delta, spec.eps)

        if init is not None:
            first = init.detach().reshape(shape).to(dtype=x0.dtype, device=x0.device)
        else:
            first = None if spec.random_start else torch.zeros(shape, dtype=x0.dtype, device=x0.device)
        guard = FiniteGuard(fn, spec.nonfinite)
        best_delta, best_val, _, _ = best_of_runs(guard, project, spec, shape, x0, first)
    best_delta, _ = _keep_finite(best_delta, best_val, torch.zeros_like(best_val))
    guard.warn("universal")
    out = best_delta.detach()
    return out[0] if x0.ndim == 2 else out
