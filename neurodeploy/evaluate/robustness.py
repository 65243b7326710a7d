"""Robustness sweeps of trained runs under input noise and attacks.

``neurodeploy evaluate runs/A --noise gaussian:0,0.1,0.2 --noise pgd:0,8/255``
evaluates every noise at every level with ``repeats`` seeds and writes JSON
(every number), Markdown tables and PNG plots of accuracy against level.

The noise of (noise, repeat) is drawn from one seed shared by all levels
(common random numbers), so curves over levels are smooth and level 0 is the
clean result exactly.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..attacks import PGD_PRESETS, fgsm, pgd
from ..data import load_dataset
from ..noise.hardware import StepNoise, float_step_noise_model, perturb_float_model, perturb_network
from ..noise.input_noise import apply_input_noise
from .pipeline import synaptic_ops
from ..noise.specs import NoiseSpec, NoiseSpecError, resolve_noise_specs
from ..noise.specs import parse_noise_spec  # noqa: F401  (re-exported)
from ..train.loop import load_run, set_threads


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


BACKEND_NAMES = ("float", "emulator", "lava")


def parse_backends(text: str) -> tuple[str, ...]:
    """``float,emulator,lava`` -> a tuple; unknown names are an error naming them."""
    names = tuple(b.strip() for b in text.split(",") if b.strip())
    bad = [b for b in names if b not in BACKEND_NAMES]
    if bad or not names:
        raise NoiseSpecError(f"--backends {text!r}: unknown backend(s) {', '.join(bad) or '(none given)'} "
                             f"(known: {', '.join(BACKEND_NAMES)})")
    return names


def _perturbed_inputs(model: torch.nn.Module, spec: NoiseSpec, level: float, x: torch.Tensor, y: torch.Tensor,
                      seed: int, repeat: int, batch_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(noise_seed(seed, spec.name, repeat))
    return torch.cat([perturb(model, spec.name, level, x[i:i + batch_size], y[i:i + batch_size], g)
                      for i in range(0, len(x), batch_size)])


def _float_row(model: torch.nn.Module, xp: torch.Tensor, y: torch.Tensor, seed: int, batch_size: int,
               step_hooks=None, network=None) -> dict:
    if hasattr(model.encoder, "generator"):
        # same Poisson spikes for every noise and level, so level 0 is the clean result
        model.encoder.generator = torch.Generator().manual_seed(noise_seed(seed, "encoder", 0))
    correct, spikes, layer_spikes = 0, 0.0, []
    for i in range(0, len(xp), batch_size):
        if step_hooks is not None:   # per-step noise: the draws of these samples (data-set indices)
            step_hooks.set_samples(np.arange(i, min(i + batch_size, len(xp))))
        act = model.activity(xp[i:i + batch_size])
        correct += int((act["logits"].argmax(1) == y[i:i + batch_size]).sum())
        spikes += float(act["spikes_per_layer"].sum())
        layer_spikes.append(act["spikes_per_layer"].numpy())
    row = {"accuracy": correct / len(xp), "spikes_per_sample": spikes / len(xp)}
    if network is not None:
        nz = _input_nonzeros(model, network, xp)
        row["synops_per_sample"] = float(synaptic_ops(network, nz, np.concatenate(layer_spikes)).mean())
    return row


def _input_nonzeros(model: torch.nn.Module, network, xp: torch.Tensor) -> np.ndarray:
    """Non-zero input values per sample over the T steps (each drives the first layer's synapses)."""
    from .pipeline import network_inputs

    return (network_inputs(model, network, xp.numpy()) != 0).reshape(len(xp), -1).sum(1)


def sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, specs: Sequence[NoiseSpec], repeats: int,
          seed: int, backends: Sequence[str] = ("float",), quantized=None, lava_samples: int = 100,
          batch_size: int = 250, on_step: Optional[Callable[[], None]] = None) -> list[dict]:
    """Accuracy and activity on every backend for every (noise, level, repeat).

    Input noises perturb the samples once per (noise, level, repeat) in float
    (attacks are crafted on the float model and transferred); the fixed-point
    backends run the deployed network (``quantized``, a QuantizationResult) on
    the same perturbed samples: the emulator on all of them, Lava on the first
    ``lava_samples``, with the emulator/Lava agreement on that subset recorded
    (it must be 1.0). Hardware (network) noises perturb the chip instead: the
    same seeded draws give the perturbed fixed-point network and the matching
    perturbed float model (neurodeploy.noise.hardware). Step noises
    (spike-drop, current-noise, membrane-noise) are drawn anew at every step:
    the same per-sample draws go into the float model's hooks, the emulator's
    noisy LIF steps and Lava's noise-injection processes
    (:class:`~neurodeploy.noise.hardware.StepNoise`, one seed per (noise, repeat)).
    """
    network = quantized.network if quantized is not None else None
    for spec in specs:
        if spec.kind in ("network", "step") and quantized is None:
            raise NoiseSpecError(f"--noise {spec.name}: a hardware noise needs the quantized network of the run")
    from ..backends import run_network
    from .pipeline import network_inputs

    model.eval()
    rows = []
    cache: dict[str, dict] = {}
    y_np = y.numpy()
    for spec in specs:
        for repeat in range(repeats):
            for level in spec.levels:
                if level == 0 and cache:
                    results = {b: dict(r) for b, r in cache.items()}  # level 0 is the clean result exactly
                else:
                    flt_model, net, step, hooks = model, network, None, None
                    if spec.kind == "step":
                        # drawn per sample and step from one seed per (noise, repeat), in every backend
                        step = StepNoise(spec.name, level, noise_seed(seed, spec.name, repeat))
                        if "float" in backends:
                            flt_model, hooks = float_step_noise_model(model, step, quantized)
                        xp = x
                    elif spec.kind == "network":
                        # one simulated chip instance per (noise, repeat); same draws in torch and fixed point
                        chip = noise_seed(seed, spec.name, repeat)
                        if quantized is None:
                            raise NoiseSpecError(f"--noise {spec.name}: a hardware noise needs the quantized "
                                                 f"network of the run")
                        net = perturb_network(quantized.network, spec.name, level, chip)
                        flt_model = perturb_float_model(model, spec.name, level, chip, quantized)
                        xp = x
                    else:
                        xp = _perturbed_inputs(model, spec, level, x, y, seed, repeat, batch_size)
                    results = {}
                    if "float" in backends:
                        results["float"] = _float_row(flt_model, xp, y, seed, batch_size, hooks, net)
                    if net is not None and ("emulator" in backends or "lava" in backends):
                        inputs = network_inputs(model, net, xp.numpy())
                        emu = run_network(net, inputs, backend="emulator", step_noise=step)
                        emu_pred = emu.predictions()
                        if "emulator" in backends:
                            nz = (inputs != 0).reshape(len(inputs), -1).sum(1)
                            results["emulator"] = {
                                "accuracy": float(np.mean(emu_pred == y_np)),
                                "spikes_per_sample": float(emu.spike_counts.sum(1).mean()),
                                "synops_per_sample": float(synaptic_ops(net, nz, emu.spike_counts).mean())}
                        if "lava" in backends and lava_samples > 0:
                            n = min(lava_samples, len(x))
                            lava = run_network(net, inputs[:n], backend="lava", step_noise=step)
                            results["lava"] = {
                                "accuracy": float(np.mean(lava.predictions() == y_np[:n])),
                                "spikes_per_sample": float(lava.spike_counts.sum(1).mean()),
                                "samples": n,
                                "emulator_identical_spikes": float(np.mean(np.all(
                                    lava.output_spikes == emu.output_spikes[:n], axis=(1, 2)))),
                            }
                    if level == 0:
                        cache = {b: dict(r) for b, r in results.items()}
                for backend, row in results.items():
                    rows.append({"backend": backend, "noise": spec.name, "level": level, "repeat": repeat, **row})
                if on_step:
                    on_step()
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and spread of accuracy per (backend, noise, level), with the drop from clean."""
    out = []
    keys = sorted({(r.get("backend", "float"), r["noise"], r["level"]) for r in rows},
                  key=lambda k: (BACKEND_NAMES.index(k[0]), k[1], k[2]))
    for backend, noise, level in keys:
        sel = [r for r in rows if r.get("backend", "float") == backend and r["noise"] == noise
               and r["level"] == level]
        clean = [r["accuracy"] for r in rows if r.get("backend", "float") == backend and r["level"] == 0]
        accs = np.array([r["accuracy"] for r in sel])
        item = {
            "backend": backend, "noise": noise, "level": level, "accuracy_mean": float(accs.mean()),
            "accuracy_std": float(accs.std()), "repeats": len(accs),
            "drop_from_clean": (float(np.mean(clean)) - float(accs.mean())) if clean else None,
            "spikes_per_sample": float(np.mean([r["spikes_per_sample"] for r in sel])),
        }
        if all("synops_per_sample" in r for r in sel):
            item["synops_per_sample"] = float(np.mean([r["synops_per_sample"] for r in sel]))
        if backend == "lava":
            item["samples"] = sel[0]["samples"]
            item["emulator_identical_spikes"] = float(np.mean([r["emulator_identical_spikes"] for r in sel]))
        out.append(item)
    return out


def _markdown(results: dict) -> str:
    lines = ["# Robustness report", "", f"Seed {results['seed']}, {results['repeats']} repeat(s) per level; "
             f"backends: {', '.join(results['backends'])}. Attacks are crafted on the float model and "
             f"transferred to the fixed-point network.", ""]
    for run in results["runs"]:
        lines += [f"## {run['name']} ({run['run_dir']})", "",
                  f"{run['samples']} test samples of {run['dataset']}"
                  + (f"; fixed-point network: {run['network']}" if run.get("network") else "") + ".", "",
                  "| backend | noise | level | accuracy (mean) | std | drop from clean | spikes / sample "
                  "| synaptic ops / sample |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for s in run["summary"]:
            drop = "" if s["drop_from_clean"] is None else f"{round(100 * s['drop_from_clean'], 2) + 0.0:.2f}"
            name = s["backend"] + (f" (first {s['samples']})" if s["backend"] == "lava" else "")
            synops = f"{s['synops_per_sample']:.0f}" if "synops_per_sample" in s else ""
            lines.append(f"| {name} | {s['noise']} | {s['level']:.4g} | {100 * s['accuracy_mean']:.2f} | "
                         f"{100 * s['accuracy_std']:.2f} | {drop} | {s['spikes_per_sample']:.1f} | {synops} |")
        lava = [s for s in run["summary"] if s["backend"] == "lava"]
        if lava:
            agree = min(s["emulator_identical_spikes"] for s in lava)
            lines += ["", f"Emulator vs Lava: identical output spike trains on {100 * agree:.2f}% of the Lava "
                          f"samples at every level (lowest over all levels)."]
        lines.append("")
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = sorted({s["noise"] for run in results["runs"] for s in run["summary"]})
    ncols = min(4, len(noises))
    nrows = -(-len(noises) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(noises):]:
        ax.set_visible(False)
    styles = {"float": "-", "emulator": "--", "lava": ":"}
    for ax, noise in zip(axes.flat, noises):
        for run in results["runs"]:
            for backend in results["backends"]:
                pts = [s for s in run["summary"] if s["noise"] == noise and s["backend"] == backend]
                if not pts:
                    continue
                lv = [p["level"] for p in pts]
                mean = np.array([p["accuracy_mean"] for p in pts]) * 100
                std = np.array([p["accuracy_std"] for p in pts]) * 100
                label = run["name"] + ("" if backend == "float" else f" [{backend}]")
                ax.errorbar(lv, mean, yerr=std, marker="o", capsize=3, linestyle=styles[backend], label=label)
        ax.set_title(noise)
        ax.set_xlabel("level")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _deployed_network(run_dir: Path, cfg, model, ckpt, profile: str, log: Callable[[str], None]):
    """The run's quantization for ``profile``: of the fine-tuned model when the pipeline made one.

    Quantization is deterministic, so this is the network the pipeline exported.
    """
    from ..quant import load_profile, quantize_model
    from ..train.checkpoint import load_checkpoint

    hw = load_profile(profile)
    deploy = model
    tuned = Path(run_dir) / hw.name / "finetuned.pt"
    what = f"{hw.name}, post-training quantization"
    if tuned.is_file():
        deploy = copy.deepcopy(model)
        deploy.load_state_dict(load_checkpoint(tuned)["model"])
        deploy.eval()
        what = f"{hw.name}, quantized after fine-tuning ({tuned})"
    shape = tuple(ckpt["input_shape"])
    quantized = quantize_model(deploy, shape, hw, time_steps=cfg.data.time_steps or shape[0], name=cfg.name)
    return quantized, what


def evaluate_runs(runs: Sequence[Path], noise_specs: Sequence[str], repeats: int = 1, seed: int = 0,
                  samples: Optional[int] = None, report_dir: Optional[Path] = None,
                  progress: bool = True, backends: Sequence[str] = ("float",), profile: str = "loihi2",
                  lava_samples: int = 100) -> dict:
    """Sweep every run over every noise spec on every backend; print tables, optionally write a report."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    if repeats < 1:
        raise NoiseSpecError(f"--repeats {repeats}: must be >= 1")
    specs = resolve_noise_specs(noise_specs, profile) or [NoiseSpec("gaussian", (0.0,))]
    console = Console()
    results = {"seed": seed, "repeats": repeats, "backends": list(backends),
               "noises": [s.__dict__ for s in specs], "runs": []}
    total = len(runs) * repeats * sum(len(s.levels) for s in specs)
    with Progress(disable=not progress, console=console) as bar:
        task = bar.add_task("evaluate", total=total)
        for run_dir in runs:
            cfg, model, ckpt = load_run(run_dir)
            set_threads(cfg.threads)
            quantized, network_name = None, None
            if any(b != "float" for b in backends) or any(sp.kind in ("network", "step") for sp in specs):
                quantized, network_name = _deployed_network(Path(run_dir), cfg, model, ckpt, profile,
                                                            console.print)
            data = load_dataset(cfg.data.dataset, seed=cfg.seed, data_dir=cfg.data.data_dir)
            x = torch.as_tensor(data.x_test[:samples])
            y = torch.as_tensor(data.y_test[:samples])
            t0 = time.perf_counter()
            rows = sweep(model, x, y, specs, repeats, seed, backends, quantized, lava_samples,
                         on_step=lambda: bar.advance(task))
            results["runs"].append({
                "name": cfg.name if cfg.name == Path(run_dir).name else f"{cfg.name} ({Path(run_dir).name})",
                "run_dir": str(run_dir), "dataset": cfg.data.dataset, "samples": len(x),
                "network": network_name, "rows": rows, "summary": summarize(rows),
                "seconds": time.perf_counter() - t0,
            })
    for run in results["runs"]:
        table = Table(title=f"{run['name']}: accuracy (%) on {run['samples']} test samples")
        for col in ("backend", "noise", "level", "mean", "std", "drop", "spikes/sample"):
            table.add_column(col, justify="left" if col in ("backend", "noise") else "right")
        for s in run["summary"]:
            drop = "" if s["drop_from_clean"] is None else f"{round(100 * s['drop_from_clean'], 2) + 0.0:.2f}"
            table.add_row(s["backend"], s["noise"], f"{s['level']:.4g}", f"{100 * s['accuracy_mean']:.2f}",
                          f"{100 * s['accuracy_std']:.2f}", drop, f"{s['spikes_per_sample']:.1f}")
        console.print(table)
        bad = [s for s in run["summary"] if s["backend"] == "lava" and s["emulator_identical_spikes"] < 1.0]
        if bad:
            console.print("[red]WARNING: the emulator and Lava disagree; this is a bug, please report it")
    if report_dir is not None:
        from ..fileio import atomic_path

        report_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(report_dir / "robustness.json") as tmp:
            tmp.write_text(json.dumps(results, indent=1))
        with atomic_path(report_dir / "robustness.md") as tmp:
            tmp.write_text(_markdown(results))
        with atomic_path(report_dir / "robustness.png") as tmp:
            _plot(results, tmp)
        console.print(f"report written to {report_dir}/robustness.{{json,md,png}}")
    return results
