"""Run the benchmark scripts: ``python -m bench`` (all) or ``python -m bench l2 box`` (some); ``--help`` lists them.

Works from any folder: ``python -m bench`` with the repository on ``PYTHONPATH``, or ``python path/to/bench``
(the repository root is then put on ``sys.path``). The benchmarks find their files relative to their packages,
never the current folder. A bad name prints one line ``error: ...`` and exits with status 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python path/to/bench``: make ``import bench`` work from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench  # noqa: E402
from deepcheck.commandline import Parser, UsageError, guarded  # noqa: E402


def names() -> list[str]:
    """The benchmarks: the ``bench_<name>.py`` modules of this folder."""
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))


def first_line(name: str) -> str:
    """The first line of the docstring of ``bench/bench_<name>.py``, read without importing it."""
    import ast

    doc = ast.get_docstring(ast.parse((Path(bench.__file__).parent / f"bench_{name}.py").read_text("utf-8")))
    return (doc or "").strip().split("\n")[0]


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks (all by default); return the exit status (2: an unknown name)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    available = names()

    def body() -> int:
        epilog = "benchmarks:\n" + "\n".join(f"  {n:<10} {first_line(n)}" for n in available)
        import argparse

        parser = Parser(prog="python -m bench", description=__doc__.split("\n\n")[0], epilog=epilog,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("benchmark", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
        parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
        chosen = parser.parse_args(argv).benchmark or available
        unknown = [n for n in chosen if n not in available]
        if unknown:
            raise UsageError(f"unknown benchmark(s) {', '.join(map(repr, unknown))}; available: {', '.join(available)}")
        for name in chosen:
            print(f"\n=== bench_{name} ===", flush=True)
            importlib.import_module(f"bench.bench_{name}").main()
        return 0

    return guarded(body, debug="--debug" in argv)


if __name__ == "__main__":
    sys.exit(main())
