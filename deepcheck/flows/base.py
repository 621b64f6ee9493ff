r"""What every flow in :mod:`deepcheck.flows` shares: the standard-normal prior, ``log_prob``, ``bpd`` and ``sample``.

A flow is a bijection ``f`` from data ``x`` to latents ``z = f(x)`` whose latents are *standard normal*
(learned priors, e.g. Glow's split priors, are written as conditional affine standardisations inside ``f``,
so their log-dets are part of ``f``'s). Change of variables (docs/theory.md, "Conventions of the deep part"):

.. math::  \log p(x) = \sum_j \log \mathcal N(z_j; 0, 1) + \log\lvert\det \partial f / \partial x\rvert .

``forward(x) -> (z, logdet)`` returns ``f(x)`` (one tensor, or a list with one tensor per scale) and the
per-sample log-det ``(B,)``; ``inverse(z)`` is exact. Bits per dimension of a dequantised model of
``y = (k + u) / n_bins`` in ``[0, 1]^D``:

.. math::  \mathrm{bpd}(y) = \frac{-\log p(y) + D \log n_{bins}}{D \ln 2},

and with ``n_bins = None`` (continuous vector data, e.g. the :class:`~deepcheck.flows.linear.LinearFlow`)
simply ``-log p(y) / (D ln 2)``: nats per dimension converted to bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

Latent = torch.Tensor | list[torch.Tensor]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``sum_j log N(z_j; 0, 1)`` over all but the batch dimension, shape ``(B,)``."""
    return -(0.5 * z.pow(2) + _HALF_LOG_2PI).reshape(z.shape[0], -1).sum(dim=1)


def bits_per_dim(log_prob: torch.Tensor, dim: int, n_bins: int | None) -> torch.Tensor:
    """``(-log_prob + D log n_bins) / (D ln 2)``; without the ``D log n_bins`` term when ``n_bins`` is None."""
    nats = -log_prob
    if n_bins is not None:
        nats = nats + dim * math.log(n_bins)
    return nats / (dim * math.log(2.0))


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of ``model``'s parameters (the default dtype for a model without any): inputs to an
    attack or a training step are cast to it."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())


def parameter_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def check_n_bins(n_bins: object) -> int | None:
    """``None`` or an int ``>= 2`` (the number of quantisation levels of the data)."""
    if n_bins is None:
        return None
    if isinstance(n_bins, bool) or not isinstance(n_bins, int):
        raise TypeError(f"n_bins must be an int or None, got {type(n_bins).__name__}")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    return n_bins


def check_temperature(temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"temperature must be a real number, got {type(temperature).__name__}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    return float(temperature)


def check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return n


class Flow(nn.Module):
    """Base class: subclasses define ``forward``, ``inverse``, ``input_shape``, ``n_bins`` and ``latent_shapes``.

    ``latent_shapes`` lists the per-sample shape of each latent tensor in the order ``forward`` returns them
    (a single-tensor flow has one entry and returns a tensor, not a list).
    """

    input_shape: tuple[int, ...]
    n_bins: int | None
    latent_shapes: list[tuple[int, ...]]
    config: dict

    @property
    def dim(self) -> int:
        """``D``, the number of data dimensions."""
        return math.prod(self.input_shape)

    def check_input(self, x: object, name: str = "x") -> torch.Tensor:
        """``x`` must be a floating tensor of shape ``(B, *input_shape)`` with ``B >= 1``, of the parameters' dtype."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        want = tuple(self.input_shape)
        if x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want or x.shape[0] < 1:
            raise ValueError(
                f"{name} must have shape (B, {', '.join(map(str, want))}) for this {type(self).__name__}, "
                f"got {tuple(x.shape)}"
            )
        p = next(self.parameters(), None)
        if p is not None and x.dtype != p.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but the model's parameters are {p.dtype}: convert one of "
                            f"them (e.g. model.to({x.dtype}) or x.to({p.dtype}))")
        return x

    def latent_list(self, z: Latent) -> list[torch.Tensor]:
        """``z`` as a list matching :attr:`latent_shapes`, with a clear error otherwise."""
        zs = [z] if isinstance(z, torch.Tensor) else list(z) if isinstance(z, Sequence) else None
        if zs is None or not all(isinstance(t, torch.Tensor) for t in zs):
            raise TypeError(f"z must be a tensor or a list of tensors, got {type(z).__name__}")
        if len(zs) != len(self.latent_shapes) or any(
            t.dim() != len(s) + 1 or tuple(t.shape[1:]) != tuple(s) for t, s in zip(zs, self.latent_shapes)
        ):
            got = [tuple(t.shape) for t in zs]
            raise ValueError(f"z must be latents of per-sample shapes {self.latent_shapes}, got shapes {got}")
        if len({t.shape[0] for t in zs}) != 1:
            raise ValueError("all latents in z must have the same batch size")
        return zs

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density in nats per sample, shape ``(B,)``, differentiable in ``x`` and the parameters."""
        z, logdet = self(x)
        zs = [z] if isinstance(z, torch.Tensor) else z
        return sum(standard_normal_log_prob(t) for t in zs) + logdet

    def bpd(self, x: torch.Tensor) -> torch.Tensor:
        """Bits per dimension, shape ``(B,)`` (module docstring)."""
        return bits_per_dim(self.log_prob(x), self.dim, self.n_bins)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples ``f^{-1}(T z)``, ``z ~ N(0, I)`` drawn from ``generator`` (temperature ``T``)."""
        n = check_n(n)
        temperature = check_temperature(temperature)
        p = next(self.parameters())
        where = generator.device if generator is not None else p.device
        zs = [
            temperature * torch.randn((n, *s), generator=generator, dtype=p.dtype, device=where).to(p.device)
            for s in self.latent_shapes
        ]
        with torch.no_grad():
            return self.inverse(zs[0] if len(zs) == 1 else zs)
