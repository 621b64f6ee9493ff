"""``python -m linflow verify [--seed N] [--full] [--only R1] [--json FILE] [--no-progress] [--debug]``.

A user error (an unknown ``--only`` tag, a bad option, an unwritable ``--json``) prints one line ``error: ...`` on
stderr and exits with status 2 (``--debug`` shows the traceback); the exit status is 1 when a check fails. The
command line follows ``deepcheck.commandline``'s conventions without importing deepcheck (linflow never does).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from pathlib import Path


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _seed(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m linflow``."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="python -m linflow", description=__doc__.split("\n\n")[0], formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    v = sub.add_parser("verify", help="verify R1-R7 numerically and symbolically, print a table", formatter_class=fmt)
    v.add_argument("--seed", type=_seed, default=0, help="seed of the random cases")
    v.add_argument("--full", action="store_true", help="more and larger cases (slower)")
    v.add_argument("--only", default=None,
                   help="only the checks of this result tag (R1 ... R7, SYM) or the one check of this name")
    v.add_argument("--json", default=None, help="also write the results as JSON to this file")
    v.add_argument("--no-progress", action="store_true", help="no progress bar (none either when not a TTY)")
    v.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def _check_writable(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise _UsageError(f"--json {p} is a folder; give a file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p.parent):
            pass
    except OSError as exc:
        raise _UsageError(f"--json {p} is not writable: {exc.strerror or exc}") from exc
    return p


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    mask = os.umask(0o022)
    os.umask(mask)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~mask)
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _verify(args: argparse.Namespace) -> int:
    import json

    from .verification import format_table, run_checks

    out = _check_writable(args.json) if args.json else None
    progress = not args.no_progress and sys.stderr.isatty()
    results = run_checks(seed=args.seed, quick=not args.full, only=args.only, progress=progress)
    print(format_table(results))
    if out is not None:
        _write_atomically(out, json.dumps([r.as_dict() for r in results], indent=2))
    failed = [r for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)} of {len(results)} checks passed")
    return 1 if failed or not results else 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status (2: user error, 1: a check failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _verify(build_parser().parse_args(argv))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except (_UsageError, ValueError, TypeError, OSError) as exc:
        if "--debug" in argv:
            traceback.print_exc()
        print("error: " + (" ".join(str(exc).split()) or type(exc).__name__), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
