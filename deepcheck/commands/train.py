"""``python -m deepcheck train``: the command line of :func:`deepcheck.train.train`."""

from __future__ import annotations

import argparse

from ..commandline import (
    fraction,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    show_progress,
    writable_dir,
)
from .common import DATASETS, start


def _val_fraction(text: str) -> float:
    value = fraction(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}")
    return value


# deepcheck.train.MODES and OPTIMIZERS (tests/test_cli.py checks they agree)
MODES = ("mle", "adversarial", "hybrid")
OPTIMIZERS = ("adamax", "adam")


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    """``python -m deepcheck train --model glow --config small --data fashion-mnist --epochs 5 --out runs/x``."""
    # the linear flow takes vectors, not images: train it from Python, train(LinearFlow(d), X)
    add = parser.add_argument
    add("--model", choices=("realnvp", "glow"), default="glow", help="flow architecture")
    add("--config", choices=("tiny", "small", "paper"), default="tiny", help="architecture size")
    add("--data", choices=DATASETS, default="digits", metavar="NAME",
        help=f"dataset (deepcheck.data.load): {', '.join(DATASETS)}")
    add("--root", default=None, help="folder with the data files (idx, cifar10, npz, fashion-mnist)")
    add("--size", type=positive_int, default=None, help="pad/crop the images to SIZE x SIZE (default: as stored)")
    add("--channels", type=int, default=None, choices=(1, 3), help="grey (1) or RGB (3) (default: as stored)")
    add("--limit", type=positive_int, default=None, help="use only the first LIMIT training images (default: all)")
    add("--val-limit", type=positive_int, default=None, help="validate on the first VAL_LIMIT images (default: all)")
    add("--val-fraction", type=_val_fraction, default=0.1, help="share of the training file held out for validation")
    add("--mode", choices=MODES, default="mle",
        help="objective: maximum likelihood, adversarial, or hybrid (a mixture weighted by --hybrid-lambda)")
    add("--epochs", type=positive_int, default=10, help="training epochs (a resumed run continues up to EPOCHS)")
    add("--batch-size", type=positive_int, default=64, help="images per optimizer step")
    add("--lr", type=positive_float, default=1e-3, help="learning rate")
    add("--optimizer", choices=OPTIMIZERS, default="adamax", help="optimizer")
    add("--warmup-steps", type=nonneg_int, default=200, help="linear learning-rate warm-up steps")
    add("--clip-grad", type=positive_float, default=100.0, help="clip the gradient norm to this")
    add("--hybrid-lambda", type=fraction, default=0.5, help="weight of the adversarial term in --mode hybrid")
    add("--attack-eps", type=nonneg_float, default=8 / 255, help="budget of the training adversary (pixels in [0, 1])")
    add("--attack-norm", choices=("l2", "linf"), default="linf", help="norm of the training adversary's budget")
    add("--attack-steps", type=nonneg_int, default=10, help="PGD steps of the training adversary")
    add("--seed", type=nonneg_int, default=0, help="seed of every random draw (same seed, same run on CPU)")
    add("--device", default="cpu", help="cpu, cuda or cuda:N")
    add("--out", required=True, help="run folder: checkpoint.pt and history.json go there")
    add("--no-resume", action="store_true", help="start over even if OUT/checkpoint.pt exists")
    add("--no-progress", action="store_true", help="no progress bars (none either when stderr is not a TTY)")


def main(name: str, args: argparse.Namespace) -> int:
    """Train, write ``OUT/checkpoint.pt`` and ``OUT/history.json``, print the last epoch's line."""
    import json

    out = writable_dir(args.out, "--out")
    device = start(args)

    from .. import data as data_mod
    from ..distributed import setup_from_env
    from ..fileio import atomic_write
    from ..flows import build
    from ..train.loop import _format_epoch, train

    kw = {"seed": args.seed, "root": args.root, "val_fraction": args.val_fraction, "size": args.size,
          "channels": args.channels}
    train_data = data_mod.load(args.data, "train", limit=args.limit, **kw)
    val_data = data_mod.load(args.data, "val", limit=args.val_limit, **kw)
    with setup_from_env(device) as ctx:  # under torchrun: one process group, --batch-size is the global batch
        model = build(args.model, args.config, train_data.shape, n_bins=train_data.n_bins, seed=args.seed)
        progress = show_progress(args.no_progress) and ctx.is_main
        result = train(model, train_data, val_data=val_data, mode=args.mode, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                       warmup_steps=args.warmup_steps, clip_grad=args.clip_grad, hybrid_lambda=args.hybrid_lambda,
                       attack_eps=args.attack_eps, attack_norm=args.attack_norm, attack_steps=args.attack_steps,
                       checkpoint=out / "checkpoint.pt", resume=not args.no_resume, seed=args.seed,
                       progress=progress, device=ctx.device, distributed=ctx.distributed)
        if not ctx.is_main:
            return 0
    summary = {"command": name, "model": args.model, "config": args.config, "data": args.data,
               "model_config": getattr(model, "config", None), **result.to_dict()}
    atomic_write(out / "history.json", json.dumps(summary, indent=2, default=str))
    if result.history and not progress:  # with progress, the loop has printed every epoch's line already
        print(_format_epoch(result.history[-1]))
    print(f"wrote {out / 'checkpoint.pt'} and {out / 'history.json'}")
    return 0
