"""The input contract of the attacks and the guard against non-finite objectives.

What the user sees (checked at every entry point of :mod:`deepcheck.attacks`, before any optimisation):

* ``x`` (or a batch of ``universal``'s data) with a NaN or an infinite entry: ``ValueError`` naming the rows;
* ``x`` outside ``clamp`` (default ``(0, 1)``): ``ValueError`` naming the rows and the data's range, and how to
  pass ``clamp=None`` (unbounded data) or ``clamp=(lo, hi)`` (the data's range). Silently clamping such an ``x``
  moved it by far more than ``eps`` (a pixel of [0, 255] data by 253.9 at eps 0.03);
* a non-finite objective at the clean ``x`` (``log_prob`` NaN or infinite there): ``ValueError`` naming the rows;
* during the attack, a candidate whose objective is non-finite (NaN, or ``log_prob`` driven to -inf or +inf) is
  rejected: :class:`FiniteGuard` hands the optimiser ``-inf`` for it (never an improvement of the maximised
  objective) and a zero gradient, so the best finite iterate is kept; the rejections are counted per sample
  (``AttackInfo.nonfinite``) and one :class:`NonFiniteWarning` says how many there were. With
  ``nonfinite="raise"`` the first one is a ``FloatingPointError`` instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .core import AttackInfo as _CoreInfo
from .spec import NONFINITE_MODES

Tensor = torch.Tensor


class NonFiniteWarning(RuntimeWarning):
    """Some attack candidates had a non-finite objective and were rejected (the best finite iterate was kept)."""


@dataclass
class AttackInfo(_CoreInfo):
    """What :func:`~deepcheck.attacks.pgd_with_info` saw (the fields of the core's ``AttackInfo``) and
    ``nonfinite``: per sample, how many candidates had a non-finite objective and were rejected, shape ``(B,)``."""

    nonfinite: Tensor | None = None


def rows_text(bad: Tensor, offset: int = 0, limit: int = 10) -> str:
    """``"rows [0, 3, 7] (3 of 200)"`` for a boolean row mask (at most ``limit`` listed)."""
    idx = (torch.nonzero(bad.reshape(-1)).reshape(-1) + offset).tolist()
    shown = ", ".join(map(str, idx[:limit])) + (", ..." if len(idx) > limit else "")
    return f"rows [{shown}] ({len(idx)} of {bad.numel()})"


def check_finite(x: Tensor, name: str = "x", offset: int = 0) -> None:
    """A ``ValueError`` naming the rows of ``x`` that hold a NaN or an infinity."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        raise ValueError(f"{name} has non-finite values (NaN or inf) in {rows_text(bad, offset)}; "
                         "an attack needs finite inputs: drop or repair those rows")


def check_in_clamp(x: Tensor, clamp: tuple[float, float] | None, name: str = "x", offset: int = 0) -> None:
    """A ``ValueError`` naming the rows of ``x`` outside ``clamp`` (nothing to check for ``clamp=None``)."""
    if clamp is None:
        return
    lo, hi = clamp
    flat = x.reshape(x.shape[0], -1)
    bad = ((flat < lo) | (flat > hi)).any(dim=1)
    if bool(bad.any()):
        raise ValueError(f"{name} lies outside clamp=({lo:g}, {hi:g}) in {rows_text(bad, offset)} (its range is "
                         f"[{float(flat.min()):g}, {float(flat.max()):g}]); clamping would move it by more than eps. "
                         "Pass clamp=None for unbounded data, or clamp=(lo, hi) with the data's range "
                         "(e.g. clamp=(0, 255) for 8-bit pixels)")


def check_clean(values: Tensor, n: int, custom_loss: bool, offset: int = 0) -> None:
    """The objective at the clean input: one value per sample and finite (a ``ValueError`` naming the rows)."""
    what = "loss_fn(model, x)" if custom_loss else "the model's log_prob"
    if values.shape != (n,):
        raise ValueError(f"{'loss_fn' if custom_loss else 'model log_prob'} must return one value per sample, "
                         f"shape ({n},), got {tuple(values.shape)}")
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        raise ValueError(f"{what} is not finite at the clean input in {rows_text(bad, offset)}; an attack needs a "
                         "finite starting objective (check the model, and that the data lies in its support)")


class FiniteGuard:
    """Wraps an objective ``fn(delta) -> (values, gradient)`` (maximised): a non-finite value becomes ``-inf``
    (rejected by the optimiser's "accept only improvements" rule) with a zero gradient, and is counted per
    entry of the value in ``count``; non-finite gradient entries of finite values become 0. ``mode="raise"``
    raises ``FloatingPointError`` at the first non-finite value instead."""

    def __init__(self, fn: Callable[[Tensor], tuple[Tensor, Tensor]], mode: str = "warn") -> None:
        if mode not in NONFINITE_MODES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {mode!r}")
        self.fn, self.mode = fn, mode
        self.count: Tensor | None = None

    def __call__(self, delta: Tensor) -> tuple[Tensor, Tensor]:
        val, grad = self.fn(delta)
        bad = ~torch.isfinite(val)
        if self.count is None:
            self.count = torch.zeros(val.shape, dtype=torch.long, device=val.device)
        if bool(bad.any()):
            if self.mode == "raise":
                raise FloatingPointError(f"an attack candidate has a non-finite objective in {rows_text(bad)} "
                                         "(NaN, or log_prob driven to +-inf); nonfinite='warn' rejects such "
                                         "candidates and keeps the best finite iterate")
            self.count = self.count + bad.long()
            val = torch.where(bad, torch.full_like(val, -torch.inf), val)
            rows = bad.reshape((-1,) + (1,) * (grad.ndim - 1)) if val.numel() > 1 else bad.reshape(())
            grad = torch.where(rows, torch.zeros_like(grad), grad)
        return val, torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)

    @property
    def total(self) -> int:
        return 0 if self.count is None else int(self.count.sum())

    def warn(self, what: str = "pgd") -> None:
        """One :class:`NonFiniteWarning` if any candidate was rejected."""
        if self.total:
            warnings.warn(f"{what}: {self.total} attack candidate(s) had a non-finite objective (NaN, or log_prob "
                          "driven to +-inf) and were rejected; the best finite iterate is returned "
                          "(per-sample counts: pgd_with_info(...)[1].nonfinite)", NonFiniteWarning, stacklevel=3)
