"""One training step's parts: the inputs (dequantised or mid-bin batches), the adversary step, the objective,
and the validation bits/dim (through :func:`deepcheck.evaluate.bpd_of`, the one eval-mode bits/dim)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..attacks import attack_mode, pgd
from ..data import ImageData, as_pixels
from ..distributed import sample_seeds as _sample_seeds
from ..evaluate import bpd_of
from ..flows.base import parameter_dtype
from .config import Adversary, TrainConfig

_TAG_EPOCH, _TAG_STEP, _TAG_VAL, _TAG_DEQ, _TAG_ADV = 1, 2, 3, 4, 5


def _derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream ``(seed, *keys)``, hashed by numpy's ``SeedSequence`` (independent streams)."""
    words = np.random.SeedSequence([seed, *keys]).generate_state(2)
    return ((int(words[0]) << 32) | int(words[1])) & (2**63 - 1)


def _default_adversary(eps: float, norm: str, steps: int, seed: int, clamp: tuple[float, float] | None,
                       sample_seeds: list[int] | None = None) -> Adversary:

    def adversary(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return pgd(model, x, eps, norm=norm, likelihood="decrease", steps=steps, restarts=0, clamp=clamp, seed=seed,
                   sample_seeds=sample_seeds)

    return adversary


def make_adversary(cfg: TrainConfig, clamp: tuple[float, float] | None, *keys: int,
                   sample_seeds: list[int] | None = None) -> Adversary:
    """``cfg.adversary``, or the default PGD adversary seeded by ``(cfg.seed, *keys)``; with ``sample_seeds``
    (one per sample of the batch it will see) its kicks are drawn per sample instead."""
    if cfg.adversary is not None:
        return cfg.adversary
    return _default_adversary(cfg.attack_eps, cfg.attack_norm, cfg.attack_steps,
                              _derive_seed(cfg.seed, *keys) % 2**31, clamp, sample_seeds)


def sample_keys(cfg: TrainConfig, tag: int, epoch: int, idx: torch.Tensor) -> list[int]:
    """The per-sample seeds of stream ``tag`` in ``epoch`` for the data indices ``idx``: a function of
    ``(cfg.seed, tag, epoch, index)`` only, so they do not depend on the rank or the batch (R-independent)."""
    return _sample_seeds(_derive_seed(cfg.seed, tag, epoch), idx)


def _attack(adversary: Adversary, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with attack_mode(model):
        x_adv = adversary(model, x.detach())
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        raise ValueError(f"adversary must return a tensor of the input's shape {tuple(x.shape)}, "
                         f"got {getattr(x_adv, 'shape', type(x_adv).__name__)}")
    return x_adv.detach().to(x.dtype)


def _as_inputs(data: object, name: str, model: nn.Module) -> ImageData | torch.Tensor:
    if isinstance(data, ImageData):
        model_bins = getattr(model, "n_bins", None)
        if model_bins is not None and model_bins != data.n_bins:
            raise ValueError(f"{name} has n_bins={data.n_bins} but the model was built with n_bins={model_bins}")
        shape = tuple(data.shape)
    elif isinstance(data, torch.Tensor):
        if not data.is_floating_point():
            raise TypeError(f"{name} must be an ImageData or a floating-point tensor, got dtype {data.dtype}")
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty batch (n, ...), got shape {tuple(data.shape)}")
        if not torch.isfinite(data).all():
            raise ValueError(f"{name} contains non-finite values")
        shape = tuple(data.shape[1:])
    else:
        raise TypeError(f"{name} must be an ImageData or a float tensor, got {type(data).__name__}")
    want = getattr(model, "input_shape", None)
    if want is not None and tuple(want) != shape:
        raise ValueError(f"{name} has per-sample shape {shape} but the model expects {tuple(want)}")
    return data


def _batch(data: ImageData | torch.Tensor, idx: torch.Tensor, model: nn.Module,
           seeds: list[int] | None) -> torch.Tensor:
    """Training batch ``idx``: dequantised pixels ``(k + u) / n_bins`` of an ImageData with sample ``j``'s noise
    ``u`` drawn from a generator seeded ``seeds[j]`` (:func:`sample_keys`), else the model's pixels
    (:func:`deepcheck.data.as_pixels`)."""
    part = data[idx]
    if seeds is not None and isinstance(part, ImageData):
        dtype = parameter_dtype(model)
        u = [torch.rand(part.shape, generator=torch.Generator().manual_seed(s), dtype=dtype) for s in seeds]
        noise = torch.stack(u) if u else torch.zeros((0, *part.shape), dtype=dtype)
        return as_pixels((part.levels.to(dtype) + noise) / part.n_bins, like=model)
    return as_pixels(part, like=model)


def batch_objective(model: nn.Module, x: torch.Tensor, cfg: TrainConfig, clamp: tuple[float, float] | None,
                    step: int, *, bpd: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    sample_seeds: list[int] | None = None) -> torch.Tensor:
    """Per-sample training objective (bits/dim) of batch ``x`` at step ``step`` (1-based), in train mode:
    ``bpd(x)`` (mle), ``bpd(x_adv)`` (adversarial) or ``(1 - lam) bpd(x) + lam bpd(x_adv)`` (hybrid), with
    ``x_adv`` from the adversary run in attack mode (eval mode, no parameter gradients). ``bpd`` replaces
    ``model.bpd`` for the differentiated pass (the DDP-wrapped model); ``sample_seeds`` key the adversary's
    random draws per sample (:func:`make_adversary`)."""
    bpd = model.bpd if bpd is None else bpd
    if not cfg.adversarial:
        return bpd(x)
    if step == 1:  # data-dependent initialisation (ActNorm) on clean data, in train mode
        with torch.no_grad():
            model.bpd(x)
    x_adv = _attack(make_adversary(cfg, clamp, _TAG_STEP, step, sample_seeds=sample_seeds), model, x)
    model.train()
    if cfg.mode == "adversarial":
        return bpd(x_adv)
    lam = float(cfg.hybrid_lambda)
    both = bpd(torch.cat([x, x_adv]))
    return (1.0 - lam) * both[: len(x)] + lam * both[len(x):]


def evaluate_bpd(model: nn.Module, data: ImageData | torch.Tensor, *, batch_size: int = 256,
                 adversary: Adversary | None = None, device: str | torch.device = "cpu") -> float:
    """Mean bits/dim of ``model`` on ``data`` (mid-bin pixels for an ImageData), in eval mode (each module's
    mode restored), by :func:`deepcheck.evaluate.bpd_of`; with ``adversary``, on ``adversary(model, x)``
    (in batches of ``batch_size``) instead: the adversarial bits/dim."""
    data = _as_inputs(data, "data", model)
    x = as_pixels(data, like=model).to(torch.device(device))
    if adversary is not None:
        x = torch.cat([_attack(adversary, model, x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return float(bpd_of(model, x, batch_size=batch_size).mean())
