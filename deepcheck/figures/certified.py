"""The certified band of :mod:`deepcheck.certify`: certified upper bound against the NLL attained by PGD, against
eps, one panel per model (drawing only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def certified_band_figure(rows: Sequence[Mapping[str, object]], *, method: str, title: str = "") -> Figure:
    """``rows``: dicts with ``model``, ``eps``, ``clean_bpd``, ``lower_bpd`` (attained by PGD) and ``upper_bpd``
    (certified), mean bits/dim; one panel per model, eps (x 255) on a log-2 axis, bits/dim on a log axis, the band
    between attained and certified shaded."""
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    if not models:
        raise ValueError("rows is empty: nothing to draw")
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], models):
        rs = sorted((r for r in rows if r["model"] == name), key=lambda r: float(r["eps"]))  # type: ignore[arg-type]
        e = np.array([float(r["eps"]) * 255 for r in rs])  # type: ignore[arg-type]
        lo = np.array([float(r["lower_bpd"]) for r in rs])  # type: ignore[arg-type]
        up = np.array([float(r["upper_bpd"]) for r in rs])  # type: ignore[arg-type]
        ax.axhline(float(rs[0]["clean_bpd"]), color="gray", ls=":", label="clean")  # type: ignore[arg-type]
        ax.fill_between(e, lo, up, color="tab:green", alpha=0.3, label=f"certified band ({method})")
        ax.plot(e, up, "g-", marker="o", label="certified upper")
        ax.plot(e, lo, color="tab:orange", marker="s", label="PGD (attained)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("eps x 255")
        ax.set_title(f"{title}{name}")
    axes[0][0].set_ylabel("mean bits/dim (log scale)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
