r"""The linear flow ``x = A z + b`` with ``z ~ N(0, I_d)`` (docs/theory.md, Notation).

So ``x ~ N(mu, Sigma)`` with ``mu = b`` and ``Sigma = A A^T``. Its negative log-likelihood in nats is

.. math::  \mathrm{NLL}(x) = \tfrac12 (x-\mu)^T \Sigma^{-1} (x-\mu) + \tfrac12 \log\det\Sigma + \tfrac d2 \log 2\pi .

A :class:`LinearFlow` is immutable and computes the eigendecomposition ``Sigma = U diag(s) U^T`` once, at
construction (from the SVD of ``A`` when built from ``A``, which keeps tiny eigenvalues accurate). Every
attack and training routine reuses it: ``s`` is stored in *ascending* order, so ``s[0] = s_min`` and
``U[:, 0] = u_min``, the direction of smallest variance (the universal adversarial direction, R4).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .validation import as_float_array, check_data, check_eps, check_points, check_rng

_LOG_2PI = float(np.log(2.0 * np.pi))


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


class LinearFlow:
    """A Gaussian written as a flow: ``x = A z + b``, ``z ~ N(0, I)``.

    Build it with ``LinearFlow(A, b)``, :meth:`from_gaussian` (mean and covariance) or :meth:`fit`
    (maximum likelihood). All arrays it exposes are read-only.

    Attributes
    ----------
    A, b : the flow's matrix ``(d, d)`` and offset ``(d,)``.
    mean, cov, precision : ``mu = b``, ``Sigma = A A^T``, ``P = Sigma^{-1}``.
    eigvals, eigvecs : ``Sigma = eigvecs @ diag(eigvals) @ eigvecs.T`` with ``eigvals`` ascending.
    dim : ``d``.
    """

    __slots__ = ("_A", "_b", "_s", "_U", "_cov", "_prec", "_logdet", "_frozen")

    def __init__(self, A: np.ndarray, b: np.ndarray) -> None:
        A = as_float_array("A", A, ndim=(2,))
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be square, got shape {A.shape}")
        d = A.shape[0]
        b = as_float_array("b", b, ndim=(1,))
        if b.shape != (d,):
            raise ValueError(f"b must have shape ({d},) to match A, got {b.shape}")
        W, sv, _ = scipy.linalg.svd(A)
        if sv[-1] <= sv[0] * d * np.finfo(np.float64).eps or sv[-1] == 0.0:
            raise ValueError(
                f"A is singular (smallest singular value {sv[-1]:.3g}, largest {sv[0]:.3g}): "
                "a flow needs an invertible A"
            )
        order = np.argsort(sv**2, kind="stable")
        self._set(A, b, (sv**2)[order], W[:, order])

    def _set(self, A: np.ndarray, b: np.ndarray, s: np.ndarray, U: np.ndarray) -> None:
        object.__setattr__(self, "_frozen", False)
        self._A = _readonly(A)
        self._b = _readonly(b)
        self._s = _readonly(s)
        self._U = _readonly(U)
        cov = (U * s) @ U.T
        self._cov = _readonly(0.5 * (cov + cov.T))
        prec = (U / s) @ U.T
        self._prec = _readonly(0.5 * (prec + prec.T))
        self._logdet = float(np.sum(np.log(s)))
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("LinearFlow is immutable")
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_gaussian(cls, mean: np.ndarray, cov: np.ndarray) -> LinearFlow:
        """The flow of ``N(mean, cov)``: ``A = U diag(sqrt(s)) U^T`` (the symmetric square root), ``b = mean``.

        ``cov`` must be symmetric (to 1e-10 relative) and positive definite (smallest eigenvalue above
        ``d * machine-eps * largest``).
        """
        mean = as_float_array("mean", mean, ndim=(1,))
        cov = as_float_array("cov", cov, ndim=(2,))
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ValueError(f"cov must have shape ({d}, {d}) to match mean, got {cov.shape}")
        scale = float(np.max(np.abs(cov)))
        if np.max(np.abs(cov - cov.T)) > 1e-10 * max(scale, np.finfo(np.float64).tiny):
            raise ValueError("cov must be symmetric")
        cov = 0.5 * (cov + cov.T)
        s, U = scipy.linalg.eigh(cov)
        if s[0] <= s[-1] * d * np.finfo(np.float64).eps or s[0] <= 0.0:
            raise ValueError(
                f"cov must be positive definite (smallest eigenvalue {s[0]:.3g}, largest {s[-1]:.3g})"
            )
        flow = cls.__new__(cls)
        flow._set((U * np.sqrt(s)) @ U.T, mean, s, U)
        return flow

    @classmethod
    def fit(cls, X: np.ndarray, reg: float = 0.0) -> LinearFlow:
        """Maximum-likelihood fit: sample mean and biased covariance ``(X - m)^T (X - m) / n + reg I``.

        Raises ``ValueError`` when that covariance is singular (e.g. fewer samples than dimensions, or a
        constant pixel): pass ``reg > 0`` then.
        """
        reg = check_eps(reg, "reg")
        _, m, cov = check_data(X, reg)
        return cls.from_gaussian(m, cov)

    # ------------------------------------------------------------------ properties
    @property
    def A(self) -> np.ndarray:
        return self._A

    @property
    def b(self) -> np.ndarray:
        return self._b

    @property
    def mean(self) -> np.ndarray:
        return self._b

    @property
    def cov(self) -> np.ndarray:
        return self._cov

    @property
    def precision(self) -> np.ndarray:
        return self._prec

    @property
    def eigvals(self) -> np.ndarray:
        """Eigenvalues of ``cov``, ascending: ``eigvals[0] = s_min``."""
        return self._s

    @property
    def eigvecs(self) -> np.ndarray:
        """Orthonormal eigenvectors of ``cov`` as columns, matching :attr:`eigvals`."""
        return self._U

    @property
    def dim(self) -> int:
        return int(self._b.shape[0])

    @property
    def logdet_cov(self) -> float:
        """``log det Sigma = sum(log s)``."""
        return self._logdet

    # ------------------------------------------------------------------ densities
    def coords(self, x: np.ndarray) -> np.ndarray:
        """Eigen-coordinates ``w = U^T (x - mu)`` of a point or batch (same leading shape as ``x``)."""
        V, single = check_points("x", x, self.dim)
        W = (V - self._b) @ self._U
        return W[0] if single else W

    def mahalanobis_sq(self, x: np.ndarray) -> np.ndarray | float:
        """``(x - mu)^T P (x - mu)``, computed in the eigenbasis."""
        V, single = check_points("x", x, self.dim)
        W = (V - self._b) @ self._U
        q = np.sum(W * W / self._s, axis=1)
        return float(q[0]) if single else q

    def nll(self, x: np.ndarray) -> np.ndarray | float:
        """Negative log-likelihood in nats; a float for ``x`` of shape ``(d,)``, an array for ``(n, d)``."""
        q = self.mahalanobis_sq(x)
        return 0.5 * q + 0.5 * self._logdet + 0.5 * self.dim * _LOG_2PI

    def log_prob(self, x: np.ndarray) -> np.ndarray | float:
        """Log-density in nats (``-nll``)."""
        return -self.nll(x)

    # ------------------------------------------------------------------ flow maps
    def forward(self, z: np.ndarray) -> np.ndarray:
        """Latent to data: ``x = A z + b``."""
        Z, single = check_points("z", z, self.dim)
        X = Z @ self._A.T + self._b
        return X[0] if single else X

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Data to latent: ``z = A^{-1} (x - b)`` (a linear solve, not an explicit inverse)."""
        V, single = check_points("x", x, self.dim)
        Z = scipy.linalg.solve(self._A, (V - self._b).T).T
        return Z[0] if single else Z

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` samples ``A z + b`` of shape ``(n, d)``; ``rng`` is a Generator or a seed."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer):
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        gen = check_rng(rng)
        Z = gen.standard_normal((int(n), self.dim))
        return Z @ self._A.T + self._b

    def __repr__(self) -> str:
        return (
            f"LinearFlow(dim={self.dim}, s_min={self._s[0]:.4g}, s_max={self._s[-1]:.4g}, "
            f"cond={self._s[-1] / self._s[0]:.3g})"
        )


def check_flow(flow: object, name: str = "flow") -> LinearFlow:
    """``flow`` itself if it is a :class:`LinearFlow`, else ``TypeError`` naming the argument."""
    if not isinstance(flow, LinearFlow):
        raise TypeError(f"{name} must be a LinearFlow (linflow.LinearFlow), got {type(flow).__name__}")
    return flow
