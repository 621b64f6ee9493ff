"""Small torch models shared by the deep tests."""

from __future__ import annotations

import torch

from deepcheck.flows import build, perturb_parameters


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
