r"""Training a flow: maximum likelihood, adversarial, or hybrid (DESIGN "Shape of the code", paper claim 4).

Objectives, per batch of pixels ``x`` (bits/dim, an increasing affine function of the NLL in nats, so each
objective has the same minimiser as its NLL form):

* ``"mle"``:          ``E[bpd(x)]``;
* ``"adversarial"``:  ``E[bpd(x_adv)]``;
* ``"hybrid"``:       ``E[(1 - lam) bpd(x) + lam bpd(x_adv)]``, ``lam = hybrid_lambda`` in ``[0, 1]``,

with ``x_adv = adversary(model, x)``, approximately ``argmax_{||x' - x|| <= eps} NLL(x')`` (the inner maximisation
of the robust objective ``min_theta E max_{delta} NLL(x + delta)``; for the linear flow its exact solution is
DESIGN R1/R5/R6). The adversary runs with every module in eval mode and no parameter gradients; the step is
then taken in train mode. The default adversary is :func:`deepcheck.attacks.pgd` (``likelihood="decrease"``,
``attack_eps``, ``attack_norm``, ``attack_steps``, start at ``delta = 0``, a seed per step).

Data: an :class:`~deepcheck.data.ImageData` is uniformly dequantised afresh each epoch,
``y = (k + u) / n_bins``; a float tensor is used as is (continuous data). Validation uses mid-bin pixels.

Optimisation: Adamax or Adam, linear warm-up ``lr_t = lr * min(1, (t + 1) / warmup_steps)``, gradient-norm
clipping at ``clip_grad``, and a guard that skips (and counts) a step whose loss or gradient norm is not finite.

Determinism and resuming: every random draw comes from a generator seeded by ``(seed, epoch)`` or
``(seed, step)`` (never the global RNG), and a checkpoint written atomically after each epoch holds the model,
the optimizer, the step and epoch counters and the history. A run resumed from the checkpoint of epoch ``e``
therefore repeats exactly the computations of the uninterrupted run from epoch ``e`` on (bitwise on CPU).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import ImageData
from .config import TrainConfig
from .steps import _TAG_EPOCH, _TAG_VAL, _as_inputs, _batch, _derive_seed, batch_objective, evaluate_bpd, make_adversary


@dataclass
class EpochStats:
    """One epoch: mean training objective (bits/dim, finite steps only), validation bits/dim on mid-bin pixels
    (clean, and adversarial for the adversarial/hybrid modes), skipped steps, steps, final lr, seconds."""

    epoch: int
    train_loss: float
    val_bpd: float | None
    val_adv_bpd: float | None
    skipped: int
    steps: int
    lr: float
    seconds: float


@dataclass
class TrainResult:
    """The trained model, one :class:`EpochStats` per epoch, totals, and the epoch a resumed run started from."""

    model: nn.Module
    history: list[EpochStats] = field(default_factory=list)
    skipped_steps: int = 0
    steps: int = 0
    wall_time: float = 0.0
    resumed_from: int | None = None

    @property
    def val_bpd(self) -> list[float | None]:
        return [h.val_bpd for h in self.history]

    @property
    def train_loss(self) -> list[float]:
        return [h.train_loss for h in self.history]

    def to_dict(self) -> dict:
        return {"history": [asdict(h) for h in self.history], "skipped_steps": self.skipped_steps,
                "steps": self.steps, "wall_time": self.wall_time, "resumed_from": self.resumed_from}


# ------------------------------------------------------------------------------------------- train
def train(model: nn.Module, data: ImageData | torch.Tensor, *, val_data: ImageData | torch.Tensor | None = None,
          config: TrainConfig | None = None, **options: object) -> TrainResult:
    """Train ``model`` in place on ``data`` for ``epochs`` epochs and return a :class:`TrainResult`.

    The settings are a :class:`~deepcheck.train.config.TrainConfig`: ``config=``, or its fields as keywords
    (``train(model, data, mode="hybrid", epochs=5, ...)``), or both (the keywords replace ``config``'s fields).
    ``mode``: ``"mle"``, ``"adversarial"`` or ``"hybrid"`` (module docstring). ``adversary(model, x) -> x_adv``
    replaces the default PGD adversary built from ``attack_eps`` / ``attack_norm`` / ``attack_steps`` (clamped to
    [0, 1] for image data, unclamped for tensor data). Validation bits/dim (clean, and adversarial on the first
    ``val_attack_limit`` validation samples for the adversarial modes) is recorded after each epoch when
    ``val_data`` is given. ``checkpoint``: a file written atomically after every epoch; with ``resume=True``
    an existing one is loaded and training continues from its epoch (its settings must match). ``seed`` fixes
    every random draw; ``progress`` shows a tqdm bar; ``device`` is where the model and batches go.
    Defaults: ``mode="mle", epochs=10, batch_size=64, lr=1e-3, optimizer="adamax", warmup_steps=200,
    clip_grad=100.0, hybrid_lambda=0.5, attack_eps=8/255, attack_norm="linf", attack_steps=10,
    val_attack_limit=256, checkpoint=None, resume=True, seed=0, progress=True, device="cpu"``.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "bpd"):
        raise TypeError(f"model must be an nn.Module with a bpd(x) method, got {type(model).__name__}")
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or None, got {type(config).__name__}")
    cfg = dataclasses.replace(config, **options) if config is not None else TrainConfig(**options)
    data = _as_inputs(data, "data", model)
    if val_data is not None:
        val_data = _as_inputs(val_data, "val_data", model)
    model.to(torch.device(cfg.device))
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.Adamax if cfg.optimizer == "adamax" else torch.optim.Adam
    opt = opt_cls(params, lr=cfg.lr)
    settings = cfg.settings(len(data))
    result = TrainResult(model=model)
    step = _resume(cfg, model, opt, settings, result)
    start_epoch = result.resumed_from or 0
    for epoch in range(start_epoch, cfg.epochs):
        stats, step = _run_epoch(model, data, val_data, cfg, opt, params, epoch, step)
        result.history.append(stats)
        result.skipped_steps += stats.skipped
        result.wall_time += stats.seconds
        if cfg.progress:
            from tqdm.auto import tqdm

            tqdm.write(_format_epoch(stats))
        if cfg.checkpoint is not None:
            save_checkpoint(cfg.checkpoint, model, opt, epoch=epoch + 1, step=step, settings=settings,
                            history=[asdict(h) for h in result.history], skipped_steps=result.skipped_steps,
                            wall_time=result.wall_time)
    result.steps = step
    model.eval()
    return result


def _resume(cfg: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer, settings: dict,
            result: TrainResult) -> int:
    """Load ``cfg.checkpoint`` into ``model``/``opt``/``result`` when resuming (its settings must match);
    returns the step counter (0 for a fresh run)."""
    if cfg.checkpoint is None or not cfg.resume or not Path(cfg.checkpoint).exists():
        return 0
    ck = load_checkpoint(cfg.checkpoint, model, opt)
    saved = ck.state.get("settings", {})
    for key in cfg.resume_keys():
        if saved.get(key) != settings[key]:
            raise ValueError(f"checkpoint {cfg.checkpoint} was written with {key}={saved.get(key)!r}, this run has "
                             f"{key}={settings[key]!r}; use the same settings or resume=False")
    result.history = [EpochStats(**h) for h in ck.state["history"]]
    result.skipped_steps = int(ck.state["skipped_steps"])
    result.wall_time = float(ck.state["wall_time"])
    result.resumed_from = int(ck.state["epoch"])
    return int(ck.state["step"])


def _run_epoch(model: nn.Module, data: ImageData | torch.Tensor, val_data: ImageData | torch.Tensor | None,
               cfg: TrainConfig, opt: torch.optim.Optimizer, params: list[torch.Tensor], epoch: int,
               step: int) -> tuple[EpochStats, int]:
    """One epoch (0-based ``epoch``) from step counter ``step``: shuffled batches, warm-up lr, the objective of
    :func:`~deepcheck.train.steps.batch_objective`, clipping, the non-finite guard; then validation. Returns
    the epoch's stats and the new step counter."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    model.train()
    n = len(data)
    clamp = (0.0, 1.0) if isinstance(data, ImageData) else None
    clip = math.inf if cfg.clip_grad is None else float(cfg.clip_grad)
    gen = torch.Generator().manual_seed(_derive_seed(cfg.seed, _TAG_EPOCH, epoch))
    order = torch.randperm(n, generator=gen)
    batches = [order[i:i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    losses: list[float] = []
    skipped = 0
    lr_t = cfg.lr
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
    for idx in bar:
        x = _batch(data, idx, model, gen if isinstance(data, ImageData) else None)
        lr_t = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
        for group in opt.param_groups:
            group["lr"] = lr_t
        step += 1
        loss = batch_objective(model, x, cfg, clamp, step).mean()
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            skipped += 1
            continue
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not torch.isfinite(grad_norm):
            opt.zero_grad(set_to_none=True)
            skipped += 1
            continue
        opt.step()
        losses.append(float(loss.detach()))
        if cfg.progress:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    val_bpd, val_adv = _validate(model, val_data, cfg, clamp)
    return EpochStats(epoch=epoch + 1, train_loss=float(np.mean(losses)) if losses else math.nan, val_bpd=val_bpd,
                      val_adv_bpd=val_adv, skipped=skipped, steps=len(batches), lr=lr_t,
                      seconds=time.perf_counter() - t0), step


def _validate(model: nn.Module, val_data: ImageData | torch.Tensor | None, cfg: TrainConfig,
              clamp: tuple[float, float] | None) -> tuple[float | None, float | None]:
    """Validation bits/dim, clean and (adversarial modes, first ``val_attack_limit`` samples) attacked."""
    if val_data is None:
        return None, None
    bs = max(cfg.batch_size, 256)
    val_bpd = evaluate_bpd(model, val_data, batch_size=bs, device=cfg.device)
    val_adv = None
    if cfg.adversarial and cfg.val_attack_limit > 0:
        k = min(cfg.val_attack_limit, len(val_data))
        val_adv = evaluate_bpd(model, val_data[:k], batch_size=bs, device=cfg.device,
                               adversary=make_adversary(cfg, clamp, _TAG_VAL))
    return val_bpd, val_adv


def _format_epoch(s: EpochStats) -> str:
    parts = [f"epoch {s.epoch}: train {s.train_loss:.4f} bits/dim"]
    if s.val_bpd is not None:
        parts.append(f"val {s.val_bpd:.4f}")
    if s.val_adv_bpd is not None:
        parts.append(f"val adv {s.val_adv_bpd:.4f}")
    if s.skipped:
        parts.append(f"skipped {s.skipped}")
    parts.append(f"{s.seconds:.1f} s")
    return ", ".join(parts)
