"""The settings of a training run: the frozen :class:`TrainConfig`, validated once when it is built."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

MODES = ("mle", "adversarial", "hybrid")
OPTIMIZERS = ("adamax", "adam")
Adversary = Callable[[nn.Module, torch.Tensor], torch.Tensor]

# settings that change the computation: a resumed run must use the same ones
_RESUME_KEYS = ("mode", "batch_size", "lr", "optimizer", "warmup_steps", "clip_grad", "hybrid_lambda", "attack_eps",
                "attack_norm", "attack_steps", "seed", "n_train")
_ADVERSARIAL_KEYS = ("hybrid_lambda", "attack_eps", "attack_norm", "attack_steps")


@dataclass(frozen=True)
class TrainConfig:
    """Every keyword of :func:`deepcheck.train.train` except ``val_data`` (meanings there); checked on creation
    (``ValueError``/``TypeError`` naming the field)."""

    mode: str = "mle"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adamax"
    warmup_steps: int = 200
    clip_grad: float | None = 100.0
    hybrid_lambda: float = 0.5
    adversary: Adversary | None = None
    attack_eps: float = 8 / 255
    attack_norm: str = "linf"
    attack_steps: int = 10
    val_attack_limit: int = 256
    checkpoint: str | Path | None = None
    resume: bool = True
    seed: int = 0
    progress: bool = True
    device: str | torch.device = "cpu"
    distributed: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name, low in (("epochs", 0), ("batch_size", 1), ("warmup_steps", 0), ("attack_steps", 0), ("seed", 0),
                          ("val_attack_limit", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        for name in ("lr", "hybrid_lambda", "attack_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.attack_norm not in ("l2", "linf"):
            raise ValueError(f"attack_norm must be 'l2' or 'linf', got {self.attack_norm!r}")
        if self.hybrid_lambda > 1:
            raise ValueError(f"hybrid_lambda must be in [0, 1], got {self.hybrid_lambda}")
        clip = self.clip_grad
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, int | float) or not clip > 0):
            raise ValueError(f"clip_grad must be a number > 0 or None, got {clip!r}")
        if not isinstance(self.distributed, bool):
            raise TypeError(f"distributed must be a bool, got {type(self.distributed).__name__}")
        if self.adversary is not None and not callable(self.adversary):
            raise TypeError("adversary must be callable(model, x) -> x_adv")

    @property
    def adversarial(self) -> bool:
        return self.mode != "mle"

    def settings(self, n_train: int) -> dict:
        """The settings that change the computation (saved in the checkpoint; a resumed run must match them)."""
        return {"mode": self.mode, "batch_size": int(self.batch_size), "lr": float(self.lr),
                "optimizer": self.optimizer, "warmup_steps": int(self.warmup_steps),
                "clip_grad": None if self.clip_grad is None else float(self.clip_grad),
                "hybrid_lambda": float(self.hybrid_lambda), "attack_eps": float(self.attack_eps),
                "attack_norm": str(self.attack_norm), "attack_steps": int(self.attack_steps),
                "seed": int(self.seed), "n_train": n_train}

    def resume_keys(self) -> tuple[str, ...]:
        """The :meth:`settings` a resumed run must share (the attack's only for the adversarial modes)."""
        return _RESUME_KEYS if self.adversarial else tuple(k for k in _RESUME_KEYS if k not in _ADVERSARIAL_KEYS)
