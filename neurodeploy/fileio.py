"""File access shared by every command: atomic writes and safe reads.

* :func:`atomic_path` / :func:`write_text_atomic`: a command never leaves a
  half-written output behind (temporary file in the target folder, fsync,
  rename; parent folders created).
* :func:`require_regular_file`: inputs must be regular files, so a named pipe
  or a device given as a netx, ``.npy`` or config file is refused instead of
  blocking forever.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator, Union

from .errors import NeurodeployError

__all__ = ["FileAccessError", "atomic_path", "write_text_atomic", "require_regular_file"]


class FileAccessError(NeurodeployError, OSError):
    """An input path is missing or not a regular file, or an output cannot be written."""


@contextlib.contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The temporary name keeps ``path``'s suffix (some writers, e.g. ``np.savez``,
    append one otherwise); its data are fsynced before the rename; on any
    error, Ctrl-C included, it is removed.
    """
    path = Path(path)
    if path.is_dir():
        raise FileAccessError(f"{path}: is a folder; expected a file path to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileAccessError(f"{path.parent}: cannot create the output folder ({exc.strerror})") from None
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def write_text_atomic(path: Union[str, Path], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def require_regular_file(path: Union[str, Path], what: str = "file") -> Path:
    """``path`` as a Path if it is an existing regular file, else a :class:`FileAccessError`.

    ``what`` names the role in the message (``"netx file"``, ``"--input"``).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileAccessError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise FileAccessError(f"{path}: {what} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file"
        raise FileAccessError(f"{path}: {what} is {kind}; expected a regular file")
    return path
