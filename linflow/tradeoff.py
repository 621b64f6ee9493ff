r"""The robustness-accuracy trade-off of adversarial training (R7).

:func:`tradeoff` trains one model per budget ``eps_train`` (:func:`linflow.training.adversarial_fit`) and
measures it: the clean mean NLL on the data, its loss against the maximum-likelihood fit, and the worst-case
mean NLL under an attack of budget ``eps_attack``. For the universal L2 attack everything is in closed form:
with ``tau`` the water level of ``eps_train`` (R5),

* accuracy loss ``= KL(N(m, S) || N(m, Sigma*)) = 1/2 sum_{s_i < tau} [s_i/tau - 1 - ln(s_i/tau)]`` (the mean
  NLL of data with exact moments ``(m, S)`` is the cross-entropy ``H(N(m,S)) + KL``),
* worst-case rise ``= eps_a^2 / (2 tau)`` (R4 with ``mu = m``: the hard case, ``eps_a^2 lambda_max(P) / 2``).

:func:`pareto_points` solves the constrained program ``min clean NLL s.t. worst-case rise <= r`` (or ``s.t.
worst-case NLL <= c``) with cvxpy. For the universal attack the training curve *is* that Pareto frontier: the
model trained at ``eps_train`` minimises ``KL + (eps_train^2 / eps_a^2) rise`` (the frontier's slope, derived in
:func:`linflow.symbolic.tradeoff_kl`). For the sample-specific attack the frontier is computed numerically (the
S-lemma SDP of R6 with the robust NLL as a constraint) and the training curve is compared with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import LinearFlow
from .training import adversarial_fit, water_level
from .training.objectives import _from_natural, _robust_nll
from .training.sample import sample_program
from .validation import as_float_array, check_attack, check_data, check_eps, check_norm

_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class TradeoffCurve:
    """One trained model per ``eps_train``, measured on the training data (arrays of ``len(eps_train)``).

    ``clean_nll``: mean NLL (nats); ``accuracy_loss``: ``clean_nll - ml_clean_nll``; ``robust_nll``: mean
    worst-case NLL under ``eps_attack``; ``rise``: ``robust_nll - clean_nll``. Universal L2 also has the closed
    forms ``water_level`` (tau), ``kl_formula`` and ``rise_formula`` (NaN otherwise), computed from the
    eigenvalues of ``S + reg I``: with ``reg = 0`` they equal the measured ``accuracy_loss`` and ``rise``.
    """

    attack: str
    norm: float
    eps_attack: float
    eps_train: np.ndarray
    clean_nll: np.ndarray
    accuracy_loss: np.ndarray
    robust_nll: np.ndarray
    rise: np.ndarray
    water_level: np.ndarray
    kl_formula: np.ndarray
    rise_formula: np.ndarray
    ml_clean_nll: float
    ml_robust_nll: float


@dataclass(frozen=True)
class ParetoFront:
    """Solutions of ``min clean NLL s.t. (worst-case rise | worst-case NLL) <= bound``, one per bound.

    ``constraint`` is ``"rise"`` or ``"robust"``; the other arrays are measured at each solution exactly as in
    :class:`TradeoffCurve` (``accuracy_loss`` against the maximum-likelihood fit). ``status`` holds cvxpy's.
    """

    attack: str
    constraint: str
    eps_attack: float
    bounds: np.ndarray
    clean_nll: np.ndarray
    accuracy_loss: np.ndarray
    robust_nll: np.ndarray
    rise: np.ndarray
    status: tuple[str, ...]


def _budgets(name: str, values: object) -> np.ndarray:
    arr = np.atleast_1d(as_float_array(name, values, ndim=(0, 1)))
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got min {arr.min():.3g}")
    return arr


def universal_kl(s: np.ndarray, tau: float) -> float:
    """``1/2 sum_{s_i < tau} [s_i/tau - 1 - ln(s_i/tau)]``: the accuracy loss of water level ``tau`` (R7)."""
    s = as_float_array("s", s, ndim=(1,))
    r = s[s < tau] / tau
    return float(0.5 * np.sum(r - 1.0 - np.log(r)))


def tradeoff(X: np.ndarray, eps_train: np.ndarray, eps_attack: float, *, attack: str = "universal",
             norm: float | str = 2, reg: float = 0.0, **options: object) -> TradeoffCurve:
    """The robustness-accuracy trade-off of adversarial training on ``X`` (R7).

    For each ``eps_train`` a model is trained with ``adversarial_fit(X, eps_train, attack=attack, norm=norm,
    reg=reg, **options)`` and measured on ``X``; its robustness is always measured against the same kind of
    attack it was trained for, of budget ``eps_attack`` (:func:`linflow.training.robust_nll`, exact). The
    sample-specific solver is warm-started from the previous model when ``eps_train`` increases. Deterministic.
    The arguments are checked here; each fit goes through the public :func:`~linflow.training.adversarial_fit`
    (which checks its own arguments, including ``options``).
    """
    attack = check_attack(attack)
    norm = check_norm(norm)
    eps_attack = check_eps(eps_attack, "eps_attack")
    reg = check_eps(reg, "reg")
    eps_train = _budgets("eps_train", eps_train)
    X, m, S = check_data(X, reg)
    ml = LinearFlow.from_gaussian(m, S)  # = LinearFlow.fit(X, reg), without checking X again
    ml_clean = float(np.mean(ml.nll(X)))
    ml_robust = _robust_nll(ml, X, eps_attack, attack, norm)
    s = np.linalg.eigvalsh(S)
    n_pts = eps_train.size
    clean, robust = np.empty(n_pts), np.empty(n_pts)
    taus, kls, rises_f = np.full(n_pts, np.nan), np.full(n_pts, np.nan), np.full(n_pts, np.nan)
    warm = attack == "sample" and norm == 2 and options.get("solver") is None and "init" not in options
    prev: LinearFlow | None = None
    for k, e in enumerate(eps_train):
        opts = dict(options)
        if warm and prev is not None and e > 0 and k > 0 and e >= eps_train[k - 1]:
            opts["init"] = prev
        flow = adversarial_fit(X, float(e), attack=attack, norm=norm, reg=reg, **opts)
        prev = flow
        clean[k] = np.mean(flow.nll(X))
        robust[k] = _robust_nll(flow, X, eps_attack, attack, norm)
        if attack == "universal" and norm == 2:
            taus[k] = water_level(s, float(e))
            kls[k] = universal_kl(s, taus[k])
            rises_f[k] = eps_attack**2 / (2.0 * taus[k])
    return TradeoffCurve(attack, norm, eps_attack, eps_train, clean, clean - ml_clean, robust, robust - clean,
                         taus, kls, rises_f, ml_clean, ml_robust)


def pareto_points(X: np.ndarray, bounds: np.ndarray, *, eps_attack: float, attack: str = "universal",
                  constraint: str = "rise", norm: float | str = 2, reg: float = 0.0,
                  solver: str = "CLARABEL", **solve_options: object) -> ParetoFront:
    r"""The Pareto frontier of (clean NLL, robustness) by constrained convex programs (cvxpy), R7.

    * universal, ``constraint="rise"``: ``min_{mu, P} E[NLL]`` s.t. ``max_{||delta|| <= eps_a} E[NLL(x+delta)] -
      E[NLL(x)] <= r``. The mean may be fixed at ``m``: for any ``mu`` the rise is at least
      ``eps_a^2 c(P) / 2`` (``delta = +-eps_a`` times the maximising unit vector, sign chosen so the linear term
      is ``>= 0``), attained at ``mu = m``, and ``mu = m`` also minimises the clean NLL. What remains is
      ``min_P 1/2 [tr(PS) - log det P]`` s.t. ``c(P) <= 2 r / eps_a^2``, with ``c = lambda_max`` (L2: the LMI
      ``P <= (2r/eps_a^2) I``) or ``max_j P_jj`` (L1).
    * ``constraint="robust"``: the same with ``worst-case mean NLL <= c`` instead; for ``"sample"`` this is the
      only convex form (the rise is a difference of convex functions) and uses the S-lemma program of R6
      (:func:`linflow.training.sample_program`).

    ``bounds`` are the values of ``r`` (or ``c``); each must leave the program feasible.
    """
    import cvxpy as cp

    attack = check_attack(attack)
    norm = check_norm(norm)
    if norm == np.inf:
        raise NotImplementedError("no exact convex program for L-infinity attacks (R3)")
    eps_attack = check_eps(eps_attack, "eps_attack")
    if eps_attack == 0:
        raise ValueError("eps_attack must be > 0 for a trade-off")
    if constraint not in ("rise", "robust"):
        raise ValueError(f"constraint must be 'rise' or 'robust', got {constraint!r}")
    if attack == "sample" and constraint == "rise":
        raise ValueError("constraint='rise' is not convex for the sample-specific attack (robust NLL minus clean "
                         "NLL is a difference of convex functions): use constraint='robust'")
    reg = check_eps(reg, "reg")
    bounds = _budgets("bounds", bounds)
    X, m, S = check_data(X, reg)
    d = X.shape[1]
    ml = LinearFlow.from_gaussian(m, S)  # = LinearFlow.fit(X, reg), without checking X again
    ml_clean = float(np.mean(ml.nll(X)))
    clean, robust, status = np.empty(bounds.size), np.empty(bounds.size), []
    for k, bound in enumerate(bounds):
        if attack == "universal":
            P = cp.Variable((d, d), PSD=True)
            clean_expr = 0.5 * (cp.sum(cp.multiply(P, S)) - cp.log_det(P)) + 0.5 * d * _LOG_2PI
            c_expr = cp.lambda_max(P) if norm == 2 else cp.max(cp.diag(P))
            if constraint == "rise":
                cons = [P << (2.0 * bound / eps_attack**2) * np.eye(d)] if norm == 2 else \
                    [cp.diag(P) <= 2.0 * bound / eps_attack**2]
            else:
                cons = [clean_expr + 0.5 * eps_attack**2 * c_expr <= bound]
            prob = cp.Problem(cp.Minimize(clean_expr), cons)
            prob.solve(solver=solver, **solve_options)
            if P.value is None:
                raise RuntimeError(f"cvxpy failed at bound {bound}: status {prob.status}")
            flow = LinearFlow.from_gaussian(m, np.linalg.inv(0.5 * (P.value + P.value.T)))
        else:
            P, h, rob_expr, clean_expr, cons = sample_program(X, eps_attack, reg, norm)
            prob = cp.Problem(cp.Minimize(clean_expr), [*cons, rob_expr <= bound])
            prob.solve(solver=solver, **solve_options)
            if P.value is None:
                raise RuntimeError(f"cvxpy failed at bound {bound}: status {prob.status}")
            flow = _from_natural(P.value, h.value)
        status.append(str(prob.status))
        clean[k] = np.mean(flow.nll(X))
        robust[k] = _robust_nll(flow, X, eps_attack, attack, norm)
    return ParetoFront(attack, constraint, eps_attack, bounds, clean, clean - ml_clean, robust, robust - clean,
                       tuple(status))
