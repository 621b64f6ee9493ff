"""Training a flow: maximum likelihood, adversarial, or hybrid (the objectives in :mod:`.loop`).

Layout: :mod:`.config` (the frozen :class:`TrainConfig`, validated once), :mod:`.steps` (inputs, the adversary
step, the objective, validation bits/dim), :mod:`.loop` (:func:`train`: resuming, the epoch loop,
checkpointing), :mod:`deepcheck.commands.train` (``python -m deepcheck train``).
"""

from __future__ import annotations

from .config import MODES, OPTIMIZERS, Adversary, TrainConfig
from .loop import EpochStats, TrainResult, train
from .steps import evaluate_bpd

__all__ = ["train", "TrainConfig", "TrainResult", "EpochStats", "MODES", "OPTIMIZERS", "Adversary", "evaluate_bpd"]
