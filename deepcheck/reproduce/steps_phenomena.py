"""The steps of the full-size deep experiments: the OOD attack against eps, the dequantised bits/dim, the linear
theory against the deep flows and the deep robustness-accuracy trade-off (computations in
:mod:`.compute_phenomena`, :mod:`.compute_theory`, :mod:`.compute_tradeoff_deep`; the in-distribution attack
per norm is part of the ``deep_attack`` step, whose tables are drawn here by :func:`attack_tables`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import figures
from ..dequant import dequantized_bpd
from . import compute_deep as deep
from . import compute_phenomena as phen
from . import compute_theory as theory
from . import compute_tradeoff_deep as tdeep
from . import report as rep
from .pipeline import Context, NotAvailable, StepOutput
from .trained import model_pixels, trained_models


def _strength_cell(s: dict[str, Any] | None) -> str:
    return "" if s is None else f"{rep.fmt(s['fraction'])} (n={s['n']})"


def attack_tables(ctx: Context, out: StepOutput, norms: dict[str, Any], dataset: str) -> None:
    """Per norm: mean bits/dim against eps with, next to each attacked number, the attack's strength (fraction
    of a stronger run's mean rise); the eps of ``eval.growth``-fold growth; a figure per extra norm."""
    ev = ctx.budget.eval
    for norm, r in norms.items():
        labels, s = list(r["mean_bpd"]), r["settings"]
        header = ["eps"] + [c for m in labels for c in (m, f"{m}: strength")]
        rows = [[e] + [c for m in labels for c in (r["mean_bpd"][m][i],
                                                   _strength_cell(r["strength"].get(m, [None] * (i + 1))[i]))]
                for i, e in enumerate(r["eps"])]
        out.tables.append(ctx.table(
            f"{norm}: mean bits/dim of {s['n']} {dataset} test images after PGD (lowering the likelihood, "
            f"{s['steps']} steps, {s['restarts']} random restarts); strength = the attack's fraction of the mean "
            f"rise that a stronger run ({s['strong_steps']} steps, {s['strong_restarts']} restarts) reaches on the "
            f"first {s['strong_n']} images", header, rows))
        out.tables.append(ctx.table(
            f"{norm}: smallest eps of the grid where mean bits/dim >= {ev.growth:g} x clean",
            ["model", "clean bits/dim", f"eps of {ev.growth:g}x growth", "largest growth on the grid"],
            [[m, r["mean_bpd"][m][r["eps"].index(0.0)],
              "not reached (eps <= " + rep.fmt(max(r["eps"])) + ")" if r["growth_eps"][m] is None
              else r["growth_eps"][m], r["max_growth"][m]] for m in labels]))
        if norm != ev.norm:
            out.figures[f"bpd_vs_eps_{norm}"] = figures.bpd_vs_eps_figure(r["eps"], r["mean_bpd"], norm)


def step_ood_curve(ctx: Context) -> StepOutput:
    """The OOD attack against the budget (``ood.eps_grid``) per OOD set and model: median bits/dim, AUROC, and
    the smallest eps where the attacked OOD median reaches the in-distribution median."""
    b = ctx.budget
    models = trained_models(ctx)
    data = deep.deep_data(b, ctx.seed)
    x_in = model_pixels(data.test, models, b.ood.n, ctx.device)
    sets = {name: phen.ood_curve(models, x_in, model_pixels(o, models, b.ood.n, ctx.device), b, seed=ctx.seed)
            for name, o in data.ood.items()}
    out = StepOutput(results={"sets": sets})
    for name, res in sets.items():
        labels = list(res["models"])
        out.tables.append(ctx.table(
            f"OOD attack on {name} ({res['norm']}, {res['steps']} steps, no restarts, {res['n_ood']} OOD and "
            f"{res['n_in']} {b.deep.dataset} test images): median bits/dim (AUROC)",
            ["eps"] + labels,
            [[e] + [f"{rep.fmt(res['models'][m]['median_bpd'][i])} ({rep.fmt(res['models'][m]['auroc'][i])})"
                    for m in labels] for i, e in enumerate(res["eps"])]))
        out.tables.append(ctx.table(
            f"OOD attack on {name}: smallest eps where the attacked OOD median reaches the in-distribution median",
            ["model", f"{b.deep.dataset} test median", "OOD median clean", "eps reaching it"],
            [[m, r["in_median"], r["median_bpd"][0],
              "not reached (eps <= " + rep.fmt(max(res["eps"])) + ")" if r["threshold_eps"] is None
              else r["threshold_eps"]] for m, r in res["models"].items()]))
        out.figures[f"ood_curve_{name}"] = figures.ood_curve_figure(
            res["eps"], {m: r["median_bpd"] for m, r in res["models"].items()},
            {m: r["in_median"] for m, r in res["models"].items()}, {m: r["auroc"] for m, r in res["models"].items()},
            ood_label=name, norm=res["norm"])
    for name, reason in data.missing.items():
        out.notes.append(f"not run: OOD set {name}: {reason}")
    return out


def step_dequant(ctx: Context) -> StepOutput:
    """Uniformly dequantised bits/dim (``dequant.k`` draws) beside the mid-bin value, clean test images."""
    b = ctx.budget
    models = trained_models(ctx)
    test = deep.deep_data(b, ctx.seed).test
    test = test[: min(b.dequant.n, len(test))]
    res = {m: dequantized_bpd(net, test, k=b.dequant.k, seed=ctx.seed).summary() for m, net in models.items()}
    out = StepOutput(results={"models": res, "dataset": b.deep.dataset})
    out.tables.append(ctx.table(
        f"bits/dim of {len(test)} clean {b.deep.dataset} test images: mid-bin point value and the uniformly "
        f"dequantised estimate (mean over K = {b.dequant.k} draws; the published convention)",
        ["model", "mid-bin", "dequantised (K draws)", "standard error", "importance-weighted bound"],
        [[m, r["mid_bin"], r["dequantized"], r["dequantized_se"], r["bound"]] for m, r in res.items()]))
    return out


def _mle_models(ctx: Context) -> dict[str, Any]:
    models = {k: v for k, v in trained_models(ctx).items() if k.endswith("/ mle")}
    if not models:
        raise NotAvailable("no maximum-likelihood deep flow was trained")
    return models


def step_theory(ctx: Context) -> StepOutput:
    """The linear theory (R1, R4) against the maximum-likelihood deep flows (:mod:`.compute_theory`)."""
    b = ctx.budget
    models = _mle_models(ctx)
    data = deep.deep_data(b, ctx.seed)
    flow = theory.fit_linear(data.train.pixels(), theory.resolve_reg(b.theory.reg, data.train.n_bins))
    x = model_pixels(data.test, models, b.theory.n, ctx.device)
    res = theory.theory_vs_deep(models, x.cpu(), flow, b, seed=ctx.seed)
    out = StepOutput(results=res)
    for m, r in res["models"].items():
        rows = [[e, res["predicted_r1"][i], res["predicted_r4"][i], r["pgd"][i], r["transfer_r1"][i],
                 r["transfer_r4"][i], r["universal"][i], r["transfer_r1"][i] / r["pgd"][i] if r["pgd"][i] else "n/a",
                 r["cos_pgd_r1"][i], r["cos_universal_umin"][i]] for i, e in enumerate(res["eps"])]
        out.tables.append(ctx.table(
            f"{m}: mean bits/dim rise of {res['n']} test images under L2 attacks (linear flow: reg {res['reg']:.3g}, "
            f"s_min {rep.fmt(res['s_min'])}, clean {rep.fmt(res['linear_clean_bpd'])} bits/dim; deep clean "
            f"{rep.fmt(r['clean_bpd'])})",
            ["eps", "linear predicted R1", "linear predicted R4", "deep PGD", "R1 optimum transferred",
             "eps u_min transferred", "deep universal", "transfer R1 / PGD", "cos(PGD delta, R1 delta)",
             "|cos(deep universal, u_min)|"], rows))
        out.figures[f"theory_vs_deep_{m.split(' ')[0]}"] = figures.theory_vs_deep_figure(
            res["eps"], {"linear predicted (R1)": res["predicted_r1"], "linear predicted (R4)": res["predicted_r4"],
                         "deep PGD": r["pgd"], "R1 optimum transferred": r["transfer_r1"],
                         "eps u_min transferred": r["transfer_r4"], "deep universal": r["universal"]},
            title=f"linear theory vs {m} on {b.deep.dataset}")
    out.notes.append("Transferred rises are lower bounds on the deep model's optimum; 'transfer R1 / PGD' is the "
                     "fraction of the deep attack that the linear optimum explains. The linear predictions ignore "
                     "the [0, 1] clamp that the deep evaluations apply.")
    return out


def step_deep_tradeoff(ctx: Context) -> StepOutput:
    """The deep robustness-accuracy trade-off grid beside the linear R7 curve (:mod:`.compute_tradeoff_deep`)."""
    from ..checkpoint import load_checkpoint
    b, dt = ctx.budget, ctx.budget.deep_tradeoff
    rec = ctx.records.get(f"train_{dt.model}_mle", {})
    if rec.get("status") not in ("ok", "cached"):
        raise NotAvailable(f"the maximum-likelihood {dt.model} was not trained")
    mle = load_checkpoint(ctx.out / rec["results"]["checkpoint"]).model.to(ctx.device).eval()
    data = deep.deep_data(b, ctx.seed)
    full_train = data.train
    if dt.n_train is not None:
        data = dataclasses.replace(data, train=data.train[:dt.n_train])
    x = model_pixels(data.test, {"m": mle}, dt.n, ctx.device)
    start = tdeep.deep_point(mle, x, b, seed=ctx.seed)
    points, files = [], []
    # lambda = 0: the MLE fine-tuned by maximum likelihood for as long: the baseline of the accuracy loss, so that
    # the extra training of the fine-tunes is not counted as a gain in accuracy
    for lam, e in [(0.0, 0.0)] + [(lam, e) for lam in dt.lambdas for e in dt.eps_train]:
        mode, tag = ("mle", "tradeoff-mle") if lam == 0.0 else ("hybrid", f"tradeoff-l{lam:g}-e{e:g}")
        b2 = tdeep.grid_budget(b, lam or dt.lambdas[0], e or dt.eps_train[0])
        ckpt = ctx.checkpoints / deep.checkpoint_name(dt.model, tag, b2, ctx.seed, ctx.device)
        init = load_checkpoint(ctx.out / rec["results"]["checkpoint"]).model
        net, summary = deep.train_flow(dt.model, mode, b2, data, seed=ctx.seed, device=ctx.device, checkpoint=ckpt,
                                       init=init)
        files.append(str(ckpt.relative_to(ctx.out)))
        p = tdeep.deep_point(net, x, b, seed=ctx.seed)
        points.append({"label": "lambda 0 (maximum likelihood)" if lam == 0.0 else f"lambda {lam:g}, eps {e:g}",
                       "lambda": lam, "eps_train": e, **p, "train_seconds": summary["train_seconds"]})
    for p in points:
        p.update(loss=p["clean"] - points[0]["clean"], rise=p["attacked"] - p["clean"])
    lin = tdeep.linear_curve(full_train.pixels(), x.cpu(), full_train.n_bins, b)
    out = StepOutput(results={"deep": points, "start": start, "linear": lin, "model": dt.model, "norm": dt.norm,
                              "eps_attack": dt.eps_attack}, files=files)
    out.tables.append(ctx.table(
        f"deep trade-off: {dt.model} fine-tuned {dt.epochs} epoch(s) on {len(data.train)} images by hybrid "
        f"training ({dt.norm} PGD, {dt.pgd_steps} steps) on {b.deep.dataset}; {len(x)} test images, PGD {dt.norm} "
        f"eps_a = {dt.eps_attack:g} ({dt.attack_steps} steps)",
        ["model", "clean bits/dim", "attacked bits/dim", "accuracy loss", "rise"],
        [["MLE before fine-tuning", start["clean"], start["attacked"], start["clean"] - points[0]["clean"],
          start["attacked"] - start["clean"]]]
        + [[p["label"], p["clean"], p["attacked"], p["loss"], p["rise"]] for p in points]))
    out.notes.append("Accuracy loss is measured against the model fine-tuned by maximum likelihood for as long "
                     "(lambda 0), so the fine-tunes' extra training is not counted; the linear curve is fitted on "
                     f"all {len(full_train)} training images.")
    out.tables.append(ctx.table(
        f"linear trade-off (R5/R7 universal training of a LinearFlow on the same pixels, reg {lin['reg']:.3g}): "
        f"bits/dim of the same test images, clean and under the exact L2 attack (R1) of eps_a = {dt.eps_attack:g}; "
        "the universal rise on the training pixels (R7)",
        ["eps_train", "clean", "attacked (R1)", "accuracy loss", "rise (R1)", "rise, universal (R7)"],
        [[e, lin["clean"][i], lin["attacked"][i], lin["loss"][i], lin["rise"][i], lin["rise_universal"][i]]
         for i, e in enumerate(lin["eps_train"])]))
    out.figures["deep_tradeoff"] = figures.deep_tradeoff_figure(
        points, lin, model_label=f"{dt.model} on {b.deep.dataset}", eps_attack=dt.eps_attack, norm=dt.norm)
    return out
