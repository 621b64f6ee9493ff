"""Exact batched L1 / L-infinity raising (linflow.polytope_raise, R3): every row against independent references.

References: enumeration of all 3^d faces (exact, small d), cvxpy/Clarabel and scipy SLSQP (used only where the
solver reports success and its answer is feasible). Since our answer is feasible, ``ours <= reference`` (up to the
rounding of evaluating the objective) checks optimality against any feasible point, and ``value - gap`` (our
certified lower bound) must not exceed any feasible reference either.
"""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from linflow.polytope_raise import DEFAULT_KKT_TOL, _jit, frank_wolfe_gap, l1, raise_box, raise_l1
from linflow.polytope_raise.homotopy import _PaddedInverse
from tests.strategies import random_flow

INF = np.inf
SOLVERS = {INF: raise_box, 1.0: raise_l1}


def f_of(P, v, d):
    return float(d @ P @ v + 0.5 * d @ P @ d)


def rounding_scale(P, v, d):
    """Magnitude of the terms of f(d): the rounding error of evaluating f is ~1e-16 times this."""
    a = np.abs(d) @ np.abs(P)
    return float(a @ np.abs(v) + 0.5 * a @ np.abs(d)) + 1e-300


def in_ball(d, eps, norm, rtol=1e-12):
    return (np.abs(d).max() if norm == INF else np.abs(d).sum()) <= eps * (1 + rtol)


def faces_min(P, v, eps, norm):
    """Exact minimum over the box / L1 ball by enumerating all faces (3^d sign patterns)."""
    d = len(v)
    g = P @ v
    best = f_of(P, v, -v) if in_ball(-v, eps, norm, 0.0) else np.inf
    for t in itertools.product((-1, 0, 1), repeat=d):
        t = np.array(t, dtype=float)
        S = t != 0
        if norm == INF:  # t = +-1: at the bound, 0: free
            x = np.where(S, t * eps, 0.0)
            F = ~S
            if F.any():
                x[F] = np.linalg.solve(P[np.ix_(F, F)], -g[F] - P[np.ix_(F, S)] @ x[S])
            ok = np.all(np.abs(x) <= eps * (1 + 1e-12))
        else:  # support S with signs t, budget active
            if not S.any():
                continue
            k = int(S.sum())
            K = np.zeros((k + 1, k + 1))
            K[:k, :k] = P[np.ix_(S, S)]
            K[:k, k] = K[k, :k] = t[S]
            sol = np.linalg.solve(K, np.concatenate([-g[S], [eps]]))
            x = np.zeros(d)
            x[S] = sol[:k]
            ok = np.all(t[S] * x[S] >= 0)
        if ok:
            best = min(best, f_of(P, v, np.clip(x, -eps, eps) if norm == INF else x))
    return best


def cvxpy_ref(P, v, eps, norm):
    """Clarabel on ||L^T (v + d)||^2 / 2 (P = L L^T); None unless optimal and feasible."""
    L = np.linalg.cholesky(P)
    d = cp.Variable(len(v))
    con = [cp.norm1(d) <= eps] if norm == 1.0 else [cp.abs(d) <= eps]
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L.T @ (v + d))), con)
    try:
        prob.solve(solver="CLARABEL")
    except cp.error.SolverError:
        return None
    if prob.status != "optimal" or d.value is None or not in_ball(d.value, eps, norm, 1e-12):
        return None
    return np.asarray(d.value)


def slsqp_ref(P, v, eps, norm):
    """SLSQP on the split form (L1: d = p - q, p, q >= 0, sum <= eps) or with bounds (box); None unless it reports
    success and the answer is feasible."""
    n = len(v)
    if norm == INF:
        res = scipy.optimize.minimize(lambda z: (f_of(P, v, z), P @ (v + z)), np.zeros(n), jac=True,
                                      method="SLSQP", bounds=[(-eps, eps)] * n, options={"ftol": 1e-15,
                                                                                          "maxiter": 1000})
        d = res.x
    else:
        def obj(z):
            dd = z[:n] - z[n:]
            gr = P @ (v + dd)
            return f_of(P, v, dd), np.concatenate([gr, -gr])

        res = scipy.optimize.minimize(obj, np.zeros(2 * n), jac=True, method="SLSQP", bounds=[(0, None)] * (2 * n),
                                      constraints=[{"type": "ineq", "fun": lambda z: eps - z.sum(),
                                                    "jac": lambda z: -np.ones(2 * n)}],
                                      options={"ftol": 1e-15, "maxiter": 1000})
        d = res.x[:n] - res.x[n:]
    if not res.success or not in_ball(d, eps, norm, 1e-12):
        return None
    return d


@st.composite
def batches(draw, max_dim=8, max_log10_cond=8.0, max_rows=6):
    d = draw(st.integers(1, max_dim))
    cond = 10.0 ** draw(st.floats(0.0, max_log10_cond))
    scale = 10.0 ** draw(st.floats(-2.0, 2.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    flow = random_flow(d, cond, rng, scale)
    n = draw(st.integers(1, max_rows))
    radius = 10.0 ** draw(st.floats(-1.0, 1.0))
    V = radius * rng.standard_normal((n, d)) @ flow.A.T
    eps = float(np.median(np.abs(V).sum(axis=1))) * 10.0 ** draw(st.floats(-2.0, 0.3))
    return flow.precision, V, eps


def check_result(P, V, eps, norm, res):
    """Feasible, consistent value, certified, and the certificate recomputed independently of the solver."""
    assert res.D.shape == V.shape
    for v, d, val in zip(V, res.D, res.value):
        assert in_ball(d, eps, norm)
        assert val == pytest.approx(f_of(P, v, d), abs=1e-14 * rounding_scale(P, v, d) + 1e-300)
    assert np.all(res.certified)
    assert np.all(res.kkt <= DEFAULT_KKT_TOL)
    gap, _ = frank_wolfe_gap(P, V, res.D, eps, norm)
    np.testing.assert_array_equal(gap, res.gap)


@pytest.mark.parametrize("norm", [1.0, INF])
@given(case=batches(max_dim=5, max_log10_cond=8.0))
def test_exact_against_face_enumeration(norm, case):
    P, V, eps = case
    res = SOLVERS[norm](P, V, eps)
    check_result(P, V, eps, norm, res)
    for v, d, val, gap in zip(V, res.D, res.value, res.gap):
        ref = faces_min(P, v, eps, norm)
        tol = 1e-12 * rounding_scale(P, v, d) + 1e-12 * rounding_scale(P, v, -v)
        assert val <= ref + tol  # the optimum (enumeration is exact) ...
        assert val >= ref - tol  # ... not below it: the enumerated minimum is the minimum
        assert val - gap <= ref + tol  # the certified lower bound is below the optimum


@pytest.mark.parametrize("norm", [1.0, INF])
@settings(max_examples=20)
@given(case=batches(max_dim=10, max_log10_cond=8.0, max_rows=3))
def test_never_worse_than_feasible_cvxpy_and_slsqp(norm, case):
    P, V, eps = case
    res = SOLVERS[norm](P, V, eps)
    check_result(P, V, eps, norm, res)
    for v, d, val, gap in zip(V, res.D, res.value, res.gap):
        for ref in (cvxpy_ref(P, v, eps, norm), slsqp_ref(P, v, eps, norm)):
            if ref is None:  # no feasible, successful reference: nothing to compare with
                continue
            theirs = f_of(P, v, ref)
            tol = 1e-12 * (rounding_scale(P, v, d) + rounding_scale(P, v, ref))
            assert val <= theirs + tol
            assert val - gap <= theirs + tol


@pytest.mark.parametrize("norm", [1.0, INF])
@settings(max_examples=20)
@given(case=batches(max_dim=5, max_log10_cond=8.0))
def test_finite_fallback_alone_is_exact(norm, case):
    """With the fast stages switched off, the finite primal active-set method alone reaches the optimum."""
    P, V, eps = case
    if norm == INF:
        res = raise_box(P, V, eps, pdas_iter=0, pn_iter=0, path_steps=0)
    else:
        res = raise_l1(P, V, eps, max_iter=0, path_steps=0)
    check_result(P, V, eps, norm, res)
    for v, val in zip(V, res.value):
        ref = faces_min(P, v, eps, norm)
        assert val == pytest.approx(ref, abs=1e-11 * rounding_scale(P, v, -v) + 1e-300)


def path_only(norm, P, V, eps):
    """The solver with the active-set start and the fallbacks switched off: the homotopy path, checked by one
    active-set step."""
    if norm == INF:
        return raise_box(P, V, eps, pdas_iter=0, pn_iter=0, max_iter=0)
    return raise_l1(P, V, eps, max_iter=0)


@pytest.mark.parametrize("norm", [1.0, INF])
@settings(max_examples=30)
@given(case=batches(max_dim=5, max_log10_cond=8.0))
def test_homotopy_path_alone_is_exact(norm, case):
    """With the active-set start and the fallbacks switched off, the homotopy path (checked by one active-set
    step) alone reaches the optimum found by enumerating every face."""
    P, V, eps = case
    res = path_only(norm, P, V, eps)
    check_result(P, V, eps, norm, res)
    for v, val in zip(V, res.value):
        ref = faces_min(P, v, eps, norm)
        assert val == pytest.approx(ref, abs=1e-11 * rounding_scale(P, v, -v) + 1e-300)


@pytest.mark.parametrize("norm", [1.0, INF])
@settings(max_examples=15)
@given(case=batches(max_dim=12, max_log10_cond=8.0, max_rows=3))
def test_homotopy_path_alone_never_worse_than_feasible_references(norm, case):
    """The path alone (other stages off) at d up to 12, condition numbers up to 1e8: certified, and no feasible,
    successful Clarabel or SLSQP answer is better."""
    P, V, eps = case
    res = path_only(norm, P, V, eps)
    check_result(P, V, eps, norm, res)
    for v, d, val, gap in zip(V, res.D, res.value, res.gap):
        for ref in (cvxpy_ref(P, v, eps, norm), slsqp_ref(P, v, eps, norm)):
            if ref is None:
                continue
            tol = 1e-12 * (rounding_scale(P, v, d) + rounding_scale(P, v, ref))
            assert val <= f_of(P, v, ref) + tol
            assert val - gap <= f_of(P, v, ref) + tol


@settings(max_examples=30)
@given(d=st.integers(1, 9), seed=st.integers(0, 2**32 - 1), log_cond=st.floats(0.0, 6.0))
def test_padded_inverse_tracks_the_inverse_of_the_principal_submatrix(d, seed, log_cond):
    """Rank-one bordering and downdating keep K = M_CC^{-1} on random join / leave sequences (two rows), to a
    forward error of order (unit rounding) cond(M)^2: the updates are not backward stable, which is why the
    solvers only take the path's face and solve it afresh."""
    rng = np.random.default_rng(seed)
    M = random_flow(d, 10.0**log_cond, rng).precision
    cond_scale = np.linalg.cond(M)
    inv = _PaddedInverse(M, 2, d)
    members = [set(), set()]
    for _ in range(3 * d):
        add, coord, slot = np.zeros(2, dtype=bool), np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64)
        for r in range(2):
            out = [i for i in range(d) if i not in members[r]]
            add[r] = bool(out) and (not members[r] or rng.random() < 0.6)
            coord[r] = rng.choice(out) if add[r] else rng.choice(sorted(members[r]))
            slot[r] = 0 if add[r] else int(np.flatnonzero(inv.idx[r] == coord[r])[0])
        ok = inv.update(add, coord, slot)
        for r in range(2):
            if ok[r]:
                (members[r].add if add[r] else members[r].discard)(int(coord[r]))
            valid = inv.idx[r] >= 0
            C = inv.idx[r][valid]
            assert set(C.tolist()) == members[r]
            if C.size:
                err = np.abs(inv.K[r][np.ix_(valid, valid)] @ M[np.ix_(C, C)] - np.eye(C.size)).max()
                assert err <= 1e-14 * cond_scale**2 * d + 1e-12
                assert np.all(inv.K[r][~valid] == 0.0) and np.all(inv.K[r][:, ~valid] == 0.0)


@pytest.mark.parametrize("norm", [1.0, INF])
@settings(max_examples=20)
@given(p=st.floats(1e-4, 1e4), v=st.floats(-1e3, 1e3), eps=st.floats(0.0, 1e3))
def test_one_dimension_closed_form(norm, p, v, eps):
    """d = 1: both balls are [-eps, eps] and the minimiser of p (v + delta)^2 / 2 is clip(-v, -eps, eps)."""
    res = SOLVERS[norm](np.array([[p]]), np.array([[v]]), eps)
    assert res.D[0, 0] == pytest.approx(float(np.clip(-v, -eps, eps)), rel=1e-13, abs=1e-300)
    assert res.certified[0]


@pytest.mark.parametrize("norm", [1.0, INF])
def test_zero_budget_and_budget_beyond_the_minimiser(norm):
    """eps = 0: delta = 0 (certified, gap 0). eps at or beyond ||v||: delta = -v exactly, no iterations."""
    rng = np.random.default_rng(7)
    flow = random_flow(6, 1e6, rng)
    P = flow.precision
    V = rng.standard_normal((5, 6)) @ flow.A.T
    res = SOLVERS[norm](P, V, 0.0)
    np.testing.assert_array_equal(res.D, 0.0)
    assert np.all(res.certified) and np.all(res.gap == 0.0) and np.all(res.value == 0.0)
    size = np.abs(V).max(axis=1) if norm == INF else np.abs(V).sum(axis=1)
    for eps in (float(size.max()), 2.0 * float(size.max())):
        res = SOLVERS[norm](P, V, eps)
        np.testing.assert_array_equal(res.D, -V)
        assert np.all(res.iterations == 0) and np.all(res.certified)


@pytest.mark.parametrize("norm", [1.0, INF])
def test_interior_rows_and_a_hard_batch(norm):
    """Rows inside the ball get -v (iterations 0); a cond-1e8 batch where the primal-dual active set cycles on
    some rows (it needs the later stages) is still certified row by row."""
    rng = np.random.default_rng(3)
    flow = random_flow(20, 1e8, rng)
    P = flow.precision
    V = rng.standard_normal((60, 20)) @ flow.A.T
    size = np.abs(V).max(axis=1) if norm == INF else np.abs(V).sum(axis=1)
    eps = 0.1 * float(np.median(size))
    V[0] *= 0.5 * eps / size[0]  # inside the ball
    res = SOLVERS[norm](P, V, eps)
    check_result(P, V, eps, norm, res)
    np.testing.assert_array_equal(res.D[0], -V[0])
    assert res.iterations[0] == 0 and res.iterations.max() > 12  # some rows went past the first stage
    i = int(np.argmax(res.iterations))
    for ref in (cvxpy_ref(P, V[i], eps, norm), slsqp_ref(P, V[i], eps, norm)):  # Clarabel often fails here
        if ref is not None:
            assert res.value[i] <= f_of(P, V[i], ref) + 1e-12 * rounding_scale(P, V[i], ref)


def _ill_conditioned_batch(d: int, n: int, cond: float, seed: int):
    """``P`` with eigenvalues spread log-uniformly over ``[1, cond]`` (both ends attained), ``n`` rows ``v`` with
    covariance ``P^{-1}``, eps = 0.1 x the median ``||v||_1``."""
    rng = np.random.default_rng(seed)
    U = scipy.stats.ortho_group.rvs(d, random_state=rng)
    s = np.exp(rng.uniform(-np.log(cond), 0.0, d))
    s[0], s[-1] = 1.0 / cond, 1.0
    P = (U / s) @ U.T
    P = 0.5 * (P + P.T)
    V = rng.standard_normal((n, d)) * np.sqrt(s) @ U.T
    return P, V, 0.1 * float(np.median(np.abs(V).sum(axis=1)))


def _cycling_batch():
    """d = 40, cond 1e8: the undamped primal-dual active set settles ~10 % of these rows in 50 iterations (it
    overshoots, then cycles)."""
    return _ill_conditioned_batch(40, 40, 1e8, 0)


def _assert_active_set_alone_settles(P, V, eps):
    """The damped active set settles every row within 50 iterations, and its iterate is the certified optimum that
    ``raise_l1`` without the homotopy path returns."""
    Sig = np.linalg.inv(P)
    Sig = 0.5 * (Sig + Sig.T)
    X, done, it, *_ = l1._l1_pdas(P, Sig, V, V @ P, V != 0, -np.sign(V), eps, 50)
    assert np.all(done) and it.max() < 50
    res = raise_l1(P, V, eps, path_steps=0)  # no path: every row must come from the active set (or the finite step)
    check_result(P, V, eps, 1.0, res)
    for v, x, d, val in zip(V, X, res.D, res.value):  # the active-set iterate is that optimum
        assert f_of(P, v, x) == pytest.approx(val, abs=1e-12 * (rounding_scale(P, v, x) + rounding_scale(P, v, d)))


PATHS = [False, pytest.param(True, marks=pytest.mark.skipif(not _jit.AVAILABLE, reason="numba not installed"))]


@pytest.mark.parametrize("jit", PATHS)
def test_damped_active_set_alone_settles_a_cycling_batch(jit, monkeypatch):
    """The damping (rows whose budget multiplier went negative exchange only part of their violators) makes the
    primal-dual active set alone settle every row of a batch where the plain exchange cycles; the result is the
    certified optimum."""
    monkeypatch.setattr(l1, "_USE_JIT", jit)
    _assert_active_set_alone_settles(*_cycling_batch())


@pytest.mark.parametrize("jit", PATHS)
def test_each_row_runs_to_settling_at_condition_1e5(jit, monkeypatch):
    """d = 100, cond 1e5, eps = 0.1 x the median ||v||_1: every row settles in the damped active set (at most 27
    iterations here). The batched path used to stop the whole batch after 5 iterations, when the set changes of its
    undamped rows stopped falling, and send every row to the homotopy (then 5x slower than this)."""
    monkeypatch.setattr(l1, "_USE_JIT", jit)
    _assert_active_set_alone_settles(*_ill_conditioned_batch(100, 200, 1e5, 1))


@pytest.mark.skipif(not _jit.AVAILABLE, reason="numba not installed")
@settings(max_examples=30)
@given(case=batches(max_dim=10, max_log10_cond=8.0))
def test_compiled_and_numpy_paths_agree(case):
    """The compiled per-row iteration (numba) and the batched numpy one give the same certified optimum."""
    P, V, eps = case
    try:
        l1._USE_JIT = True
        a = raise_l1(P, V, eps)
        l1._USE_JIT = False
        b = raise_l1(P, V, eps)
    finally:
        l1._USE_JIT = True
    check_result(P, V, eps, 1.0, a)
    check_result(P, V, eps, 1.0, b)
    for v, da, db, va, vb in zip(V, a.D, b.D, a.value, b.value):
        assert va == pytest.approx(vb, abs=1e-12 * (rounding_scale(P, v, da) + rounding_scale(P, v, db)))


def test_bad_input():
    P = np.eye(3)
    with pytest.raises(ValueError, match="P must be a square"):
        raise_box(np.ones((2, 3)), np.ones((1, 3)), 1.0)
    with pytest.raises(ValueError, match="V must have shape"):
        raise_l1(P, np.ones((1, 2)), 1.0)
    with pytest.raises(ValueError, match="eps must be a non-negative"):
        raise_l1(P, np.ones((1, 3)), -1.0)
    with pytest.raises(ValueError, match="eps must be a non-negative"):
        raise_box(P, np.ones((1, 3)), float("nan"))
    with pytest.raises(ValueError, match="start must be"):
        raise_l1(P, np.ones((1, 3)), 1.0, start="middle")
