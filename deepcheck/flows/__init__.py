"""Flows as ``nn.Module``s: ``forward(x) -> (z, logdet)``, exact ``inverse``, ``log_prob`` (nats), ``bpd``,
``sample`` (see :mod:`deepcheck.flows.base`). :class:`LinearFlow` is the exact bridge to :mod:`linflow`."""

from .base import Flow, bits_per_dim
from .linear import LinearFlow

__all__ = ["Flow", "LinearFlow", "bits_per_dim"]
