"""LinearFlow: densities against scipy, flow maps, constructors, immutability and bad input."""

import numpy as np
import pytest
from hypothesis import given
from scipy.stats import multivariate_normal

from linflow import LinearFlow

from .strategies import flows, random_flow


@given(flows(max_dim=12, max_log10_cond=6.0))
def test_nll_matches_scipy(flow):
    rng = np.random.default_rng(0)
    X = flow.sample(5, rng)
    ref = -multivariate_normal(flow.mean, flow.cov, allow_singular=False).logpdf(X)
    np.testing.assert_allclose(flow.nll(X), ref, rtol=1e-8, atol=1e-8)
    assert flow.nll(X[0]) == pytest.approx(ref[0], rel=1e-8, abs=1e-8)
    np.testing.assert_allclose(flow.log_prob(X), -flow.nll(X))


@given(flows(max_dim=10, max_log10_cond=4.0))
def test_forward_inverse_roundtrip_and_moments(flow):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((7, flow.dim))
    np.testing.assert_allclose(flow.inverse(flow.forward(z)), z, atol=1e-8 * (1 + np.abs(z).max()))
    np.testing.assert_allclose(flow.A @ flow.A.T, flow.cov, rtol=1e-9, atol=1e-12 * np.abs(flow.cov).max())
    np.testing.assert_allclose(flow.precision @ flow.cov, np.eye(flow.dim), atol=1e-6)
    assert np.all(np.diff(flow.eigvals) >= 0)


def test_from_A_b_uses_svd_and_matches_gaussian():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((4, 4))
    b = rng.standard_normal(4)
    f = LinearFlow(A, b)
    g = LinearFlow.from_gaussian(b, A @ A.T)
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(f.nll(x), g.nll(x), rtol=1e-10)
    np.testing.assert_allclose(f.eigvals, np.linalg.eigvalsh(A @ A.T), rtol=1e-10)


def test_fit_is_maximum_likelihood():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 3)) @ np.diag([3.0, 1.0, 0.2])
    f = LinearFlow.fit(X)
    np.testing.assert_allclose(f.mean, X.mean(0))
    np.testing.assert_allclose(f.cov, np.cov(X.T, bias=True), rtol=1e-12)
    # The MLE has a lower mean NLL than any perturbed Gaussian.
    for scale in (0.9, 1.1):
        g = LinearFlow.from_gaussian(f.mean + 0.01, f.cov * scale)
        assert np.mean(f.nll(X)) < np.mean(g.nll(X))


def test_fit_singular_needs_reg():
    X = np.random.default_rng(4).standard_normal((3, 5))
    with pytest.raises(ValueError, match="reg"):
        LinearFlow.fit(X)
    f = LinearFlow.fit(X, reg=0.1)
    assert f.eigvals[0] == pytest.approx(0.1, rel=1e-9)


def test_dimension_one():
    f = LinearFlow.from_gaussian(np.array([1.0]), np.array([[4.0]]))
    assert f.nll(np.array([1.0])) == pytest.approx(0.5 * np.log(4.0) + 0.5 * np.log(2 * np.pi))
    assert f.sample(3, 0).shape == (3, 1)


def test_immutable_and_readonly():
    f = random_flow(3, 10.0, np.random.default_rng(5))
    with pytest.raises(AttributeError):
        f.foo = 1
    with pytest.raises(ValueError):
        f.cov[0, 0] = 1.0


def test_sampling_is_seeded():
    f = random_flow(3, 10.0, np.random.default_rng(6))
    np.testing.assert_array_equal(f.sample(4, 7), f.sample(4, 7))


@pytest.mark.parametrize(
    ("call", "exc", "word"),
    [
        (lambda: LinearFlow(np.ones((2, 2)), np.zeros(2)), ValueError, "singular"),
        (lambda: LinearFlow(np.eye(2), np.zeros(3)), ValueError, "b"),
        (lambda: LinearFlow(np.eye(2)[:1], np.zeros(2)), ValueError, "square"),
        (lambda: LinearFlow(np.array([[np.nan, 0], [0, 1]]), np.zeros(2)), ValueError, "A"),
        (lambda: LinearFlow.from_gaussian(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]])), ValueError,
         "positive definite"),
        (lambda: LinearFlow.from_gaussian(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]])), ValueError,
         "symmetric"),
        (lambda: LinearFlow.from_gaussian(np.zeros(2), np.eye(3)), ValueError, "cov"),
        (lambda: LinearFlow.from_gaussian(np.array(["a", "b"]), np.eye(2)), TypeError, "mean"),
        (lambda: LinearFlow.fit(np.ones((5, 2)), reg=-1.0), ValueError, "reg"),
        (lambda: LinearFlow.from_gaussian(np.zeros(2), np.eye(2)).nll(np.zeros(3)), ValueError, "x"),
        (lambda: LinearFlow.from_gaussian(np.zeros(2), np.eye(2)).sample(-1), ValueError, "n"),
    ],
)
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
