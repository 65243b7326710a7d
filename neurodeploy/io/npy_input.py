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

__all__ = ["MAX_STEPS", "InputFileError", "InputArray", "memory_available", "load_input_npy", "open_input_npy"]

_MADV_POPULATE_READ = 22    # linux/mman.h (Python 3.10's mmap module does not name it)

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


def open_input_npy(path: Union[str, os.PathLike], input_shape: Sequence[int], max_value: int, *,
                   what: str = "--input", max_steps: int = MAX_STEPS, min_value: int = 0) -> "InputArray":
    """The ``(samples, steps, *input_shape)`` array in ``.npy`` file ``path`` as a read-only memory map.

    Everything that does not need the data is checked from the header here
    (file type, dtype, shape against the network's ``input_shape``, the file's
    size against the shape); the values are checked chunk by chunk as they are
    read (:meth:`InputArray.chunk`), so a run can stream a file of any size.
    Any problem is an :class:`InputFileError` naming ``what``, the file, what
    was found and what was expected. Values must lie in ``min_value..max_value``.
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
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        text = " ".join(str(exc).split())[:160]
        raise InputFileError(f"{what} {path}: cannot map the array ({text})") from None
    return InputArray(path, what, mapped, int(max_value), int(min_value))


class InputArray:
    """A memory-mapped input file whose values are checked as they are read."""

    def __init__(self, path: Path, what: str, mapped: np.ndarray, max_value: int, min_value: int = 0):
        self.path, self.what, self.mapped, self.max_value = path, what, mapped, max_value
        self.min_value = min_value
        self.shape = tuple(mapped.shape)
        self.dtype = mapped.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def check_memory(self, chunk_samples: int) -> None:
        """Refuse (one line) when streaming ``chunk_samples`` samples at a time needs more memory than is
        available: the chunk, the emulator's int64 working copies of it and the chunk's outputs."""
        per_sample = 1
        for d in self.shape[1:]:
            per_sample *= d
        rows = min(int(chunk_samples), self.shape[0])
        working = rows * per_sample * (self.dtype.itemsize + 16) + rows * self.shape[1] * 8
        avail = memory_available()
        if avail is not None and working > avail:
            raise InputFileError(f"{self.what} {self.path}: streaming shape {self.shape} in chunks of {rows} "
                                 f"samples needs about {_gib(working)} of memory, {_gib(avail)} is available")

    def chunk(self, start: int, stop: int, check: bool = True) -> np.ndarray:
        """Samples ``start:stop`` of the file (in its dtype), their values checked (``check``; else the
        caller's consumer checks them and calls :meth:`check` for the message): a read-only view of the
        memory map, valid until the next call.

        No copy: the chunk's pages are mapped in one ``MADV_POPULATE_READ`` call (Linux >= 5.14; a
        page fault per 4 KiB otherwise), ~15 GB/s from the page cache where copying out of the map ran at
        ~2 GB/s, and the pages before ``start`` are released, so the process's memory does not grow with
        the file."""
        stop = min(stop, self.shape[0])
        self._release(start)                      # the previous chunk's pages: its view is done with
        self._populate(start, stop)
        part = self.mapped[start:stop]
        if check:
            self.check(part, start)
        return part

    def _span(self, start: int, stop: int) -> Optional[tuple]:
        """(mmap, page-aligned offset, length) of samples ``start:stop`` in the file's map, or None."""
        import mmap

        mm = getattr(self.mapped, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not len(self.mapped):
            return None
        per = self.mapped[0].nbytes
        lead = self.mapped.offset % mmap.ALLOCATIONGRANULARITY if hasattr(self.mapped, "offset") else 0
        begin = (lead + start * per) // mmap.PAGESIZE * mmap.PAGESIZE
        end = min(lead + stop * per, len(mm))
        return (mm, begin, end - begin) if end > begin else None

    def _populate(self, start: int, stop: int) -> None:
        span = self._span(start, stop)
        if span is not None:
            mm, begin, length = span
            try:
                mm.madvise(_MADV_POPULATE_READ, begin, length)
            except (OSError, ValueError):         # older kernels: the pages fault in as they are read
                pass

    def _release(self, stop: int) -> None:
        """Drop the mapped pages before sample ``stop`` (read-only file pages: read again if touched)."""
        import mmap

        span = self._span(0, stop)
        if span is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        mm, _, length = span
        length = length // mmap.PAGESIZE * mmap.PAGESIZE
        if length > 0:
            try:
                mm.madvise(mmap.MADV_DONTNEED, 0, length)
            except (OSError, ValueError):
                pass

    def check(self, part: np.ndarray, start: int) -> None:
        """:class:`InputFileError` naming the file, the index and the value, if ``part`` (samples from
        ``start``) holds one out of range (or, in a float file, one that is not an integer)."""
        what, path, max_value, min_value, dtype = self.what, self.path, self.max_value, self.min_value, self.dtype
        if dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(part) | (part != np.round(part))
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                value = float(part[idx])
                idx = (idx[0] + start,) + idx[1:]
                raise InputFileError(f"{what} {path}: value {value!r} at index {idx} ({dtype}); expected integer "
                                     f"values {min_value}..{max_value}")
        if part.size and dtype != np.bool_:
            lo = 0 if dtype.kind == "u" else part.min()       # unsigned: no value below 0
            hi = part.max()
            if lo < min_value or hi > max_value:
                bad = np.argwhere((part < min_value) | (part > max_value))[0]
                idx = (int(bad[0]) + start,) + tuple(int(i) for i in bad[1:])
                value = part[tuple(bad)]
                shown = int(value) if dtype.kind in "biu" else float(value)
                kind = "0/1 spikes" if (min_value, max_value) == (0, 1) else \
                    f"graded values up to {max_value}" if min_value == 0 else "int32 values"
                raise InputFileError(f"{what} {path}: value {shown} at index {idx}; expected {min_value}..{max_value} "
                                     f"({kind})")


def load_input_npy(path: Union[str, os.PathLike], input_shape: Sequence[int], max_value: int, *,
                   what: str = "--input", max_steps: int = MAX_STEPS, min_value: int = 0) -> np.ndarray:
    """The ``(samples, steps, *input_shape)`` integer array in ``.npy`` file ``path``, fully checked, in memory.

    :func:`open_input_npy`'s checks, then the memory the run needs against
    what is available, then every value (in bounded chunks through the
    memory map); the returned array is an in-memory copy.
    """
    arr = open_input_npy(path, input_shape, max_value, what=what, max_steps=max_steps, min_value=min_value)
    shape, dtype = arr.shape, arr.dtype
    count = 1
    for d in shape:
        count *= d
    n, steps = shape[0], shape[1]
    # the array itself, an int64 working copy and the recorded outputs (of a similar size)
    working = count * (dtype.itemsize + 8) + n * steps * 8
    avail = memory_available()
    if avail is not None and working > avail:
        raise InputFileError(f"{what} {arr.path}: shape {shape} needs about {_gib(working)} of memory to run, "
                             f"{_gib(avail)} is available; pass fewer samples")
    per_sample = max(1, count // n)
    chunk = max(1, (1 << 22) // per_sample)
    for start in range(0, n, chunk):
        arr.chunk(start, start + chunk)
    return np.array(arr.mapped)
