"""linflow: exact adversarial robustness of linear flows ``x = A z + b`` (R1-R7, see docs/theory.md).

Pure numpy/scipy/cvxpy/sympy; never imports torch. Every citation ``R1`` ... ``R7`` in this package's docstrings
is a section of ``docs/theory.md`` (statement, derivation, optimality conditions, the checks that run, tests).
"""

from . import box as _box
from .model import LinearFlow
from .perturb import (
    CertifiedPerturbation,
    certified_perturbation,
    nll_change,
    optimal_nll_change,
    optimal_perturbation,
    perturbation_bounds,
    universal_nll_change,
    universal_perturbation,
)
from .tradeoff import ParetoFront, TradeoffCurve, pareto_points, tradeoff
from .training import FitInfo, adversarial_fit, robust_nll, water_level

# These three moved from linflow.box to linflow.perturb (the one door for every norm). Bound here as well, so that
# ``from linflow.box import certified_perturbation`` keeps working without an import from box to perturb.
_box.CertifiedPerturbation = CertifiedPerturbation
_box.certified_perturbation = certified_perturbation
_box.perturbation_bounds = perturbation_bounds

__all__ = ["LinearFlow"]
__all__ += ["optimal_perturbation", "optimal_nll_change", "nll_change", "universal_perturbation",
            "universal_nll_change"]
__all__ += ["perturbation_bounds", "certified_perturbation", "CertifiedPerturbation"]
__all__ += ["adversarial_fit", "robust_nll", "water_level", "FitInfo", "tradeoff", "pareto_points", "TradeoffCurve",
            "ParetoFront"]
