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

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .attacks import attack_mode, pgd
from .checkpoint import load_checkpoint, save_checkpoint
from .data import ImageData
from .flows.base import parameter_dtype

__all__ = ["train", "TrainResult", "EpochStats", "MODES", "OPTIMIZERS", "evaluate_bpd", "configure_parser", "main"]

MODES = ("mle", "adversarial", "hybrid")
OPTIMIZERS = ("adamax", "adam")
Adversary = Callable[[nn.Module, torch.Tensor], torch.Tensor]

_TAG_EPOCH, _TAG_STEP, _TAG_VAL = 1, 2, 3
# settings that change the computation: a resumed run must use the same ones
_RESUME_KEYS = ("mode", "batch_size", "lr", "optimizer", "warmup_steps", "clip_grad", "hybrid_lambda", "attack_eps",
                "attack_norm", "attack_steps", "seed", "n_train")
_ADVERSARIAL_KEYS = ("hybrid_lambda", "attack_eps", "attack_norm", "attack_steps")


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


# ------------------------------------------------------------------------------------------- helpers
def _derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream ``(seed, *keys)``, hashed by numpy's ``SeedSequence`` (independent streams)."""
    words = np.random.SeedSequence([seed, *keys]).generate_state(2)
    return ((int(words[0]) << 32) | int(words[1])) & (2**63 - 1)


def _default_adversary(eps: float, norm: str, steps: int, seed: int, clamp: tuple[float, float] | None) -> Adversary:

    def adversary(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return pgd(model, x, eps, norm=norm, likelihood="decrease", steps=steps, restarts=0, clamp=clamp, seed=seed)

    return adversary


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


def _batch(data: ImageData | torch.Tensor, idx: torch.Tensor, dtype: torch.dtype, device: torch.device,
           generator: torch.Generator | None) -> torch.Tensor:
    if isinstance(data, ImageData):
        part = data[idx]
        x = part.dequantize(generator, dtype) if generator is not None else part.pixels(dtype)
    else:
        x = data[idx].to(dtype)
    return x.to(device)


def evaluate_bpd(model: nn.Module, data: ImageData | torch.Tensor, *, batch_size: int = 256,
                 adversary: Adversary | None = None, device: str | torch.device = "cpu") -> float:
    """Mean bits/dim of ``model`` on ``data`` (mid-bin pixels for an ImageData), in eval mode; with
    ``adversary``, on ``adversary(model, x)`` instead (the adversarial bits/dim)."""
    data = _as_inputs(data, "data", model)
    dtype = parameter_dtype(model)
    n = len(data)
    total = 0.0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            x = _batch(data, torch.arange(start, min(n, start + batch_size)), dtype, torch.device(device), None)
            if adversary is not None:
                x = _attack(adversary, model, x)
            with torch.no_grad():
                total += float(model.bpd(x).double().sum())
    finally:
        model.train(was_training)
    return total / n


def _check_args(mode, epochs, batch_size, lr, optimizer, warmup_steps, clip_grad, hybrid_lambda, attack_eps,
                attack_norm, attack_steps, seed, val_attack_limit) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1), ("warmup_steps", warmup_steps, 0),
                             ("attack_steps", attack_steps, 0), ("seed", seed, 0),
                             ("val_attack_limit", val_attack_limit, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    for name, value in (("lr", lr), ("hybrid_lambda", hybrid_lambda), ("attack_eps", attack_eps)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if attack_norm not in ("l2", "linf"):
        raise ValueError(f"attack_norm must be 'l2' or 'linf', got {attack_norm!r}")
    if hybrid_lambda > 1:
        raise ValueError(f"hybrid_lambda must be in [0, 1], got {hybrid_lambda}")
    if clip_grad is not None and (isinstance(clip_grad, bool) or not isinstance(clip_grad, int | float)
                                  or not clip_grad > 0):
        raise ValueError(f"clip_grad must be a number > 0 or None, got {clip_grad!r}")


# ------------------------------------------------------------------------------------------- train
def train(
    model: nn.Module,
    data: ImageData | torch.Tensor,
    *,
    val_data: ImageData | torch.Tensor | None = None,
    mode: str = "mle",
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    optimizer: str = "adamax",
    warmup_steps: int = 200,
    clip_grad: float | None = 100.0,
    hybrid_lambda: float = 0.5,
    adversary: Adversary | None = None,
    attack_eps: float = 8 / 255,
    attack_norm: str = "linf",
    attack_steps: int = 10,
    val_attack_limit: int = 256,
    checkpoint: str | Path | None = None,
    resume: bool = True,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train ``model`` in place on ``data`` for ``epochs`` epochs and return a :class:`TrainResult`.

    ``mode``: ``"mle"``, ``"adversarial"`` or ``"hybrid"`` (module docstring). ``adversary(model, x) -> x_adv``
    replaces the default PGD adversary built from ``attack_eps`` / ``attack_norm`` / ``attack_steps`` (clamped to
    [0, 1] for image data, unclamped for tensor data). Validation bits/dim (clean, and adversarial on the first
    ``val_attack_limit`` validation samples for the adversarial modes) is recorded after each epoch when
    ``val_data`` is given. ``checkpoint``: a file written atomically after every epoch; with ``resume=True``
    an existing one is loaded and training continues from its epoch (its settings must match). ``seed`` fixes
    every random draw; ``progress`` shows a tqdm bar.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "bpd"):
        raise TypeError(f"model must be an nn.Module with a bpd(x) method, got {type(model).__name__}")
    _check_args(mode, epochs, batch_size, lr, optimizer, warmup_steps, clip_grad, hybrid_lambda, attack_eps,
                attack_norm, attack_steps, seed, val_attack_limit)
    if adversary is not None and not callable(adversary):
        raise TypeError("adversary must be callable(model, x) -> x_adv")
    data = _as_inputs(data, "data", model)
    if val_data is not None:
        val_data = _as_inputs(val_data, "val_data", model)
    device = torch.device(device)
    model.to(device)
    dtype = parameter_dtype(model)
    adversarial = mode != "mle"
    clamp = (0.0, 1.0) if isinstance(data, ImageData) else None
    n = len(data)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.Adamax if optimizer == "adamax" else torch.optim.Adam
    opt = opt_cls(params, lr=lr)
    settings = {"mode": mode, "batch_size": int(batch_size), "lr": float(lr), "optimizer": optimizer,
                "warmup_steps": int(warmup_steps), "clip_grad": None if clip_grad is None else float(clip_grad),
                "hybrid_lambda": float(hybrid_lambda), "attack_eps": float(attack_eps),
                "attack_norm": str(attack_norm), "attack_steps": int(attack_steps), "seed": int(seed), "n_train": n}

    def make_adversary(*keys: int) -> Adversary:
        if adversary is not None:
            return adversary
        return _default_adversary(attack_eps, attack_norm, attack_steps, _derive_seed(seed, *keys) % 2**31, clamp)

    result = TrainResult(model=model)
    step = 0
    start_epoch = 0
    if checkpoint is not None and resume and Path(checkpoint).exists():
        ck = load_checkpoint(checkpoint, model, opt)
        saved = ck.state.get("settings", {})
        relevant = _RESUME_KEYS if adversarial else tuple(k for k in _RESUME_KEYS if k not in _ADVERSARIAL_KEYS)
        for key in relevant:
            if saved.get(key) != settings[key]:
                raise ValueError(f"checkpoint {checkpoint} was written with {key}={saved.get(key)!r}, this run has "
                                 f"{key}={settings[key]!r}; use the same settings or resume=False")
        start_epoch, step = int(ck.state["epoch"]), int(ck.state["step"])
        result.history = [EpochStats(**h) for h in ck.state["history"]]
        result.skipped_steps = int(ck.state["skipped_steps"])
        result.wall_time = float(ck.state["wall_time"])
        result.resumed_from = start_epoch

    from tqdm.auto import tqdm

    clip = math.inf if clip_grad is None else float(clip_grad)
    lam = float(hybrid_lambda)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(_derive_seed(seed, _TAG_EPOCH, epoch))
        order = torch.randperm(n, generator=gen)
        batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        losses: list[float] = []
        skipped = 0
        lr_t = lr
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for idx in bar:
            x = _batch(data, idx, dtype, device, gen if isinstance(data, ImageData) else None)
            lr_t = lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else lr
            for group in opt.param_groups:
                group["lr"] = lr_t
            step += 1
            if adversarial:
                if step == 1:  # data-dependent initialisation (ActNorm) on clean data, in train mode
                    with torch.no_grad():
                        model.bpd(x)
                x_adv = _attack(make_adversary(_TAG_STEP, step), model, x)
                model.train()
                if mode == "adversarial":
                    per_sample = model.bpd(x_adv)
                else:
                    both = model.bpd(torch.cat([x, x_adv]))
                    per_sample = (1.0 - lam) * both[: len(x)] + lam * both[len(x):]
            else:
                per_sample = model.bpd(x)
            loss = per_sample.mean()
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
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.close()
        val_bpd = val_adv = None
        if val_data is not None:
            val_bpd = evaluate_bpd(model, val_data, batch_size=max(batch_size, 256), device=device)
            if adversarial and val_attack_limit > 0:
                k = min(val_attack_limit, len(val_data))
                val_adv = evaluate_bpd(model, val_data[:k], batch_size=max(batch_size, 256), device=device,
                                       adversary=make_adversary(_TAG_VAL))
        seconds = time.perf_counter() - t0
        stats = EpochStats(epoch=epoch + 1, train_loss=float(np.mean(losses)) if losses else math.nan,
                           val_bpd=val_bpd, val_adv_bpd=val_adv, skipped=skipped, steps=len(batches), lr=lr_t,
                           seconds=seconds)
        result.history.append(stats)
        result.skipped_steps += skipped
        result.wall_time += seconds
        if progress:
            tqdm.write(_format_epoch(stats))
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, opt, epoch=epoch + 1, step=step, settings=settings,
                            history=[asdict(h) for h in result.history], skipped_steps=result.skipped_steps,
                            wall_time=result.wall_time)
    result.steps = step
    model.eval()
    return result


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


# ------------------------------------------------------------------------------------------- CLI
def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    """``python -m deepcheck train --model glow --config small --data fashion-mnist --epochs 5 --out runs/x``."""
    # the linear flow takes vectors, not images: train it from Python, train(LinearFlow(d), X)
    parser.add_argument("--model", choices=("realnvp", "glow"), default="glow")
    parser.add_argument("--config", choices=("tiny", "small", "paper"), default="tiny")
    parser.add_argument("--data", default="digits", help="a dataset name of deepcheck.data.load")
    parser.add_argument("--root", default=None, help="folder with the data files (idx, cifar10, npz, fashion-mnist)")
    parser.add_argument("--size", type=int, default=None, help="pad/crop the images to SIZE x SIZE")
    parser.add_argument("--channels", type=int, default=None, choices=(1, 3))
    parser.add_argument("--limit", type=int, default=None, help="use only the first LIMIT training images")
    parser.add_argument("--val-limit", type=int, default=None, help="validate on the first VAL_LIMIT images")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--mode", choices=MODES, default="mle")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamax")
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--clip-grad", type=float, default=100.0)
    parser.add_argument("--hybrid-lambda", type=float, default=0.5)
    parser.add_argument("--attack-eps", type=float, default=8 / 255)
    parser.add_argument("--attack-norm", choices=("l2", "linf"), default="linf")
    parser.add_argument("--attack-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, help="run folder: checkpoint.pt and history.json go there")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint.pt exists")
    parser.add_argument("--no-progress", action="store_true")


def main(name: str, args: argparse.Namespace) -> int:
    from . import data as data_mod
    from .flows import build

    kw = {"seed": args.seed, "root": args.root, "val_fraction": args.val_fraction, "size": args.size,
          "channels": args.channels}
    train_data = data_mod.load(args.data, "train", limit=args.limit, **kw)
    val_data = data_mod.load(args.data, "val", limit=args.val_limit, **kw)
    model = build(args.model, args.config, train_data.shape, n_bins=train_data.n_bins, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = train(model, train_data, val_data=val_data, mode=args.mode, epochs=args.epochs,
                   batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, warmup_steps=args.warmup_steps,
                   clip_grad=args.clip_grad, hybrid_lambda=args.hybrid_lambda, attack_eps=args.attack_eps,
                   attack_norm=args.attack_norm, attack_steps=args.attack_steps, checkpoint=out / "checkpoint.pt",
                   resume=not args.no_resume, seed=args.seed, progress=not args.no_progress, device=args.device)
    summary = {"command": name, "model": args.model, "config": args.config, "data": args.data,
               "model_config": getattr(model, "config", None), **result.to_dict()}
    (out / "history.json").write_text(json.dumps(summary, indent=2, default=str))
    last = result.history[-1] if result.history else None
    if last is not None:
        print(_format_epoch(last))
    print(f"wrote {out / 'checkpoint.pt'} and {out / 'history.json'}")
    return 0
