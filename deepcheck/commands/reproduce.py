"""``python -m deepcheck reproduce``: the command line of :func:`deepcheck.reproduce.run`."""

from __future__ import annotations

import argparse
import os
import sys

from ..commandline import nonneg_int, show_progress, writable_dir
from .common import start

# sorted(deepcheck.reproduce.BUDGETS) (tests/test_cli.py checks they agree)
BUDGET_NAMES = ("full", "full-mnist5k", "quick", "smoke")


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m deepcheck reproduce``."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="budget", action="store_const", const="quick",
                   help="embedded data, tiny flows, a few minutes on 2 CPU cores (the default budget)")
    g.add_argument("--full", dest="budget", action="store_const", const="full",
                   help="Fashion-MNIST (20k training images; OOD: noise and MNIST-5k) at the small configuration, "
                        "exhaustive verification (long: use --device cuda where there is a GPU)")
    g.add_argument("--budget", dest="budget", choices=BUDGET_NAMES, help="the budget by name")
    parser.set_defaults(budget="quick")
    parser.add_argument("--out", default=None, help="output folder (default: out/<budget>)")
    parser.add_argument("--seed", type=nonneg_int, default=0, help="seed of every random draw")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the deep flows run")
    parser.add_argument("--force", action="store_true", help="rerun every step, ignoring cached results")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (none either when not a TTY)")


def main(name: str, args: argparse.Namespace) -> int:
    """Run the pipeline; print each step's status and where the report is; return the exit status (1: a check
    failed or a step raised)."""
    out = str(writable_dir(args.out or os.path.join("out", args.budget), "--out"))
    device = start(args)

    from ..reproduce import run

    command = "python -m deepcheck " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""
    results = run(args.budget, out, seed=args.seed, device=device, force=args.force,
                  progress=show_progress(args.no_progress), command=command)
    for s in results["steps"]:
        line = f"{s['name']:>24}: {s['status']}"
        if s["status"] in ("not run", "failed"):
            line += f" ({s['reason']})"
        print(line)
    print(f"report: {os.path.join(out, 'report.md')}  results: {os.path.join(out, 'results.json')}")
    return int(results["run"]["exit_status"])
