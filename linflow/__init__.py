"""linflow: exact adversarial robustness of linear flows ``x = A z + b`` (DESIGN R1-R7).

Pure numpy/scipy/cvxpy/sympy; never imports torch.
"""

from .model import LinearFlow

__all__ = ["LinearFlow"]
