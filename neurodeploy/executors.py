"""Where the work units of a sweep run: this process, a small process pool, or a Ray cluster.

A sweep is a list of :class:`Task`: a pure, module-level function of the
task's coordinates (``fn(shared, **params)``) that returns a JSON-able result,
plus the objects every task reads (``shared``: the deployed network, the
model, the encoded inputs), which move to each worker once per sweep, not once
per task. An executor runs the tasks in any order on any number of workers and
returns the results keyed by the tasks' coordinates (:class:`Outcome`), so what
a caller builds from them never depends on the worker count or the order.

* :class:`LocalExecutor` (the default): ``workers=1`` runs every task in this
  process, in order; more workers run them in a pool of spawned processes
  (each gets ``shared`` once, through the pool's initializer).
* :class:`RayExecutor`: ``ray.init(address=...)`` joins a running cluster, or
  without an address starts a local one with ``num_cpus=workers``. ``shared``
  goes into Ray's object store once (``ray.put``); one actor per worker fetches
  it once and runs many tasks on it. The actors start once per ``with`` block
  of the executor and serve every sweep in it; they are killed when it ends,
  and at once on an error or Ctrl-C; a Lava runtime inside dies with its actor
  (its processes carry ``PR_SET_PDEATHSIG``, :mod:`neurodeploy.processes`).

What a worker builds once and keeps for many tasks (a network compiled on
Lava: :func:`worker_resource`) is closed when the sweep ends on that worker:
in this process after the last task, in a pool worker when it exits, on Ray by
each actor before it is killed.

A task that raises is retried once (on a fresh actor if its actor died); if it
fails again it is reported in :attr:`Outcome.failures` with its coordinates
and the error, and the caller reports the point as missing. An error the user
can fix (:class:`~neurodeploy.errors.NeurodeployError`: bad input) is not
retried: it is raised as it is, as it would be without an executor.

Ray is an optional extra (``pip install neurodeploy[ray]``), imported only
when a Ray executor is made.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from .errors import NeurodeployError

EXECUTORS = ("local", "ray")
MAX_WORKERS = 1024
CLOSE_TIMEOUT_S = 120.0          # for the actors to stop their Lava runtimes at the end of a sweep


class ExecutorError(NeurodeployError, RuntimeError):
    """An executor cannot be made or reached (Ray missing, a bad address or worker count)."""


class SweepIncomplete(NeurodeployError, RuntimeError):
    """Some tasks of a sweep failed twice; the message names their coordinates."""

    def __init__(self, message: str, failures: dict) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass(frozen=True)
class Task:
    """One work unit: ``fn(shared, **params)``, identified (and sorted) by ``key``.

    ``key``: a tuple of plain values (the task's coordinates, e.g. run, noise,
    level, repeat, backend, sample range); tasks of one sweep have distinct
    keys. ``coords``: the same coordinates by name, for messages and reports.
    ``fn`` must be a module-level function (it is pickled by reference).
    """

    key: tuple
    fn: Callable[..., Any]
    params: dict = field(default_factory=dict)
    coords: dict = field(default_factory=dict)

    def describe(self) -> str:
        """The coordinates as ``name value, ...`` (one line)."""
        items = self.coords or {"task": self.key}
        return ", ".join(f"{k} {v}" for k, v in items.items())


@dataclass
class Outcome:
    """What a sweep's tasks returned: ``results[key]``, and ``failures[key]`` (an error line) of the
    tasks that failed twice; ``retried``: keys of the tasks that failed once and then succeeded;
    ``seconds``: the sweep's wall time; ``task_seconds[key]``: each finished task's own time on its
    worker (what a cost model of more workers needs)."""

    results: dict
    failures: dict
    tasks: dict
    retried: list
    seconds: float
    task_seconds: dict = field(default_factory=dict)    # key -> seconds its successful try ran, on its worker

    def ordered(self) -> list:
        """(key, result) of the finished tasks, sorted by key."""
        return sorted(self.results.items(), key=lambda kv: kv[0])

    def missing(self) -> list[dict]:
        """The failed tasks' coordinates and errors, sorted by key."""
        return [{**self.tasks[k].coords, "error": self.failures[k]} for k in sorted(self.failures)]

    def raise_if_incomplete(self, what: str = "the sweep") -> None:
        """:class:`SweepIncomplete` naming the failed tasks, when there are any."""
        if self.failures:
            shown = "; ".join(f"{self.tasks[k].describe()}: {self.failures[k]}" for k in sorted(self.failures)[:3])
            more = f" (and {len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
            raise SweepIncomplete(f"{what}: {len(self.failures)} of {len(self.tasks)} tasks failed twice and are "
                                  f"missing: {shown}{more}", dict(self.failures))


def _error_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)        # Ray wraps a task's exception; the line names the original
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _user_error(exc: BaseException) -> Optional[NeurodeployError]:
    """The NeurodeployError behind ``exc`` (itself, or the cause Ray wraps), or None."""
    if isinstance(exc, NeurodeployError):
        return exc
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, NeurodeployError) else None


class _Progress:
    """A rich progress bar over tasks (or nothing)."""

    def __init__(self, enabled: bool, total: int, description: str, console=None) -> None:
        self.bar = None
        if enabled and total:
            from rich.progress import Progress

            self.bar = Progress(console=console)
            self.task = self.bar.add_task(description, total=total)

    def __enter__(self) -> "_Progress":
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


class Executor:
    """Runs a sweep's tasks; use as a context manager (a Ray executor connects on entry)."""

    kind = "local"

    def __init__(self, workers: int = 1) -> None:
        if not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
            raise ExecutorError(f"--workers {workers!r}: expected a worker count in 1..{MAX_WORKERS}")
        self.workers = workers
        self.outcomes: list[Outcome] = []      # every run's, in order (benchmarks read the task times)

    @property
    def in_process(self) -> bool:
        """True when tasks run in this very process (callables that cannot be pickled may be shared)."""
        return False

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def describe(self) -> str:
        return f"{self.kind}, {self.workers} worker(s)"

    def run(self, tasks: Sequence[Task], shared: Optional[dict] = None, *, description: str = "tasks",
            progress: bool = False, console=None, log: Optional[Callable[[str], None]] = None) -> Outcome:
        """Run ``tasks``; every task gets ``shared`` (moved to each worker once). See the module doc."""
        tasks = list(tasks)
        by_key = {t.key: t for t in tasks}
        if len(by_key) != len(tasks):
            raise ValueError("tasks of one sweep need distinct keys")
        t0 = time.perf_counter()
        results, failures, retried = {}, {}, []
        state = _State(by_key, results, failures, retried, log)
        with _Progress(progress, len(tasks), description, console) as bar:
            state.bar = bar
            self._run(tasks, dict(shared or {}), state)
        outcome = Outcome(results, failures, by_key, retried, time.perf_counter() - t0, state.seconds)
        self.outcomes.append(outcome)
        return outcome

    def _run(self, tasks: list, shared: dict, state: "_State") -> None:
        raise NotImplementedError


@dataclass
class _State:
    tasks: dict
    results: dict
    failures: dict
    retried: list
    log: Optional[Callable[[str], None]]
    bar: Any = None
    seconds: dict = field(default_factory=dict)

    def done(self, task: Task, timed: tuple, attempt: int) -> None:
        """``timed``: (result, seconds on the worker) of :func:`_timed`."""
        result, self.seconds[task.key] = timed
        self.results[task.key] = result
        if attempt:
            self.retried.append(task.key)
        self.bar.advance()

    def failed(self, task: Task, exc: BaseException, attempt: int) -> bool:
        """Record a failure; True when the task is to be tried again."""
        user = _user_error(exc)
        if user is not None:
            raise user
        line = _error_line(exc)
        if attempt == 0:
            if self.log is not None:
                self.log(f"task failed ({task.describe()}): {line}; retrying once")
            return True
        self.failures[task.key] = line
        if self.log is not None:
            self.log(f"task failed twice ({task.describe()}): {line}; reported missing")
        self.bar.advance()
        return False


# --------------------------------------------------------------------------- worker resources

_RESOURCES: dict = {}


def worker_resource(key: tuple, make: Callable[[], Any]) -> Any:
    """An object this worker keeps for the rest of the sweep: ``make()`` on the first call with ``key``,
    the same object afterwards (e.g. a network compiled on Lava, :class:`~neurodeploy.backends.lava.LavaSession`,
    shared by every sample range a worker runs). Its ``close()`` is called when the sweep ends on this
    worker (:func:`close_worker_resources`: the executors call it; a Ray actor or pool worker that is
    killed instead takes its Lava processes with it, as they carry ``PR_SET_PDEATHSIG``)."""
    if key not in _RESOURCES:
        _RESOURCES[key] = make()
    return _RESOURCES[key]


def drop_worker_resource(key: tuple) -> None:
    """Forget (and close) the resource of ``key``, e.g. after it failed: the next task makes a new one."""
    res = _RESOURCES.pop(key, None)
    if res is not None:
        res.close()


def close_worker_resources() -> None:
    """Close every resource of :func:`worker_resource` on this worker (each once, newest first)."""
    errors = []
    while _RESOURCES:
        _, res = _RESOURCES.popitem()
        try:
            res.close()
        except Exception as exc:  # noqa: BLE001 - the others are closed first
            errors.append(exc)
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- local


_WORKER_SHARED: dict = {}


def _pool_init(shared: bytes) -> None:
    import multiprocessing
    import multiprocessing.util

    import cloudpickle

    # a spawned child has its start method set; Lava sets its own ('fork') and refuses a set one
    multiprocessing.set_start_method(None, force=True)

    _WORKER_SHARED.clear()
    _WORKER_SHARED.update(cloudpickle.loads(shared))
    # a pool worker exits through multiprocessing's finalizers (not atexit): its resources close there
    multiprocessing.util.Finalize(None, close_worker_resources, exitpriority=10)


def _timed(fn: Callable, shared: dict, params: dict) -> tuple:
    t0 = time.perf_counter()
    result = fn(shared, **params)
    return result, time.perf_counter() - t0


def _pool_run(fn: Callable, params: dict) -> tuple:
    return _timed(fn, _WORKER_SHARED, params)


class LocalExecutor(Executor):
    """Tasks in this process (``workers=1``, in order) or in a pool of ``workers`` spawned processes."""

    kind = "local"

    @property
    def in_process(self) -> bool:
        return self.workers == 1

    def _run(self, tasks: list, shared: dict, state: _State) -> None:
        if self.workers == 1:
            try:
                self._run_here(tasks, shared, state)
            finally:
                close_worker_resources()
            return
        self._run_pool(tasks, shared, state)

    def _run_here(self, tasks: list, shared: dict, state: _State) -> None:
        for task in tasks:
            for attempt in (0, 1):
                try:
                    result = _timed(task.fn, shared, task.params)
                except Exception as exc:  # noqa: BLE001 - retried once, then reported with its coordinates
                    if attempt == 1 and state.log is not None:
                        state.log("".join(traceback.format_exception(exc)).rstrip())
                    if state.failed(task, exc, attempt):
                        continue
                    break
                state.done(task, result, attempt)
                break

    def _run_pool(self, tasks: list, shared: dict, state: _State) -> None:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        import cloudpickle    # a torch dependency; Norse's models hold classes plain pickle cannot name

        # spawn, not fork: torch's and OpenMP's threads do not survive a fork; pool workers are not
        # daemonic (Python >= 3.9), so Lava can start its own processes inside them
        pool = ProcessPoolExecutor(max_workers=min(self.workers, max(1, len(tasks))),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_pool_init, initargs=(cloudpickle.dumps(shared),))
        pending = deque((t, 0) for t in tasks)
        running: dict = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    task, attempt = pending.popleft()
                    running[pool.submit(_pool_run, task.fn, task.params)] = (task, attempt)
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    task, attempt = running.pop(fut)
                    try:
                        result = fut.result()
                    except Exception as exc:  # noqa: BLE001
                        if state.failed(task, exc, attempt):
                            pending.append((task, 1))
                        continue
                    state.done(task, result, attempt)
        finally:
            # on an error or Ctrl-C the workers (and any Lava processes under them) go at once
            procs = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            if running or pending:
                for p in procs:
                    if p.is_alive():
                        p.kill()
                for p in procs:
                    p.join(5)


# --------------------------------------------------------------------------- Ray


def import_ray():
    """``ray``, or an :class:`ExecutorError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError(f"--executor ray: Ray is not installed ({exc}); install the extra with "
                            f"`pip install 'neurodeploy[ray]'`, or use --executor local") from None
    return ray


class _SweepWorker:
    """A Ray actor: holds a sweep's shared objects (fetched once per sweep) and runs tasks on them."""

    def __init__(self) -> None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.shared: dict = {}

    def load(self, names: list, *values) -> None:
        """The next sweep's shared objects (Ray resolves the object refs once per actor)."""
        self.shared = dict(zip(names, values))

    def run(self, fn: Callable, params: dict) -> tuple:
        return _timed(fn, self.shared, params)

    def close(self) -> None:
        """The sweep is over: what its tasks kept is closed, its shared objects let go."""
        self.shared = {}
        close_worker_resources()


def _worker_pythonpath() -> str:
    """This process's import path, so a local cluster's workers import this very neurodeploy."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = [here, *(p for p in sys.path if p and os.path.isdir(p) and "site-packages" not in p
                     and not p.startswith(sys.base_prefix))]
    return os.pathsep.join(dict.fromkeys(parts))


class RayExecutor(Executor):
    """Tasks on Ray: a running cluster (``address``, e.g. ``ray://head:10001`` or ``auto``) or a local
    one started with ``num_cpus=workers``; one actor per worker (see the module doc)."""

    kind = "ray"

    def __init__(self, workers: Optional[int] = None, address: Optional[str] = None) -> None:
        super().__init__(workers if workers is not None else max(1, min(os.cpu_count() or 1, MAX_WORKERS)))
        self.address = address
        self.ray = import_ray()
        self._started = False
        self._depth = 0
        self._pool: list = []          # this connection's actors (see _actors)

    def describe(self) -> str:
        where = self.address or "a local Ray instance"
        return f"ray ({where}), {self.workers} worker(s)"

    def __enter__(self) -> "RayExecutor":
        ray = self.ray
        self._depth += 1                  # re-entrant: the outermost ``with`` connects and disconnects
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=True)
            try:
                if self.address:
                    ray.init(address=self.address, **kwargs)
                else:
                    ray.init(num_cpus=self.workers, runtime_env={"env_vars": {
                        "PYTHONPATH": _worker_pythonpath(), "OMP_WAIT_POLICY": "PASSIVE",
                        # Norse's import-time warning, as the CLI silences it
                        "PYTHONWARNINGS": "ignore:`torch.jit.script` is deprecated:FutureWarning"}}, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                self._depth -= 1
                raise ExecutorError(f"--ray-address {self.address!r}: cannot connect to a Ray cluster: "
                                    f"{_error_line(exc)}") from None
            self._started = True
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._kill_actors()
        if self._started and self._depth == 0:
            self.ray.shutdown()
            self._started = False

    def _actors(self, count: int) -> list:
        """``count`` actors, started once per connection and reused by every sweep until it closes
        (an actor's start-up, imports included, costs seconds)."""
        actor_cls = self.ray.remote(num_cpus=1, max_restarts=0)(_SweepWorker)
        while len(self._pool) < count:
            self._pool.append(actor_cls.remote())
        return self._pool[:count]

    def _kill_actors(self, actors: Optional[list] = None) -> None:
        """End ``actors`` (default: all) now, and the Lava processes under them."""
        gone = list(self._pool) if actors is None else list(actors)
        for a in gone:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        gone_ids = {id(a) for a in gone}
        self._pool = [a for a in self._pool if id(a) not in gone_ids]

    def _run(self, tasks: list, shared: dict, state: _State) -> None:
        ray = self.ray
        if self._depth == 0 or not ray.is_initialized():     # outside a ``with``: connect (if need be) for this run
            with self:
                return self._run(tasks, shared, state)
        names = list(shared)
        refs = [ray.put(shared[k]) for k in names]       # into the object store once per sweep
        free = list(self._actors(min(self.workers, max(1, len(tasks)))))
        for a in free:
            a.load.remote(names, *refs)                   # runs before the actor's tasks (actor calls are ordered)
        pending = deque((t, 0) for t in tasks)
        running: dict = {}
        ok = False
        try:
            while pending or running:
                while pending and free:
                    task, attempt = pending.popleft()
                    actor = free.pop()
                    running[actor.run.remote(task.fn, task.params)] = (actor, task, attempt)
                done, _ = ray.wait(list(running), num_returns=1)
                actor, task, attempt = running.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayActorError as exc:      # the worker died: a fresh one
                    self._kill_actors([actor])
                    fresh = self._actors(len(self._pool) + 1)[-1]
                    fresh.load.remote(names, *refs)
                    free.append(fresh)
                    if state.failed(task, exc, attempt):
                        pending.append((task, 1))
                    continue
                except ray.exceptions.RayError as exc:
                    free.append(actor)
                    if state.failed(task, exc, attempt):
                        pending.append((task, 1))
                    continue
                free.append(actor)
                state.done(task, result, attempt)
            # the sweep is done: each actor closes what it kept (its Lava runtime) and stays for the next
            ray.get([a.close.remote() for a in free], timeout=CLOSE_TIMEOUT_S)
            ok = True
        finally:
            if not ok:        # an error or Ctrl-C: every actor (and the Lava processes under it) goes now
                self._kill_actors()


def make_executor(kind: str = "local", workers: Optional[int] = None,
                  address: Optional[str] = None) -> Executor:
    """``--executor``, ``--workers`` and ``--ray-address`` as an executor (a one-line error if unusable).

    ``local`` defaults to one worker (this process); ``ray`` to ``os.cpu_count()`` workers.
    """
    if kind not in EXECUTORS:
        raise ExecutorError(f"--executor {kind!r}: expected one of {', '.join(EXECUTORS)}")
    if address is not None and kind != "ray":
        raise ExecutorError(f"--ray-address {address!r}: needs --executor ray")
    if kind == "ray":
        return RayExecutor(workers, address)
    return LocalExecutor(1 if workers is None else workers)


def split_range(n: int, parts: int) -> list[tuple[int, int]]:
    """``0..n`` as at most ``parts`` contiguous ``(start, stop)`` ranges of near-equal size."""
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
