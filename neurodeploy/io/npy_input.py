"""Input arrays from ``.npy`` files (``simulate --input``), checked before they are used.

Kept free of torch so that a ``simulate`` on Lava or the emulator starts (and
exits) without loading it.
"""

from __future__ import annotations

import os
import tokenize
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import NeurodeployError
from ..fileio import require_regular_file
from ..processes import memory_available

__all__ = ["MAX_STEPS", "InputFileError", "memory_available", "load_input_npy"]

MAX_STEPS = 100_000
"""Most time steps per sample an input may have (``--steps`` and ``.npy`` inputs alike)."""


class InputFileError(NeurodeployError, ValueError):
    """An input array file (``simulate --input``) is not a usable ``.npy`` array; the message says why."""


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def _read_npy_header(path: Path, what: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) from a ``.npy`` header, without reading the data."""
    from numpy.lib import format as npy

    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
            if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
                raise InputFileError(f"{what} {path}: a zip archive (.npz?); expected a single array saved "
                                     f"with np.save (.npy)")
            if head != b"\x93NUMPY":
                raise InputFileError(f"{what} {path}: not a .npy file (starts with {head!r}); expected an "
                                     f"array saved with np.save")
            fh.seek(0)
            version = npy.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(fh)
            else:
                raise InputFileError(f"{what} {path}: .npy format version {version[0]}.{version[1]} holds "
                                     f"structured data; expected a plain integer array (version 1.0 or 2.0)")
            offset = fh.tell()
    except InputFileError:
        raise
    except OSError as exc:
        raise InputFileError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, TypeError, SyntaxError, OverflowError, EOFError, RecursionError, MemoryError,
            tokenize.TokenError) as exc:  # what numpy's header parser raises for a damaged header
        text = " ".join(str(exc).split())[:160]
        raise InputFileError(f"{what} {path}: not a readable .npy header ({text})") from None
    return tuple(int(d) for d in shape), np.dtype(dtype), bool(fortran), offset


def load_input_npy(path: Union[str, os.PathLike], input_shape: Sequence[int], max_value: int, *,
                   what: str = "--input", max_steps: int = MAX_STEPS, min_value: int = 0) -> np.ndarray:
    """The ``(samples, steps, *input_shape)`` integer array in ``.npy`` file ``path``, fully checked.

    Everything that does not need the data is checked from the header first
    (file type, dtype, shape against the network's ``input_shape``, the
    file's size against the shape, the memory the run needs against what is
    available), then the values in bounded chunks through a read-only memory
    map: finite, integer-valued, within ``min_value..max_value`` (default 0..). Any problem is an
    :class:`InputFileError` naming ``what``, the file, what was found and
    what was expected; the returned array is an in-memory copy.
    """
    path = require_regular_file(path, f"{what} file")
    in_shape = tuple(int(s) for s in input_shape)
    expected = f"(samples, steps, {', '.join(map(str, in_shape))})"
    shape, dtype, _, offset = _read_npy_header(path, what)
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
        raise InputFileError(f"{what} {path}: dtype {dtype} ({dtype.kind!r}); expected integer (or bool, or "
                             f"float holding integers) spike or graded values")
    if len(shape) != 2 + len(in_shape) or tuple(shape[2:]) != in_shape:
        raise InputFileError(f"{what} {path}: shape {shape}, expected {expected} for the network's input "
                             f"shape {in_shape}")
    n, steps = shape[0], shape[1]
    if n < 1:
        raise InputFileError(f"{what} {path}: shape {shape} holds no samples; expected {expected} with "
                             f"samples >= 1")
    if not 1 <= steps <= max_steps:
        raise InputFileError(f"{what} {path}: shape {shape} has {steps} steps per sample; expected 1..{max_steps}")
    count = 1
    for d in shape:
        count *= d
    need = count * dtype.itemsize
    have = path.stat().st_size - offset
    if have != need:
        raise InputFileError(f"{what} {path}: the header says shape {shape} ({dtype}, {need} bytes of data) but "
                             f"the file holds {have} bytes (truncated or corrupt)")
    # the array itself, an int64 working copy and the recorded outputs (of a similar size)
    working = count * (dtype.itemsize + 8) + n * steps * 8
    avail = memory_available()
    if avail is not None and working > avail:
        raise InputFileError(f"{what} {path}: shape {shape} needs about {_gib(working)} of memory to run, "
                             f"{_gib(avail)} is available; pass fewer samples")
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        text = " ".join(str(exc).split())[:160]
        raise InputFileError(f"{what} {path}: cannot map the array ({text})") from None
    per_sample = max(1, count // n)
    chunk = max(1, (1 << 22) // per_sample)
    is_float = dtype.kind == "f"
    for start in range(0, n, chunk):
        part = np.asarray(mapped[start:start + chunk])
        if is_float:
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(part) | (part != np.round(part))
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                idx = (idx[0] + start,) + idx[1:]
                raise InputFileError(f"{what} {path}: value {float(part[(idx[0] - start,) + idx[1:]])!r} at index "
                                     f"{idx} ({dtype}); expected integer values {min_value}..{max_value}")
        if part.size:
            lo, hi = part.min(), part.max()
            if lo < min_value or hi > max_value:
                bad = np.argwhere((part < min_value) | (part > max_value))[0]
                idx = (int(bad[0]) + start,) + tuple(int(i) for i in bad[1:])
                value = part[tuple(bad)]
                shown = int(value) if dtype.kind in "biu" else float(value)
                kind = "0/1 spikes" if (min_value, max_value) == (0, 1) else \
                    f"graded values up to {max_value}" if min_value == 0 else "int32 values"
                raise InputFileError(f"{what} {path}: value {shown} at index {idx}; expected {min_value}..{max_value} "
                                     f"({kind})")
    return np.array(mapped)
