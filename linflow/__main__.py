"""``python -m linflow verify [--seed N] [--full] [--only R1] [--json FILE]``."""

from __future__ import annotations

import argparse
import json
import sys

from .verification import format_table, run_checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="verify DESIGN R1-R7 numerically and symbolically, print a table")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--full", action="store_true", help="more and larger cases (slower)")
    v.add_argument("--only", default=None, help="only results whose name starts with this, e.g. R1")
    v.add_argument("--json", default=None, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    results = run_checks(seed=args.seed, quick=not args.full, only=args.only)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([r.as_dict() for r in results], fh, indent=2)
    failed = [r for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)} of {len(results)} checks passed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
