"""File access shared by every command: atomic writes and safe reads.

* :func:`atomic_path` / :func:`write_text_atomic`: a command never leaves a
  half-written output behind (temporary file in the target folder, fsync,
  rename; parent folders created).
* :func:`require_regular_file`: inputs must be regular files, so a named pipe
  or a device given as a netx, ``.npy`` or config file is refused instead of
  blocking forever.
* :func:`inside`: a path built from a name found in a file (a profile's or a
  config's ``name:``) must stay inside the folder the user named.
* :func:`check_output_file` / :func:`check_output_folder`: an ``--out`` that
  cannot be written is refused before any long work starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import NeurodeployError, bounded

__all__ = ["NAME_PATTERN", "check_name", "FileAccessError", "atomic_path", "write_text_atomic", "require_regular_file", "inside",
           "check_output_file", "check_output_folder"]


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # a run or profile name becomes a folder name


def check_name(name: object, where: str, src: str, error: Optional[type] = None) -> str:
    """``name`` if it is a safe file-name part (it becomes ``runs/<name>/``), else ``error`` (a NeurodeployError)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise (error or NeurodeployError)(
            f"{src}: {where}: {bounded(name)} is not a valid name; expected 1-100 letters, digits, "
            f"'_', '.' or '-', starting with a letter or digit (it becomes a folder name)")
    return name


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


def inside(base: Union[str, Path], *parts: Union[str, Path], what: str = "name") -> Path:
    """``base / parts``, refused (:class:`FileAccessError`) unless it lies strictly inside ``base``.

    For paths built from names read from files (a profile's ``name:``, a
    config's ``name:``): an absolute name, ``..``, an empty name or one with
    a NUL byte, and a symlink inside ``base`` that leads out of it are all
    refused, so a command never writes outside the folder the user named.
    ``what`` names the source of the parts in the message.
    """
    from .errors import bounded

    base = Path(base)
    shown = bounded("/".join(str(p) for p in parts))
    for part in parts:
        text = str(part)
        if not text or text.strip() != text or "\x00" in text or os.path.isabs(text):
            raise FileAccessError(f"{what} {shown}: not usable as a folder name inside {base} "
                                  f"(expected a plain relative name)")
    target = Path(base, *parts)
    lexical = os.path.normpath(os.path.join(*(str(p) for p in parts))) if parts else "."
    try:
        real_base = base.resolve()
        real = target.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise FileAccessError(f"{target}: cannot resolve the output path ({exc})") from None
    if (parts and (lexical in (".", "") or lexical == ".." or lexical.startswith(".." + os.sep)
                   or real == real_base)) or not real.is_relative_to(real_base):
        raise FileAccessError(f"{what} {shown}: the output path {target} leaves the folder {base} "
                              f"(expected a plain name of a folder inside it)")
    return target


def _writable_ancestor(path: Path, what: str) -> None:
    """The deepest existing ancestor of ``path`` must be a folder we can create a file in."""
    parent = path.parent
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise FileAccessError(f"{what} {path}: {parent} is not a folder; expected a writable folder there")
    _probe_write(parent, f"{what} {path}: cannot write in {parent}")


def _probe_write(folder: Path, message: str) -> None:
    """Create and remove a temporary file in ``folder``; ``message (reason)`` as the error if that fails."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".neurodeploy-check.", dir=folder)
    except OSError as exc:
        raise FileAccessError(f"{message} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path: Union[str, Path, None], what: str = "--out") -> Path:
    """``path`` as a Path if a file can be written there, else a one-line :class:`FileAccessError`.

    Run before any long work: an empty path, an existing folder, a path
    ending in a separator and a folder that cannot be written are refused.
    Nothing is created (the parents are made by :func:`atomic_path` later).
    """
    text = "" if path is None else os.fspath(path)
    if not str(text).strip():
        raise FileAccessError(f"{what} {text!r}: empty; expected a file path to write")
    if str(text).endswith(("/", os.sep)):
        raise FileAccessError(f"{what} {text}: ends in a separator (a folder); expected a file path to write")
    path = Path(text)
    if path.is_dir():
        raise FileAccessError(f"{what} {path}: is a folder; expected a file path to write")
    if path.exists() and not path.is_file():
        raise FileAccessError(f"{what} {path}: exists and is not a regular file; expected a file path to write")
    if path.exists() and not os.access(path, os.W_OK):
        raise FileAccessError(f"{what} {path}: exists and is not writable")
    _writable_ancestor(path, what)
    return path


def check_output_folder(path: Union[str, Path, None], what: str = "--out") -> Path:
    """``path`` as a Path if it is (or can become) a writable folder, else a :class:`FileAccessError`."""
    text = "" if path is None else os.fspath(path)
    if not str(text).strip():
        raise FileAccessError(f"{what} {text!r}: empty; expected a folder path")
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise FileAccessError(f"{what} {path}: exists and is not a folder; expected a folder path")
        _probe_write(path, f"{what} {path}: cannot write in this folder")
        return path
    _writable_ancestor(path, what)
    return path
