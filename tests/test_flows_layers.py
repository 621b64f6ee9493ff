"""Every invertible layer of deepcheck.flows.layers: log-det == slogdet of the autograd Jacobian (float64,
randomised weights), exact inverse, ActNorm's data-dependent init and its saved flag, zero-initialised
conditioners, and clear errors."""

import io

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from deepcheck.flows.layers import (
    ActNorm,
    AffineCoupling,
    Chain,
    InvConv1x1,
    LearnedPrior,
    Split,
    Squeeze,
    check_image_shape,
)
from tests.models import perturb_parameters


class _SplitAsBijection(torch.nn.Module):
    """``x -> cat(h, eps)`` so that a Split can be tested as one bijection of the same shape."""

    def __init__(self, split):
        super().__init__()
        self.split = split

    def forward(self, x):
        h, eps, logdet = self.split(x)
        return torch.cat([h, eps], dim=1), logdet

    def inverse(self, y):
        k = self.split.n_keep
        return self.split.inverse(y[:, :k], y[:, k:])


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    """Layers initialise their weights from torch's global RNG: seed it per test (and restore it after), so
    that each test sees the same layers whatever ran before it. Unseeded, the order-dependent initial weights
    occasionally gave a layer with a near-zero log-det (1e-9 for nvp-channel-1 on 3x4x4), failing the
    non-triviality precondition below although the log-det itself matched autograd to 2e-16."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def _x(shape, seed, n=1):
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _jacobian_logdet(layer, x):
    """log|det| of the Jacobian of ``layer`` at the single sample ``x`` (1, C, H, W), by autograd."""

    def f(v):
        y, _ = layer(v.reshape(x.shape))
        return y.reshape(-1)

    J = jacobian(f, x.reshape(-1), vectorize=True)
    assert J.shape[0] == J.shape[1]
    sign, logabs = torch.linalg.slogdet(J)
    assert sign != 0
    return logabs.item()


def _prepare(layer, shape, seed):
    layer = layer.double()
    perturb_parameters(layer, scale=0.3, seed=seed)
    for m in layer.modules():  # initialise ActNorms on a batch, then perturb again so init is not special
        if isinstance(m, ActNorm):
            m(_x(shape, seed + 1, n=16) * 2.0 + 0.3)
            perturb_parameters(m, scale=0.3, seed=seed + 2)
    return layer


CASES = [
    ("actnorm", lambda c: ActNorm(c)),
    ("invconv", lambda c: InvConv1x1(c)),
    ("glow-coupling-0", lambda c: AffineCoupling(c, 8, mask="channel", parity=0, scale="sigmoid", net="glow")),
    ("glow-coupling-1", lambda c: AffineCoupling(c, 8, mask="channel", parity=1, scale="sigmoid", net="glow")),
    ("nvp-channel-0", lambda c: AffineCoupling(c, 8, mask="channel", parity=0, scale="tanh", net="resnet")),
    ("nvp-channel-1", lambda c: AffineCoupling(c, 8, mask="channel", parity=1, scale="tanh", net="resnet",
                                               blocks=2)),
    ("nvp-checker-0", lambda c: AffineCoupling(c, 8, mask="checkerboard", parity=0, scale="tanh", net="resnet")),
    ("nvp-checker-1", lambda c: AffineCoupling(c, 8, mask="checkerboard", parity=1, scale="tanh", net="resnet")),
    ("checker-sigmoid", lambda c: AffineCoupling(c, 8, mask="checkerboard", parity=1, scale="sigmoid")),
    ("squeeze", lambda c: Squeeze()),
    ("split-learned", lambda c: _SplitAsBijection(Split(c, learned_prior=True))),
    ("split-plain", lambda c: _SplitAsBijection(Split(c, learned_prior=False))),
    ("chain", lambda c: Chain(ActNorm(c), InvConv1x1(c), AffineCoupling(c, 8))),
]
SHAPES = [(2, 4, 4), (3, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_layer_logdet_matches_autograd_slogdet_and_inverse_is_exact(name, make, shape):
    layer = _prepare(make(shape[0]), shape, seed=len(name))
    x = _x(shape, 7)
    y, logdet = layer(x)
    assert logdet.shape == (1,)
    ref = _jacobian_logdet(layer, x)
    assert logdet.item() == pytest.approx(ref, abs=1e-9 * (1 + abs(ref)))
    if name not in ("squeeze", "split-plain"):  # permutations: their log-det is legitimately 0
        assert abs(ref) > 1e-3, "randomised layer should have a non-trivial Jacobian"
    xb = _x(shape, 8, n=3)
    yb, ldb = layer(xb)
    torch.testing.assert_close(layer.inverse(yb), xb, rtol=1e-10, atol=1e-10)
    assert ldb.shape == (3,) and yb.shape[0] == 3 and yb[0].numel() == xb[0].numel()


def test_checkerboard_coupling_on_one_channel_8x8():
    layer = _prepare(AffineCoupling(1, 8, mask="checkerboard", parity=0, scale="tanh", net="resnet"), (1, 8, 8), 3)
    x = _x((1, 8, 8), 9)
    _, logdet = layer(x)
    assert logdet.item() == pytest.approx(_jacobian_logdet(layer, x), abs=1e-9)
    # the conditioned half passes through unchanged, and exactly the other half is transformed
    y, _ = layer(x)
    m = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 == 0
    torch.testing.assert_close(y[0, 0][m], x[0, 0][m], rtol=0, atol=0)
    assert torch.all(y[0, 0][~m] != x[0, 0][~m])


def test_invconv_logdet_is_hw_log_abs_det_of_its_weight():
    layer = _prepare(InvConv1x1(5), (5, 3, 2), 4)
    w = layer.weight().detach().numpy()
    _, ld = layer(_x((5, 3, 2), 0))
    assert ld.item() == pytest.approx(6 * np.linalg.slogdet(w)[1], abs=1e-10)
    # fresh: a rotation (|det| = 1)
    fresh = InvConv1x1(4).double()
    w = fresh.weight().detach().numpy()
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-6)


def test_actnorm_initialises_once_on_first_batch():
    layer = ActNorm(3).double()
    assert not bool(layer.initialized)
    x = _x((3, 4, 4), 0, n=8) * torch.tensor([1.0, 5.0, 0.2], dtype=torch.float64)[:, None, None] + 2.0
    y, _ = layer(x)
    assert bool(layer.initialized)
    np.testing.assert_allclose(y.mean(dim=(0, 2, 3)).detach().numpy(), 0.0, atol=1e-10)
    np.testing.assert_allclose(y.std(dim=(0, 2, 3), unbiased=False).detach().numpy(), 1.0, atol=1e-5)
    bias, logs = layer.bias.detach().clone(), layer.logs.detach().clone()
    layer(_x((3, 4, 4), 1, n=8) * 10.0)
    torch.testing.assert_close(layer.bias, bias, rtol=0, atol=0)
    torch.testing.assert_close(layer.logs, logs, rtol=0, atol=0)


def test_actnorm_flag_survives_state_dict_save_and_load():
    trained = ActNorm(2).double()
    trained(_x((2, 4, 4), 0, n=4) * 3.0 + 1.0)
    assert "initialized" in trained.state_dict()
    buf = io.BytesIO()
    torch.save(trained.state_dict(), buf)
    buf.seek(0)
    loaded = ActNorm(2).double()
    loaded.load_state_dict(torch.load(buf))
    assert bool(loaded.initialized)
    x = _x((2, 4, 4), 5, n=4)
    torch.testing.assert_close(loaded(x)[0], trained(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(loaded.bias, trained.bias, rtol=0, atol=0)  # no re-initialisation on x
    # .double()/.float() keep the flag a bool
    assert loaded.float().initialized.dtype == torch.bool


def test_fresh_conditioners_are_zero_initialised():
    x = _x((4, 4, 4), 0, n=2)
    glow = AffineCoupling(4, 8, mask="channel", scale="sigmoid", net="glow").double()
    y, ld = glow(x)
    s = torch.sigmoid(torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(y[:, :2], x[:, :2])
    torch.testing.assert_close(y[:, 2:], x[:, 2:] * s)
    torch.testing.assert_close(ld, torch.full((2,), 2 * 16 * torch.log(s).item(), dtype=torch.float64))
    for mask in ("channel", "checkerboard"):
        nvp = AffineCoupling(4, 8, mask=mask, scale="tanh", net="resnet").double()
        y, ld = nvp(x)
        torch.testing.assert_close(y, x, rtol=0, atol=0)
        torch.testing.assert_close(ld, torch.zeros(2, dtype=torch.float64))
    split = Split(4).double()
    h, eps, ld = split(x)
    torch.testing.assert_close(torch.cat([h, eps], 1), x, rtol=0, atol=0)
    prior = LearnedPrior((4, 4, 4)).double()
    torch.testing.assert_close(prior(x)[0], x, rtol=0, atol=0)


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y, _ = Squeeze()(x)
    assert y.shape == (1, 4, 2, 2)
    # channel k holds the (k // 2, k % 2) corner of each 2x2 block
    for k in range(4):
        np.testing.assert_array_equal(y[0, k].numpy(), x[0, 0, k // 2::2, k % 2::2].numpy())


def test_layer_errors_name_the_argument():
    with pytest.raises(ValueError, match="channel-wise coupling needs channels >= 2"):
        AffineCoupling(1, 8, mask="channel")
    with pytest.raises(ValueError, match="mask must be one of"):
        AffineCoupling(2, 8, mask="diagonal")
    with pytest.raises(ValueError, match="scale must be one of"):
        AffineCoupling(2, 8, scale="exp")
    with pytest.raises(ValueError, match="net must be"):
        AffineCoupling(2, 8, net="unet")
    with pytest.raises(ValueError, match="parity must be 0 or 1"):
        AffineCoupling(2, 8, parity=2)
    with pytest.raises(ValueError, match="channels must be >= 1"):
        ActNorm(0)
    with pytest.raises(TypeError, match="channels must be an int"):
        InvConv1x1(2.0)
    with pytest.raises(ValueError, match="Squeeze needs even height and width"):
        Squeeze()(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        check_image_shape((1, 6, 8), 4, "Glow with levels=2")
    with pytest.raises(ValueError, match=r"shape must be \(C, H, W\)"):
        check_image_shape((8, 8), 2, "x")
