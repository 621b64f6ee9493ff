# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. GLOW and RealNVP under attack, and hybrid adversarial training
#
# Two attacks on the likelihood of a trained flow (pixels in `[0, 1]`, PGD clamped to the image range):
#
# * the **in-distribution attack** lowers the likelihood of test images (raises their bits/dim) within an
#   L-infinity ball of radius `eps`;
# * the **out-of-distribution attack** raises the likelihood of OOD images (uniform noise), which blurs the
#   likelihood-based separation of in- and out-of-distribution data (AUROC).
#
# **Hybrid training** minimises `(1 - lam) NLL(x) + lam NLL(x_adv)` with `x_adv` from PGD; here it fine-tunes
# the maximum-likelihood model for a few epochs. The settings are
# the `quick` budget of `python -m deepcheck reproduce` (the `smoke` budget under `FLOWROBUST_SMOKE=1`);
# the models are checkpointed under `out/notebooks/` so a rerun does not retrain.

# %%
import os
from pathlib import Path

from deepcheck import figures
from deepcheck.reproduce import BUDGETS
from deepcheck.reproduce import compute_deep as deep

smoke = bool(os.environ.get("FLOWROBUST_SMOKE"))
budget = BUDGETS["smoke"].with_settings(flows={"models": ("glow",)}) if smoke else BUDGETS["quick"]
out = Path("out") / "notebooks" / budget.name
data = deep.deep_data(budget, seed=0)
print(data.train, data.test, *data.ood.values(), sep="\n")

# %%
models = {}
for model in budget.flows.models:
    for mode in budget.flows.modes:  # "mle" first: the hybrid model is fine-tuned from it
        init = models.get(f"{model} / mle") if mode != "mle" else None
        net, summary = deep.train_flow(model, mode, budget, data, seed=0, init=init,
                                       checkpoint=out / deep.checkpoint_name(model, mode, budget, seed=0))
        models[f"{model} / {mode}"] = net
        print(f"{model} / {mode}: {summary['n_params']} parameters, {summary['epochs']} epochs, "
              f"val bits/dim {summary['val_bpd']:.3f}")

# %% [markdown]
# ## Bits/dim against the attack budget

# %%
x = data.test.pixels()[: budget.eval.n]
curves = deep.compute_bpd_vs_eps(models, x, budget, seed=0)
for label, ys in curves["mean_bpd"].items():
    print(label, " ".join(f"{y:.3f}" for y in ys))
fig = figures.bpd_vs_eps_figure(curves["eps"], curves["mean_bpd"], budget.eval.norm)

# %%
g = curves["grid"]
fig = figures.image_grid_figure(g["clean"], g["attacked"])

# %% [markdown]
# ## The out-of-distribution attack

# %%
ood_name = budget.ood.sets[0]
ood = deep.compute_ood(models, data.test.pixels()[: budget.ood.n], data.ood[ood_name].pixels()[: budget.ood.n],
                       budget, seed=0, ood_name=ood_name)
for label, r in ood["models"].items():
    print(f"{label}: in {r['in_mean']:.3f}, OOD {r['ood_mean']:.3f} -> attacked {r['ood_attacked_mean']:.3f} "
          f"bits/dim; AUROC {r['auroc_before']:.3f} -> {r['auroc_after']:.3f}")
first = next(iter(ood["models"].values()))
fig = figures.ood_histogram_figure(first["in_bpd"], first["ood_bpd"], first["ood_attacked_bpd"],
                                   first["auroc_before"], first["auroc_after"])

# %% [markdown]
# ## The teaser: measured vs the paper's numbers (CIFAR-10; only the shape is comparable)

# %%
model = budget.teaser.model if budget.teaser.model in budget.flows.models else budget.flows.models[0]
rows = deep.teaser_rows(budget, model, curves["at_teaser_eps"], ood)
for case, measured, paper in rows:
    print(f"{case:55s} {'n/a' if measured is None else f'{measured:8.3f}'}   paper {paper}")
fig = figures.teaser_figure(rows, model_label=f"{model}, {budget.deep.dataset}")
