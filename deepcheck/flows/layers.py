r"""Invertible layers for image flows, each with an exact inverse and an exact log-det (docs/theory.md, deep part).

Every bijective layer maps ``x -> (y, logdet)`` with ``logdet = log|det dy/dx|`` per sample, shape ``(B,)``,
and has ``inverse(y) -> x``. Tensors are ``(B, C, H, W)``.

* :class:`ActNorm` (Glow): ``y = (x + b) * exp(logs)`` per channel, log-det ``H W sum(logs)``; data-dependent
  initialisation (zero mean, unit variance per channel on the first batch it sees), its flag a buffer
  ``initialized`` saved in the state dict, so a loaded model never re-initialises.
* :class:`InvConv1x1` (Glow): ``y = W x`` at every pixel with ``W = P L (U + diag(sign(s) exp(log_s)))``
  (LU parametrisation, ``P`` fixed), log-det ``H W sum(log_s)`` = ``H W log|det W|``.
* :class:`AffineCoupling`: ``y_b = x_b * s(x_a) + t(x_a)``, ``y_a = x_a``, log-det ``sum log s``. The split
  ``(a, b)`` is channel-wise (Glow, RealNVP) or a spatial checkerboard (RealNVP). The scale is bounded:
  ``s = sigmoid(h + 2)`` (Glow; here ``y_b = (x_b + t) * s``) or ``s = exp(alpha tanh(h))`` (RealNVP).
  The conditioner's last convolution is zero-initialised, so a fresh coupling is the identity (Glow) or
  a pure scale by ``sigmoid(2)``; the conditioner has no BatchNorm (it would make ``log p`` batch-dependent).
* :class:`Squeeze`: ``(C, H, W) -> (4C, H/2, W/2)``, a permutation (log-det 0).
* :class:`Split`: factor out half the channels. With a learned prior (Glow) the factored-out half ``z`` is
  standardised by a conditional Gaussian from the kept half ``h``: ``eps = (z - mu(h)) exp(-logs(h))``,
  log-det ``-sum logs(h)`` (a triangular Jacobian), so all latents are N(0, I); zero-initialised.
* :class:`LearnedPrior`: the same standardisation with a learned constant mean and log-scale (Glow's top).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _sum_per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1)


def _check_channels(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


# ---------------------------------------------------------------------------------------------- ActNorm
class ActNorm(nn.Module):
    """Per-channel affine ``y = (x + bias) * exp(logs)`` with data-dependent init (see module docstring).

    On the first ``forward`` while ``initialized`` is False, ``bias = -mean`` and ``logs = -log(std + eps)``
    of that batch (per channel, over batch and pixels) are set under ``no_grad`` and the flag is raised.
    This happens in train and eval mode alike; ``inverse`` never initialises, so sampling from a flow that
    has never seen data uses identity ActNorms.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        _check_channels("channels", channels)
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set ``bias``, ``logs`` from the batch ``x`` so that the output has zero mean and unit std per channel."""
        x = x.detach()
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.logs.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.initialized):
            self.initialize(x)
        y = (x + self.bias) * torch.exp(self.logs)
        logdet = x.shape[2] * x.shape[3] * self.logs.sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.logs) - self.bias


# ---------------------------------------------------------------------------------------------- 1x1 conv
class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution, LU-parametrised; initialised at a random rotation (torch's global RNG)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        _check_channels("channels", channels)
        q = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())

    def weight(self) -> torch.Tensor:
        """``W = P L U`` with unit-diagonal ``L`` and ``diag(U) = sign_s * exp(log_s)``."""
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weight()
        y = F.conv2d(x, w[:, :, None, None])
        logdet = x.shape[2] * x.shape[3] * self.log_s.sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        w_inv = torch.linalg.inv(self.weight())
        return F.conv2d(y, w_inv[:, :, None, None])


# ---------------------------------------------------------------------------------------------- conditioners
class ZeroConv2d(nn.Module):
    """3x3 convolution initialised at zero, output scaled by ``exp(3 logscale)`` (Glow's ``Conv2dZeros``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logscale = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(3.0 * self.logscale)


class GlowNet(nn.Module):
    """Glow's coupling network, without its normalisation: conv3x3 -> ReLU -> conv1x1 -> ReLU -> ZeroConv3x3.

    The published network (Kingma & Dhariwal 2018) puts an :class:`ActNorm` after each of the two hidden
    convolutions (``conv3x3 -> ActNorm -> ReLU -> conv1x1 -> ActNorm -> ReLU -> ZeroConv3x3``) and gives those
    convolutions no bias. Here there is **no ActNorm in the hidden layers**: the hidden convolutions have
    ordinary biases instead, and the only data-dependent initialisation of a :class:`~deepcheck.flows.glow.Glow`
    is that of the ActNorm layers of its flow steps. The output layer is the zero-initialised
    :class:`ZeroConv2d`, as published."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            ZeroConv2d(hidden, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResNet(nn.Module):
    """RealNVP's coupling network: conv3x3 in, ``blocks`` residual blocks ``x + conv(relu(conv(relu(x))))``,
    ReLU, ZeroConv3x3 out. Plain convolutions: no BatchNorm (batch-dependent ``log p``), no weight norm (the
    zero-initialised output, bounded scale and ActNorm between couplings already keep training stable)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1))
            for _ in range(blocks)
        )
        self.out = ZeroConv2d(hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(F.relu(h))


# ---------------------------------------------------------------------------------------------- coupling
MASKS = ("channel", "checkerboard")
SCALES = ("sigmoid", "tanh")


def checkerboard(height: int, width: int, parity: int, *, like: torch.Tensor) -> torch.Tensor:
    """``m[i, j] = 1`` where ``(i + j) % 2 == parity``, shape ``(1, 1, H, W)``, dtype/device of ``like``."""
    i = torch.arange(height, device=like.device)[:, None]
    j = torch.arange(width, device=like.device)[None, :]
    return ((i + j) % 2 == parity).to(like.dtype)[None, None]


class AffineCoupling(nn.Module):
    """Affine coupling ``y_b = x_b * s + t`` (``(x_b + t) * s`` for the sigmoid scale), ``(s, t) = NN(x_a)``.

    Parameters
    ----------
    channels : ``C``.
    hidden : width of the conditioner.
    mask : ``"channel"`` (``x_a`` = one half of the channels, ``parity`` 0: the first ``C // 2``, 1: the last)
        or ``"checkerboard"`` (``x_a`` = the pixels with ``(i + j) % 2 == parity``; the conditioner sees
        ``x * m`` and its outputs are used only where ``m = 0``).
    scale : ``"sigmoid"``, ``s = sigmoid(h + 2)`` (Glow), or ``"tanh"``, ``s = exp(alpha tanh(h))`` with a
        learned per-channel ``alpha`` (RealNVP).
    net : ``"glow"`` (:class:`GlowNet`) or ``"resnet"`` (:class:`ResNet` with ``blocks`` blocks).
    """

    def __init__(self, channels: int, hidden: int, *, mask: str = "channel", parity: int = 0,
                 scale: str = "sigmoid", net: str = "glow", blocks: int = 1) -> None:
        super().__init__()
        _check_channels("channels", channels)
        _check_channels("hidden", hidden)
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity!r}")
        if mask == "channel" and channels < 2:
            raise ValueError(f"a channel-wise coupling needs channels >= 2, got {channels}")
        self.mask, self.parity, self.scale = mask, parity, scale
        if mask == "channel":
            first = channels // 2
            self.n_a = first if parity == 0 else channels - first
            n_in, n_out = self.n_a, channels - self.n_a
        else:
            n_in, n_out = channels, channels
        if net == "glow":
            self.net = GlowNet(n_in, 2 * n_out, hidden)
        elif net == "resnet":
            self.net = ResNet(n_in, 2 * n_out, hidden, _check_channels("blocks", blocks, 0))
        else:
            raise ValueError(f"net must be 'glow' or 'resnet', got {net!r}")
        if scale == "tanh":
            self.alpha = nn.Parameter(torch.ones(1, n_out, 1, 1))

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.parity == 0:
            return x[:, : self.n_a], x[:, self.n_a:]
        return x[:, x.shape[1] - self.n_a:], x[:, : x.shape[1] - self.n_a]

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b] if self.parity == 0 else [b, a], dim=1)

    def _scale_shift(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log s, t)`` from the conditioner input."""
        h = self.net(cond)
        shift, raw = h[:, 0::2], h[:, 1::2]
        log_s = F.logsigmoid(raw + 2.0) if self.scale == "sigmoid" else self.alpha * torch.tanh(raw)
        return log_s, shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "channel":
            a, b = self._split(x)
            log_s, t = self._scale_shift(a)
            yb = (b + t) * torch.exp(log_s) if self.scale == "sigmoid" else b * torch.exp(log_s) + t
            return self._join(a, yb), _sum_per_sample(log_s)
        m = checkerboard(x.shape[2], x.shape[3], self.parity, like=x)
        log_s, t = self._scale_shift(x * m)
        log_s, t = log_s * (1 - m), t * (1 - m)
        y = x * torch.exp(log_s) + t if self.scale == "tanh" else (x + t) * torch.exp(log_s)
        return y, _sum_per_sample(log_s)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.mask == "channel":
            a, yb = self._split(y)
            log_s, t = self._scale_shift(a)
            b = yb * torch.exp(-log_s) - t if self.scale == "sigmoid" else (yb - t) * torch.exp(-log_s)
            return self._join(a, b)
        m = checkerboard(y.shape[2], y.shape[3], self.parity, like=y)
        log_s, t = self._scale_shift(y * m)
        log_s, t = log_s * (1 - m), t * (1 - m)
        return (y - t) * torch.exp(-log_s) if self.scale == "tanh" else y * torch.exp(-log_s) - t


# ---------------------------------------------------------------------------------------------- reshaping
class Squeeze(nn.Module):
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: each 2x2 block of a channel becomes 4 channels (log-det 0)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs even height and width, got {h}x{w}")
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return y, x.new_zeros(b)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        b, c4, h, w = y.shape
        c = c4 // 4
        return y.reshape(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h, 2 * w)


class Split(nn.Module):
    """Factor out the last ``C - C // 2`` channels ``z``; keep the first ``C // 2`` channels ``h``.

    ``learned_prior=True`` (Glow): ``eps = (z - mu(h)) * exp(-logs(h))`` with ``(mu, logs) = ZeroConv(h)``,
    log-det ``-sum logs(h)``. ``learned_prior=False`` (RealNVP): ``eps = z``, log-det 0.
    ``forward(x) -> (h, eps, logdet)``; ``inverse(h, eps) -> x``.
    """

    def __init__(self, channels: int, learned_prior: bool = True) -> None:
        super().__init__()
        _check_channels("channels", channels, 2)
        self.n_keep = channels // 2
        n_out = channels - self.n_keep
        self.prior = ZeroConv2d(self.n_keep, 2 * n_out) if learned_prior else None

    def _mean_logs(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.prior(h)
        return p[:, 0::2], p[:, 1::2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, z = x[:, : self.n_keep], x[:, self.n_keep:]
        if self.prior is None:
            return h, z, x.new_zeros(x.shape[0])
        mean, logs = self._mean_logs(h)
        return h, (z - mean) * torch.exp(-logs), -_sum_per_sample(logs)

    def inverse(self, h: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if self.prior is None:
            return torch.cat([h, eps], dim=1)
        mean, logs = self._mean_logs(h)
        return torch.cat([h, eps * torch.exp(logs) + mean], dim=1)


class LearnedPrior(nn.Module):
    """``eps = (z - mean) * exp(-logs)`` with learned constant ``mean``, ``logs`` of shape ``(C, H, W)``,
    zero-initialised (then ``z`` itself is N(0, I)); log-det ``-sum logs``."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(1, *shape))
        self.logs = nn.Parameter(torch.zeros(1, *shape))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (z - self.mean) * torch.exp(-self.logs), (-self.logs.sum()).expand(z.shape[0])

    def inverse(self, eps: torch.Tensor) -> torch.Tensor:
        return eps * torch.exp(self.logs) + self.mean


class Chain(nn.Module):
    """Layers applied in order; log-dets add up; ``inverse`` runs them backwards."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


def check_image_shape(shape: object, factor: int, what: str) -> tuple[int, int, int]:
    """``shape`` as ``(C, H, W)`` of positive ints with ``H`` and ``W`` divisible by ``factor``."""
    if not isinstance(shape, tuple | list) or len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"shape must hold positive ints, got {shape!r}")
    c, h, w = shape
    if h % factor or w % factor:
        raise ValueError(
            f"{what} squeezes the image by {factor} in height and width, so H and W must be divisible by "
            f"{factor}; got shape {tuple(shape)} (pad or crop the images, or use fewer levels/scales)"
        )
    return c, h, w
