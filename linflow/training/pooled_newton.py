r"""A coupled second-order step on the pooled dual of R6 (L2): truncated Newton-CG over all means jointly.

The proximal block step of :mod:`linflow.training.pooled` models only the per-point part ``(P - lambda I) / n`` of
the Hessian of ``Phi(m) = 1/2 H(C(m), tau(m))`` (``C = cov(x + m) + reg I``, ``tau = eps^2 - mean ||m_i||^2``,
``H(C, tau) = max {log det(C + R) : R >= 0, tr R <= tau} = sum_j log max(c_j, nu)``, water-filling, R5). Moving all
means together rotates the eigenbasis of ``C`` and meets the coupling curvature, which this step models exactly.

**Hessian.** With ``C = V diag(c) V^T``, ``p_j = 1 / max(c_j, nu)``, the filled set ``J = {j : c_j < nu}`` (``|J|
= k_J``, the constant coordinates of :class:`linflow.training.pooled._Reduced` included when ``reg < nu``) and
``lambda = 1 / nu``, the water-filled ``H`` is locally the spectral function ``sum_{j not in J} log c_j + k_J
log((tau + sum_J c_j) / k_J)``; by the Lewis-Sendov formula its second derivative along ``(E, t)`` (``Ê = V^T E
V``) is ``sum_{j != l} A_jl Ê_jl^2 - sum_{j not in J} Ê_jj^2 / c_j^2 - (sum_J Ê_jj + t)^2 / (k_J nu^2)`` with the
divided differences ``A_jl = (p_j - p_l) / (c_j - c_l)`` (``-1 / (c_j c_l)`` off ``J``, 0 inside ``J``). The
derivative of the gradient ``g_i = (P (y_i - ybar) - lambda m_i) / n`` along ``v`` is then

.. math:: (H v)_i = \tfrac1n\big(\mathrm{d}P\,(y_i - \bar y) + P (v_i - \bar v) - \mathrm{d}\lambda\, m_i
          - \lambda v_i\big),

``dP = V (A o Ê + dlambda diag(1_J)) V^T``, ``Ê = V^T dC V``, ``dC = (Y_c^T v + v^T Y_c) / n``, ``dlambda =
-(sum_J Ê_jj + t) / (k_J nu^2)``, ``t = -2 mean_i m_i^T v_i``: two products of the ``n x d`` points with a
``d x d`` matrix (:func:`_hess_vec`, all in the eigenbasis of ``C``).

**Step** (:func:`_newton_step`). Points on the sphere ``||m_i|| = eps`` whose gradient points outward
(``g_i^T m_i > 0``) move in the tangent space, with the multiplier ``mu_i = g_i^T m_i / eps^2`` (the Riemannian
Hessian ``P_T H P_T - mu_i I``); the others move freely. A truncated conjugate-gradient solve of ``(mu - P_T H
P_T) v = P_T g`` (positive semidefinite: ``Phi`` is concave) gives ``v``; ``m + alpha v`` (``alpha = 1, 1/2,
1/4``) is put back on the sphere (tangent points) or projected onto the ball (the rest) and accepted only if
``Phi`` rises. Any feasible means give a lower bound, so the certificate is unchanged.
"""

from __future__ import annotations

import numpy as np

from .pooled_dual import _ball, _Dual, _pooled_dual


class _Curvature:
    """The pieces of the Hessian of ``Phi`` at a dual point (module docstring), in the eigenbasis of ``C``.
    ``diag``: a per-point curvature added to the preconditioner (0 here)."""

    diag: float | np.ndarray = 0.0

    def __init__(self, dual: _Dual) -> None:
        c, nu = dual.c, dual.nu
        self.n = dual.Yc.shape[0]
        self.Yt = dual.Yc @ dual.V  # y_i - ybar
        self.Mt = dual.Mn @ dual.V
        self.p = 1.0 / np.maximum(c, nu)
        self.filled = c < nu
        kJ = int(self.filled.sum()) + (dual.k if dual.k and dual.reg < nu else 0)
        self.kJ, self.nu = kJ, nu
        self.lam = 1.0 / nu if kJ else dual.lam
        cu = np.maximum(c, nu)
        A = -1.0 / np.outer(cu, cu)  # both unfilled: -1 / (c_j c_l)
        f, u = self.filled, ~self.filled
        if f.any():
            # j filled, l unfilled: (1/nu - 1/c_l) / (c_j - c_l) = -(c_l - nu) / (nu c_l (c_l - c_j))
            num = (c[u] - nu) / (nu * c[u])
            den = c[u][None, :] - c[f][:, None]
            mix = -num[None, :] / np.maximum(den, np.finfo(float).tiny)
            A[np.ix_(f, u)] = mix
            A[np.ix_(u, f)] = mix.T
            A[np.ix_(f, f)] = 0.0
        self.A = A

    def grad(self) -> np.ndarray:
        """``g_i = (P (y_i - ybar) - lambda m_i) / n`` in the eigenbasis."""
        return (self.Yt * self.p - self.lam * self.Mt) / self.n

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        """``H v`` (module docstring) for ``v`` (n, d) in the eigenbasis."""
        n = self.n
        vc = v - v.mean(axis=0)
        E = self.Yt.T @ vc / n
        E = E + E.T
        dP = self.A * E
        if self.kJ:
            t = -2.0 * float(np.vdot(self.Mt, v)) / n
            dlam = -(float(np.trace(E[np.ix_(self.filled, self.filled)])) + t) / (self.kJ * self.nu**2)
            dP[np.diag_indices_from(dP)] += dlam * self.filled
        else:
            dlam = 0.0
        return (self.Yt @ dP + vc * self.p - dlam * self.Mt - self.lam * v) / n


def _tangent_newton(cur: _Curvature, eps: float, cg_iter: int = 20, damping: float = 1e-6, edge: float = 1e-5,
                    shift: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The truncated Newton-CG direction of :func:`_newton_step` (module docstring) for any curvature ``cur`` with
    the interface of :class:`_Curvature` (``grad``, ``hess_vec``, ``Mt``, ``p``, ``lam``, ``n``, ``diag``; also
    :class:`linflow.training.pooled_barrier._BarrierCurvature`): ``(x, on)``, the direction in the eigenbasis and
    the mask of the sphere points that move in their tangent space."""
    g = cur.grad()
    Mt = cur.Mt
    r2 = np.sum(Mt**2, axis=1)
    gm = np.sum(g * Mt, axis=1)
    on = (r2 >= eps**2 * (1.0 - edge)) & (gm > 0) & (r2 > 0)
    mu = np.where(on, gm / np.where(on, r2, 1.0), 0.0)
    U = Mt[on] / np.sqrt(r2[on])[:, None]  # unit normals of the sphere points

    def proj(v: np.ndarray) -> np.ndarray:
        out = v.copy()
        out[on] -= U * np.sum(v[on] * U, axis=1)[:, None]
        return out

    delta = damping * cur.lam / cur.n

    def op(v: np.ndarray) -> np.ndarray:
        return proj(-cur.hess_vec(v)) + (mu[:, None] + delta) * v

    # preconditioner: the per-point (block) part of the system, diagonal in the eigenbasis, shifted by ``shift``
    if shift is None:
        shift = 1.5 * cur.lam * Mt.shape[1]
    pre = cur.n / (np.maximum(cur.lam - cur.p, 0.0)[None, :] + cur.n * (mu + cur.diag)[:, None] + shift)

    def prec(r: np.ndarray) -> np.ndarray:
        return proj(pre * r)

    b = proj(g)
    x = np.zeros_like(b)
    r = b.copy()
    y = prec(r)
    z = y
    ry = float(np.vdot(r, y))
    ry0 = ry
    for _ in range(cg_iter):
        Az = op(z)
        zAz = float(np.vdot(z, Az))
        if zAz <= 0:
            break
        a = ry / zAz
        x += a * z
        r -= a * Az
        y = prec(r)
        ry_new = float(np.vdot(r, y))
        if ry_new <= 1e-24 * ry0:
            break
        z = y + (ry_new / ry) * z
        ry = ry_new
    return x, on


def _retract(Mt: np.ndarray, x: np.ndarray, on: np.ndarray, alpha: float, eps: float, V: np.ndarray) -> np.ndarray:
    """Feasible means ``m + alpha x`` (eigenbasis ``V``) in original coordinates: the tangent points put back on the
    sphere, the rest projected onto the ball."""
    new = Mt + alpha * x
    if on.any():
        nn = np.linalg.norm(new[on], axis=1)
        new[on] *= (eps / nn)[:, None]
    return _ball(new @ V.T, eps)


def _newton_step(X: np.ndarray, dual: _Dual, eps: float, reg: float, cg_iter: int = 20,
                 damping: float = 1e-6, edge: float = 1e-5,
                 shift: float | None = None) -> _Dual | None:
    """One truncated Newton-CG step on ``Phi`` over all means (module docstring); the new dual if ``Phi`` rose, else
    None. ``damping``: a Levenberg-Marquardt term ``damping * lambda / n`` added to the (PSD) system."""
    cur = _Curvature(dual)
    x, on = _tangent_newton(cur, eps, cg_iter, damping, edge, shift)
    for alpha in (1.0, 0.5, 0.25):
        nd = _pooled_dual(X, _retract(cur.Mt, x, on, alpha, eps, dual.V), eps, reg, dual.k)
        if nd.G > dual.G:
            return nd
    return None
