"""Which building blocks of the package are present: a missing one makes a figure "not run", never faked.

The reproduce pipeline and the notebooks are written against the public contracts of :mod:`linflow` and
:mod:`deepcheck`; :func:`require` and :func:`linflow_api` look a name up and raise :class:`NotAvailable`
(with the reason) when it is absent, so a partial checkout still produces an honest report.
"""

from __future__ import annotations

import importlib
from typing import Any


class NotAvailable(Exception):
    """A building block of a step is missing: the step is reported as ``not run: <reason>``."""


def require(module: str, *names: str) -> Any:
    """Import ``module`` and return it (or the tuple of its attributes ``names``); :class:`NotAvailable` if absent."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise NotAvailable(f"{module} not available ({type(exc).__name__}: {exc})") from exc
    if not names:
        return mod
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise NotAvailable(f"{module} has no {', '.join(missing)} yet")
    got = tuple(getattr(mod, n) for n in names)
    return got[0] if len(got) == 1 else got


def linflow_api(name: str) -> Any:
    """A public function of :mod:`linflow` (looked up in the package, then in the module that defines it)."""
    import types

    for module in ("linflow", "linflow.perturb", "linflow.box", "linflow.training", "linflow.tradeoff"):
        try:
            fn = require(module, name)
        except NotAvailable:
            continue
        if callable(fn) and not isinstance(fn, types.ModuleType):  # linflow.tradeoff is also a submodule
            return fn
    raise NotAvailable(f"linflow.{name} not available yet")
