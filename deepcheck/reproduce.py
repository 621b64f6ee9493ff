"""``python -m deepcheck reproduce``: verify DESIGN R1-R7 and regenerate the paper's figures, with a report.

The pipeline is a list of *steps* (:data:`STEPS`). Each step computes JSON-able results, tables and figures
from a :class:`Budget` and a seed; the runner writes its record to ``<out>/steps/<name>.json`` (atomically) and
skips it on a rerun when a record with the same settings, seed and device exists and its figures are on disk
(``--force`` reruns everything). Trained models are checkpointed under ``<out>/checkpoints``. At the end
``results.json`` (every step record, the run settings, package versions) and ``report.md`` (rendered from the
same records, see :mod:`deepcheck.report`) are written. A step whose building blocks are missing (a module
or a function of the package not available) is recorded as ``not run: <reason>``; nothing is faked.

The exit status is 1 when a verification check fails or a step raises, 0 otherwise.

Budgets: ``smoke`` (tests: every artifact, minimal settings, well under 90 s), ``quick`` (default: embedded
8x8 digits, tiny deep flows, a few minutes on 2 CPU cores), ``full`` (28x28 data at the small configuration,
longer training; use ``--device cuda`` where there is a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
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

from . import report as rep

# ================================================================================================ settings


@dataclass(frozen=True)
class Budget:
    """Every setting of a run. Linear-flow settings first, then the deep flows'. Units: eps in data units
    (pixels in [0, 1] for images); NLL in nats, bits/dim for images."""

    name: str
    # verification of R1-R7 (linflow.verification.run_checks)
    verify_quick: bool = True
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
    deep_ood: str = "uniform-noise"  # the OOD set of the OOD attack (the paper's teaser: noise)
    deep_config: str = "tiny"
    deep_models: tuple[str, ...] = ("glow", "realnvp")
    deep_modes: tuple[str, ...] = ("mle", "hybrid")
    deep_epochs: int = 20
    deep_batch_size: int = 64
    deep_lr: float = 1e-3
    deep_n_train: int | None = None
    hybrid_lambda: float = 0.5
    train_eps: float = 0.02
    train_norm: str = "linf"
    train_pgd_steps: int = 5
    eval_norm: str = "linf"
    eval_eps: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.04, 0.08)
    eval_pgd_steps: int = 20
    eval_restarts: int = 1
    eval_n: int = 256
    teaser_eps: float = 0.02
    ood_eps: float = 0.1
    ood_pgd_steps: int = 40
    ood_n: int = 256
    grid_images: int = 4

    def section(self, prefix: str) -> dict[str, Any]:
        """The settings whose names start with one of the comma-separated ``prefix``es (for a step's cache key)."""
        keys = tuple(p.strip() for p in prefix.split(","))
        return {k: v for k, v in dataclasses.asdict(self).items() if k.startswith(keys)}


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        name="smoke", geometry_brute_force=4000, attack_dim=4, attack_points=3, attack_eps=(0.0, 0.2, 0.5),
        attack_pgd_steps=40, attack_pgd_restarts=1, tradeoff_dim=2, tradeoff_n=8,
        tradeoff_eps_train=(0.0, 0.3, 1.0), tradeoff_checks=1, deep_models=("glow", "realnvp"),
        deep_epochs=1, deep_n_train=128, train_pgd_steps=2, eval_eps=(0.0, 0.02), eval_pgd_steps=3,
        eval_n=16, ood_pgd_steps=3, ood_n=16, grid_images=2,
    ),
    "quick": Budget(name="quick"),
    "full": Budget(
        name="full", verify_quick=False, attack_dim=24, attack_points=16, attack_pgd_steps=300,
        attack_pgd_restarts=5, tradeoff_dim=4, tradeoff_n=60, deep_dataset="fashion-mnist",
        deep_config="small", deep_epochs=60, eval_pgd_steps=50, eval_restarts=3, eval_n=1000,
        ood_pgd_steps=100, ood_n=1000, grid_images=6,
    ),
}

NOT_REPRODUCED = [
    "CIFAR-10 (the paper's teaser image and, most likely, its main experiments): no CIFAR-10 training set is "
    "available offline and nothing may be downloaded; the deep experiments use the embedded 8x8 digits (quick) "
    "or MNIST-5k / Fashion-MNIST (full) instead, so bits/dim are not comparable in value, only in shape.",
    "The paper's exact architectures, training settings, norms, budgets and hybrid objective are not available "
    "(only its abstract and teaser figure are); the settings used here are listed under each step.",
    "Theorem statements of the paper: the linear-flow results verified here are DESIGN R1-R7, derived afresh.",
]

# ================================================================================================ step machinery


class NotAvailable(Exception):
    """A building block of a step is missing: the step is reported as ``not run: <reason>``."""


def require(module: str, *names: str) -> Any:
    """Import ``module`` and return it (or the tuple of its attributes ``names``); :class:`NotAvailable` if absent."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise NotAvailable(f"{module} not available ({type(exc).__name__}: {exc})") from exc
    if not names:
        return mod
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise NotAvailable(f"{module} has no {', '.join(missing)} yet")
    got = tuple(getattr(mod, n) for n in names)
    return got[0] if len(got) == 1 else got


def linflow_api(name: str) -> Any:
    """A public function of :mod:`linflow` (looked up in the package, then in the module that defines it)."""
    import types

    for module in ("linflow", "linflow.perturb", "linflow.box", "linflow.training", "linflow.tradeoff"):
        try:
            fn = require(module, name)
        except NotAvailable:
            continue
        if callable(fn) and not isinstance(fn, types.ModuleType):  # linflow.tradeoff is also a submodule
            return fn
    raise NotAvailable(f"linflow.{name} not available yet")


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


def _key(step: Step, ctx: Context) -> str:
    """Cache key: the step's settings, the seed, the device and the records' keys of the steps it reads."""
    blob = {"settings": ctx.budget.section(step.settings), "seed": ctx.seed, "device": ctx.device,
            "after": {a: ctx.records.get(a, {}).get("key") for a in step.after}}
    return hashlib.sha256(json.dumps(rep.to_jsonable(blob), sort_keys=True).encode()).hexdigest()[:16]


def run_step(step: Step, ctx: Context) -> dict[str, Any]:
    """Run ``step`` (or reuse its cached record), save its figures and record; return the record."""
    from . import figures as figs

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
        for p in figs.save_figure(fig, ctx.out / "figures", stem):
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
    run_checks, format_table = require("linflow.verification", "run_checks", "format_table")
    results = run_checks(seed=ctx.seed, quick=ctx.budget.verify_quick, progress=False)
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
    out.notes.append(f"{len(results) - len(failed)} of {len(results)} checks passed.")
    for r in failed:
        out.notes.append(f"FAILED {r.result} {r.name}: worst {r.worst:.3g} > tol {r.tol:.1g}. {r.detail}")
    return out


# ------------------------------------------------------------------------------------------------ geometry
def geometry_flow() -> Any:
    """The 2-D flow of the geometry figure: ``N(0, R diag(2, 0.12) R^T)``, ``R`` a rotation by 30 degrees."""
    from linflow import LinearFlow

    t = np.deg2rad(30.0)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return LinearFlow.from_gaussian(np.zeros(2), R @ np.diag([2.0, 0.12]) @ R.T)


GEOMETRY_POINTS = np.array([[0.0, 0.0], [1.6, 0.5], [-1.2, 0.9], [0.4, -1.3], [-2.2, -1.0]])


def compute_geometry(eps: float = 0.5, brute_force: int = 20000) -> dict[str, Any]:
    """Optimal L2 lowering (R1) and raising (R2) perturbations of the points :data:`GEOMETRY_POINTS` of
    :func:`geometry_flow`, checked against brute force: the NLL rise maximised over ``brute_force`` points of
    the circle ``||delta|| = eps`` (the constraint is active for R1) and minimised over a polar grid of the
    disk (R2)."""
    optimal_perturbation = linflow_api("optimal_perturbation")
    flow = geometry_flow()
    X = GEOMETRY_POINTS
    dd = np.asarray(optimal_perturbation(flow, X, eps, norm=2, likelihood="decrease"))
    di = np.asarray(optimal_perturbation(flow, X, eps, norm=2, likelihood="increase"))
    nll0 = flow.nll(X)
    rise = flow.nll(X + dd) - nll0
    drop = flow.nll(X + di) - nll0
    ang = np.linspace(0.0, 2 * np.pi, brute_force, endpoint=False)
    circle = eps * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    radii = eps * np.sqrt(np.linspace(0.0, 1.0, max(brute_force // 200, 10)))
    disk = (radii[:, None, None] * np.stack([np.cos(ang[::200]), np.sin(ang[::200])], axis=1)[None]).reshape(-1, 2)
    bf_rise = np.array([np.max(flow.nll(x + circle)) - n0 for x, n0 in zip(X, nll0)])
    bf_drop = np.array([np.min(flow.nll(x + disk)) - n0 for x, n0 in zip(X, nll0)])
    return {"eps": eps, "mean": flow.mean, "cov": flow.cov, "u_min": flow.eigvecs[:, 0],
            "s_min": float(flow.eigvals[0]), "points": X, "delta_decrease": dd, "delta_increase": di,
            "norm_decrease": np.linalg.norm(dd, axis=1), "norm_increase": np.linalg.norm(di, axis=1),
            "rise": rise, "drop": drop, "brute_force_rise": bf_rise, "brute_force_drop": bf_drop,
            "universal_rise": eps**2 / (2 * flow.eigvals[0]), "brute_force_points": brute_force}


def step_geometry(ctx: Context) -> StepOutput:
    from . import figures as figs

    r = compute_geometry(ctx.budget.geometry_eps, ctx.budget.geometry_brute_force)
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
    out.figures["geometry"] = figs.geometry_figure(r["mean"], r["cov"], r["eps"], r["points"],
                                                   r["delta_decrease"], r["delta_increase"], r["u_min"])
    return out


# ------------------------------------------------------------------------------------------------ NLL vs eps
def attack_flow(dim: int, cond: float, seed: int) -> Any:
    """A ``dim``-dimensional flow with eigenvalues log-spaced in ``[1/cond, 1]`` and a random rotation."""
    from linflow import LinearFlow

    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((dim, dim)))
    Q = Q * np.sign(np.diag(R))
    s = np.logspace(-np.log10(cond), 0.0, dim)
    return LinearFlow.from_gaussian(rng.standard_normal(dim) * 0.1, (Q * s) @ Q.T)


def compute_attack_vs_eps(dim: int, cond: float, n_points: int, eps_grid: tuple[float, ...], pgd_steps: int,
                          pgd_restarts: int, seed: int, device: str = "cpu") -> dict[str, Any]:
    """Mean NLL rise over ``n_points`` samples of :func:`attack_flow`: the exact L2 optimum (R1), PGD on the
    torch LinearFlow (L2 and L-inf) and the certified L-inf interval ``[lower, upper]`` (R3). Missing pieces
    give ``None`` entries (and a ``missing`` list), never made-up numbers."""
    flow = attack_flow(dim, cond, seed)
    X = flow.sample(n_points, rng=seed + 1)
    nll0 = flow.nll(X)
    missing: list[str] = []
    out: dict[str, Any] = {"eps": list(eps_grid), "dim": dim, "n_points": n_points, "s_min": float(flow.eigvals[0])}
    optimal_perturbation = linflow_api("optimal_perturbation")
    exact = []
    for e in eps_grid:
        d = np.asarray(optimal_perturbation(flow, X, e, norm=2, likelihood="decrease"))
        exact.append(flow.nll(X + d) - nll0)
    exact = np.array(exact)
    out["exact_l2"] = exact.mean(axis=1)
    out["exact_l2_points"] = exact
    try:
        perturbation_bounds = linflow_api("perturbation_bounds")
        lo, up = [], []
        for e in eps_grid:
            lower, upper = perturbation_bounds(flow, X, e, norm=np.inf, likelihood="decrease")
            lo.append(np.asarray(lower, float))
            up.append(np.asarray(upper, float))
        out["linf_lower"] = np.mean(lo, axis=1)
        out["linf_upper"] = np.mean(up, axis=1)
    except NotAvailable as exc:
        missing.append(f"certified L-inf interval: {exc}")
        out["linf_lower"] = out["linf_upper"] = None
    try:
        import torch

        pgd = require("deepcheck.attacks", "pgd")
        from .flows import LinearFlow as TorchLinearFlow

        model = TorchLinearFlow.from_linflow(flow).to(device)
        xt = torch.tensor(X, dtype=torch.float64, device=device)
        for norm, key in (("l2", "pgd_l2"), ("linf", "pgd_linf")):
            vals = []
            for e in eps_grid:
                if e == 0.0:
                    vals.append(np.zeros(n_points))
                    continue
                xa = pgd(model, xt, e, norm=norm, likelihood="decrease", steps=pgd_steps, restarts=pgd_restarts,
                         clamp=None, seed=seed)
                vals.append(flow.nll(xa.detach().cpu().numpy()) - nll0)
            vals = np.array(vals)
            out[key] = vals.mean(axis=1)
            out[key + "_points"] = vals
        pos = exact > 1e-12
        gap = 1.0 - out["pgd_l2_points"][pos] / exact[pos]  # relative shortfall of PGD (L2)
        out["pgd_l2_gap_worst"] = float(gap.max()) if gap.size else 0.0
        out["pgd_l2_gap_median"] = float(np.median(gap)) if gap.size else 0.0
    except NotAvailable as exc:
        missing.append(f"PGD on the torch LinearFlow: {exc}")
        out["pgd_l2"] = out["pgd_linf"] = None
    out["missing"] = missing
    return out


def step_attack_vs_eps(ctx: Context) -> StepOutput:
    from . import figures as figs

    b = ctx.budget
    r = compute_attack_vs_eps(b.attack_dim, b.attack_cond, b.attack_points, b.attack_eps, b.attack_pgd_steps,
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
    for m in r["missing"]:
        out.notes.append(f"not run: {m}")
    out.figures["nll_vs_eps"] = figs.nll_vs_eps_figure(r["eps"], r["exact_l2"], r.get("pgd_l2"), r.get("linf_lower"),
                                                       r.get("linf_upper"), r.get("pgd_linf"))
    return out


# ------------------------------------------------------------------------------------------------ water-filling
def digits_pixels(seed: int) -> np.ndarray:
    """sklearn's 8x8 digits as vectors in [0, 1]^64, uniformly dequantised: ``(k + u) / 17`` (seeded)."""
    from sklearn.datasets import load_digits

    k = load_digits().data.astype(np.float64)
    u = np.random.default_rng(seed).random(k.shape)
    return (k + u) / 17.0


def worked_example_data() -> np.ndarray:
    """Six points with mean 0 and (biased) covariance exactly diag(4, 1, 0.25): ``+-sqrt(3 s_i) e_i``."""
    s = np.array([4.0, 1.0, 0.25])
    E = np.diag(np.sqrt(3 * s))
    return np.concatenate([E, -E])


def _kl_to_robust(s: np.ndarray, tau: float) -> float:
    """``KL(N(m, S) || N(m, Sigma*))`` for ``Sigma* = V diag(max(s_i, tau)) V^T`` (DESIGN R7)."""
    low = s < tau
    return 0.5 * float(np.sum(s[low] / tau - 1 - np.log(s[low] / tau)))


def compute_waterfilling(eps: float, seed: int) -> dict[str, Any]:
    """R5 on the digits pixels: the MLE flow vs ``adversarial_fit(X, eps, attack="universal")``, the flow
    trained against the universal L2 attack of budget ``eps``; plus DESIGN's worked example (S = diag(4, 1,
    0.25), eps = 1: tau = 1.125, KL = 0.36649 nats, worst rise 0.4444 nats vs 2.0 for the MLE flow).
    The water level is read off the trained flow (its smallest eigenvalue, when it lifted any)."""
    from linflow import LinearFlow

    adversarial_fit = linflow_api("adversarial_fit")
    X = digits_pixels(seed)
    mle = LinearFlow.fit(X)
    s = np.asarray(mle.eigvals)
    robust = adversarial_fit(X, eps, attack="universal")
    r_eig = np.asarray(robust.eigvals)
    tau = float(r_eig[0])
    worked = adversarial_fit(worked_example_data(), 1.0, attack="universal")
    w_eig = np.asarray(worked.eigvals)
    w_tau = float(w_eig[0])
    return {"eps": eps, "data_eigvals": s, "robust_eigvals": r_eig, "tau": tau,
            "n_lifted": int(np.sum(s < tau)), "kl": _kl_to_robust(s, tau), "rise_mle": eps**2 / (2 * s[0]),
            "rise_robust": eps**2 / (2 * tau),
            "worked": {"tau": w_tau, "eigvals": w_eig, "kl": _kl_to_robust(np.array([0.25, 1.0, 4.0]), w_tau),
                       "rise_robust": 1.0 / (2 * w_tau), "rise_mle": 1.0 / (2 * 0.25)}}


def step_waterfilling(ctx: Context) -> StepOutput:
    from . import figures as figs

    r = compute_waterfilling(ctx.budget.waterfill_eps, ctx.seed)
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
    out.figures["waterfilling"] = figs.waterfilling_figure(r["data_eigvals"], r["robust_eigvals"], r["tau"], r["eps"])
    return out


# ------------------------------------------------------------------------------------------------ trade-off
def tradeoff_data(dim: int, n: int, seed: int) -> np.ndarray:
    """Skewed synthetic data (n, dim): anisotropic Gaussian plus a cubed coordinate (so R5 and R6 differ)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, dim)) * np.logspace(0, -1, dim)
    Z[:, 0] = Z[:, 0] + 0.5 * Z[:, 0] ** 3
    return Z


def compute_tradeoff(dim: int, n: int, eps_train: tuple[float, ...], eps_attack: float, sample: bool,
                     n_checks: int, seed: int) -> dict[str, Any]:
    """R7 with ``linflow.tradeoff``: (accuracy loss, worst NLL rise under attacks of budget ``eps_attack``) of
    the flows adversarially trained at each ``eps_train``, for the universal attack (closed form, R5) and, when
    ``sample``, the sample-specific one (R6). Pareto check: ``linflow.tradeoff.pareto_points`` solves the
    constrained programs with cvxpy at ``n_checks`` budgets (universal: min clean NLL s.t. rise <= r; sample:
    s.t. worst-case NLL <= c) -- their accuracy losses must land on the training curves."""
    tradeoff = linflow_api("tradeoff")
    X = tradeoff_data(dim, n, seed)
    eps = np.asarray(eps_train, float)
    u = tradeoff(X, eps, eps_attack, attack="universal")
    res: dict[str, Any] = {"eps_train": eps, "eps_attack": eps_attack, "dim": dim, "n": n,
                           "universal": {"kl": u.accuracy_loss, "rise": u.rise, "kl_formula": u.kl_formula,
                                         "rise_formula": u.rise_formula, "tau": u.water_level},
                           "sample": None, "checks": None, "missing": []}
    if sample:
        sc = tradeoff(X, eps, eps_attack, attack="sample")
        res["sample"] = {"kl": sc.accuracy_loss, "rise": sc.rise, "robust_nll": sc.robust_nll}
    if n_checks:
        pareto_points = linflow_api("pareto_points")
        idx = np.unique(np.linspace(1, len(eps) - 1, n_checks).round().astype(int))
        pu = pareto_points(X, u.rise[idx], eps_attack=eps_attack, attack="universal", constraint="rise")
        checks = {"eps_train": eps[idx], "kl": pu.accuracy_loss, "rise": pu.rise, "curve_kl": u.accuracy_loss[idx],
                  "status": list(pu.status), "sample_kl": None, "sample_rise": None}
        if sample:
            ps = pareto_points(X, res["sample"]["robust_nll"][idx], eps_attack=eps_attack, attack="sample",
                               constraint="robust")
            checks.update(sample_kl=ps.accuracy_loss, sample_rise=ps.rise, sample_curve_kl=res["sample"]["kl"][idx],
                          sample_status=list(ps.status))
        res["checks"] = checks
    return res


def step_tradeoff(ctx: Context) -> StepOutput:
    from . import figures as figs

    b = ctx.budget
    r = compute_tradeoff(b.tradeoff_dim, b.tradeoff_n, b.tradeoff_eps_train, b.tradeoff_eps_attack,
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
    out.figures["tradeoff"] = figs.tradeoff_figure(r["universal"], r["sample"], plot_checks, r["eps_attack"])
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
PAPER_TEASER = {"clean": 1.6, "attacked": 150.0, "noise": 11.0, "noise_attacked": 4.2, "robust_clean": 1.7,
                "robust_attacked": 2.7}
"""The teaser figure of Pope et al. (2020), bits/dim (most likely) on one CIFAR-10 image (see paper.md)."""


@dataclass
class DeepData:
    """The images of the deep steps: ``train``/``val``/``test`` of the in-distribution set and ``ood``."""

    train: Any
    val: Any
    test: Any
    ood: Any


def deep_data(budget: Budget, seed: int) -> DeepData:
    """Load ``budget.deep_dataset`` (train limited to ``deep_n_train``, 512 validation images, enough test
    images) and the out-of-distribution set ``budget.deep_ood`` of the same shape and number of levels."""
    load = require("deepcheck.data", "load")
    train = load(budget.deep_dataset, "train", seed=seed, limit=budget.deep_n_train)
    val = load(budget.deep_dataset, "val", seed=seed, limit=512)
    test = load(budget.deep_dataset, "test", seed=seed, limit=max(budget.eval_n, budget.ood_n))
    if budget.deep_ood == "uniform-noise":
        ood = load("uniform-noise", "test", seed=seed, shape=tuple(train.shape), n=budget.ood_n, n_bins=train.n_bins)
    else:
        ood = load(budget.deep_ood, "test", seed=seed, limit=budget.ood_n, size=tuple(train.shape[1:]))
    return DeepData(train, val, test, ood)


TRAIN_SETTINGS = "deep_dataset,deep_config,deep_epochs,deep_batch_size,deep_lr,deep_n_train,hybrid,train"
"""The :class:`Budget` fields that change a trained model."""


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(rep.to_jsonable(obj), sort_keys=True).encode()).hexdigest()[:10]


def checkpoint_path(ctx: Context, model: str, mode: str) -> Path:
    """``<out>/checkpoints/<model>_<mode>_<hash of the deep settings, seed, device>.pt``: a change of settings
    trains a new model; an interrupted run resumes from the last finished epoch (``deepcheck.train``)."""
    tag = _digest([ctx.budget.section(TRAIN_SETTINGS), ctx.seed, ctx.device])
    return ctx.checkpoints / f"{model}_{mode}_{tag}.pt"


def make_train_step(model: str, mode: str) -> Callable[[Context], StepOutput]:
    """The step that trains ``model`` ("glow", "realnvp") by ``mode`` ("mle", "hybrid") with
    ``deepcheck.train.train`` and checkpoints it."""

    def step_train(ctx: Context) -> StepOutput:
        build = require("deepcheck.flows", "build")
        train = require("deepcheck.train", "train")
        b = ctx.budget
        data = deep_data(b, ctx.seed)
        ckpt = checkpoint_path(ctx, model, mode)
        if ctx.force and ckpt.exists():
            ckpt.unlink()
        net = build(model, b.deep_config, tuple(data.train.shape), n_bins=data.train.n_bins, seed=ctx.seed)
        n_params = sum(p.numel() for p in net.parameters())
        res = train(net, data.train, val_data=data.val, mode=mode, epochs=b.deep_epochs, batch_size=b.deep_batch_size,
                    lr=b.deep_lr, hybrid_lambda=b.hybrid_lambda, attack_eps=b.train_eps, attack_norm=b.train_norm,
                    attack_steps=b.train_pgd_steps, checkpoint=ckpt, seed=ctx.seed, progress=False,
                    device=ctx.device)
        hist = [dataclasses.asdict(h) for h in res.history]
        last = hist[-1] if hist else {}
        out = StepOutput(results={"model": model, "mode": mode, "config": b.deep_config, "dataset": b.deep_dataset,
                                  "n_train": len(data.train), "n_params": n_params, "epochs": len(hist),
                                  "train_seconds": res.wall_time, "skipped_steps": res.skipped_steps,
                                  "val_bpd": last.get("val_bpd"), "val_adv_bpd": last.get("val_adv_bpd"),
                                  "train_loss": last.get("train_loss"), "history": hist,
                                  "checkpoint": str(ckpt.relative_to(ctx.out))},
                         files=[str(ckpt.relative_to(ctx.out))])
        out.tables.append(ctx.table(
            f"{model} ({b.deep_config}, {n_params} parameters) trained by {mode} on {b.deep_dataset} "
            f"({len(data.train)} images)",
            ["epoch", "train objective (bits/dim)", "val bits/dim", "val bits/dim under attack", "seconds"],
            [[h["epoch"], h["train_loss"], "n/a" if h["val_bpd"] is None else h["val_bpd"],
              "n/a" if h["val_adv_bpd"] is None else h["val_adv_bpd"], h["seconds"]] for h in hist]))
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


def _bpd(model: Any, x: Any, batch_size: int = 256) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model.bpd(x[i:i + batch_size]).double().cpu().numpy()
                               for i in range(0, len(x), batch_size)])


def _attack(model: Any, x: Any, eps: float, *, norm: str, likelihood: str, steps: int, restarts: int,
            seed: int, batch_size: int = 256) -> Any:
    import torch

    pgd = require("deepcheck.attacks", "pgd")
    if eps == 0.0:
        return x
    return torch.cat([pgd(model, x[i:i + batch_size], eps, norm=norm, likelihood=likelihood, steps=steps,
                          restarts=restarts, clamp=(0.0, 1.0), seed=seed) for i in range(0, len(x), batch_size)])


def step_deep_attack(ctx: Context) -> StepOutput:
    """Bits/dim of test images against the budget of the likelihood-lowering PGD attack, per trained model;
    the image grid (clean, attacked at ``teaser_eps``, amplified difference) for the first model."""
    from . import figures as figs

    b = ctx.budget
    models = trained_models(ctx)
    data = deep_data(b, ctx.seed)
    dtype = next(iter(models.values())).parameters().__next__().dtype
    x = data.test.pixels(dtype)[: b.eval_n].to(ctx.device)
    eps_grid = sorted(set(b.eval_eps) | {0.0, b.teaser_eps})
    curves, medians, teaser = {}, {}, {}
    grid = None
    for label, net in models.items():
        means, meds = [], []
        for e in eps_grid:
            xa = _attack(net, x, e, norm=b.eval_norm, likelihood="decrease", steps=b.eval_pgd_steps,
                         restarts=b.eval_restarts, seed=ctx.seed)
            v = _bpd(net, xa)
            means.append(float(v.mean()))
            meds.append(float(np.median(v)))
            if e == b.teaser_eps and grid is None:
                k = b.grid_images
                grid = {"model": label, "clean": x[:k].cpu().numpy(), "attacked": xa[:k].cpu().numpy(),
                        "bpd_clean": _bpd(net, x[:k]), "bpd_attacked": v[:k]}
        curves[label], medians[label] = means, meds
        teaser[label] = {"clean": means[eps_grid.index(0.0)], "attacked": means[eps_grid.index(b.teaser_eps)]}
    res = {"eps": eps_grid, "norm": b.eval_norm, "n_images": int(len(x)), "mean_bpd": curves, "median_bpd": medians,
           "at_teaser_eps": teaser, "teaser_eps": b.teaser_eps, "grid": grid}
    out = StepOutput(results=res)
    labels = list(curves)
    out.tables.append(ctx.table(
        f"mean bits/dim of {len(x)} {b.deep_dataset} test images after PGD ({b.eval_norm}, lowering the likelihood, "
        f"{b.eval_pgd_steps} steps, {b.eval_restarts} random restarts)",
        ["eps"] + labels, [[e] + [curves[m][i] for m in labels] for i, e in enumerate(eps_grid)]))
    out.figures["bpd_vs_eps"] = figs.bpd_vs_eps_figure(eps_grid, curves, b.eval_norm)
    if grid is not None:
        out.figures["image_grid"] = figs.image_grid_figure(grid["clean"], grid["attacked"])
        out.notes.append(f"Image grid: {grid['model']}, eps = {b.teaser_eps:g} ({b.eval_norm}); bits/dim clean "
                         + ", ".join(rep.fmt(float(v)) for v in grid["bpd_clean"]) + " -> attacked "
                         + ", ".join(rep.fmt(float(v)) for v in grid["bpd_attacked"]) + ".")
    return out


def _auroc(in_bpd: np.ndarray, ood_bpd: np.ndarray) -> float:
    """AUROC of the score ``-bpd`` for telling in-distribution (positive) from OOD: P(score_in > score_ood)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(in_bpd)), np.zeros(len(ood_bpd))]
    return float(roc_auc_score(y, -np.r_[in_bpd, ood_bpd]))


def step_ood(ctx: Context) -> StepOutput:
    """The out-of-distribution attack: PGD raising the likelihood of OOD images (``ood_eps``); bits/dim
    histograms and the AUROC of the likelihood score before and after, per trained model."""
    from . import figures as figs

    b = ctx.budget
    models = trained_models(ctx)
    data = deep_data(b, ctx.seed)
    dtype = next(iter(models.values())).parameters().__next__().dtype
    x_in = data.test.pixels(dtype)[: b.ood_n].to(ctx.device)
    x_ood = data.ood.pixels(dtype)[: b.ood_n].to(ctx.device)
    res: dict[str, Any] = {"ood": b.deep_ood, "eps": b.ood_eps, "norm": b.eval_norm, "n_in": int(len(x_in)),
                           "n_ood": int(len(x_ood)), "models": {}}
    rows = []
    for label, net in models.items():
        b_in = _bpd(net, x_in)
        b_ood = _bpd(net, x_ood)
        xa = _attack(net, x_ood, b.ood_eps, norm=b.eval_norm, likelihood="increase", steps=b.ood_pgd_steps,
                     restarts=0, seed=ctx.seed)
        b_att = _bpd(net, xa)
        r = {"in_bpd": b_in, "ood_bpd": b_ood, "ood_attacked_bpd": b_att, "auroc_before": _auroc(b_in, b_ood),
             "auroc_after": _auroc(b_in, b_att), "in_mean": float(b_in.mean()), "ood_mean": float(b_ood.mean()),
             "ood_attacked_mean": float(b_att.mean())}
        res["models"][label] = r
        rows.append([label, r["in_mean"], r["ood_mean"], r["ood_attacked_mean"], r["auroc_before"], r["auroc_after"]])
    out = StepOutput(results=res)
    out.tables.append(ctx.table(
        f"OOD attack on {b.deep_ood} ({b.eval_norm}, eps = {b.ood_eps:g}, {b.ood_pgd_steps} steps): mean bits/dim "
        "and AUROC of the likelihood score (in-distribution vs OOD)",
        ["model", f"{b.deep_dataset} test", b.deep_ood, f"{b.deep_ood} attacked", "AUROC before", "AUROC after"],
        rows))
    first = next(iter(res["models"]))
    r = res["models"][first]
    out.figures["ood_histograms"] = figs.ood_histogram_figure(
        r["in_bpd"], r["ood_bpd"], r["ood_attacked_bpd"], r["auroc_before"], r["auroc_after"],
        in_label=f"{b.deep_dataset} test ({first})", ood_label=b.deep_ood)
    return out


def step_teaser(ctx: Context) -> StepOutput:
    """The teaser panel: the measured numbers of the first model (maximum likelihood and hybrid) next to the
    paper's (Pope et al. 2020, Fig. 1, CIFAR-10)."""
    from . import figures as figs

    b = ctx.budget
    att, ood = ctx.records.get("deep_attack", {}), ctx.records.get("ood", {})
    if att.get("status") not in ("ok", "cached") or ood.get("status") not in ("ok", "cached"):
        raise NotAvailable("needs the deep_attack and ood steps, which did not run")
    model = b.deep_models[0]
    at = att["results"]["at_teaser_eps"]
    mle, hyb = at.get(f"{model} / mle"), at.get(f"{model} / hybrid")
    o = ood["results"]["models"].get(f"{model} / mle")
    if mle is None or o is None:
        raise NotAvailable(f"no maximum-likelihood {model} was evaluated")
    rows = [("clean image, clean model", mle["clean"], PAPER_TEASER["clean"]),
            (f"attacked image (eps {b.teaser_eps:g}), clean model", mle["attacked"], PAPER_TEASER["attacked"]),
            ("uniform noise, clean model" if b.deep_ood == "uniform-noise" else f"{b.deep_ood}, clean model",
             o["ood_mean"], PAPER_TEASER["noise"]),
            (f"OOD after the OOD attack (eps {b.ood_eps:g})", o["ood_attacked_mean"], PAPER_TEASER["noise_attacked"]),
            ("clean image, hybrid-trained model", None if hyb is None else hyb["clean"], PAPER_TEASER["robust_clean"]),
            (f"attacked image (eps {b.teaser_eps:g}), hybrid-trained model", None if hyb is None else hyb["attacked"],
             PAPER_TEASER["robust_attacked"])]
    out = StepOutput(results={"model": model, "rows": [{"case": c, "measured": m, "paper": p} for c, m, p in rows],
                              "teaser_eps": b.teaser_eps, "ood_eps": b.ood_eps, "norm": b.eval_norm})
    out.tables.append(ctx.table(
        f"teaser: mean bits/dim, {model} on {b.deep_dataset} ({b.eval_norm} attacks) vs the paper (CIFAR-10)",
        ["case", "measured", "paper"], [[c, "n/a" if m is None else m, p] for c, m, p in rows]))
    out.notes.append("The paper's numbers are for one CIFAR-10 image with the paper's (unknown) models and budgets; "
                     "ours are means over test images of a small dataset, so only the shape is comparable.")
    out.figures["teaser"] = figs.teaser_figure(rows, model_label=f"{model}, {b.deep_dataset}")
    return out


def deep_steps(budget: Budget) -> list[Step]:
    """Training steps (one per model and mode), then the attack, OOD and teaser steps."""
    trains = [Step(f"train_{m}_{mode}", f"Training {m} ({mode})", make_train_step(m, mode), TRAIN_SETTINGS)
              for m in budget.deep_models for mode in budget.deep_modes]
    names = tuple(s.name for s in trains)
    return trains + [
        Step("deep_attack", "In-distribution attack on deep flows: bits/dim vs eps", step_deep_attack,
             "deep,eval,teaser,grid", names),
        Step("ood", "Out-of-distribution attack and AUROC", step_ood, "deep,eval_norm,ood", names),
        Step("teaser", "Teaser: measured vs the paper", step_teaser, "deep,teaser,ood,eval_norm",
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
                   help="MNIST-5k / Fashion-MNIST at the small configuration (long; GPU if --device cuda)")
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
