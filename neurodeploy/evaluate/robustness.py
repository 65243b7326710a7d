"""Robustness sweeps of trained runs under input noise and attacks.

``neurodeploy evaluate runs/A --noise gaussian:0,0.1,0.2 --noise pgd:0,8/255``
evaluates every noise at every level with ``repeats`` seeds and writes JSON
(every number), Markdown tables and PNG plots of accuracy against level.

The noise of (noise, repeat) is drawn from one seed shared by all levels
(common random numbers), so curves over levels are smooth and level 0 is the
clean result exactly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..attacks import PGD_PRESETS, fgsm, pgd
from ..data import load_dataset
from ..noise.input_noise import apply_input_noise
from ..train.loop import load_run, set_threads


class NoiseSpecError(ValueError):
    """A ``--noise NAME:LEVELS`` spec is malformed; the message names it."""


# noise name -> (what the level means, upper bound of the level)
FLOAT_NOISES: dict[str, tuple[str, float]] = {
    "gaussian": ("std of N(0, std^2) added to pixels, clamped to [0,1]", math.inf),
    "uniform": ("half-width of U(-w, w) added to pixels, clamped to [0,1]", math.inf),
    "salt-pepper": ("probability that a pixel becomes 0 or 1", 1.0),
    "fgsm": ("L-inf budget eps of one signed-gradient step", 1.0),
    "pgd": ("L-inf budget eps of PGD-7 (alpha = eps * 2.55/8)", 1.0),
}


@dataclass(frozen=True)
class NoiseSpec:
    """One noise and the levels to sweep it over."""

    name: str
    levels: tuple[float, ...]


def _parse_level(text: str, spec: str) -> float:
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise NoiseSpecError(f"--noise {spec!r}: level {text!r} is not a number (use e.g. 0.1 or 8/255)") from None
    if not math.isfinite(value):
        raise NoiseSpecError(f"--noise {spec!r}: level {text!r} is not finite")
    return value


def parse_noise_spec(spec: str, known: dict[str, tuple[str, float]] = FLOAT_NOISES) -> NoiseSpec:
    """Parse ``NAME:L1,L2,...`` (levels may be fractions like ``8/255``)."""
    if ":" not in spec:
        raise NoiseSpecError(f"--noise {spec!r}: expected NAME:LEVEL[,LEVEL...], e.g. gaussian:0,0.1")
    name, levels_text = spec.split(":", 1)
    name = name.strip()
    if name not in known:
        raise NoiseSpecError(f"--noise {spec!r}: unknown noise {name!r} (known: {', '.join(known)})")
    if not levels_text.strip():
        raise NoiseSpecError(f"--noise {spec!r}: no levels given")
    levels = tuple(_parse_level(t, spec) for t in levels_text.split(","))
    upper = known[name][1]
    for level in levels:
        if level < 0:
            raise NoiseSpecError(f"--noise {spec!r}: level {level} is negative; levels must be >= 0")
        if level > upper:
            raise NoiseSpecError(f"--noise {spec!r}: level {level} is above {upper} ({known[name][0]})")
    return NoiseSpec(name, levels)


def noise_seed(seed: int, name: str, repeat: int) -> int:
    """Seed of one (noise, repeat): shared by every level of the sweep."""
    tag = int.from_bytes(name.encode(), "little") % (2**31)
    return int(np.random.SeedSequence([seed, tag, repeat]).generate_state(1)[0])


def perturb(model: torch.nn.Module, name: str, level: float, x: torch.Tensor, y: torch.Tensor,
            generator: torch.Generator) -> torch.Tensor:
    """Inputs ``x`` under noise ``name`` at ``level`` (attacks crafted on ``model``)."""
    if level == 0:
        return x
    if name == "fgsm":
        return fgsm(model, x, y, level)
    if name == "pgd":
        steps, alpha = PGD_PRESETS["pgd7"]
        return pgd(model, x, y, level, alpha * level / (8 / 255), steps, generator=generator)
    return apply_input_noise(name, x, level, generator)


def float_sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, specs: Sequence[NoiseSpec],
                repeats: int, seed: int, batch_size: int = 250,
                on_step: Optional[Callable[[], None]] = None) -> list[dict]:
    """Accuracy and activity of the float model for every (noise, level, repeat)."""
    model.eval()
    rows = []
    clean_cache: Optional[dict] = None
    for spec in specs:
        for repeat in range(repeats):
            for level in spec.levels:
                if level == 0 and clean_cache is not None:
                    row = dict(clean_cache)  # level 0 is the clean result exactly
                else:
                    g = torch.Generator().manual_seed(noise_seed(seed, spec.name, repeat))
                    if hasattr(model.encoder, "generator"):
                        # same Poisson spikes for every noise and level, so level 0 is the clean result
                        model.encoder.generator = torch.Generator().manual_seed(noise_seed(seed, "encoder", 0))
                    correct, spikes = 0, 0.0
                    for i in range(0, len(x), batch_size):
                        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                        xp = perturb(model, spec.name, level, xb, yb, g)
                        act = model.activity(xp)
                        correct += int((act["logits"].argmax(1) == yb).sum())
                        spikes += float(act["spikes_per_layer"].sum())
                    row = {"accuracy": correct / len(x), "spikes_per_sample": spikes / len(x)}
                    if level == 0:
                        clean_cache = dict(row)
                rows.append({"noise": spec.name, "level": level, "repeat": repeat, **row})
                if on_step:
                    on_step()
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and spread of accuracy per (noise, level), with the drop from clean."""
    out = []
    keys = sorted({(r["noise"], r["level"]) for r in rows}, key=lambda k: (k[0], k[1]))
    clean = [r["accuracy"] for r in rows if r["level"] == 0]
    clean_acc = float(np.mean(clean)) if clean else None
    for noise, level in keys:
        accs = np.array([r["accuracy"] for r in rows if r["noise"] == noise and r["level"] == level])
        spikes = np.array([r["spikes_per_sample"] for r in rows if r["noise"] == noise and r["level"] == level])
        out.append({
            "noise": noise, "level": level, "accuracy_mean": float(accs.mean()),
            "accuracy_std": float(accs.std()), "repeats": len(accs),
            "drop_from_clean": (clean_acc - float(accs.mean())) if clean_acc is not None else None,
            "spikes_per_sample": float(spikes.mean()),
        })
    return out


def _markdown(results: dict) -> str:
    lines = ["# Robustness report", "", f"Seed {results['seed']}, {results['repeats']} repeat(s) per level.", ""]
    for run in results["runs"]:
        lines += [f"## {run['name']} ({run['run_dir']})", "",
                  f"{run['samples']} test samples of {run['dataset']}; backend: float (torch).", "",
                  "| noise | level | accuracy (mean) | std | drop from clean | spikes / sample |",
                  "|---|---:|---:|---:|---:|---:|"]
        for s in run["summary"]:
            drop = "" if s["drop_from_clean"] is None else f"{100 * s['drop_from_clean']:.2f}"
            lines.append(f"| {s['noise']} | {s['level']:.4g} | {100 * s['accuracy_mean']:.2f} | "
                         f"{100 * s['accuracy_std']:.2f} | {drop} | {s['spikes_per_sample']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = sorted({s["noise"] for run in results["runs"] for s in run["summary"]})
    fig, axes = plt.subplots(1, len(noises), figsize=(4 * len(noises), 3.4), squeeze=False)
    for ax, noise in zip(axes[0], noises):
        for run in results["runs"]:
            pts = [s for s in run["summary"] if s["noise"] == noise]
            lv = [p["level"] for p in pts]
            mean = np.array([p["accuracy_mean"] for p in pts]) * 100
            std = np.array([p["accuracy_std"] for p in pts]) * 100
            ax.errorbar(lv, mean, yerr=std, marker="o", capsize=3, label=run["name"])
        ax.set_title(noise)
        ax.set_xlabel("level")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate_runs(runs: Sequence[Path], noise_specs: Sequence[str], repeats: int = 1, seed: int = 0,
                  samples: Optional[int] = None, report_dir: Optional[Path] = None,
                  progress: bool = True) -> dict:
    """Sweep every run over every noise spec; print a table, optionally write a report."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    if repeats < 1:
        raise NoiseSpecError(f"--repeats {repeats}: must be >= 1")
    specs = [parse_noise_spec(s) for s in noise_specs] or [NoiseSpec("gaussian", (0.0,))]
    results = {"seed": seed, "repeats": repeats, "noises": [s.__dict__ for s in specs], "runs": []}
    total = len(runs) * repeats * sum(len(s.levels) for s in specs)
    with Progress(disable=not progress) as bar:
        task = bar.add_task("evaluate", total=total)
        for run_dir in runs:
            cfg, model, _ = load_run(run_dir)
            set_threads(cfg.threads)
            data = load_dataset(cfg.data.dataset, seed=cfg.seed, data_dir=cfg.data.data_dir)
            x = torch.as_tensor(data.x_test[:samples])
            y = torch.as_tensor(data.y_test[:samples])
            t0 = time.perf_counter()
            rows = float_sweep(model, x, y, specs, repeats, seed, on_step=lambda: bar.advance(task))
            results["runs"].append({
                "name": cfg.name if cfg.name == Path(run_dir).name else f"{cfg.name} ({Path(run_dir).name})", "run_dir": str(run_dir), "dataset": cfg.data.dataset, "samples": len(x),
                "backend": "float", "rows": rows, "summary": summarize(rows),
                "seconds": time.perf_counter() - t0,
            })
    console = Console()
    for run in results["runs"]:
        table = Table(title=f"{run['name']}: accuracy (%) on {run['samples']} test samples")
        for col in ("noise", "level", "mean", "std", "drop", "spikes/sample"):
            table.add_column(col, justify="left" if col == "noise" else "right")
        for s in run["summary"]:
            drop = "" if s["drop_from_clean"] is None else f"{100 * s['drop_from_clean']:.2f}"
            table.add_row(s["noise"], f"{s['level']:.4g}", f"{100 * s['accuracy_mean']:.2f}",
                          f"{100 * s['accuracy_std']:.2f}", drop, f"{s['spikes_per_sample']:.1f}")
        console.print(table)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "robustness.json").write_text(json.dumps(results, indent=1))
        (report_dir / "robustness.md").write_text(_markdown(results))
        _plot(results, report_dir / "robustness.png")
        console.print(f"report written to {report_dir}/robustness.{{json,md,png}}")
    return results
