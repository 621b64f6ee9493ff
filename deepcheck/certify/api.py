r"""Certified intervals on the worst-case NLL of a flow under a bounded perturbation (issue 15).

For each sample ``x`` of a batch, :func:`nll_bounds` brackets

.. math::  \mathrm{NLL}^\star(x) = \max_{\|\delta\| \le \varepsilon,\ lo \le x + \delta \le hi} -\log p(x + \delta),
           \qquad -\log p(y) = \tfrac12 \sum_l \lVert z_l(y) \rVert^2 + \tfrac D2 \log 2\pi - \log\lvert\det J(y)\rvert,

the same NLL that ``model.log_prob`` returns (``model.bpd`` adds ``D log n_bins`` and divides by
``D ln 2``: :attr:`NLLBounds.upper_bpd` etc. use the same conversion), by

* ``lower``: the NLL at the witness ``x + delta`` that :func:`deepcheck.attacks.pgd` finds (with restarts),
  projected onto the set in float64;
* ``upper``: bound propagation (:mod:`deepcheck.certify.forms`, ``.relax``, ``.rules``, ``.flows``) gives
  enclosures of every latent and of the log-det, and :mod:`deepcheck.certify.objective` bounds the NLL from
  them. ``method="ibp"``: intervals, ``upper = sum_j max(l_j^2, u_j^2) / 2 + D/2 log 2 pi - min logdet``.
  ``method="symbolic"`` (affine forms in ``delta`` with an interval remainder) and ``method="zonotope"``
  (affine forms with an error symbol per relaxed activation, DeepZ-style): the smaller of the chord bound
  (each ``z_j^2`` below its chord, maximised jointly with ``-logdet``) and the Gram bound (the quadratic
  part bounded by ``1^T |A^T A| 1 / 2``). Joint maximisation means a perturbation that moves a latent and
  the log-det together is not counted twice.

Norms: ``"linf"`` (the set is a box) and ``"l2"`` (IBP: exact through the affine layers before the first
nonlinearity by the dual norm, then boxes; symbolic and zonotope: the dual norm at every concretisation,
intersected with the box hull). The upper bound holds for the model's exact real-arithmetic NLL whatever the rounding
mode (the margin is stated in :mod:`deepcheck.certify.forms`); the lower bound is that NLL evaluated in
float64 at a feasible point.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks.spec import check_clamp
from ..flows.base import bits_per_dim, parameter_dtype
from .flows import MODEL_RULES, latents
from .forms import MAX_SYMBOLS, MODES, Form, InputSet, U, check_max_symbols
from .objective import box_upper, chord_upper, gram_upper

METHODS = MODES
NORMS = ("linf", "l2")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class NLLBounds:
    """Per-sample bounds on the worst-case NLL (nats, float64 tensors of shape ``(B,)``).

    ``lower <= max NLL <= upper``; ``clean`` is the NLL at ``x``; ``delta`` the witness perturbation
    (``lower = NLL(x + delta)``); ``dim`` and ``n_bins`` give the bits/dim conversion of ``model.bpd``."""

    lower: torch.Tensor
    upper: torch.Tensor
    clean: torch.Tensor
    delta: torch.Tensor
    method: str
    eps: float
    norm: str
    dim: int
    n_bins: int | None

    def to_bpd(self, nats: torch.Tensor) -> torch.Tensor:
        """NLL in nats -> bits/dim, as ``model.bpd``."""
        return bits_per_dim(-nats, self.dim, self.n_bins)

    @property
    def lower_bpd(self) -> torch.Tensor:
        return self.to_bpd(self.lower)

    @property
    def upper_bpd(self) -> torch.Tensor:
        return self.to_bpd(self.upper)

    @property
    def clean_bpd(self) -> torch.Tensor:
        return self.to_bpd(self.clean)

    @property
    def excess_ratio(self) -> torch.Tensor:
        """``(upper - clean) / (lower - clean)``: how much larger the certified NLL increase is than the
        attained one (inf where the attack attained nothing)."""
        return (self.upper - self.clean) / (self.lower - self.clean)

    def summary(self) -> dict[str, float]:
        """Means over the batch: bits/dim clean, attained (``lower``) and certified (``upper``); ``ratio_bpd``
        = mean upper / mean lower bits/dim; the median per-sample excess ratio."""
        up, lo, cl = self.upper_bpd.mean(), self.lower_bpd.mean(), self.clean_bpd.mean()
        return {"eps": self.eps, "norm": self.norm, "method": self.method, "n": int(self.upper.numel()),
                "clean_bpd": float(cl), "lower_bpd": float(lo), "upper_bpd": float(up), "ratio_bpd": float(up / lo),
                "excess_ratio_median": float(self.excess_ratio.median())}

    def to_dict(self) -> dict[str, list[float]]:
        """Per-sample numbers (nats and bits/dim) as lists, for JSON."""
        return {k: getattr(self, k).tolist() for k in ("lower", "upper", "clean", "lower_bpd", "upper_bpd",
                                                          "clean_bpd")}


def _check(model: object, x: object, eps: object, norm: object, clamp: object, method: object
           ) -> tuple[float, tuple[float, float] | None]:
    if not isinstance(model, nn.Module) or type(model) not in MODEL_RULES:
        raise TypeError(f"model must be one of {sorted(c.__name__ for c in MODEL_RULES)}, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
    model.check_input(x)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    clamp = check_clamp(clamp)
    return float(eps), clamp


def float64_copy(model: nn.Module) -> nn.Module:
    """An eval-mode float64 copy of ``model`` (float32 -> float64 is exact: the same function)."""
    return copy.deepcopy(model).to(torch.float64).eval()


def nll_upper_bound(model: nn.Module, x: torch.Tensor, eps: float, *, norm: str = "linf",
                    clamp: tuple[float, float] | None = (0.0, 1.0), method: str = "ibp",
                    batch_size: int = 16, max_symbols: int = MAX_SYMBOLS,
                    _model64: nn.Module | None = None) -> torch.Tensor:
    """The certified ``upper`` of :func:`nll_bounds` alone (no attack), float64, shape ``(B,)``; ``+inf`` where
    the enclosures overflow (a NaN in them means nothing is known, and ``+inf`` is then the only sound bound)."""
    eps, clamp = _check(model, x, eps, norm, clamp, method)
    check_max_symbols(max_symbols)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    m64 = _model64 if _model64 is not None else float64_copy(model)
    dim = math.prod(model.input_shape)
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            inp = InputSet.build(x[i:i + batch_size].detach().to(torch.float64), eps, norm, clamp)
            zs, logdet = latents(m64, Form.input(inp, method, max_symbols))
            if method == "ibp":
                up = box_upper(zs, logdet)
            else:
                up = torch.minimum(chord_upper(zs, logdet), gram_upper(zs, logdet))
            const = dim * _HALF_LOG_2PI
            up = (up + const) * (1 + 4 * U) + 4 * U * (up.abs() + const)
            out.append(torch.nan_to_num(up, nan=math.inf))
    return torch.cat(out)


def _witness(x64: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str,
             clamp: tuple[float, float] | None) -> torch.Tensor:
    """The attack's perturbation in float64, projected onto the ball and the clamp box."""
    d = x_adv.detach().to(torch.float64) - x64
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        n = d.reshape(d.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (d.dim() - 1)))
        d = torch.where(n > eps, d * (eps / n.clamp(min=1e-300)) * (1 - 4 * U), d)
    if clamp is not None:
        d = (x64 + d).clamp(*clamp) - x64
    return d


def nll_bounds(model: nn.Module, x: torch.Tensor, eps: float, *, norm: str = "linf",
               clamp: tuple[float, float] | None = (0.0, 1.0), method: str = "ibp", steps: int = 100,
               restarts: int = 2, seed: int = 0, batch_size: int = 16, max_symbols: int = MAX_SYMBOLS) -> NLLBounds:
    """Certified per-sample interval ``[lower, upper]`` on the worst-case NLL (module docstring).

    Parameters
    ----------
    model : a :class:`~deepcheck.flows.Glow`, :class:`~deepcheck.flows.RealNVP` or
        :class:`~deepcheck.flows.LinearFlow` whose ActNorms are initialised (any float dtype).
    x : a batch ``(B, *model.input_shape)`` of the model's dtype, inside ``clamp``.
    eps, norm : the budget and the norm (``"linf"`` or ``"l2"``).
    clamp : the data box ``(lo, hi)`` the perturbed input must stay in, or None.
    method : ``"ibp"`` (interval bound propagation), ``"symbolic"`` (affine forms with an interval remainder) or
        ``"zonotope"`` (affine forms with an error symbol per relaxed activation: the tightest, the most memory).
    steps, restarts, seed : of the :func:`~deepcheck.attacks.pgd` attack giving ``lower`` and ``delta``.
    batch_size : samples propagated at once (the symbolic forms hold ``D`` coefficients per activation).
    max_symbols : the zonotope's symbol budget: at each GLOW layer boundary with more symbols than this, the
        smallest are merged into one fresh symbol per element of the flow's state
        (:func:`deepcheck.certify.reduce.compact`); a relaxation's new symbols are also capped so that their
        coefficients fit ``MAX_SYMBOL_BYTES`` (:mod:`deepcheck.certify.forms`; the rest go to the remainder).
    """
    from ..attacks import pgd

    eps, clamp = _check(model, x, eps, norm, clamp, method)
    m64 = float64_copy(model)
    x64 = x.detach().to(torch.float64)
    upper = nll_upper_bound(model, x, eps, norm=norm, clamp=clamp, method=method, batch_size=batch_size,
                            max_symbols=max_symbols, _model64=m64)
    x_in = x.detach().to(parameter_dtype(model))
    x_adv = pgd(model, x_in, eps, norm=norm, clamp=clamp, steps=steps, restarts=restarts, seed=seed) if eps > 0 \
        else x_in
    delta = _witness(x64, x_adv, eps, norm, clamp)
    with torch.no_grad():
        lower = -m64.log_prob(x64 + delta)
        clean = -m64.log_prob(x64)
    lower = torch.maximum(lower, clean)  # delta = 0 is feasible
    delta = torch.where((lower == clean).reshape(-1, *([1] * (delta.dim() - 1))), torch.zeros_like(delta), delta)
    return NLLBounds(lower=lower, upper=upper, clean=clean, delta=delta, method=method, eps=eps, norm=norm,
                     dim=math.prod(model.input_shape), n_bins=model.n_bins)
