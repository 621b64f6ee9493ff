"""The linear-flow steps of ``reproduce``: verification of R1-R7 and the four linear-flow figures.

Each step renders the result of a computation of :mod:`.compute_linear` as tables, notes and a figure.
"""

from __future__ import annotations

import numpy as np

from linflow.verification import run_checks

from .. import figures
from . import compute_linear as linear
from . import report as rep
from .pipeline import Context, Step, StepOutput


def step_verify(ctx: Context) -> StepOutput:
    """R1-R7 (docs/theory.md): ``linflow.verification.run_checks`` (the same as ``python -m linflow verify``)."""
    v = ctx.budget.verify
    only = v.only
    if only is None:
        results = run_checks(seed=ctx.seed, quick=v.quick, progress=False)
    else:
        results = [r for prefix in only for r in run_checks(seed=ctx.seed, quick=v.quick, only=prefix,
                                                           progress=False)]
    if not results:
        raise ValueError(f"no verification checks ran (only = {only})")
    rows = [[r.result, r.name, r.method, float(r.worst), float(r.tol), int(r.cases), float(r.seconds),
             "pass" if r.passed else "FAIL"] for r in results]
    failed = [r for r in results if not r.passed]
    out = StepOutput(results={"checks": [r.as_dict() for r in results], "n_checks": len(results),
                              "n_failed": len(failed)}, passed=not failed)
    out.tables.append(ctx.table("verification of R1-R7 (docs/theory.md) (closed form against an independent method)",
                                ["result", "check", "methods compared", "worst discrepancy", "tol", "cases",
                                 "time (s)", "verdict"], rows))
    out.notes.append(f"{len(results) - len(failed)} of {len(results)} checks passed"
                     + ("." if only is None else f" (this budget runs only the checks of {', '.join(only)}; "
                        "`python -m linflow verify` runs them all)."))
    for r in failed:
        out.notes.append(f"FAILED {r.result} {r.name}: worst {r.worst:.3g} > tol {r.tol:.1g}. {r.detail}")
    return out


def step_geometry(ctx: Context) -> StepOutput:
    r = linear.compute_geometry(ctx.budget.geometry.eps, ctx.budget.geometry.brute_force)
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
    a = ctx.budget.attack
    r = linear.compute_attack_vs_eps(a.dim, a.cond, a.points, a.eps, a.pgd_steps, a.pgd_restarts, ctx.seed,
                                     ctx.device)
    out = StepOutput(results=r)

    cols = ("exact_l2", "pgd_l2", "linf_lower", "linf_upper", "pgd_linf")
    rows = [[float(e)] + [float(r[c][i]) for c in cols] for i, e in enumerate(r["eps"])]
    out.tables.append(ctx.table(f"mean NLL rise (nats) over {r['n_points']} points of a {r['dim']}-d flow "
                                f"(s_min = {rep.fmt(r['s_min'])})",
                                ["eps", "L2 exact (R1)", "L2 PGD", "L-inf lower (R3)", "L-inf upper (R3)",
                                 "L-inf PGD"], rows))
    out.notes.append(f"PGD (L2) fell short of the exact optimal NLL rise by a median relative "
                     f"{rep.fmt(r['pgd_l2_gap_median'])} and a worst {rep.fmt(r['pgd_l2_gap_worst'])} "
                     f"({a.pgd_steps} steps, {a.pgd_restarts} restarts; negative: PGD above the optimum by rounding).")
    out.notes.append(f"PGD (L-inf) fell short of the certified upper bound by a median relative "
                     f"{rep.fmt(r['pgd_linf_gap_median'])} and a worst {rep.fmt(r['pgd_linf_gap_worst'])} "
                     "(exact where the interval is closed: vertex enumeration in small dimension).")
    out.figures["nll_vs_eps"] = figures.nll_vs_eps_figure(r["eps"], r["exact_l2"], r["pgd_l2"], r["linf_lower"],
                                                          r["linf_upper"], r["pgd_linf"])
    return out


# ------------------------------------------------------------------------------------------------ water-filling
def step_waterfilling(ctx: Context) -> StepOutput:
    r = linear.compute_waterfilling(ctx.budget.waterfill.eps, ctx.seed)
    w = r["worked"]
    out = StepOutput(results=r)
    out.tables.append(ctx.table(
        f"universal adversarial training (R5) on the 64-d digits pixels, eps = {r['eps']:g}",
        ["water level tau", "eigenvalues lifted", "KL(data || robust) (nats)", "worst rise, MLE flow (nats)",
         "worst rise, robust flow (nats)"],
        [[r["tau"], r["n_lifted"], r["kl"], r["rise_mle"], r["rise_robust"]]]))
    out.tables.append(ctx.table(
        "R7 worked example, S = diag(4, 1, 0.25), eps = 1 (expected values from docs/theory.md)",
        ["quantity", "measured", "docs/theory.md"],
        [["tau", w["tau"], 1.125], ["robust eigenvalues", " ".join(rep.fmt(v) for v in w["eigvals"]), "1.125 1.125 4"],
         ["KL (nats)", w["kl"], 0.36649], ["worst rise at eps_a = 1, robust (nats)", w["rise_robust"], 0.4444],
         ["worst rise at eps_a = 1, MLE (nats)", w["rise_mle"], 2.0]]))
    out.figures["waterfilling"] = figures.waterfilling_figure(r["data_eigvals"], r["robust_eigvals"], r["tau"],
                                                              r["eps"])
    return out


# ------------------------------------------------------------------------------------------------ trade-off
def step_tradeoff(ctx: Context) -> StepOutput:
    t = ctx.budget.tradeoff
    r = linear.compute_tradeoff(t.dim, t.n, t.eps_train, t.eps_attack, t.sample, t.checks, ctx.seed)
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


STEPS: list[Step] = [
    Step("verify", "Verification of R1-R7 (docs/theory.md)", step_verify, ("verify",)),
    Step("geometry", "Geometry of the optimal perturbations (2-D linear flow)", step_geometry, ("geometry",)),
    Step("attack_vs_eps", "NLL rise against eps: exact vs PGD vs certified interval", step_attack_vs_eps,
         ("attack",)),
    Step("waterfilling", "Adversarial training against the universal attack: water-filling", step_waterfilling,
         ("waterfill",)),
    Step("tradeoff", "Robustness-accuracy trade-off", step_tradeoff, ("tradeoff",)),
]
"""The linear-flow steps, in the order they run."""
