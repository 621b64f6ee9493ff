"""Verification by sympy (``SYM``): every derivation of :mod:`linflow.verification.derivations` must simplify to
its statement.

A check's discrepancy is 0 when the derivation's verdict holds and 1 when it does not (tolerance 0.5). Each check
runs one derivation; its docstring (copied from the derivation) ends with a ``Scope`` paragraph saying what sympy
derives in general (symbolic entries, fixed small dimension: never symbolic ``d``) and what it only checks on an
instance (substituted numbers).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import check
from .derivations import ALL, SymbolicCheck


def _register(fn: Callable[[], SymbolicCheck]) -> None:
    def run(rng: np.random.Generator, quick: bool) -> tuple[float, int, str]:
        res = fn()
        return (0.0 if res.verdict else 1.0), 1, f"{res.result}: {res.claim}"

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    check("SYM", "sympy derivation (symbolic entries, fixed d) vs the stated closed form", tol=0.5)(run)


for _fn in ALL:
    _register(_fn)
