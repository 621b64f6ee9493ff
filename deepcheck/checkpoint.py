"""Checkpoints that are written atomically and read back with clear errors (docs/theory.md).

A checkpoint is one ``torch.save`` file holding

* ``model_state`` (the ``state_dict``, including buffers such as ActNorm's init flag) and ``model_config``
  (the model's ``config`` dict, enough for :func:`rebuild_model` to construct an identical module);
* ``optimizer_state`` / ``scheduler_state`` (their ``state_dict``\\ s) when given;
* ``state``: any further keyword values (epoch, step, history, RNG states, settings), plain Python or tensors.

Atomicity (:func:`deepcheck.fileio.atomic_write_with`): a crash or an exception at any point leaves either the
old complete file or the new complete file, and the temporary file is removed on an exception.
Loading uses ``weights_only=True``: no
arbitrary code runs from a checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .fileio import atomic_write_with

__all__ = ["save_checkpoint", "load_checkpoint", "rebuild_model", "Checkpoint", "CheckpointError",
           "CheckpointNotFoundError"]

FORMAT = "deepcheck-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that exists but cannot be used (corrupt, truncated, not a checkpoint, mismatched)."""


class CheckpointNotFoundError(FileNotFoundError, ValueError):
    """No checkpoint at the path (a ``FileNotFoundError`` and, like every checkpoint error, a ``ValueError``)."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read: the (re)built or given model and everything that was saved with it."""

    path: Path
    model: nn.Module | None
    model_config: dict | None
    optimizer_state: dict | None
    scheduler_state: dict | None
    state: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                    scheduler: Any = None, **state: Any) -> Path:
    """Write ``model`` (state and ``config``), ``optimizer``, ``scheduler`` and ``state`` to ``path`` atomically.

    Returns the path. The parent directory is created if needed. Raises ``TypeError`` for a ``model`` that is
    not an ``nn.Module``; any error while writing propagates after the temporary file is removed, and the
    previous file at ``path`` (if any) is left untouched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    if scheduler is not None and not hasattr(scheduler, "state_dict"):
        raise TypeError(f"scheduler must have a state_dict() method, got {type(scheduler).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path {path} is a directory; give a file name such as {path / 'checkpoint.pt'}")
    config = getattr(model, "config", None)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_config": dict(config) if isinstance(config, dict) else None,
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "state": state,
    }
    return atomic_write_with(path, lambda f: torch.save(payload, f))


def _float_dtype(state_dict: dict) -> torch.dtype | None:
    for value in state_dict.values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.dtype
    return None


def rebuild_model(config: dict) -> nn.Module:
    """A fresh model from a saved ``config`` dict (``{"model": "linear"|"realnvp"|"glow", ...}``).

    Uses :func:`deepcheck.flows.build_from_config` when the flows package provides it, else builds the linear
    flow directly or calls :func:`deepcheck.flows.build` with ``config``'s ``model``, ``config``, ``shape``,
    ``n_bins`` and ``overrides``.
    """
    if not isinstance(config, dict) or "model" not in config:
        raise ValueError(f"config must be a dict with a 'model' entry, got {config!r}")
    from deepcheck import flows

    if hasattr(flows, "build_from_config"):
        return flows.build_from_config(config)
    if config["model"] == "linear":
        return flows.LinearFlow(int(config["shape"][0]), n_bins=config.get("n_bins"))
    if hasattr(flows, "build"):
        return flows.build(config["model"], config["config"], tuple(config["shape"]), n_bins=config["n_bins"],
                           **dict(config.get("overrides") or {}))
    raise ValueError(f"cannot rebuild a {config['model']!r} model: deepcheck.flows has no build function")


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, *, scheduler: Any = None,
                    map_location: str | torch.device = "cpu", strict: bool = True, rebuild: bool = True) -> Checkpoint:
    """Read the checkpoint at ``path``; load its states into ``model``/``optimizer``/``scheduler`` when given.

    Without ``model`` and with ``rebuild=True`` the model is rebuilt from the saved config (:func:`rebuild_model`),
    cast to the saved floating dtype, and its state loaded. Raises :class:`CheckpointNotFoundError` for a missing
    file and :class:`CheckpointError` (a ``ValueError`` naming the path) for a corrupt, truncated or foreign
    file, or for states that do not fit the given model/optimizer.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"no checkpoint at {path}" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        # torch's own message ("Weights only load failed ... Please file an issue") misleads: it stays in __cause__
        raise CheckpointError(f"{path} is not a flowrobust checkpoint, or it is corrupt or truncated "
                              "(torch.load cannot read it)") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a deepcheck checkpoint (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is not supported "
                              f"(this code reads version {VERSION})")
    config = payload.get("model_config")
    if model is None and rebuild:
        if config is None:
            raise CheckpointError(f"{path} has no model config: pass the model to load its state into")
        model = rebuild_model(config)
        dtype = _float_dtype(payload["model_state"])
        if dtype is not None:
            model = model.to(dtype)
    if model is not None:
        try:
            model.load_state_dict(payload["model_state"], strict=strict)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: the saved model state does not fit {type(model).__name__}: {exc}") from exc
    if optimizer is not None:
        if payload.get("optimizer_state") is None:
            raise CheckpointError(f"{path} holds no optimizer state")
        try:
            optimizer.load_state_dict(payload["optimizer_state"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: the saved optimizer state does not fit: {exc}") from exc
    if scheduler is not None:
        if payload.get("scheduler_state") is None:
            raise CheckpointError(f"{path} holds no scheduler state")
        scheduler.load_state_dict(payload["scheduler_state"])
    return Checkpoint(path=path, model=model, model_config=config, optimizer_state=payload.get("optimizer_state"),
                      scheduler_state=payload.get("scheduler_state"), state=dict(payload.get("state") or {}))
