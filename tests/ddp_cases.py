"""The tiny runs shared by ``tests/test_distributed.py``, its spawned workers and ``tests/ddp_train_script.py``:
a tiny GLOW on 37 digits (global batch 8: five batches an epoch, the last one 5 = 3 + 2 on two ranks)."""

from __future__ import annotations

import torch

from deepcheck import data as data_mod
from deepcheck.flows import build

N_TRAIN = 37
BATCH = 8


def case_data(n: int = N_TRAIN) -> data_mod.ImageData:
    return data_mod.load("digits", "train", seed=0, limit=n)


def build_case(mode: str, dtype: torch.dtype) -> tuple[torch.nn.Module, dict]:
    """A fresh tiny GLOW (seed 0) in ``dtype`` and the training keywords of the case (without ``epochs``)."""
    model = build("glow", "tiny", (1, 8, 8), n_bins=17, seed=0).to(dtype)
    kw = {"mode": mode, "batch_size": BATCH, "warmup_steps": 5, "seed": 3, "progress": False,
          "attack_eps": 0.05, "attack_norm": "linf", "attack_steps": 3}
    return model, kw
