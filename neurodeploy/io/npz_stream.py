"""An ``.npz`` written chunk by chunk (``simulate --out``), so memory stays flat for any number of samples.

Each array grows along its first axis as chunks arrive; its bytes go to an
anonymous temporary file beside the output (deleted by the OS whatever
happens), and :meth:`StreamingNpz.write` assembles the zip archive (one
``.npy`` member per array, as ``np.savez`` writes it; ``compress``: deflated
as ``np.savez_compressed``) at a temporary path that replaces the output only
when complete (:func:`neurodeploy.fileio.atomic_path`). ``np.load`` reads it.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Union

import numpy as np

from ..fileio import atomic_path

__all__ = ["StreamingNpz"]

_COPY_BLOCK = 1 << 22


class StreamingNpz:
    """Arrays appended chunk by chunk (``append``) or set whole (``set``), written as one ``.npz``."""

    def __init__(self, path: Union[str, Path], compress: bool = False):
        self.path = Path(path)
        self.compress = bool(compress)
        self._parts: dict = {}       # name -> [file, dtype, trailing shape, rows]
        self._whole: dict = {}
        self._folder = self.path.parent if self.path.parent.is_dir() else None

    def append(self, name: str, chunk: np.ndarray) -> None:
        """Append ``chunk`` (rows, ...) to array ``name`` (same dtype and trailing shape every time)."""
        chunk = np.ascontiguousarray(chunk)
        part = self._parts.get(name)
        if part is None:
            part = [tempfile.TemporaryFile(dir=self._folder), chunk.dtype, chunk.shape[1:], 0]
            self._parts[name] = part
        if chunk.dtype != part[1] or chunk.shape[1:] != part[2]:
            raise ValueError(f"{name}: chunk {chunk.dtype} {chunk.shape} does not continue {part[1]} "
                             f"(rows, {part[2]})")
        part[0].write(chunk.tobytes())
        part[3] += chunk.shape[0]

    def set(self, name: str, value) -> None:
        """Array ``name`` whole (small values: scalars, metadata)."""
        self._whole[name] = np.asarray(value)

    def write(self) -> Path:
        """The ``.npz`` at ``path`` (atomically); the temporary files are closed either way."""
        from numpy.lib import format as npy

        method = zipfile.ZIP_DEFLATED if self.compress else zipfile.ZIP_STORED
        try:
            with atomic_path(self.path) as tmp, zipfile.ZipFile(tmp, "w", compression=method,
                                                                allowZip64=True) as zf:
                for name, (fh, dtype, trailing, rows) in self._parts.items():
                    header = {"descr": npy.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": (rows, *trailing)}
                    with zf.open(name + ".npy", "w", force_zip64=True) as member:
                        npy.write_array_header_1_0(member, header)   # a few ints: far below its 64 KiB
                        fh.seek(0)
                        shutil.copyfileobj(fh, member, _COPY_BLOCK)
                for name, value in self._whole.items():
                    with zf.open(name + ".npy", "w", force_zip64=True) as member:
                        npy.write_array(member, value, allow_pickle=False)
        finally:
            self.close()
        return self.path

    def close(self) -> None:
        for fh, *_ in self._parts.values():
            fh.close()
        self._parts = {}

    def __enter__(self) -> "StreamingNpz":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

