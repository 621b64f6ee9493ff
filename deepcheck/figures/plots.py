"""The figures of ``python -m deepcheck reproduce`` and of ``notebooks/``: pure plotting, no computation of results.

Every function takes plain arrays/lists (what the reproduce steps store in ``results.json``) and returns a
``matplotlib.figure.Figure``; :func:`save_figure` writes it as PNG and PDF. Nothing here trains or attacks,
so a figure can be redrawn from a ``results.json`` alone. The backend is the caller's choice (``reproduce``
selects Agg; notebooks keep their inline backend).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

COLORS = {"decrease": "tab:red", "increase": "tab:blue", "universal": "tab:purple", "pgd": "tab:orange",
          "exact": "black", "box": "tab:green"}


def save_figure(fig: Figure, directory: str | os.PathLike, name: str, *, dpi: int = 110) -> list[Path]:
    """Write ``fig`` as ``<directory>/<name>.png`` and ``.pdf`` (atomically) and close it; return both paths."""
    from ..fileio import atomic_write

    if not name or "/" in name or "\\" in name:
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    paths = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=dpi, bbox_inches="tight")
        paths.append(atomic_write(Path(directory) / f"{name}.{ext}", buf.getvalue()))
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------- linear flows
def _nll_grid(mean: np.ndarray, cov: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    gx, gy = np.meshgrid(xs, ys)
    V = np.stack([gx.ravel() - mean[0], gy.ravel() - mean[1]], axis=1)
    P = np.linalg.inv(cov)
    q = np.einsum("ni,ij,nj->n", V, P, V)
    nll = 0.5 * q + 0.5 * np.log(np.linalg.det(cov)) + np.log(2 * np.pi)
    return nll.reshape(gx.shape)


def geometry_figure(mean: Sequence[float], cov: Sequence[Sequence[float]], eps: float,
                    points: Sequence[Sequence[float]], delta_decrease: Sequence[Sequence[float]],
                    delta_increase: Sequence[Sequence[float]], u_min: Sequence[float]) -> Figure:
    """Likelihood contours of a 2-D linear flow; per point the L2 ball of radius ``eps`` with its lowering
    (red, R1) and raising (blue, R2) optimal perturbations; the universal perturbation ``mu +- eps u_min``
    (purple, R4)."""
    mean, cov = np.asarray(mean, float), np.asarray(cov, float)
    pts = np.asarray(points, float)
    dd, di = np.asarray(delta_decrease, float), np.asarray(delta_increase, float)
    u = np.asarray(u_min, float)
    span = np.abs(pts - mean).max() + 2 * eps
    xs = np.linspace(mean[0] - span, mean[0] + span, 240)
    ys = np.linspace(mean[1] - span, mean[1] + span, 240)
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    cs = ax.contour(xs, ys, _nll_grid(mean, cov, xs, ys), levels=14, cmap="Greys", linewidths=0.8)
    ax.clabel(cs, fontsize=6, fmt="%.1f")
    t = np.linspace(0, 2 * np.pi, 200)
    for k, (p, a, b) in enumerate(zip(pts, dd, di)):
        ax.plot(p[0] + eps * np.cos(t), p[1] + eps * np.sin(t), color="0.6", lw=0.8, ls="--")
        ax.plot(*p, "ko", ms=4)
        ax.annotate("", xy=p + a, xytext=p, arrowprops={"arrowstyle": "->", "color": COLORS["decrease"], "lw": 1.6})
        ax.annotate("", xy=p + b, xytext=p, arrowprops={"arrowstyle": "->", "color": COLORS["increase"], "lw": 1.6})
        ax.text(p[0], p[1] - 0.12 * eps, str(k), fontsize=7, ha="center", va="top")
    for sgn in (1, -1):
        ax.annotate("", xy=mean + sgn * eps * u, xytext=mean,
                    arrowprops={"arrowstyle": "->", "color": COLORS["universal"], "lw": 2.0, "ls": ":"})
    ax.plot([], [], color=COLORS["decrease"], label="optimal L2 lowering (R1)")
    ax.plot([], [], color=COLORS["increase"], label="optimal L2 raising (R2)")
    ax.plot([], [], color=COLORS["universal"], ls=":", label=r"universal $\pm\epsilon u_{min}$ (R4)")
    ax.plot([], [], color="0.6", ls="--", label=rf"L2 ball, $\epsilon$={eps:g}")
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("Optimal perturbations of a 2-D linear flow (NLL contours)")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def nll_vs_eps_figure(eps: Sequence[float], exact_l2: Sequence[float], pgd_l2: Sequence[float] | None,
                      linf_lower: Sequence[float] | None, linf_upper: Sequence[float] | None,
                      pgd_linf: Sequence[float] | None = None) -> Figure:
    """Mean NLL rise against ``eps``: the exact L2 optimum (R1), PGD on the torch LinearFlow (markers), and
    the certified L-infinity interval ``[lower, upper]`` (R3, shaded)."""
    e = np.asarray(eps, float)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    ax.plot(e, exact_l2, color=COLORS["exact"], lw=1.8, label="L2 exact (R1)")
    if pgd_l2 is not None:
        ax.plot(e, pgd_l2, "o", color=COLORS["pgd"], ms=5, mfc="none", label="L2 PGD, torch LinearFlow")
    if linf_lower is not None and linf_upper is not None:
        ax.fill_between(e, linf_lower, linf_upper, color=COLORS["box"], alpha=0.3,
                        label=r"L$\infty$ certified [lower, upper] (R3)")
        ax.plot(e, linf_lower, color=COLORS["box"], lw=1.0)
        ax.plot(e, linf_upper, color=COLORS["box"], lw=1.0, ls="--")
    if pgd_linf is not None:
        ax.plot(e, pgd_linf, "s", color=COLORS["box"], ms=4, mfc="none", label=r"L$\infty$ PGD, torch LinearFlow")
    ax.set_xlabel(r"budget $\epsilon$")
    ax.set_ylabel("mean NLL rise (nats)")
    ax.set_title("Lowering the likelihood: exact optimum vs PGD")
    ax.legend(fontsize=7)
    return fig


def waterfilling_figure(data_eigvals: Sequence[float], robust_eigvals: Sequence[float], tau: float,
                        eps: float) -> Figure:
    """Eigenvalues of the data covariance (MLE flow) and of the universally robust flow (R5, ascending):
    robust = max(s_i, tau), the water level ``tau`` solving ``sum (tau - s_i)_+ = eps^2``."""
    s, r = np.asarray(data_eigvals, float), np.asarray(robust_eigvals, float)
    k = np.arange(1, len(s) + 1)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    ax.bar(k, r, color="tab:cyan", alpha=0.5, width=0.9, label="robust flow (R5)")
    ax.bar(k, s, color="tab:gray", width=0.5, label="data / MLE flow")
    ax.axhline(tau, color="tab:blue", ls="--", lw=1.2, label=rf"water level $\tau$={tau:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index (ascending)")
    ax.set_ylabel("variance")
    ax.set_title(rf"Water-filling against the universal L2 attack, $\epsilon$={eps:g}")
    ax.legend(fontsize=7)
    return fig


def tradeoff_figure(universal: Mapping[str, Sequence[float]], sample: Mapping[str, Sequence[float]] | None,
                    checks: Mapping[str, Sequence[float]] | None, eps_attack: float) -> Figure:
    """Robustness-accuracy trade-off (R7): accuracy loss KL(data || robust flow) against the worst NLL rise
    under attacks of budget ``eps_attack``, as ``eps_train`` grows. ``universal``/``sample`` hold arrays
    ``kl`` and ``rise``; ``checks`` the points of the constrained cvxpy problems (``kl``, ``rise`` and, for the
    sample-specific attack, ``sample_kl``, ``sample_rise`` or None)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    ax.plot(universal["kl"], universal["rise"], "-o", color="tab:purple", ms=3,
            label="universal attack: closed form (R5)")
    if sample is not None:
        ax.plot(sample["kl"], sample["rise"], "-s", color="tab:red", ms=3, label="sample-specific attack (R6)")
    if checks is not None and len(checks.get("kl", [])):
        ax.plot(checks["kl"], checks["rise"], "kx", ms=8, mew=1.5, label="cvxpy: min KL s.t. rise <= r (universal)")
    if checks is not None and checks.get("sample_kl") is not None:
        ax.plot(checks["sample_kl"], checks["sample_rise"], "k+", ms=9, mew=1.5,
                label="cvxpy: min KL s.t. worst NLL <= c (sample)")
    ax.set_yscale("log")
    ax.set_xlabel("accuracy loss: mean NLL - MLE's mean NLL (nats)")
    ax.set_ylabel(rf"worst NLL rise at $\epsilon_a$={eps_attack:g} (nats)")
    ax.set_title("Robustness-accuracy trade-off of adversarial training")
    ax.legend(fontsize=7)
    return fig


# ------------------------------------------------------------------------------------------------ deep flows
def bpd_vs_eps_figure(eps: Sequence[float], curves: Mapping[str, Sequence[float]], norm: str) -> Figure:
    """Bits/dim of in-distribution test images after the likelihood-lowering PGD attack, against ``eps``;
    one curve per trained model (``"glow / mle"`` ...), log scale."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for label, ys in curves.items():
        ls = "--" if "hybrid" in label else "-"
        ax.plot(eps, ys, ls, marker="o", ms=3, label=label)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(rf"budget $\epsilon$ ({norm}, pixels in [0, 1])")
    ax.set_ylabel("bits/dim after attack")
    ax.set_title("In-distribution attack: bits/dim vs budget")
    ax.legend(fontsize=7)
    return fig


def image_grid_figure(clean: np.ndarray, attacked: np.ndarray, *, amplify: float = 10.0,
                      titles: Sequence[str] = ("clean", "attacked", "difference")) -> Figure:
    """Rows of (clean, attacked, ``amplify`` x difference + 0.5) images; arrays (n, C, H, W) in [0, 1]."""
    clean, attacked = np.asarray(clean, float), np.asarray(attacked, float)
    n = clean.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(3 * 1.3, n * 1.3), squeeze=False)
    diff = np.clip(0.5 + amplify * (attacked - clean), 0, 1)
    for i in range(n):
        for j, img in enumerate((clean[i], attacked[i], diff[i])):
            ax = axes[i, j]
            im = np.transpose(img, (1, 2, 0))
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j] if j < 2 else f"{titles[2]} x{amplify:g}", fontsize=7)
    fig.tight_layout()
    return fig


def ood_histogram_figure(in_bpd: Sequence[float], ood_bpd: Sequence[float], ood_attacked_bpd: Sequence[float],
                         auroc_before: float, auroc_after: float, *, in_label: str = "in-distribution",
                         ood_label: str = "uniform noise") -> Figure:
    """Histograms of bits/dim: in-distribution test images, OOD images, and OOD images after the attack that
    raises their likelihood; AUROC of the bits/dim score (in vs OOD) before and after, in the legend."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    allv = np.concatenate([np.asarray(in_bpd), np.asarray(ood_bpd), np.asarray(ood_attacked_bpd)])
    bins = np.linspace(np.min(allv), np.max(allv), 40)
    ax.hist(in_bpd, bins=bins, alpha=0.6, color="tab:green", label=in_label)
    ax.hist(ood_bpd, bins=bins, alpha=0.6, color="tab:gray", label=f"{ood_label} (AUROC {auroc_before:.3f})")
    ax.hist(ood_attacked_bpd, bins=bins, alpha=0.6, color="tab:red",
            label=f"{ood_label}, attacked (AUROC {auroc_after:.3f})")
    ax.set_xlabel("bits/dim")
    ax.set_ylabel("count")
    ax.set_title(f"Out-of-distribution attack: raising the likelihood of {ood_label}")
    ax.legend(fontsize=7)
    return fig


def teaser_figure(rows: Sequence[tuple[str, float | None, float | None]], *, model_label: str) -> Figure:
    """The teaser panel: measured bits/dim next to the paper's (CIFAR-10, Pope et al. 2020, Fig. 1).
    ``rows`` are ``(case, measured, paper)``; ``None`` draws no bar."""
    labels = [r[0] for r in rows]
    meas = np.array([np.nan if r[1] is None else r[1] for r in rows], float)
    paper = np.array([np.nan if r[2] is None else r[2] for r in rows], float)
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(rows) + 1.2))
    ax.barh(y - 0.2, meas, height=0.38, color="tab:orange", label=f"measured ({model_label})")
    ax.barh(y + 0.2, paper, height=0.38, color="tab:gray", label="paper (CIFAR-10 teaser)")
    for yi, m, p in zip(y, meas, paper):
        if np.isfinite(m):
            ax.text(m, yi - 0.2, f" {m:.3g}", va="center", fontsize=7)
        if np.isfinite(p):
            ax.text(p, yi + 0.2, f" {p:.3g}", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("bits/dim")
    ax.set_title("Teaser: measured vs the paper's numbers")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
