"""The figures of ``python -m deepcheck reproduce`` and of ``notebooks/``: drawing only.

Each function of :mod:`.plots` takes plain arrays and returns a matplotlib Figure; :func:`save_figure` writes
PNG and PDF atomically. The experiments behind the figures are in :mod:`deepcheck.reproduce.compute_linear`
and :mod:`deepcheck.reproduce.compute_deep`.
"""

from .certified import certified_band_figure
from .phenomena import deep_tradeoff_figure, ood_curve_figure, theory_vs_deep_figure
from .plots import (
    bpd_vs_eps_figure,
    geometry_figure,
    image_grid_figure,
    nll_vs_eps_figure,
    ood_histogram_figure,
    save_figure,
    teaser_figure,
    tradeoff_figure,
    waterfilling_figure,
)

__all__ = ["save_figure", "geometry_figure", "nll_vs_eps_figure", "waterfilling_figure", "tradeoff_figure",
           "bpd_vs_eps_figure", "image_grid_figure", "ood_histogram_figure", "teaser_figure",
           "ood_curve_figure", "deep_tradeoff_figure", "theory_vs_deep_figure", "certified_band_figure"]
