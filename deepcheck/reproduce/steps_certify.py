"""The ``certify`` step: certified bounds on the worst-case NLL of the trained deep flows (issue 15) beside the
NLL that PGD attains, against eps (:func:`deepcheck.certify.nll_bounds`)."""

from __future__ import annotations

from .. import figures
from ..certify import nll_bounds
from . import compute_deep as deep
from .pipeline import Context, NotAvailable, StepOutput
from .trained import model_pixels, trained_models


def step_certify(ctx: Context) -> StepOutput:
    """For ``certify.model`` (each trained mode): mean bits/dim clean, attained by PGD and certified at each eps,
    upper/lower and the median excess ratio (upper - clean) / (lower - clean)."""
    b, c = ctx.budget, ctx.budget.certify
    models = {k: v for k, v in trained_models(ctx).items() if k.split(" / ")[0] == c.model}
    if not models:
        raise NotAvailable(f"no trained {c.model} flow")
    x = model_pixels(deep.deep_data(b, ctx.seed).test, models, c.n, ctx.device)
    rows = []
    for label, net in models.items():
        for eps in c.eps:
            try:
                bounds = nll_bounds(net.cpu(), x.cpu(), float(eps), norm="linf", method=c.method, steps=c.steps,
                                    restarts=c.restarts, seed=ctx.seed, batch_size=c.batch_size)
            except MemoryError as exc:  # an allocation that does not fit (the zonotope caps its symbols, max_symbols)
                raise NotAvailable(f"{c.method} bounds of {label} do not fit in memory: {exc}") from exc
            rows.append({"model": label, **bounds.summary()})
    out = StepOutput(results={"rows": rows, "dataset": b.deep.dataset, "n": int(len(x))})
    out.tables.append(ctx.table(
        f"certified bounds ({c.method}, L-inf, clamp [0, 1]) on the worst NLL of {len(x)} {b.deep.dataset} test "
        f"images, beside the NLL attained by PGD ({c.steps} steps, {c.restarts} restarts); mean bits/dim; excess "
        "ratio = median of (upper - clean) / (lower - clean)",
        ["model", "eps x 255", "clean", "attained (PGD)", "certified", "upper/lower", "excess ratio"],
        [[r["model"], r["eps"] * 255, r["clean_bpd"], r["lower_bpd"], r["upper_bpd"], r["ratio_bpd"],
          r["excess_ratio_median"]] for r in rows]))
    out.figures["certify"] = figures.certified_band_figure(rows, method=c.method,
                                                           title=f"{b.deep.dataset}: ")
    return out
