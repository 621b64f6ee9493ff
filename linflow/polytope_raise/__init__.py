r"""Exact, batched likelihood *raising* over the L-infinity box and the L1 ball: active sets with a KKT certificate.

For a point ``v = x - mu`` and precision ``P`` (symmetric positive definite) the raising attack (R3) solves the
convex QP

.. math::  \min_{\|\delta\| \le \varepsilon} \; f(\delta) = g^T\delta + \tfrac12 \delta^T P \delta ,
           \qquad g = P v ,

i.e. ``min (v + delta)^T P (v + delta)`` (the NLL change is ``f``). ``G = P (v + delta)`` is the gradient.

**Box** (``|delta_i| <= eps``). KKT: ``G_i = 0`` where ``|delta_i| < eps``, ``G_i <= 0`` where ``delta_i = eps``,
``G_i >= 0`` where ``delta_i = -eps``. Given the sets ``A+`` (at ``+eps``) and ``A-`` (at ``-eps``), the free
part solves ``P_FF delta_F = -g_F - P_FA delta_A``. The primal-dual active-set method (Hintermueller, Ito &
Kunisch 2002, a semismooth Newton method on ``delta = clip(delta - G / c)``) updates
``A+ = {lambda_i + c_i (delta_i - eps) > 0}``, ``A- = {lambda_i + c_i (delta_i + eps) < 0}`` with
``lambda = -G`` on the active set, ``0`` on the free one and ``c = diag P``. When the sets repeat, the iterate is an
exact KKT point (to the rounding of one linear solve): the method is finite when it terminates.

**L1 ball** (``||delta||_1 <= eps``). If ``||v||_1 <= eps`` the unconstrained minimiser ``delta = -v`` is feasible.
Otherwise the constraint is active with multiplier ``lambda > 0``: on the support ``S`` with signs ``sigma``,
``G_S = -lambda sigma``, ``|G_i| <= lambda`` off ``S`` and ``sigma^T delta_S = eps``, i.e. the bordered system

.. math::  \begin{pmatrix} P_{SS} & \sigma \\ \sigma^T & 0 \end{pmatrix}
           \begin{pmatrix} \delta_S \\ \lambda \end{pmatrix} = \begin{pmatrix} -g_S \\ \varepsilon \end{pmatrix}.

The active-set update is the semismooth Newton rule for ``delta = soft(delta - G / c, lambda / c)``: an index
joins ``S`` (sign ``-sign G_i``) where ``|G_i| > lambda``, and leaves it where ``sigma_i delta_i < 0``. With
``start="diagonal"`` the first support and signs come from the same problem with ``P`` replaced by its diagonal
(solved exactly by sorting).

Both iterations run on the whole batch at once, rows leaving it as their sets settle; the L1 iteration starts
from the support and signs of the unconstrained minimiser ``-v`` (``start="top"``; or of the diagonal model). Each
face system is solved in the smaller of two forms: on the free coordinates, or on the fixed ones through
``Sigma = P^{-1}`` (with ``Sigma g = v``); the systems are sorted by size, padded with identity rows and stacked
into ``np.linalg.solve``. A box row leaves the iteration when its number of set changes stops falling (no fewer
than two iterations before). The L1 iteration is *damped* (:mod:`.l1`): once a row's multiplier turns negative
(an overshooting exchange), it drops only the 30 % most wrong-signed support coordinates and adds only the 60 %
largest join violations per iteration -- at condition number 1e8 the undamped iteration cycled on every row, the
damped one settles all in about 20 iterations. Where ``numba`` is installed the L1 iteration runs compiled, one row
at a time (:mod:`._jit`, same iteration), else batched in numpy.

**Homotopy** (:mod:`.homotopy`). The primal-dual iteration can cycle when ``P`` is far from an M-matrix (seen at
condition numbers 1e4-1e8 for the box). Those rows follow the solution path in
``eps`` from the unconstrained minimiser (``eps = ||v||``) down: piecewise linear, one coordinate joining or
leaving a small index set per breakpoint (LARS-type), each breakpoint one rank-one update of the inverse of a
principal submatrix of ``Sigma``, all rows at once. The path is finite; it proposes the optimal face, which one
primal-dual step solves afresh (exactly, in the forms above) and checks.

**Finite termination.** Rows whose face is still not confirmed continue (box: after a few batched projected
Newton steps, Bertsekas 1982) with the primal active-set method (Nocedal & Wright, Alg. 16.3), one row at a time
from a feasible warm start: ``f`` decreases strictly between face minima, so no working set repeats and it ends,
in finitely many steps, at a KKT point.

**Certificate.** For any feasible ``delta`` convexity gives ``f(delta) - min f <= G^T delta + eps ||G||_*``
(the Frank-Wolfe gap, ``||.||_*`` the dual norm). It is summed termwise from non-negative pieces
(``G_i delta_i + eps |G_i|`` for the box, ``G_i delta_i + |delta_i| ||G||_inf`` plus
``(eps - ||delta||_1) ||G||_inf`` for L1), so a KKT point yields a gap of rounding size. The returned ``kkt`` is
that gap divided by its natural rounding scale ``(eps + ||delta||) |P| (|v| + |delta|)``, summed the same way: a
componentwise backward error, at most ~``d`` units of rounding for an exact answer, independent of the condition
number of ``P``. A row that reaches no KKT point within the iteration limits or whose ``kkt`` exceeds ``kkt_tol``
is reported in ``certified = False`` for the caller's fallback (none was seen in the tests and benchmarks).
``eps = 0`` gives ``delta = 0``.
"""

from __future__ import annotations

from .box import raise_box
from .common import DEFAULT_KKT_TOL, RaiseResult, frank_wolfe_gap
from .l1 import raise_l1

__all__ = ["RaiseResult", "raise_box", "raise_l1", "frank_wolfe_gap", "DEFAULT_KKT_TOL"]
