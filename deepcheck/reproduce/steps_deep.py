"""The deep-flow steps of ``reproduce``: one training step per model and mode, then the in-distribution
attack, the OOD attack and the teaser. The experiments themselves are in :mod:`.compute_deep`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import figures
from ..checkpoint import load_checkpoint
from . import compute_deep as deep
from . import report as rep
from . import steps_certify, steps_phenomena
from .budget import Budget
from .pipeline import Context, NotAvailable, Step, StepOutput
from .trained import model_pixels, trained_models


def checkpoint_path(ctx: Context, model: str, mode: str) -> Path:
    """``<out>/checkpoints/`` + :func:`.compute_deep.checkpoint_name`: a change of the training settings trains a
    new model; an interrupted run resumes from the last finished epoch (``deepcheck.train``)."""
    return ctx.checkpoints / deep.checkpoint_name(model, mode, ctx.budget, ctx.seed)


def make_train_step(model: str, mode: str) -> Callable[[Context], StepOutput]:
    """The step that trains ``model`` ("glow", "realnvp") by ``mode`` ("mle", "hybrid") and checkpoints it."""

    def step_train(ctx: Context) -> StepOutput:
        b = ctx.budget
        ckpt = checkpoint_path(ctx, model, mode)
        if ctx.force and ckpt.exists():
            ckpt.unlink()
        init = None
        if mode != "mle" and "mle" in b.flows.modes:  # fine-tune the maximum-likelihood model
            rec = ctx.records.get(f"train_{model}_mle", {})
            if rec.get("status") not in ("ok", "cached"):
                raise NotAvailable(f"the maximum-likelihood {model} it starts from was not trained")
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
            f"{model} ({b.deep.config}, {summary['n_params']} parameters) {how} on {b.deep.dataset} "
            f"({summary['n_train']} images, {len(hist)} epochs in {summary['train_seconds']:.0f} s; some epochs shown)",
            ["epoch", "train objective (bits/dim)", "val bits/dim", "val bits/dim under attack", "seconds"],
            [[h["epoch"], h["train_loss"], "n/a" if h["val_bpd"] is None else h["val_bpd"],
              "n/a" if h["val_adv_bpd"] is None else h["val_adv_bpd"], h["seconds"]] for h in shown]))
        return out

    step_train.__doc__ = f"Train {model} by {mode}."
    return step_train


def step_deep_attack(ctx: Context) -> StepOutput:
    """Bits/dim of test images against the budget of the likelihood-lowering PGD attack, per trained model;
    the image grid (clean, attacked at ``teaser.eps``, amplified difference) for the first model."""
    b = ctx.budget
    models = trained_models(ctx)
    x = model_pixels(deep.deep_data(b, ctx.seed).test, models, b.eval.n, ctx.device)
    res = deep.compute_bpd_vs_eps(models, x, b, seed=ctx.seed)
    out = StepOutput(results=res)
    eps_grid, curves = res["eps"], res["mean_bpd"]
    out.figures["bpd_vs_eps"] = figures.bpd_vs_eps_figure(eps_grid, curves, b.eval.norm)
    steps_phenomena.attack_tables(ctx, out, res["norms"], b.deep.dataset)
    grid = res["grid"]
    out.figures["image_grid"] = figures.image_grid_figure(grid["clean"], grid["attacked"])
    out.notes.append(f"Image grid: {grid['model']}, eps = {b.teaser.eps:g} ({b.eval.norm}); bits/dim clean "
                     + ", ".join(rep.fmt(float(v)) for v in grid["bpd_clean"]) + " -> attacked "
                     + ", ".join(rep.fmt(float(v)) for v in grid["bpd_attacked"]) + ".")
    return out


def step_ood(ctx: Context) -> StepOutput:
    """The out-of-distribution attack: PGD raising the likelihood of OOD images (``ood_eps``); bits/dim
    histograms and the AUROC of the likelihood score before and after, per trained model and OOD set. An OOD
    set that cannot be loaded here (optional data, e.g. Fashion-MNIST) is noted as not run."""
    b = ctx.budget
    models = trained_models(ctx)
    data = deep.deep_data(b, ctx.seed)
    x_in = model_pixels(data.test, models, b.ood.n, ctx.device)
    sets = {name: deep.compute_ood(models, x_in, model_pixels(o, models, b.ood.n, ctx.device), b, seed=ctx.seed,
                                   ood_name=name) for name, o in data.ood.items()}
    out = StepOutput(results={"sets": sets, "eps": b.ood.eps, "norm": b.eval.norm})
    rows = [[label, name, r["in_mean"], r["ood_mean"], r["ood_attacked_mean"], r["auroc_before"], r["auroc_after"]]
            for name, res in sets.items() for label, r in res["models"].items()]
    out.tables.append(ctx.table(
        f"OOD attack ({b.eval.norm}, eps = {b.ood.eps:g}, {b.ood.pgd_steps} steps, {len(x_in)} images per set): mean "
        "bits/dim and AUROC of the likelihood score (in-distribution vs OOD)",
        ["model", "OOD set", f"{b.deep.dataset} test", "OOD", "OOD attacked", "AUROC before", "AUROC after"], rows))
    for name, reason in data.missing.items():
        out.notes.append(f"not run: OOD set {name}: {reason}")
    for k, (name, res) in enumerate(sets.items()):
        first = f"{b.teaser.model} / mle" if f"{b.teaser.model} / mle" in res["models"] else next(iter(res["models"]))
        r = res["models"][first]
        out.figures["ood_histograms" if k == 0 else f"ood_histograms_{name}"] = figures.ood_histogram_figure(
            r["in_bpd"], r["ood_bpd"], r["ood_attacked_bpd"], r["auroc_before"], r["auroc_after"],
            in_label=f"{b.deep.dataset} test ({first})", ood_label=name)
    return out


def step_teaser(ctx: Context) -> StepOutput:
    """The teaser panel: the measured numbers of ``teaser.model`` (maximum likelihood and hybrid) next to the
    paper's (Pope et al. 2020, Fig. 1, CIFAR-10)."""
    b = ctx.budget
    att, ood = ctx.records.get("deep_attack", {}), ctx.records.get("ood", {})
    if att.get("status") not in ("ok", "cached") or ood.get("status") not in ("ok", "cached"):
        raise NotAvailable("needs the deep_attack and ood steps, which did not run")
    model = b.teaser.model if b.teaser.model in b.flows.models else b.flows.models[0]
    if f"{model} / mle" not in att["results"]["at_teaser_eps"]:
        raise NotAvailable(f"no maximum-likelihood {model} was trained")
    rows = deep.teaser_rows(b, model, att["results"]["at_teaser_eps"], ood["results"]["sets"][b.ood.sets[0]])
    out = StepOutput(results={"model": model, "rows": [{"case": c, "measured": m, "paper": p} for c, m, p in rows],
                              "teaser_eps": b.teaser.eps, "ood_eps": b.ood.eps, "norm": b.eval.norm})
    out.tables.append(ctx.table(
        f"teaser: mean bits/dim, {model} on {b.deep.dataset} ({b.eval.norm} attacks) vs the paper (CIFAR-10)",
        ["case", "measured", "paper"], [[c, "n/a" if m is None else m, p] for c, m, p in rows]))
    out.notes.append("The paper's numbers are for one CIFAR-10 image with the paper's (unknown) models and budgets; "
                     "ours are means over test images of a small dataset, so only the shape is comparable.")
    out.figures["teaser"] = figures.teaser_figure(rows, model_label=f"{model}, {b.deep.dataset}")
    return out


def deep_steps(budget: Budget) -> list[Step]:
    """Training steps (one per model and mode), then the attack, OOD and teaser steps."""
    flows = budget.flows
    trains = [Step(f"train_{m}_{mode}", f"Training {m} ({mode})", make_train_step(m, mode), deep.TRAIN_SECTIONS,
                   () if mode == "mle" or "mle" not in flows.modes else (f"train_{m}_mle",))
              for m in flows.models for mode in flows.modes]
    names = tuple(s.name for s in trains)
    return trains + [
        Step("deep_attack", "In-distribution attack on deep flows: bits/dim vs eps", step_deep_attack,
             ("deep", "flows", "eval", "teaser"), names),
        Step("ood", "Out-of-distribution attack and AUROC", step_ood,
             ("deep", "flows", "eval", "ood", "teaser"), names),
        Step("teaser", "Teaser: measured vs the paper", step_teaser, ("flows", "ood", "teaser"),
             ("deep_attack", "ood")),
        Step("ood_curve", "Out-of-distribution attack against eps", steps_phenomena.step_ood_curve,
             ("deep", "flows", "eval", "ood"), names),
        Step("dequant", "Dequantised bits/dim", steps_phenomena.step_dequant, ("deep", "flows", "dequant"), names),
        Step("theory", "The linear theory against the deep flows", steps_phenomena.step_theory,
             ("deep", "flows", "theory"), names),
        Step("deep_tradeoff", "Deep robustness-accuracy trade-off", steps_phenomena.step_deep_tradeoff,
             ("deep", "train", "deep_tradeoff"), tuple(n for n in names if n.endswith("_mle"))),
        Step("certify", "Certified bounds on the worst-case NLL", steps_certify.step_certify,
             ("deep", "flows", "certify"), names),
    ]
