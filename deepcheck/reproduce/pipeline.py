"""The step runner of ``reproduce`` and its cache.

A :class:`Step` computes JSON-able results, tables and figures from a :class:`Context` (budget, seed, device,
output directory, the records of the steps run so far). :func:`run_step` writes its record to
``<out>/steps/<name>.json`` (atomically) and skips the step on a rerun when a record with the same key exists,
finished, and its figures and files are on disk (``force`` reruns it). The key (:func:`step_key`) hashes the
step's own settings sections of the :class:`~deepcheck.reproduce.budget.Budget`, the seed, the device, the
source of :mod:`linflow` and :mod:`deepcheck` and the keys of the steps it reads (``after``).

A step that cannot run for a reason of data (e.g. the model it fine-tunes was not trained) raises
:class:`NotAvailable` and is recorded as ``not run: <reason>``; any other exception is recorded as ``failed``
with its traceback (and fails the run). Nothing is faked.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import figures
from . import report as rep
from .budget import Budget


class NotAvailable(Exception):
    """What a step needs is absent (an earlier step did not produce it): the step is ``not run: <reason>``."""


@dataclass
class StepOutput:
    """What a step returns: JSON-able ``results``, report ``tables`` (title, header, rows), figures
    (stem -> matplotlib Figure), free-text ``notes``, other ``files`` it wrote (paths relative to the output
    directory, e.g. checkpoints: the cache is valid only while they exist) and whether the step ``passed``
    (False fails the run)."""

    results: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    passed: bool = True


@dataclass
class Context:
    """A run: its budget, seed, device and output directory, and the records of the steps run so far."""

    budget: Budget
    seed: int
    device: str
    out: Path
    force: bool = False
    progress: bool = True
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    def table(self, title: str, header: list[str], rows: list[list[Any]]) -> dict[str, Any]:
        return {"title": title, "header": header, "rows": rows}


@dataclass(frozen=True)
class Step:
    """A named step: ``fn(ctx) -> StepOutput``; ``settings`` names the :class:`Budget` sections it reads
    (e.g. ``("eval", "teaser")``) and ``after`` the steps whose results it reads."""

    name: str
    title: str
    fn: Callable[[Context], StepOutput]
    settings: tuple[str, ...]
    after: tuple[str, ...] = ()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the source of :mod:`linflow` and :mod:`deepcheck`: a code change invalidates the step cache
    (trained models are still reused: their checkpoints are named by the training settings alone)."""
    import deepcheck
    import linflow

    h = hashlib.sha256()
    for pkg in (linflow, deepcheck):
        root = Path(pkg.__file__).resolve().parent
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def step_key(step: Step, ctx: Context) -> str:
    """Cache key: the step's settings sections, the seed, the device, the code and the keys of the steps it
    reads."""
    blob = {"settings": ctx.budget.settings(step.settings), "seed": ctx.seed, "device": ctx.device,
            "code": code_fingerprint(), "after": {a: ctx.records.get(a, {}).get("key") for a in step.after}}
    return hashlib.sha256(json.dumps(rep.to_jsonable(blob), sort_keys=True).encode()).hexdigest()[:16]


def _cached(path: Path, key: str, out: Path) -> dict[str, Any] | None:
    """The finished record at ``path`` if its key is ``key`` and all its figures and files are on disk."""
    try:
        old = rep.read_json(path)
    except (OSError, json.JSONDecodeError):
        return None
    if (old and old.get("key") == key and old.get("status") == "ok"
            and all((out / f).is_file() and (out / f).stat().st_size > 0
                    for f in old.get("figures", []) + old.get("files", []))):
        old["status"] = "cached"
        old["reason"] = f"cached: ran in {old.get('seconds', 0.0):.1f} s"
        return old
    return None


def run_step(step: Step, ctx: Context) -> dict[str, Any]:
    """Run ``step`` (or reuse its cached record), save its figures and record; return the record."""
    path = ctx.out / "steps" / f"{step.name}.json"
    key = step_key(step, ctx)
    if path.exists() and not ctx.force:
        old = _cached(path, key, ctx.out)
        if old is not None:
            return old
    record: dict[str, Any] = {"name": step.name, "title": step.title, "key": key,
                              "settings": ctx.budget.settings(step.settings), "seed": ctx.seed,
                              "device": ctx.device}
    t0 = time.perf_counter()
    try:
        out = step.fn(ctx)
    except NotAvailable as exc:
        record.update(status="not run", reason=str(exc), seconds=time.perf_counter() - t0, results={},
                      tables=[], figures=[], notes=[])
        return record
    except Exception as exc:  # noqa: BLE001 - a crashing step is reported and fails the run
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0,
                      results={}, tables=[], figures=[], notes=["```", traceback.format_exc(limit=6), "```"])
        return record
    paths = []
    for stem, fig in out.figures.items():
        for p in figures.save_figure(fig, ctx.out / "figures", stem):
            paths.append(str(p.relative_to(ctx.out)))
    record.update(status="ok" if out.passed else "failed", reason="" if out.passed else "check failed",
                  seconds=time.perf_counter() - t0, results=rep.to_jsonable(out.results),
                  tables=rep.to_jsonable(out.tables), figures=paths, files=list(out.files), notes=out.notes)
    if out.passed:
        rep.write_json(path, record)
    return record
