"""``python -m deepcheck certify``: certified bounds on the worst-case NLL of trained flows on a dataset.

For each checkpoint and each eps, the first ``--limit`` images of ``--data``/``--split`` (mid-bin pixels, fitted to
the model's input as ``attack`` does) go through :func:`deepcheck.certify.nll_bounds`: the NLL attained by PGD (a
lower bound of the worst case) and a certified upper bound by bound propagation. One line per eps gives the mean
bits/dim clean, attained (``lower``) and certified (``upper``), their ratio and the median excess ratio
(upper - clean) / (lower - clean). ``--out`` writes every number (per image) as JSON, atomically.
"""

from __future__ import annotations

import argparse

from ..commandline import nonneg_float, nonneg_int, positive_int, writable_file
from .common import DATASETS, SPLITS
from .evaluate import _load_like, _load_model

# deepcheck.certify.METHODS (tests/test_certify_api.py checks they agree, so that --help need not import torch)
METHODS = ("ibp", "symbolic", "zonotope")


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    """The options of ``certify`` (``name`` is the command's name)."""
    add = parser.add_argument
    add("--checkpoint", nargs="+", required=True,
        help="checkpoint file(s) or run folder(s) holding checkpoint.pt (deepcheck train --out)")
    add("--eps", type=nonneg_float, nargs="+", default=[0.5 / 255, 1 / 255, 2 / 255, 4 / 255],
        help="budgets (pixels in [0, 1])")
    add("--norm", choices=("linf", "l2"), default="linf", help="norm of the budget")
    add("--method", choices=METHODS, default="zonotope",
        help="bound propagation: interval (ibp), affine forms (symbolic) or zonotopes (the tightest)")
    add("--data", choices=DATASETS, default="digits", metavar="NAME",
        help=f"dataset (deepcheck.data.load): {', '.join(DATASETS)}")
    add("--split", choices=SPLITS, default="test", help="which part of the dataset")
    add("--root", default=None, help="folder with the data files (default: where each dataset is found)")
    add("--limit", "--n", dest="limit", type=positive_int, default=16, help="certify the first LIMIT images")
    add("--resize", choices=("pad", "interpolate"), default="pad",
        help="how data of another size is fitted to the model's input (pad/crop or bilinear)")
    add("--steps", type=positive_int, default=100, help="PGD steps per run (the lower bound)")
    add("--restarts", type=nonneg_int, default=2, help="PGD random restarts")
    add("--batch-size", type=positive_int, default=8, help="images propagated at once")
    add("--seed", type=nonneg_int, default=0, help="seed of the attack")
    add("--out", default=None, help="also write the results as JSON to this file")


def main(name: str, args: argparse.Namespace) -> int:
    """Certify each checkpoint at each eps, print the table, write ``--out`` (JSON)."""
    import json

    out = writable_file(args.out, "--out") if args.out else None

    from ..certify import nll_bounds
    from ..fileio import atomic_write

    results = []
    for path in args.checkpoint:
        model = _load_model(path, "cpu")
        if len(getattr(model, "input_shape", ())) != 3:
            raise ValueError(f"certify on the command line needs an image flow; {type(model).__name__} takes "
                             "vectors (use deepcheck.certify.nll_bounds from Python)")
        x = _load_like(args.data, model, args, args.limit).pixels(next(model.parameters()).dtype)
        print(f"{path}: {len(x)} images of {args.data}/{args.split}, {args.norm}, method {args.method}")
        print(f"{'eps*255':>8} {'clean':>8} {'lower':>8} {'upper':>9} {'up/low':>7} {'excess ratio (median)':>22}")
        for eps in args.eps:
            b = nll_bounds(model, x, float(eps), norm=args.norm, method=args.method, steps=args.steps,
                           restarts=args.restarts, seed=args.seed, batch_size=args.batch_size)
            s = b.summary()
            print(f"{eps * 255:8.3g} {s['clean_bpd']:8.4f} {s['lower_bpd']:8.4f} {s['upper_bpd']:9.4f} "
                  f"{s['ratio_bpd']:7.3f} {s['excess_ratio_median']:22.3f}")
            results.append({"checkpoint": str(path), **s, "per_sample": b.to_dict()})
    if out is not None:
        payload = {"command": name, "data": f"{args.data}/{args.split}", "results": results}
        print(f"wrote {atomic_write(out, json.dumps(payload, indent=2))}")
    return 0
