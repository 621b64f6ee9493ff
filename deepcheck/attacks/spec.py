"""What an attack is asked to do, validated once: the frozen :class:`AttackSpec` and the checks of its inputs.

The public entry points (:func:`~deepcheck.attacks.pgd`, :func:`~deepcheck.attacks.pgd_with_info`,
:func:`~deepcheck.attacks.universal`) take the attack's options as keywords; their names, defaults and order are
written once, as the fields of :class:`AttackSpec`, and :func:`options_signature` shows them in each entry's
signature. :meth:`AttackSpec.build` validates them (a clear ``TypeError``/``ValueError`` naming the argument);
the core (:mod:`deepcheck.attacks.core`) trusts a spec.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from linflow.validation import check_eps, check_likelihood, check_norm

from ..adapt import LogProbModel, as_log_prob

Tensor = torch.Tensor
LossFn = Callable[[nn.Module, Tensor], Tensor]

NORMS = ("l2", "linf")
DEFAULT_STEPS = 100
DEFAULT_RESTARTS = 1
DEFAULT_PATIENCE = 4
NONFINITE_MODES = ("warn", "raise")


# ---------------------------------------------------------------------------------------------- checks
def _check_norm(norm: object) -> str:
    """``"l2"`` or ``"linf"`` (also accepts 2, ``float("inf")``, ``"inf"``, ``"2"``; L1 is not a PGD norm here)."""
    try:
        p = check_norm(norm)
    except ValueError:
        p = None
    if p not in (2.0, math.inf):
        raise ValueError(f"norm must be 'l2' or 'linf' (or 2, inf), got {norm!r}")
    return "l2" if p == 2.0 else "linf"


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_clamp(clamp: object) -> tuple[float, float] | None:
    """``None``, or ``clamp`` as a pair of floats ``(lo, hi)`` with ``lo < hi``; a ``TypeError``/``ValueError`` naming
    ``clamp`` otherwise."""
    if clamp is None:
        return None
    try:
        lo, hi = (float(c) for c in clamp)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"clamp must be None or a pair (lo, hi), got {clamp!r}") from None
    if not lo < hi:
        raise ValueError(f"clamp must satisfy lo < hi, got {clamp!r}")
    return lo, hi


def _check_model(model: object, loss_fn: LossFn | None = None) -> LogProbModel:
    """``model`` as a :class:`~deepcheck.adapt.LogProbModel` (a module with ``log_prob``, a Distribution, a
    zero-argument factory of one such as a zuko flow, or a callable ``x -> log_prob``); ``TypeError`` otherwise.
    With a ``loss_fn`` (which receives ``model`` as is) any object is accepted."""
    return as_log_prob(model, strict=loss_fn is None)


def _check_x(x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    return x


def default_loss(model: nn.Module | LogProbModel, x: Tensor) -> Tensor:
    """Per-sample negative log-likelihood in nats, ``-model.log_prob(x)``, shape ``(B,)``."""
    return -model.log_prob(x)


# ---------------------------------------------------------------------------------------------- the spec
class SampleGenerators:
    """One CPU generator per sample, seeded ``seeds[i]``: with it, every random draw of the attack (random
    starts, kicks) for sample ``i`` comes from its own stream, so a sample's attack does not depend on the other
    samples of its batch (needed to shard a batch over ranks, :mod:`deepcheck.distributed`)."""

    def __init__(self, seeds: tuple[int, ...] | list[int]) -> None:
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.gens)

    def subset(self, rows: list[int]) -> SampleGenerators:
        """The generators of samples ``rows`` (the same objects: drawing from the subset advances those
        samples' streams and no other)."""
        sub = SampleGenerators(())
        sub.gens = [self.gens[i] for i in rows]
        return sub


Gen = torch.Generator | SampleGenerators


def _draw(fn: Callable, shape: tuple[int, ...], gen: Gen, dtype: torch.dtype) -> Tensor:
    """``fn(shape, generator=gen)`` (``torch.rand``/``torch.randn``), or per sample from a SampleGenerators."""
    if not isinstance(gen, SampleGenerators):
        return fn(shape, generator=gen, dtype=dtype)
    if len(gen) != shape[0]:
        raise ValueError(f"sample_seeds has {len(gen)} seeds for a batch of {shape[0]} samples")
    return torch.stack([fn(shape[1:], generator=g, dtype=dtype) for g in gen.gens]) if shape[0] else \
        torch.empty(shape, dtype=dtype)


@dataclass(frozen=True)
class AttackSpec:
    """The options of one attack (meanings in :func:`deepcheck.attacks.pgd`), validated by :meth:`build`.

    ``sign`` is +1 for ``likelihood="decrease"`` (maximise the NLL) and -1 for ``"increase"``; the core
    maximises ``sign * loss``. ``alpha0`` is the initial step (``step_size``, default ``2 eps``)."""

    eps: float
    norm: str = "linf"
    likelihood: str = "decrease"
    steps: int = DEFAULT_STEPS
    step_size: float | None = None
    random_start: bool = False
    restarts: int = DEFAULT_RESTARTS
    clamp: tuple[float, float] | None = (0.0, 1.0)
    loss_fn: LossFn | None = None
    adaptive: bool = True
    patience: int = DEFAULT_PATIENCE
    seed: int = 0
    nonfinite: str = "warn"
    sample_seeds: tuple[int, ...] | None = None

    @classmethod
    def build(cls, eps: float, **options: object) -> AttackSpec:
        """A validated spec; an unknown keyword is a ``TypeError`` naming it."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                            f"the attack options are {', '.join(OPTION_NAMES)}")
        o = {**OPTION_DEFAULTS, **options}
        step_size = o["step_size"]
        if step_size is not None:
            step_size = check_eps(step_size, "step_size")
            if step_size == 0:
                raise ValueError("step_size must be > 0")
        if not isinstance(o["random_start"], bool):
            raise TypeError(f"random_start must be a bool, got {type(o['random_start']).__name__}")
        if o["loss_fn"] is not None and not callable(o["loss_fn"]):
            raise TypeError("loss_fn must be callable(model, x) -> per-sample loss")
        if o["nonfinite"] not in NONFINITE_MODES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {o['nonfinite']!r}")
        return cls(eps=check_eps(eps), norm=_check_norm(o["norm"]), likelihood=check_likelihood(o["likelihood"]),
                   steps=_check_int("steps", o["steps"], 0), step_size=step_size, random_start=o["random_start"],
                   restarts=_check_int("restarts", o["restarts"], 0), clamp=check_clamp(o["clamp"]),
                   loss_fn=o["loss_fn"], adaptive=bool(o["adaptive"]), patience=o["patience"],
                   seed=_check_int("seed", o["seed"], 0), nonfinite=o["nonfinite"],
                   sample_seeds=_check_seeds(o["sample_seeds"]))

    @property
    def sign(self) -> float:
        return 1.0 if self.likelihood == "decrease" else -1.0

    @property
    def alpha0(self) -> float:
        return self.step_size if self.step_size is not None else 2.0 * self.eps

    @property
    def loss(self) -> LossFn:
        return self.loss_fn or default_loss

    def generator(self) -> torch.Generator | SampleGenerators:
        """A fresh CPU generator seeded with ``seed`` (random starts and kicks); with ``sample_seeds``, one
        generator per sample (:class:`SampleGenerators`; ``seed`` is then unused)."""
        if self.sample_seeds is not None:
            return SampleGenerators(self.sample_seeds)
        return torch.Generator().manual_seed(self.seed)


def _check_seeds(seeds: object) -> tuple[int, ...] | None:
    """``None`` or a sequence of ints >= 0 (one seed per sample), as a tuple."""
    if seeds is None:
        return None
    if callable(getattr(seeds, "tolist", None)):  # a tensor or an array
        seeds = seeds.tolist()
    if not isinstance(seeds, list | tuple):
        raise TypeError(f"sample_seeds must be a sequence of ints or None, got {type(seeds).__name__}")
    return tuple(_check_int("sample_seeds[i]", s, 0) for s in seeds)


_OPTION_FIELDS = [f for f in dataclasses.fields(AttackSpec) if f.name != "eps"]
OPTION_NAMES = tuple(f.name for f in _OPTION_FIELDS)
OPTION_DEFAULTS = {f.name: f.default for f in _OPTION_FIELDS}


def options_signature(*, leading: tuple[str, ...], extra: dict[str, object] | None = None,
                      defaults: dict[str, object] | None = None, returns: str = "Tensor") -> Callable:
    """A decorator giving an entry point taking ``**options`` the explicit signature
    ``(leading..., *, <AttackSpec options with defaults overridden by defaults>, <extra>)`` (for ``help`` and
    ``inspect``)."""
    defaults = defaults or {}

    def decorate(fn: Callable) -> Callable:
        params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in leading]
        params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(f.name, f.default),
                                     annotation=f.type) for f in _OPTION_FIELDS]
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d) for n, d in (extra or {}).items()]
        fn.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
        return fn

    return decorate
