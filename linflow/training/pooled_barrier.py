r"""A barrier-smoothed pooled dual of R6 (L2) and a Newton-CG step on it (interior-point smoothing of R5's
water-filling).

**Why.** The pooled dual ``Phi(m) = 1/2 H(C(m), tau(m))`` + const (R6; ``C = cov(x + m) + reg I``, ``tau = eps^2 -
mean_i ||m_i||^2``) water-fills: ``H(C, tau) = max {log det(C + R) : R >= 0, tr R <= tau} = sum_j log max(c_j, nu)``
(R5). ``H`` is only ``C^1`` where an eigenvalue crosses the water level ``nu``, and at eps >= 1 on MNIST-5k many
unfilled eigenvalues crowd just above ``nu`` (R6, the structure of the optimum): the Newton model of
:mod:`.pooled_newton` breaks at the first crossing. Here the constraint ``R >= 0`` carries a log barrier:

.. math:: H_\mu(C, \tau) = \max\{\log\det(C + R) + \mu \log\det R : R \succ 0,\ \operatorname{tr} R = \tau\}.

**Value.** ``R`` shares ``C``'s eigenvectors (both terms are spectral and concave), so with ``C = V diag(c) V^T``
(the ``k`` constant coordinates of :class:`linflow.training.pooled._Reduced` add ``k`` eigenvalues ``reg``) the fill
``r_j > 0`` solves ``1 / (c_j + r_j) + mu / r_j = kappa``, ``sum_j r_j = tau``: each ``r_j(kappa)`` is the positive
root of ``kappa r^2 + (kappa c_j - 1 - mu) r - mu c_j = 0``, decreasing in ``kappa``, and ``kappa`` is one scalar
root (:func:`_barrier_fill`, bracketed by ``[1 / nu, 1 / c_min + mu D / tau]``, ``nu = min_k (tau + c_1 + ... +
c_k) / k`` the water level). ``H_mu = sum_j log s_j + mu sum_j
log r_j`` (``s_j = c_j + r_j``); ``R_mu`` is feasible for the water-filling, so ``log det(C + R_mu) <= H``, and
``H_mu -> H`` as ``mu -> 0``. ``Phi_mu = 1/2 (D + H_mu + D log 2 pi)`` is NOT a bound: it only steers.

**Gradient** (envelope theorem): ``dH_mu = tr(P dC) + kappa dtau`` with ``P = (C + R_mu)^{-1} = V diag(p) V^T``, ``p_j
= 1 / s_j``; so ``d Phi_mu / d m_i = (P (y_i - ybar) - kappa m_i) / n``, R6's gradient with ``lambda`` replaced by
``kappa``.

**Hessian.** ``H_mu`` is a smooth symmetric spectral function of ``C``. Differentiating the fill equations
(``a_j = p_j^2 + mu / r_j^2``, ``b_j = p_j^2 / a_j`` in (0, 1), ``S = sum_j 1 / a_j`` over all ``D`` eigenvalues):
``dkappa = -(dtau + sum_j b_j dc_j) / S`` and ``dp_j = -p_j^2 (1 - b_j) dc_j + b_j dkappa``. By Lewis-Sendov the
second derivative along ``(E, t)`` (``Ê = V^T E V``) is ``sum_{j,l} A_jl Ê_jl^2 - (sum_j b_j Ê_jj + t)^2 / S`` with
the divided differences of ``p_j = phi(c_j)`` at fixed ``kappa``; with ``q_j = kappa s_j - 1 = mu s_j / r_j`` one has
``c_j - c_l = (s_j - s_l)(1 + mu / (q_j q_l))``, so without cancellation

.. math:: A_{jl} = \frac{p_j - p_l}{c_j - c_l} = -\frac{p_j p_l\, q_j q_l}{q_j q_l + \mu}
          \quad (A_{jj} = -p_j^2 (1 - b_j)).

As ``mu -> 0`` this is :mod:`.pooled_newton`'s water-filled Hessian (``A = -p_j p_l`` unfilled, 0 filled, ``b`` the
filled indicator, ``S = k_J nu^2``) but it holds on a neighbourhood that shrinks only with ``mu``: no crossing. The
Hessian-vector product in the means (:meth:`_BarrierCurvature.hess_vec`) is then the one of :mod:`.pooled_newton`
with ``dP = V (A o Ê + dkappa diag(b)) V^T``.

**Step** (:func:`_barrier_step`): the tangent Newton-CG direction of :func:`.pooled_newton._tangent_newton` (sphere
points whose gradient points outward move in their tangent space) on ``Phi_mu``, then step lengths 1, 1/2, 1/4, ...
on the retracted (feasible) means until ``Phi_mu`` rises. Every candidate's eigendecomposition also gives the TRUE
water-filled ``Phi`` (:func:`.pooled_dual._pooled_dual`, float64, at ball-projected means): only that value may enter
a certificate, and only if it rose (:func:`_barrier_newton`). Options: a log barrier on the balls of the interior
points too (``ball``), or only the interior points moving (``interior``).

**Measured** (``bench/r6_barrier.py``; MNIST-5k, one thread; not used by the solver): the model holds through the
crossings, but the central path's true ``Phi`` lies far below the optimum unless ``mu <= 1e-8`` (eps 1: about -5e-5
at ``mu = 1e-5``, -2.4e-5 at 3e-6), and there the model holds only for about 20 CG products and CG, preconditioned
by the per-point part as the block step is, barely converges: from the default's state at 27.5 CPU s (eps 1), 25
more CPU s raise ``Phi`` to 5.1e-6 below the 600-s reference against the default's 3.1e-6 (eps 3: 9.4e-5 against
5.7e-5), and alternating it with the default (R6, ``newton``'s slot) widens the 60-s gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .objectives import _LOG_2PI
from .pooled_dual import _Dual, _pooled_dual
from .pooled_newton import _retract, _tangent_newton


def _roots(c: np.ndarray, kappa: float, mu: float) -> np.ndarray:
    """``r_j(kappa) > 0``: the positive root of ``kappa r^2 + (kappa c_j - 1 - mu) r - mu c_j = 0`` (``c_j > 0``),
    in the form without cancellation."""
    B = kappa * c - 1.0 - mu
    disc = np.sqrt(B * B + 4.0 * kappa * mu * c)
    pos = B > 0
    out = np.empty_like(c)
    out[pos] = 2.0 * mu * c[pos] / (B[pos] + disc[pos])
    out[~pos] = (disc[~pos] - B[~pos]) / (2.0 * kappa)
    return out


def _barrier_fill(call: np.ndarray, tau: float, mu: float) -> tuple[np.ndarray, float]:
    """``(r, kappa)``: the barrier fill of the eigenvalues ``call`` (all positive) with budget ``tau > 0`` (module
    docstring). Safeguarded Newton on the decreasing ``f(kappa) = sum_j r_j(kappa) - tau``."""
    if not tau > 0:
        raise ValueError(f"tau must be positive (the barrier needs unspent budget), got {tau!r}")
    if not mu > 0:
        raise ValueError(f"mu must be positive, got {mu!r}")
    if not call.min() > 0:
        raise ValueError("the eigenvalues must be positive (reg > 0)")
    cs = np.sort(call)
    lo = 1.0 / np.min((tau + np.cumsum(cs)) / np.arange(1, cs.size + 1))  # 1 / nu (R5's water level): f(lo) > 0
    hi = 1.0 / cs[0] + mu * cs.size / tau  # f(hi) < 0
    kappa = lo
    for _ in range(200):
        r = _roots(call, kappa, mu)
        f = float(r.sum()) - tau
        if f > 0:
            lo = kappa
        else:
            hi = kappa
        s = call + r
        drdk = -1.0 / (1.0 / s**2 + mu / r**2)  # dr_j / dkappa = -1 / a_j
        new = kappa - f / float(drdk.sum())
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        if abs(new - kappa) <= 1e-15 * kappa or hi - lo <= 4e-16 * hi:
            kappa = new
            break
        kappa = new
    return _roots(call, kappa, mu), kappa


@dataclass
class _Barrier:
    """``Phi_mu`` at the dual point ``dual`` (its eigenpairs): value ``G``, fill ``r`` and multiplier ``kappa`` over
    all ``D`` eigenvalues (the kept ones first, then the ``k`` constant ones, ``reg``), ``mu``, and ``inner``: the
    mask of the points whose ball carries a barrier too (None: none)."""

    dual: _Dual
    G: float
    r: np.ndarray
    kappa: float
    mu: float
    inner: np.ndarray | None = None


def _barrier_value(dual: _Dual, eps: float, mu: float, inner: np.ndarray | None = None) -> _Barrier:
    """``Phi_mu`` (module docstring) from the eigenpairs of a :class:`.pooled_dual._Dual` (``-inf`` when the means
    leave no budget, ``tau <= 0``); with ``inner`` (a mask of points) plus the ball barrier ``mu / (2 n) sum_{i in
    inner} log(eps^2 - ||m_i||^2)`` (``-inf`` outside those balls)."""
    n = dual.Mn.shape[0]
    r2 = np.einsum("ij,ij->i", dual.Mn, dual.Mn)
    tau = eps**2 - float(r2.sum()) / n
    call = np.concatenate([dual.c, np.full(dual.k, dual.reg)])
    if not tau > 0:  # no budget left: the barrier is -inf
        return _Barrier(dual, -np.inf, np.zeros(call.size), np.inf, mu, inner)
    r, kappa = _barrier_fill(call, tau, mu)
    D = call.size
    G = 0.5 * (D + float(np.sum(np.log(call + r))) + mu * float(np.sum(np.log(r))) + D * _LOG_2PI)
    if inner is not None:
        t = eps**2 - r2[inner]
        G = G + 0.5 * mu / n * float(np.sum(np.log(t))) if np.all(t > 0) else -np.inf
    return _Barrier(dual, G, r, kappa, mu, inner)


class _BarrierCurvature:
    """Gradient and Hessian-vector product of ``Phi_mu`` in the means (module docstring), in the eigenbasis of
    ``C``; the interface of :class:`.pooled_newton._Curvature` (``lam`` is ``kappa``). With ``bar.inner`` the ball
    barrier ``mu / (2 n) log t_i`` (``t_i = eps^2 - ||m_i||^2``) adds ``-mu m_i / (n t_i)`` to the gradient and
    ``-mu (v_i / t_i + 2 m_i (m_i^T v_i) / t_i^2) / n`` to the Hessian-vector product (``eps`` needed then)."""

    def __init__(self, bar: _Barrier, eps: float | None = None, rows: np.ndarray | None = None) -> None:
        dual, mu = bar.dual, bar.mu
        d = dual.c.size
        self.n = dual.Yc.shape[0]
        self.rows = rows  # only these points move (None: all); the others' rows of v are 0
        self.Yt = (dual.Yc if rows is None else dual.Yc[rows]) @ dual.V
        self.Mt = (dual.Mn if rows is None else dual.Mn[rows]) @ dual.V
        r = bar.r
        s = np.concatenate([dual.c, np.full(dual.k, dual.reg)]) + r
        p = 1.0 / s
        a = p**2 + mu / r**2
        self.S = float(np.sum(1.0 / a))
        self.b = (p**2 / a)[:d]
        q = (mu * s / r)[:d]
        self.p = p[:d]
        qq = np.outer(q, q)
        self.A = -np.outer(self.p, self.p) * qq / (qq + mu)
        self.lam = bar.kappa
        self.tinv = np.zeros(self.Mt.shape[0])  # 1 / t_i on the barrier points, else 0
        if bar.inner is not None:
            if eps is None:
                raise ValueError("eps is needed for the ball barrier")
            inner = bar.inner if rows is None else bar.inner[rows]
            self.tinv[inner] = 1.0 / (eps**2 - np.einsum("ij,ij->i", self.Mt[inner], self.Mt[inner]))
        self.w = self.diag = mu / self.n * self.tinv  # the per-point curvature of the ball barrier

    def grad(self) -> np.ndarray:
        """``(P (y_i - ybar) - kappa m_i) / n`` (less ``mu m_i / (n t_i)`` on barrier points) in the eigenbasis."""
        return (self.Yt * self.p - self.lam * self.Mt) / self.n - self.w[:, None] * self.Mt

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        """The Hessian of ``Phi_mu`` times ``v`` (n, d; with ``rows``, those rows only), both in the eigenbasis."""
        n = self.n
        vc = v - v.sum(axis=0) / n  # v_i - vbar (the points outside ``rows`` have v_i = 0)
        E = self.Yt.T @ v / n  # = Y_t^T (v - 1 vbar^T) / n over all points: Y_t is centred
        E = E + E.T
        dP = self.A * E
        t = -2.0 * float(np.vdot(self.Mt, v)) / n
        dk = -(float(self.b @ np.diag(E)) + t) / self.S
        dP[np.diag_indices_from(dP)] += dk * self.b
        out = (self.Yt @ dP + vc * self.p - dk * self.Mt - self.lam * v) / n
        if self.w.any():
            mv = np.einsum("ij,ij->i", self.Mt, v)
            out -= self.w[:, None] * (v + (2.0 * self.tinv * mv)[:, None] * self.Mt)
        return out


def _barrier_step(X: np.ndarray, bar: _Barrier, eps: float, reg: float, cg_iter: int = 20,
                  halvings: int = 6, damping: float = 1e-6, shift: float | None = None, ball: bool = False,
                  edge: float = 1e-5, interior: bool = False) -> tuple[_Barrier | None, int]:
    """One truncated Newton-CG step on ``Phi_mu`` over all means (module docstring) from ``bar``: ``(new, tries)``,
    the barrier point at the first step length (1, 1/2, ...; at most ``halvings + 1``) where ``Phi_mu`` rose (None if
    none did) and the number of candidates evaluated. ``new.dual.G`` is the true ``Phi`` there (feasible means);
    whether it rose is the caller's to check. ``ball``: the points strictly inside (``||m_i||^2 < eps^2 (1 -
    edge)``) also carry the ball barrier, so that the step keeps them inside instead of projecting them back.
    ``interior``: only those points move (the Hessian-vector products cost ``n_interior / n`` of the full ones)."""
    if ball:
        Mn = bar.dual.Mn
        bar = _barrier_value(bar.dual, eps, bar.mu, np.einsum("ij,ij->i", Mn, Mn) < eps**2 * (1.0 - edge))
    Mn = bar.dual.Mn
    rows = np.flatnonzero(np.einsum("ij,ij->i", Mn, Mn) < eps**2 * (1.0 - edge)) if interior else None
    cur = _BarrierCurvature(bar, eps, rows)
    x, on = _tangent_newton(cur, eps, cg_iter, damping, edge, shift)
    V = bar.dual.V
    Mt = cur.Mt
    if rows is not None:  # back to all points (the others do not move)
        Mt, x, on = Mn @ V, _embed(x, rows, Mn.shape), _embed(on, rows, Mn.shape[:1])
    for i in range(halvings + 1):
        Mn = _retract(Mt, x, on, 0.5**i, eps, V)
        new = _barrier_value(_pooled_dual(X, Mn, eps, reg, bar.dual.k), eps, bar.mu, bar.inner)
        if new.G > bar.G:
            return new, i + 1
    return None, halvings + 1


def _embed(a: np.ndarray, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` as the ``rows`` of a zero array of ``shape``."""
    out = np.zeros(shape, dtype=a.dtype)
    out[rows] = a
    return out


def _barrier_newton(X: np.ndarray, dual: _Dual, eps: float, reg: float, mu: float, cg_iter: int = 20,
                    shift: float = 5e-4) -> _Dual | None:
    """One :func:`_barrier_step` on ``Phi_mu`` from the dual point ``dual`` (CG preconditioner shift ``shift kappa
    d``): the new dual if the TRUE ``Phi`` rose (its means are feasible, evaluated in double precision), else None
    (also when the means leave no budget for the barrier)."""
    bar = _barrier_value(dual, eps, mu)
    if bar.G == -np.inf:
        return None
    new, _ = _barrier_step(X, bar, eps, reg, cg_iter=cg_iter, shift=shift * bar.kappa * dual.V.shape[1])
    return new.dual if new is not None and new.dual.G > dual.G else None
