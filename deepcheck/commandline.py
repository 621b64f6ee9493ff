"""Conventions of the command lines ``python -m deepcheck`` and ``python -m bench`` (``python -m linflow``, which
may not import deepcheck, follows them in ``linflow/__main__.py``).

* A user error -- a bad option value (argparse), or a ``ValueError``/``TypeError``/``OSError`` (``FileNotFoundError``
  included) raised by the library -- prints one line ``error: <message>`` on stderr and exits with status 2, no
  traceback; ``--debug`` prints the traceback before that line (:func:`guarded`).
* Every option has a help text and its default is shown (:class:`Parser` uses ``ArgumentDefaultsHelpFormatter``).
* Outputs are checked writable before any work starts (:func:`writable_dir`, :func:`writable_file`).
* Progress bars go to stderr and are shown only on a terminal (:func:`show_progress`).

This module imports the standard library only, so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

__all__ = ["UsageError", "USER_ERRORS", "Parser", "guarded", "one_line", "positive_int", "nonneg_int",
           "nonneg_float", "positive_float", "fraction", "writable_dir", "writable_file", "show_progress"]


class UsageError(Exception):
    """A mistake in the command line (an option value, an output that cannot be written): exit status 2."""


USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, ValueError, TypeError, OSError)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that shows defaults in ``--help`` and raises :class:`UsageError` instead of printing
    the usage and exiting (so that :func:`guarded` prints the one-line error)."""

    def __init__(self, *args: object, **kw: object) -> None:
        kw.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (whitespace collapsed); the type's name when the message is empty."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def guarded(body: Callable[[], int | None], *, debug: bool = False) -> int:
    """Run ``body()`` and return its exit status; a user error (:data:`USER_ERRORS`) prints ``error: <message>``
    on stderr and returns 2 (with ``debug``, the traceback first); ``SystemExit`` (``--help``) returns its code;
    Ctrl-C prints ``error: interrupted`` and returns 130."""
    try:
        return int(body() or 0)
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return int(code or 0)
        print(f"error: {code}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------------ option types (argparse)
def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _bounded(kind: type, ok: Callable[[float], bool], phrase: str, name: str) -> Callable[[str], int | float]:
    """An argparse ``type``: ``text`` as ``kind`` (finite for floats, :func:`_number`) that satisfies ``ok``, else
    ``must be <phrase>, got '<text>'``."""

    def parse(text: str) -> int | float:
        value = kind(_number(text, kind))
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {phrase}, got {text!r}")
        return value

    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = f"{phrase[0].upper()}{phrase[1:]}."
    return parse


positive_int = _bounded(int, lambda v: v >= 1, "an integer >= 1", "positive_int")
nonneg_int = _bounded(int, lambda v: v >= 0, "an integer >= 0", "nonneg_int")
nonneg_float = _bounded(float, lambda v: v >= 0, "a finite number >= 0", "nonneg_float")
positive_float = _bounded(float, lambda v: v > 0, "a finite number > 0", "positive_float")
fraction = _bounded(float, lambda v: 0 <= v <= 1, "a number in [0, 1]", "fraction")


# ------------------------------------------------------------------------------------ outputs
def _probe(folder: Path) -> None:
    """Create ``folder`` if needed and make (and remove) a temporary file in it; ``OSError`` when that fails."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass


def writable_dir(path: str | Path, option: str) -> Path:
    """Create the folder ``path`` if needed and check that a file can be made in it; :class:`UsageError` naming
    ``option`` otherwise. Call it before any work, so that a run never fails at the end for want of a folder."""
    p = Path(path)
    try:
        _probe(p)
    except OSError as exc:
        raise UsageError(f"{option} {p} is not a writable folder: {exc.strerror or one_line(exc)}") from exc
    return p


def writable_file(path: str | Path, option: str) -> Path:
    """Check that the file ``path`` can be written (its folder is created if needed; an existing file is left
    as it is); :class:`UsageError` naming ``option`` otherwise."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {p} is a folder; give a file name")
    try:
        _probe(p.parent)
    except OSError as exc:
        raise UsageError(f"{option} {p} cannot be written: {exc.strerror or one_line(exc)}") from exc
    return p


def show_progress(no_progress: bool) -> bool:
    """Progress bars are shown unless ``--no-progress`` was given or stderr is not a terminal."""
    stream = sys.stderr
    return not no_progress and bool(getattr(stream, "isatty", lambda: False)())
