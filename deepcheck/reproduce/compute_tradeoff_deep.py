r"""The robustness-accuracy trade-off of a deep flow, beside the linear theory's (R7) on the same pixels.

Deep: the maximum-likelihood ``deep_tradeoff.model`` is fine-tuned by hybrid training,
``(1 - lambda) NLL(x) + lambda NLL(x_adv)`` with ``x_adv`` PGD of budget ``eps_train`` (``deep_tradeoff.norm``),
for each ``lambda`` x ``eps_train`` of the grid; each model's mean clean bits/dim and mean bits/dim under PGD
of budget ``eps_attack`` on test images give a point (accuracy loss, rise) against the MLE model.

Linear: the universal adversarial training of R5 (water-filling, :func:`linflow.adversarial_fit`) of a
:class:`linflow.LinearFlow` on the training pixels (ridge ``reg``) at each ``linear_eps_train``; measured on the
same test images, clean and under the exact sample-specific L2 attack of budget ``eps_attack`` (R1,
:func:`linflow.optimal_nll_change`), and on the training pixels under the universal attack
(:func:`linflow.tradeoff`, whose rise is ``eps_a^2 / (2 tau)``, R7). Bits/dim: ``(NLL + D log n_bins)/(D ln 2)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

import linflow

from ..evaluate import attack_in_batches, bpd_of
from .budget import Budget
from .compute_phenomena import ATTACK_BATCH
from .compute_theory import linear_bpd, resolve_reg


def deep_point(net: Any, x: torch.Tensor, budget: Budget, *, seed: int) -> dict[str, float]:
    """Mean clean bits/dim of ``x`` and mean bits/dim after PGD (``eps_attack``, ``attack_steps`` steps)."""
    dt = budget.deep_tradeoff
    xa = attack_in_batches(net, x, dt.eps_attack, likelihood="decrease", norm=dt.norm, steps=dt.attack_steps,
                           restarts=0, batch_size=ATTACK_BATCH, seed=seed)
    return {"clean": float(bpd_of(net, x).mean()), "attacked": float(bpd_of(net, xa).mean())}


def grid_budget(budget: Budget, lam: float, eps_train: float) -> Budget:
    """The training settings of one grid point: hybrid ``lam`` at ``eps_train`` for ``deep_tradeoff.epochs``."""
    dt = budget.deep_tradeoff
    return budget.with_settings(train={"hybrid_lambda": float(lam), "eps": float(eps_train), "norm": dt.norm,
                                       "finetune_epochs": dt.epochs, "pgd_steps": dt.pgd_steps})


def linear_curve(x_train: torch.Tensor, x_test: torch.Tensor, n_bins: int, budget: Budget) -> dict[str, Any]:
    """The linear curve of the module docstring, in bits/dim: ``eps_train``, ``clean``, ``attacked`` (test
    images, sample-specific R1 attack), ``loss``/``rise`` against the ML fit, and the universal curve on the
    training pixels (``loss_universal``, ``rise_universal``)."""
    dt = budget.deep_tradeoff
    Xtr = x_train.reshape(len(x_train), -1).double().cpu().numpy()
    Xte = x_test.reshape(len(x_test), -1).double().cpu().numpy()
    d = Xtr.shape[1]
    to_bpd = 1.0 / (d * math.log(2.0))
    grid = sorted({float(e) for e in dt.linear_eps_train} | {0.0})
    reg = resolve_reg(dt.reg, n_bins)
    clean, attacked = [], []
    for e in grid:
        flow = linflow.adversarial_fit(Xtr, e, attack="universal", norm=2, reg=reg)
        c = linear_bpd(flow, Xte, n_bins)
        clean.append(float(c.mean()))
        attacked.append(float(np.mean(c + linflow.optimal_nll_change(flow, Xte, dt.eps_attack) * to_bpd)))
    tc = linflow.tradeoff(Xtr, np.array(grid), dt.eps_attack, attack="universal", norm=2, reg=reg)
    return {"reg": reg, "eps_train": grid, "clean": clean, "attacked": attacked,
            "loss": [c - clean[0] for c in clean], "rise": [a - c for a, c in zip(attacked, clean)],
            "loss_universal": [float(v) * to_bpd for v in tc.accuracy_loss],
            "rise_universal": [float(v) * to_bpd for v in tc.rise],
            "rise_formula_universal": [float(v) * to_bpd for v in tc.rise_formula]}
