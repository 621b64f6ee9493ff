"""Re-export of :mod:`linflow.verification.derivations` (the sympy derivations now live beside the checks)."""

from .verification.derivations import (  # noqa: F401
    ALL,
    SymbolicCheck,
    _is_zero,
    expected_nll_change,
    minorant_minimum,
    run_all,
    s_lemma_lmi,
    secular_equation_kkt,
    tradeoff_kl,
    water_filling_conditions,
)

__all__ = ["ALL", "SymbolicCheck", "expected_nll_change", "minorant_minimum", "run_all", "s_lemma_lmi",
           "secular_equation_kkt", "tradeoff_kl", "water_filling_conditions"]
