"""Flows as ``nn.Module``s: ``forward(x) -> (z, logdet)``, exact ``inverse``, ``log_prob`` (nats), ``bpd``,
``sample`` (see :mod:`deepcheck.flows.base`). :class:`LinearFlow` is the exact bridge to :mod:`linflow`;
:class:`RealNVP` and :class:`Glow` are the multi-scale image flows; :func:`build` makes any of them from a
named config and :func:`build_from_config` rebuilds one from ``model.config``."""

from .base import Flow, bits_per_dim
from .build import CONFIGS, MODELS, build, build_from_config
from .glow import Glow
from .linear import LinearFlow
from .realnvp import RealNVP

__all__ = ["CONFIGS", "MODELS", "Flow", "Glow", "LinearFlow", "RealNVP", "bits_per_dim", "build",
           "build_from_config"]
