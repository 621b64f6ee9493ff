"""Per-sample generators (``sample_seeds``, the sharded evaluation of :mod:`deepcheck.distributed`): the monotone
ascent's kicks (:func:`deepcheck.attacks.core._ascend`, used after APGD at L2 and by the ``"monotone"`` and ``"flip"``
methods) draw only from the kicked samples' streams, so a sample's run is the same alone as in its batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcheck.attacks import core
from deepcheck.attacks.spec import SampleGenerators
from linflow.verification.cases import random_spd
from tests.test_attack_linf_strength import _quadratic


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_ascent_kicks_with_sample_seeds_do_not_depend_on_the_batch(norm):
    rng = np.random.default_rng(8)
    d, B, eps, patience = 6, 5, 0.3, 3
    P = torch.tensor(random_spd(d, 1e2, rng, scale=1.0))
    b = torch.tensor(rng.standard_normal((B, d)) * np.array([0.0, 1e-3, 0.1, 1.0, 3.0])[:, None])
    spec = core.NORM_SPECS[norm]

    def run(rows):
        fn, calls = _quadratic(P, b[rows])
        start = torch.zeros(len(rows), d, dtype=torch.float64)
        core._ascend(fn, start, lambda t: spec.project(t, eps), spec, eps, 60, 2 * eps, True, patience,
                     SampleGenerators([20 + r for r in rows]))
        return torch.stack(calls)

    whole = run(list(range(B)))
    kicked = False
    for i in range(B):
        alone = run([i])[:, 0]
        torch.testing.assert_close(alone, whole[:, i], rtol=0, atol=1e-14)
        kicked |= bool((alone[1:] - alone[:-1]).norm(dim=1).gt(0).any())
    assert kicked  # the samples moved (and, converged early, kicked: 60 steps, patience 3)
