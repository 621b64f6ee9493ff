"""Numerical and symbolic verification of DESIGN R1-R7: every closed form against an independent method.

Each submodule (``l2``, ``box``, ``training``, ``symbolic``) defines check functions decorated with
:func:`check`. A check takes ``(rng, quick)`` and returns ``(worst_discrepancy, cases, detail)``; it passes when
``worst_discrepancy <= tol``. ``python -m linflow verify`` runs them all and prints a table.
"""

from __future__ import annotations

import importlib
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

SUBMODULES = ("l2", "box", "training", "symbolic")


@dataclass(frozen=True)
class CheckResult:
    """One verified result: which DESIGN result, which two methods were compared, and how closely."""

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


def run_checks(seed: int = 0, quick: bool = True, only: str | None = None, progress: bool = True) -> list[CheckResult]:
    """Run every registered check (or those whose result starts with ``only``), each with its own rng, seeded by
    ``(seed, crc32(check name))`` so that a check sees the same cases whether it runs alone or with the others."""
    from tqdm.auto import tqdm

    checks = [c for c in load_all() if only is None or c.result.startswith(only)]
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
