"""The figures of ``python -m deepcheck reproduce`` and of ``notebooks/``.

* :mod:`.plots` -- drawing only: each function takes plain arrays and returns a matplotlib Figure;
  :func:`save_figure` writes PNG and PDF atomically;
* :mod:`.linear` -- the computations behind the linear-flow figures (DESIGN R1-R7);
* :mod:`.deep` -- the computations behind the deep-flow figures (training, attacks, OOD, teaser);
* :mod:`.availability` -- missing building blocks are reported (:class:`NotAvailable`), never faked.

The plotting functions are re-exported here: ``from deepcheck import figures; figures.geometry_figure(...)``.
The computation modules are imported on use (``from deepcheck.figures import linear``).
"""

from .availability import NotAvailable, linflow_api, require
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

__all__ = ["NotAvailable", "require", "linflow_api", "save_figure", "geometry_figure", "nll_vs_eps_figure",
           "waterfilling_figure", "tradeoff_figure", "bpd_vs_eps_figure", "image_grid_figure",
           "ood_histogram_figure", "teaser_figure"]
