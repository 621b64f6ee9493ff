"""``python -m deepcheck train``: the command line of :func:`deepcheck.train.train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..fileio import atomic_write
from .config import MODES, OPTIMIZERS
from .loop import _format_epoch, train


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
    from .. import data as data_mod
    from ..flows import build

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
    atomic_write(out / "history.json", json.dumps(summary, indent=2, default=str))
    last = result.history[-1] if result.history else None
    if last is not None:
        print(_format_epoch(last))
    print(f"wrote {out / 'checkpoint.pt'} and {out / 'history.json'}")
    return 0
