"""Small torch models shared by the deep tests."""

from __future__ import annotations

import torch
from torch import nn

from deepcheck.flows import build


@torch.no_grad()
def perturb_parameters(model: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Add ``scale * N(0, 1)`` noise (from ``seed``) to every floating parameter of ``model``, in place.

    A freshly built flow has zero-initialised last layers and is close to the identity, where a wrong
    log-det or inverse can still pass; tests perturb every parameter first (docs/theory.md, Conventions of the deep
    part). Moved here from ``deepcheck.flows.base``: it is a test helper. Returns ``model``.
    """
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.is_floating_point():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device))
    return model


def randomised_tiny_glow(n_bins: int = 256) -> torch.nn.Module:
    """A tiny GLOW on 1x8x8 images, ActNorm initialised on data, then every weight perturbed (a fresh flow is
    close to the identity and would make tests of attacks trivial). In eval mode."""
    net = build("glow", "tiny", (1, 8, 8), n_bins=n_bins, seed=0)
    with torch.no_grad():
        net.train()
        net.log_prob(torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)))
        perturb_parameters(net, scale=0.05, seed=2)
    net.eval()
    return net
