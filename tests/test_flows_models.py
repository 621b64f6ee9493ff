"""Whole RealNVP and Glow (tiny configs) and the factory: log-det == slogdet of the autograd Jacobian of
x -> all latents (float64, randomised weights) on 1x4x4, 1x8x8 and 3x8x8 images; exact inverse with split
latents; log_prob against an independent N(0, 1) log-density; gradients in x by finite differences;
ActNorm flags through a checkpoint; batch independence; sampling; config round trip; clear shape errors."""

import io
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch.autograd.functional import jacobian

from deepcheck.flows import CONFIGS, Glow, LinearFlow, RealNVP, build, build_from_config
from deepcheck.flows.layers import ActNorm
from tests.models import perturb_parameters


def _images(shape, n, seed):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _random_flow(model, shape, seed=0, scale=0.1, **overrides):
    """A tiny float64 flow with every parameter perturbed and its ActNorms initialised on data."""
    net = build(model, "tiny", shape, seed=seed, **overrides).double()
    perturb_parameters(net, scale=scale, seed=seed)  # larger makes the 3-channel Jacobians ill-conditioned
    with torch.no_grad():
        net(_images(shape, 16, seed + 100))  # data-dependent ActNorm init
    perturb_parameters(net, scale=0.02, seed=seed + 1)
    return net


def _flat_latents(net, x):
    z, _ = net(x)
    return torch.cat([t.reshape(t.shape[0], -1) for t in ([z] if isinstance(z, torch.Tensor) else z)], dim=1)


MODELS_SHAPES = [(m, s, {}) for m in ("glow", "realnvp") for s in ((1, 4, 4), (1, 8, 8), (3, 8, 8))]
MODELS_SHAPES += [  # other depths and non-square images
    ("glow", (2, 4, 8), {"levels": 1, "learn_top": False}),
    ("glow", (1, 16, 8), {"levels": 3, "steps": 1}),
    ("realnvp", (1, 8, 4), {"scales": 3}),
    ("realnvp", (3, 4, 6), {"scales": 1, "blocks": 0}),
]


@pytest.mark.parametrize("model,shape,overrides", MODELS_SHAPES,
                         ids=[f"{m}-{'x'.join(map(str, s))}{'-' if o else ''}{'-'.join(map(str, o.values()))}"
                              for m, s, o in MODELS_SHAPES])
def test_logdet_is_slogdet_of_the_jacobian_and_log_prob_follows(model, shape, overrides):
    net = _random_flow(model, shape, seed=len(shape) + shape[0], **overrides)
    x = _images(shape, 1, 1)
    D = math.prod(shape)
    J = jacobian(lambda v: _flat_latents(net, v.reshape(1, *shape))[0], x.reshape(-1), vectorize=True)
    assert J.shape == (D, D)
    sign, ref = torch.linalg.slogdet(J)
    assert sign != 0
    z, logdet = net(x)
    assert logdet.item() == pytest.approx(ref.item(), abs=1e-9 * (1 + abs(ref.item())))
    assert abs(ref.item()) > 1.0  # a non-trivial map, not the identity
    # log p(x) = sum log N(z; 0, 1) + log|det J|, with the normal density from scipy
    flat = _flat_latents(net, x).detach().numpy()
    expected = norm.logpdf(flat).sum() + ref.item()
    assert net.log_prob(x).item() == pytest.approx(expected, abs=1e-8 * (1 + abs(expected)))
    expected_bpd = (-expected + D * math.log(256)) / (D * math.log(2))
    assert net.bpd(x).item() == pytest.approx(expected_bpd, rel=1e-10)


@pytest.mark.parametrize("model", ["glow", "realnvp"])
def test_inverse_of_forward_is_exact_with_split_latents(model):
    shape = (3, 8, 8)
    net = _random_flow(model, shape, seed=3)
    x = _images(shape, 5, 2)
    z, _ = net(x)
    assert isinstance(z, list) and [tuple(t.shape[1:]) for t in z] == net.latent_shapes
    assert sum(t[0].numel() for t in z) == math.prod(shape)
    torch.testing.assert_close(net.inverse(z), x, rtol=1e-10, atol=1e-10)
    # and forward(inverse(z)) == z: inverse is a true inverse, not a cached copy
    z2 = [t.detach() + 0.1 * torch.randn(t.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
          for i, t in enumerate(z)]
    for a, b in zip(net(net.inverse(z2))[0], z2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    # a latent that is not kept changes the reconstruction: every latent is used
    z3 = [t.clone() for t in z]
    z3[0] = z3[0] + 1.0
    assert (net.inverse(z3) - x).abs().max() > 1e-3


@pytest.mark.parametrize("model", ["glow", "realnvp"])
def test_log_prob_is_differentiable_in_x(model):
    shape = (1, 4, 4)
    net = _random_flow(model, shape, seed=5)
    x = _images(shape, 2, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: net.log_prob(v), (x,), eps=1e-6, atol=1e-5, rtol=1e-4)
    (g,) = torch.autograd.grad(net.log_prob(x).sum(), x)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().max() > 0


@pytest.mark.parametrize("model", ["glow", "realnvp"])
def test_no_batchnorm_and_log_prob_does_not_depend_on_the_batch(model):
    shape = (1, 8, 8)
    net = _random_flow(model, shape, seed=7)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    x = _images(shape, 6, 4)
    net.train()
    together = net.log_prob(x)
    alone = torch.cat([net.log_prob(x[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-10)


def test_actnorm_flags_survive_a_checkpoint_and_are_not_reinitialised():
    shape = (1, 8, 8)
    net = build("glow", "tiny", shape, seed=1).double()
    actnorms = [m for m in net.modules() if isinstance(m, ActNorm)]
    assert actnorms and not any(bool(a.initialized) for a in actnorms)
    with torch.no_grad():
        net(_images(shape, 16, 0))  # first batch initialises every ActNorm once
    assert all(bool(a.initialized) for a in actnorms)
    perturb_parameters(net, scale=0.1, seed=2)  # as if trained
    buf = io.BytesIO()
    torch.save({"config": net.config, "state": net.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    loaded = build_from_config(ckpt["config"]).double()
    loaded.load_state_dict(ckpt["state"])
    assert all(bool(m.initialized) for m in loaded.modules() if isinstance(m, ActNorm))
    x = _images(shape, 4, 9) * 0.1  # a batch whose statistics differ: a re-init would change the output
    torch.testing.assert_close(loaded.log_prob(x), net.log_prob(x), rtol=0, atol=0)
    for (name, p), (_, q) in zip(loaded.state_dict().items(), net.state_dict().items()):
        assert torch.equal(p, q), name


def test_build_from_config_rebuilds_the_same_model_and_seed_matters():
    for model in ("glow", "realnvp"):
        net = build(model, "tiny", (3, 8, 8), seed=4, hidden=8)
        assert net.config["model"] == model and net.config["hidden"] == 8 and net.config["preset"] == "tiny"
        again = build_from_config(net.config)
        assert again.config == net.config
        for (k, a), (_, b) in zip(net.state_dict().items(), again.state_dict().items()):
            assert torch.equal(a, b), k
        other = build(model, "tiny", (3, 8, 8), seed=5, hidden=8)
        assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    lin = build("linear", "tiny", (4,), n_bins=None)
    assert isinstance(lin, LinearFlow) and build_from_config(lin.config).config == lin.config
    state = torch.random.get_rng_state()
    build("glow", "tiny", (1, 8, 8), seed=0)
    assert torch.equal(state, torch.random.get_rng_state()), "build must not touch the global RNG"


def test_named_configs_have_the_published_sizes():
    assert CONFIGS["glow"]["paper"] == {"levels": 3, "steps": 32, "hidden": 512}
    g = build("glow", "small", (1, 28, 28))
    assert isinstance(g, Glow) and len(g.flows) == 2 and len(g.flows[0].layers) == 4
    r = build("realnvp", "small", (1, 28, 28))
    assert isinstance(r, RealNVP) and r.latent_shapes == [(2, 14, 14), (2, 14, 14)]
    n_params = sum(p.numel() for p in build("glow", "paper", (3, 32, 32)).parameters())
    assert 40e6 < n_params < 50e6  # Glow CIFAR-10 with a 512-wide 3-layer conditioner (~44 M parameters)


@pytest.mark.parametrize("model", ["glow", "realnvp"])
def test_sample_is_seeded_and_temperature_scales_latents(model):
    net = _random_flow(model, (3, 8, 8), seed=11, scale=0.01)  # random weights blow up far from the data
    a = net.sample(3, generator=torch.Generator().manual_seed(0))
    b = net.sample(3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 3, 8, 8) and a.dtype == torch.float64 and not a.requires_grad
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # temperature T: the latents of a sample are T times those drawn at T = 1 with the same generator
    c = net.sample(3, temperature=0.5, generator=torch.Generator().manual_seed(0))
    for za, zc in zip(net(a)[0], net(c)[0]):
        torch.testing.assert_close(zc, 0.5 * za, rtol=1e-8, atol=1e-8)


def test_bpd_known_answer_for_a_gaussian_with_bins():
    # N(0, sigma^2 I) on D = 3 dims, n_bins = 4: at x = 0, -log p = D/2 log(2 pi sigma^2)
    sigma, D = 0.25, 3
    lin = build("linear", "tiny", (D,), n_bins=4)
    with torch.no_grad():
        lin.A.copy_(sigma * torch.eye(D, dtype=torch.float64))
    x = torch.zeros(1, D, dtype=torch.float64)
    nll = 0.5 * D * np.log(2 * np.pi * sigma**2)
    assert lin.bpd(x).item() == pytest.approx((nll + D * np.log(4)) / (D * np.log(2)), rel=1e-12)


def test_shape_and_name_errors_are_clear():
    with pytest.raises(ValueError, match="divisible by 8"):
        build("glow", "paper", (1, 28, 28))
    with pytest.raises(ValueError, match="divisible by 4"):
        build("glow", "tiny", (1, 6, 8))
    with pytest.raises(ValueError, match="1x1 image"):
        build("realnvp", "tiny", (1, 2, 2))
    with pytest.raises(ValueError, match="model must be one of"):
        build("maf", "tiny", (1, 8, 8))
    with pytest.raises(ValueError, match="config must be one of"):
        build("glow", "huge", (1, 8, 8))
    with pytest.raises(ValueError, match=r"shape must be \(d,\)"):
        build("linear", "tiny", (1, 8, 8))
    with pytest.raises(ValueError, match=r"shape must be \(C, H, W\)"):
        build("glow", "tiny", (8, 8))
    net = build("glow", "tiny", (1, 8, 8))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 8, 8\)"):
        net.log_prob(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="z must be latents"):
        net.inverse([torch.zeros(1, 2, 4, 4)])
    with pytest.raises(TypeError, match="x has dtype torch.float64 but the model's parameters are torch.float32"):
        net.log_prob(torch.zeros(2, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="levels must be a positive int"):
        Glow((1, 8, 8), levels=0)
    with pytest.raises(TypeError, match="unexpected"):
        build("glow", "tiny", (1, 8, 8), depth=3)
