"""Child processes and shared memory of a run that forks workers (the Lava backend).

Lava 0.10 starts one OS process per Lava process, plus a runtime service and a
shared-memory manager, all with ``multiprocessing`` and the ``fork`` start
method, and talks to them through POSIX shared memory (``/dev/shm/psm_*``).
This module makes those children safe to interrupt:

* :func:`guarded_children` (a context manager around the start): every
  process forked inside it gets ``PR_SET_PDEATHSIG = SIGKILL`` (Linux: the
  kernel kills it when the thread that forked it dies, also on ``kill -9``
  of the parent), ignores SIGINT (a terminal's Ctrl-C goes to the whole
  foreground process group: only the parent handles it and stops the
  children) and takes SIGTERM's default action (not the parent's Python
  handler, which it inherited). A child whose parent died before the prctl
  took effect exits at once.
  It also holds SIGINT/SIGTERM across each ``multiprocessing`` start: a
  signal that lands in ``os.fork``'s at-fork hooks is otherwise reported as
  "Exception ignored" and lost (the run went on to the end).
* :func:`deferred_signals`: the same hold around a short cleanup.
* :func:`kill_and_reap` and :func:`unlink_segments`: the forced cleanup
  (SIGKILL, reap, unlink the segments by name, which also takes them off the
  ``multiprocessing`` resource tracker, so it prints no "leaked
  shared_memory" warnings).
* :class:`SegmentRecord`: a small file in ``/dev/shm`` naming the segments of
  a live run; a later run unlinks the segments of records whose process is
  gone (for when the parent *and* the resource tracker were killed, e.g.
  ``kill -9`` of the whole process group).
* :func:`memory_available` / :func:`available_memory_mib` (``MemAvailable`` of ``/proc/meminfo``).

Only the standard library; nothing happens at import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional

__all__ = ["guarded_children", "deferred_signals", "kill_and_reap", "unlink_segments", "SegmentRecord",
           "clean_stale_segments", "memory_available", "available_memory_mib", "pid_alive"]

_PR_SET_PDEATHSIG = 1
SHM_DIR = Path("/dev/shm")
RECORD_PREFIX = "neurodeploy-lava-"

_lock = threading.Lock()
_armed = 0                       # >0 while some thread is inside guarded_children()
_hooks_installed = False
_prctl = None                    # libc prctl, loaded before any guarded fork
_fork_parent: Optional[int] = None


def _load_prctl():
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.prctl
        fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):   # not Linux / no libc: children get the signal setup only
        return None


def _before_fork() -> None:
    global _fork_parent
    if _armed:
        _fork_parent = os.getpid()


def _after_fork_in_child() -> None:
    """Runs in every child forked while armed (inside os.fork, before multiprocessing's bootstrap)."""
    if not _armed:
        return
    try:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if _fork_parent is not None and os.getppid() != _fork_parent:
            os._exit(1)              # the parent died between fork and prctl: nobody will stop us
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except Exception:  # noqa: BLE001 - never break a fork; the parent's cleanup still applies
        pass


_original_start = None


def _guarded_start(self) -> None:
    """``multiprocessing.Process.start`` with SIGINT/SIGTERM held across the fork.

    A signal that arrives during ``os.fork`` is otherwise handled inside the
    at-fork hooks (``logging`` registers some), where Python reports the
    KeyboardInterrupt as "Exception ignored" and drops it: the Ctrl-C is lost.
    Held here, it is raised once ``start()`` has returned (the child recorded).
    """
    with deferred_signals():
        _original_start(self)


@contextlib.contextmanager
def guarded_children() -> Iterator[None]:
    """Processes forked inside this block die with this process and leave SIGINT to it (see module doc).

    Also starts the ``multiprocessing`` resource tracker first, so every child
    shares this process's tracker: when all of them are gone (even by
    SIGKILL), it unlinks the shared memory they still had registered; and
    holds SIGINT/SIGTERM across each ``multiprocessing`` start (see
    :func:`_guarded_start`), so a Ctrl-C during the start is not lost.
    """
    global _armed, _hooks_installed, _prctl, _original_start
    from multiprocessing import process as mp_process

    with _lock:
        if not _hooks_installed:
            _prctl = _load_prctl()
            os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
            _hooks_installed = True
        if _armed == 0:
            _original_start = mp_process.BaseProcess.start
            mp_process.BaseProcess.start = _guarded_start
        _armed += 1
    try:
        try:
            from multiprocessing import resource_tracker
            resource_tracker.ensure_running()
        except Exception:  # noqa: BLE001 - without a tracker the explicit cleanup still runs
            pass
        yield
    finally:
        with _lock:
            _armed -= 1
            if _armed == 0:
                mp_process.BaseProcess.start = _original_start


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError, ValueError):
        return False


def kill_and_reap(procs: Iterable, timeout: float = 3.0) -> list:
    """SIGKILL ``procs`` (``multiprocessing.Process`` objects) and reap them; returns those still alive."""
    procs = list(procs)
    for p in procs:
        try:
            if p.is_alive():
                p.kill()
        except (OSError, ValueError, AssertionError, AttributeError):   # gone, closed, not ours
            pass
    deadline = time.monotonic() + timeout
    alive = procs
    while alive and time.monotonic() < deadline:
        still = []
        for p in alive:
            try:
                if p.is_alive():         # is_alive() reaps a dead child
                    still.append(p)
            except (ValueError, AssertionError, AttributeError):
                pass
        alive = still
        if alive:
            time.sleep(0.01)
    return alive


def unlink_segments(names: Iterable[str]) -> int:
    """Unlink the POSIX shared memory ``names`` (``psm_...``, with or without '/'); returns how many existed.

    Uses ``SharedMemory.unlink`` semantics (shm_unlink, then unregister from
    this process's resource tracker) without mapping the segment.
    """
    try:
        import _posixshmem
        from multiprocessing import resource_tracker
    except ImportError:   # pragma: no cover - not POSIX
        return 0
    done = 0
    for name in names:
        name = "/" + name.lstrip("/")
        try:
            _posixshmem.shm_unlink(name)
        except FileNotFoundError:
            continue
        except OSError:
            continue
        done += 1
        try:
            resource_tracker.unregister(name, "shared_memory")
        except Exception:  # noqa: BLE001 - the tracker is gone: nothing to tell it
            pass
    return done


def _starttime(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None


class SegmentRecord:
    """``/dev/shm/neurodeploy-lava-<pid>-<starttime>``: the segment names of this process's live run.

    Written once the run's segments exist, removed when they are gone; a
    record whose process is dead (or whose pid was reused: the start time
    differs) is stale, see :func:`clean_stale_segments`.
    """

    def __init__(self, directory: Path = SHM_DIR) -> None:
        pid = os.getpid()
        self.path = Path(directory) / f"{RECORD_PREFIX}{pid}-{_starttime(pid) or 0}-{id(self):x}"

    def write(self, names: Iterable[str]) -> None:
        try:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(n.lstrip("/") + "\n" for n in names))
            os.replace(tmp, self.path)
        except OSError:      # no /dev/shm record: only the stale-run cleanup is lost
            pass

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def clean_stale_segments(directory: Path = SHM_DIR) -> int:
    """Unlink the segments named by records of dead processes (and the records); returns how many."""
    done = 0
    try:
        entries = list(Path(directory).glob(RECORD_PREFIX + "*"))
    except OSError:
        return 0
    for rec in entries:
        parts = rec.name[len(RECORD_PREFIX):].split(".")[0].split("-")   # (a .tmp one was being written)
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        pid, start = int(parts[0]), parts[1]
        if pid_alive(pid) and _starttime(pid) == start:
            continue
        try:
            names = [n.strip() for n in rec.read_text().splitlines()
                     if n.strip().startswith("psm_") and "/" not in n.strip()]
        except OSError:
            continue
        done += unlink_segments(names)
        with contextlib.suppress(OSError):
            rec.unlink()
    return done


def memory_available() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def available_memory_mib() -> Optional[int]:
    """:func:`memory_available` in MiB (None where unknown)."""
    mem = memory_available()
    return None if mem is None else mem // 2**20


@contextlib.contextmanager
def deferred_signals(signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[list]:
    """Hold SIGINT/SIGTERM while a short cleanup runs; re-deliver one afterwards.

    Python runs signal handlers in the main thread, so this only acts there
    (elsewhere the block runs unprotected). A signal that arrived is passed to
    the handler that was installed before (for Ctrl-C: KeyboardInterrupt)
    unless the caller clears the yielded list.
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    pending: list = []
    saved = {}
    for sig in signals:
        try:
            saved[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
        except (ValueError, OSError):   # pragma: no cover - not settable here
            pass
    try:
        yield pending
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if pending:
            sig = pending[0]
            handler = saved.get(sig)
            if callable(handler):
                handler(sig, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), sig)
