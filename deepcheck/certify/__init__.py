"""Certified bounds on a flow's likelihood under bounded input perturbations (issue 15).

:func:`nll_bounds` returns, per sample, ``lower`` (the NLL at a PGD witness) and ``upper`` (certified by bound
propagation through the package's own layers: intervals, ``method="ibp"``; affine forms with an interval
remainder, ``"symbolic"``; affine forms with an error symbol per relaxed activation, ``"zonotope"``, the
tightest). Modules: :mod:`.forms` (the enclosures and the rounding margin), :mod:`.relax` (relaxations of
ReLU, exp, sigmoid, log-sigmoid, tanh), :mod:`.rules` (one rule per layer), :mod:`.flows` (Glow, RealNVP,
LinearFlow), :mod:`.objective` (the NLL from the latents), :mod:`.api`, :mod:`.cli`
(``python -m deepcheck certify``).
"""

from .api import METHODS, NLLBounds, nll_bounds, nll_upper_bound

__all__ = ["METHODS", "NLLBounds", "nll_bounds", "nll_upper_bound"]
