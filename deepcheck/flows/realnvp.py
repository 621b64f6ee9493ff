r"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017): multi-scale affine couplings with checkerboard and
channel-wise masks.

Architecture, for ``scales = S``: the input ``y`` in ``[0, 1]^{C x H x W}`` is shifted to ``y - 0.5``
(log-det 0). Each scale but the last: 3 checkerboard couplings (alternating masks), squeeze
``(C, H, W) -> (4C, H/2, W/2)``, 3 channel-wise couplings (alternating halves), and a factor-out of half the
channels (a :class:`Split` whose latent is N(0, I), as published). The last scale: 4 checkerboard couplings.
Couplings are ``y_b = x_b exp(alpha tanh(h)) + t`` with a residual conditioner (:class:`ResNet`,
zero-initialised output). The published model puts batch normalisation after couplings; it makes ``log p``
of a sample depend on its batch, so :class:`ActNorm` (per-channel affine, data-initialised, batch-free at
use) takes its place after every coupling. ``H``, ``W`` must be divisible by ``2^(S-1)``, and the last scale
needs at least 2 pixels for its checkerboard.

Preprocessing. The published model first maps pixels through the logit transform
``y' = logit(alpha + (1 - alpha) y)`` (``alpha = 0.05``, Dinh et al. 2017, section 4.1), an unbounded input
with its own log-det term. That transform is **dropped here**: the only preprocessing is the shift ``y - 0.5``
(log-det 0), so the flow models the density of ``y - 0.5`` on the cube ``[-0.5, 0.5]^D`` directly (as
:class:`~deepcheck.flows.glow.Glow` does), and :meth:`~deepcheck.flows.base.Flow.bpd` contains no logit
Jacobian. Bits/dim are therefore comparable with Glow's here, not with the published RealNVP numbers
computed through the logit.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Flow, Latent, check_n_bins
from .layers import ActNorm, AffineCoupling, Chain, Split, Squeeze, check_image_shape


def _couplings(channels: int, hidden: int, blocks: int, mask: str, count: int) -> Chain:
    layers: list[nn.Module] = []
    for k in range(count):
        layers.append(AffineCoupling(channels, hidden, mask=mask, parity=k % 2, scale="tanh", net="resnet",
                                     blocks=blocks))
        layers.append(ActNorm(channels))
    return Chain(*layers)


class RealNVP(Flow):
    """RealNVP on images of shape ``(C, H, W)`` in ``[0, 1]``.

    Parameters
    ----------
    shape : ``(C, H, W)``, ``H`` and ``W`` divisible by ``2 ** (scales - 1)``.
    scales : number of scales ``S`` (``S - 1`` squeezes and factor-outs).
    hidden, blocks : width and number of residual blocks of each coupling's conditioner.
    n_bins : quantisation levels of the data (for :meth:`bpd`).
    """

    def __init__(self, shape: tuple[int, int, int], *, scales: int = 2, hidden: int = 64, blocks: int = 8,
                 n_bins: int | None = 256) -> None:
        super().__init__()
        for name, v, lo in (("scales", scales, 1), ("hidden", hidden, 1), ("blocks", blocks, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        c, h, w = check_image_shape(shape, 2 ** (scales - 1), f"RealNVP with scales={scales}")
        if (h >> (scales - 1)) * (w >> (scales - 1)) < 2:
            raise ValueError(f"RealNVP with scales={scales} leaves a 1x1 image at its last scale for shape "
                             f"{tuple(shape)}; use fewer scales or larger images")
        self.input_shape = (c, h, w)
        self.n_bins = check_n_bins(n_bins)
        self.config = {"model": "realnvp", "shape": [c, h, w], "n_bins": self.n_bins, "scales": scales,
                       "hidden": hidden, "blocks": blocks}
        self.squeeze = Squeeze()
        self.checker = nn.ModuleList()
        self.channel = nn.ModuleList()
        self.splits = nn.ModuleList()
        self.latent_shapes = []
        for _ in range(scales - 1):
            self.checker.append(_couplings(c, hidden, blocks, "checkerboard", 3))
            c, h, w = 4 * c, h // 2, w // 2
            self.channel.append(_couplings(c, hidden, blocks, "channel", 3))
            split = Split(c, learned_prior=False)
            self.splits.append(split)
            self.latent_shapes.append((c - split.n_keep, h, w))
            c = split.n_keep
        self.final = _couplings(c, hidden, blocks, "checkerboard", 4)
        self.latent_shapes.append((c, h, w))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Latents (finest first) and ``log|det d(latents)/dx|`` per sample."""
        h = self.check_input(x) - 0.5
        logdet = h.new_zeros(h.shape[0])
        zs = []
        for checker, channel, split in zip(self.checker, self.channel, self.splits):
            h, ld1 = checker(h)
            h, _ = self.squeeze(h)
            h, ld2 = channel(h)
            h, z, ld3 = split(h)
            zs.append(z)
            logdet = logdet + ld1 + ld2 + ld3
        h, ld = self.final(h)
        zs.append(h)
        return zs, logdet + ld

    def inverse(self, z: Latent) -> torch.Tensor:
        """Exact inverse of :meth:`forward`: takes the list it returned."""
        zs = self.latent_list(z)
        h = self.final.inverse(zs[-1])
        for i in reversed(range(len(self.splits))):
            h = self.splits[i].inverse(h, zs[i])
            h = self.checker[i].inverse(self.squeeze.inverse(self.channel[i].inverse(h)))
        return h + 0.5
