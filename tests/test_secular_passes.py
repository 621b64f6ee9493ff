"""The blocked passes of the L2 kernel (linflow.secular_passes) and the kernel's memory reuse (R1, R2).

References are computed independently: numpy's broadcasting add for the shift table, the same kernel on small
slices of the batch (one block each) for the blocked passes, and the norm ``eps`` itself for the final rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from linflow.secular import _lower_likelihood, _raise_likelihood, lower_likelihood, raise_likelihood, secular_root
from linflow.secular_passes import _block_rows, _outer_sum, _shift_factors, _solution

_ULP = np.finfo(np.float64).eps


def _batch(n: int, d: int, cond: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues log-uniform in [1/cond, 1] (s_min repeated twice) and points with hard and near-hard rows."""
    rng = np.random.default_rng(seed)
    s = np.sort(10.0 ** rng.uniform(-np.log10(cond), 0.0, d))
    s[1] = s[0]
    W = rng.standard_normal((n, d)) * np.sqrt(s) * 10.0 ** rng.uniform(-2, 1, (n, 1))
    W[::7, :2] = 0.0  # no mass on the s_min block: hard case for small eps
    W[3::11, :2] *= 1e-9  # near-hard
    return s, W


@pytest.mark.parametrize("negate", [False, True])
def test_outer_sum_is_exactly_the_broadcast_sum(negate):
    """[g, 1] @ [1; gap] rounds once, like g + gap: equal bit for bit (signed too), over 30 decades."""
    rng = np.random.default_rng(0)
    g = np.r_[0.0, 10.0 ** rng.uniform(-15, 15, 300)]
    gaps = np.r_[0.0, 0.0, np.sort(10.0 ** rng.uniform(-15, 15, 200))]
    G, Q = _shift_factors(g, gaps)
    if negate:
        np.negative(G, out=G)
    out = np.empty((g.size, gaps.size))
    _outer_sum(G, Q, out)
    ref = np.add.outer(g, gaps)
    np.testing.assert_array_equal(out, -ref if negate else ref)


@pytest.mark.parametrize("solver", [lower_likelihood, raise_likelihood])
def test_blocks_agree_with_one_block_per_slice(solver):
    """A batch spanning several blocks (d = 64: 2048 rows each; 4500 rows) gives, row by row, what slices of 150
    rows (one block each) give; the starts differ, so the roots may differ by a few ulps."""
    s, W = _batch(4500, 64, 1e6, 1)
    assert W.shape[0] > 2 * _block_rows(W.shape[1])
    for eps in (0.01, 0.3, 5.0):
        whole = solver(s, W, eps)
        for i in range(0, W.shape[0], 150):
            part = solver(s, W[i:i + 150], eps)
            np.testing.assert_allclose(whole.C[i:i + 150], part.C, rtol=0, atol=1e-13 * eps)
            np.testing.assert_array_equal(whole.hard[i:i + 150], part.hard)


def test_overwrite_reuses_w_and_changes_nothing():
    """overwrite=True (what linflow.perturb passes for its temporary W) returns the same numbers, in W's memory;
    raising with some rows inside the ball (c = -w there) and lowering with hard rows included."""
    s, W = _batch(700, 40, 1e4, 2)
    for eps in (0.05, 1.0):
        for kernel in (_lower_likelihood, _raise_likelihood):
            ref = kernel(s, W.copy(), eps)
            Wt = W.copy()
            got = kernel(s, Wt, eps, overwrite=True)
            np.testing.assert_array_equal(got.C, ref.C)
            np.testing.assert_array_equal(got.eta, ref.eta)
            np.testing.assert_array_equal(got.hard, ref.hard)
            assert np.shares_memory(got.C, Wt)
    inside = np.linalg.norm(W, axis=1) <= 1.0
    assert inside.any() and not inside.all()  # the raising case above mixed both kinds of rows
    assert _lower_likelihood(s, W.copy(), 0.05).hard.any()


def test_final_norms_are_eps_to_a_few_ulps():
    """Every row not in the hard case (lowering) or inside the ball (raising) has ||c|| = eps to 4 ulps (the
    solution pass rescales any row further off); 8 ulps leave room for the reference norm's own rounding."""
    s, W = _batch(3000, 100, 1e8, 3)
    for eps in (1e-3, 0.2, 20.0):
        lo = lower_likelihood(s, W, eps)
        ra = raise_likelihood(s, W, eps)
        for sol in (lo, ra):
            norms = np.linalg.norm(sol.C[~sol.hard], axis=1)
            assert np.max(np.abs(norms / eps - 1.0)) <= 8 * _ULP


def test_solution_rescales_rows_off_eps_and_only_those():
    """_solution at shifts off the roots by 1e-9 (relative; norms then off eps by ~1e-9): rows with scale=True come
    out with norm eps (to a few ulps) and the direction of a / (g + gap); rows with scale=False keep the unscaled
    a / (g + gap); negate flips the sign of every row."""
    rng = np.random.default_rng(4)
    A = rng.standard_normal((600, 30))
    gaps = np.sort(rng.uniform(0.5, 3.0, 30))
    eps = 0.4
    root, _ = secular_root(A, gaps, eps, np.zeros(600), np.linalg.norm(A, axis=1) / eps)
    g = root * (1.0 + 1e-9 * rng.choice([-1.0, 1.0], 600))
    scale = rng.random(600) < 0.7
    raw = A / (g[:, None] + gaps)
    off = np.abs(np.linalg.norm(raw, axis=1) / eps - 1.0)
    assert np.all((off > 1e-11) & (off < 1e-7))
    for negate in (False, True):
        C, norms = _solution(A, gaps, g, scale, eps, negate=negate)
        sign = -1.0 if negate else 1.0
        np.testing.assert_allclose(norms, np.linalg.norm(raw, axis=1), rtol=1e-14)
        np.testing.assert_allclose(np.linalg.norm(C[scale], axis=1), eps, rtol=8 * _ULP)
        np.testing.assert_allclose(C[scale], sign * raw[scale] * (eps / norms[scale])[:, None], rtol=1e-14)
        np.testing.assert_array_equal(C[~scale], sign * raw[~scale])
