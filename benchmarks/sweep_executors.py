"""One robustness sweep of the default model on ``--executor local`` (this process) and on Ray with 2 workers.

One command, one process, one run::

    PYTHONPATH=. $PY benchmarks/sweep_executors.py [--quick]

The sweep is what ``neurodeploy evaluate RUN --backends float,emulator,lava``
runs (:func:`neurodeploy.evaluate.robustness.evaluate_runs`): the default
network (``models/mnist5k-mlp-dlif.yaml``, trained here into
``benchmarks/runs/`` if absent), an input noise, a chip-instance noise and a
per-step noise at several levels and repeats, every point on the float model
and the emulator, and the first ``--lava-samples`` of every point on Lava. It
runs twice in this process, with nothing else running: on the local
executor (1 worker, this process, in order) and on a local Ray instance with
2 workers (``ray.init(num_cpus=2)``, started here; its start-up is reported
apart). The two reports must be equal, row for row (bit for bit).

Reported, as figures of this one run: both wall times and their ratio
(local / Ray); each task's own time on its worker (``Outcome.task_seconds``),
per phase (sweep points, then Lava ranges); and from those an estimate for
N machines: the greedy schedule (as the executor submits: the next task to
the next free worker) of the measured task times over N workers (the local
run's times) or 2N workers (the Ray run's, two workers sharing 2 cores),
plus the Ray run's measured per-phase overhead (object store, actor start,
scheduling: the phase's wall time minus its simulated 2-worker makespan). The estimate leaves out what one machine cannot measure (network
transfers of the shared objects to other machines, a head node's scheduling
load) and the sweep's serial parts (loading the run, the report) are added
as measured.

Writes ``benchmarks/results/sweep_executors.{json,md}`` (``--quick``:
``sweep_executors_quick.*``, a small sweep for a check in CI time).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT, CpuMonitor, command_line, machine_info, machine_line, now_iso

RUNS = ROOT / "benchmarks" / "runs"
MODELS = ROOT / "models"
FULL = {"noises": ["gaussian:0,0.1,0.2,0.3", "weight-mismatch:0.1,0.2", "spike-drop:0.1,0.2"],
        "repeats": 2, "samples": 1000, "lava_samples": 60}
QUICK = {"noises": ["gaussian:0,0.2", "weight-mismatch:0.2"], "repeats": 1, "samples": 200, "lava_samples": 6}
MACHINES = (1, 2, 4, 8, 16, 32)
WORKERS_PER_MACHINE = 2


def makespan(costs: list[float], workers: int) -> float:
    """Finish time of ``costs`` (in submission order) handed one by one to the first free of ``workers``."""
    free = [0.0] * max(1, workers)
    for c in costs:
        t = heapq.heappop(free)
        heapq.heappush(free, t + c)
    return max(free)


def phases(executor) -> list[dict]:
    """Per executor run (sweep points, Lava ranges): its wall time and its tasks' own times, in order."""
    out = []
    for o in executor.outcomes:
        keys = [t for t in o.tasks]          # submission order
        out.append({"tasks": len(keys), "wall_seconds": o.seconds,
                    "task_seconds": [o.task_seconds[k] for k in keys if k in o.task_seconds],
                    "failed": len(o.failures), "retried": len(o.retried)})
    return out


def rows_of(report: dict) -> list:
    return [r["rows"] for r in report["runs"]]


def one_sweep(run_dir: Path, setup: dict, executor, profile: str) -> tuple[dict, float, dict]:
    from neurodeploy.evaluate.robustness import evaluate_runs

    with CpuMonitor() as cpu:
        t0 = time.perf_counter()
        report = evaluate_runs([run_dir], setup["noises"], repeats=setup["repeats"], seed=0,
                               samples=setup["samples"], progress=False,
                               backends=("float", "emulator", "lava"), profile=profile,
                               lava_samples=setup["lava_samples"], executor=executor)
        wall = time.perf_counter() - t0
    return report, wall, cpu.result


def estimate(task_phases: list[dict], ray_phases: list[dict], serial_seconds: float, per_machine: int) -> list[dict]:
    """Sweep seconds on N machines of ``per_machine`` workers: the task times of ``task_phases`` scheduled
    over them, plus the Ray run's per-phase overhead (its wall time minus its simulated 2-worker schedule)."""
    out = []
    for n in MACHINES:
        total = serial_seconds
        for ph, rp in zip(task_phases, ray_phases):
            overhead = max(0.0, rp["wall_seconds"] - makespan(rp["task_seconds"], WORKERS_PER_MACHINE))
            total += overhead + makespan(ph["task_seconds"], n * per_machine)
        out.append({"machines": n, "workers": n * per_machine, "seconds": round(total, 2)})
    return out


def markdown(res: dict) -> str:
    m = res["measured"]
    lines = [f"# Sweep executors: local vs Ray{' (quick check)' if res['quick'] else ''}", "",
             f"One run of `{res['command']}` ({res['seconds']:.0f} s), {res['date']}, git {res['machine']['git']}.  ",
             f"Machine: {machine_line(res['machine'])}; load average at the end {res['load_average_end']}.  ",
             f"Sweep: `neurodeploy evaluate` on {res['run']['config']} ({res['run']['run_dir']}), noises "
             f"{', '.join(f'`{s}`' for s in res['setup']['noises'])}, {res['setup']['repeats']} repeat(s), "
             f"{res['setup']['samples']} test samples on float and emulator, the first "
             f"{res['setup']['lava_samples']} of each point on Lava; backends float, emulator, lava.", "",
             "| executor | workers | sweep seconds | tasks (points + Lava ranges) | CPU: own / other processes' cores |",
             "|---|---:|---:|---|---|"]
    for name in ("local", "ray"):
        r = m[name]
        tasks = " + ".join(str(p["tasks"]) for p in r["phases"])
        lines.append(f"| {name} | {r['workers']} | {r['seconds']:.1f} | {tasks} | "
                     f"{r['cpu']['own_cores']} / {r['cpu']['others_busy_cores']} |")
    lines += ["", f"**local / Ray (2 workers) = {res['ratio_local_over_ray']:.2f}×** in this run; Ray's own "
              f"start-up (`ray.init`, not in the sweep time): {m['ray']['init_seconds']:.1f} s. Reports equal "
              f"row for row: **{res['reports_equal']}**.", "",
              "Per-task cost (seconds on the worker):", "",
              "| run | phase | tasks | mean | min | max | sum | phase wall | overhead (wall - simulated schedule) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in ("local", "ray"):
        for name, ph in zip(("sweep points", "Lava ranges"), m[run]["phases"]):
            ts = ph["task_seconds"] or [0.0]
            over = max(0.0, ph["wall_seconds"] - makespan(ph["task_seconds"], m[run]["workers"]))
            lines.append(f"| {run} | {name} | {ph['tasks']} | {sum(ts) / len(ts):.2f} | {min(ts):.2f} | "
                         f"{max(ts):.2f} | {sum(ts):.1f} | {ph['wall_seconds']:.1f} | {over:.1f} |")
    lines += ["", "Estimated sweep seconds on N machines (greedy schedule of the measured task times, plus the "
              f"Ray run's per-phase overhead (actor start-up, object store) and {res['serial_seconds']:.1f} s of "
              "serial work; network transfers "
              "to other machines not included). One worker per machine uses the local run's task times (a Lava "
              "graph alone keeps about all of a 2-core machine busy: its own processes); two use the Ray run's, "
              "measured with two workers sharing these 2 cores:", "",
              "| machines | 1 worker each: seconds | vs local | 2 workers each: seconds | vs local |",
              "|---:|---:|---:|---:|---:|"]
    for e1, e2 in zip(res["estimate_1_per_machine"], res["estimate_2_per_machine"]):
        lines.append(f"| {e1['machines']} | {e1['seconds']:.1f} | {m['local']['seconds'] / e1['seconds']:.1f}× | "
                     f"{e2['seconds']:.1f} | {m['local']['seconds'] / e2['seconds']:.1f}× |")
    lines += ["", "What bounds it: the longest task (one point's float and emulator run on all samples, or one "
              "Lava range with its compile) and the sweep's two phases (Lava ranges start when every point is "
              "done), so beyond about as many workers as tasks more machines add nothing."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small sweep (a check, not a figure)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs when the run has to be trained")
    ap.add_argument("--profile", default="loihi2")
    ap.add_argument("--run", type=Path, help="a trained run folder (default: benchmarks/runs/mnist5k-mlp-dlif)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    from neurodeploy.config import load_config
    from neurodeploy.executors import LocalExecutor, RayExecutor
    from neurodeploy.train.checkpoint import CHECKPOINT_NAME
    from neurodeploy.train.loop import train

    t_start = time.perf_counter()
    setup = QUICK if args.quick else FULL
    config = MODELS / "mnist5k-mlp-dlif.yaml"
    run_dir = args.run or RUNS / "mnist5k-mlp-dlif"
    if args.run is not None and not (run_dir / CHECKPOINT_NAME).is_file():
        print(f"--run {run_dir}: no {CHECKPOINT_NAME} there; expected a trained run folder", file=sys.stderr)
        return 2
    if not (run_dir / CHECKPOINT_NAME).is_file():
        print(f"{run_dir} holds no trained run: training {config.name} for {args.epochs} epochs", flush=True)
        train(load_config(config, {"training.epochs": args.epochs}), run_dir, progress=False, log=print)
    machine = machine_info()
    # warm-up outside the timed runs: the deployment (quantized once, then read), numba's cache
    one_sweep(run_dir, {**QUICK, "lava_samples": 1, "noises": ["gaussian:0"]}, LocalExecutor(), args.profile)

    measured = {}
    local = LocalExecutor()
    report_local, wall, cpu = one_sweep(run_dir, setup, local, args.profile)
    measured["local"] = {"workers": 1, "seconds": wall, "cpu": cpu, "phases": phases(local)}
    print(f"[{time.perf_counter() - t_start:.0f} s] local: {wall:.1f} s", flush=True)

    ray_ex = RayExecutor(WORKERS_PER_MACHINE)
    t0 = time.perf_counter()
    with ray_ex:                                   # ray.init: reported apart from the sweep
        init = time.perf_counter() - t0
        report_ray, wall, cpu = one_sweep(run_dir, setup, ray_ex, args.profile)
    measured["ray"] = {"workers": WORKERS_PER_MACHINE, "seconds": wall, "init_seconds": init, "cpu": cpu,
                       "phases": phases(ray_ex)}
    print(f"[{time.perf_counter() - t_start:.0f} s] ray: {wall:.1f} s (+ {init:.1f} s ray.init)", flush=True)

    equal = json.dumps(rows_of(report_local)) == json.dumps(rows_of(report_ray))
    # what neither executor parallelizes: the sweep's wall time outside its executor runs (local run)
    serial = max(0.0, measured["local"]["seconds"] - sum(p["wall_seconds"] for p in measured["local"]["phases"]))
    res = {"benchmark": "sweep_executors", "quick": args.quick, "command": command_line(), "date": now_iso(),
           "machine": machine, "load_average_end": [round(v, 2) for v in os.getloadavg()],
           "run": {"config": config.name, "run_dir": str(Path(run_dir).resolve().relative_to(ROOT))
                   if Path(run_dir).resolve().is_relative_to(ROOT) else str(run_dir)},
           "setup": setup, "measured": measured, "reports_equal": equal,
           "ratio_local_over_ray": measured["local"]["seconds"] / measured["ray"]["seconds"],
           "serial_seconds": serial,
           "estimate_1_per_machine": estimate(measured["local"]["phases"], measured["ray"]["phases"], serial, 1),
           "estimate_2_per_machine": estimate(measured["ray"]["phases"], measured["ray"]["phases"], serial,
                                              WORKERS_PER_MACHINE),
           "seconds": time.perf_counter() - t_start}
    stem = "sweep_executors_quick" if args.quick else "sweep_executors"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))
    if not equal:
        print("the local and Ray reports differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
