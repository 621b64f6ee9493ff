"""The run of ``python -m deepcheck reproduce`` (:func:`run`; its command line is :mod:`deepcheck.commands.reproduce`).

:func:`run` executes the linear-flow steps (:mod:`.steps_linear`) and the deep-flow steps (:mod:`.steps_deep`)
through the cached step runner (:mod:`.pipeline`), then writes ``results.json`` (every step record, the run
settings, package versions) and ``report.md`` (rendered from the same records, :mod:`.report`). The exit
status is 1 when a verification check fails or a step raises, 0 otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..fileio import atomic_write
from . import report as rep
from . import steps_deep, steps_linear
from .budget import BUDGETS, Budget
from .pipeline import Context, run_step

NOT_REPRODUCED = [
    "CIFAR-10 (the paper's teaser image and, most likely, its main experiments): no CIFAR-10 training set is "
    "available offline and nothing may be downloaded; the deep experiments use the embedded 8x8 digits (quick; "
    "OOD: uniform noise and Fashion-MNIST resampled to 8x8) or Fashion-MNIST 28x28 (full; OOD: uniform noise and "
    "MNIST-5k) instead, so bits/dim are comparable with the paper's in shape only, not in value.",
    "The paper's exact architectures, training settings, norms, budgets and hybrid objective are not available "
    "(only its abstract and teaser figure are); the settings used here are listed under each step.",
    "Theorem statements of the paper: the linear-flow results verified here are R1-R7 of docs/theory.md, derived anew.",
]


def run(budget: Budget | str = "quick", out: str | os.PathLike = "out/quick", *, seed: int = 0, device: str = "cpu",
        force: bool = False, progress: bool = True, command: str = "") -> dict[str, Any]:
    """Run every step, write ``results.json`` and ``report.md`` into ``out``; return the results dictionary.

    ``results["exit_status"]`` is 1 when a verification check failed or a step raised, else 0.
    """
    import matplotlib

    matplotlib.use("Agg")
    from tqdm.auto import tqdm

    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {sorted(BUDGETS)}, got {budget!r}")
        budget = BUDGETS[budget]
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget or a name, got {type(budget).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(budget=budget, seed=seed, device=device, out=out, force=force, progress=progress)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.perf_counter()
    steps = steps_linear.STEPS + steps_deep.deep_steps(budget)
    bar = tqdm(steps, desc="reproduce", disable=not progress)
    for step in bar:
        bar.set_postfix_str(step.name)
        ctx.records[step.name] = run_step(step, ctx)
    records = list(ctx.records.values())
    failed = [r["name"] for r in records if r["status"] == "failed"]
    run_info = {"command": command or f"python -m deepcheck reproduce --budget {budget.name} --seed {seed}",
                "budget": budget.name, "seed": seed, "device": device, "started": started,
                "seconds": time.perf_counter() - t0, "versions": rep.package_versions(),
                "settings": dataclasses.asdict(budget), "failed_steps": failed,
                "exit_status": 1 if failed else 0}
    results = {"run": run_info, "steps": records, "not_reproduced": NOT_REPRODUCED}
    rep.write_json(out / "results.json", results)
    atomic_write(out / "report.md", rep.render_report(run_info, records, out, NOT_REPRODUCED))
    return rep.to_jsonable(results)
