"""Any density model as one interface: :func:`as_log_prob` turns what a user has into a :class:`LogProbModel`.

The attacks (:mod:`deepcheck.attacks`) and the evaluation (:mod:`deepcheck.evaluate`) need only the per-sample
log-density ``log p(x)`` (nats, shape ``(B,)``, differentiable in ``x``), a way to put the model in eval mode
with no parameter gradients while they run, and the model's dtype and device. Accepted, in this order:

=================  ==========================================================  ===================================
kind               what it is                                                  ``log_prob(x)``
=================  ==========================================================  ===================================
``"log_prob"``     any object with a ``log_prob`` method (the package's flows,  ``model.log_prob(x)``
                   normflows' ``NormalizingFlow``)
``"distribution"`` a ``torch.distributions.Distribution``                      ``model.log_prob(x)``
``"factory"``      a callable taking no argument that returns a Distribution   ``model().log_prob(x)`` (rebuilt at
                   (zuko's flows: ``flow()``; zuko's ``Flow`` is an            every call, so it follows the
                   ``nn.Module`` whose ``forward`` takes an optional context)  parameters)
``"callable"``     a callable ``x -> log p(x)``                                ``model(x)``
=================  ==========================================================  ===================================

With its own ``loss_fn`` an attack accepts any other object as kind ``"opaque"`` (``as_log_prob(model,
strict=False)``): the loss receives it as is. A callable that can be called without arguments is called once
(under ``torch.no_grad``) to tell a factory from a plain function: it is a factory when that call returns a
Distribution.

State: :meth:`LogProbModel.frozen` puts every ``nn.Module`` found (the model itself, a zuko flow, the owner of a
bound method such as ``net.log_prob``) in eval mode and switches off ``requires_grad`` of their parameters and of
the leaf tensors held by a Distribution (e.g. ``Normal(loc=nn.Parameter(...))``); on exit every module's own
``training`` flag and every tensor's flag are restored (also on error).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributions import Distribution

from .flows.base import bits_per_dim

__all__ = ["LogProbModel", "as_log_prob", "KINDS"]

Tensor = torch.Tensor
KINDS = ("log_prob", "distribution", "factory", "callable", "opaque")
_ACCEPTED = ("an nn.Module (or any object) with a log_prob(x) method, a torch.distributions.Distribution, "
             "a zero-argument callable returning a Distribution (e.g. a zuko flow), or a callable x -> log_prob(x)")


def _dist_tensors(dist: object, seen: set[int] | None = None) -> list[Tensor]:
    """The leaf tensors with ``requires_grad`` held by a Distribution (and the Distributions inside it)."""
    seen = set() if seen is None else seen
    if id(dist) in seen:
        return []
    seen.add(id(dist))
    out: list[Tensor] = []
    for v in vars(dist).values():
        items = v if isinstance(v, list | tuple) else [v]
        for t in items:
            if isinstance(t, Tensor) and t.is_leaf and t.requires_grad and id(t) not in seen:
                seen.add(id(t))
                out.append(t)
            elif isinstance(t, Distribution):
                out += _dist_tensors(t, seen)
    return out


def _dist_float_tensor(dist: Distribution) -> Tensor | None:
    """Any floating tensor of a Distribution (for its dtype and device)."""
    for v in vars(dist).values():
        if isinstance(v, Tensor) and v.is_floating_point():
            return v
        if isinstance(v, Distribution):
            t = _dist_float_tensor(v)
            if t is not None:
                return t
    return None


def _callable_with(fn: Callable, n: int) -> bool:
    """Whether ``fn`` can be called with ``n`` positional arguments (by its signature; True when unknown)."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return True
    try:
        sig.bind(*([None] * n))
    except TypeError:
        return False
    return True


class LogProbModel:
    """A density model seen through one interface (see the module docstring for the accepted kinds).

    ``log_prob(x)``: per-sample log-density in nats, shape ``(B,)``; ``source``: the object it wraps;
    ``kind``: one of :data:`KINDS`; ``modules``: the ``nn.Module`` objects whose mode and parameters it
    manages; ``parameters()``: their parameters and a Distribution's leaf tensors requiring grad;
    ``eval()``/``train(mode)``: as for a module; :meth:`frozen`: eval mode, no parameter gradients, restored on
    exit; ``dtype``/``device``: those of the model's floating tensors (default dtype, CPU when it has none).
    """

    def __init__(self, source: object, kind: str, log_prob: Callable[[Tensor], Tensor],
                 modules: list[nn.Module], tensors: list[Tensor], probe: Distribution | None = None) -> None:
        self.source, self.kind, self._log_prob = source, kind, log_prob
        self.modules, self._tensors, self._probe = modules, tensors, probe

    def __repr__(self) -> str:
        return f"LogProbModel(kind={self.kind!r}, source={type(self.source).__name__})"

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` per sample, shape ``(B,)`` (a ``ValueError`` if the model returns another shape)."""
        out = self._log_prob(x)
        if not isinstance(out, Tensor) or out.shape != (x.shape[0],):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"model's log_prob must return one value per sample, shape ({x.shape[0]},), got {shape}")
        return out

    def bpd(self, x: Tensor) -> Tensor:
        """Bits/dim: the source's own ``bpd`` when it has one (the package's flows, with their ``n_bins``), else
        the continuous ``-log p(x) / (D ln 2)`` (nats per dimension in bits; no discretisation term)."""
        own = getattr(self.source, "bpd", None)
        if self.kind == "log_prob" and callable(own):
            return own(x)
        return bits_per_dim(self.log_prob(x), math.prod(x.shape[1:]), None)

    def parameters(self) -> Iterator[Tensor]:
        seen: set[int] = set()
        for t in [p for m in self.modules for p in m.parameters()] + self._tensors:
            if id(t) not in seen:
                seen.add(id(t))
                yield t

    def eval(self) -> LogProbModel:
        return self.train(False)

    def train(self, mode: bool = True) -> LogProbModel:
        for m in self.modules:
            m.train(mode)
        return self

    @contextmanager
    def frozen(self) -> Iterator[LogProbModel]:
        """Eval mode and ``requires_grad=False`` inside; every module's and tensor's own flag restored on exit."""
        modes = [(m, m.training) for top in self.modules for m in top.modules()]
        flags = [(p, p.requires_grad) for p in self.parameters()]
        try:
            self.eval()
            for p, _ in flags:
                p.requires_grad_(False)
            yield self
        finally:
            for m, training in modes:
                m.training = training
            for p, flag in flags:
                p.requires_grad_(flag)

    def _float_tensor(self) -> Tensor | None:
        t = next((p for p in self.parameters() if p.is_floating_point()), None)
        if t is None:
            dist = self.source if isinstance(self.source, Distribution) else self._probe
            t = _dist_float_tensor(dist) if dist is not None else None
        return t

    @property
    def dtype(self) -> torch.dtype:
        t = self._float_tensor()
        return t.dtype if t is not None else torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        t = self._float_tensor()
        return t.device if t is not None else torch.device("cpu")


def _owner_modules(obj: object) -> list[nn.Module]:
    """``obj`` itself if it is a module, else the module owning a bound method, else none."""
    if isinstance(obj, nn.Module):
        return [obj]
    owner = getattr(obj, "__self__", None)
    return [owner] if isinstance(owner, nn.Module) else []


def _classify(model: object) -> LogProbModel | str:
    """The adapter for ``model``, or why it has none."""
    if isinstance(model, LogProbModel):
        return model
    if isinstance(model, Distribution):
        return LogProbModel(model, "distribution", model.log_prob, [], _dist_tensors(model))
    if callable(getattr(model, "log_prob", None)):
        return LogProbModel(model, "log_prob", model.log_prob, _owner_modules(model), [])  # type: ignore[union-attr]
    if not callable(model):
        return f"got {type(model).__name__}"
    if _callable_with(model, 0):
        try:
            with torch.no_grad():
                probe = model()
        except TypeError:
            probe = None
        if isinstance(probe, Distribution):
            def factory_log_prob(x: Tensor) -> Tensor:
                return model().log_prob(x)  # type: ignore[operator]

            return LogProbModel(model, "factory", factory_log_prob, _owner_modules(model), _dist_tensors(probe),
                                probe=probe)
    if _callable_with(model, 1):
        return LogProbModel(model, "callable", model, _owner_modules(model), [])
    return "got a callable that takes neither zero arguments (returning a Distribution) nor one (x)"


def as_log_prob(model: object, *, strict: bool = True) -> LogProbModel:
    """``model`` as a :class:`LogProbModel` (returned as is when it already is one); a ``TypeError`` naming
    ``model`` and the accepted kinds otherwise. With ``strict=False`` (an attack given its own ``loss_fn``,
    which receives ``model`` as is) any other object becomes kind ``"opaque"``: its modules (the object
    itself, or a bound method's owner) are still frozen, and calling its ``log_prob`` is a ``TypeError``."""
    out = _classify(model)
    if isinstance(out, LogProbModel):
        return out
    if strict:
        raise TypeError(f"model must be {_ACCEPTED}; {out}")

    def no_log_prob(x: Tensor) -> Tensor:
        raise TypeError(f"model has no log-density ({_ACCEPTED}); {out}")

    return LogProbModel(model, "opaque", no_log_prob, _owner_modules(model), [])
