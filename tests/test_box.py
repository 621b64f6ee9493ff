"""linflow.box (R3): L1 / L-infinity attacks against independent brute force, a second solver and
checked KKT conditions; certified intervals; universal versions through the public API; bad input.

Reference values are never taken from linflow.box itself: they come from enumerating vertices with
itertools, enumerating all faces of the feasible set (the exact minimiser of a strictly convex QP is the
minimiser over the affine hull of the face whose relative interior contains it), scipy.optimize, and
``flow.nll`` differences.
"""

import itertools

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import linflow
from linflow import box
from linflow.box import certified_perturbation, perturbation_bounds, solve_box

from .strategies import flow_point_eps, random_flow

INF = np.inf
FEW = max(10, settings.default.max_examples // 2)  # for the slower properties: 20 under the ci/dev profiles


# ------------------------------------------------------------------------------------------ independent references
def dnll(P, v, d):
    """The definition: d^T P v + d^T P d / 2 (plain loops-free numpy, one point)."""
    return float(d @ P @ v + 0.5 * d @ P @ d)


def scale_of(P, v, eps):
    """Size of the terms in dNLL for a perturbation of size eps: tolerances are relative to it."""
    a = np.abs(P).sum(axis=1)
    return float(eps * a @ np.abs(v) + eps**2 * a.sum()) + 1e-300


def brute_linf_max(P, v, eps):
    return max(dnll(P, v, eps * np.array(s)) for s in itertools.product((-1.0, 1.0), repeat=len(v)))


def brute_l1_max(P, v, eps):
    d = len(v)
    return max(dnll(P, v, s * eps * np.eye(d)[j]) for j in range(d) for s in (-1.0, 1.0))


def faces_min(P, v, eps, norm):
    """Exact min of dNLL over the box / L1 ball by enumerating every face (3^d patterns), d <= 6."""
    d = len(v)
    g = P @ v
    best = np.inf
    if (np.abs(v).max() if norm == INF else np.abs(v).sum()) <= eps:
        best = dnll(P, v, -v)
    for t in itertools.product((-1, 0, 1), repeat=d):
        t = np.array(t, dtype=float)
        S = t != 0
        if norm == INF:
            x = np.where(S, t * eps, 0.0)
            F = ~S
            if F.any():
                x[F] = np.linalg.solve(P[np.ix_(F, F)], -g[F] - P[np.ix_(F, S)] @ x[S])
            if np.all(np.abs(x) <= eps * (1 + 1e-9)):
                best = min(best, dnll(P, v, x))
        else:
            if not S.any():
                continue
            k = int(S.sum())
            K = np.zeros((k + 1, k + 1))
            K[:k, :k] = P[np.ix_(S, S)]
            K[:k, k] = K[k, :k] = t[S]
            sol = np.linalg.solve(K, np.concatenate([-g[S], [eps]]))
            x = np.zeros(d)
            x[S] = sol[:k]
            if np.all(t[S] * x[S] >= -1e-12 * eps):
                best = min(best, dnll(P, v, x))
    return best


def assert_kkt_min(P, v, d, eps, norm, rtol=1e-8):
    """First-order optimality of d for min dNLL over the ball (sufficient: the problem is convex)."""
    G = P @ (v + d)
    tol = rtol * (np.abs(P) @ (np.abs(v) + np.abs(d)))
    if norm == INF:
        assert np.all(np.abs(d) <= eps * (1 + 1e-12))
        free = np.abs(d) < eps * (1 - 1e-9)
        assert np.all(np.abs(G[free]) <= tol[free])
        assert np.all(G[d >= eps * (1 - 1e-9)] <= tol[d >= eps * (1 - 1e-9)])
        assert np.all(G[d <= -eps * (1 - 1e-9)] >= -tol[d <= -eps * (1 - 1e-9)])
    else:
        assert np.abs(d).sum() <= eps * (1 + 1e-12)
        if np.abs(v).sum() <= eps:
            np.testing.assert_allclose(d, -v, atol=1e-12 * eps)
            return
        lam = np.max(np.abs(G))
        supp = np.abs(d) > 1e-9 * eps
        assert np.abs(d).sum() == pytest.approx(eps, rel=1e-9)
        np.testing.assert_allclose(G[supp], -lam * np.sign(d[supp]), atol=float(np.max(tol)))


# ------------------------------------------------------------------------------------------ L1, lowering
@given(flow_point_eps(max_dim=12, max_log10_cond=6.0))
def test_l1_lowering_is_best_vertex(case):
    flow, x, eps = case
    v = x - flow.mean
    P = flow.precision
    delta = solve_box(flow, v[None], eps, norm=1, likelihood="decrease")[0]
    ref = brute_l1_max(P, v, eps)
    assert np.abs(delta).sum() == pytest.approx(eps, rel=1e-12)
    assert np.count_nonzero(delta) == 1
    assert dnll(P, v, delta) == pytest.approx(ref, rel=1e-10, abs=1e-12 * scale_of(P, v, eps))
    lo, up = perturbation_bounds(flow, x, eps, norm=1)
    assert lo == up == pytest.approx(ref, rel=1e-10, abs=1e-12 * scale_of(P, v, eps))


def test_l1_lowering_beats_random_points_of_the_ball():
    """The vertex argument itself: no point of the ball (random, on faces) does better than the formula."""
    rng = np.random.default_rng(3)
    flow = random_flow(6, 100.0, rng)
    x = flow.sample(1, rng)[0]
    v, P = x - flow.mean, flow.precision
    best = linflow.optimal_nll_change(flow, x, 0.7, norm=1)
    Z = rng.laplace(size=(5000, 6))
    Z *= 0.7 / np.abs(Z).sum(axis=1, keepdims=True) * rng.uniform(0, 1, (5000, 1)) ** 0.1
    vals = Z @ P @ v + 0.5 * np.einsum("ij,jk,ik->i", Z, P, Z)
    assert vals.max() <= best * (1 + 1e-12)


# ------------------------------------------------------------------------------------------ L∞, lowering, exact
@given(flow_point_eps(max_dim=8, max_log10_cond=6.0))
def test_linf_enumeration_matches_itertools(case):
    flow, x, eps = case
    v = x - flow.mean
    P = flow.precision
    delta = solve_box(flow, v[None], eps, norm=INF, likelihood="decrease")[0]
    np.testing.assert_allclose(np.abs(delta), eps, rtol=1e-15)
    ref = brute_linf_max(P, v, eps)
    assert dnll(P, v, delta) == pytest.approx(ref, rel=1e-10, abs=1e-12 * scale_of(P, v, eps))
    cert = certified_perturbation(flow, x, eps, norm="linf")
    assert cert.exact and cert.method == "enumeration"
    assert cert.lower == cert.upper == cert.achieved
    assert cert.lower <= ref * (1 + 1e-10) + 1e-12 * scale_of(P, v, eps)
    assert cert.upper >= ref * (1 - 1e-10) - 1e-12 * scale_of(P, v, eps)


@pytest.mark.parametrize("d", [12, 14])
def test_linf_enumeration_blocked_and_chunked(d, monkeypatch):
    """d > 11 splits the vertices into two blocks; a tiny block budget forces many chunks: same answers."""
    rng = np.random.default_rng(d)
    flow = random_flow(d, 1e3, rng)
    X = np.vstack([flow.sample(3, rng), flow.mean])  # the mean itself: g = 0
    P, V = flow.precision, X - flow.mean
    eps = 0.4
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=d)))
    ref = [np.max(eps * signs @ P @ v + 0.5 * eps**2 * np.einsum("ij,jk,ik->i", signs, P, signs)) for v in V]
    D = solve_box(flow, V, eps, norm=INF, likelihood="decrease")
    monkeypatch.setattr(box, "_BLOCK_ELEMENTS", 64)  # many chunks of vertices, one point per group
    D_small = solve_box(flow, V, eps, norm=INF, likelihood="decrease")
    for i, v in enumerate(V):
        assert dnll(P, v, D[i]) == pytest.approx(ref[i], rel=1e-11)
        assert dnll(P, v, D_small[i]) == pytest.approx(ref[i], rel=1e-11)


def test_linf_at_the_mean_is_a_quadratic_form_maximum():
    """v = 0: max_u eps^2 u^T P u / 2; for diagonal P every vertex is optimal with value eps^2 tr(P) / 2."""
    flow = linflow.LinearFlow.from_gaussian(np.zeros(5), np.diag([4.0, 1.0, 0.25, 2.0, 0.5]))
    lo, up = perturbation_bounds(flow, np.zeros(5), 0.5, norm=INF)
    assert lo == up == pytest.approx(0.125 * (0.25 + 1 + 4 + 0.5 + 2), rel=1e-14)


# ------------------------------------------------------------------------------------------ L∞, lowering, certified
@settings(max_examples=FEW)
@given(flow_point_eps(min_dim=2, max_dim=12, max_log10_cond=6.0, min_log10_eps=-3.0, max_log10_eps=2.0),
       st.integers(0, 2**16), st.sampled_from(["CLARABEL", "MIXING", "SCS"]))
def test_linf_heuristic_is_bracketed_by_exact_optimum(case, seed, solver):
    flow, x, eps = case
    v = x - flow.mean
    P = flow.precision
    heur = certified_perturbation(flow, x, eps, norm=INF, exact=False, seed=seed, sdp_solver=solver)
    opt = brute_linf_max(P, v, eps)  # the reference: all 2^d vertices by itertools, not linflow.box
    tol = 1e-10 * scale_of(P, v, eps)
    assert not heur.exact and heur.method == "sdp-rounding"
    np.testing.assert_allclose(np.abs(heur.delta), eps, rtol=1e-15)
    assert heur.lower == pytest.approx(dnll(P, v, heur.delta), rel=1e-12, abs=tol)
    assert heur.lower <= opt + tol
    assert heur.upper >= opt - tol
    # Nesterov: for the PSD homogenised form (add c = v^T P v / 2) the SDP is within pi/2 (solver slack 1e-6)
    c = 0.5 * v @ P @ v
    assert heur.upper + c <= np.pi / 2 * (opt + c) * (1 + 1e-6) + tol


def test_sdp_solvers_agree_on_the_relaxation():
    """Clarabel (interior point), SCS (first order) and the mixing method (low rank) reach the same SDP value:
    each reported bound is rigorous, so each is >= the true SDP value; the tight ones agree closely."""
    rng = np.random.default_rng(9)
    for d in (3, 10, 30):
        flow = random_flow(d, 1e3, rng)
        x = flow.sample(1, rng)[0]
        ups = {s: perturbation_bounds(flow, x, 0.3, norm=INF, exact=False, sdp_solver=s)[1]
               for s in ("CLARABEL", "MIXING", "SCS")}
        assert ups["MIXING"] == pytest.approx(ups["CLARABEL"], rel=1e-7)
        assert ups["SCS"] == pytest.approx(ups["CLARABEL"], rel=1e-3)


def test_linf_heuristic_on_small_problems_finds_the_optimum_usually():
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(10):
        flow = random_flow(10, 1e2, rng)
        x = flow.sample(1, rng)[0]
        opt = linflow.optimal_nll_change(flow, x, 0.5, norm=INF)
        hits += certified_perturbation(flow, x, 0.5, norm=INF, exact=False).lower >= opt * (1 - 1e-12)
    assert hits >= 8


def test_linf_heuristic_is_deterministic_given_seed_and_batch_independent():
    rng = np.random.default_rng(11)
    flow = random_flow(9, 1e3, rng)
    X = flow.sample(3, rng)
    a = solve_box(flow, X - flow.mean, 0.3, norm=INF, likelihood="decrease", exact=False, seed=5, restarts=4)
    b = solve_box(flow, X - flow.mean, 0.3, norm=INF, likelihood="decrease", exact=False, seed=5, restarts=4)
    c = solve_box(flow, X[:1] - flow.mean, 0.3, norm=INF, likelihood="decrease", exact=False, seed=5, restarts=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:1], c)


def test_linf_large_dimension_gives_a_valid_interval():
    """Beyond max_exact_dim (default 20): the interval is finite, ordered and within pi/2 on the PSD form."""
    rng = np.random.default_rng(5)
    flow = random_flow(30, 1e3, rng)
    x = flow.sample(1, rng)[0]
    cert = certified_perturbation(flow, x, 0.2, norm=INF)
    assert cert.method == "sdp-rounding" and not cert.exact
    v = x - flow.mean
    c = 0.5 * v @ flow.precision @ v
    assert 0 < cert.lower <= cert.upper <= np.pi / 2 * (cert.lower + c)
    # the rounded vertex is a local maximum: no single flip improves it
    P, u = flow.precision, cert.delta / 0.2
    base = dnll(P, v, cert.delta)
    for k in range(30):
        w = u.copy()
        w[k] = -w[k]
        assert dnll(P, v, 0.2 * w) <= base + 1e-12 * abs(base)


# ------------------------------------------------------------------------------------------ raising (convex QPs)
@pytest.mark.parametrize("norm", [1, INF])
@given(case=flow_point_eps(max_dim=6, max_log10_cond=6.0, min_log10_eps=-3.0, max_log10_eps=1.5))
def test_raising_matches_face_enumeration(norm, case):
    flow, x, eps = case
    v = x - flow.mean
    P = flow.precision
    cert = certified_perturbation(flow, x, eps, norm=norm, likelihood="increase")
    ref = faces_min(P, v, eps, norm)
    tol = 1e-9 * scale_of(P, v, eps)
    assert cert.exact
    assert cert.achieved == cert.upper == pytest.approx(dnll(P, v, cert.delta), rel=1e-12, abs=tol)
    assert cert.upper == pytest.approx(ref, rel=1e-9, abs=tol)
    assert cert.lower <= ref + tol and cert.upper >= ref - tol
    assert cert.upper - cert.lower <= 1e-9 * abs(ref) + tol
    assert_kkt_min(P, v, cert.delta, eps, float(norm))


@settings(max_examples=FEW)
@given(flow_point_eps(min_dim=2, max_dim=12, max_log10_cond=6.0, min_log10_eps=-2.0, max_log10_eps=1.0))
def test_linf_raising_vs_scipy_bvls(case):
    """Second solver: bounded-variable least squares on ||W (v + d)||^2 = 2 dNLL + v^T P v, W^T W = P."""
    flow, x, eps = case
    v = x - flow.mean
    P = flow.precision
    delta = solve_box(flow, v[None], eps, norm=INF, likelihood="increase")[0]
    W = flow.eigvecs.T / np.sqrt(flow.eigvals)[:, None]
    res = scipy.optimize.lsq_linear(W, -W @ v, bounds=(-eps, eps), method="bvls", tol=1e-14, max_iter=10000)
    ours, theirs = dnll(P, v, delta), dnll(P, v, np.clip(res.x, -eps, eps))
    tol = 1e-9 * scale_of(P, v, eps)
    assert ours <= theirs + tol  # never worse than a second solver
    assert ours == pytest.approx(theirs, rel=1e-8, abs=tol)
    assert_kkt_min(P, v, delta, eps, INF)


@settings(max_examples=FEW)
@given(flow_point_eps(min_dim=2, max_dim=12, max_log10_cond=4.0, min_log10_eps=-2.0, max_log10_eps=1.0))
def test_l1_raising_vs_scipy_slsqp(case):
    """SLSQP as a second solver, checked before it is trusted: its point can leave the L1 ball (by 4e-9 to 1e-6,
    relative, on the cases of test_l1_raising_regressions_from_the_explore_profile), which buys it a lower
    objective than the true optimum. Such a point is scaled back into the ball and re-evaluated there; only then
    is ``ours <= reference`` a valid claim (ours is optimal, the reference merely feasible)."""
    flow, x, eps = case
    v = x - flow.mean
    P = flow.precision
    d = len(v)
    delta = solve_box(flow, v[None], eps, norm=1, likelihood="increase")[0]

    def obj(z):  # delta = p - q with p, q >= 0, sum(p + q) <= eps
        dd = z[:d] - z[d:]
        gr = P @ (v + dd)
        return dnll(P, v, dd), np.concatenate([gr, -gr])

    res = scipy.optimize.minimize(obj, np.zeros(2 * d), jac=True, method="SLSQP", bounds=[(0, None)] * (2 * d),
                                  constraints=[{"type": "ineq", "fun": lambda z: eps - z.sum(),
                                                "jac": lambda z: -np.ones(2 * d)}],
                                  options={"ftol": 1e-15, "maxiter": 1000})
    ref_point = res.x[:d] - res.x[d:]
    excess = np.abs(ref_point).sum() / eps - 1.0
    if excess > 0:
        ref_point = ref_point / (1.0 + excess)  # now feasible: ||ref_point||_1 <= eps
    assert np.abs(ref_point).sum() <= eps * (1 + 1e-15)
    ref = dnll(P, v, ref_point)
    ours = dnll(P, v, delta)
    tol = 1e-9 * scale_of(P, v, eps)
    assert np.abs(delta).sum() <= eps * (1 + 1e-12)
    assert ours <= ref + tol  # the optimum is never above a feasible point
    if res.success:
        assert ours == pytest.approx(ref, rel=1e-5, abs=1e-6 * scale_of(P, v, eps))
    assert_kkt_min(P, v, delta, eps, 1.0)


def clarabel_l1_raise(P, v, eps):
    """``argmin dNLL`` over the L1 ball by cvxpy + Clarabel at tolerance 1e-13, split ``delta = eps (p - q)``,
    ``p, q >= 0``, ``sum(p + q) <= 1``, written with the Cholesky factor of P (linflow.box uses the eigen-factor
    and one variable). The status is checked before the point is used."""
    import cvxpy as cp

    d = len(v)
    L = np.linalg.cholesky(P)
    k = float(eps * np.linalg.norm(P @ v) + eps**2 * np.linalg.norm(P, 2))
    p, q = cp.Variable(d, nonneg=True), cp.Variable(d, nonneg=True)
    u = p - q
    prob = cp.Problem(cp.Minimize((eps * (P @ v) @ u + 0.5 * eps**2 * cp.sum_squares(L.T @ u)) / k),
                      [cp.sum(p + q) <= 1])
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-13, tol_gap_rel=1e-13, tol_feas=1e-13, max_iter=500)
    assert prob.status == "optimal", prob.status
    return eps * (p.value - q.value)


@pytest.mark.parametrize("eps", [1.0, 0.01])
@pytest.mark.parametrize("seed", [1, 4, 15])
def test_l1_raising_regressions_from_the_explore_profile(seed, eps):
    """The cases on which the old SLSQP comparison failed under random hypothesis search (issue 10): d = 9,
    cond 10^1.5, scale 1e-2, a point at Mahalanobis radius exactly 10, eps 1 or 0.01. With eps = 0.01 SLSQP's
    raw point leaves the ball (seeds 1, 4, 15: by 1e-7, 1e-6, 1.5e-6, relative) and undercuts the optimum;
    against a tight Clarabel solve (status checked, point checked feasible) the solver agrees to ~1e-13."""
    from linflow.verification.cases import point_at_radius

    rng = np.random.default_rng(seed)
    flow = random_flow(9, 10**1.5, rng, 1e-2)
    x = point_at_radius(flow, 10.0, rng)
    P, v = flow.precision, x - flow.mean
    assert (v @ P @ v) == pytest.approx(100.0, rel=1e-12)
    ref_point = clarabel_l1_raise(P, v, eps)
    assert np.abs(ref_point).sum() <= eps * (1 + 1e-10)
    ref_point = ref_point / max(1.0, np.abs(ref_point).sum() / eps)  # exactly feasible before it is trusted
    ref = dnll(P, v, ref_point)
    delta = solve_box(flow, v[None], eps, norm=1, likelihood="increase")[0]
    ours = dnll(P, v, delta)
    assert np.abs(delta).sum() <= eps * (1 + 1e-12)
    assert ours <= ref + 1e-12 * abs(ref)
    assert ours == pytest.approx(ref, rel=1e-10)
    assert_kkt_min(P, v, delta, eps, 1.0)


def test_l1_raising_identity_precision_regression():
    """Found by the long profile (issue 10): cvxpy's default-tolerance point had a spurious 6e-4*eps coordinate
    that every polish threshold kept in the support, so the unpolished point (1.4e-7 relative above the optimum)
    came back with cert.exact True. The batched exact active set (linflow.polytope_raise) answers it now.

    P = I: ``min g^T delta + ||delta||^2 / 2`` over the L1 ball has a closed form. When the largest ``|g_j|``
    beats the second by at least eps, the optimum is the vertex ``-eps sign(g_j) e_j`` with value
    ``-eps |g_j| + eps^2 / 2`` (soft-thresholding leaves one coordinate). Here ``|g_4| - |g_3| = 0.0076 > 0.0075``."""
    flow = linflow.LinearFlow.from_gaussian(np.zeros(4), np.eye(4))
    v = np.array([0.07632066, 0.00257552, -0.56975261, 0.57733933])
    eps = 0.0075
    ref = -eps * v[3] + 0.5 * eps**2
    cert = certified_perturbation(flow, v, eps, norm=1, likelihood="increase")
    assert cert.lower <= ref * (1 - 1e-12)  # the interval itself is valid (ref < 0) ...
    assert cert.exact
    assert cert.upper == pytest.approx(ref, rel=1e-10)  # ... but the achieved value is not the optimum


def test_raising_inside_the_ball_returns_minus_v():
    flow = random_flow(4, 10.0, np.random.default_rng(0))
    v = np.array([0.1, -0.2, 0.05, 0.0])
    for norm in (1, INF):
        cert = certified_perturbation(flow, flow.mean + v, 0.5, norm=norm, likelihood="increase")
        np.testing.assert_allclose(cert.delta, -v, rtol=1e-14, atol=1e-15)  # -v up to (mu + v) - mu rounding
        assert cert.lower == cert.upper == pytest.approx(-0.5 * v @ flow.precision @ v, rel=1e-12)


# ----------------------------------------------------------------------------------------- norms, public API, universal
@settings(max_examples=FEW)
@given(flow_point_eps(max_dim=8, max_log10_cond=5.0, min_log10_eps=-2.0, max_log10_eps=1.0))
def test_nested_balls_order_the_optima(case):
    """L1 ball within the L2 ball within the box: lowering optima increase, raising optima decrease."""
    flow, x, eps = case
    scale = 1e-10 * scale_of(flow.precision, x - flow.mean, eps)
    low = [perturbation_bounds(flow, x, eps, norm=p) for p in (1, 2, INF)]
    high = [perturbation_bounds(flow, x, eps, norm=p, likelihood="increase") for p in (1, 2, INF)]
    assert low[0][1] <= low[1][0] + scale and low[1][1] <= low[2][0] + scale
    assert high[0][0] >= high[1][1] - scale and high[1][0] >= high[2][1] - scale
    assert low[1][0] == low[1][1] == pytest.approx(linflow.optimal_nll_change(flow, x, eps), rel=1e-14)


def test_public_api_dispatches_here_and_batches():
    rng = np.random.default_rng(2)
    flow = random_flow(5, 50.0, rng)
    X = flow.sample(4, rng)
    for norm in (1, INF):
        for lk in ("decrease", "increase"):
            D = linflow.optimal_perturbation(flow, X, 0.3, norm=norm, likelihood=lk)
            np.testing.assert_allclose(D, solve_box(flow, X - flow.mean, 0.3, norm=norm, likelihood=lk))
            vals = linflow.optimal_nll_change(flow, X, 0.3, norm=norm, likelihood=lk)
            lo, up = perturbation_bounds(flow, X, 0.3, norm=norm, likelihood=lk)
            assert lo.shape == up.shape == (4,)
            np.testing.assert_allclose(vals, up if lk == "increase" else lo, rtol=1e-12, atol=1e-14)
            single = perturbation_bounds(flow, X[0], 0.3, norm=norm, likelihood=lk)
            assert all(isinstance(b, float) for b in single)
            assert single[0] == pytest.approx(lo[0], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("norm", [1, INF])
@pytest.mark.parametrize("likelihood", ["decrease", "increase"])
def test_universal_perturbation_optimises_the_mean_nll_change(norm, likelihood):
    """Against brute force on flow.nll differences averaged over the data (vertices, or a fine grid)."""
    rng = np.random.default_rng(4)
    flow = random_flow(3, 20.0, rng)
    X = flow.sample(50, rng) + 0.3
    eps = 0.4
    delta = linflow.universal_perturbation(flow, X, eps, norm=norm, likelihood=likelihood)
    value = linflow.universal_nll_change(flow, X, eps, norm=norm, likelihood=likelihood)
    assert value == pytest.approx(np.mean(flow.nll(X + delta) - flow.nll(X)), rel=1e-8)
    grid = np.linspace(-eps, eps, 21)
    cands = np.array(list(itertools.product(grid, repeat=3)))
    cands = cands[np.abs(cands).sum(axis=1) <= eps * (1 + 1e-12)] if norm == 1 else cands
    shifted = flow.nll((X[None, :, :] + cands[:, None, :]).reshape(-1, 3)).reshape(len(cands), len(X))
    means = shifted.mean(axis=1) - flow.nll(X).mean()
    if likelihood == "decrease":  # the optimum is a vertex, and the grid contains every vertex
        assert value == pytest.approx(means.max(), rel=1e-9)
    else:  # never worse than the grid, and close to it
        assert value <= means.min() + 1e-12
        assert value == pytest.approx(means.min(), rel=2e-2)


def test_zero_budget_and_one_dimension():
    rng = np.random.default_rng(1)
    flow = random_flow(4, 10.0, rng)
    X = flow.sample(3, rng)
    for norm in (1, INF):
        for lk in ("decrease", "increase"):
            np.testing.assert_array_equal(solve_box(flow, X - flow.mean, 0.0, norm=norm, likelihood=lk), 0.0)
            lo, up = perturbation_bounds(flow, X, 0.0, norm=norm, likelihood=lk)
            np.testing.assert_array_equal(lo, 0.0)
            np.testing.assert_array_equal(up, 0.0)
    f1 = linflow.LinearFlow.from_gaussian(np.array([1.0]), np.array([[4.0]]))
    for norm in (1, INF):  # d = 1: move away from the mean by eps (value eps|v|/4 + eps^2/8), or towards it
        expected = 0.3 * 0.5 / 4 + 0.09 / 8
        assert perturbation_bounds(f1, np.array([0.5]), 0.3, norm=norm) == pytest.approx((expected, expected))
        d_up = certified_perturbation(f1, np.array([0.5]), 0.3, norm=norm).delta
        np.testing.assert_allclose(d_up, [-0.3])
        d_in = certified_perturbation(f1, np.array([0.5]), 0.3, norm=norm, likelihood="increase").delta
        np.testing.assert_allclose(d_in, [0.3])
        d_in = certified_perturbation(f1, np.array([0.9]), 0.3, norm=norm, likelihood="increase").delta
        np.testing.assert_allclose(d_in, [0.1], rtol=1e-12)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input():
    rng = np.random.default_rng(0)
    flow = random_flow(4, 10.0, rng)
    x = flow.sample(2, rng)
    V = x - flow.mean
    with pytest.raises(ValueError, match="norm must be one of"):
        perturbation_bounds(flow, x, 0.1, norm=3)
    with pytest.raises(ValueError, match="norm must be 1 or np.inf"):
        solve_box(flow, V, 0.1, norm=2, likelihood="decrease")
    with pytest.raises(ValueError, match="likelihood"):
        solve_box(flow, V, 0.1, norm=1, likelihood="up")
    with pytest.raises(ValueError, match="eps"):
        perturbation_bounds(flow, x, -0.1, norm=1)
    with pytest.raises(TypeError, match="eps"):
        perturbation_bounds(flow, x, "0.1", norm=1)
    with pytest.raises(ValueError, match="x must have last dimension"):
        perturbation_bounds(flow, x[:, :3], 0.1, norm=1)
    with pytest.raises(ValueError, match="x contains non-finite"):
        perturbation_bounds(flow, np.full(4, np.nan), 0.1, norm=INF)
    with pytest.raises(TypeError, match="flow must be a LinearFlow"):
        perturbation_bounds(np.eye(4), x, 0.1, norm=1)
    with pytest.raises(TypeError, match="flow must be a LinearFlow"):
        solve_box(np.eye(4), V, 0.1, norm=1, likelihood="decrease")
    with pytest.raises(ValueError, match="V must have last dimension"):
        solve_box(flow, V[:, :2], 0.1, norm=1, likelihood="decrease")
    with pytest.raises(TypeError, match="unknown option"):
        solve_box(flow, V, 0.1, norm=INF, likelihood="decrease", restart=3)
    with pytest.raises(TypeError, match="exact"):
        solve_box(flow, V, 0.1, norm=INF, likelihood="decrease", exact="yes")
    with pytest.raises(TypeError, match="seed"):
        solve_box(flow, V, 0.1, norm=INF, likelihood="decrease", seed=1.5)
    with pytest.raises(ValueError, match="restarts"):
        solve_box(flow, V, 0.1, norm=INF, likelihood="decrease", restarts=0)
    with pytest.raises(ValueError, match="max_exact_dim"):
        solve_box(flow, V, 0.1, norm=INF, likelihood="decrease", max_exact_dim=40)
    with pytest.raises(ValueError, match="sdp_solver"):
        solve_box(flow, V, 0.1, norm=INF, likelihood="decrease", exact=False, sdp_solver="MOSEK")
    big = random_flow(27, 10.0, rng)
    with pytest.raises(ValueError, match="exact=True .* d <= 26"):
        perturbation_bounds(big, big.mean, 0.1, norm=INF, exact=True)
