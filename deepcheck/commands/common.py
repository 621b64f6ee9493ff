"""What the ``deepcheck`` commands share: the dataset and split names (kept equal to :mod:`deepcheck.data`'s by
a test, so that ``--help`` need not import torch) and :func:`start`, the one place where a command that computes
prepares its device."""

from __future__ import annotations

import argparse

from ..commandline import UsageError

# deepcheck.data.readers.DATASETS and SPLITS (tests/test_cli.py checks they agree)
DATASETS = ("digits", "mnist5k", "fashion-mnist", "idx", "cifar10", "npz", "uniform-noise", "foolbox-mnist",
            "foolbox-fashion-mnist", "foolbox-cifar10", "foolbox-cifar100", "foolbox-imagenet")
SPLITS = ("train", "val", "test", "all")


def start(args: argparse.Namespace) -> str:
    """Set the thread policy (:func:`deepcheck.threads.apply_thread_policy`), check ``args.device`` and return
    it; called by ``train``, ``attack``, ``evaluate`` and ``reproduce`` after their outputs are checked and before
    any work (the distributed set-up, :func:`deepcheck.distributed.setup_from_env`, follows in each command).
    ``--device cuda`` on a machine without CUDA is a :class:`UsageError`."""
    import torch

    from ..threads import apply_thread_policy

    apply_thread_policy()  # one intra-op thread per free core: no spin-waiting collapse under load (issue 14)
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise UsageError(f"--device {args.device!r} is not a device (examples: cpu, cuda, cuda:1)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {args.device!r}: only cpu and cuda devices are supported")
    return str(args.device)
