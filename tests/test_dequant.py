"""deepcheck.dequant: the uniformly dequantised bits/dim against closed forms for a Gaussian density."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm as normal
from torch import nn

from deepcheck.data import ImageData
from deepcheck.dequant import dequantized_bpd
from deepcheck.flows.base import bits_per_dim


class DiagGaussian(nn.Module):
    """p(y) = prod_j N(y_j; mu, sigma^2) on images: a density with closed-form bin probabilities."""

    def __init__(self, shape: tuple[int, int, int], mu: float, sigma: float, n_bins: int) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu, dtype=torch.float64))
        self.sigma = sigma
        self.n_bins = n_bins
        self.dim = int(np.prod(shape))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mu) / self.sigma
        return (-0.5 * z**2 - 0.5 * math.log(2 * math.pi) - math.log(self.sigma)).reshape(len(x), -1).sum(1)

    def bpd(self, x: torch.Tensor) -> torch.Tensor:
        return bits_per_dim(self.log_prob(x), self.dim, self.n_bins)


def _data(n: int = 5, shape: tuple[int, int, int] = (1, 2, 3), n_bins: int = 16, seed: int = 1) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, n_bins, (n, *shape), generator=g, dtype=torch.uint8)
    return ImageData(levels, torch.full((n,), -1, dtype=torch.long), n_bins, "test")


def _expected_dequantized(levels: np.ndarray, mu: float, sigma: float, n_bins: int) -> np.ndarray:
    """E_u[bpd((k+u)/n)] in closed form: E[(y - mu)^2] = ((k + 1/2)/n - mu)^2 + 1/(12 n^2)."""
    m2 = ((levels + 0.5) / n_bins - mu) ** 2 + 1.0 / (12 * n_bins**2)
    nats = 0.5 * m2 / sigma**2 + 0.5 * math.log(2 * math.pi) + math.log(sigma) + math.log(n_bins)
    return nats.reshape(len(levels), -1).mean(1) / math.log(2)


def test_dequantized_mean_matches_closed_form_expectation() -> None:
    data, mu, sigma = _data(), 0.4, 0.3
    model = DiagGaussian(data.shape, mu, sigma, data.n_bins)
    r = dequantized_bpd(model, data, k=4000, seed=3)
    expected = _expected_dequantized(data.levels.numpy().astype(np.float64), mu, sigma, data.n_bins)
    se = r.draws.std(axis=0, ddof=1) / math.sqrt(r.k)
    assert np.all(np.abs(r.dequantized - expected) < 5 * se + 1e-12)
    # the mid-bin value lacks the 1/(12 n^2) variance term: strictly below the dequantised expectation
    mid = _expected_dequantized(data.levels.numpy().astype(np.float64), mu, sigma, data.n_bins) - (
        0.5 / (12 * data.n_bins**2) / sigma**2 / math.log(2))
    np.testing.assert_allclose(r.mid_bin, mid, rtol=1e-12)


def test_bound_lies_between_exact_discrete_bpd_and_the_dequantised_mean() -> None:
    data, mu, sigma = _data(n=4, n_bins=8), 0.55, 0.2
    model = DiagGaussian(data.shape, mu, sigma, data.n_bins)
    r = dequantized_bpd(model, data, k=2000, seed=0)
    k = data.levels.numpy().astype(np.float64)
    p_bin = normal.cdf((k + 1) / 8, mu, sigma) - normal.cdf(k / 8, mu, sigma)
    exact = -np.log2(p_bin).reshape(len(k), -1).sum(1) / data.dim
    assert np.all(r.bound <= r.dequantized + 1e-12)  # Jensen, for the same draws
    np.testing.assert_allclose(r.bound, exact, rtol=2e-3)  # importance-weighted estimate converges to P(k)
    assert np.all(r.dequantized > exact)


def test_same_seed_same_numbers_and_mode_restored() -> None:
    data = _data()
    model = DiagGaussian(data.shape, 0.5, 0.25, data.n_bins).train()
    a = dequantized_bpd(model, data, k=3, seed=7)
    b = dequantized_bpd(model, data, k=3, seed=7)
    c = dequantized_bpd(model, data, k=3, seed=8)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert not np.array_equal(a.draws, c.draws)
    assert model.training
    s = a.summary()
    assert s["k"] == 3 and s["n"] == len(data) and s["dequantized"] == pytest.approx(a.dequantized.mean())


@pytest.mark.parametrize(("kw", "err", "word"), [
    ({"k": 0}, ValueError, "k"), ({"k": 1.5}, ValueError, "k"), ({"seed": "a"}, TypeError, "seed"),
    ({"batch_size": 0}, ValueError, "batch_size")])
def test_bad_arguments_are_named(kw: dict, err: type, word: str) -> None:
    data = _data()
    model = DiagGaussian(data.shape, 0.5, 0.25, data.n_bins)
    with pytest.raises(err, match=word):
        dequantized_bpd(model, data, **kw)


def test_rejects_tensors_and_mismatched_levels() -> None:
    data = _data(n_bins=16)
    with pytest.raises(TypeError, match="data"):
        dequantized_bpd(DiagGaussian(data.shape, 0.5, 0.2, 16), data.pixels())
    with pytest.raises(ValueError, match="n_bins"):
        dequantized_bpd(DiagGaussian(data.shape, 0.5, 0.2, 256), data)
