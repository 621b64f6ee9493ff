r"""Evaluation of trained flows under attack (paper claims 3-4): bits/dim against the attack budget, the
out-of-distribution attack, and likelihood-based OOD detection (AUROC), clean and under attack.

* **In-distribution attack** (``likelihood="decrease"``): mean bits/dim of test images ``x`` and of
  ``pgd(model, x, eps)`` for each ``eps`` (the teaser's 1.6 -> 150 for a clean model, 1.7 -> 2.7 hybrid).
* **OOD attack** (``likelihood="increase"``): bits/dim of uniform-noise images and of a second dataset
  (e.g. Fashion-MNIST for an MNIST model), before and after ``pgd(..., likelihood="increase")`` (the teaser's
  noise 11 -> 4.2).
* **Likelihood-based OOD detection**: score = log-likelihood (equivalently ``-bpd``); in-distribution
  should score higher. ``AUROC = P(s_in > s_out) + 1/2 P(s_in = s_out)``, the Mann-Whitney statistic, computed
  exactly from ranks: ``AUROC = (R_in - n_in (n_in + 1) / 2) / (n_in n_out)`` with ``R_in`` the sum of the
  average ranks of the in-distribution scores in the pooled sample. Reported clean, and with the OOD
  samples attacked (the attack raises their likelihood, so detection degrades towards or below 0.5).

All images are mid-bin pixels ``y = (k + 0.5) / n_bins`` (deterministic; no dequantisation noise), attacks are
clamped to ``clamp`` (default ``[0, 1]``; ``None`` for unbounded vector data). The model may be any density model
:func:`deepcheck.adapt.as_log_prob` accepts (the package's flows, normflows, zuko, a Distribution, a callable
``x -> log_prob``); bits/dim are the model's own ``bpd`` when it has one, else ``-log p(x) / (D ln 2)``.
Results are an :class:`EvalResult` dataclass, saved as JSON. CLI (:mod:`deepcheck.commands.evaluate`):
``python -m deepcheck attack ...`` (one model, one dataset, bits/dim against eps) and
``python -m deepcheck evaluate ...`` (models, in-distribution + OOD data, AUROC).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from .adapt import LogProbModel, as_log_prob
from .attacks import pgd
from .data import as_pixels
from .fileio import atomic_write

__all__ = ["auroc", "bpd_of", "bpd_against_eps", "ood_attack", "EvalResult", "evaluate_model"]


# ---------------------------------------------------------------------------------------------- AUROC
def auroc(scores_in: Sequence[float] | np.ndarray, scores_out: Sequence[float] | np.ndarray) -> float:
    """``P(s_in > s_out) + 1/2 P(s_in = s_out)`` over all pairs, exactly, from average ranks (O(n log n)).

    Scores are "in-distribution-ness" (higher = more in-distribution), e.g. log-likelihoods or ``-bpd``.
    """
    a = np.asarray(scores_in, dtype=np.float64).ravel()
    b = np.asarray(scores_out, dtype=np.float64).ravel()
    for name, v in (("scores_in", a), ("scores_out", b)):
        if v.size == 0:
            raise ValueError(f"{name} must not be empty")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} contains non-finite values")
    ranks = rankdata(np.concatenate([a, b]))  # average ranks for ties
    u = float(ranks[: a.size].sum()) - a.size * (a.size + 1) / 2.0
    return u / (a.size * b.size)


# ---------------------------------------------------------------------------------------------- bits/dim
def bpd_of(model: object, x: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
    """Per-sample bits/dim (:meth:`deepcheck.adapt.LogProbModel.bpd`) in eval mode (modes and parameter flags
    restored), as float64 numpy; a ``ValueError`` naming the rows if any is not finite."""
    lp = as_log_prob(model)
    with lp.frozen(), torch.no_grad():
        out = np.concatenate([lp.bpd(x[i:i + batch_size]).double().cpu().numpy()
                              for i in range(0, len(x), batch_size)])
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise ValueError(f"bits/dim is not finite in rows {bad[:10].tolist()} ({bad.size} of {out.size}): "
                         "check the model and the data")
    return out


def attack_in_batches(model: object, x: torch.Tensor, eps: float, *, likelihood: str, norm: str, steps: int,
                      restarts: int, batch_size: int = 256, seed: int = 0,
                      clamp: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """:func:`deepcheck.attacks.pgd` over ``x`` in batches (batch ``i`` seeded ``seed + i``), clamped to
    ``clamp``; ``eps = 0`` returns ``x`` itself."""
    if eps == 0.0:
        return x
    return torch.cat([pgd(model, x[i:i + batch_size], eps, norm=norm, likelihood=likelihood, steps=steps,
                          restarts=restarts, clamp=clamp, seed=seed + i) for i in range(0, len(x), batch_size)])


def _pixels(data: object, lp: LogProbModel) -> torch.Tensor:
    """``data`` (a float tensor or an ImageData's mid-bin pixels) in the model's dtype and on its device."""
    return as_pixels(data, like=lp).to(dtype=lp.dtype, device=lp.device)  # type: ignore[arg-type]


def bpd_against_eps(model: object, data: object, eps: Sequence[float], *, norm: str = "linf",
                    likelihood: str = "decrease", steps: int = 20, restarts: int = 0, batch_size: int = 64,
                    seed: int = 0, clamp: tuple[float, float] | None = (0.0, 1.0),
                    progress: bool = False) -> np.ndarray:
    """Per-sample bits/dim after ``pgd(model, x, e, likelihood=..., clamp=clamp)`` for each ``e`` in ``eps``:
    ``(len(eps), n)``.

    ``eps = 0`` gives the clean bits/dim. Same seed, same numbers (on CPU). Data outside ``clamp`` is a
    ``ValueError`` (pass ``clamp=None`` for unbounded data). Inside a process group of several ranks the batches
    are shared out and gathered (:func:`sharded_attacked_bpd`): every rank must call it, and every rank gets the
    whole, identical, result. ``progress``: a tqdm bar (stderr) over the budgets."""
    from tqdm.auto import tqdm

    x = _pixels(data, as_log_prob(model))
    rows = [sharded_attacked_bpd(model, x, float(e), likelihood=likelihood, norm=norm, steps=steps,
                                 restarts=restarts, batch_size=batch_size, seed=seed, clamp=clamp)
            for e in tqdm(eps, desc=f"{likelihood} bits/dim", unit="eps", disable=not progress, leave=False)]
    return np.array(rows)


def sharded_attacked_bpd(model: object, x: torch.Tensor, eps: float, *, likelihood: str, norm: str, steps: int,
                         restarts: int, batch_size: int, seed: int,
                         clamp: tuple[float, float] | None = (0.0, 1.0)) -> np.ndarray:
    """Per-sample bits/dim of :func:`attack_in_batches`' result on ``x``, computed batch by batch with
    :func:`deepcheck.distributed.map_batches`: batch ``k`` (samples ``[k b, (k + 1) b)``, seeded ``seed + k b``
    as in one process) on rank ``k mod world``, all-gathered. The batches and their seeds do not depend on the
    number of ranks, so neither do the numbers."""
    from .distributed import map_batches

    def one(start: int, stop: int) -> np.ndarray:
        xa = attack_in_batches(model, x[start:stop], eps, likelihood=likelihood, norm=norm, steps=steps,
                               restarts=restarts, batch_size=batch_size, seed=seed + start, clamp=clamp)
        return bpd_of(model, xa, batch_size=max(batch_size, 256))

    return map_batches(one, len(x), batch_size)


def ood_attack(model: object, data: object, eps: float, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    """(bits/dim before, bits/dim after) the likelihood-raising attack of budget ``eps`` on OOD ``data``."""
    both = bpd_against_eps(model, data, [0.0, eps], likelihood="increase", **kw)  # type: ignore[arg-type]
    return both[0], both[1]


# ---------------------------------------------------------------------------------------------- one model
@dataclass
class EvalResult:
    """Everything :func:`evaluate_model` measured; means are over samples, bits/dim."""

    label: str
    data: str
    norm: str
    eps: list[float]
    steps: int
    seed: int
    n_in: int
    bpd: list[float]                      # in-distribution, mean bits/dim at each eps (eps[0] should be 0)
    bpd_median: list[float]
    ood_eps: float | None = None
    ood: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> clean/attacked bpd and AUROCs

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        return atomic_write(path, json.dumps(self.to_dict(), indent=2))


def evaluate_model(model: object, data: object, eps: Sequence[float], *, ood_data: dict[str, object] | None = None,
                   ood_eps: float | None = None, norm: str = "linf", steps: int = 20, restarts: int = 0,
                   batch_size: int = 64, seed: int = 0, label: str = "model", data_name: str = "data",
                   clamp: tuple[float, float] | None = (0.0, 1.0),
                   progress: bool = False) -> EvalResult:
    """Bits/dim of ``data`` against ``eps`` (in-distribution attack) and, for each named OOD set, bits/dim
    before/after the OOD attack of budget ``ood_eps`` and the AUROC of in-vs-OOD by log-likelihood, clean and
    with the OOD samples attacked. ``model``: anything :func:`deepcheck.adapt.as_log_prob` accepts; attacks
    stay inside ``clamp`` (``None``: unbounded data). ``progress``: tqdm bars (stderr) over the budgets."""
    eps = [float(e) for e in eps]
    if not eps or any(not math.isfinite(e) or e < 0 for e in eps):
        raise ValueError(f"eps must be a non-empty list of finite budgets >= 0, got {eps}")
    kw = dict(norm=norm, steps=steps, restarts=restarts, batch_size=batch_size, seed=seed, clamp=clamp,
              progress=progress)
    table = bpd_against_eps(model, data, eps, **kw)
    res = EvalResult(label=label, data=data_name, norm=norm, eps=eps, steps=steps, seed=seed, n_in=table.shape[1],
                     bpd=[float(r.mean()) for r in table], bpd_median=[float(np.median(r)) for r in table])
    if ood_data:
        if ood_eps is None:
            raise ValueError("ood_eps is required with ood_data")
        res.ood_eps = float(ood_eps)
        clean_in = bpd_of(model, _pixels(data, as_log_prob(model)), batch_size=max(batch_size, 256))
        for name, od in ood_data.items():
            before, after = ood_attack(model, od, float(ood_eps), **kw)
            res.ood[name] = {"n": int(before.size), "bpd_clean": float(before.mean()),
                             "bpd_attacked": float(after.mean()),
                             "auroc_clean": auroc(-clean_in, -before), "auroc_attacked": auroc(-clean_in, -after)}
    return res


def format_result(r: EvalResult) -> str:
    """A plain-text table of one :class:`EvalResult`."""
    lines = [f"{r.label} on {r.data} ({r.norm}, {r.steps} steps, n={r.n_in}): mean bits/dim against eps"]
    lines += [f"  eps={e:<10.5g} bpd={b:10.4f}  (median {m:.4f})" for e, b, m in zip(r.eps, r.bpd, r.bpd_median)]
    for name, o in r.ood.items():
        lines.append(f"  OOD {name} (n={o['n']}, eps={r.ood_eps:.5g}): bpd {o['bpd_clean']:.4f} -> "
                     f"{o['bpd_attacked']:.4f}; AUROC {o['auroc_clean']:.4f} -> {o['auroc_attacked']:.4f}")
    return "\n".join(lines)
