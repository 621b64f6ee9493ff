"""``load``: validate the request, read the dataset through :data:`~deepcheck.data.readers.READERS`, take
the split, then resize and convert channels (conventions and datasets in :mod:`deepcheck.data`)."""

from __future__ import annotations

import os

import numpy as np
import torch

from .images import ImageData, _resize, _set_channels
from .readers import DATASETS, READERS, SPLITS, Request

_TEST_SPLIT_SEED = 20200826  # fixed: the held-out test set does not depend on the user's seed


def _split_indices(n: int, split: str, seed: int, val_fraction: float, test_fraction: float | None) -> np.ndarray:
    """Indices of ``split`` among ``n`` items. ``test_fraction=None``: no test part (official test set elsewhere)."""
    idx = np.arange(n)
    if test_fraction is not None:
        n_test = int(round(test_fraction * n))
        perm = np.random.default_rng(_TEST_SPLIT_SEED).permutation(n)
        if split == "test":
            return perm[:n_test]
        idx = np.sort(perm[n_test:])
    n_val = int(round(val_fraction * len(idx)))
    perm = np.random.default_rng(seed).permutation(len(idx))
    return idx[perm[:n_val] if split == "val" else perm[n_val:]]


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def _check_size(size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, tuple | list) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"size must be a positive int or a pair (H, W) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _official_split(official: dict[str, tuple[np.ndarray, np.ndarray]], split: str, seed: int,
                    val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``split`` of a dataset with an official test set: ``"test"`` is it, ``"train"``/``"val"`` divide the
    official training part, ``"all"`` is both in file order."""
    if split == "all":
        return (np.concatenate([official["train"][0], official["test"][0]]),
                np.concatenate([official["train"][1], official["test"][1]]))
    if split == "test":
        return official["test"]
    x, y = official["train"]
    indices = _split_indices(len(x), split, seed, val_fraction, None)
    return x[indices], y[indices]


def load(
    name: str,
    split: str = "train",
    *,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    size: int | tuple[int, int] | None = None,
    resize: str = "pad",
    channels: int | None = None,
    limit: int | None = None,
    shape: tuple[int, int, int] | None = None,
    n: int | None = None,
    n_bins: int | None = None,
) -> ImageData:
    """Load the ``split`` (``"train"``, ``"val"``, ``"test"`` or ``"all"``) of dataset ``name`` (see the module doc).

    ``seed`` picks the train/val division (and the noise of ``uniform-noise``); ``test_fraction`` is used only
    by datasets without an official test set. ``size`` (int or ``(H, W)``) pads with level 0 / centre-crops
    (``resize="pad"``) or resamples bilinearly (``resize="interpolate"``); ``channels`` repeats a grey channel
    or converts RGB to luma. ``limit`` keeps the first ``limit`` images of the split. ``uniform-noise`` takes
    ``shape=(C, H, W)``, ``n`` images and ``n_bins`` (default 256). ``npz`` data may set ``n_bins`` (else the
    file's ``n_bins`` key, else 256). Missing files raise ``FileNotFoundError`` saying how to get them.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    target = _check_size(size)
    if resize not in ("pad", "interpolate"):
        raise ValueError(f"resize must be 'pad' or 'interpolate', got {resize!r}")
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if n_bins is not None and (isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 2 <= n_bins <= 256):
        raise ValueError(f"n_bins must be an int in [2, 256] or None, got {n_bins!r}")

    req = Request(name=name, split=split, seed=int(seed), root=root, size=target, resize=resize, shape=shape, n=n,
                  n_bins=n_bins)
    raw = READERS[name](req)
    bins = raw.bins
    if raw.is_split:
        x, y = raw.x, raw.y
    elif raw.official is not None:
        x, y = _official_split(raw.official, split, int(seed), val_fraction)
    else:
        x, y = raw.x, raw.y
        if split != "all":
            indices = _split_indices(len(x), split, int(seed), val_fraction, test_fraction)
            x, y = x[indices], y[indices]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    if x.size and int(x.max()) >= bins:
        raise ValueError(f"{name}: levels reach {int(x.max())} but n_bins is {bins}")
    levels = torch.from_numpy(np.array(x, dtype=np.uint8, copy=True))
    if target is not None:
        levels = _resize(levels, target, resize)
    if channels is not None:
        levels = _set_channels(levels, channels)
    labels = torch.from_numpy(np.array(y, dtype=np.int64, copy=True))
    return ImageData(levels, labels, int(bins), f"{name}/{split}")
