r"""The sympy derivations behind R1 and R4-R7 (``linflow.symbolic`` re-exports this module).

Each function derives a statement from its definitions with sympy and returns a :class:`SymbolicCheck`: the
expressions it derived and a ``verdict`` that is ``True`` only if every derived expression simplifies to the one
the package's docstrings state. What is derived in general and what only on an instance (each function's
docstring has a ``Scope`` paragraph saying which):

* **symbolic in the entries, fixed dimension**: every eigenvalue, coordinate, budget and matrix entry is a sympy
  symbol, but the dimension is fixed (``d = 2`` or ``3``, or ``n = 3`` points). sympy proves the identity for all
  values of those symbols in that dimension. The step to general ``d`` is the coordinate-wise (eigenbasis)
  argument of the docstring; sympy does not check it.
* **instance**: a few checks also substitute numbers (the worked value of R7, ``S = diag(4, 1, 1/4)``,
  ``eps = 1``) and compare with the value stated in the docs; that is a check of one instance, not a proof.

Nothing here is a proof for symbolic ``d``. Used by ``tests/test_symbolic.py`` and by ``python -m linflow verify``
(``linflow/verification/symbolic.py``, tag ``SYM``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp


@dataclass(frozen=True)
class SymbolicCheck:
    """One symbolic derivation: which result (docs/theory.md), what was shown, the key expressions and the verdict."""

    result: str
    claim: str
    verdict: bool
    expressions: dict[str, sp.Expr] = field(default_factory=dict, repr=False)
    detail: str = ""


def _is_zero(expr: sp.Expr) -> bool:
    return sp.simplify(sp.expand(expr)) == 0


def secular_equation_kkt() -> SymbolicCheck:
    r"""R1: the KKT system of ``max_{||delta||^2 <= eps^2} (w+delta)^T P (w+delta)`` gives the secular equation.

    In the eigenbasis (``P = diag(1/s_i)``, ``d = 3``), stationarity of the Lagrangian
    ``(w+delta)^T P (w+delta) - eta (||delta||^2 - eps^2)`` is ``(eta I - P) delta = P w``, solved by
    ``delta_i = w_i / (eta s_i - 1)``; the active constraint gives ``phi(eta) = sum_i w_i^2 / (eta s_i - 1)^2 =
    eps^2``. The second-order condition ``P - eta I <= 0`` is ``eta >= 1/s_min``, and on ``eta > 1/s_min``
    ``phi' = -2 sum_i s_i w_i^2 / (eta s_i - 1)^3 < 0``: the root is unique.

    Scope: symbolic ``s_i, w_i, eta, eps`` with ``d = 3`` fixed: stationarity, the closed form of ``delta``, the
    derivative of ``phi`` and the Hessian are derived for all values; the sign of ``phi'`` is shown per term
    (which extends to any ``d`` since ``phi'`` is a sum of such terms). No numeric instance.
    """
    d = 3
    s = sp.symbols(f"s1:{d + 1}", positive=True)
    w = sp.symbols(f"w1:{d + 1}", real=True)
    dl = sp.symbols(f"delta1:{d + 1}", real=True)
    eta, eps = sp.symbols("eta epsilon", positive=True)
    lagr = sum((w[i] + dl[i]) ** 2 / s[i] for i in range(d)) - eta * (sum(x**2 for x in dl) - eps**2)
    sol = sp.solve([sp.diff(lagr, x) for x in dl], dl, dict=True)
    ok = len(sol) == 1
    delta = [sol[0][dl[i]] for i in range(d)] if ok else []
    stated = [w[i] / (eta * s[i] - 1) for i in range(d)]
    ok = ok and all(_is_zero(a - b) for a, b in zip(delta, stated))
    phi = sum(x**2 for x in stated)
    dphi = sp.diff(phi, eta)
    stated_dphi = -2 * sum(s[i] * w[i] ** 2 / (eta * s[i] - 1) ** 3 for i in range(d))
    ok = ok and _is_zero(dphi - stated_dphi)
    hess = [sp.diff(lagr, dl[i], 2) for i in range(d)]  # 2 (1/s_i - eta): <= 0 iff eta >= 1/s_i
    ok = ok and all(_is_zero(hess[i] - 2 * (1 / s[i] - eta)) for i in range(d))
    # phi' < 0 for eta > 1/s_min: each term s_i w_i^2/(eta s_i - 1)^3 >= 0 when eta s_i > 1
    g = sp.symbols("g", positive=True)  # g = eta s_i - 1 > 0
    term = (s[0] * w[0] ** 2 / (eta * s[0] - 1) ** 3).subs(eta, (g + 1) / s[0])
    ok = ok and bool(sp.simplify(term).is_nonnegative)
    return SymbolicCheck("R1", "KKT stationarity gives delta_i = w_i/(eta s_i - 1) and the secular equation "
                         "phi(eta) = eps^2, phi decreasing on eta > 1/s_min", ok,
                         {"delta": sp.Matrix(delta), "phi": phi, "dphi": dphi})


def expected_nll_change() -> SymbolicCheck:
    r"""R4: ``E[NLL(x + delta)] - E[NLL(x)] = delta^T P (m - mu) + 1/2 delta^T P delta`` for ``x`` of mean
    ``m`` and covariance ``S`` (``d = 2``, general symmetric ``P`` and ``S``), from ``E[x x^T] = S + m m^T``.

    Scope: symbolic ``m, mu, delta`` and general symmetric ``P, S`` (every entry a symbol) with ``d = 2`` fixed;
    the identity is linear algebra that holds entry-wise for any ``d``, but sympy checks ``d = 2`` only.
    """
    d = 2
    m = sp.Matrix(sp.symbols(f"m1:{d + 1}", real=True))
    mu = sp.Matrix(sp.symbols(f"mu1:{d + 1}", real=True))
    de = sp.Matrix(sp.symbols(f"delta1:{d + 1}", real=True))
    p11, p12, p22, s11, s12, s22 = sp.symbols("p11 p12 p22 s11 s12 s22", real=True)
    P = sp.Matrix([[p11, p12], [p12, p22]])
    S = sp.Matrix([[s11, s12], [s12, s22]])
    second = S + m * m.T  # E[x x^T]

    def expected_quad(shift: sp.Matrix) -> sp.Expr:
        # E[(x + shift)^T P (x + shift)] = tr(P E[xx^T]) + 2 shift^T P m + shift^T P shift
        return (P * second).trace() + 2 * (shift.T * P * m)[0] + (shift.T * P * shift)[0]

    change = sp.Rational(1, 2) * (expected_quad(de - mu) - expected_quad(-mu))
    stated = (de.T * P * (m - mu))[0] + sp.Rational(1, 2) * (de.T * P * de)[0]
    ok = _is_zero(change - stated)
    return SymbolicCheck("R4", "E[dNLL] = delta^T P (m - mu) + 1/2 delta^T P delta (log-det term cancels)", ok,
                         {"change": sp.expand(change)})


def water_filling_conditions() -> SymbolicCheck:
    r"""R5: the optimality conditions of ``min_P tr(PS) - log det P + eps^2 lambda_max(P)`` give water-filling.

    In the eigenbasis of ``S`` (``d = 3``, ``s_1 <= s_2 < tau < s_3``, floor ``K = {1, 2}``) with ``p_i`` the
    eigenvalues of ``P``: stationarity is ``s_i - 1/p_i + eps^2 theta_i = 0`` where ``theta`` is a subgradient
    of ``lambda_max`` at ``P``: ``theta_i >= 0``, ``sum theta_i = 1``, supported where ``p_i = 1/tau`` is the
    largest. So ``theta_i = (tau - s_i)/eps^2`` on ``K``, ``p_3 = 1/s_3``, and ``sum theta = 1`` is exactly the
    water-level equation ``sum_i (tau - s_i)_+ = eps^2``: ``tau = (eps^2 + s_1 + s_2)/2``. Equivalently
    ``Sigma* = S + eps^2 diag(theta)``. Also checked: the worked value of R7 (``S = diag(4, 1, 1/4)``,
    ``eps = 1``: ``tau = 9/8``).

    Scope: symbolic ``s_1, s_2, s_3, eps, tau`` with ``d = 3`` and the floor ``{1, 2}`` fixed (one floor
    pattern; other patterns are the same computation per coordinate, not checked by sympy). Instance: the
    worked ``tau = 9/8`` is a substitution.
    """
    s1, s2, s3, eps, tau = sp.symbols("s1 s2 s3 epsilon tau", positive=True)
    th = sp.symbols("theta1:4", nonnegative=True)
    p = [1 / tau, 1 / tau, 1 / s3]
    s = [s1, s2, s3]
    stationarity = [s[i] - 1 / p[i] + eps**2 * th[i] for i in range(3)]
    theta = sp.solve(stationarity[:2], th[:2], dict=True)[0]
    ok = _is_zero(theta[th[0]] - (tau - s1) / eps**2) and _is_zero(theta[th[1]] - (tau - s2) / eps**2)
    ok = ok and _is_zero(stationarity[2].subs(th[2], 0))  # theta_3 = 0 off the floor
    tau_sol = sp.solve(sp.Eq(theta[th[0]] + theta[th[1]], 1), tau)
    ok = ok and len(tau_sol) == 1 and _is_zero(tau_sol[0] - (eps**2 + s1 + s2) / 2)
    # the same tau is the root of sum (tau - s_i)_+ = eps^2 with the floor {1, 2}
    ok = ok and _is_zero(((tau - s1) + (tau - s2) - eps**2).subs(tau, tau_sol[0]))
    worked = tau_sol[0].subs({s1: sp.Rational(1, 4), s2: 1, eps: 1})
    ok = ok and worked == sp.Rational(9, 8)
    return SymbolicCheck("R5", "stationarity + lambda_max subgradient => theta_i = (tau - s_i)/eps^2 on the floor, "
                         "sum theta = 1 <=> sum (tau - s_i)_+ = eps^2", ok,
                         {"theta1": theta[th[0]], "theta2": theta[th[1]], "tau": tau_sol[0], "worked_tau": worked})


def tradeoff_kl() -> SymbolicCheck:
    r"""R7: the accuracy loss of water-filling and the signs of its derivatives.

    ``KL(N(m,S) || N(m,Sigma*)) = 1/2 [tr(Sigma*^{-1} S) - d + log det Sigma* - log det S]`` reduces (per
    coordinate, ``sigma_i = tau`` on the floor, ``= s_i`` off it) to ``1/2 sum_{s_i < tau} [s_i/tau - 1 -
    ln(s_i/tau)]``. With a floor of ``k = 2`` eigenvalues, ``tau = (eps^2 + s_1 + s_2)/2``:
    ``dKL/dtau = eps^2 / (2 tau^2) >= 0`` and ``dtau/deps = 2 eps / k > 0``, so the accuracy loss is
    non-decreasing in ``eps_train``; the worst rise ``eps_a^2 / (2 tau)`` has ``d/dtau = -eps_a^2/(2 tau^2) < 0``
    (robustness improves). The frontier's slope ``dKL / d rise = -eps_train^2 / eps_a^2``: the model trained at
    ``eps_train`` minimises ``KL + (eps_train^2/eps_a^2) rise``, which is why the curve is the Pareto frontier.
    The worked value: ``S = diag(4, 1, 1/4)``, ``eps = 1``: KL = 0.36649 nats, rise at ``eps_a = 1``: 4/9 (MLE 2).

    Scope: symbolic ``s_i, eps, eps_a, tau`` with ``d = 3`` and a floor of ``k = 2`` fixed (``dtau/deps = 2 eps/k``
    is derived for ``k = 2`` only). Instance: the worked KL 0.36649 and the rises 4/9 and 2 are substitutions.
    """
    s1, s2, s3, eps, ea, tau = sp.symbols("s1 s2 s3 epsilon epsilon_a tau", positive=True)
    sigma = [tau, tau, s3]
    s = [s1, s2, s3]
    kl_def = sp.Rational(1, 2) * sum(s[i] / sigma[i] - 1 + sp.log(sigma[i]) - sp.log(s[i]) for i in range(3))
    kl_stated = sp.Rational(1, 2) * sum(s[i] / tau - 1 - sp.log(s[i] / tau) for i in range(2))
    ok = _is_zero(sp.expand_log(kl_def - kl_stated, force=True))
    tau_eps = (eps**2 + s1 + s2) / 2
    dkl_dtau = sp.diff(kl_stated, tau)
    ok = ok and _is_zero((dkl_dtau - eps**2 / (2 * tau**2)).subs(tau, tau_eps))
    dtau = sp.diff(tau_eps, eps)
    ok = ok and _is_zero(dtau - eps) and bool(dtau.is_positive)
    rise = ea**2 / (2 * tau)
    drise = sp.diff(rise, tau)
    ok = ok and bool(drise.is_negative)
    slope = sp.simplify((dkl_dtau / drise).subs(tau, tau_eps))
    ok = ok and _is_zero(slope + eps**2 / ea**2)
    vals = {s1: sp.Rational(1, 4), s2: 1, s3: 4, eps: 1, ea: 1}
    tau_w = tau_eps.subs(vals)
    kl_w = kl_stated.subs(vals).subs(tau, tau_w)
    rise_w = rise.subs(vals).subs(tau, tau_w)
    ok = ok and abs(float(kl_w) - 0.36649) < 5e-6 and rise_w == sp.Rational(4, 9)
    ok = ok and rise.subs(vals).subs(tau, sp.Rational(1, 4)) == 2
    return SymbolicCheck("R7", "KL = 1/2 sum_{s_i<tau}[s_i/tau - 1 - ln(s_i/tau)], dKL/dtau = eps^2/(2 tau^2) >= 0, "
                         "d rise/dtau < 0, frontier slope -eps_t^2/eps_a^2", ok,
                         {"kl": kl_stated, "dkl_dtau": dkl_dtau, "slope": slope, "worked_kl": sp.nsimplify(kl_w),
                          "worked_rise": rise_w}, detail=f"worked KL = {float(kl_w):.6f} nats")


def s_lemma_lmi() -> SymbolicCheck:
    r"""R6: the homogenised LMI used by the sample-specific SDP encodes the robust constraint.

    In natural parameters (``h = P mu``) ``NLL(y) = 1/2 y^T P y - h^T y + 1/2 h^T P^{-1} h - 1/2 log det P +
    const`` (checked against the standard form, ``d = 2``). With ``q(delta) = 1/2 (x+delta)^T P (x+delta) -
    h^T (x+delta)``, ``b = P x - h`` and the matrix ``M = [[lam I - P, -b], [-b^T, 2t - x^T P x + 2 h^T x -
    lam eps^2]]``, the identity ``[delta; 1]^T M [delta; 1] = 2 (t - q(delta)) - lam (eps^2 - ||delta||^2)`` holds,
    so ``M >= 0, lam >= 0`` imply ``q <= t`` on the ball (and the S-lemma gives the converse).

    Scope: symbolic ``x, delta, mu, h``, general symmetric ``P`` (entries symbols), ``lam, t, eps`` with
    ``d = 2`` fixed. The S-lemma's converse (``q <= t`` on the ball implies such ``lam``) is cited, not derived.
    """
    d = 2
    x = sp.Matrix(sp.symbols(f"x1:{d + 1}", real=True))
    de = sp.Matrix(sp.symbols(f"delta1:{d + 1}", real=True))
    mu = sp.Matrix(sp.symbols(f"mu1:{d + 1}", real=True))
    p11, p12, p22, lam, t, eps = sp.symbols("p11 p12 p22 lambda t epsilon", real=True)
    P = sp.Matrix([[p11, p12], [p12, p22]])
    h = P * mu
    y = x + de
    nat = (sp.Rational(1, 2) * y.T * P * y - h.T * y + sp.Rational(1, 2) * h.T * P.inv() * h)[0]
    std = (sp.Rational(1, 2) * (y - mu).T * P * (y - mu))[0]
    ok = _is_zero(sp.together(nat - std))
    hv = sp.Matrix(sp.symbols(f"h1:{d + 1}", real=True))
    q = (sp.Rational(1, 2) * y.T * P * y - hv.T * y)[0]
    b = P * x - hv
    corner = 2 * t - (x.T * P * x)[0] + 2 * (hv.T * x)[0] - lam * eps**2
    M = sp.Matrix(sp.BlockMatrix([[lam * sp.eye(d) - P, -b], [-b.T, sp.Matrix([[corner]])]]))
    z = sp.Matrix([*de, 1])
    form = (z.T * M * z)[0]
    ok = ok and _is_zero(form - (2 * (t - q) - lam * (eps**2 - (de.T * de)[0])))
    return SymbolicCheck("R6", "natural-parameter NLL equals the standard one; [delta;1]^T M [delta;1] = "
                         "2(t - q(delta)) - lam (eps^2 - ||delta||^2)", ok, {"form": sp.expand(form)})


def minorant_minimum() -> SymbolicCheck:
    r"""R6 (the damped solver's certificate): ``min_{mu, sigma} mean_i NLL(y_i) + reg/(2 sigma)`` over a
    1-D Gaussian is ``1/2 (1 + log(c + reg) + log 2 pi)`` at ``mu = mean(y)``, ``sigma = c + reg``, with ``c`` the
    biased variance of the ``y_i`` (``n = 3`` symbolic points; ``d`` dimensions add coordinate-wise in the
    eigenbasis of the covariance).

    Scope: symbolic points ``y_1, y_2, y_3`` (``n = 3``), ``mu, sigma, reg`` in one dimension: stationarity in
    ``mu`` and ``sigma`` and the minimum value are derived for all values; ``n`` and ``d`` are fixed.
    """
    y = sp.symbols("y1:4", real=True)
    mu = sp.symbols("mu", real=True)
    sig, reg = sp.symbols("sigma reg", positive=True)
    n = len(y)
    obj = sum((yi - mu) ** 2 / (2 * sig) for yi in y) / n + sp.log(sig) / 2 + sp.log(2 * sp.pi) / 2 + reg / (2 * sig)
    mbar = sum(y) / n
    c = sum((yi - mbar) ** 2 for yi in y) / n
    ok = _is_zero(sp.diff(obj, mu).subs(mu, mbar))
    ok = ok and _is_zero(sp.together(sp.diff(obj, sig).subs({mu: mbar, sig: c + reg})))
    val = obj.subs({mu: mbar, sig: c + reg})
    stated = (1 + sp.log(c + reg) + sp.log(2 * sp.pi)) / 2
    ok = ok and _is_zero(sp.together(val - stated))
    return SymbolicCheck("R6", "the ML fit of the adversarial points minimises the minorant; its minimum is "
                         "1/2 (d + log det(cov + reg I) + d log 2 pi)", ok, {"minimum": stated})


ALL: tuple[Callable[[], SymbolicCheck], ...] = (
    secular_equation_kkt, expected_nll_change, water_filling_conditions, tradeoff_kl, s_lemma_lmi,
    minorant_minimum,
)


def run_all() -> list[SymbolicCheck]:
    """Run every symbolic derivation in :data:`ALL`."""
    return [fn() for fn in ALL]
