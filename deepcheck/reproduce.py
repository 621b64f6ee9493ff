"""``python -m deepcheck reproduce``: verify DESIGN R1-R7 and regenerate the paper's figures, with a report.

The pipeline is a list of *steps* (:data:`STEPS`). Each step computes JSON-able results, tables and figures
from a :class:`Budget` and a seed; the runner writes its record to ``<out>/steps/<name>.json`` (atomically) and
skips it on a rerun when a record with the same settings, seed, device and code exists and its figures are on
disk (``--force`` reruns everything). Trained models are checkpointed under ``<out>/checkpoints``. At the end
``results.json`` (every step record, the run settings, package versions) and ``report.md`` (rendered from the
same records, see :mod:`deepcheck.report`) are written. A step whose building blocks are missing (a module
or a function of the package not available) is recorded as ``not run: <reason>``; nothing is faked.

The exit status is 1 when a verification check fails or a step raises, 0 otherwise.

Budgets (:data:`BUDGETS`): ``smoke`` (tests: every artifact, minimal settings), ``quick`` (default: the
embedded 8x8 digits, tiny GLOW and RealNVP, minutes on 2 CPU cores), ``full`` (Fashion-MNIST 28x28 at the
small configuration, MNIST-5k as a second OOD set, exhaustive verification; hours on a CPU, use ``--device
cuda`` where there is a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import figures
from . import report as rep
from .figures import deep, linear
from .figures.availability import NotAvailable, require

# ================================================================================================ settings


@dataclass(frozen=True)
class Budget:
    """Every setting of a run. Linear-flow settings first, then the deep flows'. Units: eps in data units
    (pixels in [0, 1] for images); NLL in nats, bits/dim for images."""

    name: str
    # verification of R1-R7 (linflow.verification.run_checks): quick mode; only these results (None: all)
    verify_quick: bool = True
    verify_only: tuple[str, ...] | None = None
    # geometry (2-D flow)
    geometry_eps: float = 0.5
    geometry_brute_force: int = 20000
    # NLL rise vs eps on a d-dim flow: exact L2, PGD on the torch LinearFlow, certified L-inf interval
    attack_dim: int = 8
    attack_cond: float = 100.0
    attack_points: int = 8
    attack_eps: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
    attack_pgd_steps: int = 100
    attack_pgd_restarts: int = 2
    # water-filling on the digits pixels (64-d), R5
    waterfill_eps: float = 0.5
    # trade-off, R7: synthetic data
    tradeoff_dim: int = 3
    tradeoff_n: int = 30
    tradeoff_eps_train: tuple[float, ...] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)
    tradeoff_eps_attack: float = 1.0
    tradeoff_sample: bool = True
    tradeoff_checks: int = 3
    # deep flows
    deep_dataset: str = "digits"
    deep_ood: tuple[str, ...] = ("uniform-noise", "fashion-mnist")  # OOD sets; the first is the teaser's
    deep_config: str = "tiny"
    deep_models: tuple[str, ...] = ("glow", "realnvp")
    deep_modes: tuple[str, ...] = ("mle", "hybrid")
    deep_epochs: int = 30  # maximum likelihood, from scratch
    deep_batch_size: int = 64
    deep_lr: float = 1e-3
    deep_n_train: int | None = None
    finetune_epochs: int = 4  # hybrid models: fine-tuned from the maximum-likelihood model
    finetune_warmup: int = 20
    hybrid_lambda: float = 0.5
    train_eps: float = 0.05
    train_norm: str = "linf"
    train_pgd_steps: int = 3
    eval_norm: str = "linf"
    eval_eps: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1)
    eval_pgd_steps: int = 20
    eval_restarts: int = 0
    eval_n: int = 128
    teaser_model: str = "realnvp"
    teaser_eps: float = 0.05
    ood_eps: float = 0.1
    ood_pgd_steps: int = 40
    ood_n: int = 128
    grid_images: int = 4

    def section(self, prefix: str) -> dict[str, Any]:
        """The settings whose names start with one of the comma-separated ``prefix``es (for a step's cache key)."""
        keys = tuple(p.strip() for p in prefix.split(","))
        return {k: v for k, v in dataclasses.asdict(self).items() if k.startswith(keys)}


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        name="smoke", verify_only=("R4", "R5"), geometry_brute_force=4000, attack_dim=4, attack_points=3,
        attack_eps=(0.0, 0.2, 0.5),
        attack_pgd_steps=40, attack_pgd_restarts=1, tradeoff_dim=2, tradeoff_n=8,
        tradeoff_eps_train=(0.0, 0.3, 1.0), tradeoff_checks=1, deep_models=("glow", "realnvp"),
        deep_epochs=1, deep_n_train=128, finetune_epochs=1, train_pgd_steps=2, eval_eps=(0.0, 0.05),
        eval_pgd_steps=3, eval_n=16, ood_pgd_steps=3, ood_n=16, grid_images=2,
    ),
    "quick": Budget(name="quick"),
    "full": Budget(
        name="full", verify_quick=False, attack_dim=24, attack_points=16, attack_pgd_steps=300,
        attack_pgd_restarts=5, tradeoff_dim=4, tradeoff_n=60, deep_dataset="fashion-mnist",
        deep_ood=("uniform-noise", "mnist5k"), deep_config="small", deep_epochs=20, deep_n_train=20000,
        finetune_epochs=5, train_pgd_steps=5, eval_eps=(0.0, 0.005, 0.01, 0.02, 0.05, 0.1), eval_pgd_steps=50,
        eval_restarts=2, eval_n=1000, ood_pgd_steps=100, ood_n=1000, grid_images=6,
    ),
}

NOT_REPRODUCED = [
    "CIFAR-10 (the paper's teaser image and, most likely, its main experiments): no CIFAR-10 training set is "
    "available offline and nothing may be downloaded; the deep experiments use the embedded 8x8 digits (quick; "
    "OOD: uniform noise and Fashion-MNIST resampled to 8x8) or Fashion-MNIST 28x28 (full; OOD: uniform noise and "
    "MNIST-5k) instead, so bits/dim are comparable with the paper's in shape only, not in value.",
    "The paper's exact architectures, training settings, norms, budgets and hybrid objective are not available "
    "(only its abstract and teaser figure are); the settings used here are listed under each step.",
    "Theorem statements of the paper: the linear-flow results verified here are DESIGN R1-R7, derived afresh.",
]

# ================================================================================================ step machinery


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
    """A named step: ``fn(ctx) -> StepOutput``; ``settings`` names the :class:`Budget` fields it depends on
    (comma-separated prefixes) and ``after`` the steps whose results it reads."""

    name: str
    title: str
    fn: Callable[[Context], StepOutput]
    settings: str
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


def _key(step: Step, ctx: Context) -> str:
    """Cache key: the step's settings, the seed, the device, the code and the keys of the steps it reads."""
    blob = {"settings": ctx.budget.section(step.settings), "seed": ctx.seed, "device": ctx.device,
            "code": code_fingerprint(), "after": {a: ctx.records.get(a, {}).get("key") for a in step.after}}
    return hashlib.sha256(json.dumps(rep.to_jsonable(blob), sort_keys=True).encode()).hexdigest()[:16]


def run_step(step: Step, ctx: Context) -> dict[str, Any]:
    """Run ``step`` (or reuse its cached record), save its figures and record; return the record."""
    path = ctx.out / "steps" / f"{step.name}.json"
    key = _key(step, ctx)
    if path.exists() and not ctx.force:
        try:
            old = rep.read_json(path)
        except (OSError, json.JSONDecodeError):
            old = None
        if (old and old.get("key") == key and old.get("status") == "ok"
                and all((ctx.out / f).is_file() and (ctx.out / f).stat().st_size > 0
                        for f in old.get("figures", []) + old.get("files", []))):
            old["status"] = "cached"
            old["reason"] = f"cached: ran in {old.get('seconds', 0.0):.1f} s"
            return old
    record: dict[str, Any] = {"name": step.name, "title": step.title, "key": key, "settings":
                              ctx.budget.section(step.settings), "seed": ctx.seed, "device": ctx.device}
    t0 = time.perf_counter()
    try:
        out = step.fn(ctx)
    except NotAvailable as exc:
        record.update(status="not run", reason=str(exc), seconds=time.perf_counter() - t0, results={},
                      tables=[], figures=[], notes=[])
        return record
    except Exception as exc:  # noqa: BLE001 - a crashing step is reported and fails the run
        import traceback

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
    if out.passed and not out.results.get("missing"):  # a step with missing pieces is redone next time
        rep.write_json(path, record)
    return record


# ================================================================================================ the steps
# Each step is a plain function of the context; the computations are separate functions (``compute_*``) that
# the notebooks call too.


def step_verify(ctx: Context) -> StepOutput:
    """DESIGN R1-R7: ``linflow.verification.run_checks`` (the same as ``python -m linflow verify``)."""
    run_checks = require("linflow.verification", "run_checks")
    only = ctx.budget.verify_only
    if only is None:
        results = run_checks(seed=ctx.seed, quick=ctx.budget.verify_quick, progress=False)
    else:
        results = [r for prefix in only for r in run_checks(seed=ctx.seed, quick=ctx.budget.verify_quick,
                                                           only=prefix, progress=False)]
    if not results:
        raise NotAvailable("no verification checks are registered yet")
    rows = [[r.result, r.name, r.method, float(r.worst), float(r.tol), int(r.cases), float(r.seconds),
             "pass" if r.passed else "FAIL"] for r in results]
    failed = [r for r in results if not r.passed]
    out = StepOutput(results={"checks": [r.as_dict() for r in results], "n_checks": len(results),
                              "n_failed": len(failed)}, passed=not failed)
    out.tables.append(ctx.table("verification of DESIGN R1-R7 (closed form against an independent method)",
                                ["result", "check", "methods compared", "worst discrepancy", "tol", "cases",
                                 "time (s)", "verdict"], rows))
    out.notes.append(f"{len(results) - len(failed)} of {len(results)} checks passed"
                     + ("." if only is None else f" (this budget runs only the checks of {', '.join(only)}; "
                        "`python -m linflow verify` runs them all)."))
    for r in failed:
        out.notes.append(f"FAILED {r.result} {r.name}: worst {r.worst:.3g} > tol {r.tol:.1g}. {r.detail}")
    return out


def step_geometry(ctx: Context) -> StepOutput:
    r = linear.compute_geometry(ctx.budget.geometry_eps, ctx.budget.geometry_brute_force)
    rows = [[k, float(np.linalg.norm(p)), float(r["rise"][k]), float(r["brute_force_rise"][k]),
             float(r["drop"][k]), float(r["brute_force_drop"][k])] for k, p in enumerate(r["points"])]
    out = StepOutput(results=r)
    out.tables.append(ctx.table(f"2-D flow, L2 budget eps = {r['eps']:g}: NLL change (nats) of the optimal "
                                "perturbations against brute force",
                                ["point", "||x - mu||", "rise R1 (exact)", "rise (brute force max)",
                                 "change R2 (exact)", "change (brute force min)"], rows))
    out.notes.append(f"Universal perturbation +-eps u_min raises the NLL of the mean by eps^2/(2 s_min) = "
                     f"{rep.fmt(float(r['universal_rise']))} nats (R4); point 0 is the mean (the hard case of R1).")
    gap = np.max(np.abs(r["brute_force_rise"] - r["rise"]) / np.maximum(1.0, np.abs(r["rise"])))
    out.results["worst_gap_brute_force"] = float(gap)
    out.figures["geometry"] = figures.geometry_figure(r["mean"], r["cov"], r["eps"], r["points"],
                                                   r["delta_decrease"], r["delta_increase"], r["u_min"])
    return out


# ------------------------------------------------------------------------------------------------ NLL vs eps
def step_attack_vs_eps(ctx: Context) -> StepOutput:
    b = ctx.budget
    r = linear.compute_attack_vs_eps(b.attack_dim, b.attack_cond, b.attack_points, b.attack_eps, b.attack_pgd_steps,
                              b.attack_pgd_restarts, ctx.seed, ctx.device)
    out = StepOutput(results=r)

    def col(key: str, i: int) -> Any:
        return "n/a" if r.get(key) is None else float(r[key][i])

    rows = [[float(e), col("exact_l2", i), col("pgd_l2", i), col("linf_lower", i), col("linf_upper", i),
             col("pgd_linf", i)] for i, e in enumerate(r["eps"])]
    out.tables.append(ctx.table(f"mean NLL rise (nats) over {r['n_points']} points of a {r['dim']}-d flow "
                                f"(s_min = {rep.fmt(r['s_min'])})",
                                ["eps", "L2 exact (R1)", "L2 PGD", "L-inf lower (R3)", "L-inf upper (R3)",
                                 "L-inf PGD"], rows))
    if r.get("pgd_l2") is not None:
        out.notes.append(f"PGD (L2) fell short of the exact optimal NLL rise by a median relative "
                         f"{rep.fmt(r['pgd_l2_gap_median'])} and a worst {rep.fmt(r['pgd_l2_gap_worst'])} "
                         f"({b.attack_pgd_steps} steps, {b.attack_pgd_restarts} restarts; negative: PGD above "
                         "the optimum by rounding).")
    if r.get("pgd_linf_gap_worst") is not None:
        out.notes.append(f"PGD (L-inf) fell short of the certified upper bound by a median relative "
                         f"{rep.fmt(r['pgd_linf_gap_median'])} and a worst {rep.fmt(r['pgd_linf_gap_worst'])} "
                         "(exact where the interval is closed: vertex enumeration in small dimension).")
    for m in r["missing"]:
        out.notes.append(f"not run: {m}")
    out.figures["nll_vs_eps"] = figures.nll_vs_eps_figure(r["eps"], r["exact_l2"], r.get("pgd_l2"), r.get("linf_lower"),
                                                       r.get("linf_upper"), r.get("pgd_linf"))
    return out


# ------------------------------------------------------------------------------------------------ water-filling
def step_waterfilling(ctx: Context) -> StepOutput:
    r = linear.compute_waterfilling(ctx.budget.waterfill_eps, ctx.seed)
    w = r["worked"]
    out = StepOutput(results=r)
    out.tables.append(ctx.table(
        f"universal adversarial training (R5) on the 64-d digits pixels, eps = {r['eps']:g}",
        ["water level tau", "eigenvalues lifted", "KL(data || robust) (nats)", "worst rise, MLE flow (nats)",
         "worst rise, robust flow (nats)"],
        [[r["tau"], r["n_lifted"], r["kl"], r["rise_mle"], r["rise_robust"]]]))
    out.tables.append(ctx.table(
        "DESIGN R7 worked example, S = diag(4, 1, 0.25), eps = 1 (expected values from DESIGN.md)",
        ["quantity", "measured", "DESIGN"],
        [["tau", w["tau"], 1.125], ["robust eigenvalues", " ".join(rep.fmt(v) for v in w["eigvals"]), "1.125 1.125 4"],
         ["KL (nats)", w["kl"], 0.36649], ["worst rise at eps_a = 1, robust (nats)", w["rise_robust"], 0.4444],
         ["worst rise at eps_a = 1, MLE (nats)", w["rise_mle"], 2.0]]))
    out.figures["waterfilling"] = figures.waterfilling_figure(r["data_eigvals"], r["robust_eigvals"], r["tau"],
                                                              r["eps"])
    return out


# ------------------------------------------------------------------------------------------------ trade-off
def step_tradeoff(ctx: Context) -> StepOutput:
    b = ctx.budget
    r = linear.compute_tradeoff(b.tradeoff_dim, b.tradeoff_n, b.tradeoff_eps_train, b.tradeoff_eps_attack,
                         b.tradeoff_sample, b.tradeoff_checks, ctx.seed)
    out = StepOutput(results=r)
    rows = []
    for i, e in enumerate(r["eps_train"]):
        row = [float(e), float(r["universal"]["kl"][i]), float(r["universal"]["kl_formula"][i]),
               float(r["universal"]["rise"][i]), float(r["universal"]["rise_formula"][i])]
        if r["sample"] is not None:
            row += [float(r["sample"]["kl"][i]), float(r["sample"]["rise"][i])]
        rows.append(row)
    header = ["eps_train", "accuracy loss, universal (nats)", "KL formula (R7)", "worst rise, universal (nats)",
              "eps_a^2/(2 tau) (R7)"]
    if r["sample"] is not None:
        header += ["accuracy loss, sample-specific", "worst rise, sample-specific"]
    out.tables.append(ctx.table(f"robustness-accuracy trade-off, attack budget eps_a = {r['eps_attack']:g} "
                                f"({r['n']} points, d = {r['dim']})", header, rows))
    c = r["checks"]
    if c is not None:
        crow = [[float(e), "universal", float(k), float(ck)]
                for e, k, ck in zip(c["eps_train"], c["kl"], c["curve_kl"])]
        if c.get("sample_kl") is not None:
            crow += [[float(e), "sample", float(k), float(ck)]
                     for e, k, ck in zip(c["eps_train"], c["sample_kl"], c["sample_curve_kl"])]
        out.tables.append(ctx.table("Pareto check: accuracy loss of cvxpy's constrained optimum (min clean NLL s.t. "
                                    "the robustness of the trained flow) vs the trained flow's",
                                    ["eps_train", "attack", "cvxpy optimum", "trained flow"], crow))
        worst = max(abs(float(a) - float(b_)) for a, b_ in zip(c["kl"], c["curve_kl"]))
        out.results["pareto_gap_universal"] = worst
        out.notes.append(f"Largest gap between the universal curve and cvxpy's Pareto points: {rep.fmt(worst)} nats "
                         "(the universal training curve is the Pareto frontier, R7).")
        if c.get("sample_kl") is not None:
            out.notes.append("Sample-specific attack: cvxpy's point of equal worst-case NLL has an accuracy loss "
                             "lower by up to " + rep.fmt(float(np.max(np.asarray(c["sample_curve_kl"])
                                                                     - np.asarray(c["sample_kl"]))))
                             + " nats than the flow trained at eps_train (evaluated at eps_a): there the training "
                             "curve is not the frontier unless eps_train = eps_a.")
    plot_checks = None if c is None else {k: c[k] for k in ("kl", "rise", "sample_kl", "sample_rise")}
    out.figures["tradeoff"] = figures.tradeoff_figure(r["universal"], r["sample"], plot_checks, r["eps_attack"])
    return out


# ================================================================================================ registry
STEPS: list[Step] = [
    Step("verify", "Verification of DESIGN R1-R7", step_verify, "verify"),
    Step("geometry", "Geometry of the optimal perturbations (2-D linear flow)", step_geometry, "geometry"),
    Step("attack_vs_eps", "NLL rise against eps: exact vs PGD vs certified interval", step_attack_vs_eps, "attack"),
    Step("waterfilling", "Adversarial training against the universal attack: water-filling", step_waterfilling,
         "waterfill"),
    Step("tradeoff", "Robustness-accuracy trade-off", step_tradeoff, "tradeoff"),
]


# ================================================================================================ deep flows
TRAIN_SETTINGS = deep.TRAIN_SETTINGS


def checkpoint_path(ctx: Context, model: str, mode: str) -> Path:
    """``<out>/checkpoints/`` + :func:`deepcheck.figures.deep.checkpoint_name`: a change of the training settings
    trains a new model; an interrupted run resumes from the last finished epoch (``deepcheck.train``)."""
    return ctx.checkpoints / deep.checkpoint_name(model, mode, ctx.budget, ctx.seed, ctx.device)


def make_train_step(model: str, mode: str) -> Callable[[Context], StepOutput]:
    """The step that trains ``model`` ("glow", "realnvp") by ``mode`` ("mle", "hybrid") and checkpoints it."""

    def step_train(ctx: Context) -> StepOutput:
        b = ctx.budget
        ckpt = checkpoint_path(ctx, model, mode)
        if ctx.force and ckpt.exists():
            ckpt.unlink()
        init = None
        if mode != "mle" and "mle" in b.deep_modes:  # fine-tune the maximum-likelihood model
            rec = ctx.records.get(f"train_{model}_mle", {})
            if rec.get("status") not in ("ok", "cached"):
                raise NotAvailable(f"the maximum-likelihood {model} it starts from was not trained")
            load_checkpoint = require("deepcheck.checkpoint", "load_checkpoint")
            init = load_checkpoint(ctx.out / rec["results"]["checkpoint"]).model
        _, summary = deep.train_flow(model, mode, b, deep.deep_data(b, ctx.seed), seed=ctx.seed, device=ctx.device,
                                     checkpoint=ckpt, init=init)
        rel = str(ckpt.relative_to(ctx.out))
        out = StepOutput(results={**summary, "checkpoint": rel}, files=[rel])
        hist = summary["history"]
        shown = [hist[i] for i in sorted({int(k) for k in np.linspace(0, len(hist) - 1, min(len(hist), 6)).round()})
                 ] if hist else []
        how = f"fine-tuned from the mle model by {mode}" if summary["fine_tuned"] else f"trained by {mode}"
        out.tables.append(ctx.table(
            f"{model} ({b.deep_config}, {summary['n_params']} parameters) {how} on {b.deep_dataset} "
            f"({summary['n_train']} images, {len(hist)} epochs in {summary['train_seconds']:.0f} s; some epochs shown)",
            ["epoch", "train objective (bits/dim)", "val bits/dim", "val bits/dim under attack", "seconds"],
            [[h["epoch"], h["train_loss"], "n/a" if h["val_bpd"] is None else h["val_bpd"],
              "n/a" if h["val_adv_bpd"] is None else h["val_adv_bpd"], h["seconds"]] for h in shown]))
        return out

    step_train.__doc__ = f"Train {model} by {mode}."
    return step_train


def trained_models(ctx: Context) -> dict[str, Any]:
    """``{"glow / mle": model, ...}`` for every training step that finished, loaded from its checkpoint."""
    load_checkpoint = require("deepcheck.checkpoint", "load_checkpoint")
    models = {}
    for m in ctx.budget.deep_models:
        for mode in ctx.budget.deep_modes:
            rec = ctx.records.get(f"train_{m}_{mode}", {})
            if rec.get("status") in ("ok", "cached"):
                net = load_checkpoint(ctx.out / rec["results"]["checkpoint"]).model
                models[f"{m} / {mode}"] = net.to(ctx.device).eval()
    if not models:
        reasons = {r["name"]: r.get("reason", "") for n, r in ctx.records.items() if n.startswith("train_")}
        raise NotAvailable(f"no trained deep flow ({reasons or 'no training step'})")
    return models


def _pixels(data: Any, models: dict[str, Any], n: int, device: str) -> Any:
    dtype = next(next(iter(models.values())).parameters()).dtype
    return data.pixels(dtype)[:n].to(device)


def step_deep_attack(ctx: Context) -> StepOutput:
    """Bits/dim of test images against the budget of the likelihood-lowering PGD attack, per trained model;
    the image grid (clean, attacked at ``teaser_eps``, amplified difference) for the first model."""
    b = ctx.budget
    models = trained_models(ctx)
    x = _pixels(deep.deep_data(b, ctx.seed).test, models, b.eval_n, ctx.device)
    res = deep.compute_bpd_vs_eps(models, x, b, seed=ctx.seed)
    out = StepOutput(results=res)
    labels, eps_grid, curves = list(res["mean_bpd"]), res["eps"], res["mean_bpd"]
    out.tables.append(ctx.table(
        f"mean bits/dim of {len(x)} {b.deep_dataset} test images after PGD ({b.eval_norm}, lowering the likelihood, "
        f"{b.eval_pgd_steps} steps, {b.eval_restarts} random restarts)",
        ["eps"] + labels, [[e] + [curves[m][i] for m in labels] for i, e in enumerate(eps_grid)]))
    out.figures["bpd_vs_eps"] = figures.bpd_vs_eps_figure(eps_grid, curves, b.eval_norm)
    grid = res["grid"]
    if grid is not None:
        out.figures["image_grid"] = figures.image_grid_figure(grid["clean"], grid["attacked"])
        out.notes.append(f"Image grid: {grid['model']}, eps = {b.teaser_eps:g} ({b.eval_norm}); bits/dim clean "
                         + ", ".join(rep.fmt(float(v)) for v in grid["bpd_clean"]) + " -> attacked "
                         + ", ".join(rep.fmt(float(v)) for v in grid["bpd_attacked"]) + ".")
    return out


def step_ood(ctx: Context) -> StepOutput:
    """The out-of-distribution attack: PGD raising the likelihood of OOD images (``ood_eps``); bits/dim
    histograms and the AUROC of the likelihood score before and after, per trained model and OOD set."""
    b = ctx.budget
    models = trained_models(ctx)
    data = deep.deep_data(b, ctx.seed)
    x_in = _pixels(data.test, models, b.ood_n, ctx.device)
    sets = {name: deep.compute_ood(models, x_in, _pixels(o, models, b.ood_n, ctx.device), b, seed=ctx.seed,
                                   ood_name=name) for name, o in data.ood.items()}
    out = StepOutput(results={"sets": sets, "eps": b.ood_eps, "norm": b.eval_norm})
    rows = [[label, name, r["in_mean"], r["ood_mean"], r["ood_attacked_mean"], r["auroc_before"], r["auroc_after"]]
            for name, res in sets.items() for label, r in res["models"].items()]
    out.tables.append(ctx.table(
        f"OOD attack ({b.eval_norm}, eps = {b.ood_eps:g}, {b.ood_pgd_steps} steps, {len(x_in)} images per set): mean "
        "bits/dim and AUROC of the likelihood score (in-distribution vs OOD)",
        ["model", "OOD set", f"{b.deep_dataset} test", "OOD", "OOD attacked", "AUROC before", "AUROC after"], rows))
    for name, reason in data.missing.items():
        out.notes.append(f"not run: OOD set {name}: {reason}")
    for k, (name, res) in enumerate(sets.items()):
        first = f"{b.teaser_model} / mle" if f"{b.teaser_model} / mle" in res["models"] else next(iter(res["models"]))
        r = res["models"][first]
        out.figures["ood_histograms" if k == 0 else f"ood_histograms_{name}"] = figures.ood_histogram_figure(
            r["in_bpd"], r["ood_bpd"], r["ood_attacked_bpd"], r["auroc_before"], r["auroc_after"],
            in_label=f"{b.deep_dataset} test ({first})", ood_label=name)
    return out


def step_teaser(ctx: Context) -> StepOutput:
    """The teaser panel: the measured numbers of ``teaser_model`` (maximum likelihood and hybrid) next to the
    paper's (Pope et al. 2020, Fig. 1, CIFAR-10)."""
    b = ctx.budget
    att, ood = ctx.records.get("deep_attack", {}), ctx.records.get("ood", {})
    if att.get("status") not in ("ok", "cached") or ood.get("status") not in ("ok", "cached"):
        raise NotAvailable("needs the deep_attack and ood steps, which did not run")
    model = b.teaser_model if b.teaser_model in b.deep_models else b.deep_models[0]
    if f"{model} / mle" not in att["results"]["at_teaser_eps"]:
        raise NotAvailable(f"no maximum-likelihood {model} was trained")
    rows = deep.teaser_rows(b, model, att["results"]["at_teaser_eps"], ood["results"]["sets"][b.deep_ood[0]])
    out = StepOutput(results={"model": model, "rows": [{"case": c, "measured": m, "paper": p} for c, m, p in rows],
                              "teaser_eps": b.teaser_eps, "ood_eps": b.ood_eps, "norm": b.eval_norm})
    out.tables.append(ctx.table(
        f"teaser: mean bits/dim, {model} on {b.deep_dataset} ({b.eval_norm} attacks) vs the paper (CIFAR-10)",
        ["case", "measured", "paper"], [[c, "n/a" if m is None else m, p] for c, m, p in rows]))
    out.notes.append("The paper's numbers are for one CIFAR-10 image with the paper's (unknown) models and budgets; "
                     "ours are means over test images of a small dataset, so only the shape is comparable.")
    out.figures["teaser"] = figures.teaser_figure(rows, model_label=f"{model}, {b.deep_dataset}")
    return out


def deep_steps(budget: Budget) -> list[Step]:
    """Training steps (one per model and mode), then the attack, OOD and teaser steps."""
    trains = [Step(f"train_{m}_{mode}", f"Training {m} ({mode})", make_train_step(m, mode), TRAIN_SETTINGS,
                   () if mode == "mle" or "mle" not in budget.deep_modes else (f"train_{m}_mle",))
              for m in budget.deep_models for mode in budget.deep_modes]
    names = tuple(s.name for s in trains)
    return trains + [
        Step("deep_attack", "In-distribution attack on deep flows: bits/dim vs eps", step_deep_attack,
             "deep_dataset,deep_models,deep_modes,eval,teaser_eps,grid", names),
        Step("ood", "Out-of-distribution attack and AUROC", step_ood,
             "deep_dataset,deep_models,deep_modes,deep_ood,eval_norm,ood", names),
        Step("teaser", "Teaser: measured vs the paper", step_teaser, "deep_models,deep_ood,teaser",
             ("deep_attack", "ood")),
    ]


# ================================================================================================ runner
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
    steps = STEPS + deep_steps(budget)
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
    rep.atomic_write_text(out / "report.md", rep.render_report(run_info, records, out, NOT_REPRODUCED))
    return rep.to_jsonable(results)


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m deepcheck reproduce``."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="budget", action="store_const", const="quick",
                   help="embedded data, tiny flows, a few minutes on 2 CPU cores (default)")
    g.add_argument("--full", dest="budget", action="store_const", const="full",
                   help="Fashion-MNIST (20k training images; OOD: noise and MNIST-5k) at the small configuration, "
                        "exhaustive verification (long: use --device cuda where there is a GPU)")
    g.add_argument("--budget", dest="budget", choices=sorted(BUDGETS), help="smoke | quick | full")
    parser.set_defaults(budget="quick")
    parser.add_argument("--out", default=None, help="output directory (default out/<budget>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--force", action="store_true", help="rerun every step, ignoring cached results")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def main(name: str, args: argparse.Namespace) -> int:
    """Run the pipeline; print where the report is and return the exit status."""
    out = args.out or os.path.join("out", args.budget)
    command = "python -m deepcheck " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""
    results = run(args.budget, out, seed=args.seed, device=args.device, force=args.force,
                  progress=args.progress, command=command)
    for s in results["steps"]:
        line = f"{s['name']:>24}: {s['status']}"
        if s["status"] in ("not run", "failed"):
            line += f" ({s['reason']})"
        print(line)
    print(f"report: {os.path.join(out, 'report.md')}  results: {os.path.join(out, 'results.json')}")
    return int(results["run"]["exit_status"])
