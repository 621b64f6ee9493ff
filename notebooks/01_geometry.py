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
# # 1. The geometry of the optimal perturbations of a linear flow
#
# A linear flow `x = A z + b` is the Gaussian `N(mu, Sigma)`. Moving a point `x` by `delta` changes its NLL by
# `delta^T P v + 1/2 delta^T P delta` (`v = x - mu`, `P = Sigma^{-1}`). Within an L2 ball of radius `eps`:
#
# * **lowering** the likelihood (R1) is a trust-region subproblem with a negative-definite model: the
#   optimum is on the sphere, `delta_i = w_i / (eta s_i - 1)` in the eigenbasis with `eta > 1/s_min`;
# * **raising** it (R2) is convex: `delta = -v` if `||v|| <= eps`, else `delta_i = -w_i / (1 + eta s_i)`;
# * at the mean (`v = 0`, the hard case) the optimum is `+-eps u_min`: the **universal** perturbation (R4).
#
# This notebook calls the same functions as `python -m deepcheck reproduce`.

# %%
import os

import numpy as np

from deepcheck import figures
from deepcheck.reproduce import BUDGETS
from deepcheck.reproduce.compute_linear import compute_geometry

budget = BUDGETS["smoke" if os.environ.get("FLOWROBUST_SMOKE") else "quick"]
r = compute_geometry(budget.geometry.eps, budget.geometry.brute_force)
print(f"eps = {r['eps']}, s_min = {r['s_min']:.4g}")

# %% [markdown]
# The exact optima against brute force (the NLL change maximised over points of the circle `||delta|| = eps`
# and minimised over a polar grid of the disk): exact lowering is never below brute force, exact raising
# never above it.

# %%
for k, p in enumerate(r["points"]):
    print(f"point {k} {p}: rise {r['rise'][k]:.6f} (brute force {r['brute_force_rise'][k]:.6f}), "
          f"change when raising the likelihood {r['drop'][k]:.6f} (brute force {r['brute_force_drop'][k]:.6f})")
assert np.all(r["rise"] >= r["brute_force_rise"] - 1e-9)
assert np.all(r["drop"] <= r["brute_force_drop"] + 1e-9)

# %%
fig = figures.geometry_figure(r["mean"], r["cov"], r["eps"], r["points"], r["delta_decrease"],
                              r["delta_increase"], r["u_min"])
