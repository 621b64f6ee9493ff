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
# # 2. NLL rise against the budget: exact optimum vs PGD vs a certified interval
#
# On a `d`-dimensional linear flow with condition number `cond`, for a few samples:
#
# * the exact L2 optimum (R1);
# * PGD (`deepcheck.attacks.pgd`) on the torch `LinearFlow` with the same `A`, `b` — L2 and L-infinity;
# * the certified L-infinity interval `[lower, upper]` of `linflow.perturbation_bounds` (R3: exact by vertex
#   enumeration in small dimension, an SDP bound and rounding beyond).

# %%
import os

import numpy as np

from deepcheck import figures
from deepcheck.reproduce import BUDGETS
from deepcheck.reproduce.compute_linear import compute_attack_vs_eps

budget = BUDGETS["smoke" if os.environ.get("FLOWROBUST_SMOKE") else "quick"]
a = budget.attack
r = compute_attack_vs_eps(a.dim, a.cond, a.points, a.eps, a.pgd_steps, a.pgd_restarts, seed=0)

# %%
for i, e in enumerate(r["eps"]):
    print(f"eps {e:5.3f}: exact L2 {r['exact_l2'][i]:9.4f}  PGD L2 {r['pgd_l2'][i]:9.4f}  PGD L-inf "
          f"{r['pgd_linf'][i]:9.4f}  L-inf in [{r['linf_lower'][i]:.4f}, {r['linf_upper'][i]:.4f}]")

# %% [markdown]
# PGD is a feasible attack, so it can never beat the exact optimum (up to rounding): a check of both.

# %%
assert np.all(np.asarray(r["pgd_l2_points"]) <= np.asarray(r["exact_l2_points"]) * (1 + 1e-8) + 1e-10)

# %%
fig = figures.nll_vs_eps_figure(r["eps"], r["exact_l2"], r["pgd_l2"], r["linf_lower"], r["linf_upper"],
                                r["pgd_linf"])
