r"""One bound rule per layer type of :mod:`deepcheck.flows.layers`, in the same order and with the same
formulas as each layer's ``forward`` (R1-R3 lifted to deep flows, issue 15).

A rule maps the enclosure of its input (a :class:`~deepcheck.certify.forms.Form`) to enclosures of its outputs:

* conditioner modules (``nn.Conv2d``, ``nn.ReLU``, ``nn.Sequential``, :class:`ZeroConv2d`, :class:`GlowNet`,
  :class:`ResNet`): ``rule(module, x) -> y``;
* bijective layers (:class:`ActNorm`, :class:`InvConv1x1`, :class:`AffineCoupling`, :class:`Squeeze`,
  :class:`LearnedPrior`, :class:`Chain`): ``rule(layer, x) -> (y, logdet)``, ``logdet`` a form of shape
  ``(B,)`` enclosing ``log|det dy/dx|`` (both of its bounds are kept: the NLL needs the lower one);
* :class:`Split`: ``rule(split, x) -> (h, eps, logdet)``.

The affine layers are exact on the form (only rounding slack is added). The nonlinear pieces use the
relaxations of :mod:`deepcheck.certify.relax`: ReLU; the coupling's scale ``s = sigmoid(h + 2)`` with
``log s = logsigmoid(h + 2)`` (Glow) or ``log s = alpha tanh(h)``, ``s = exp(log s)`` (RealNVP); Glow's split
prior ``exp(-logs(h))``; and products (``(x_b + t) s``, ``(z - mu) exp(-logs)``) by :meth:`Form.mul`.
:data:`RULES` maps each type to its rule; :func:`apply` dispatches (tests swap single rules to check that an
unsound rule is caught).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..flows.layers import (
    ActNorm,
    AffineCoupling,
    Chain,
    GlowNet,
    InvConv1x1,
    LearnedPrior,
    ResNet,
    Split,
    Squeeze,
    ZeroConv2d,
    checkerboard,
)
from . import relax
from .forms import FUNC_REL, Form, gamma

RULES: dict[type, Callable] = {}


def rule(cls: type) -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        RULES[cls] = fn
        return fn

    return register


def apply(module: nn.Module, x: Form):  # noqa: ANN201 - a form, or a tuple of forms (see the module docstring)
    """The rule registered for ``type(module)`` applied to ``x``; a clear error for a layer without one."""
    fn = RULES.get(type(module))
    if fn is None:
        raise TypeError(f"no certified bound rule for layer type {type(module).__name__}; covered: "
                        f"{sorted(c.__name__ for c in RULES)}")
    return fn(module, x)


def _p(t: torch.Tensor) -> torch.Tensor:
    """A parameter as a detached float64 tensor (float32 -> float64 is exact)."""
    return t.detach().to(torch.float64)


def _exp_const(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(t)`` of a constant and its uncertainty radius."""
    k = torch.exp(t)
    return k, FUNC_REL * k


def _const_logdet(x: Form, terms: torch.Tensor) -> Form:
    """A constant log-det, the sum of the float64 tensor ``terms``, broadcast per sample (with its rounding)."""
    value = terms.sum()
    v = value.expand(x.c.shape[0]).clone()
    return x.const(v, gamma(terms.numel() + 2) * terms.abs().sum())


# ---------------------------------------------------------------------------------------------- conditioners
def conv2d(x: Form, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d | None = None,
           wrad: torch.Tensor | None = None) -> Form:
    """A 2-d convolution (``conv``'s stride/padding/dilation/groups, else a 1x1) as a linear map on ``x``."""
    kw = {} if conv is None else {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation,
                                  "groups": conv.groups}
    n = weight.shape[1] * weight.shape[2] * weight.shape[3]
    b = None if bias is None else bias.reshape(1, -1, 1, 1)
    wabs = weight.abs()
    wrad_fn = None if wrad is None else (lambda t: F.conv2d(t, wrad, None, **kw))
    return x.linear(lambda t: F.conv2d(t, weight, None, **kw), lambda t: F.conv2d(t, wabs, None, **kw), b, n,
                    wrad_fn)


@rule(nn.Conv2d)
def _conv(m: nn.Conv2d, x: Form) -> Form:
    if m.padding_mode != "zeros":
        raise TypeError(f"no certified bound rule for Conv2d with padding_mode={m.padding_mode!r}")
    return conv2d(x, _p(m.weight), None if m.bias is None else _p(m.bias), m)


@rule(nn.ReLU)
def _relu(m: nn.ReLU, x: Form) -> Form:
    return x.apply(relax.relu)


@rule(nn.Sequential)
def _sequential(m: nn.Sequential, x: Form) -> Form:
    for layer in m:
        x = apply(layer, x)
    return x


@rule(ZeroConv2d)
def _zeroconv(m: ZeroConv2d, x: Form) -> Form:
    k, k_rad = _exp_const(3.0 * _p(m.logscale))
    return apply(m.conv, x).scale(k, k_rad)


@rule(GlowNet)
def _glownet(m: GlowNet, x: Form) -> Form:
    return apply(m.net, x)


@rule(ResNet)
def _resnet(m: ResNet, x: Form) -> Form:
    h = apply(m.inp, x)
    for block in m.blocks:
        h = h + apply(block, h)
    return apply(m.out, h.apply(relax.relu))


# ---------------------------------------------------------------------------------------------- bijections
@rule(ActNorm)
def _actnorm(m: ActNorm, x: Form) -> tuple[Form, Form]:
    if not bool(m.initialized):
        raise ValueError("an ActNorm has never seen data (initialized=False): its forward would initialise it "
                         "from the batch; run the model on data (or load a checkpoint) before certifying")
    k, k_rad = _exp_const(_p(m.logs))
    y = x.shift(_p(m.bias)).scale(k, k_rad)
    hw = x.c.shape[2] * x.c.shape[3]
    return y, _const_logdet(x, hw * _p(m.logs))


def invconv_weight(m: InvConv1x1) -> tuple[torch.Tensor, torch.Tensor]:
    """``W = P L U`` in float64 and an elementwise radius on its error (two products of ``C`` terms and the
    ``exp`` of the diagonal)."""
    mask, eye = _p(m.lower_mask), _p(m.eye)
    s = torch.exp(_p(m.log_s))
    lower = _p(m.lower) * mask + eye
    upper = _p(m.upper) * mask.T + torch.diag(_p(m.sign_s) * s)
    perm = _p(m.perm)
    w = perm @ lower @ upper
    c = w.shape[0]
    wrad = (2 * gamma(c + 2) + FUNC_REL) * (perm.abs() @ lower.abs() @ upper.abs())
    return w, wrad


@rule(InvConv1x1)
def _invconv(m: InvConv1x1, x: Form) -> tuple[Form, Form]:
    w, wrad = invconv_weight(m)
    y = conv2d(x, w[:, :, None, None], None, None, wrad[:, :, None, None])
    hw = x.c.shape[2] * x.c.shape[3]
    return y, _const_logdet(x, hw * _p(m.log_s))


def coupling_scale(m: AffineCoupling, cond: Form) -> tuple[Form, Form, Form]:
    """``(log s, s, t)`` from the conditioner input (``AffineCoupling._scale_shift``)."""
    h = apply(m.net, cond)
    shift, raw = h.map(lambda t: t[:, 0::2]), h.map(lambda t: t[:, 1::2])
    if m.scale == "sigmoid":
        pre = raw.shift(2.0)
        return pre.apply(relax.logsigmoid), pre.apply(relax.sigmoid), shift
    log_s = raw.apply(relax.tanh).scale(_p(m.alpha))
    return log_s, log_s.apply(relax.exp), shift


@rule(AffineCoupling)
def _coupling(m: AffineCoupling, x: Form) -> tuple[Form, Form]:
    if m.mask == "channel":
        a, b = (x.map(lambda t: t[:, : m.n_a]), x.map(lambda t: t[:, m.n_a:])) if m.parity == 0 else \
            (x.map(lambda t: t[:, t.shape[1] - m.n_a:]), x.map(lambda t: t[:, : t.shape[1] - m.n_a]))
        log_s, s, t = coupling_scale(m, a)
        yb = (b + t).mul(s) if m.scale == "sigmoid" else b.mul(s) + t
        y = Form.cat([a, yb] if m.parity == 0 else [yb, a])
        return y, log_s.sum()
    mask = checkerboard(x.c.shape[2], x.c.shape[3], m.parity, like=x.c)
    log_s, s, t = coupling_scale(m, x.scale(mask))
    keep = 1 - mask
    log_s, s, t = log_s.scale(keep), s.scale(keep).shift(mask), t.scale(keep)
    y = x.mul(s) + t if m.scale == "tanh" else (x + t).mul(s)
    return y, log_s.sum()


@rule(Squeeze)
def _squeeze(m: Squeeze, x: Form) -> tuple[Form, Form]:
    y = x.map(lambda t: m(t)[0])
    return y, x.const(x.c.new_zeros(x.c.shape[0]))


@rule(Chain)
def _chain(m: Chain, x: Form) -> tuple[Form, Form]:
    logdet = x.const(x.c.new_zeros(x.c.shape[0]))
    for layer in m.layers:
        x, ld = apply(layer, x)
        logdet = logdet + ld
    return x, logdet


@rule(Split)
def _split(m: Split, x: Form) -> tuple[Form, Form, Form]:
    h, z = x.map(lambda t: t[:, : m.n_keep]), x.map(lambda t: t[:, m.n_keep:])
    if m.prior is None:
        return h, z, x.const(x.c.new_zeros(x.c.shape[0]))
    p = apply(m.prior, h)
    mean, logs = p.map(lambda t: t[:, 0::2]), p.map(lambda t: t[:, 1::2])
    inv_scale = (-logs).apply(relax.exp)
    return h, (z - mean).mul(inv_scale), -logs.sum()


@rule(LearnedPrior)
def _learned_prior(m: LearnedPrior, x: Form) -> tuple[Form, Form]:
    k, k_rad = _exp_const(-_p(m.logs))
    y = x.shift(-_p(m.mean)).scale(k, k_rad)
    return y, _const_logdet(x, -_p(m.logs))

