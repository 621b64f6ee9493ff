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
# # 3. Adversarial training of a linear flow and the robustness–accuracy trade-off
#
# **Water-filling (R5).** Against the universal L2 attack of budget `eps`, the robust flow keeps the
# data's mean and eigenvectors and lifts the small eigenvalues to a water level `tau`:
# `Sigma* = V diag(max(s_i, tau)) V^T` with `sum_i (tau - s_i)_+ = eps^2`.
#
# **Trade-off (R7).** As the training budget grows, the accuracy loss `KL(data || flow)` grows and the worst
# NLL rise under an attack of budget `eps_a`, `eps_a^2 / (2 tau)`, falls; cvxpy's constrained problem
# (min KL s.t. worst rise <= r) lands on the same curve.

# %%
import os

from deepcheck import figures
from deepcheck.reproduce import BUDGETS
from deepcheck.reproduce.compute_linear import compute_tradeoff, compute_waterfilling

budget = BUDGETS["smoke" if os.environ.get("FLOWROBUST_SMOKE") else "quick"]
w = compute_waterfilling(budget.waterfill.eps, seed=0)
print(f"digits pixels, eps = {w['eps']}: tau = {w['tau']:.4g}, {w['n_lifted']} eigenvalues lifted, "
      f"KL = {w['kl']:.4g} nats, worst rise {w['rise_mle']:.4g} -> {w['rise_robust']:.4g} nats")
print("docs/theory.md's worked example (tau 1.125, KL 0.36649, rise 0.4444):", w["worked"]["tau"], w["worked"]["kl"],
      w["worked"]["rise_robust"])

# %%
fig = figures.waterfilling_figure(w["data_eigvals"], w["robust_eigvals"], w["tau"], w["eps"])

# %%
tr = budget.tradeoff
t = compute_tradeoff(tr.dim, tr.n, tr.eps_train, tr.eps_attack, tr.sample, tr.checks, seed=0)

# %%
for e, kl, rise in zip(t["eps_train"], t["universal"]["kl"], t["universal"]["rise"]):
    print(f"eps_train {e:5.2f}: KL {kl:.5f} nats, worst rise {rise:.5f} nats")
fig = figures.tradeoff_figure(t["universal"], t["sample"], t["checks"], t["eps_attack"])
