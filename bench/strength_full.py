"""The full runs' L-inf attack strength (issue 14 goal 4, 28x28 checkpoints): :func:`full_linf_strength`, run by
``python -m bench attacks`` with ``BENCH_ATTACKS_FULL=<checkpoint dir>:<data>:<ood sets>`` (see
:mod:`bench.bench_attacks`, whose ``_attack`` counts the passes)."""

from __future__ import annotations

import os

import numpy as np

from bench.bench_attacks import BEFORE, _attack, _patched

FULL_LINF_EPS = (0.008, 0.016, 0.031, 0.063, 0.125, 0.25)
FULL_OOD_EPS = (0.031, 0.063, 0.125, 0.25)


def _full_pixels(name: str, n: int, model):
    from deepcheck.data import as_pixels, load

    if name == "uniform-noise":
        return as_pixels(load(name, "test", seed=0, shape=(1, 28, 28), n=n, n_bins=256), like=model)
    return as_pixels(load(name, "test", seed=0, limit=n, size=(28, 28), resize="interpolate", channels=1), like=model)


def _cold(model, x, eps, likelihood, **kw):
    """:func:`_attack` at the default method with the L-inf raising restart from a random point
    (``core.RPROP_WARM = False``: the default before the warm restart)."""
    from deepcheck.attacks import core

    before, core.RPROP_WARM = core.RPROP_WARM, False
    try:
        return _attack(model, x, eps, "default", norm="linf", likelihood=likelihood, **kw)
    finally:
        core.RPROP_WARM = before


def full_linf_strength(checkpoints: str, data: str, ood: tuple[str, ...] = (), n: int = 8, steps: int = 40,
                       strong: tuple[int, int] = (200, 0), lower: bool = True) -> list[tuple]:
    """The full runs' L-inf attacks (28x28 GLOW / RealNVP, ``*_mle_*`` and ``*_hybrid_*`` checkpoints in
    ``checkpoints``, or that one ``.pt`` file) on ``n`` images: lowering on ``data`` at ``FULL_LINF_EPS`` and
    raising on each ``ood`` set at ``FULL_OOD_EPS``. Per eps, the worst and median fraction of the best NLL
    change found: the method before this change ("today": ``"flip"`` lowering, ``"monotone"`` raising) at the
    pipeline's ``steps`` (no restart), the new default at those settings and at the default ones (100 steps,
    1 restart), and for raising "cold": the default with the restart from a random point (before
    ``RPROP_WARM``); the reference is the best of these and of a strong run of both methods (``strong =
    (steps, restarts)``, another seed). Also the median bits/dim each reaches (the OOD curve; the pipeline also takes
    the best over the smaller balls, not done here). Rows: ``(checkpoint, set, direction, eps, method,
    settings, fwd+bwd passes, worst, median, median bpd)``."""
    import glob

    from deepcheck.checkpoint import load_checkpoint
    from deepcheck.evaluate import bpd_of

    paths = [checkpoints] if checkpoints.endswith(".pt") else sorted(
        p for p in glob.glob(os.path.join(checkpoints, "*.pt")) if "_mle_" in p or "_hybrid_" in p)
    jobs = ([(data, "decrease", FULL_LINF_EPS)] if lower else []) + [(o, "increase", FULL_OOD_EPS) for o in ood]
    out = []
    for path in paths:
        model = load_checkpoint(path).model
        for name, lk, grid in jobs:
            x = _full_pixels(name, n, model)
            clean = bpd_of(model, x)
            today = "flip" if lk == "decrease" else "monotone"
            for eps in grid:
                runs = {}
                cold = (("cold", "default", {}),) if lk == "increase" else (("before", "default", {}),)
                for m, label, kw in cold + ((today, "pipeline", dict(steps=steps, restarts=0)),
                                            ("default", "pipeline", dict(steps=steps, restarts=0)),
                                            ("default", "default", {}),
                                            (today, "strong", dict(steps=strong[0], restarts=strong[1], seed=2)),
                                            ("default", "strong", dict(steps=strong[0], restarts=strong[1], seed=2))):
                    if m == "before":  # the lowering default before the secant curvature and the large-input rule
                        runs[(m, label)] = _patched(BEFORE, _attack, model, x, eps, "default",
                                                    norm="linf", likelihood=lk, seed=1)
                        continue
                    runs[(m, label)] = _cold(model, x, eps, lk, **{"seed": 1, **kw}) if m == "cold" else _attack(
                        model, x, eps, m, norm="linf", likelihood=lk, **{"seed": 1, **kw})
                changes = [r[0] for r in runs.values()]
                best = np.max(changes, axis=0) if lk == "decrease" else np.min(changes, axis=0)
                nats_to_bpd = 1.0 / (np.log(2.0) * x[0].numel())
                for (m, label), (change, fb, _) in runs.items():
                    frac = change / best
                    bpd = float(np.median(clean + change * nats_to_bpd))
                    who = {today: "today", "cold": "cold", "before": "before"}.get(m, "new")
                    out.append((os.path.basename(path), name, lk, eps, who, label, fb,
                                float(np.min(frac)), float(np.median(frac)), bpd))
    return out
