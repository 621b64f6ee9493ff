r"""Glow (Kingma & Dhariwal 2018): a multi-scale flow of ActNorm -> invertible 1x1 conv -> affine coupling.

Architecture, for ``levels = L`` and ``steps = K``: the input ``y`` in ``[0, 1]^{C x H x W}`` is shifted to
``y - 0.5`` (log-det 0); then at each level ``l = 1..L``: squeeze ``(C, H, W) -> (4C, H/2, W/2)``, ``K`` steps
of [:class:`ActNorm`, :class:`InvConv1x1`, :class:`AffineCoupling` (channel-wise, ``s = sigmoid(h + 2)``,
zero-initialised last conv; its network :class:`~deepcheck.flows.layers.GlowNet` has no ActNorm in its
hidden layers, unlike the published one)], and, for ``l < L``, a :class:`Split` that factors out half the
channels with a learned conditional Gaussian prior; the last level's output goes through a
:class:`LearnedPrior`. ``H`` and ``W`` must be divisible by ``2^L``.

``forward(x)`` returns the ``L`` standardised latents (finest first, top last) and the total log-det, so
``log p(x) = sum_l log N(z_l; 0, I) + logdet`` (:mod:`deepcheck.flows.base`); ``inverse`` takes that list.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Flow, Latent, check_n_bins
from .layers import ActNorm, AffineCoupling, Chain, InvConv1x1, LearnedPrior, Split, Squeeze, check_image_shape


def glow_step(channels: int, hidden: int) -> Chain:
    """One step of flow: ActNorm, LU 1x1 convolution, Glow affine coupling."""
    return Chain(ActNorm(channels), InvConv1x1(channels),
                 AffineCoupling(channels, hidden, mask="channel", scale="sigmoid", net="glow"))


class Glow(Flow):
    """Glow on images of shape ``(C, H, W)`` in ``[0, 1]``.

    Parameters
    ----------
    shape : ``(C, H, W)``, ``H`` and ``W`` divisible by ``2 ** levels``.
    levels, steps, hidden : ``L``, ``K`` and the coupling networks' width.
    n_bins : quantisation levels of the data (for :meth:`bpd`).
    learn_top : learned constant prior at the top (else N(0, I)).
    """

    def __init__(self, shape: tuple[int, int, int], *, levels: int = 3, steps: int = 32, hidden: int = 512,
                 n_bins: int | None = 256, learn_top: bool = True) -> None:
        super().__init__()
        for name, v in (("levels", levels), ("steps", steps), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        c, h, w = check_image_shape(shape, 2**levels, f"Glow with levels={levels}")
        self.input_shape = (c, h, w)
        self.n_bins = check_n_bins(n_bins)
        self.config = {"model": "glow", "shape": [c, h, w], "n_bins": self.n_bins, "levels": levels,
                       "steps": steps, "hidden": hidden, "learn_top": bool(learn_top)}
        self.squeeze = Squeeze()
        self.flows = nn.ModuleList()
        self.splits = nn.ModuleList()
        self.latent_shapes = []
        for level in range(levels):
            c, h, w = 4 * c, h // 2, w // 2
            self.flows.append(Chain(*(glow_step(c, hidden) for _ in range(steps))))
            if level < levels - 1:
                split = Split(c, learned_prior=True)
                self.splits.append(split)
                self.latent_shapes.append((c - split.n_keep, h, w))
                c = split.n_keep
        self.top = LearnedPrior((c, h, w)) if learn_top else None
        self.latent_shapes.append((c, h, w))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Latents (finest first) and ``log|det d(latents)/dx|`` per sample."""
        h = self.check_input(x) - 0.5
        logdet = h.new_zeros(h.shape[0])
        zs = []
        for level, flow in enumerate(self.flows):
            h, _ = self.squeeze(h)
            h, ld = flow(h)
            logdet = logdet + ld
            if level < len(self.splits):
                h, z, ld = self.splits[level](h)
                zs.append(z)
                logdet = logdet + ld
        if self.top is not None:
            h, ld = self.top(h)
            logdet = logdet + ld
        zs.append(h)
        return zs, logdet

    def inverse(self, z: Latent) -> torch.Tensor:
        """Exact inverse of :meth:`forward`: takes the list it returned."""
        zs = self.latent_list(z)
        h = zs[-1] if self.top is None else self.top.inverse(zs[-1])
        for level in reversed(range(len(self.flows))):
            if level < len(self.splits):
                h = self.splits[level].inverse(h, zs[level])
            h = self.squeeze.inverse(self.flows[level].inverse(h))
        return h + 0.5
