"""The trained deep flows of a ``reproduce`` run, loaded from the checkpoints of its training steps, and the
test pixels in their dtype (shared by :mod:`.steps_deep` and :mod:`.steps_phenomena`)."""

from __future__ import annotations

from typing import Any

from ..checkpoint import load_checkpoint
from ..data import as_pixels
from .pipeline import Context, NotAvailable


def trained_models(ctx: Context) -> dict[str, Any]:
    """``{"glow / mle": model, ...}`` for every training step that finished, loaded from its checkpoint."""
    models = {}
    for m in ctx.budget.flows.models:
        for mode in ctx.budget.flows.modes:
            rec = ctx.records.get(f"train_{m}_{mode}", {})
            if rec.get("status") in ("ok", "cached"):
                net = load_checkpoint(ctx.out / rec["results"]["checkpoint"]).model
                models[f"{m} / {mode}"] = net.to(ctx.device).eval()
    if not models:
        reasons = {r["name"]: r.get("reason", "") for n, r in ctx.records.items() if n.startswith("train_")}
        raise NotAvailable(f"no trained deep flow ({reasons or 'no training step'})")
    return models


def model_pixels(data: Any, models: dict[str, Any], n: int, device: str) -> Any:
    """The first ``n`` mid-bin images of ``data`` in the dtype of the models and on ``device``
    (:func:`deepcheck.data.as_pixels`)."""
    return as_pixels(data, like=next(iter(models.values())))[:n].to(device)
