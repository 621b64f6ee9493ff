"""``python -m deepcheck attack`` (one model, one dataset, bits/dim against eps) and ``python -m deepcheck
evaluate`` (models, in-distribution and OOD data, AUROC): the command line of
:func:`deepcheck.evaluate.evaluate_model`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..commandline import nonneg_float, nonneg_int, positive_int, show_progress, writable_file
from .common import DATASETS, SPLITS, start

DEFAULT_EPS = [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    """``attack``: one checkpoint, bits/dim against eps. ``evaluate``: checkpoints, plus OOD sets and AUROC."""
    add = parser.add_argument
    add("--checkpoint", nargs="+", required=True,
        help="checkpoint file(s) or run folder(s) holding checkpoint.pt (deepcheck train --out)")
    add("--data", choices=DATASETS, default="digits", metavar="NAME",
        help=f"in-distribution dataset (deepcheck.data.load): {', '.join(DATASETS)}")
    add("--split", choices=SPLITS, default="test", help="which part of the dataset")
    add("--root", default=None, help="folder with the data files (default: where each dataset is found)")
    add("--limit", type=positive_int, default=256, help="evaluate the first LIMIT images")
    add("--resize", choices=("pad", "interpolate"), default="pad",
        help="how data of another size is fitted to the model's input (pad/crop or bilinear)")
    add("--eps", type=nonneg_float, nargs="+", default=DEFAULT_EPS,
        help="attack budgets (pixels in [0, 1]); 0 gives the clean bits/dim")
    add("--norm", choices=("l2", "linf"), default="linf", help="norm of the attack budget")
    add("--steps", type=positive_int, default=20, help="PGD steps per run")
    add("--restarts", type=nonneg_int, default=0,
        help="extra random restarts (deepcheck.attacks.pgd has its own default; 0 here, for cost)")
    add("--batch-size", type=positive_int, default=64, help="images per attack batch")
    add("--seed", type=nonneg_int, default=0, help="seed of the attacks and of the noise set")
    add("--device", default="cpu", help="cpu, cuda or cuda:N")
    add("--out", default=None, help="also write the results as JSON to this file")
    add("--no-progress", action="store_true", help="no progress bar (none either when stderr is not a TTY)")
    if name == "evaluate":
        add("--ood-data", nargs="*", choices=DATASETS, default=[], metavar="NAME",
            help="OOD datasets, e.g. fashion-mnist")
        add("--no-noise", action="store_true", help="skip the uniform-noise OOD set")
        add("--ood-eps", type=nonneg_float, default=8 / 255, help="budget of the OOD attack")


def _load_model(path: str, device: str) -> object:
    from ..checkpoint import load_checkpoint

    p = Path(path)
    if p.is_dir():
        p = p / "checkpoint.pt"
    model = load_checkpoint(p).model.to(device)  # rebuilt on the CPU, then moved with its data (as_pixels)
    model.eval()
    return model


def _load_like(name: str, model: object, args: argparse.Namespace, n: int | None) -> object:
    """Dataset ``name`` resized to the model's input shape (pad/crop, grey/RGB), first ``n`` images."""
    from .. import data as data_mod

    c, h, w = model.input_shape  # type: ignore[attr-defined]
    if name == "uniform-noise":
        return data_mod.load(name, args.split, seed=args.seed, shape=(c, h, w), n=n or 256,
                             n_bins=model.n_bins or 256)  # type: ignore[attr-defined]
    return data_mod.load(name, args.split, seed=args.seed, root=args.root, size=(h, w), resize=args.resize,
                         channels=c, limit=n)


def main(name: str, args: argparse.Namespace) -> int:
    """Evaluate each checkpoint, print its table, write ``--out`` (JSON)."""
    import json

    out = writable_file(args.out, "--out") if args.out else None
    device = start(args)

    from ..distributed import setup_from_env
    from ..evaluate import evaluate_model, format_result
    from ..fileio import atomic_write

    results = []
    with setup_from_env(device) as ctx:  # under torchrun the images are shared out over the ranks and gathered
        progress = show_progress(args.no_progress) and ctx.is_main
        for path in args.checkpoint:
            model = _load_model(path, ctx.device)
            data = _load_like(args.data, model, args, args.limit)
            ood = {}
            if name == "evaluate":
                if not args.no_noise:
                    ood["uniform-noise"] = _load_like("uniform-noise", model, args, args.limit)
                for o in args.ood_data:
                    ood[o] = _load_like(o, model, args, args.limit)
            r = evaluate_model(model, data, args.eps, ood_data=ood or None, ood_eps=getattr(args, "ood_eps", None),
                               norm=args.norm, steps=args.steps, restarts=args.restarts, batch_size=args.batch_size,
                               seed=args.seed, label=str(path), data_name=f"{args.data}/{args.split}",
                               progress=progress)
            if ctx.is_main:
                print(format_result(r))
            results.append(r.to_dict())
        if not ctx.is_main:
            return 0
    if out is not None:
        print(f"wrote {atomic_write(out, json.dumps({'command': name, 'results': results}, indent=2))}")
    return 0
