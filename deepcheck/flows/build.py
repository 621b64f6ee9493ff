"""One factory for every flow, named configurations, and rebuilding a model from its saved config.

``build(model, config, shape, *, n_bins=256, seed=0, **overrides)`` with ``model`` in ``MODELS`` and
``config`` in ``CONFIGS``:

==========  =========================================  ==================================================
config      Glow                                       RealNVP
==========  =========================================  ==================================================
``tiny``    L=2, K=2, hidden 16 (8x8 images, tests)    2 scales, hidden 16, 1 residual block
``small``   L=2, K=4, hidden 64 (28x28, 2 CPU cores)   2 scales, hidden 32, 1 residual block
``paper``   L=3, K=32, hidden 512 (CIFAR-10, a GPU)    2 scales (one downscale), hidden 64, 8 blocks (CIFAR)
==========  =========================================  ==================================================

``"linear"`` ignores ``config`` (a :class:`LinearFlow` on vectors, ``shape = (d,)``, float64, ``A = I``,
``b = 0``); pass ``n_bins=None`` for continuous vector data. Parameters are initialised from ``seed``
inside :func:`torch.random.fork_rng`, so the global RNG is untouched and the same seed gives the same model.

Every model keeps ``model.config``: the constructor arguments plus ``"model"``, ``"preset"`` and ``"seed"``.
``build_from_config(model.config)`` rebuilds the same architecture (and the same initial weights); load a
checkpoint's ``state_dict`` into it (that includes each ActNorm's ``initialized`` flag).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .base import Flow
from .glow import Glow
from .linear import LinearFlow
from .realnvp import RealNVP

MODELS = ("linear", "realnvp", "glow")

CONFIGS: dict[str, dict[str, dict]] = {
    "glow": {
        "tiny": {"levels": 2, "steps": 2, "hidden": 16},
        "small": {"levels": 2, "steps": 4, "hidden": 64},
        "paper": {"levels": 3, "steps": 32, "hidden": 512},
    },
    "realnvp": {
        "tiny": {"scales": 2, "hidden": 16, "blocks": 1},
        "small": {"scales": 2, "hidden": 32, "blocks": 1},
        "paper": {"scales": 2, "hidden": 64, "blocks": 8},
    },
    "linear": {"tiny": {}, "small": {}, "paper": {}},
}

_CLASSES = {"linear": LinearFlow, "realnvp": RealNVP, "glow": Glow}


def build(model: str, config: str, shape: tuple[int, ...], *, n_bins: int | None = 256, seed: int = 0,
          **overrides: object) -> Flow:
    """A fresh flow ``model`` of the named ``config`` for data of per-sample ``shape``; ``overrides`` replace
    entries of the named config (e.g. ``hidden=32``)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if config not in CONFIGS[model]:
        raise ValueError(f"config must be one of {tuple(CONFIGS[model])}, got {config!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    shape = tuple(shape) if isinstance(shape, list | tuple) else shape
    kwargs = {**CONFIGS[model][config], **overrides}
    if model == "linear":
        if not isinstance(shape, tuple) or len(shape) != 1:
            raise ValueError(f"shape must be (d,) for the linear flow, got {shape!r}")
        unknown = set(kwargs) - {"dtype"}
        if unknown:
            raise TypeError(f"unexpected overrides for the linear flow: {sorted(unknown)}")
        net: Flow = LinearFlow(shape[0], n_bins=n_bins, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _CLASSES[model](shape, n_bins=n_bins, **kwargs)
    net.config = {**net.config, "preset": config, "seed": seed}
    return net


def build_from_config(cfg: Mapping[str, object]) -> Flow:
    """Rebuild the architecture recorded in ``model.config`` (weights as initialised from its seed)."""
    if not isinstance(cfg, Mapping) or "model" not in cfg:
        raise ValueError("cfg must be a mapping with a 'model' key, as in model.config")
    rest = dict(cfg)
    model = rest.pop("model")
    if model not in MODELS:
        raise ValueError(f"cfg['model'] must be one of {MODELS}, got {model!r}")
    if "shape" not in rest:
        raise ValueError("cfg must have a 'shape' key, as in model.config")
    preset = rest.pop("preset", "tiny")
    if preset not in CONFIGS[model]:
        raise ValueError(f"cfg['preset'] must be one of {tuple(CONFIGS[model])}, got {preset!r}")
    seed = rest.pop("seed", 0)
    shape = tuple(rest.pop("shape"))
    n_bins = rest.pop("n_bins", None)
    return build(model, preset, shape, n_bins=n_bins, seed=seed, **rest)
