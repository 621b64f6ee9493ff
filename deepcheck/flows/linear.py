r"""The torch twin of :class:`linflow.LinearFlow`: ``x = A z + b``, ``z ~ N(0, I_d)`` (docs/theory.md, Notation).

``forward`` maps data to latent, ``z = A^{-1} (x - b)`` (an LU solve, no explicit inverse), with log-det
``log|det dz/dx| = -log|det A|``; so

.. math::  \log p(x) = -\tfrac12 \lVert A^{-1}(x-b) \rVert^2 - \log\lvert\det A\rvert - \tfrac d2 \log 2\pi
           = -\mathrm{NLL}(x),

the NLL of ``N(b, A A^T)`` exactly as :meth:`linflow.LinearFlow.nll` states it, and
``grad_x log p(x) = -P (x - mu)`` with ``P = (A A^T)^{-1}``. ``A`` and ``b`` are plain trainable parameters.
The data are vectors ``(B, d)``; there is no ``y - 0.5`` preprocessing (the offset ``b`` absorbs it) and
``n_bins`` is None by default, so :meth:`bpd` is nats per dimension divided by ``ln 2``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Flow, Latent, check_n_bins


class LinearFlow(Flow):
    """``x = A z + b`` as an ``nn.Module`` on vectors ``(B, d)``; starts at ``A = I``, ``b = 0`` (N(0, I)).

    Parameters
    ----------
    dim : ``d``.
    n_bins : number of quantisation levels of the data, or None (default) for continuous data.
    dtype : parameter dtype (float64 by default: this model is the exact bridge to :mod:`linflow`).
    """

    def __init__(self, dim: int, *, n_bins: int | None = None, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.input_shape = (dim,)
        self.latent_shapes = [(dim,)]
        self.n_bins = check_n_bins(n_bins)
        self.A = nn.Parameter(torch.eye(dim, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(dim, dtype=dtype))
        self.config = {"model": "linear", "shape": [dim], "n_bins": self.n_bins}

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_linflow(cls, flow: object, dtype: torch.dtype = torch.float64, *, n_bins: int | None = None
                     ) -> LinearFlow:
        """A module with the same ``A`` and ``b`` as ``flow`` (a :class:`linflow.LinearFlow`)."""
        from linflow import LinearFlow as NumpyLinearFlow

        if not isinstance(flow, NumpyLinearFlow):
            raise TypeError(f"flow must be a linflow.LinearFlow, got {type(flow).__name__}")
        model = cls(flow.dim, n_bins=n_bins, dtype=dtype)
        with torch.no_grad():
            model.A.copy_(torch.tensor(np.array(flow.A), dtype=dtype))
            model.b.copy_(torch.tensor(np.array(flow.b), dtype=dtype))
        return model

    def to_linflow(self) -> object:
        """The current ``A``, ``b`` as an (immutable, float64) :class:`linflow.LinearFlow`."""
        from linflow import LinearFlow as NumpyLinearFlow

        A = self.A.detach().to("cpu", torch.float64).numpy()
        b = self.b.detach().to("cpu", torch.float64).numpy()
        return NumpyLinearFlow(A, b)

    # ------------------------------------------------------------------ flow maps
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = A^{-1}(x - b)`` and ``logdet = -log|det A|`` per sample, shape ``(B,)``."""
        x = self.check_input(x)
        z = torch.linalg.solve(self.A, (x - self.b).T).T
        logdet = -torch.linalg.slogdet(self.A).logabsdet
        return z, logdet.expand(x.shape[0])

    def inverse(self, z: Latent) -> torch.Tensor:
        """``x = A z + b``."""
        (z,) = self.latent_list(z)
        return z @ self.A.T + self.b

    # ------------------------------------------------------------------ Gaussian view
    @property
    def mean(self) -> torch.Tensor:
        """``mu = b``."""
        return self.b

    @property
    def cov(self) -> torch.Tensor:
        """``Sigma = A A^T``."""
        return self.A @ self.A.T

    def extra_repr(self) -> str:
        return f"dim={self.input_shape[0]}, n_bins={self.n_bins}, dtype={self.A.dtype}"
