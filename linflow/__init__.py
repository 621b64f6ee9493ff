"""linflow: exact adversarial robustness of linear flows ``x = A z + b`` (DESIGN R1-R7).

Pure numpy/scipy/cvxpy/sympy; never imports torch.
"""

from .box import CertifiedPerturbation, certified_perturbation, perturbation_bounds
from .model import LinearFlow
from .perturb import nll_change, optimal_nll_change, optimal_perturbation, universal_nll_change, universal_perturbation
from .tradeoff import ParetoFront, TradeoffCurve, pareto_points, tradeoff
from .training import FitInfo, adversarial_fit, robust_nll, water_level

__all__ = ["LinearFlow"]
__all__ += ["optimal_perturbation", "optimal_nll_change", "nll_change", "universal_perturbation",
            "universal_nll_change"]
__all__ += ["perturbation_bounds", "certified_perturbation", "CertifiedPerturbation"]
__all__ += ["adversarial_fit", "robust_nll", "water_level", "FitInfo", "tradeoff", "pareto_points", "TradeoffCurve",
            "ParetoFront"]
