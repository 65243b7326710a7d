"""Interrupting a Lava run: Ctrl-C, SIGTERM and SIGKILL of the real CLI, and the process limit.

The CLI runs in its own session (its process group = its pid, like a shell
job), on a 2-layer network and enough samples to run for minutes; each test
waits until Lava's processes are up and the run is under way, signals, and
checks: exit status, a one-line stderr, no process of the group left, no
shared memory segment the run had mapped left in /dev/shm, no output file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neurodeploy.backends import BackendError, run_network
from neurodeploy.ir import DenseLayer, InputEncoding, Network, Neurons

LAVA_PROCS = 7          # RingBuffer + 2 x (Dense, LIF) + runtime service + shared-memory manager
START_TIMEOUT = 120.0   # imports (torch) and Lava's start on a loaded 2-core machine


def tiny_network(depth: int = 2) -> Network:
    layers, n_prev = [], 3
    for _ in range(depth):
        layers.append(DenseLayer(weight=np.full((2, n_prev), 10),
                                 neurons=Neurons(du=4095, dv=0, vth=25, bias_mant=np.zeros(2, dtype=np.int64))))
        n_prev = 2
    return Network(input_shape=(3,), layers=layers, time_steps=4, input_encoding=InputEncoding("spikes"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from neurodeploy.io import write_netx

    d = tmp_path_factory.mktemp("interrupts")
    write_netx(tiny_network(), d / "tiny.net")
    # 3,000 samples x 22 steps: minutes at Lava's ~300 steps/s
    np.save(d / "x.npy", np.random.default_rng(0).integers(0, 2, (3000, 20, 3)))
    return d


# --------------------------------------------------------------------------- /proc helpers
def _stat(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return f[0], int(f[1]), int(f[2])          # state, ppid, pgid
    except (OSError, IndexError, ValueError):
        return None


def group(pgid: int) -> list:
    """Live (non-zombie) processes of process group ``pgid``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st and st[2] == pgid and st[0] != "Z":
                out.append(int(d))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def lava_children(pgid: int) -> list:
    """The group's processes but the parent and Python's resource tracker."""
    return [p for p in group(pgid) if p != pgid and b"resource_tracker" not in _cmdline(p)]


def mapped_segments(pids) -> set:
    """POSIX shared memory segments (/dev/shm names) mapped by ``pids``."""
    names = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as fh:
                for line in fh:
                    path = line.split(maxsplit=5)[-1].strip()
                    if path.startswith("/dev/shm/"):
                        names.add(path[len("/dev/shm/"):].split(" ")[0])
        except OSError:
            pass
    return names


def wait_until(cond, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    return cond()


def start_running(files, tmp_path):
    """Start the CLI on Lava; return (Popen, stderr path, out path, segments) once it is running."""
    err = tmp_path / "stderr.txt"
    out = tmp_path / "out.npz"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_WAIT_POLICY="PASSIVE")
    env.pop("NEURODEPLOY_LAVA_MAX_PROCESSES", None)
    with open(err, "wb") as fe, open(tmp_path / "stdout.txt", "wb") as fo:
        proc = subprocess.Popen([sys.executable, "-m", "neurodeploy", "simulate", str(files / "tiny.net"),
                                 "--backend", "lava", "--input", str(files / "x.npy"), "--out", str(out), "--quiet"],
                                cwd=tmp_path, env=env, stdout=fo, stderr=fe, start_new_session=True)
    try:
        up = wait_until(lambda: len(lava_children(proc.pid)) >= LAVA_PROCS, START_TIMEOUT, 0.1)
        assert up, f"Lava's processes did not start (stderr: {err.read_text()[-2000:]!r})"
        segs = wait_until(lambda: mapped_segments([proc.pid]), 10)
        time.sleep(1.0)                       # into the run loop
        assert proc.poll() is None, err.read_text()[-2000:]
        segs = mapped_segments(group(proc.pid)) | segs
        assert segs, "the run maps no /dev/shm segment?"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc, err, out, segs


def assert_clean(proc, segs, timeout: float = 15.0):
    left = wait_until(lambda: not group(proc.pid), timeout)
    assert left, f"processes left in the group: {[(p, _cmdline(p)[:80]) for p in group(proc.pid)]}"
    remaining = wait_until(lambda: not [s for s in segs if os.path.exists(f"/dev/shm/{s}")], timeout)
    assert remaining, f"segments left: {[s for s in segs if os.path.exists(f'/dev/shm/{s}')]}"


# --------------------------------------------------------------------------- the interrupts
@pytest.mark.parametrize("how", ["sigint-group", "sigterm"])
def test_interrupt_while_running(files, tmp_path, how):
    proc, err, out, segs = start_running(files, tmp_path)
    t0 = time.monotonic()
    if how == "sigint-group":       # what a terminal's Ctrl-C does: the whole foreground group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    latency = time.monotonic() - t0
    lines = err.read_text().strip().splitlines()
    assert rc == 130, lines[-20:]
    assert lines == ["neurodeploy simulate: interrupted"], lines[:40]
    assert latency < 20, latency        # ~0.2 s to the message; the rest is the interpreter's exit
    assert_clean(proc, segs)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stderr.txt", "stdout.txt"]   # no partial output


def test_sigkill_of_the_parent_takes_the_children(files, tmp_path):
    proc, err, out, segs = start_running(files, tmp_path)
    kids = lava_children(proc.pid)
    proc.kill()
    proc.wait(timeout=30)
    gone = wait_until(lambda: not [p for p in kids if _stat(p) and _stat(p)[0] != "Z"], 10)
    assert gone, [(p, _stat(p)) for p in kids]
    # the children shared the parent's resource tracker: it unlinks the segments once they are all gone
    assert_clean(proc, segs)


# --------------------------------------------------------------------------- the process/memory limit
def test_limit_refuses_before_any_process(monkeypatch, tmp_path, capsys):
    import neurodeploy.backends.lava as lava_backend
    from neurodeploy.cli import main
    from neurodeploy.io import write_netx

    def no_lava(*args, **kwargs):
        raise AssertionError("a Lava process graph was built")

    monkeypatch.setattr(lava_backend, "_Graph", no_lava)
    x = np.zeros((2, 4, 3), dtype=np.int64)
    deep = tiny_network(40)                     # 83 processes > the default 64
    monkeypatch.delenv(lava_backend.MAX_PROCESSES_ENV, raising=False)
    with pytest.raises(BackendError, match=r"40-layer network needs 83 Lava processes .*limit is 64 processes"):
        run_network(deep, x, backend="lava")

    monkeypatch.setenv(lava_backend.MAX_PROCESSES_ENV, "200")
    monkeypatch.setattr(lava_backend, "available_memory_mib", lambda: 1000)
    with pytest.raises(BackendError, match=r"1000 MiB of available memory"):
        run_network(deep, x, backend="lava")

    # through the CLI: one line naming the file, the estimate, the limit and the variable
    write_netx(tiny_network(), tmp_path / "tiny.net")
    np.save(tmp_path / "x.npy", x)
    for value, needle in [("4", "needs 7 Lava processes"), ("zero", "expected a positive integer")]:
        monkeypatch.setenv(lava_backend.MAX_PROCESSES_ENV, value)
        rc = main(["simulate", str(tmp_path / "tiny.net"), "--backend", "lava", "--input", str(tmp_path / "x.npy"),
                   "--out", str(tmp_path / "out.npz"), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert needle in err[0] and lava_backend.MAX_PROCESSES_ENV in err[0], err
        if value == "4":
            assert "limit is 4 processes" in err[0] and "2-layer network" in err[0]
    assert not (tmp_path / "out.npz").exists()


def _counted_by_lava(network: Network, noise=None) -> tuple:
    """(estimate, processes of Lava's compiled executable + its shared-memory manager); starts nothing."""
    import neurodeploy.backends.lava as lb
    from lava.magma.core.run_configs import Loihi2SimCfg
    from neurodeploy.backends.injection import injection_layout
    from neurodeploy.backends.lava_noise import PROC_MODELS

    plan = lb.plan_network(network)
    P = network.time_steps + len(network.layers)
    data = np.zeros((*plan.src_shape, P), dtype=np.int32)
    layout = injection_layout(network, noise)
    streams = None
    if noise is not None:
        streams = [None if inj is None else inj.map(lambda a, lp=lp: lb._noise_stream(a, lp))
                   for inj, lp in zip(noise.injections(network, [0]), plan.layers)]
    graph = lb._Graph(plan, data, P, streams)
    exe = graph.source.compile(Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=dict(PROC_MODELS)))
    started = len(exe.proc_builders) + len(exe.runtime_service_builders) + 1
    return lb.estimate_processes(plan, layout), started


def test_estimate_counts_what_lava_starts():
    from neurodeploy.noise.hardware import StepNoise

    rng = np.random.default_rng(0)

    def nrn(n):
        return Neurons(du=100, dv=100, vth=50, bias_mant=np.zeros(n, dtype=np.int64))

    # a big recurrent layer (Reset processes for its buffers), a small one, a big feed-forward one
    net = Network(input_shape=(3,), time_steps=2, input_encoding=InputEncoding("spikes"), layers=[
        DenseLayer(weight=rng.integers(-9, 9, (130, 3)), weight_rec=rng.integers(-9, 9, (130, 130)), neurons=nrn(130)),
        DenseLayer(weight=rng.integers(-9, 9, (4, 130)), neurons=nrn(4)),
        DenseLayer(weight=rng.integers(-9, 9, (140, 4)), neurons=nrn(140)),
    ])
    for noise in [None, StepNoise("spike-drop", 0.1, 0), StepNoise("current-noise", 0.1, 0),
                  StepNoise("membrane-noise", 0.1, 0)]:
        est, real = _counted_by_lava(net, noise)
        assert est == real, (noise, est, real)


# --------------------------------------------------------------------------- the child guard itself
_RAISE_IN_FORK_HOOK = []


def _raise_sigint_in_hook():
    if _RAISE_IN_FORK_HOOK:
        _RAISE_IN_FORK_HOOK.clear()
        signal.raise_signal(signal.SIGINT)     # as if Ctrl-C arrived during os.fork


os.register_at_fork(after_in_parent=_raise_sigint_in_hook)


def _report(conn):
    import ctypes

    libc = ctypes.CDLL(None)
    sig = ctypes.c_int(0)
    libc.prctl(2, ctypes.byref(sig), 0, 0, 0)          # PR_GET_PDEATHSIG
    conn.send((sig.value, signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
               signal.getsignal(signal.SIGTERM) == signal.SIG_DFL))


def test_guarded_children_signals_and_pdeathsig():
    import multiprocessing

    from neurodeploy.processes import guarded_children

    ctx = multiprocessing.get_context("fork")
    a, b = ctx.Pipe()
    with guarded_children():
        p = ctx.Process(target=_report, args=(b,))
        p.start()
    try:
        assert a.poll(30)
        assert a.recv() == (int(signal.SIGKILL), True, True)
    finally:
        p.join(10)
    # a Ctrl-C that lands in the at-fork hooks is raised after start(), not dropped
    _RAISE_IN_FORK_HOOK.append(1)
    p = None
    with pytest.raises(KeyboardInterrupt):
        with guarded_children():
            p = ctx.Process(target=time.sleep, args=(0,))
            p.start()
    p.join(10)
    assert not _RAISE_IN_FORK_HOOK


def test_stale_segment_records(tmp_path):
    import _posixshmem

    from neurodeploy.processes import RECORD_PREFIX, SegmentRecord, clean_stale_segments

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = [f"psm_ndtest{os.getpid()}_{i}" for i in range(2)]
    for n in names:
        os.close(_posixshmem.shm_open("/" + n, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    try:
        (tmp_path / f"{RECORD_PREFIX}{dead.pid}-1-0").write_text(names[0] + "\n")
        live = SegmentRecord(tmp_path)                 # this process: not stale
        live.write([names[1]])
        assert clean_stale_segments(tmp_path) == 1
        assert not os.path.exists(f"/dev/shm/{names[0]}") and os.path.exists(f"/dev/shm/{names[1]}")
        assert [p.name for p in tmp_path.iterdir()] == [live.path.name]
        live.remove()
        assert not list(tmp_path.iterdir())
    finally:
        for n in names:
            try:
                _posixshmem.shm_unlink("/" + n)
            except FileNotFoundError:
                pass


def _my_children() -> set:
    me = os.getpid()
    return {int(d) for d in os.listdir("/proc") if d.isdigit() and (st := _stat(int(d))) and st[1] == me
            and st[0] != "Z" and b"resource_tracker" not in _cmdline(int(d))}


def test_a_failing_stop_is_raised_not_swallowed(monkeypatch):
    from lava.magma.runtime.runtime import Runtime

    segs = []
    original = Runtime.stop

    def broken_stop(self):
        segs.extend(mapped_segments([os.getpid()]))
        original(self)
        raise RuntimeError("stop failed")

    monkeypatch.setattr(Runtime, "stop", broken_stop)
    before = _my_children()
    x = np.random.default_rng(1).integers(0, 2, (2, 4, 3))
    with pytest.raises(RuntimeError, match="stop failed") as info:
        run_network(tiny_network(), x, backend="lava")
    assert not isinstance(info.value, BackendError)
    assert _my_children() == before
    assert segs and not [s for s in segs if os.path.exists(f"/dev/shm/{s}")]


def test_a_refused_fork_is_a_user_error(monkeypatch):
    import errno
    import multiprocessing.popen_fork as popen_fork

    calls = []
    real_fork = os.fork

    def fork():
        calls.append(1)
        if len(calls) >= 3:          # a few processes start, then the system says no
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return real_fork()

    monkeypatch.setattr(popen_fork.os, "fork", fork)
    before = _my_children()
    with pytest.raises(BackendError, match=r"refused to start Lava's 7 processes: .*Resource temporarily"):
        run_network(tiny_network(), np.zeros((1, 4, 3), dtype=np.int64), backend="lava")
    monkeypatch.undo()
    assert len(calls) == 3
    assert wait_until(lambda: _my_children() == before, 5)
