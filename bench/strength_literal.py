"""Issue 14 goal 4 with the issue's own reference: the default attack against a much stronger run of the same attack.

The other strength rows (:func:`bench.bench_attacks.deep_strength`, :mod:`bench.strength_full`) compare against the
best of *every* search the project made on the images (several methods, probes, polished points). The issue's
criterion is narrower: "worst >= 0.95 of the best NLL change that a much stronger run finds". Here the reference is
the best, per image, of the default (100 steps, 1 restart, seed 1) and a strong run of the same default attack
(``strong = (steps, restarts)``, 400 steps x 8 runs by default: 15-20x the passes; seed 3, so other random
starts). Rows per checkpoint, norm, eps and direction: the fraction of that reference the default reaches, per
image, with the passes each run spent.

    python bench/strength_literal.py out/full/checkpoints fashion-mnist docs/results/strength-literal-fashion.json

writes the rows as JSON (atomically) and prints a table (minutes per checkpoint on one CPU thread at 28x28);
``python bench/strength_literal.py --compare BEFORE.json AFTER.json`` puts two such runs (before and after a change of
the default) against the best of all four runs per image (:func:`compare`).
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_attacks import _attack  # noqa: E402

BUDGETS = (("linf", 0.031), ("linf", 0.125), ("l2", 0.5), ("l2", 2.0))
"""Four points of the full runs' grid (L-inf 8/255 and 32/255, L2 0.5 and 2): about 15 CPU min per GLOW and 35 per
RealNVP checkpoint at 28x28."""
STRONG = (400, 7)
"""The strong run: 400 steps, 1 + 7 runs (10x the default's passes)."""


def literal_strength(checkpoints: str, data: str, n: int = 8, budgets=BUDGETS,
                     directions: tuple[str, ...] = ("decrease", "increase"), strong: tuple[int, int] = STRONG,
                     pattern: str = "*_[mh][ly]*.pt", on_row=None) -> list[dict]:
    """For every checkpoint in ``checkpoints`` matching ``pattern`` (default the ``*_mle_*`` and ``*_hybrid_*``
    flows), every ``(norm, eps)`` of ``budgets`` and every direction, on ``n`` test images of ``data``: the per-image
    NLL change of the default attack (seed 1) and of the strong run (``steps, restarts = strong``, seed 3), and
    ``fraction = default / max(default, strong)`` (lowering; ``min`` for raising, where changes are negative).
    Images where both changes are 0 count as 1. ``on_row(rows)`` is called after each row (to save or print)."""
    from deepcheck.checkpoint import load_checkpoint
    from deepcheck.data import as_pixels, load

    rows = []
    for path in sorted(glob.glob(os.path.join(checkpoints, pattern))):
        model = load_checkpoint(path).model
        x = as_pixels(load(data, "test", seed=0, limit=n), like=model)
        for norm, eps in budgets:
            for lk in directions:
                t0 = time.process_time()
                kw = dict(norm=norm, likelihood=lk)
                d_change, d_fb, d_fwd = _attack(model, x, eps, "default", seed=1, **kw)
                t1 = time.process_time()
                s_change, s_fb, s_fwd = _attack(model, x, eps, "default", seed=3, steps=strong[0],
                                                restarts=strong[1], **kw)
                t2 = time.process_time()
                sign = 1.0 if lk == "decrease" else -1.0  # raising: changes are negative
                best = sign * np.maximum(sign * d_change, sign * s_change)
                frac = np.where(best == 0, 1.0, d_change / np.where(best == 0, 1.0, best))
                row = dict(checkpoint=os.path.basename(path), data=data, norm=norm, eps=eps, direction=lk,
                           default_change=d_change.tolist(), strong_change=s_change.tolist(),
                           fraction=frac.tolist(), worst=float(frac.min()), median=float(np.median(frac)),
                           strong_beaten=int(np.sum(sign * d_change > sign * s_change)),
                           default_passes=[d_fb, d_fwd], strong_passes=[s_fb, s_fwd],
                           default_cpu_s=t1 - t0, strong_cpu_s=t2 - t1)
                rows.append(row)
                if on_row is not None:
                    on_row(rows)
    return rows


def _line(r: dict) -> str:
    return (f"{r['checkpoint']:28s} {r['norm']:4s} {r['eps']:6.3f} {r['direction']:8s} worst {r['worst']:6.3f} "
            f"median {r['median']:6.3f} default>strong {r['strong_beaten']}/{len(r['fraction'])} passes "
            f"{r['default_passes'][0]}+{r['default_passes'][1]} vs {r['strong_passes'][0]}+{r['strong_passes'][1]} "
            f"cpu {r['default_cpu_s']:.0f}+{r['strong_cpu_s']:.0f} s")


def compare(before: str, after: str) -> list[tuple]:
    """Two saved runs of :func:`literal_strength` (JSON files; e.g. before and after a change of the default) on the
    same images: per cell present in both, the worst and median fraction that each default reaches of the best
    change found by any of the four runs (both defaults, both strong runs). Rows ``(checkpoint, norm, eps,
    direction, worst before, median before, worst after, median after)``."""
    rows = {}
    for tag, path in (("before", before), ("after", after)):
        with open(path) as fh:
            for r in json.load(fh)["rows"]:
                rows.setdefault((r["checkpoint"], r["norm"], r["eps"], r["direction"]), {})[tag] = r
    out = []
    for (ck, norm, eps, lk), pair in rows.items():
        if len(pair) < 2:
            continue
        runs = [np.asarray(pair[t][k]) for t in ("before", "after") for k in ("default_change", "strong_change")]
        best = np.max(runs, axis=0) if lk == "decrease" else np.min(runs, axis=0)
        fb, fa = runs[0] / best, runs[2] / best
        out.append((ck, norm, eps, lk, float(fb.min()), float(np.median(fb)), float(fa.min()), float(np.median(fa))))
    return out


def main(argv: list[str]) -> int:
    import argparse

    import torch

    if argv[:1] == ["--compare"] and len(argv) == 3:
        print(f"{'checkpoint':28s} {'norm':4s} {'eps':>6s} {'dir':8s}  worst (median) before -> after")
        for ck, norm, eps, lk, wb, mb, wa, ma in compare(argv[1], argv[2]):
            print(f"{ck:28s} {norm:4s} {eps:6.3f} {lk:8s}  {wb:.3f} ({mb:.3f}) -> {wa:.3f} ({ma:.3f})")
        return 0

    from deepcheck.fileio import atomic_write

    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("checkpoints")
    ap.add_argument("data")
    ap.add_argument("out", help="the rows as JSON (rewritten atomically after every cell)")
    ap.add_argument("--budgets", default=",".join(f"{nm}:{e:g}" for nm, e in BUDGETS),
                    help="norm:eps pairs, comma-separated (default: %(default)s)")
    ap.add_argument("--directions", default="decrease,increase")
    args = ap.parse_args(argv)
    budgets = tuple((b.split(":")[0], float(b.split(":")[1])) for b in args.budgets.split(","))
    torch.set_num_threads(1)

    def save(rows: list[dict]) -> None:  # after every row: a stopped run keeps what it measured
        print(_line(rows[-1]), flush=True)
        atomic_write(args.out, json.dumps(dict(strong=list(STRONG), n=8, rows=rows), indent=1))

    literal_strength(args.checkpoints, args.data, budgets=budgets, directions=tuple(args.directions.split(",")),
                     on_row=save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
