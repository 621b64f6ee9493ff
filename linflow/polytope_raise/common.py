"""What both raising solvers share (:mod:`linflow.polytope_raise`): the result record, the Frank-Wolfe
certificate, stacked and padded linear solves, and argument checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_KKT_TOL = 1e-12
_CHUNK = 1 << 23  # float64 entries per stacked block of linear systems (64 MB)
_ROUND = 64 * float(np.finfo(np.float64).eps)  # sign tests on computed gradients allow this relative rounding


@dataclass(frozen=True)
class RaiseResult:
    """The minimisers of a batch of raising QPs with their certificates.

    Attributes
    ----------
    D : ``(n, d)`` the feasible ``delta`` per row (the optimum where ``certified``).
    value : ``(n,)`` ``f(delta) = g^T delta + delta^T P delta / 2``.
    gap : ``(n,)`` the Frank-Wolfe bound ``f(delta) - min f <= gap`` (so ``value - gap`` is a certified lower
        bound on the optimum).
    kkt : ``(n,)`` ``gap`` relative to its rounding scale (see the module docstring).
    certified : ``(n,)`` bool, the active sets settled and ``kkt <= kkt_tol``.
    iterations : ``(n,)`` active-set iterations plus homotopy breakpoints per row (0 for interior rows).
    """

    D: np.ndarray
    value: np.ndarray
    gap: np.ndarray
    kkt: np.ndarray
    certified: np.ndarray
    iterations: np.ndarray


def _stacked_solve(M: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``np.linalg.solve`` on a stack of *symmetric* systems (every caller's: principal submatrices of ``P`` or
    ``Sigma``, both symmetrised, bordered symmetrically and padded with identity rows), singular slices returned as
    NaN rows.

    The solve is handed the transposed view ``M^T`` -- the same matrices, since ``M`` is exactly symmetric -- whose
    memory order is the column-major order LAPACK works in: numpy's copy into that order is then contiguous, and
    the call 20-25 % faster (measured: 1000 systems of size 47, 35.5 ms -> 27.2 ms). The LAPACK input is the same
    array of numbers either way, so the results are bit for bit those of ``np.linalg.solve(M, ...)``."""
    try:
        return np.linalg.solve(M.transpose(0, 2, 1), R[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.full(R.shape, np.nan)
        for i in range(M.shape[0]):
            try:
                out[i] = np.linalg.solve(M[i], R[i])
            except np.linalg.LinAlgError:
                pass
        return out


def _rows_per_chunk(d: int) -> int:
    return max(1, _CHUNK // ((d + 1) * (d + 1)))


# ---------------------------------------------------------------------------------------------- certificate
def frank_wolfe_gap(P: np.ndarray, V: np.ndarray, D: np.ndarray, eps: float,
                    norm: float) -> tuple[np.ndarray, np.ndarray]:
    """``(gap, kkt)`` per row: the Frank-Wolfe bound ``f(delta) - min f <= gap`` and ``gap`` over its rounding scale.

    ``norm`` is ``np.inf`` (box) or ``1`` (L1 ball); ``D`` must be feasible. See the module docstring.
    """
    Y = V + D
    G = Y @ P
    Gs = (np.abs(V) + np.abs(D)) @ np.abs(P)  # magnitude of the terms of G (v + delta itself is rounded)
    if norm == np.inf:
        gap = np.sum(G * D + eps * np.abs(G), axis=1)
        scale = np.sum(Gs * (np.abs(D) + eps), axis=1)
    else:
        gmax = np.max(np.abs(G), axis=1)
        l1 = np.sum(np.abs(D), axis=1)
        gap = np.sum(G * D + np.abs(D) * gmax[:, None], axis=1) + np.maximum(eps - l1, 0.0) * gmax
        scale = np.max(Gs, axis=1) * (eps + l1) + np.sum(Gs * np.abs(D), axis=1)
    gap = np.maximum(gap, 0.0)
    kkt = np.divide(gap, scale, out=np.zeros_like(gap), where=scale > 0)
    return gap, kkt


def _finish(P: np.ndarray, V: np.ndarray, D: np.ndarray, eps: float, norm: float, settled: np.ndarray,
            iters: np.ndarray, kkt_tol: float) -> RaiseResult:
    value = np.einsum("ij,ij->i", D @ P, V + 0.5 * D)
    gap, kkt = frank_wolfe_gap(P, V, D, eps, norm)
    return RaiseResult(D, value, gap, kkt, settled & (kkt <= kkt_tol), iters)


def _check(P: np.ndarray, V: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, float]:
    P = np.asarray(P, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"P must be a square matrix, got shape {P.shape}")
    if V.ndim != 2 or V.shape[1] != P.shape[0]:
        raise ValueError(f"V must have shape (n, {P.shape[0]}), got {V.shape}")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a non-negative finite number, got {eps!r}")
    return 0.5 * (P + P.T), V, float(eps)


def _quad(P: np.ndarray, G0: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``f = g^T x + x^T P x / 2`` per row."""
    return np.einsum("ij,ij->i", X, G0 + 0.5 * (X @ P))


def _size_groups(rows: np.ndarray, size: np.ndarray, step: int, group: int = 64) -> list[np.ndarray]:
    """``rows`` sorted by system size and cut into groups of at most ``min(step, group)``: little padding."""
    order = rows[np.argsort(size, kind="stable")]
    width = max(1, min(step, group))
    return [order[a:a + width] for a in range(0, order.size, width)]


def _stalled(hist: list[int], changes: np.ndarray, it: int, left: int, n: int) -> bool:
    """Appends this iteration's total number of set changes to ``hist``. The primal-dual iteration stops on a batch
    when a quarter of it or more is left and that total fell by under 20 % in two iterations: it cycles or crawls
    (seen at condition numbers ~1e8); those rows go to the caller's next stage."""
    hist.append(int(changes.sum()))
    return it >= 4 and hist[-1] > 0.8 * hist[-3] and 4 * left > n


def _principal(M: np.ndarray, I: np.ndarray) -> np.ndarray:
    """``M[I_r, I_r]`` for every row ``r`` of the index array ``I`` (``(m, k)``): ``(m, k, k)``."""
    return np.take(M.ravel(), I[:, :, None] * M.shape[1] + I[:, None, :])


def _padded(k: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the indices of ``mask`` first (``(m, kmax)``, padded with other indices) and the validity mask."""
    kmax = max(int(k.max()), 1)
    order = np.argsort(~mask, axis=1, kind="stable")[:, :kmax]
    return order, np.arange(kmax)[None, :] < k[:, None]


