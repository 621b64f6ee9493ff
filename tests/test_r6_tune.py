"""The pooled solver's schedule (linflow.training.pooled): when the exact F is evaluated during the ascent."""

import sys

import numpy as np
import pytest

from linflow.training import pooled
from linflow.validation import check_data

REG = 0.01


def _due_iterations(monkeypatch, doubling: bool, **opts) -> tuple[list[int], object]:
    """The iterations at which the ascent evaluates the repaired model (every evaluation of F after the first one),
    read from the solver's frame, and the run's info."""
    seen: list[int] = []
    inner = pooled._repaired_model

    def spy(dual, eps):
        seen.append(sys._getframe(1).f_locals["it"])
        return inner(dual, eps)

    monkeypatch.setattr(pooled, "_repaired_model", spy)
    monkeypatch.setattr(pooled, "_DOUBLING", doubling)
    rng = np.random.default_rng(1)  # most points near the mean (R1's hard case): 90 iterations stay unconverged
    X = 0.02 * rng.standard_normal((60, 8))
    X[:12] += 2.0 * rng.standard_normal((12, 8))
    Xc, m, S = check_data(X, REG)
    info = pooled._sample_pooled(Xc, m, S, 1.0, REG, max_iter=90, tol=0.0, polish=0, crowd=0, **opts)[1]
    return seen, info


@pytest.mark.parametrize("doubling", [False, True])
def test_default_evaluations_of_f_during_the_ascent(monkeypatch, doubling):
    """Default ``primal_every`` (10, with the repair): F at iterations 10, 20, 30, ... or, with the doubling
    schedule, at 10, 20, 40, 80 only; and at the last iteration (89) in both cases."""
    seen, info = _due_iterations(monkeypatch, doubling)
    assert info.status == "stopped" and info.iterations == 90  # the run reached max_iter: every check applies
    expected = [10, 20, 40, 80] if doubling else list(range(10, 90, 10))
    assert seen == expected + [89]


def test_explicit_primal_every_keeps_its_period(monkeypatch):
    """An explicit ``primal_every`` is a fixed period whatever the default's schedule."""
    seen, info = _due_iterations(monkeypatch, True, primal_every=10)
    assert info.status == "stopped" and info.iterations == 90
    assert seen == list(range(10, 90, 10)) + [89]
