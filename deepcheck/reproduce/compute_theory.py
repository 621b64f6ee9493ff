r"""The linear theory held against the deep flows, on the same pixels.

A :class:`linflow.LinearFlow` is fitted by maximum likelihood (ridge ``reg``: ``Sigma = S + reg I``; by default
``reg = 1 / (12 n_bins^2)``, :func:`resolve_reg`) to the training images as vectors of mid-bin pixels in
``[0, 1]^D``. Its NLL changes are converted to bits/dim by
``/(D ln 2)`` (the ``D log n_bins`` term of bits/dim cancels in a difference). At each L2 budget ``eps``, on
test images ``x``:

* **predicted** -- the linear model's own optimal mean rise: R1 per image (:func:`linflow.optimal_nll_change`)
  and R4 for one perturbation (:func:`linflow.universal_nll_change`; ``eps^2 / (2 s_min)`` for an exact ML fit);
* **transfer** -- the bits/dim rise of the deep model at ``clamp(x + delta, 0, 1)`` for the linear optimum
  ``delta`` of R1 (per image) and for ``+-eps u_min`` (R4; the sign with the larger deep rise);
* **deep** -- the rise that PGD finds on the deep model itself (L2, lowering the likelihood) and the rise of the
  deep universal perturbation (:func:`deepcheck.attacks.universal`), with ``|cos|`` between that perturbation
  and ``u_min`` and the mean ``cos`` between each image's PGD perturbation and its R1 optimum.

The transferred rises are lower bounds on the deep model's optimum, so ``transfer / deep PGD`` says how much of
the deep attack the linear theory explains (clamping can only shrink the transferred perturbation's effect
relative to the unclamped linear prediction).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

import linflow

from ..attacks import universal
from ..evaluate import attack_in_batches, bpd_of
from .budget import Budget
from .compute_phenomena import ATTACK_BATCH


def resolve_reg(reg: float | None, n_bins: int) -> float:
    """``reg``, or for None the variance ``1 / (12 n_bins^2)`` of uniform dequantisation noise: the covariance of
    ``(k + u) / n_bins`` is that of the mid-bin pixels plus ``I / (12 n_bins^2)``, so the fit is then the
    maximum-likelihood Gaussian of the dequantised data."""
    return 1.0 / (12.0 * n_bins**2) if reg is None else float(reg)


def fit_linear(x: torch.Tensor, reg: float) -> linflow.LinearFlow:
    """``linflow.LinearFlow.fit`` to the images ``x`` ``(N, C, H, W)`` flattened to ``(N, D)`` in float64."""
    return linflow.LinearFlow.fit(x.reshape(len(x), -1).double().cpu().numpy(), reg=reg)


def linear_bpd(flow: linflow.LinearFlow, X: np.ndarray, n_bins: int) -> np.ndarray:
    """Bits/dim of the linear flow's density on pixels ``X`` ``(N, D)``: ``(NLL + D log n_bins) / (D ln 2)``."""
    d = X.shape[1]
    return (np.asarray(flow.nll(X)) + d * math.log(n_bins)) / (d * math.log(2.0))


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    return np.sum(a * b, axis=-1) / np.maximum(na * nb, 1e-300)


def theory_vs_deep(models: dict[str, Any], x: torch.Tensor, flow: linflow.LinearFlow, budget: Budget, *,
                   seed: int) -> dict[str, Any]:
    """The comparison of the module docstring at each ``theory.eps``, for each model of ``models`` (the
    maximum-likelihood deep flows). Rises are means over the images ``x``, in bits/dim."""
    th = budget.theory
    n, d = len(x), int(np.prod(x.shape[1:]))
    to_bpd = 1.0 / (d * math.log(2.0))
    X = x.reshape(n, -1).double().cpu().numpy()
    u_min = flow.eigvecs[:, 0]
    res: dict[str, Any] = {"eps": [float(e) for e in th.eps], "n": n, "dim": d,
                           "reg": resolve_reg(th.reg, models_n_bins(models)),
                           "s_min": float(flow.eigvals[0]), "s_max": float(flow.eigvals[-1]),
                           "predicted_r1": [], "predicted_r4": [], "models": {}}
    deltas = {}
    for e in th.eps:
        deltas[e] = linflow.optimal_perturbation(flow, X, float(e))
        res["predicted_r1"].append(float(np.mean(linflow.optimal_nll_change(flow, X, float(e)))) * to_bpd)
        res["predicted_r4"].append(linflow.universal_nll_change(flow, X, float(e)) * to_bpd)
    for label, net in models.items():
        dtype = next(net.parameters()).dtype
        xm = x.to(dtype)
        clean = bpd_of(net, xm)

        def rise(xa: torch.Tensor, net: Any = net, clean: np.ndarray = clean) -> float:
            return float(np.mean(bpd_of(net, xa.clamp(0.0, 1.0)) - clean))

        r: dict[str, list[Any]] = {k: [] for k in ("transfer_r1", "transfer_r4", "pgd", "universal",
                                                   "cos_universal_umin", "cos_pgd_r1")}
        for e in th.eps:
            d1 = torch.as_tensor(deltas[e], dtype=dtype).reshape(x.shape)
            r["transfer_r1"].append(rise(xm + d1))
            um = torch.as_tensor(float(e) * u_min, dtype=dtype).reshape(1, *x.shape[1:])
            r["transfer_r4"].append(max(rise(xm + um), rise(xm - um)))
            xa = attack_in_batches(net, xm, float(e), likelihood="decrease", norm="l2", steps=th.pgd_steps,
                                   restarts=0, batch_size=ATTACK_BATCH, seed=seed)
            r["pgd"].append(rise(xa))
            r["cos_pgd_r1"].append(float(np.mean(_cos((xa - xm).reshape(n, -1).double().numpy(), deltas[e]))))
            du = universal(net, xm, float(e), norm="l2", steps=th.universal_steps, restarts=0, seed=seed)
            r["universal"].append(rise(xm + du))
            r["cos_universal_umin"].append(abs(float(_cos(du.reshape(-1).double().numpy(), u_min))))
        res["models"][label] = {"clean_bpd": float(clean.mean()), **r}
    res["linear_clean_bpd"] = float(np.mean(linear_bpd(flow, X, models_n_bins(models))))
    return res


def models_n_bins(models: dict[str, Any]) -> int:
    """The number of levels the deep models were built for (all alike)."""
    bins = {int(getattr(m, "n_bins", 256)) for m in models.values()}
    if len(bins) != 1:
        raise ValueError(f"models disagree on n_bins: {sorted(bins)}")
    return bins.pop()
