"""The linear-flow experiments of ``reproduce`` (R1-R7 of docs/theory.md), shared with the notebooks.

Each ``compute_*`` function takes explicit settings and a seed and returns a JSON-able dictionary of arrays:
the geometry of the optimal L2 perturbations of a 2-D flow (R1, R2, R4) against brute force; the NLL rise
against the budget, exact (R1) vs PGD on the torch LinearFlow vs the certified L-infinity interval (R3);
water-filling on the digits pixels (R5) with the worked example (docs/theory.md); the robustness-accuracy trade-off (R7)
with cvxpy's Pareto points. Everything numerical comes from :mod:`linflow` and :mod:`deepcheck.attacks`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from linflow import LinearFlow, adversarial_fit, optimal_perturbation, pareto_points, perturbation_bounds, tradeoff
from linflow.tradeoff import universal_kl


# ---------------------------------------------------------------------------------------------- geometry
def geometry_flow() -> Any:
    """The 2-D flow of the geometry figure: ``N(0, R diag(2, 0.12) R^T)``, ``R`` a rotation by 30 degrees."""
    t = np.deg2rad(30.0)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return LinearFlow.from_gaussian(np.zeros(2), R @ np.diag([2.0, 0.12]) @ R.T)


GEOMETRY_POINTS = np.array([[0.0, 0.0], [1.6, 0.5], [-1.2, 0.9], [0.4, -1.3], [-2.2, -1.0]])


def compute_geometry(eps: float = 0.5, brute_force: int = 20000) -> dict[str, Any]:
    """Optimal L2 lowering (R1) and raising (R2) perturbations of the points :data:`GEOMETRY_POINTS` of
    :func:`geometry_flow`, checked against brute force: the NLL rise maximised over ``brute_force`` points of
    the circle ``||delta|| = eps`` (the constraint is active for R1) and minimised over a polar grid of the
    disk (R2)."""
    flow = geometry_flow()
    X = GEOMETRY_POINTS
    dd = np.asarray(optimal_perturbation(flow, X, eps, norm=2, likelihood="decrease"))
    di = np.asarray(optimal_perturbation(flow, X, eps, norm=2, likelihood="increase"))
    nll0 = flow.nll(X)
    rise = flow.nll(X + dd) - nll0
    drop = flow.nll(X + di) - nll0
    ang = np.linspace(0.0, 2 * np.pi, brute_force, endpoint=False)
    circle = eps * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    radii = eps * np.sqrt(np.linspace(0.0, 1.0, max(brute_force // 200, 10)))
    disk = (radii[:, None, None] * np.stack([np.cos(ang[::200]), np.sin(ang[::200])], axis=1)[None]).reshape(-1, 2)
    bf_rise = np.array([np.max(flow.nll(x + circle)) - n0 for x, n0 in zip(X, nll0)])
    bf_drop = np.array([np.min(flow.nll(x + disk)) - n0 for x, n0 in zip(X, nll0)])
    return {"eps": eps, "mean": flow.mean, "cov": flow.cov, "u_min": flow.eigvecs[:, 0],
            "s_min": float(flow.eigvals[0]), "points": X, "delta_decrease": dd, "delta_increase": di,
            "norm_decrease": np.linalg.norm(dd, axis=1), "norm_increase": np.linalg.norm(di, axis=1),
            "rise": rise, "drop": drop, "brute_force_rise": bf_rise, "brute_force_drop": bf_drop,
            "universal_rise": eps**2 / (2 * flow.eigvals[0]), "brute_force_points": brute_force}


# ---------------------------------------------------------------------------------------------- NLL vs eps
def attack_flow(dim: int, cond: float, seed: int) -> Any:
    """A ``dim``-dimensional flow with eigenvalues log-spaced in ``[1/cond, 1]`` and a random rotation."""
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((dim, dim)))
    Q = Q * np.sign(np.diag(R))
    s = np.logspace(-np.log10(cond), 0.0, dim)
    return LinearFlow.from_gaussian(rng.standard_normal(dim) * 0.1, (Q * s) @ Q.T)


def compute_attack_vs_eps(dim: int, cond: float, n_points: int, eps_grid: tuple[float, ...], pgd_steps: int,
                          pgd_restarts: int, seed: int, device: str = "cpu") -> dict[str, Any]:
    """Mean NLL rise over ``n_points`` samples of :func:`attack_flow`: the exact L2 optimum (R1), PGD on the
    torch LinearFlow (L2 and L-inf) and the certified L-inf interval ``[lower, upper]`` (R3), per point and
    averaged; the relative shortfall of PGD below the exact optimum (L2) and the certified upper bound (L-inf)."""
    import torch

    from ..attacks import pgd
    from ..flows import LinearFlow as TorchLinearFlow

    flow = attack_flow(dim, cond, seed)
    X = flow.sample(n_points, rng=seed + 1)
    nll0 = flow.nll(X)
    out: dict[str, Any] = {"eps": list(eps_grid), "dim": dim, "n_points": n_points, "s_min": float(flow.eigvals[0])}
    exact = []
    for e in eps_grid:
        d = np.asarray(optimal_perturbation(flow, X, e, norm=2, likelihood="decrease"))
        exact.append(flow.nll(X + d) - nll0)
    exact = np.array(exact)
    out["exact_l2"] = exact.mean(axis=1)
    out["exact_l2_points"] = exact
    lo, up = [], []
    for e in eps_grid:
        lower, upper = perturbation_bounds(flow, X, e, norm=np.inf, likelihood="decrease")
        lo.append(np.asarray(lower, float))
        up.append(np.asarray(upper, float))
    out["linf_lower"], out["linf_upper"] = np.mean(lo, axis=1), np.mean(up, axis=1)
    out["linf_lower_points"], out["linf_upper_points"] = np.array(lo), np.array(up)
    model = TorchLinearFlow.from_linflow(flow).to(device)
    xt = torch.tensor(X, dtype=torch.float64, device=device)
    for norm, key in (("l2", "pgd_l2"), ("linf", "pgd_linf")):
        vals = []
        for e in eps_grid:
            if e == 0.0:
                vals.append(np.zeros(n_points))
                continue
            xa = pgd(model, xt, e, norm=norm, likelihood="decrease", steps=pgd_steps, restarts=pgd_restarts,
                     clamp=None, seed=seed)
            vals.append(flow.nll(xa.detach().cpu().numpy()) - nll0)
        vals = np.array(vals)
        out[key] = vals.mean(axis=1)
        out[key + "_points"] = vals
    for key, ref_points in (("pgd_l2", exact), ("pgd_linf", out["linf_upper_points"])):
        pos = ref_points > 1e-12
        gap = 1.0 - out[key + "_points"][pos] / ref_points[pos]  # relative shortfall of PGD below the reference
        out[key + "_gap_worst"] = float(gap.max()) if gap.size else 0.0
        out[key + "_gap_median"] = float(np.median(gap)) if gap.size else 0.0
    return out


# ---------------------------------------------------------------------------------------------- water-filling
def digits_pixels(seed: int) -> np.ndarray:
    """sklearn's 8x8 digits as vectors in [0, 1]^64, uniformly dequantised: ``(k + u) / 17`` (seeded)."""
    from sklearn.datasets import load_digits

    k = load_digits().data.astype(np.float64)
    u = np.random.default_rng(seed).random(k.shape)
    return (k + u) / 17.0


def worked_example_data() -> np.ndarray:
    """Six points with mean 0 and (biased) covariance exactly diag(4, 1, 0.25): ``+-sqrt(3 s_i) e_i``."""
    s = np.array([4.0, 1.0, 0.25])
    E = np.diag(np.sqrt(3 * s))
    return np.concatenate([E, -E])


def compute_waterfilling(eps: float, seed: int) -> dict[str, Any]:
    """R5 on the digits pixels: the MLE flow vs ``adversarial_fit(X, eps, attack="universal")``, the flow
    trained against the universal L2 attack of budget ``eps``; plus the worked example of docs/theory.md (S = diag(4, 1,
    0.25), eps = 1: tau = 1.125, KL = 0.36649 nats, worst rise 0.4444 nats vs 2.0 for the MLE flow).
    The water level is read off the trained flow (its smallest eigenvalue, when it lifted any)."""
    X = digits_pixels(seed)
    mle = LinearFlow.fit(X)
    s = np.asarray(mle.eigvals)
    robust = adversarial_fit(X, eps, attack="universal")
    r_eig = np.asarray(robust.eigvals)
    tau = float(r_eig[0])
    worked = adversarial_fit(worked_example_data(), 1.0, attack="universal")
    w_eig = np.asarray(worked.eigvals)
    w_tau = float(w_eig[0])
    return {"eps": eps, "data_eigvals": s, "robust_eigvals": r_eig, "tau": tau,
            "n_lifted": int(np.sum(s < tau)), "kl": universal_kl(s, tau), "rise_mle": eps**2 / (2 * s[0]),
            "rise_robust": eps**2 / (2 * tau),
            "worked": {"tau": w_tau, "eigvals": w_eig, "kl": universal_kl(np.array([0.25, 1.0, 4.0]), w_tau),
                       "rise_robust": 1.0 / (2 * w_tau), "rise_mle": 1.0 / (2 * 0.25)}}


# ---------------------------------------------------------------------------------------------- trade-off
def tradeoff_data(dim: int, n: int, seed: int) -> np.ndarray:
    """Skewed synthetic data (n, dim): anisotropic Gaussian plus a cubed coordinate (so R5 and R6 differ)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, dim)) * np.logspace(0, -1, dim)
    Z[:, 0] = Z[:, 0] + 0.5 * Z[:, 0] ** 3
    return Z


def compute_tradeoff(dim: int, n: int, eps_train: tuple[float, ...], eps_attack: float, sample: bool,
                     n_checks: int, seed: int) -> dict[str, Any]:
    """R7 with ``linflow.tradeoff``: (accuracy loss, worst NLL rise under attacks of budget ``eps_attack``) of
    the flows adversarially trained at each ``eps_train``, for the universal attack (closed form, R5) and, when
    ``sample``, the sample-specific one (R6). Pareto check: ``linflow.tradeoff.pareto_points`` solves the
    constrained programs with cvxpy at ``n_checks`` budgets (universal: min clean NLL s.t. rise <= r; sample:
    s.t. worst-case NLL <= c) -- their accuracy losses must land on the training curves."""
    X = tradeoff_data(dim, n, seed)
    eps = np.asarray(eps_train, float)
    u = tradeoff(X, eps, eps_attack, attack="universal")
    res: dict[str, Any] = {"eps_train": eps, "eps_attack": eps_attack, "dim": dim, "n": n,
                           "universal": {"kl": u.accuracy_loss, "rise": u.rise, "kl_formula": u.kl_formula,
                                         "rise_formula": u.rise_formula, "tau": u.water_level},
                           "sample": None, "checks": None}
    if sample:
        sc = tradeoff(X, eps, eps_attack, attack="sample")
        res["sample"] = {"kl": sc.accuracy_loss, "rise": sc.rise, "robust_nll": sc.robust_nll}
    if n_checks:
        idx = np.unique(np.linspace(1, len(eps) - 1, n_checks).round().astype(int))
        pu = pareto_points(X, u.rise[idx], eps_attack=eps_attack, attack="universal", constraint="rise")
        checks = {"eps_train": eps[idx], "kl": pu.accuracy_loss, "rise": pu.rise, "curve_kl": u.accuracy_loss[idx],
                  "status": list(pu.status), "sample_kl": None, "sample_rise": None}
        if sample:
            ps = pareto_points(X, res["sample"]["robust_nll"][idx], eps_attack=eps_attack, attack="sample",
                               constraint="robust")
            checks.update(sample_kl=ps.accuracy_loss, sample_rise=ps.rise, sample_curve_kl=res["sample"]["kl"][idx],
                          sample_status=list(ps.status))
        res["checks"] = checks
    return res
