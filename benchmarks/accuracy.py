"""Accuracy and robustness: LIF baseline vs. stable DLIF neurons with MS-MPPD on mnist5k.

Trains two model files as shipped (both with Gaussian-noise training):

* ``models/mnist5k-mlp-lif.yaml``: plain LIF MLP, no regularizer (baseline);
* ``models/mnist5k-mlp-dlif.yaml``: DLIF MLP with the MS-MPPD regularizer;

into ``benchmarks/runs/<name>`` (``<name>-epochs<N>`` when ``--epochs`` overrides
the file, so a quick check never replaces a full run). A finished run is
reused when its checkpoint holds all epochs and its stored config equals the
config being asked for; an unfinished one with the same config is resumed;
anything else is retrained (``--retrain`` always retrains).

Both runs are then evaluated with ``neurodeploy.evaluate.robustness.evaluate_runs``
on the full mnist5k test split: clean, Gaussian noise sigma = 0.05, 0.1, 0.2
(clamped to [0, 1]), FGSM eps = 8/255 and PGD-7 eps = 8/255 (method.md,
evaluation protocol), ``--repeats`` noise seeds. Noise draws are shared by the
two models (common random numbers).

Run from the repository root::

    PYTHONPATH=. $PY benchmarks/accuracy.py [--epochs N] [--retrain] [--repeats 1]

Writes ``benchmarks/results/accuracy.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from _common import RESULTS, ROOT, CpuMonitor, command_line, machine_info, machine_line, now_iso

from neurodeploy.config import ConfigError, config_from_dict, load_config  # noqa: E402
from neurodeploy.evaluate.robustness import evaluate_runs  # noqa: E402
from neurodeploy.train.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint  # noqa: E402
from neurodeploy.train.loop import METRICS_NAME, train  # noqa: E402

MODELS = [
    # (key, model file, column label)
    ("lif", "models/mnist5k-mlp-lif.yaml", "LIF"),
    ("dlif", "models/mnist5k-mlp-dlif.yaml", "DLIF+MS-MPPD"),
]
NOISES = ["gaussian:0,0.05,0.1,0.2", "fgsm:8/255", "pgd:8/255"]
CONDITIONS = [
    # (label, noise, level); level 0 is the clean result whatever the noise
    ("clean", "gaussian", 0.0),
    ("Gaussian σ=0.05", "gaussian", 0.05),
    ("Gaussian σ=0.1", "gaussian", 0.1),
    ("Gaussian σ=0.2", "gaussian", 0.2),
    ("FGSM ε=8/255", "fgsm", 8 / 255),
    ("PGD-7 ε=8/255", "pgd", 8 / 255),
]
TIMING_NAME = "benchmark_train.json"  # our note in the run folder: when and how long it trained


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _config_diff(stored: dict, wanted: dict) -> list[str]:
    a, b = _flatten(stored), _flatten(wanted)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def run_state(run_dir: Path, cfg) -> tuple[str, str]:
    """What to do with ``run_dir`` for ``cfg``: (``reuse``|``resume``|``train``, why)."""
    ckpt_path = run_dir / CHECKPOINT_NAME
    if not ckpt_path.is_file():
        return "train", "no checkpoint"
    try:
        ckpt = load_checkpoint(ckpt_path)
        stored = config_from_dict(ckpt["config"], str(ckpt_path)).to_dict()  # fills fields added since
    except (CheckpointError, ConfigError, KeyError) as exc:
        return "train", f"unusable checkpoint ({exc})"
    diff = _config_diff(stored, cfg.to_dict())
    if diff:
        shown = "; ".join(diff[:6]) + (f"; ... ({len(diff)} keys)" if len(diff) > 6 else "")
        return "train", f"config differs: {shown}"
    epoch = int(ckpt["epoch"])
    if epoch >= cfg.training.epochs:
        return "reuse", f"finished run, {epoch} epochs, same config"
    return "resume", f"same config, {epoch}/{cfg.training.epochs} epochs done"


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def prepare_run(key: str, config: str, label: str, args, console) -> dict:
    overrides = {} if args.epochs is None else {"training.epochs": args.epochs}
    shipped = load_config(ROOT / config)
    cfg = load_config(ROOT / config, overrides)
    suffix = "" if cfg.training.epochs == shipped.training.epochs else f"-epochs{cfg.training.epochs}"
    run_dir = args.runs_dir / f"{cfg.name}{suffix}"
    action, why = run_state(run_dir, cfg)
    if args.retrain:
        action, why = "train", "--retrain"
    shown = run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir
    console.print(f"[bold]{label}[/] ({config}) -> {shown}: "
                  f"[cyan]{action}[/] ({why})")
    timing_path = run_dir / TIMING_NAME
    if action == "reuse":
        timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    else:
        prior = json.loads(timing_path.read_text()) if action == "resume" and timing_path.exists() else {}
        with CpuMonitor() as cpu:
            train(cfg, run_dir, resume=action == "resume", force=action == "train", progress=not args.quiet,
                  log=console.print)
        wall = cpu.result["wall_seconds"]
        timing = {
            "trained_at": now_iso(),
            "wall_seconds": wall + (prior.get("wall_seconds") or 0.0),
            "resumed": action == "resume" or bool(prior.get("resumed")),
            "torch_threads": cfg.threads,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "cpu_use_cores": cpu.result,  # this process vs. other processes while it trained
        }
        timing_path.write_text(json.dumps(timing, indent=1) + "\n")
    metrics = read_metrics(run_dir)
    last = metrics[-1] if metrics else {}
    return {
        "key": key, "label": label, "config_file": config, "name": cfg.name, "run_dir": str(run_dir),
        "action": action, "why": why, "epochs": cfg.training.epochs,
        "shipped_epochs": shipped.training.epochs, "threads": cfg.threads,
        "train_seconds": sum(m.get("train_seconds", 0.0) for m in metrics),
        "wall_seconds": timing.get("wall_seconds"), "trained_at": timing.get("trained_at"),
        "others_busy_cores": (timing.get("cpu_use_cores") or {}).get("others_busy_cores"),
        "final_train_loss": last.get("train_loss"), "final_test_acc": last.get("test_acc"),
        "train_samples_per_s_median": (sorted(m["train_samples_per_s"] for m in metrics)[len(metrics) // 2]
                                       if metrics and all("train_samples_per_s" in m for m in metrics) else None),
        "config": cfg.to_dict(),
    }


def lookup(summary: list[dict], noise: str, level: float) -> dict:
    for s in summary:
        if (level == 0 and s["level"] == 0) or (s["noise"] == noise and math.isclose(s["level"], level, rel_tol=1e-9)):
            return s
    raise KeyError(f"no result for {noise} at {level}")


def binom_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def build_table(runs: list[dict], evals: list[dict], repeats: int) -> tuple[list[dict], list[str]]:
    """Side-by-side rows (fractions) and the Markdown lines of the table."""
    a, b = evals
    n = a["samples"]
    rows = []
    for label, noise, level in CONDITIONS:
        sa, sb = lookup(a["summary"], noise, level), lookup(b["summary"], noise, level)
        pa, pb = sa["accuracy_mean"], sb["accuracy_mean"]
        ci = 1.96 * math.sqrt(binom_se(pa, n) ** 2 + binom_se(pb, n) ** 2)
        rows.append({"condition": label, "noise": noise, "level": level,
                     runs[0]["key"]: pa, runs[1]["key"]: pb,
                     f"{runs[0]['key']}_std": sa["accuracy_std"], f"{runs[1]['key']}_std": sb["accuracy_std"],
                     "difference": pb - pa, "difference_ci95_unpaired": ci,
                     f"{runs[0]['key']}_spikes_per_sample": sa["spikes_per_sample"],
                     f"{runs[1]['key']}_spikes_per_sample": sb["spikes_per_sample"]})

    def cell(p: float, std: float) -> str:
        return f"{100 * p:.2f}" + (f" ± {100 * std:.2f}" if repeats > 1 else "")

    lines = [f"| condition | {runs[0]['label']} (%) | {runs[1]['label']} (%) | difference (pts) |",
             "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['condition']} | {cell(r[runs[0]['key']], r[runs[0]['key'] + '_std'])} | "
                     f"{cell(r[runs[1]['key']], r[runs[1]['key'] + '_std'])} | "
                     f"{100 * r['difference']:+.2f} (±{100 * r['difference_ci95_unpaired']:.1f}) |")
    return rows, lines


def plot(rows: list[dict], runs: list[dict], n: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs = np.arange(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, run in enumerate(runs):
        acc = np.array([100 * r[run["key"]] for r in rows])
        err = np.array([196 * binom_se(r[run["key"]], n) for r in rows])
        bars = ax.bar(xs + (i - 0.5) * width, acc, width, yerr=err, capsize=3, label=run["label"])
        for rect, v, e in zip(bars, acc, err):
            ax.annotate(f"{v:.1f}", (rect.get_x() + rect.get_width() / 2, v + e), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(xs, [r["condition"] for r in rows], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, help="override training.epochs of both models (quick checks)")
    ap.add_argument("--retrain", action="store_true", help="retrain even when a matching finished run exists")
    ap.add_argument("--repeats", type=int, default=1, help="noise seeds per condition")
    ap.add_argument("--seed", type=int, default=0, help="base seed of the evaluation noise")
    ap.add_argument("--samples", type=int, help="evaluate only the first N test samples (default: all)")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "runs")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for accuracy.{json,md,png}")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    args.runs_dir = args.runs_dir.resolve()

    from rich.console import Console

    console = Console()
    started = now_iso()
    command = command_line()
    t_start = time.perf_counter()

    console.rule("[bold]1/2 training")
    runs = [prepare_run(key, config, label, args, console) for key, config, label in MODELS]

    console.rule("[bold]2/2 evaluation")
    results = evaluate_runs([Path(r["run_dir"]) for r in runs], NOISES, repeats=args.repeats, seed=args.seed,
                            samples=args.samples, report_dir=None, progress=not args.quiet)
    evals = results["runs"]
    n = evals[0]["samples"]
    rows, table = build_table(runs, evals, args.repeats)
    machine = machine_info()
    machine["torch_threads"] = runs[0]["threads"]  # evaluate_runs and train set the config's threads

    quick = any(r["epochs"] != r["shipped_epochs"] for r in runs)
    title = "Accuracy and robustness on mnist5k: LIF vs. DLIF + MS-MPPD"
    if quick:
        title += f" (QUICK CHECK: {runs[0]['epochs']} epochs, not the shipped {runs[0]['shipped_epochs']})"
    train_lines = ["| model | run | epochs | training time (s) | wall time incl. per-epoch eval (s) | "
                   "median samples/s | other processes' CPU (cores) | final train loss | final test acc (%) | status |",
                   "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        wall = "" if r["wall_seconds"] is None else f"{r['wall_seconds']:.0f}"
        sps = "" if r["train_samples_per_s_median"] is None else f"{r['train_samples_per_s_median']:.0f}"
        loss = "" if r["final_train_loss"] is None else f"{r['final_train_loss']:.4f}"
        acc = "" if r["final_test_acc"] is None else f"{100 * r['final_test_acc']:.2f}"
        status = {"reuse": "reused", "resume": "resumed", "train": "trained"}[r["action"]]
        status += f" ({r['trained_at']})" if r["trained_at"] else ""
        rel = Path(r["run_dir"]).relative_to(ROOT) if Path(r["run_dir"]).is_relative_to(ROOT) else r["run_dir"]
        others = "" if r["others_busy_cores"] is None else f"{r['others_busy_cores']:.2f}"
        train_lines.append(f"| {r['label']} | `{rel}` | {r['epochs']} | {r['train_seconds']:.0f} | {wall} | {sps} | "
                           f"{others} | "
                           f"{loss} | {acc} | {status} |")
    md = "\n".join([
        f"# {title}",
        "",
        f"Test accuracy on the {n} test samples of {evals[0]['dataset']}, float (torch) model; "
        f"{args.repeats} noise seed(s) (base seed {args.seed}), noise draws shared by both models. "
        "Gaussian noise is clamped to [0, 1]; FGSM is one signed step; PGD-7 uses a uniform random start and "
        "7 steps of 2.55/255 (method.md). Difference = DLIF+MS-MPPD − LIF in percentage points.",
        "",
        *table,
        "",
        f"(±x) after a difference: rough 95% interval 1.96·√(SE₁² + SE₂²), SE = √(p(1−p)/{n}) — "
        "unpaired binomial, so conservative (both models see the same samples and noise).",
        "",
        "## Training",
        "",
        *train_lines,
        "",
        "Training time = sum over epochs of the time in the training steps (metrics.jsonl `train_seconds`); "
        "it depends on the machine's load at the time (other processes' CPU use, averaged over the training, "
        "from /proc/stat). With torch threads > free cores, OpenMP spin-waiting can slow training by an order "
        "of magnitude; set `OMP_WAIT_POLICY=PASSIVE` when the machine is shared. The two models trained at "
        "different moments, so their times are not comparable on a shared machine: "
        "`benchmarks/train_throughput.py` measures the speed ratio interleaved.",
        "",
        f"- command: `{command}`",
        f"- machine: {machine_line(machine)}",
        f"- date: {started}; this invocation took {time.perf_counter() - t_start:.0f} s",
        "",
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "accuracy", "title": title, "quick_check": quick, "command": command, "date": started,
        "machine": machine, "noises": NOISES, "repeats": args.repeats, "seed": args.seed, "samples": n,
        "table": rows, "runs": runs, "evaluation": results,
        "seconds": time.perf_counter() - t_start,
    }
    (args.out / "accuracy.json").write_text(json.dumps(payload, indent=1) + "\n")
    (args.out / "accuracy.md").write_text(md)
    plot(rows, runs, n, args.out / "accuracy.png", title)
    console.rule("[bold]result")
    print(md)
    console.print(f"written: {args.out}/accuracy.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
