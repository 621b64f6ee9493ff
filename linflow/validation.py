"""Argument checking shared by every public function of :mod:`linflow`.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong value or shape)
with a message that names the offending argument, so that a user sees *which* input is wrong.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.linalg

SUPPORTED_NORMS = (1, 2, np.inf)
LIKELIHOODS = ("decrease", "increase")
ATTACKS = ("universal", "sample")


def as_float_array(name: str, value: object, *, ndim: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Return ``value`` as a float64 array, checking dtype, dimensionality and finiteness.

    Booleans, complex numbers and objects are rejected with ``TypeError``; NaN/inf and a wrong number of
    dimensions with ``ValueError``.
    """
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim not in ndim:
        want = " or ".join(f"{k}-D" for k in ndim)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def check_points(name: str, x: object, dim: int) -> tuple[np.ndarray, bool]:
    """Validate one point ``(d,)`` or a batch ``(n, d)``; return the batch as 2-D and whether it was 1-D."""
    arr = as_float_array(name, x, ndim=(1, 2))
    single = arr.ndim == 1
    batch = arr[None, :] if single else arr
    if batch.shape[1] != dim:
        raise ValueError(f"{name} must have last dimension {dim} (the flow's dimension), got shape {arr.shape}")
    return batch, single


def check_eps(eps: object, name: str = "eps") -> float:
    """A finite, non-negative real budget."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real | np.floating | np.integer):
        raise TypeError(f"{name} must be a real number, got {type(eps).__name__}")
    val = float(eps)
    if not np.isfinite(val):
        raise ValueError(f"{name} must be finite, got {val}")
    if val < 0:
        raise ValueError(f"{name} must be >= 0, got {val}")
    return val


def check_norm(norm: object) -> float:
    """Canonicalise a norm: 1, 2 or ``np.inf`` (the strings ``"l1"``, ``"l2"``, ``"linf"``, ``"inf"`` too)."""
    aliases = {"1": 1, "l1": 1, "2": 2, "l2": 2, "inf": np.inf, "linf": np.inf, "l_inf": np.inf}
    if isinstance(norm, str):
        key = norm.strip().lower()
        if key in aliases:
            return float(aliases[key])
    elif not isinstance(norm, bool) and isinstance(norm, numbers.Real):
        if float(norm) in (1.0, 2.0) or np.isposinf(float(norm)):
            return float(norm)
    raise ValueError(f"norm must be one of 1, 2, np.inf (or 'l1', 'l2', 'linf', 'inf'), got {norm!r}")


def check_likelihood(likelihood: object) -> str:
    """``"decrease"`` (lower the likelihood: raise the NLL) or ``"increase"``."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be 'decrease' or 'increase', got {likelihood!r}")
    return str(likelihood)


def check_rng(rng: object) -> np.random.Generator:
    """An ``np.random.Generator`` from a seed, ``None`` or a generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def check_attack(attack: object) -> str:
    """``"universal"`` (one perturbation for all points, R4/R5) or ``"sample"`` (one per point, R1-R3/R6)."""
    if attack not in ATTACKS:
        raise ValueError(f"attack must be 'universal' or 'sample', got {attack!r}")
    return str(attack)


def check_data(X: object, reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate data ``X`` (n, d); return it with its mean ``m`` and ``S = (X - m)^T (X - m) / n + reg I``.

    ``reg`` must already be checked (a float ``>= 0``, see :func:`check_eps`). ``S`` is the biased sample covariance
    plus ``reg I`` (symmetrised); ``ValueError`` naming ``reg`` when it is singular: ``n <= d`` without ``reg``
    (rank ``<= n - 1``), or a smallest eigenvalue below ``10 d`` machine epsilons of the largest (e.g. a constant
    pixel). The one implementation of "sample covariance + singularity check" (used by ``LinearFlow.fit`` and
    adversarial training).
    """
    X = as_float_array("X", X, ndim=(2,))
    n, d = X.shape
    if reg == 0.0 and n <= d:
        raise ValueError(
            f"X has n={n} samples for d={d} dimensions: its sample covariance is singular (rank <= n - 1); "
            "pass reg > 0 to fit on S + reg * I"
        )
    m = X.mean(axis=0)
    C = X - m
    S = C.T @ C / n
    S = 0.5 * (S + S.T) + reg * np.eye(d)
    s = scipy.linalg.eigvalsh(S)
    if s[0] <= max(s[-1], np.finfo(np.float64).tiny) * d * np.finfo(np.float64).eps * 10:
        raise ValueError(
            f"the sample covariance of X is singular (n={n}, d={d}, smallest eigenvalue {s[0]:.3g}); "
            "pass reg > 0 to add reg * I"
        )
    return X, m, S
