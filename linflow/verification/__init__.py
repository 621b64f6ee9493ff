"""Numerical and symbolic verification of R1-R7: every closed form against an independent method.

Each submodule (``l2``, ``box``, ``averaged``, ``training``, ``symbolic``) defines check functions decorated with
:func:`check`. A check takes ``(rng, quick)`` and returns ``(worst_discrepancy, cases, detail)``; it passes when
``worst_discrepancy <= tol``. ``python -m linflow verify`` runs them all and prints a table.

Beside the checks: :mod:`.cases` (the case generators shared with ``tests/strategies.py``) and
:mod:`.derivations` (the sympy derivations, re-exported as ``linflow.symbolic``).
"""

from __future__ import annotations

import importlib
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

SUBMODULES = ("l2", "box", "averaged", "training", "symbolic")


@dataclass(frozen=True)
class CheckResult:
    """One verified result: which result (R1-R7 of docs/theory.md), which two methods were compared, and how closely."""

    result: str
    name: str
    method: str
    worst: float
    tol: float
    cases: int
    seconds: float
    detail: str = ""
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", bool(np.isfinite(self.worst) and self.worst <= self.tol))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Check:
    result: str
    name: str
    method: str
    tol: float
    fn: Callable[[np.random.Generator, bool], tuple[float, int, str]]


REGISTRY: list[_Check] = []


def check(result: str, method: str, tol: float) -> Callable:
    """Register ``fn(rng, quick) -> (worst_discrepancy, cases, detail)`` as the verification of ``result``."""

    def deco(fn: Callable) -> Callable:
        REGISTRY.append(_Check(result, fn.__name__, method, float(tol), fn))
        return fn

    return deco


def load_all() -> list[_Check]:
    for mod in SUBMODULES:
        importlib.import_module(f"{__name__}.{mod}")
    return sorted(REGISTRY, key=lambda c: (c.result, c.name))


def valid_tags() -> list[str]:
    """The result tags that ``only`` accepts (``R1`` ... ``R7``, ``SYM``)."""
    return sorted({c.result for c in load_all()})


def run_checks(seed: int = 0, quick: bool = True, only: str | None = None, progress: bool = True) -> list[CheckResult]:
    """Run every registered check (or those of the result tag ``only``, e.g. ``"R3"`` or ``"SYM"``, or the single
    check named ``only``), each with its own rng, seeded by ``(seed, crc32(check name))`` so that a check sees the
    same cases whether it runs alone or with the others. An ``only`` that names no tag and no check is a
    ValueError listing the valid tags."""
    from tqdm.auto import tqdm

    checks = load_all()
    if only is not None:
        if not isinstance(only, str):
            raise TypeError(f"only must be a str or None, got {type(only).__name__}")
        key = only.strip()
        checks = [c for c in checks if c.result.upper() == key.upper() or c.name == key]
        if not checks:
            raise ValueError(f"only={only!r} names no verification check; valid tags: {', '.join(valid_tags())} "
                             "(or the name of one check)")
    out = []
    for c in tqdm(checks, desc="verify", disable=not progress):
        rng = np.random.default_rng([seed, zlib.crc32(c.name.encode())])
        t0 = time.perf_counter()
        try:
            worst, cases, detail = c.fn(rng, quick)
        except Exception as exc:  # a crash is a failed check, reported as such
            worst, cases, detail = float("inf"), 0, f"error: {type(exc).__name__}: {exc}"
        out.append(CheckResult(c.result, c.name, c.method, float(worst), c.tol, int(cases),
                               time.perf_counter() - t0, detail))
    return out


def format_table(results: list[CheckResult]) -> str:
    """A markdown table: result, check, method pair, worst discrepancy, tolerance, cases, verdict."""
    lines = ["| result | check | methods compared | worst discrepancy | tol | cases | time (s) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.result} | {r.name} | {r.method} | {r.worst:.2e} | {r.tol:.0e} | {r.cases} | "
                     f"{r.seconds:.2f} | {'pass' if r.passed else 'FAIL'} |")
    return "\n".join(lines)
