r"""Bits/dim of a flow on discrete images: the mid-bin point value and the uniformly dequantised estimate.

A flow models a density ``p`` on ``[0, 1]^D``; an image of integer levels ``k`` (``n_bins`` levels) is the bin
``B(k) = [k / n_bins, (k + 1) / n_bins)^D`` of volume ``n_bins^{-D}``. Its discrete probability is
``P(k) = \int_{B(k)} p(y) dy = n_bins^{-D} E_u[p((k + u) / n_bins)]``, ``u ~ U[0, 1)^D``. The published
bits/dim of RealNVP and Glow are the *uniformly dequantised* estimate

.. math::  \mathrm{bpd}_{deq}(k) = \frac1K \sum_{j=1}^K \mathrm{bpd}\big((k + u_j) / n_{bins}\big),
           \qquad \mathrm{bpd}(y) = \frac{-\log p(y) + D \log n_{bins}}{D \ln 2},

the mean over ``K`` draws of the model's bits/dim (:meth:`deepcheck.flows.base.Flow.bpd`); by Jensen's
inequality its expectation is an upper bound on ``-log2 P(k) / D``. The tighter importance-weighted bound
``-log2(mean_j p_j) / D + log2(n_bins)`` (``bound``) uses the same draws and is reported beside it. The
*mid-bin* value ``bpd((k + 0.5) / n_bins)`` is the deterministic point value that the attacks and the rest of
``deepcheck`` use (docs/theory.md, deep conventions); it is not an estimate of ``P(k)``.

Draws come from a ``torch.Generator`` seeded ``seed`` (CPU), so the same seed gives the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .flows.base import parameter_device, parameter_dtype

__all__ = ["DequantizedBpd", "dequantized_bpd"]


@dataclass(frozen=True)
class DequantizedBpd:
    """Per-image bits/dim (float64 arrays of length ``n``): ``mid_bin`` (point value at ``(k + 0.5) / n_bins``),
    ``dequantized`` (mean over the ``k`` draws), ``bound`` (importance-weighted bound from the same draws) and
    ``draws`` ``(k, n)`` (each draw's bits/dim)."""

    mid_bin: np.ndarray
    dequantized: np.ndarray
    bound: np.ndarray
    draws: np.ndarray
    k: int
    seed: int

    def summary(self) -> dict[str, float | int]:
        """Means over images, and the standard error of the dequantised mean (over images and draws)."""
        n = self.dequantized.size
        return {"n": int(n), "k": self.k, "seed": self.seed, "mid_bin": float(self.mid_bin.mean()),
                "dequantized": float(self.dequantized.mean()), "bound": float(self.bound.mean()),
                "dequantized_se": float(self.draws.std(ddof=1) / math.sqrt(self.draws.size))
                if self.draws.size > 1 else 0.0}


def _bpd(model: nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model.bpd(x[i:i + batch_size]).double().cpu().numpy()
                               for i in range(0, len(x), batch_size)])


def dequantized_bpd(model: nn.Module, data: object, *, k: int = 8, seed: int = 0,
                    batch_size: int = 256) -> DequantizedBpd:
    """The uniformly dequantised bits/dim of ``data`` (a :class:`deepcheck.data.ImageData`) under ``model``
    (module docstring), over ``k`` draws of ``u ~ U[0, 1)^D`` seeded ``seed``, beside the mid-bin value.

    The model must have been built for ``data.n_bins`` levels (its ``n_bins`` attribute, where it has one).
    The model runs in eval mode (its mode is restored afterwards)."""
    if not callable(getattr(data, "dequantize", None)) or not hasattr(data, "levels"):
        raise TypeError(f"data must be an ImageData (integer levels), got {type(data).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    n_bins = getattr(model, "n_bins", data.n_bins)
    if n_bins != data.n_bins:
        raise ValueError(f"data has {data.n_bins} levels but the model was built for n_bins = {n_bins}")
    if len(data) == 0:
        raise ValueError("data must hold at least one image")
    dtype, device = parameter_dtype(model), parameter_device(model)
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        mid = _bpd(model, data.pixels(dtype).to(device), batch_size)
        gen = torch.Generator().manual_seed(seed)
        draws = np.stack([_bpd(model, data.dequantize(gen, dtype).to(device), batch_size) for _ in range(k)])
    finally:
        for m, t in was:
            m.training = t
    dim = int(np.prod(data.shape))
    # bpd_j = (-log p_j + D log n) / (D ln 2)  =>  -log p_j = D ln2 bpd_j - D log n; bound = -log mean_j p_j.
    neg_log_p = dim * math.log(2.0) * draws - dim * math.log(n_bins)
    log_mean_p = np.logaddexp.reduce(-neg_log_p, axis=0) - math.log(k)
    bound = (-log_mean_p + dim * math.log(n_bins)) / (dim * math.log(2.0))
    return DequantizedBpd(mid_bin=mid, dequantized=draws.mean(axis=0), bound=bound, draws=draws, k=k, seed=seed)
