"""Writing the artifacts of ``python -m deepcheck reproduce``: atomic files, ``results.json`` and ``report.md``.

The report is rendered from the same dictionaries that go into ``results.json`` (one per step, see
:mod:`deepcheck.reproduce`), with one number format (:func:`fmt`), so every number in ``report.md`` can be
found in ``results.json``. Files are written atomically (:func:`deepcheck.fileio.atomic_write`): a crash never
leaves a half-written report or step cache.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from ..fileio import atomic_write

VERSIONED_PACKAGES = ("numpy", "scipy", "torch", "cvxpy", "clarabel", "scs", "sympy", "matplotlib",
                      "scikit-learn", "mlxtend", "tqdm")


def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy/torch scalars and arrays, tuples, paths and dataclasses into JSON types.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON has no NaN).
    """
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, str | bool) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # a torch tensor, without importing torch
        obj = obj.detach().cpu().numpy()
    if hasattr(obj, "tolist") and not isinstance(obj, int | float):
        return to_jsonable(obj.tolist())
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return float(obj)
    if isinstance(obj, Iterable):
        return [to_jsonable(v) for v in obj]
    try:
        return to_jsonable(float(obj))
    except (TypeError, ValueError):
        return str(obj)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` (made JSON-safe by :func:`to_jsonable`) as indented JSON."""
    return atomic_write(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def fmt(x: Any) -> str:
    """The one number format of the report: 4 significant digits (``%.4g``); ints as ints; text as is."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, str):
        return x
    try:
        return f"{float(x):.4g}"
    except (TypeError, ValueError):
        return str(x)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table; every cell goes through :func:`fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def package_versions() -> dict[str, str]:
    """Python, platform and the versions of the packages the pipeline uses (``"not installed"`` if absent)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": str(os.cpu_count())}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    out["git_commit"] = commit or "unknown"
    return out


def _settings_table(summary: str, settings: Mapping[str, Any]) -> list[str]:
    """A collapsed markdown table of ``settings``; nested sections are flattened to ``section.field`` rows."""
    rows = []
    for k, v in settings.items():
        if isinstance(v, Mapping):
            rows += [[f"{k}.{f}", x if isinstance(x, str) else json.dumps(x)] for f, x in v.items()]
        else:
            rows.append([k, v if isinstance(v, str) else json.dumps(v)])
    return [f"<details><summary>{summary}</summary>", "", markdown_table(["setting", "value"], rows), "",
            "</details>", ""]


def render_report(run: Mapping[str, Any], steps: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike,
                  not_reproduced: Sequence[str]) -> str:
    """``report.md``: run settings, per-step status/timing, each step's tables and figures, versions, gaps.

    ``steps`` are the step records of ``results.json``: ``name``, ``title``, ``status`` (``ok``, ``cached``,
    ``not run``, ``failed``), ``reason``, ``seconds``, ``settings``, ``tables`` (``title``, ``header``,
    ``rows``), ``figures`` (paths relative to ``out_dir``) and ``notes``.
    """
    out: list[str] = ["# flowrobust: reproduction report", ""]
    out.append(f"Command: `{run.get('command', '')}`  ")
    out.append(f"Budget: **{run.get('budget')}**, seed {run.get('seed')}, device {run.get('device')}, "
               f"started {run.get('started')} UTC, total {fmt(float(run.get('seconds', 0.0)))} s.")
    out.append("")
    out.append("## Steps")
    out.append("")
    out.append(markdown_table(
        ["step", "status", "time (s)", "note"],
        [[s["name"], s["status"], float(s.get("seconds", 0.0)), s.get("reason", "")] for s in steps]))
    out.append("")
    if run.get("settings"):
        out += _settings_table("all settings of this run", run["settings"])
    for s in steps:
        out.append(f"## {s.get('title', s['name'])}")
        out.append("")
        if s["status"] in ("not run", "failed"):
            out.append(f"**{s['status']}: {s.get('reason', '')}**")
            out.append("")
        for note in s.get("notes", []):
            out.append(note)
            out.append("")
        for tab in s.get("tables", []):
            if tab.get("title"):
                out.append(f"**{tab['title']}**")
                out.append("")
            out.append(markdown_table(tab["header"], tab["rows"]))
            out.append("")
        for fig in s.get("figures", []):
            if str(fig).endswith(".png"):
                out.append(f"![{Path(fig).stem}]({fig})")
                out.append("")
        if s.get("settings"):
            out += _settings_table("settings", s["settings"])
    out.append("## Not reproduced")
    out.append("")
    for line in not_reproduced:
        out.append(f"- {line}")
    out.append("")
    out.append("## Package versions")
    out.append("")
    out.append(markdown_table(["package", "version"], list(run.get("versions", {}).items())))
    out.append("")
    return "\n".join(out)
