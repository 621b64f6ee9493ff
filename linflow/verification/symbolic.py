"""Verification by sympy (``SYM``): every derivation of :mod:`linflow.symbolic` must simplify to its statement.

A check's discrepancy is 0 when the derivation's verdict holds and 1 when it does not (tolerance 0.5).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import symbolic
from . import check


def _register(fn: Callable[[], symbolic.SymbolicCheck]) -> None:
    def run(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
        res = fn()
        return (0.0 if res.verdict else 1.0), 1, f"{res.result}: {res.claim}"

    run.__name__ = fn.__name__
    check("SYM", "sympy derivation vs the stated closed form", tol=0.5)(run)


for _fn in symbolic.ALL:
    _register(_fn)
