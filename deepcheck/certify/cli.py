"""``python -m deepcheck certify``: certified bounds on the worst-case NLL of trained flows on a dataset.

``python -m deepcheck certify --checkpoint RUN [RUN ...] --eps 0.002 0.004 [--norm linf] [--method zonotope]
[--n 16] [--data digits] [--seed 0] [--out results.json]``: for each checkpoint and eps, the first ``n`` test
images (mid-bin pixels, fitted to the model's input as ``attack`` does), :func:`~deepcheck.certify.nll_bounds`
per image, and one line per eps with the mean bits/dim clean, attained by PGD (``lower``) and certified
(``upper``), and the ratios. ``--out`` writes every number (per image) as JSON, atomically.

Wiring: this module has both conventions, ``add_parser(subparsers)`` / ``run(args)`` and
``configure_parser(name, parser)`` / ``main(name, args)`` (the one :mod:`deepcheck.cli` uses).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

HELP = "certified bounds on the worst-case NLL of trained flows (interval / symbolic / zonotope propagation)"


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    """The arguments of ``certify`` (``name`` is the sub-command's name, unused)."""
    from .api import METHODS

    parser.add_argument("--checkpoint", nargs="+", required=True,
                        help="checkpoint file(s) or run folder(s) holding checkpoint.pt (deepcheck train --out)")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.5 / 255, 1 / 255, 2 / 255, 4 / 255])
    parser.add_argument("--norm", choices=("linf", "l2"), default="linf")
    parser.add_argument("--method", choices=METHODS, default="zonotope")
    parser.add_argument("--n", type=int, default=16, help="certify the first N images of the split")
    parser.add_argument("--data", default="digits", help="dataset (deepcheck.data.load name)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--root", default=None, help="folder with the data files")
    parser.add_argument("--resize", choices=("pad", "interpolate"), default="pad")
    parser.add_argument("--steps", type=int, default=100, help="PGD steps per run (the lower bound)")
    parser.add_argument("--restarts", type=int, default=2, help="PGD random restarts")
    parser.add_argument("--batch-size", type=int, default=8, help="images propagated at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``certify`` sub-command to ``subparsers``; returns its parser."""
    parser = subparsers.add_parser("certify", help=HELP)
    configure_parser("certify", parser)
    return parser


def _load(path: str):  # noqa: ANN202 - a deepcheck flow
    from ..checkpoint import load_checkpoint

    p = Path(path)
    if p.is_dir():
        p = p / "checkpoint.pt"
    return load_checkpoint(p).model.eval()


def _images(model, args: argparse.Namespace):  # noqa: ANN001, ANN202
    from .. import data as data_mod
    from ..flows.base import parameter_dtype

    if len(model.input_shape) != 3:
        raise ValueError(f"certify on the command line needs an image flow; {type(model).__name__} takes vectors "
                         "(use deepcheck.certify.nll_bounds from Python)")
    c, h, w = model.input_shape
    images = data_mod.load(args.data, args.split, seed=args.seed, root=args.root, size=(h, w), resize=args.resize,
                           channels=c, limit=args.n)
    return images.pixels(parameter_dtype(model))


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    """Run ``certify`` with parsed ``args``; prints a table, returns 0."""
    from .api import nll_bounds

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    results = []
    for path in args.checkpoint:
        model = _load(path)
        x = _images(model, args)
        print(f"{path}: {len(x)} images of {args.data}/{args.split}, {args.norm}, method {args.method}")
        print(f"{'eps*255':>8} {'clean':>8} {'lower':>8} {'upper':>9} {'up/low':>7} {'excess ratio (median)':>22}")
        for eps in args.eps:
            b = nll_bounds(model, x, float(eps), norm=args.norm, method=args.method, steps=args.steps,
                           restarts=args.restarts, seed=args.seed, batch_size=args.batch_size)
            s = b.summary()
            print(f"{eps * 255:8.3g} {s['clean_bpd']:8.4f} {s['lower_bpd']:8.4f} {s['upper_bpd']:9.4f} "
                  f"{s['ratio_bpd']:7.3f} {s['excess_ratio_median']:22.3f}")
            results.append({"checkpoint": str(path), **s, "per_sample": b.to_dict()})
    if args.out:
        _write_json(Path(args.out), {"command": "certify", "data": f"{args.data}/{args.split}", "results": results})
        print(f"wrote {args.out}")
    return 0


def main(name: str, args: argparse.Namespace) -> int:
    """:mod:`deepcheck.cli`'s convention: ``main(name, args)``."""
    return run(args)
