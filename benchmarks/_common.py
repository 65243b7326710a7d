"""Shared helpers of the benchmark scripts: paths, machine description, command line."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

if str(ROOT) not in sys.path:  # run as `python benchmarks/X.py` without PYTHONPATH
    sys.path.insert(0, str(ROOT))

import neurodeploy  # noqa: E402,F401  (silences Norse's torch.jit.script FutureWarning)


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    """``<commit>`` plus ``+dirty`` when tracked files differ from it (others edit concurrently)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict:
    """Everything that makes a timing comparable: OS, CPU, library versions, threads, load."""
    import importlib.metadata

    import torch

    try:
        norse_version = importlib.metadata.version("norse")
    except importlib.metadata.PackageNotFoundError:
        norse_version = "unknown"
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "norse": norse_version,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "git": git_revision(),
        # thread settings that change CPU timings (OMP_WAIT_POLICY=PASSIVE matters on a shared machine)
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")
                if k in os.environ},
    }


def machine_line(info: dict) -> str:
    return (f"{info['platform']}; {info['cpu_model']}; os.cpu_count()={info['cpu_count']}; "
            f"Python {info['python']}, torch {info['torch']}, norse {info['norse']}; "
            f"torch threads {info['torch_threads']}; load average {info['load_average_1_5_15']}; "
            f"git {info['git']}"
            + (f"; env {' '.join(f'{k}={v}' for k, v in info['env'].items())}" if info.get("env") else ""))


def command_line() -> str:
    """The command as it was run, relative to the repository root."""
    try:
        script = str(Path(sys.argv[0]).resolve().relative_to(ROOT))
    except ValueError:
        script = sys.argv[0]
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
           if k in os.environ]
    return shlex.join([*env, "PYTHONPATH=.", "$PY", script, *sys.argv[1:]]).replace("'$PY'", "$PY")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _busy_seconds() -> float | None:
    """CPU seconds all processes spent busy since boot (/proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is in user)
    return busy / os.sysconf("SC_CLK_TCK")


class CpuMonitor:
    """How busy the machine was during a block: our own and other processes' CPU use, in cores."""

    def __enter__(self) -> "CpuMonitor":
        self._t, self._busy, self._own = _now(), _busy_seconds(), _own_cpu()
        return self

    def __exit__(self, *exc) -> None:
        wall = _now() - self._t
        own = (_own_cpu() - self._own) / wall
        busy_end = _busy_seconds()
        total = None if self._busy is None or busy_end is None else (busy_end - self._busy) / wall
        self.result = {"wall_seconds": round(wall, 2), "own_cores": round(own, 2),
                       "all_busy_cores": None if total is None else round(total, 2),
                       "others_busy_cores": None if total is None else round(max(total - own, 0.0), 2)}


def _now() -> float:
    import time

    return time.perf_counter()


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system
