"""Tests for neurodeploy.data: offline data sets and spike encoders."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodeploy.data import (
    DATASETS,
    DataError,
    DatasetSplit,
    DirectEncoder,
    PoissonEncoder,
    TemporalEncoder,
    load_dataset,
    make_encoder,
    read_idx,
)


def _check_common(d: DatasetSplit, name: str, shape: tuple, n_classes: int, kind: str) -> None:
    assert d.name == name and d.kind == kind and d.n_classes == n_classes
    assert d.input_shape == shape
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == shape and len(x) == len(y)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert y.min() >= 0 and y.max() < n_classes
    assert d.n_train == len(d.x_train) and d.n_test == len(d.x_test)


# --------------------------------------------------------------------------- packaged data sets

def test_known_names_and_unknown_name_error():
    assert DATASETS == ("mnist5k", "digits", "vowels", "fashion-mnist", "cifar10")
    with pytest.raises(DataError) as e:
        load_dataset("imagenet")
    msg = str(e.value)
    assert "imagenet" in msg and all(n in msg for n in DATASETS)


def test_mnist5k_split():
    d = load_dataset("mnist5k", seed=0)
    _check_common(d, "mnist5k", (1, 28, 28), 10, "image")
    assert (d.n_train, d.n_test) == (4000, 1000)
    assert set(np.unique(d.y_train)) == set(range(10)) == set(np.unique(d.y_test))
    # train + test together are the whole file: 500 digits per class.
    counts = np.bincount(d.y_train, minlength=10) + np.bincount(d.y_test, minlength=10)
    assert counts.tolist() == [500] * 10
    # pixels were 0..255 integers scaled by 1/255, and real images have ink
    assert np.allclose(d.x_train * 255, np.round(d.x_train * 255), atol=1e-3)
    assert d.x_train.max() == 1.0 and d.x_train.mean() > 0.05


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_seed_controls_split(name):
    a, b, c = load_dataset(name, seed=1), load_dataset(name, seed=1), load_dataset(name, seed=2)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.y_train, c.y_train)
    # a different seed moves samples between train and test, not only reorders them
    sig = lambda x: {row.tobytes() for row in x}  # noqa: E731
    assert sig(a.x_test) != sig(c.x_test)
    # each call gets its own arrays: editing one split must not leak into the next
    a.x_train[0] = 0.5
    assert not np.array_equal(load_dataset(name, seed=1).x_train[0], a.x_train[0])


def test_digits_split():
    d = load_dataset("digits", seed=0)
    _check_common(d, "digits", (1, 8, 8), 10, "image")
    assert d.n_train + d.n_test == 1797
    assert d.n_train == 1438  # 80 %
    assert set(np.unique(d.y_train)) == set(range(10)) == set(np.unique(d.y_test))
    assert np.allclose(d.x_train * 16, np.round(d.x_train * 16))  # original values 0..16
    assert d.x_train.max() == 1.0


def _parse_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Independent reader for the equal-length .ts text: (n, channels, steps), labels."""
    xs, ys, in_data = [], [], False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            in_data = True
            continue
        if in_data:
            *dims, label = line.split(":")
            xs.append([[float(v) for v in dim.split(",")] for dim in dims])
            ys.append(int(label) - 1)
    return np.array(xs), np.array(ys)


def test_vowels_split():
    d = load_dataset("vowels", seed=0)
    _check_common(d, "vowels", (25, 12), 9, "sequence")
    assert (d.n_train, d.n_test) == (270, 370)
    assert np.bincount(d.y_train).tolist() == [30] * 9
    assert set(np.unique(d.y_test)) == set(range(9))
    # per-feature scaling from the training split spans exactly [0, 1] there
    assert np.allclose(d.x_train.min(axis=(0, 1)), 0.0) and np.allclose(d.x_train.max(axis=(0, 1)), 1.0)

    # Compare with an independent parse of aeon's files: layout (T, F) and train-only scaling.
    folder = Path(importlib.util.find_spec("aeon").submodule_search_locations[0]) / "datasets/data/JapaneseVowels"
    x_tr, _ = _parse_ts(folder / "JapaneseVowels_eq_TRAIN.ts")
    x_te, y_te = _parse_ts(folder / "JapaneseVowels_eq_TEST.ts")
    lo, hi = x_tr.min(axis=(0, 2)), x_tr.max(axis=(0, 2))
    expected = np.clip((x_te.transpose(0, 2, 1) - lo) / (hi - lo), 0, 1)
    assert np.allclose(d.x_test, expected, atol=1e-6)
    assert np.array_equal(d.y_test, y_te)  # official test split, official order


def test_vowels_seed_shuffles_train_only():
    a, b = load_dataset("vowels", seed=0), load_dataset("vowels", seed=3)
    assert np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.y_train, b.y_train)
    key = lambda d: sorted(zip(d.y_train.tolist(), (r.tobytes() for r in d.x_train)))  # noqa: E731
    assert key(a) == key(b)  # same samples, other order
    assert np.array_equal(load_dataset("vowels", seed=3).x_train, b.x_train)


def test_subset_takes_first_samples():
    d = load_dataset("digits", seed=0)
    s = d.subset(n_train=50, n_test=7)
    assert (s.n_train, s.n_test) == (50, 7)
    assert np.array_equal(s.x_train, d.x_train[:50]) and np.array_equal(s.y_test, d.y_test[:7])
    assert s.input_shape == d.input_shape and s.n_classes == d.n_classes and s.kind == d.kind
    only_train = d.subset(n_train=10)
    assert only_train.n_train == 10 and only_train.n_test == d.n_test
    with pytest.raises(DataError, match="n_test"):
        d.subset(n_test=-1)


# --------------------------------------------------------------------------- Fashion-MNIST (IDX files)

FASHION = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _fashion_arrays(n_train=20, n_test=10):
    rng = np.random.default_rng(5)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = np.arange(n)  # an id per image, to follow it through the shuffle
        arrays[prefix] = (x, (np.arange(n) % 10).astype(np.uint8))
    return arrays


def _make_fashion(root: Path, gz: bool, arrays=None) -> dict:
    arrays = arrays or _fashion_arrays()
    raw = root / "FashionMNIST" / "raw"
    for prefix in ("train", "t10k"):
        x, y = arrays[prefix]
        _write(raw / f"{prefix}-images-idx3-ubyte", _idx_bytes(x), gz)
        _write(raw / f"{prefix}-labels-idx1-ubyte", _idx_bytes(y), gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_fashion_mnist_roundtrip(tmp_path, gz):
    arrays = _make_fashion(tmp_path, gz)
    d = load_dataset("fashion-mnist", seed=0, data_dir=tmp_path)
    _check_common(d, "fashion-mnist", (1, 28, 28), 10, "image")
    assert (d.n_train, d.n_test) == (20, 10)
    x_te, y_te = arrays["t10k"]
    assert np.array_equal(np.round(d.x_test[:, 0] * 255).astype(np.uint8), x_te)  # official order, exact
    assert np.array_equal(d.y_test, y_te)
    x_tr, y_tr = arrays["train"]
    back = np.round(d.x_train[:, 0] * 255).astype(np.uint8)
    ids = back[:, 0, 0].astype(int)
    assert sorted(ids.tolist()) == list(range(20)) and ids.tolist() != list(range(20))  # shuffled
    assert np.array_equal(back, x_tr[ids]) and np.array_equal(d.y_train, y_tr[ids])  # pairs kept
    same = load_dataset("fashion-mnist", seed=0, data_dir=str(tmp_path))
    assert np.array_equal(same.y_train, d.y_train)


def test_fashion_mnist_reloads_changed_files(tmp_path):
    arrays = _make_fashion(tmp_path, gz=False)
    first = load_dataset("fashion-mnist", data_dir=tmp_path)
    x, y = arrays["t10k"]
    path = _write(tmp_path / "FashionMNIST/raw/t10k-images-idx3-ubyte", _idx_bytes(255 - x), gz=False)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # make the change visible on coarse clocks
    second = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert np.allclose(second.x_test, 1.0 - first.x_test)


def test_fashion_mnist_missing_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=None)
    msg = str(e.value)
    assert "fashion-mnist" in msg and "FashionMNIST/raw/train-images-idx3-ubyte" in msg
    assert "torchvision.datasets.FashionMNIST" in msg and "--data-dir" in msg

    _make_fashion(tmp_path, gz=True)
    gone = tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    gone.unlink()
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert msg.startswith("fashion-mnist") and str(gone.with_suffix("")) in msg
    assert "train-images" not in msg  # only the missing file is listed

    with pytest.raises(DataError, match="does not exist"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_reader_rejects_malformed_files(tmp_path, gz):
    good = _idx_bytes(np.zeros((3, 28, 28), np.uint8))
    p = _write(tmp_path / "bad-magic", b"\x00\x00\x0d\x03" + good[4:], gz)
    with pytest.raises(DataError) as e:
        read_idx(p, ndim=3)
    assert str(p) in str(e.value) and "magic" in str(e.value) and "00000d03" in str(e.value)

    p = _write(tmp_path / "not-idx", b"\x1f\x8b\x08\x03" + good[4:], gz)  # e.g. a doubly gzipped file
    with pytest.raises(DataError, match="magic") as e:
        read_idx(p, ndim=3)
    assert str(p) in str(e.value)

    p = _write(tmp_path / "truncated", good[:-5], gz)
    with pytest.raises(DataError) as e:
        read_idx(p, ndim=3)
    assert str(p) in str(e.value) and str(3 * 28 * 28) in str(e.value)

    p = _write(tmp_path / "trailing", good + b"\x00" * 3, gz)
    with pytest.raises(DataError) as e:
        read_idx(p, ndim=3)
    assert str(p) in str(e.value) and str(3 * 28 * 28 + 3) in str(e.value)

    p = _write(tmp_path / "short-header", good[:9], gz)
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(p)

    p = _write(tmp_path / "labels-as-images", _idx_bytes(np.zeros(3, np.uint8)), gz)
    with pytest.raises(DataError) as e:
        read_idx(p, ndim=3)
    assert str(p) in str(e.value) and "1 dimensions, expected 3" in str(e.value)

    assert read_idx(_write(tmp_path / "ok", good, gz), ndim=3).shape == (3, 28, 28)


def test_fashion_mnist_malformed_file_named(tmp_path):
    _make_fashion(tmp_path, gz=False)
    labels = tmp_path / "FashionMNIST/raw/train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])  # truncated
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert str(labels) in str(e.value)

    _write(labels, _idx_bytes(np.zeros(7, np.uint8)), gz=False)  # 7 labels for 20 images
    with pytest.raises(DataError, match="20 images but .* 7 labels"):
        load_dataset("fashion-mnist", data_dir=tmp_path)

    gz = tmp_path / "g" / "FashionMNIST/raw"
    _make_fashion(tmp_path / "g", gz=True)
    broken = gz / "t10k-images-idx3-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:30])  # cut inside the gzip stream
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path / "g")
    assert str(broken) in str(e.value)


# --------------------------------------------------------------------------- CIFAR-10 (python pickles)

def _make_cifar(root: Path, per_batch=4, n_test=10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(9)
    xs, ys = [], []
    for i in range(1, 7):
        n = n_test if i == 6 else per_batch
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=n)]  # the real files hold a list of ints
        name = "test_batch" if i == 6 else f"data_batch_{i}"
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": y, b"data": x, b"filenames": []}, f)
        xs.append(x)
        ys.append(np.array(y))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def test_cifar10_roundtrip(tmp_path):
    x_tr, y_tr, x_te, y_te = _make_cifar(tmp_path)
    d = load_dataset("cifar10", seed=0, data_dir=tmp_path)
    _check_common(d, "cifar10", (3, 32, 32), 10, "image")
    assert (d.n_train, d.n_test) == (20, 10)
    back_te = np.round(d.x_test * 255).astype(np.uint8)
    assert np.array_equal(back_te, x_te.reshape(-1, 3, 32, 32)) and np.array_equal(d.y_test, y_te)
    # channel-major layout: the first 1024 bytes of a row are the red plane
    assert np.array_equal(back_te[0, 0].ravel(), x_te[0, :1024])
    back_tr = np.round(d.x_train * 255).astype(np.uint8).reshape(20, 3072)
    order = [next(j for j in range(20) if np.array_equal(x_tr[j], row)) for row in back_tr]
    assert sorted(order) == list(range(20)) and np.array_equal(d.y_train, y_tr[order])


def test_cifar10_missing_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10")
    assert "cifar10" in str(e.value) and "cifar-10-batches-py/data_batch_1" in str(e.value)
    _make_cifar(tmp_path)
    gone = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    gone.unlink()
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(e.value).startswith("cifar10") and str(gone) in str(e.value) and "--data-dir" in str(e.value)
    assert "\n" not in str(e.value)       # one line, as every user error


def test_cifar10_malformed_pickle_named(tmp_path):
    _make_cifar(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(bad, "wb") as f:
        pickle.dump({b"labels": [1, 2]}, f)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(bad) in str(e.value) and "b'data'" in str(e.value)

    with open(bad, "wb") as f:
        pickle.dump({b"labels": [1, 2], b"data": np.zeros((2, 100), np.uint8)}, f)
    with pytest.raises(DataError, match=r"\(N, 3072\)") as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(bad) in str(e.value)

    bad.write_bytes(b"not a pickle")
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(bad) in str(e.value)


# --------------------------------------------------------------------------- encoders

def test_direct_encoder_repeats_exactly():
    x = torch.rand(4, 1, 5, 5, requires_grad=True)
    out = DirectEncoder(6)(x)
    assert out.shape == (6, 4, 1, 5, 5)
    assert all(torch.equal(out[t], x) for t in range(6))
    out.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 6.0))
    with pytest.raises(ValueError, match="time_steps"):
        DirectEncoder(0)


def test_poisson_encoder_rate_and_reproducibility():
    x = torch.linspace(0, 1, 11).reshape(1, 11)
    enc = PoissonEncoder(4000, generator=torch.Generator().manual_seed(0))
    s = enc(x)
    assert s.shape == (4000, 1, 11)
    assert set(torch.unique(s).tolist()) <= {0.0, 1.0}
    assert torch.allclose(s.mean(0), x, atol=0.03)
    assert s[:, 0, 0].sum() == 0 and s[:, 0, -1].sum() == 4000  # rates 0 and 1 are exact
    # out-of-range inputs are clamped to valid probabilities
    clamped = PoissonEncoder(50)(torch.tensor([[-0.5, 1.5]]))
    assert clamped[:, 0, 0].sum() == 0 and clamped[:, 0, 1].sum() == 50

    x = torch.full((3, 8), 0.5)
    a = PoissonEncoder(20, torch.Generator().manual_seed(7))(x)
    b = PoissonEncoder(20, torch.Generator().manual_seed(7))(x)
    enc = make_encoder("poisson", 20)
    enc.generator = torch.Generator().manual_seed(8)  # settable after construction
    c = enc(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_poisson_encoder_straight_through_gradient():
    x = torch.full((2, 3), 0.3, requires_grad=True)
    out = PoissonEncoder(10, torch.Generator().manual_seed(1))(x)
    w = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1)
    (out * w).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, float(w.sum())))  # d spikes / d x = 1 at every step


def test_temporal_encoder():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    out = TemporalEncoder()(x)
    assert out.shape == (5, 2, 3)
    assert all(torch.equal(out[t, b], x[b, t]) for t in range(5) for b in range(2))
    assert torch.equal(make_encoder("temporal", 5)(x), out)
    with pytest.raises(ValueError) as e:
        TemporalEncoder(7)(x)
    assert "7" in str(e.value) and "5" in str(e.value)
    with pytest.raises(ValueError, match=r"\(B, T, F\)"):
        TemporalEncoder()(torch.zeros(2, 1, 4, 4))


def test_make_encoder_names():
    assert isinstance(make_encoder("direct", 3), DirectEncoder) and make_encoder("direct", 3).time_steps == 3
    assert isinstance(make_encoder("poisson", 3), PoissonEncoder)
    assert make_encoder("temporal", None).time_steps is None
    with pytest.raises(ValueError) as e:
        make_encoder("rank-order", 3)
    assert all(n in str(e.value) for n in ("direct", "poisson", "temporal"))
    with pytest.raises(ValueError, match="time_steps"):
        make_encoder("direct", None)
