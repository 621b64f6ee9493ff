"""The settings of a ``reproduce`` run: a :class:`Budget` of nested, frozen per-step settings.

Each step names the settings sections it reads (:attr:`deepcheck.reproduce.pipeline.Step.settings`, e.g.
``("eval", "teaser")``); its cache key hashes exactly those section objects, whole, so renaming or adding a
field inside a section changes the key of the steps that read it and of no other step, and a misspelt section
name is an AttributeError, not a silently empty key. Units: eps in data units (pixels in [0, 1] for images).

Budgets (:data:`BUDGETS`): ``smoke`` (tests: every artifact, minimal settings), ``quick`` (default: the
embedded 8x8 digits, tiny GLOW and RealNVP, minutes on 2 CPU cores), ``full`` (Fashion-MNIST 28x28 at the
small configuration, MNIST-5k as a second OOD set, exhaustive verification; designed for about 50 minutes on
an idle 2-core CPU, see ``bench/time_full_budget.py``) and ``full-mnist5k`` (MNIST-5k in distribution).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class VerifySettings:
    """``linflow.verification.run_checks``: quick mode; only the checks of these results (None: all)."""

    quick: bool = True
    only: tuple[str, ...] | None = None


@dataclass(frozen=True)
class GeometrySettings:
    """The 2-D flow: L2 budget ``eps``; ``brute_force`` points on the circle ``||delta|| = eps``."""

    eps: float = 0.5
    brute_force: int = 20000


@dataclass(frozen=True)
class AttackSettings:
    """NLL rise against eps on a ``dim``-d flow of condition number ``cond``: exact L2, PGD, certified L-inf."""

    dim: int = 8
    cond: float = 100.0
    points: int = 8
    eps: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
    pgd_steps: int = 100
    pgd_restarts: int = 2


@dataclass(frozen=True)
class WaterfillSettings:
    """Universal adversarial training (R5) on the digits pixels (64-d) at budget ``eps``."""

    eps: float = 0.5


@dataclass(frozen=True)
class TradeoffSettings:
    """The robustness-accuracy trade-off (R7) on synthetic data; ``checks`` Pareto points solved by cvxpy."""

    dim: int = 3
    n: int = 30
    eps_train: tuple[float, ...] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)
    eps_attack: float = 1.0
    sample: bool = True
    checks: int = 3


@dataclass(frozen=True)
class DeepSettings:
    """What every deep flow is trained on and its size: the in-distribution dataset, its number of training
    images (None: all) and the architecture configuration (``deepcheck.flows.build``)."""

    dataset: str = "digits"
    n_train: int | None = None
    config: str = "tiny"


@dataclass(frozen=True)
class FlowsSettings:
    """Which deep flows are trained: each architecture of ``models`` by each mode of ``modes``."""

    models: tuple[str, ...] = ("glow", "realnvp")
    modes: tuple[str, ...] = ("mle", "hybrid")


@dataclass(frozen=True)
class TrainSettings:
    """Training of the deep flows: ``epochs`` of maximum likelihood from scratch; hybrid models fine-tuned
    from the maximum-likelihood one for ``finetune_epochs`` with ``hybrid_lambda`` and a PGD adversary of
    budget ``eps`` in ``norm`` with ``pgd_steps`` steps."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    finetune_epochs: int = 4
    finetune_warmup: int = 20
    hybrid_lambda: float = 0.5
    eps: float = 0.05
    norm: str = "linf"
    pgd_steps: int = 3


@dataclass(frozen=True)
class EvalSettings:
    """The in-distribution attack on ``n`` test images: PGD lowering the likelihood (``pgd_steps`` steps, a run
    from zero and ``restarts`` random restarts) in each norm of ``norms``, at each budget of ``eps`` (L-inf) or
    ``eps_l2`` (L2); ``norm`` is the teaser's and the OOD attack's norm. ``growth``: the bits/dim growth factor
    whose eps is reported. The attack's strength: on the first ``strong_n`` images, the fraction of the NLL rise
    that a stronger run (``strong_steps`` steps, ``strong_restarts`` restarts) finds (0: no check), at every
    ``strong_stride``-th nonzero eps of each grid (and always at the largest)."""

    norm: str = "linf"
    eps: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1)
    pgd_steps: int = 20
    restarts: int = 0
    n: int = 128
    norms: tuple[str, ...] = ("linf", "l2")
    eps_l2: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    growth: float = 50.0
    strong_n: int = 8
    strong_steps: int = 80
    strong_restarts: int = 3
    strong_stride: int = 1


@dataclass(frozen=True)
class OODSettings:
    """The OOD attack: PGD raising the likelihood of ``n`` images of each OOD set of ``sets`` (the first is the
    teaser's), budget ``eps``."""

    sets: tuple[str, ...] = ("uniform-noise", "fashion-mnist")
    eps: float = 0.1
    pgd_steps: int = 40
    n: int = 128
    eps_grid: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class TeaserSettings:
    """The teaser panel and image grid: ``model``'s numbers at ``eps``; ``grid_images`` images in the grid."""

    model: str = "realnvp"
    eps: float = 0.05
    grid_images: int = 4


@dataclass(frozen=True)
class CertifySettings:
    """Certified bounds (:func:`deepcheck.certify.nll_bounds`, ``method``) on the worst NLL over the L-inf ball
    of each budget of ``eps`` around ``n`` test images, for the trained ``model`` (MLE and hybrid), beside the NLL
    a PGD run (``steps`` steps, ``restarts`` restarts) attains."""

    model: str = "glow"
    eps: tuple[float, ...] = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255)
    n: int = 16
    method: str = "zonotope"
    steps: int = 100
    restarts: int = 2
    batch_size: int = 8


@dataclass(frozen=True)
class DequantSettings:
    """Uniformly dequantised bits/dim (:mod:`deepcheck.dequant`) of ``n`` clean test images, ``k`` draws."""

    k: int = 8
    n: int = 256


@dataclass(frozen=True)
class TheorySettings:
    """The linear theory against the deep flows: a ``linflow.LinearFlow`` fitted to the training pixels with
    ridge ``reg`` (None: the variance ``1 / (12 n_bins^2)`` of uniform dequantisation, which makes it the
    maximum-likelihood Gaussian of the dequantised pixels); on ``n`` test images at L2 budgets ``eps``: the R1
    optimum and the R4 direction ``+-eps u_min`` transferred to each maximum-likelihood deep flow, PGD on the
    deep flow (``pgd_steps``) and the deep universal perturbation (``universal_steps`` steps of
    :func:`deepcheck.attacks.universal`)."""

    reg: float | None = None
    eps: tuple[float, ...] = (0.5, 1.0, 2.0)
    n: int = 64
    pgd_steps: int = 20
    universal_steps: int = 20


@dataclass(frozen=True)
class DeepTradeoffSettings:
    """The deep robustness-accuracy trade-off: ``model``'s maximum-likelihood flow fine-tuned for ``epochs``
    epochs by hybrid training on the first ``n_train`` training images (None: all) at each ``lambdas`` x
    ``eps_train`` (PGD in ``norm``, ``pgd_steps`` steps), then measured on ``n`` test images clean and under PGD
    of budget ``eps_attack`` (``attack_steps`` steps); beside it the linear R7 curve (universal L2) of a
    ``linflow.LinearFlow`` on the same pixels (``reg`` as in :class:`TheorySettings`) trained at each
    ``linear_eps_train``."""

    model: str = "glow"
    lambdas: tuple[float, ...] = (0.5, 1.0)
    eps_train: tuple[float, ...] = (0.5, 1.0)
    norm: str = "l2"
    epochs: int = 1
    n_train: int | None = None
    pgd_steps: int = 2
    eps_attack: float = 1.0
    attack_steps: int = 20
    n: int = 64
    reg: float | None = None
    linear_eps_train: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Budget:
    """Every setting of a run, one frozen section per group of steps."""

    name: str
    verify: VerifySettings = field(default_factory=VerifySettings)
    geometry: GeometrySettings = field(default_factory=GeometrySettings)
    attack: AttackSettings = field(default_factory=AttackSettings)
    waterfill: WaterfillSettings = field(default_factory=WaterfillSettings)
    tradeoff: TradeoffSettings = field(default_factory=TradeoffSettings)
    deep: DeepSettings = field(default_factory=DeepSettings)
    flows: FlowsSettings = field(default_factory=FlowsSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    ood: OODSettings = field(default_factory=OODSettings)
    teaser: TeaserSettings = field(default_factory=TeaserSettings)
    dequant: DequantSettings = field(default_factory=DequantSettings)
    theory: TheorySettings = field(default_factory=TheorySettings)
    deep_tradeoff: DeepTradeoffSettings = field(default_factory=DeepTradeoffSettings)
    certify: CertifySettings = field(default_factory=CertifySettings)

    def settings(self, sections: tuple[str, ...]) -> dict[str, Any]:
        """``{section: its fields}`` for the named sections (a step's cache key and its recorded settings)."""
        return {s: dataclasses.asdict(getattr(self, s)) for s in sections}

    def with_settings(self, **sections: dict[str, Any]) -> Budget:
        """A copy with fields of some sections replaced: ``budget.with_settings(geometry={"eps": 0.25})``."""
        return replace(self, **{s: replace(getattr(self, s), **kw) for s, kw in sections.items()})


BUDGETS: dict[str, Budget] = {
    "smoke": Budget("smoke").with_settings(
        verify={"only": ("R4", "R5")}, geometry={"brute_force": 4000},
        attack={"dim": 4, "points": 3, "eps": (0.0, 0.2, 0.5), "pgd_steps": 40, "pgd_restarts": 1},
        tradeoff={"dim": 2, "n": 8, "eps_train": (0.0, 0.3, 1.0), "checks": 1},
        deep={"n_train": 128}, flows={"models": ("glow", "realnvp")},
        train={"epochs": 1, "finetune_epochs": 1, "pgd_steps": 2},
        eval={"eps": (0.0, 0.05), "pgd_steps": 3, "n": 16, "eps_l2": (0.0, 0.5), "strong_n": 4, "strong_steps": 4,
              "strong_restarts": 1},
        ood={"pgd_steps": 3, "n": 16, "eps_grid": (0.0, 0.1)}, teaser={"grid_images": 2},
        dequant={"k": 2, "n": 16}, theory={"eps": (0.5,), "n": 8, "pgd_steps": 3, "universal_steps": 3},
        deep_tradeoff={"lambdas": (0.5,), "eps_train": (0.5,), "pgd_steps": 1, "attack_steps": 3, "n": 8,
                       "linear_eps_train": (0.0, 0.5)},
        certify={"eps": (1 / 255,), "n": 2, "steps": 3, "restarts": 0}),
    "quick": Budget("quick"),
    "full": Budget("full").with_settings(
        verify={"quick": False}, attack={"dim": 24, "points": 16, "pgd_steps": 200, "pgd_restarts": 3},
        tradeoff={"dim": 4, "n": 60},
        deep={"dataset": "fashion-mnist", "config": "small", "n_train": 20000},
        train={"epochs": 4, "finetune_epochs": 1, "pgd_steps": 2, "eps": 0.031},
        eval={"eps": (0.0, 0.008, 0.016, 0.031, 0.063, 0.125, 0.25), "pgd_steps": 40, "restarts": 1, "n": 64,
              "eps_l2": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0), "strong_n": 8, "strong_steps": 160, "strong_restarts": 1,
              "strong_stride": 2},
        ood={"sets": ("uniform-noise", "mnist5k"), "eps": 0.031, "pgd_steps": 40, "n": 128,
             "eps_grid": (0.0, 0.031, 0.063, 0.125, 0.25)},
        teaser={"model": "glow", "eps": 0.031, "grid_images": 6},
        dequant={"k": 8, "n": 512},
        theory={"eps": (0.5, 1.0, 2.0), "n": 64, "pgd_steps": 40, "universal_steps": 40},
        deep_tradeoff={"model": "glow", "lambdas": (0.25, 0.5, 1.0), "eps_train": (0.5, 1.0), "epochs": 1,
                       "n_train": 3000, "pgd_steps": 2, "eps_attack": 1.0, "attack_steps": 40, "n": 64},
        certify={"n": 1, "batch_size": 1, "eps": (0.01 / 255, 0.05 / 255, 0.1 / 255)}),
}
BUDGETS["full-mnist5k"] = replace(BUDGETS["full"], name="full-mnist5k").with_settings(
    deep={"dataset": "mnist5k", "n_train": None}, ood={"sets": ("uniform-noise", "fashion-mnist")})
"""The full budget with MNIST-5k (all 3600 training images) in distribution and Fashion-MNIST out of it: the
other direction of the Fashion-MNIST <-> MNIST comparison (its linear steps are those of ``full``)."""
