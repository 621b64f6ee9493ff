"""deepcheck LinearFlow against linflow.LinearFlow: densities, gradients, conversion, sampling, bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from scipy.stats import multivariate_normal

from deepcheck.flows import LinearFlow
from linflow import LinearFlow as NumpyLinearFlow

from .strategies import flows, random_flow


def _points(flow, n, seed):
    return flow.sample(n, np.random.default_rng(seed))


@settings(max_examples=25)
@given(flows(max_dim=10, max_log10_cond=4.0))
def test_log_prob_is_minus_linflow_nll(flow):
    model = LinearFlow.from_linflow(flow)
    X = _points(flow, 6, 0)
    lp = model.log_prob(torch.from_numpy(X)).detach().numpy()
    ref = -flow.nll(X)
    np.testing.assert_allclose(lp, ref, rtol=1e-10, atol=1e-10 * (1 + np.abs(ref).max()))
    # and against scipy, which knows nothing about either class
    np.testing.assert_allclose(lp, multivariate_normal(flow.mean, flow.cov).logpdf(X), rtol=1e-8, atol=1e-8)


@settings(max_examples=25)
@given(flows(max_dim=10, max_log10_cond=4.0))
def test_grad_x_is_minus_precision_times_offset(flow):
    model = LinearFlow.from_linflow(flow)
    X = _points(flow, 4, 1)
    x = torch.from_numpy(X).requires_grad_(True)
    (g,) = torch.autograd.grad(model.log_prob(x).sum(), x)
    ref = -(X - flow.mean) @ flow.precision
    np.testing.assert_allclose(g.numpy(), ref, rtol=1e-8, atol=1e-8 * (1 + np.abs(ref).max()))


def test_round_trip_from_and_to_linflow_and_inverse():
    rng = np.random.default_rng(3)
    flow = NumpyLinearFlow(rng.standard_normal((5, 5)) + 3 * np.eye(5), rng.standard_normal(5))
    model = LinearFlow.from_linflow(flow)
    back = model.to_linflow()
    np.testing.assert_array_equal(back.A, flow.A)
    np.testing.assert_array_equal(back.b, flow.b)
    X = torch.from_numpy(_points(flow, 7, 2))
    z, logdet = model(X)
    np.testing.assert_allclose(z.detach().numpy(), flow.inverse(X.numpy()), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logdet.detach().numpy(), -np.linalg.slogdet(flow.A)[1] * np.ones(7), rtol=1e-12)
    torch.testing.assert_close(model.inverse(z), X, rtol=1e-12, atol=1e-12)
    f32 = LinearFlow.from_linflow(flow, dtype=torch.float32)
    assert f32.A.dtype == torch.float32 and f32.b.dtype == torch.float32


def test_bpd_is_nats_per_dim_over_ln2_and_with_bins():
    flow = NumpyLinearFlow(np.diag([0.5, 2.0, 1.0]), np.array([0.1, -0.2, 0.3]))
    x = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 2.0]])
    model = LinearFlow.from_linflow(flow)
    # by hand: N(b, diag(0.25, 4, 1)) as a product of 1-D Gaussians
    sd = np.array([0.5, 2.0, 1.0])
    nll = np.sum(0.5 * ((x - flow.b) / sd) ** 2 + np.log(sd) + 0.5 * math.log(2 * math.pi), axis=1)
    np.testing.assert_allclose(model.bpd(torch.from_numpy(x)).detach().numpy(), nll / (3 * math.log(2)), rtol=1e-12)
    binned = LinearFlow.from_linflow(flow, n_bins=256)
    np.testing.assert_allclose(binned.bpd(torch.from_numpy(x)).detach().numpy(),
                               (nll + 3 * math.log(256)) / (3 * math.log(2)), rtol=1e-12)


def test_sample_is_seeded_and_has_the_model_moments():
    flow = random_flow(3, 10.0, np.random.default_rng(4))
    model = LinearFlow.from_linflow(flow)
    a = model.sample(20000, generator=torch.Generator().manual_seed(0))
    b = model.sample(20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (20000, 3) and not a.requires_grad
    # moments within ~5 standard errors
    np.testing.assert_allclose(a.mean(0).numpy(), flow.mean, atol=5 * np.sqrt(flow.eigvals.max() / 20000))
    np.testing.assert_allclose(np.cov(a.numpy().T), flow.cov, atol=0.05 * np.abs(flow.cov).max())
    t0 = model.sample(5, temperature=0.0, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(t0.numpy(), np.tile(flow.mean, (5, 1)), atol=1e-14)


def test_trainable_parameters_and_state_dict():
    model = LinearFlow(4)
    assert {n for n, _ in model.named_parameters()} == {"A", "b"}
    x = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (-model.log_prob(x).mean()).backward()
    assert model.A.grad is not None and model.b.grad is not None
    other = LinearFlow(4)
    other.load_state_dict(model.state_dict())
    assert other.config == {"model": "linear", "shape": [4], "n_bins": None}


def test_bad_input_names_the_argument():
    model = LinearFlow(3)
    with pytest.raises(ValueError, match="x must have shape"):
        model.log_prob(torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must have shape"):
        model.log_prob(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        model.log_prob(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="x must be a floating"):
        model.log_prob(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="z must be latents"):
        model.inverse(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="dim must be >= 1"):
        LinearFlow(0)
    with pytest.raises(TypeError, match="flow must be a linflow.LinearFlow"):
        LinearFlow.from_linflow(np.eye(3))
    with pytest.raises(ValueError, match="n_bins"):
        LinearFlow(3, n_bins=1)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=-1.0)
    with pytest.raises(ValueError, match="n must be"):
        model.sample(0)
