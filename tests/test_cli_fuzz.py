"""Malformed command lines never end in a traceback, nor in exit status 0 with a non-finite number.

Hypothesis draws argument lists from each CLI's own option names and from awkward values (negative, zero, NaN,
infinities, huge, empty, words, stray dashes) and runs them in-process through ``main(argv)``. The property: the
status is 0 (the arguments were valid, or ``--help``) or 2 with exactly one stderr line ``error: ...``; never a
traceback; and on status 0 no NaN/inf reached the settings (``deepcheck``) or the output.

So that a valid draw costs milliseconds, the work behind a parse is replaced: each ``deepcheck`` command's
``main`` by one that reports whether every parsed number is finite (the parsing, the option types and the error
handling are the real ones); ``linflow verify``'s checks by checks that pass at once (the ``--only`` validation,
the table and the JSON file are real); ``bench``'s benchmark modules by ones that print their name. A few real
processes run at the end, unreplaced.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
NASTY = ["0", "-1", "-0.1", "1e309", "-1e309", "nan", "NaN", "inf", "-inf", "", " ", "abc", "-", "--", "1.5", "3",
         "2", "R9", "r1", "R1", "SYM", "cuda", "cpu", "glow", "linf", "l2", "digits", "test", "x" * 40, "0x10", "1_0"]
VALUES = st.one_of(st.sampled_from(NASTY), st.integers(-5, 300).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(alphabet="abcR019.-=_ /", max_size=6))


# a NaN or an infinity printed as a number (a table cell, a value), not the "inf" of a name such as "L-inf"
NONFINITE_NUMBER = re.compile(r"(?:^|[\s|=(,:])[-+]?(?:nan|inf(?:inity)?)(?=$|[\s|),])", re.IGNORECASE | re.MULTILINE)


def tokens(options: list[str]) -> st.SearchStrategy[list[str]]:
    """Mostly ``option value`` pairs, with stray options and stray values between them."""
    word = st.one_of(st.tuples(st.sampled_from(options), VALUES).map(list), st.sampled_from(options).map(lambda o: [o]),
                     VALUES.map(lambda v: [v]))
    return st.lists(word, max_size=6).map(lambda groups: [w for g in groups for w in g])


def run_captured(main: object, argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)  # type: ignore[operator]
    return status, out.getvalue(), err.getvalue()


def check_outcome(status: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err, (out, err)
    assert status in (0, 2), (status, out, err)
    if status == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    else:
        assert "NONFINITE" not in out and not NONFINITE_NUMBER.search(out), out


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def _report_parsed(name: str, args: object) -> int:
    print(name, "parsed:", "finite" if all(_finite(v) for v in vars(args).values()) else "NONFINITE")
    return 0


def _options(command: str) -> list[str]:
    from deepcheck.cli import build_parser

    parser = build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return sorted(o for a in sub._actions for o in a.option_strings if o != "--debug")


COMMAND_OPTIONS = {c: _options(c) for c in ("train", "attack", "evaluate", "reproduce")}


@given(data=st.data())
def test_deepcheck_never_shows_a_traceback(data):
    import importlib

    from deepcheck.cli import COMMANDS, main

    command = data.draw(st.sampled_from([*COMMAND_OPTIONS, "trian", "--nope"]), label="command")
    argv = [command, *data.draw(tokens(COMMAND_OPTIONS.get(command, ["--out", "-h"])), label="args")]
    with pytest.MonkeyPatch.context() as mp:
        for module_name, _ in COMMANDS.values():
            mp.setattr(importlib.import_module(module_name), "main", _report_parsed)
        status, out, err = run_captured(main, argv)
    check_outcome(status, out, err)


REQUIRED = {"train": ["--out", "x"], "attack": ["--checkpoint", "x"], "evaluate": ["--checkpoint", "x"],
            "reproduce": []}


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_no_option_accepts_a_non_finite_number(command):
    """Every option that takes a value, given NaN, an infinity or an overflowing number, is refused or (a name,
    a path) keeps it as text: no non-finite number is parsed."""
    import importlib

    from deepcheck.cli import COMMANDS, build_parser, main

    parser = build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    takes_value = [a.option_strings[0] for a in sub._actions if a.option_strings and a.nargs != 0]
    assert len(takes_value) >= 4
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importlib.import_module(COMMANDS[command][0]), "main", _report_parsed)
        for option in takes_value:
            for value in ("nan", "inf", "-inf", "1e309", "-1e309"):
                status, out, err = run_captured(main, [command, *REQUIRED[command], option, value])
                check_outcome(status, out, err)


@given(args=tokens(["--only", "--seed", "--full", "--json", "--no-progress", "-h", "verify", "nope"]))
def test_linflow_verify_never_shows_a_traceback(args, tmp_path_factory):
    import linflow.verification as verification
    from linflow.__main__ import main

    checks = [replace(c, fn=lambda rng, quick: (0.0, 1, "")) for c in verification.load_all()]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.getbasetemp())  # a drawn --json FILE lands there
        mp.setattr(verification, "load_all", lambda: checks)
        status, out, err = run_captured(main, ["verify", *args])
    check_outcome(status, out, err)


@given(args=st.lists(st.one_of(st.sampled_from(["l2", "box", "train", "attacks", "-h", "--help", "--x"]), VALUES),
                     max_size=5))
def test_bench_never_shows_a_traceback(args):
    import bench.__main__ as bench_main

    fake = types.SimpleNamespace(import_module=lambda name: types.SimpleNamespace(main=lambda: print("ran", name)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench_main, "importlib", fake)
        status, out, err = run_captured(bench_main.main, args)
    check_outcome(status, out, err)


@pytest.mark.parametrize("argv", [["-m", "deepcheck", "attack", "--checkpoint", "x", "--steps", "nan"],
                                  ["-m", "deepcheck", "train", "--out"],
                                  ["-m", "linflow", "verify", "--only", ""],
                                  ["-m", "bench", "--x"]])
def test_real_processes_on_malformed_arguments(argv):
    res = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    check_outcome(res.returncode, res.stdout, res.stderr)
    assert res.returncode == 2
