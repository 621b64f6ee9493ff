"""The paper's phenomena on the deep flows, measured against the budget rather than at one eps.

* :func:`attack_curves` -- the in-distribution attack (PGD lowering the likelihood) in each norm of
  ``eval.norms``: mean and median bits/dim against eps, the smallest grid eps where the mean bits/dim has grown
  ``eval.growth``-fold, and the attack's strength: on the first ``eval.strong_n`` images, the fraction of the
  mean NLL rise that a stronger run (``eval.strong_steps`` steps, ``eval.strong_restarts`` restarts) reaches;
* :func:`ood_curve` -- the OOD attack (PGD raising the likelihood) at each eps of ``ood.eps_grid``: median
  bits/dim, the AUROC of the likelihood score, and the smallest eps where the attacked OOD median reaches the
  in-distribution test median.

Attacks are :func:`deepcheck.evaluate.attack_in_batches` (PGD of :mod:`deepcheck.attacks`, clamped to
``[0, 1]``, batch ``i`` seeded ``seed + i``), pixels mid-bin (docs/theory.md, deep conventions).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluate import attack_in_batches, auroc, bpd_against_eps, bpd_of
from .budget import Budget

ATTACK_BATCH = 256
"""Images per PGD batch in the deep attacks (batch ``i`` is seeded ``seed + i``)."""


def eps_grid(budget: Budget, norm: str) -> list[float]:
    """The budgets of the in-distribution attack in ``norm``: ``eval.eps`` (L-inf, with ``teaser.eps`` when
    ``norm`` is the teaser's) or ``eval.eps_l2`` (L2); always with 0."""
    ev = budget.eval
    grid = set(ev.eps if norm == "linf" else ev.eps_l2) | {0.0}
    if norm == ev.norm:
        grid |= {budget.teaser.eps}
    return sorted(float(e) for e in grid)


def first_eps(eps: list[float], reached: list[bool]) -> float | None:
    """The smallest ``eps[i]`` with ``reached[i]`` (``eps`` ascending), None if none."""
    return next((e for e, r in zip(eps, reached) if r), None)


def strength_mask(grid: list[float], stride: int) -> list[bool]:
    """Which eps of ``grid`` (ascending, starting at 0) get the strength check: every ``stride``-th nonzero eps
    and the largest."""
    return [i > 0 and ((i - 1) % max(stride, 1) == 0 or i == len(grid) - 1) for i in range(len(grid))]


def attack_strength(net: Any, x: Any, eps: float, clean: np.ndarray, weak: np.ndarray, budget: Budget, *,
                    norm: str, seed: int) -> dict[str, float]:
    """On ``x`` (the sample), the fraction ``mean(weak rise) / mean(best rise)`` where the rise is bits/dim above
    ``clean``, ``weak`` the attacked bits/dim of the run being checked and best the per-image larger of it and
    a stronger run's (``eval.strong_steps`` steps, ``eval.strong_restarts`` random restarts, another seed)."""
    ev = budget.eval
    xs = attack_in_batches(net, x, eps, likelihood="decrease", norm=norm, steps=ev.strong_steps,
                           restarts=ev.strong_restarts, batch_size=ATTACK_BATCH, seed=seed + 7919)
    strong = bpd_of(net, xs)
    best = np.maximum(strong, weak)
    rise_best = float(np.mean(best - clean))
    frac = float(np.mean(weak - clean)) / rise_best if rise_best > 0 else 1.0
    return {"fraction": frac, "weak_rise": float(np.mean(weak - clean)), "strong_rise": float(np.mean(strong - clean)),
            "n": int(len(x))}


def attack_curves(models: dict[str, Any], x: Any, budget: Budget, *, seed: int) -> dict[str, Any]:
    """Per norm of ``eval.norms`` (module docstring): ``eps``, ``mean_bpd``/``median_bpd`` per model,
    ``per_image`` bits/dim, ``growth_eps`` per model (None: not reached on the grid), ``max_growth`` and
    ``strength`` (per model, per nonzero eps, or empty when ``eval.strong_n`` is 0) and the ``settings``.

    Per image, the bits/dim at each eps is the best over that eps and every smaller one of the grid (as in
    :func:`ood_curve`): the smaller ball lies inside the larger (the same clamp), so its attacked point is a
    candidate of the larger budget and the curve is non-decreasing in eps by construction. The strength check
    measures that reported value."""
    ev = budget.eval
    out: dict[str, Any] = {}
    for norm in ev.norms:
        grid = eps_grid(budget, norm)
        res: dict[str, Any] = {"eps": grid, "mean_bpd": {}, "median_bpd": {}, "per_image": {}, "growth_eps": {},
                               "max_growth": {}, "strength": {},
                               "settings": {"steps": ev.pgd_steps, "restarts": ev.restarts, "n": int(len(x)),
                                            "strong_steps": ev.strong_steps, "strong_restarts": ev.strong_restarts,
                                            "strong_n": min(ev.strong_n, int(len(x)))}}
        for label, net in models.items():
            table = bpd_against_eps(net, x, grid, norm=norm, likelihood="decrease", steps=ev.pgd_steps,
                                    restarts=ev.restarts, batch_size=ATTACK_BATCH, seed=seed)
            table = np.maximum.accumulate(np.asarray(table), axis=0)  # grid ascending: nested balls
            means = [float(v.mean()) for v in table]
            clean = means[grid.index(0.0)]
            res["mean_bpd"][label] = means
            res["median_bpd"][label] = [float(np.median(v)) for v in table]
            res["per_image"][label] = table
            res["growth_eps"][label] = first_eps(grid, [m >= ev.growth * clean for m in means])
            res["max_growth"][label] = max(means) / clean
            sn = min(ev.strong_n, int(len(x)))
            if sn > 0:
                c0, mask = table[grid.index(0.0)][:sn], strength_mask(grid, ev.strong_stride)
                res["strength"][label] = [
                    attack_strength(net, x[:sn], e, c0, table[i][:sn], budget, norm=norm, seed=seed) if mask[i]
                    else None for i, e in enumerate(grid)]
        out[norm] = res
    return out


def ood_curve(models: dict[str, Any], x_in: Any, x_ood: Any, budget: Budget, *, seed: int) -> dict[str, Any]:
    """Per model: the in-distribution test median bits/dim, and at each eps of ``ood.eps_grid`` (with 0) the
    median bits/dim of the OOD images after PGD raising their likelihood (``eval.norm``, ``ood.pgd_steps``
    steps), the AUROC of ``-bpd`` (in vs attacked OOD) and ``threshold_eps``: the smallest eps where the
    attacked OOD median is at most the in-distribution median (None: not reached on the grid).

    Per image, the bits/dim at each eps is the best over that eps and every smaller one of the grid: the ball
    of a smaller eps lies inside the larger one (the same clamp), so its attacked point is a candidate of the
    larger budget, and the curve is non-increasing in eps by construction (before issue 14 the single-eps
    attack stalled and the full runs' curves rose with eps)."""
    o, norm = budget.ood, budget.eval.norm
    grid = sorted({float(e) for e in o.eps_grid} | {0.0})
    res: dict[str, Any] = {"eps": grid, "norm": norm, "steps": o.pgd_steps, "n_in": int(len(x_in)),
                           "n_ood": int(len(x_ood)), "models": {}}
    for label, net in models.items():
        b_in = bpd_of(net, x_in)
        table = bpd_against_eps(net, x_ood, grid, norm=norm, likelihood="increase", steps=o.pgd_steps, restarts=0,
                                batch_size=ATTACK_BATCH, seed=seed)
        table = np.minimum.accumulate(np.asarray(table), axis=0)  # grid ascending: nested balls
        med_in = float(np.median(b_in))
        medians = [float(np.median(v)) for v in table]
        res["models"][label] = {"in_median": med_in, "median_bpd": medians,
                                "mean_bpd": [float(v.mean()) for v in table],
                                "auroc": [auroc(-b_in, -v) for v in table],
                                "threshold_eps": first_eps(grid, [m <= med_in for m in medians])}
    return res
