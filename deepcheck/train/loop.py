r"""Training a flow: maximum likelihood, adversarial, or hybrid (paper claim 4).

Objectives, per batch of pixels ``x`` (bits/dim, an increasing affine function of the NLL in nats, so each
objective has the same minimiser as its NLL form):

* ``"mle"``:          ``E[bpd(x)]``;
* ``"adversarial"``:  ``E[bpd(x_adv)]``;
* ``"hybrid"``:       ``E[(1 - lam) bpd(x) + lam bpd(x_adv)]``, ``lam = hybrid_lambda`` in ``[0, 1]``,

with ``x_adv = adversary(model, x)``, approximately ``argmax_{||x' - x|| <= eps} NLL(x')`` (the inner maximisation
of the robust objective ``min_theta E max_{delta} NLL(x + delta)``; for the linear flow its exact solution is
R1/R5/R6). The adversary runs with every module in eval mode and no parameter gradients; the step is
then taken in train mode. The default adversary is :func:`deepcheck.attacks.pgd` (``likelihood="decrease"``,
``attack_eps``, ``attack_norm``, ``attack_steps``, start at ``delta = 0``, a seed per step).

Data: an :class:`~deepcheck.data.ImageData` is uniformly dequantised afresh each epoch,
``y = (k + u) / n_bins``; a float tensor is used as is (continuous data). Validation uses mid-bin pixels.

Optimisation: Adamax or Adam, linear warm-up ``lr_t = lr * min(1, (t + 1) / warmup_steps)``, gradient-norm
clipping at ``clip_grad``, and a guard that skips (and counts) a step whose loss or gradient norm is not finite.

Determinism and resuming: every random draw comes from a generator seeded by ``(seed, epoch)`` (the batch
order) or ``(seed, epoch, sample index)`` (dequantisation noise, the default adversary's kicks), never the
global RNG, and a checkpoint written atomically after each epoch holds the model, the optimizer, the step and
epoch counters and the history. A run resumed from the checkpoint of epoch ``e`` therefore repeats exactly the
computations of the uninterrupted run from epoch ``e`` on (bitwise on CPU).

Several processes (``distributed=True`` inside an initialised process group, :mod:`deepcheck.distributed`):
``batch_size`` is the *global* batch; every rank draws the same global order and takes its contiguous part of
each global batch (:func:`deepcheck.distributed.shard`, uneven parts allowed; a rank with no sample that step
runs one sample with weight 0 so that the collective calls match). The data-dependent initialisation (ActNorm)
runs on the whole first global batch on every rank, then ``DistributedDataParallel`` broadcasts rank 0's
state. Rank ``r``'s loss is ``world / B * sum_{its samples} objective``, so DDP's averaged gradient is the
gradient of the global mean; the logged loss is all-reduced. Because no random draw depends on the rank or
the batch composition, N ranks reproduce one process up to the summation order of the all-reduce (tested in
float64 to 1e-8 relative). Rank 0 alone writes the checkpoint (atomically), then all ranks meet at a barrier;
a checkpoint written by N ranks resumes on M ranks or one process. Validation batches are shared out over
the ranks and gathered. A custom ``adversary`` must itself draw per sample for this reproduction to hold.
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

from .. import distributed as dist_mod
from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import ImageData, as_pixels
from ..evaluate import bpd_of
from .config import TrainConfig
from .steps import (
    _TAG_ADV,
    _TAG_DEQ,
    _TAG_EPOCH,
    _TAG_VAL,
    _as_inputs,
    _attack,
    _batch,
    _derive_seed,
    batch_objective,
    make_adversary,
    sample_keys,
)


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
    world_size: int = 1
    global_batch: int | None = None

    @property
    def val_bpd(self) -> list[float | None]:
        return [h.val_bpd for h in self.history]

    @property
    def train_loss(self) -> list[float]:
        return [h.train_loss for h in self.history]

    def to_dict(self) -> dict:
        return {"history": [asdict(h) for h in self.history], "skipped_steps": self.skipped_steps,
                "steps": self.steps, "wall_time": self.wall_time, "resumed_from": self.resumed_from,
                "world_size": self.world_size, "global_batch": self.global_batch}


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
    val_attack_limit=256, checkpoint=None, resume=True, seed=0, progress=True, device="cpu",
    distributed=False``. ``distributed=True`` trains data-parallel over the ranks of the initialised default
    process group (module docstring; ``batch_size`` is then the global batch).
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "bpd"):
        raise TypeError(f"model must be an nn.Module with a bpd(x) method, got {type(model).__name__}")
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or None, got {type(config).__name__}")
    cfg = dataclasses.replace(config, **options) if config is not None else TrainConfig(**options)
    data = _as_inputs(data, "data", model)
    if val_data is not None:
        val_data = _as_inputs(val_data, "val_data", model)
    if cfg.distributed and not torch.distributed.is_initialized():
        raise ValueError("distributed=True needs an initialised process group: run under torchrun inside "
                         "deepcheck.distributed.setup_from_env(device), or call torch.distributed.init_process_group")
    world = dist_mod.world_size() if cfg.distributed else 1
    show = cfg.progress and (world == 1 or dist_mod.is_main())
    if show != cfg.progress:
        cfg = dataclasses.replace(cfg, progress=show)
    model.to(torch.device(cfg.device))
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.Adamax if cfg.optimizer == "adamax" else torch.optim.Adam
    opt = opt_cls(params, lr=cfg.lr)
    settings = cfg.settings(len(data))
    result = TrainResult(model=model, world_size=world, global_batch=int(cfg.batch_size))
    step = _resume(cfg, model, opt, settings, result)
    start_epoch = result.resumed_from or 0
    if cfg.progress:
        from tqdm.auto import tqdm

        tqdm.write(f"training on {world} process(es), global batch {cfg.batch_size}")
    ddp = None
    for epoch in range(start_epoch, cfg.epochs):
        if ddp is None and world > 1:
            ddp = _wrap_ddp(model, data, cfg, epoch)
        stats, step = _run_epoch(model, data, val_data, cfg, opt, params, epoch, step, ddp)
        result.history.append(stats)
        result.skipped_steps += stats.skipped
        result.wall_time += stats.seconds
        if cfg.progress:
            from tqdm.auto import tqdm

            tqdm.write(_format_epoch(stats))
        if cfg.checkpoint is not None:
            if world == 1 or dist_mod.is_main():
                save_checkpoint(cfg.checkpoint, model, opt, epoch=epoch + 1, step=step, settings=settings,
                                history=[asdict(h) for h in result.history], skipped_steps=result.skipped_steps,
                                wall_time=result.wall_time, world_size=world, global_batch=int(cfg.batch_size))
            if world > 1:
                dist_mod.barrier()
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


class _Bpd(nn.Module):
    """``forward(x) = flow.bpd(x)``: the differentiated pass goes through ``DistributedDataParallel.forward``."""

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.bpd(x)


def _epoch_batches(n: int, cfg: TrainConfig, epoch: int) -> list[torch.Tensor]:
    """The global batches of ``epoch``: a permutation seeded by ``(seed, epoch)``, cut into ``batch_size``."""
    gen = torch.Generator().manual_seed(_derive_seed(cfg.seed, _TAG_EPOCH, epoch))
    order = torch.randperm(n, generator=gen)
    return [order[i:i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]


def _wrap_ddp(model: nn.Module, data: ImageData | torch.Tensor, cfg: TrainConfig, epoch: int) -> nn.Module:
    """The data-dependent initialisation (ActNorm) on the whole first global batch of ``epoch`` on every rank,
    as one process does it (a no-op for an initialised model), then ``DistributedDataParallel`` (which
    broadcasts rank 0's parameters and buffers)."""
    from torch.nn.parallel import DistributedDataParallel

    idx = _epoch_batches(len(data), cfg, epoch)[0]
    seeds = sample_keys(cfg, _TAG_DEQ, epoch, idx) if isinstance(data, ImageData) else None
    model.train()
    with torch.no_grad():
        model.bpd(_batch(data, idx, model, seeds))
    device = torch.device(cfg.device)
    return DistributedDataParallel(_Bpd(model), device_ids=[device] if device.type == "cuda" else None)


def _run_epoch(model: nn.Module, data: ImageData | torch.Tensor, val_data: ImageData | torch.Tensor | None,
               cfg: TrainConfig, opt: torch.optim.Optimizer, params: list[torch.Tensor], epoch: int,
               step: int, ddp: nn.Module | None = None) -> tuple[EpochStats, int]:
    """One epoch (0-based ``epoch``) from step counter ``step``: shuffled batches, warm-up lr, the objective of
    :func:`~deepcheck.train.steps.batch_objective`, clipping, the non-finite guard; then validation. With
    ``ddp`` (the wrapped model) this rank takes its shard of each global batch (module docstring). Returns
    the epoch's stats and the new step counter."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    model.train()
    clamp = (0.0, 1.0) if isinstance(data, ImageData) else None
    clip = math.inf if cfg.clip_grad is None else float(cfg.clip_grad)
    batches = _epoch_batches(len(data), cfg, epoch)
    world = dist_mod.world_size() if ddp is not None else 1
    losses: list[float] = []
    skipped = 0
    lr_t = cfg.lr
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
    for idx in bar:
        local = dist_mod.shard(idx) if ddp is not None else idx
        weight = 1.0
        if len(local) == 0:  # fewer samples than ranks: run one with weight 0, so the collectives match
            local, weight = idx[:1], 0.0
        x = _batch(data, local, model, sample_keys(cfg, _TAG_DEQ, epoch, local) if clamp is not None else None)
        lr_t = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
        for group in opt.param_groups:
            group["lr"] = lr_t
        step += 1
        per = batch_objective(model, x, cfg, clamp, step, bpd=ddp,
                              sample_seeds=sample_keys(cfg, _TAG_ADV, epoch, local) if cfg.adversarial else None)
        if ddp is None:
            loss = value = per.mean()
        else:  # DDP averages the ranks' gradients: scale so that the average is that of the global mean
            total = per.sum() * weight
            value = dist_mod.all_reduce_sum(total.detach()) / len(idx)
            loss = total * (world / len(idx))
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(value):
            skipped += 1
            continue
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not torch.isfinite(grad_norm):
            opt.zero_grad(set_to_none=True)
            skipped += 1
            continue
        opt.step()
        losses.append(float(value.detach()))
        if cfg.progress:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    val_bpd, val_adv = _validate(model, val_data, cfg, clamp)
    return EpochStats(epoch=epoch + 1, train_loss=float(np.mean(losses)) if losses else math.nan, val_bpd=val_bpd,
                      val_adv_bpd=val_adv, skipped=skipped, steps=len(batches), lr=lr_t,
                      seconds=time.perf_counter() - t0), step


def _validate(model: nn.Module, val_data: ImageData | torch.Tensor | None, cfg: TrainConfig,
              clamp: tuple[float, float] | None) -> tuple[float | None, float | None]:
    """Validation bits/dim on mid-bin pixels, clean and (adversarial modes, first ``val_attack_limit`` samples)
    attacked by the default adversary with per-sample seeds ``(seed, "val", index)``; in batches of
    ``max(batch_size, 256)`` shared out over the ranks when ``cfg.distributed`` (:func:`map_batches`: the same
    numbers on any number of ranks)."""
    if val_data is None:
        return None, None
    bs = max(cfg.batch_size, 256)
    x = as_pixels(val_data, like=model)

    def clean(a: int, b: int) -> np.ndarray:
        return bpd_of(model, x[a:b], batch_size=bs)

    def attacked(a: int, b: int) -> np.ndarray:
        seeds = sample_keys(cfg, _TAG_VAL, 0, torch.arange(a, b))
        return bpd_of(model, _attack(make_adversary(cfg, clamp, _TAG_VAL, sample_seeds=seeds), model, x[a:b]),
                      batch_size=bs)

    val_bpd = float(dist_mod.map_batches(clean, len(x), bs, shard=cfg.distributed).mean())
    val_adv = None
    if cfg.adversarial and cfg.val_attack_limit > 0:
        k = min(cfg.val_attack_limit, len(x))
        val_adv = float(dist_mod.map_batches(attacked, k, bs, shard=cfg.distributed).mean())
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
