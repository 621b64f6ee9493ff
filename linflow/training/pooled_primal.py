r"""A primal repair for the pooled dual of R6 (L2): a better upper bound than ``F`` at the dual's primal.

The certificate of :func:`linflow.training.pooled._sample_pooled` is ``F(theta) - Phi(m)``; any model ``theta``
gives a valid upper bound ``F(theta) >= min F``. At the dual's primal (``Sigma = V diag(max(c, nu)) V^T``,
``mu = mean(x + m)``) almost all of the excess ``F - Phi`` comes from the interior points (``||m_i|| < eps``, R1's
hard case), through their coordinates in the filled space ``J = {j : c_j < nu}`` (the top eigenspace of ``P``, at
``lambda = 1 / nu``): an interior point with unspent budget ``t_i = eps^2 - ||m_i||^2`` and centred coordinates
``w_i = x_i - mu`` gains about ``lambda sqrt(t_i) ||w_{iJ}||`` over its share of ``Phi`` (the kink of R1's hard
case, first order in ``w_{iJ}``). At a stationary point of the dual ``w_{iJ} = 0`` for every interior point, so the
interior points are constant along the optimal ``J``.

The repair moves the model to cancel those coordinates at a small price in the Lagrangian. With the dual's
moments fixed, the Lagrangian ``L(theta)`` (the Gaussian NLL of the moments, ``min L = Phi``) is minimised at the
dual's primal, so ``F(theta) = L(theta) + (F - L)(theta)`` and, in the eigenbasis of ``Sigma``, a rotation
``e^S`` that turns ``J`` by ``A`` (``S_{lj} = A_{jl} = -S_{jl}``, ``j in J``, ``l`` not) and a move ``b`` of the
mean along ``J`` cost

.. math:: L(\theta') - \Phi \approx \tfrac12 \sum_{j \in J,\, l \notin J} \frac{(s_l - \nu)^2}{\nu s_l}
          A_{jl}^2 + \tfrac{\lambda}2 \lVert b\rVert^2

(a plane rotation by ``a`` of eigenvalues ``nu`` and ``s_l`` changes ``tr(P Sigma)`` by ``a^2 (s_l - nu)^2 / (nu
s_l)``; ``log det`` and ``tr P`` are invariant), while the kink terms become ``lambda sqrt(t_i) ||w_{iJ} + A
w_{iU} - b||``. The repair minimises their sum, a convex sum of norms plus a quadratic, by iteratively reweighted
least squares from ``A = 0, b = 0`` (``irls`` rounds, weights ``lambda sqrt(t_i) / (n ||r_i||)``; the rows of
``(A, b)`` share one normal matrix), with the quadratic scaled by ``scale`` (3: a margin for what the model leaves
out, the curvature of the points on the sphere near R1's hard case, whose excess rises when ``J`` turns), and
rotates by the Cayley transform ``(I - S/2)^{-1} (I + S/2)`` (exactly orthogonal, ``e^S`` to second order;
:class:`_Cayley` applies it by blocks). The
eigenvalues are kept. The repaired model is only a candidate: :func:`linflow.training.pooled._sample_pooled`
evaluates ``F`` at it exactly (one batched R1 attack) and keeps it only when ``F`` is lower than at every model
seen, so the certificate stays ``min F - max Phi``, both sides rigorous.

Measured on MNIST-5k at eps 1 (reg 0.01, a dual after 60 CPU s): ``F - Phi`` is 2.3e-4 at the dual's primal and
5.1e-5 at the repaired model (the model predicts 1.3e-5; the rest is the sphere points' excess, 2e-6 before and
2.8e-5 after: adding their curvature ``lambda ||delta_{iJ}|| / ||w_{iJ}||`` as further rows gave 4.3e-5, left
out). A projection instead of a rotation (``J'`` the bottom eigenspace of the interior points' weighted scatter
plus ``kappa (I - Pi_J)``) gave 1.1e-4; reweighting that towards the sum of norms drove the kink to 1e-7 and raised
``F`` to 4e-4 (the price of turning ``J`` was not counted).

Other primal steps measured without gain (MNIST-5k, reg 0.01, duals after ~55 CPU s; issue 14, R6-PRIMAL):

- *the eigenvalues and the mean, eigenvectors fixed*: ``F`` is convex in the precisions ``p`` and the natural mean
  ``p * b``; L-BFGS-B on the exact ``F`` (the tied top eigenvalue kept as one variable, the others bounded by it,
  exact envelope gradients) after the polish: 3.687e-5 -> 3.683e-5 at eps 1 in 30 iterations (7.6 CPU s);
- *snapping ``J`` to the pixels*: at eps 3 ``J`` (115 directions) lies within 0.2 rad of the span of the 172 pixels
  constant on all 3746 interior points, which are zero there; turning ``J`` into that span (the minimal rotation,
  eigenvalues kept, the mean moved along it) zeroes every interior kink but raises ``F - Phi`` from 5.7e-3 to 1.1e-2
  (the 1190 sphere points pay 9e-3); polished afterwards 1.0e-3 against 9.2e-4 from the dual's primal;
- *an extrapolated dual*: the primal of ``m_K + beta (m_K - m_{K-9})`` (projected on the ball) has a higher ``Phi``
  (+4.6e-6 at ``beta = 1``, eps 1) but a higher polished ``F`` (4.9e-5 against 4.6e-5 above ``Phi(m_K)``);
- *extrapolating the primal* along the line (natural parameters, where ``F`` is convex) through the polished
  models of two duals 12 iterations apart: ``F`` rises beyond the later one (+2.3e-5 at 1.5 times the step).

Along one 54-s ascent at eps 1 the polished ``F`` falls 1.5e-5, 8.6e-6, 4.1e-6 every ~7.5 CPU s while ``Phi`` rises
2.5e-5, 1.6e-5, 1.1e-5: the upper bound tracks the dual. Bracketed by a 170-s run (``F`` -312.6977359, ``Phi``
-312.6977463), at 54 s ``F`` is 0.9-2.0e-5 above the optimum and ``Phi`` at least 2.7e-5 below it.
"""

from __future__ import annotations

import numpy as np

from .pooled_dual import _Dual


def _repaired_model(dual: _Dual, eps: float, scale: float = 3.0, irls: int = 2) -> _Dual | None:
    """The repaired model of the dual's primal (module docstring), as a :class:`_Dual` whose ``c`` are the model's
    eigenvalues (all ``>= nu``, so ``s = c``), ``V`` its eigenvectors, ``yb`` its mean and ``W`` the centred points'
    eigen-coordinates; its ``G`` is ``-inf`` (it is a model, not a dual value). None when nothing is filled, no
    point is interior or the normal equations are singular."""
    n, d = dual.W.shape
    t = eps**2 - np.sum(dual.Mn**2, axis=1)
    inner = t > 1e-9 * eps**2
    J = dual.c < dual.nu
    kJ = int(J.sum())
    if kJ == 0 or kJ == d or not inner.any():
        return None
    nu, s = dual.nu, dual.s
    lam = 1.0 / nu
    W, ti = dual.W[inner], t[inner]
    WJ = W[:, J]
    WU = np.concatenate([W[:, ~J], -np.ones((W.shape[0], 1))], axis=1)  # the last column moves the mean
    K = scale * np.concatenate([(s[~J] - nu) ** 2 / (nu * s[~J]), [lam]])
    r = np.linalg.norm(WJ, axis=1)
    for _ in range(irls):
        om = lam * np.sqrt(ti) / (n * np.maximum(r, 1e-12 * max(float(r.max()), 1e-300)))
        G = (WU * om[:, None]).T @ WU
        G[np.diag_indices_from(G)] += K
        try:
            AT = -np.linalg.solve(G, (WU * om[:, None]).T @ WJ)  # rows: the U directions and the mean; columns: J
        except np.linalg.LinAlgError:
            return None
        r = np.linalg.norm(WJ + WU @ AT, axis=1)
    jj, uu = np.flatnonzero(J), np.flatnonzero(~J)
    return _turned_model(dual, _Cayley(jj, uu, AT))


def _skew(d: int, jj: np.ndarray, uu: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """The skew generator ``S`` of the turn ``Z = (A, b)`` (rows: the unfilled directions ``uu``, then the mean;
    columns: the filled ``jj``): ``S_{lj} = A_{lj} = -S_{jl}``."""
    S = np.zeros((d, d))
    S[np.ix_(uu, jj)] = Z[:-1]
    S[np.ix_(jj, uu)] = -Z[:-1].T
    return S


class _Cayley:
    r"""The Cayley rotation ``R = M^{-1} (I + S/2)``, ``M = I - S/2``, of the turn ``Z = (A, b)`` (:func:`_skew`),
    applied in ``O(n |U| |J|)`` instead of ``O(n d^2)``: in the blocks ``(J, U)``, ``S = [[0, -A^T], [A, 0]]``, so
    with ``K = (I + A^T A / 4)^{-1}`` (``|J| x |J|``)

    .. math:: M^{-1} = \begin{pmatrix} K & -K A^T/2 \\ A K/2 & I - A K A^T/4 \end{pmatrix}, \qquad
              R = 2 M^{-1} - I = \begin{pmatrix} 2K - I & -K A^T \\ A K & I - A K A^T/2 \end{pmatrix}

    (``M M^{-1} = I`` by ``(I + A^T A/4) K = I``; ``R`` is exactly orthogonal). Rows ``y`` are turned as ``y R`` and
    ``y M^{-1}``; ``y M^{-T}`` is ``y M^{-1}`` with ``A`` negated. ``jj``, ``uu``: the columns of ``J`` and ``U``
    (index arrays, or slices where the columns are stored in blocks: no gather)."""

    def __init__(self, jj: np.ndarray | slice, uu: np.ndarray | slice, Z: np.ndarray) -> None:
        self.jj, self.uu, self.Z = jj, uu, Z
        A = Z[:-1]
        self.A = A
        self.K = np.linalg.inv(np.eye(A.shape[1]) + 0.25 * (A.T @ A))
        self.K = 0.5 * (self.K + self.K.T)

    def _halves(self, Y: np.ndarray, sign: float) -> tuple[np.ndarray, np.ndarray]:
        """``(Y_J + sign Y_U A / 2) K`` and ``Y_U A`` for the rows of ``Y``."""
        YUA = Y[:, self.uu] @ self.A
        return (Y[:, self.jj] + (0.5 * sign) * YUA) @ self.K, YUA

    def inv_m(self, Y: np.ndarray, transpose: bool = False) -> np.ndarray:
        """``Y M^{-1}`` (``Y M^{-T}`` with ``transpose``)."""
        sign = -1.0 if transpose else 1.0
        T, _ = self._halves(Y, sign)
        out = np.empty_like(Y)
        out[:, self.jj] = T
        out[:, self.uu] = Y[:, self.uu] - (0.5 * sign) * (T @ self.A.T)
        return out

    def rotate(self, Y: np.ndarray) -> np.ndarray:
        """``Y R = 2 Y M^{-1} - Y``."""
        out = self.inv_m(Y)
        out *= 2.0
        out -= Y
        return out

    def shift(self) -> np.ndarray:
        """``R[:, J] b`` (``b = Z[-1]``), the mean's move in the eigenbasis: ``[(2K - I) b, A K b]``."""
        Kb = self.K @ self.Z[-1]
        out = np.zeros(self.K.shape[0] + self.A.shape[0])
        out[self.jj] = 2.0 * Kb - self.Z[-1]
        out[self.uu] = self.A @ Kb
        return out

    def dense(self) -> np.ndarray:
        """``R`` itself (``d x d``; for tests)."""
        return self.rotate(np.eye(self.K.shape[0] + self.A.shape[0]))


def _turned_model(dual: _Dual, rot: _Cayley) -> _Dual:
    """The dual's primal turned by ``R`` and its mean moved by ``b = Z[-1]`` along ``J``, as a :class:`_Dual`
    (eigenvalues kept; ``G = -inf``: a model, not a dual value)."""
    shift = rot.shift()  # the mean's move: the points' coordinates along R e_j drop by b_j
    model = _Dual(dual.Mn, -np.inf, dual.yb + dual.V @ shift, dual.Yc - dual.V @ shift, dual.s.copy(),
                  rot.rotate(dual.V), dual.nu, dual.k, dual.reg)
    model.__dict__["W"] = rot.rotate(dual.W) - rot.rotate(shift[None])[0]  # (x - mu') V R, without another pass
    return model
