"""The figures of the full-size deep experiments of ``reproduce`` (drawing only, from plain arrays): the OOD
attack against the budget, the deep robustness-accuracy trade-off beside the linear R7 curve, and the linear
theory's predictions against the deep flows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def ood_curve_figure(eps: Sequence[float], medians: Mapping[str, Sequence[float]], in_medians: Mapping[str, float],
                     aurocs: Mapping[str, Sequence[float]], *, ood_label: str, norm: str) -> Figure:
    """Left: median bits/dim of OOD images (``ood_label``) after the likelihood-raising attack, against the
    budget, one curve per model, with each model's in-distribution test median dotted. Right: the AUROC of
    the likelihood score (in-distribution vs attacked OOD) against the budget."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.0, 3.8))
    for k, (label, ys) in enumerate(medians.items()):
        color = f"C{k}"
        ax.plot(eps, ys, "-o", ms=3, color=color, label=label)
        ax.axhline(in_medians[label], color=color, ls=":", lw=1)
        ax2.plot(eps, aurocs[label], "-o", ms=3, color=color, label=label)
    ax.set_xlabel(rf"budget $\epsilon$ ({norm})")
    ax.set_ylabel("median bits/dim of attacked OOD images")
    ax.set_title(f"OOD attack on {ood_label} (dotted: in-distribution median)", fontsize=9)
    ax.legend(fontsize=7)
    ax2.axhline(0.5, color="grey", lw=0.8)
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel(rf"budget $\epsilon$ ({norm})")
    ax2.set_ylabel("AUROC (likelihood score)")
    ax2.set_title("OOD detection under attack", fontsize=9)
    fig.tight_layout()
    return fig


def deep_tradeoff_figure(deep: Sequence[Mapping[str, float | str]], linear: Mapping[str, Sequence[float]],
                         *, model_label: str, eps_attack: float, norm: str) -> Figure:
    """The deep robustness-accuracy trade-off in the form of the linear R7 curve: accuracy loss (clean bits/dim
    minus the maximum-likelihood model's) against the rise under attack (attacked minus clean bits/dim).
    ``deep``: points with ``label``, ``loss``, ``rise``; ``linear``: the linear flow's curve (``loss``,
    ``rise``, optionally ``loss_universal``, ``rise_universal``) as its training budget grows."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.0, 3.8))
    ax.plot([p["loss"] for p in deep], [p["rise"] for p in deep], "o", color="tab:red")
    for p in deep:
        ax.annotate(str(p["label"]), (p["loss"], p["rise"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("accuracy loss: clean bits/dim - MLE's")
    ax.set_ylabel(rf"rise under PGD ({norm}, $\epsilon_a$={eps_attack:g}), bits/dim")
    ax.set_title(f"deep: {model_label}, hybrid lambda x eps_train", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax2.plot(linear["loss"], linear["rise"], "-s", ms=3, color="tab:red", label="sample-specific attack (R1)")
    if "rise_universal" in linear:
        ax2.plot(linear["loss_universal"], linear["rise_universal"], "-o", ms=3, color="tab:purple",
                 label="universal attack (R7 closed form)")
    ax2.set_xlabel("accuracy loss: clean bits/dim - MLE's")
    ax2.set_ylabel(rf"rise at $\epsilon_a$={eps_attack:g} (L2), bits/dim")
    ax2.set_title("linear flow on the same pixels, universal training (R5, R7)", fontsize=9)
    ax2.set_yscale("log")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def theory_vs_deep_figure(eps: Sequence[float], curves: Mapping[str, Sequence[float]], *, title: str) -> Figure:
    """Mean bits/dim rise against the L2 budget: the linear model's predictions and the deep model's measured
    rises (PGD on the deep model; the linear optimum and ``+-eps u_min`` transferred to it), log scale."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for label, ys in curves.items():
        ls = "--" if label.startswith("linear") else "-"
        ax.plot(eps, [max(float(y), 1e-6) for y in ys], ls, marker="o", ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel(r"budget $\epsilon$ (L2, pixels in [0, 1])")
    ax.set_ylabel("mean bits/dim rise")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return fig
