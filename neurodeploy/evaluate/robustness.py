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
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..attacks import PGD_PRESETS, apgd_ce, fgsm, pgd
from ..data import load_dataset
from ..data.encoders import PoissonEncoder
from ..fileio import atomic_path, check_output_folder, require_regular_file, write_text_atomic
from ..noise.hardware import StepNoise, float_step_noise_model, perturb_float_model, perturb_network
from ..noise.input_noise import apply_input_noise
from .agreement import BackendDisagreement, describe_difference, first_difference, wilson_interval
from .inputs import ChipInputs, chip_inputs, encoding_generator, float_run
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
    if name in ("pgd", "pgd10", "pgd20"):
        # the presets' step sizes are for eps = 8/255; other budgets scale them
        steps, alpha = PGD_PRESETS["pgd7" if name == "pgd" else name]
        return pgd(model, x, y, level, alpha * level / (8 / 255), steps, generator=generator)
    if name == "apgd-ce":
        return apgd_ce(model, x, y, level, generator)
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


class _Seeded(torch.nn.Module):
    """``model`` whose stochastic encoder draws from ``generator`` (attacks on Poisson models are reproducible)."""

    def __init__(self, model: torch.nn.Module, generator: torch.Generator) -> None:
        super().__init__()
        self.model = model
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.generator)


def _perturbed_inputs(model: torch.nn.Module, spec: NoiseSpec, level: float, x: torch.Tensor, y: torch.Tensor,
                      seed: int, repeat: int, batch_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(noise_seed(seed, spec.name, repeat))
    target = _Seeded(model, g) if isinstance(model.encoder, PoissonEncoder) else model
    return torch.cat([perturb(target, spec.name, level, x[i:i + batch_size], y[i:i + batch_size], g)
                      for i in range(0, len(x), batch_size)])


def _float_row(model: torch.nn.Module, inputs: Optional[ChipInputs], xp: torch.Tensor, y: np.ndarray, seed: int,
               batch_size: int, step_hooks=None, network=None) -> dict:
    if inputs is None:
        # no deployable network (float-only sweep of a model that cannot be quantized): pixels in, own encoder
        g = encoding_generator(seed)
        acts = [model.activity(xp[i:i + batch_size], g) for i in range(0, len(xp), batch_size)]
        pred = torch.cat([a["logits"] for a in acts]).argmax(1).numpy()
        layer_spikes = torch.cat([a["spikes_per_layer"] for a in acts]).numpy()
        return {"accuracy": float(np.mean(pred == y)), "samples": len(y),
                "spikes_per_sample": float(layer_spikes.sum(1).mean())}, pred
    on_batch = step_hooks.set_samples if step_hooks is not None else None   # per-step noise: these samples' draws
    out = float_run(model, inputs, batch_size, on_batch)
    row = {"accuracy": float(np.mean(out["predictions"] == y)), "samples": len(y),
           "spikes_per_sample": float(out["layer_spikes"].sum(1).mean()),
           "synops_per_sample": float(synaptic_ops(network, inputs.nonzeros(), out["layer_spikes"]).mean())}
    return row, out["predictions"]


def _point_setup(shared: dict, spec: NoiseSpec, level: float, repeat: int):
    """(float model, fixed-point network, step noise, float step hooks, perturbed samples) of one point,
    from its coordinates alone."""
    model, network, quantized, x = shared["model"], shared["network"], shared["quantized"], shared["x"]
    seed = shared["seed"]
    flt_model, net, step, hooks = model, network, None, None
    if spec.kind == "step":
        # drawn per sample and step from one seed per (noise, repeat), in every backend
        step = StepNoise(spec.name, level, noise_seed(seed, spec.name, repeat))
        if "float" in shared["backends"]:
            flt_model, hooks = float_step_noise_model(model, step, quantized)
        xp = x
    elif spec.kind == "network":
        # one simulated chip instance per (noise, repeat); same draws in torch and fixed point
        chip = noise_seed(seed, spec.name, repeat)
        net = perturb_network(quantized.network, spec.name, level, chip)
        flt_model = perturb_float_model(model, spec.name, level, chip, quantized)
        xp = x
    else:
        xp = _perturbed_inputs(model, spec, level, x, shared["y"], seed, repeat, shared["batch_size"])
    return flt_model, net, step, hooks, xp


def _use_threads(shared: dict) -> None:
    # a worker computes with the caller's torch threads, so its numbers are the caller's bit for bit
    if torch.get_num_threads() != shared["threads"]:
        set_threads(shared["threads"])


def _point_task(shared: dict, spec_index: int, level: float, repeat: int) -> dict:
    """Work unit of one sweep point (noise, level, repeat): the float and emulator rows on all samples,
    and what the point's Lava ranges need (its first ``n_lava`` encoded inputs and emulator result)."""
    from ..backends import run_network
    from .lava_subset import emulator_slice

    _use_threads(shared)
    spec = shared["specs"][spec_index]
    backends, network, batch_size = shared["backends"], shared["network"], shared["batch_size"]
    y_np, n_lava, seed = shared["y"].numpy(), shared["n_lava"], shared["seed"]
    shared["model"].eval()
    flt_model, net, step, hooks, xp = _point_setup(shared, spec, level, repeat)
    # encoded once: the same integers for the float model, the emulator and Lava
    # the same Poisson stream at every noise and level, so level 0 is the clean result
    inputs = chip_inputs(shared["model"], network, xp, encoding_generator(seed)) if network is not None else None
    results, preds, lava = {}, {}, None
    if "float" in backends:
        results["float"], preds["float"] = _float_row(flt_model, inputs, xp, y_np, seed, batch_size, hooks, net)
    if net is not None and ("emulator" in backends or "lava" in backends):
        emu = run_network(net, inputs.values, backend="emulator", step_noise=step)
        emu_pred = emu.predictions()
        if "emulator" in backends:
            results["emulator"] = {
                "accuracy": float(np.mean(emu_pred == y_np)), "samples": len(y_np),
                "spikes_per_sample": float(emu.spike_counts.sum(1).mean()),
                "synops_per_sample": float(synaptic_ops(net, inputs.nonzeros(), emu.spike_counts).mean()),
                # activity of the energy estimate (neurodeploy.evaluate.energy)
                "spikes_per_layer": emu.spike_counts.mean(0).tolist(),
                "input_events_per_sample": float(inputs.nonzeros().mean()),
                "steps_per_sample": int(emu.total_steps)}
        if n_lava > 0:
            ys = y_np[:n_lava]
            lava = {"values": np.ascontiguousarray(inputs.values[:n_lava]),
                    "emulator": emulator_slice(emu, 0, n_lava),
                    "emulator_accuracy_on_subset": float(np.mean(emu_pred[:n_lava] == ys))}
            if "float" in preds:
                lava["float_accuracy_on_subset"] = float(np.mean(preds["float"][:n_lava] == ys))
    return {"results": results, "lava": lava}


def _lava_point_range(shared: dict, spec_index: int, level: float, repeat: int, start: int, stop: int,
                      values: np.ndarray, emulator: dict) -> dict:
    """Work unit of one sweep point's Lava samples ``start:stop`` (network and step noise from the
    point's coordinates, as in :func:`_point_task`)."""
    from .lava_subset import lava_range

    spec = shared["specs"][spec_index]
    net, step = shared["network"], None
    if spec.kind == "step":
        step = StepNoise(spec.name, level, noise_seed(shared["seed"], spec.name, repeat))
    elif spec.kind == "network":
        net = perturb_network(shared["quantized"].network, spec.name, level,
                              noise_seed(shared["seed"], spec.name, repeat))
    # the shared network (clean, input noise) runs on the worker's compiled session; a chip instance's
    # own network, or step noise, on a graph of this range's own
    return lava_range(net, values, emulator, start, stop, step, reuse=net is shared["network"])


def _lava_row(point: dict, parts: list[dict], y_np: np.ndarray) -> dict:
    from .lava_subset import merge_lava_ranges

    lava = merge_lava_ranges(parts)
    n = lava["samples"]
    ys = y_np[:n]
    row = {"accuracy": float(np.mean(lava["predictions"] == ys)), "samples": n,
           "spikes_per_sample": float(lava["spikes"].mean()),
           "emulator_accuracy_on_subset": point["emulator_accuracy_on_subset"],
           "emulator_identical_spikes": float(np.mean(lava["same_output"] & lava["same_counts"])),
           "first_difference": lava["difference"]}
    if "float_accuracy_on_subset" in point:
        row["float_accuracy_on_subset"] = point["float_accuracy_on_subset"]
    return row


def sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, specs: Sequence[NoiseSpec], repeats: int,
          seed: int, backends: Sequence[str] = ("float",), quantized=None, lava_samples: int = 100,
          batch_size: int = 250, on_step: Optional[Callable[[], None]] = None, executor=None,
          progress: bool = False, console=None, missing: Optional[list] = None,
          coords: Optional[dict] = None) -> list[dict]:
    """Accuracy and activity on every backend for every (noise, level, repeat).

    ``model`` is the float model that ``quantized`` (a QuantizationResult) was
    quantized from: the deployable float model of a run
    (:func:`~neurodeploy.evaluate.deployment.load_deployment`).

    Input noises perturb the samples once per (noise, level, repeat) in float
    (attacks are crafted on ``model`` and transferred); the perturbed samples
    are then encoded once into chip inputs (Poisson spikes from one seeded
    stream) and the same integers go to every backend: the float model, the
    emulator on all samples and Lava on the first ``lava_samples``. Lava rows
    carry the float and emulator accuracy on that same subset and the
    emulator/Lava comparison of every layer's spikes (``first_difference``:
    None, or where they part ways, a bug). Hardware (network) noises perturb
    the chip instead: the same seeded draws give the perturbed fixed-point
    network and the matching perturbed float model
    (neurodeploy.noise.hardware). Step noises (spike-drop, current-noise,
    membrane-noise) are drawn anew at every step: the same per-sample draws go
    into the float model's hooks, the emulator's noisy LIF steps and Lava's
    noise-injection processes (:class:`~neurodeploy.noise.hardware.StepNoise`,
    one seed per (noise, repeat)).

    Every point is a task (:func:`_point_task`, seeded by its coordinates
    only) and its Lava subset one or more sample-range tasks, run by
    ``executor`` (:mod:`neurodeploy.executors`; default: this process, in
    order); the rows are the same, bit for bit, on any executor. Level 0 is
    computed once (the first noise with a level 0, repeat 0) and is every
    noise's level 0. A task that fails twice leaves its point out: its
    coordinates are appended to ``missing`` (with ``coords``), or without a
    ``missing`` list the sweep raises :class:`~neurodeploy.executors.SweepIncomplete`.
    """
    from ..executors import LocalExecutor, Task

    network = quantized.network if quantized is not None else None
    for spec in specs:
        if spec.kind in ("network", "step") and quantized is None:
            raise NoiseSpecError(f"--noise {spec.name}: a hardware noise needs the quantized network of the run")
    coords = dict(coords or {})
    y_np = y.numpy()
    n_lava = min(lava_samples, len(x)) if "lava" in backends and network is not None else 0
    # (spec, repeat, level) in report order; every level 0 is the first one computed (common random numbers)
    order = [(si, r, li) for si, spec in enumerate(specs) for r in range(repeats) for li in range(len(spec.levels))]
    clean = next(((si, r, li) for si, r, li in order if specs[si].levels[li] == 0), None)
    computed = list(dict.fromkeys(clean if specs[si].levels[li] == 0 else (si, r, li) for si, r, li in order))

    def point_coords(si, r, li):
        return {**coords, "noise": specs[si].name, "level": specs[si].levels[li], "repeat": r}

    shared = {"model": model, "x": x, "y": y, "specs": list(specs), "quantized": quantized, "network": network,
              "seed": seed, "backends": tuple(backends), "batch_size": batch_size, "n_lava": n_lava,
              "threads": torch.get_num_threads()}
    tasks = [Task(key=(si, r, li), fn=_point_task,
                  params={"spec_index": si, "level": specs[si].levels[li], "repeat": r},
                  coords=point_coords(si, r, li)) for si, r, li in computed]
    ex = executor if executor is not None else LocalExecutor()
    with ex:
        points = ex.run(tasks, shared, description="sweep points", progress=progress, console=console)
        lava_parts: dict = {}
        lava_done = None
        if n_lava > 0:
            from .lava_subset import lava_range_tasks

            # enough ranges to keep every worker busy; one range (one Lava compile) per point otherwise
            parts = max(1, -(-ex.workers // max(1, len(points.results))))
            lava_tasks = []
            for key, res in points.ordered():
                si, r, li = key
                lava_tasks += lava_range_tasks(res["lava"]["values"], res["lava"]["emulator"], n_lava, parts,
                                               fn=_lava_point_range, key=key, coords=point_coords(si, r, li),
                                               spec_index=si,
                                               level=specs[si].levels[li], repeat=r)
                res["lava"]["values"] = None            # moved into its tasks
            lava_done = ex.run(lava_tasks, {k: shared[k] for k in ("network", "quantized", "specs", "seed")},
                               description="lava ranges", progress=progress, console=console)
            for key, part in lava_done.ordered():
                lava_parts.setdefault(key[:3], []).append(part)
    failed = [*points.missing(), *(lava_done.missing() if lava_done is not None else [])]
    if failed and missing is None:
        (points if points.failures else lava_done).raise_if_incomplete("the sweep")
    if missing is not None:
        missing.extend(failed)
    lava_failed = {k[:3] for k in (lava_done.failures if lava_done is not None else {})}
    rows = []
    for si, r, li in order:
        key = clean if specs[si].levels[li] == 0 else (si, r, li)
        res = points.results.get(key)
        if res is not None:
            results = {b: dict(row) for b, row in res["results"].items()}
            if n_lava > 0 and key not in lava_failed:
                results["lava"] = _lava_row(res["lava"], lava_parts[key], y_np)
            for backend, row in results.items():
                rows.append({"backend": backend, "noise": specs[si].name, "level": specs[si].levels[li],
                             "repeat": r, **row})
        if on_step:
            on_step()
    return rows


def _ci(accuracy: float, samples: int, repeats: int) -> list[float]:
    # pooled over repeats: every repeat is another draw on the same samples
    n = samples * repeats
    return list(wilson_interval(int(round(accuracy * n)), n))


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and spread of accuracy per (backend, noise, level), with a 95% interval and the drop from clean.

    Lava items also carry the float and emulator accuracy on the same subset
    of samples, so the three can be set side by side.
    """
    out = []
    keys = sorted({(r.get("backend", "float"), r["noise"], r["level"]) for r in rows},
                  key=lambda k: (BACKEND_NAMES.index(k[0]), k[1], k[2]))
    for backend, noise, level in keys:
        sel = [r for r in rows if r.get("backend", "float") == backend and r["noise"] == noise
               and r["level"] == level]
        clean = [r["accuracy"] for r in rows if r.get("backend", "float") == backend and r["level"] == 0]
        accs = np.array([r["accuracy"] for r in sel])
        samples = int(sel[0].get("samples", 0))
        item = {
            "backend": backend, "noise": noise, "level": level, "accuracy_mean": float(accs.mean()),
            "accuracy_std": float(accs.std()), "repeats": len(accs), "samples": samples,
            "ci95": _ci(float(accs.mean()), samples, len(accs)),
            "drop_from_clean": (float(np.mean(clean)) - float(accs.mean())) if clean else None,
            "spikes_per_sample": float(np.mean([r["spikes_per_sample"] for r in sel])),
        }
        if all("synops_per_sample" in r for r in sel):
            item["synops_per_sample"] = float(np.mean([r["synops_per_sample"] for r in sel]))
        if backend == "lava":
            item["emulator_identical_spikes"] = float(min(r["emulator_identical_spikes"] for r in sel))
            item["differences"] = [r["first_difference"] for r in sel if r.get("first_difference")]
            for other in ("float", "emulator"):
                key = f"{other}_accuracy_on_subset"
                if all(key in r for r in sel):
                    mean = float(np.mean([r[key] for r in sel]))
                    item[key] = mean
                    item[f"{other}_ci95_on_subset"] = _ci(mean, samples, len(sel))
        out.append(item)
    return out


def print_summary(results: dict, console=None) -> None:
    """Accuracy per (backend, noise, level) of every run as compact rich tables (readable in 80 columns).

    The spread over repeats, the samples and the activity are in the Markdown report.
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for run in results["runs"]:
        table = Table(title=f"{run['name']}: accuracy (%) on {run['samples']} test samples "
                            f"({results['repeats']} repeat(s))")
        for col in ("backend", "noise", "level", "mean", "95% interval", "drop"):
            table.add_column(col, justify="left" if col in ("backend", "noise") else "right", overflow="fold")
        for s in run["summary"]:
            drop = "" if s["drop_from_clean"] is None else f"{round(100 * s['drop_from_clean'], 2) + 0.0:.2f}"
            table.add_row(s["backend"], s["noise"], f"{s['level']:.4g}", f"{100 * s['accuracy_mean']:.2f}",
                          f"{100 * s['ci95'][0]:.1f}-{100 * s['ci95'][1]:.1f}", drop)
        console.print(table)
    for err in results["errors"]:
        console.print(f"ERROR: {err}", style="bold red", markup=False, highlight=False)


def _pct_ci(acc: float, ci: list[float]) -> str:
    return f"{100 * acc:.2f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _markdown(results: dict) -> str:
    lines = []
    for err in results.get("errors", []):
        lines += [f"> **ERROR: {err}.** The Lava columns of that run are not a valid comparison.", ""]
    for m in results.get("missing", []):
        lines += [f"> **MISSING: {_describe_missing(m)}.** Its task failed twice; the tables below lack it.", ""]
    lines += ["# Robustness report", "", f"Seed {results['seed']}, {results['repeats']} repeat(s) per level; "
              f"backends: {', '.join(results['backends'])}. The float model is the deployed one (the model the "
              f"fixed-point network was quantized from); attacks are crafted on it and transferred to the "
              f"fixed-point network; every backend gets the same encoded inputs. Accuracies are given with a 95% "
              f"Wilson interval (pooled over repeats).", ""]
    for run in results["runs"]:
        lines += [f"## {run['name']} ({run['run_dir']})", "",
                  f"{run['samples']} test samples of {run['dataset']}"
                  + (f"; deployed model: {run['network']}" if run.get("network") else "") + ".",
                  *_fit_energy_markdown(run), "",
                  "| backend | noise | level | accuracy (mean) [95% interval] | std | drop from clean "
                  "| spikes / sample | synaptic ops / sample |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for s in run["summary"]:
            if s["backend"] == "lava":
                continue
            drop = "" if s["drop_from_clean"] is None else f"{round(100 * s['drop_from_clean'], 2) + 0.0:.2f}"
            synops = f"{s['synops_per_sample']:.0f}" if "synops_per_sample" in s else ""
            lines.append(f"| {s['backend']} | {s['noise']} | {s['level']:.4g} | "
                         f"{_pct_ci(s['accuracy_mean'], s['ci95'])} | {100 * s['accuracy_std']:.2f} | {drop} | "
                         f"{s['spikes_per_sample']:.1f} | {synops} |")
        lava = [s for s in run["summary"] if s["backend"] == "lava"]
        if lava:
            n = lava[0]["samples"]
            lines += ["", f"### On the first {n} samples (the Lava subset)", "",
                      "| noise | level | float | fixed point (emulator) | Lava | identical spikes, every layer |",
                      "|---|---:|---:|---:|---:|---:|"]
            for s in lava:
                flt = (_pct_ci(s["float_accuracy_on_subset"], s["float_ci95_on_subset"])
                       if "float_accuracy_on_subset" in s else "")
                lines.append(f"| {s['noise']} | {s['level']:.4g} | {flt} | "
                             f"{_pct_ci(s['emulator_accuracy_on_subset'], s['emulator_ci95_on_subset'])} | "
                             f"{_pct_ci(s['accuracy_mean'], s['ci95'])} | "
                             f"{100 * s['emulator_identical_spikes']:.0f}% |")
        lines.append("")
    return "\n".join(lines)


LEVEL_AXIS_LIMIT = 1e6   # larger (or non-finite) levels are plotted evenly spaced, labelled with their values


def level_axis(levels: Sequence[float]) -> tuple[dict, Callable]:
    """x positions of sweep ``levels`` and a function that sets an axis up for them, with finite limits.

    Levels of ordinary size are their own positions; levels that matplotlib
    cannot lay out (huge, e.g. ``gaussian:1e308``, a span that overflows or
    underflows) are plotted evenly spaced with their values as tick labels,
    so any legal sweep gets its plot.
    """
    levels = [float(v) for v in levels]
    lo, hi = (min(levels), max(levels)) if levels else (0.0, 1.0)
    finite = all(np.isfinite(v) for v in levels)
    span = hi - lo if finite else float("inf")
    plain = (finite and max(abs(lo), abs(hi)) <= LEVEL_AXIS_LIMIT
             and (span == 0 or span >= 1e-9 * max(1.0, abs(hi))))
    if plain:
        pad = 0.05 * span if span > 0 else max(0.05 * abs(hi), 0.05)

        def setup(ax) -> None:
            ax.set_xlim(lo - pad, hi + pad)
        return {v: v for v in levels}, setup

    xmap = {v: float(i) for i, v in enumerate(levels)}

    def setup(ax) -> None:
        ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_xticks(list(xmap.values()))
        ax.set_xticklabels([f"{v:.3g}" for v in levels], fontsize=7)
        ax.set_xlabel("level (evenly spaced)")
    return xmap, setup


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noises = sorted({s["noise"] for run in results["runs"] for s in run["summary"]})
    has_lava = any(s["backend"] == "lava" for run in results["runs"] for s in run["summary"])
    ncols = min(4, len(noises))
    grid_rows = -(-len(noises) // ncols)
    nrows = grid_rows * (2 if has_lava else 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    styles = {"float": "-", "emulator": "--", "lava": ":"}

    def curve(ax, pts, key, ci_key, label, style, xmap):
        lv = [xmap[p["level"]] for p in pts]
        mean = np.array([p[key] for p in pts]) * 100
        lo = np.array([p[ci_key][0] for p in pts]) * 100
        hi = np.array([p[ci_key][1] for p in pts]) * 100
        # a (2, N) array (a list of arrays is deprecated in matplotlib); never negative (rounding)
        yerr = np.clip(np.vstack([mean - lo, hi - mean]), 0, None)
        ax.errorbar(lv, mean, yerr=yerr, marker="o", capsize=3, linestyle=style, label=label)

    used = []
    for k, noise in enumerate(noises):
        ax = axes[(k // ncols) * (2 if has_lava else 1), k % ncols]
        used.append(ax)
        xmap, set_x = level_axis(sorted({s["level"] for run in results["runs"] for s in run["summary"]
                                          if s["noise"] == noise}))
        set_x(ax)
        for run in results["runs"]:
            for backend in ("float", "emulator"):
                pts = [s for s in run["summary"] if s["noise"] == noise and s["backend"] == backend]
                if pts:
                    curve(ax, pts, "accuracy_mean", "ci95", f"{run['name']} [{backend}]", styles[backend], xmap)
        ax.set_title(f"{noise}: all {results['runs'][0]['samples']} samples", fontsize=9)
        if has_lava:
            ax2 = axes[(k // ncols) * 2 + 1, k % ncols]
            used.append(ax2)
            set_x(ax2)
            n = None
            for run in results["runs"]:
                pts = [s for s in run["summary"] if s["noise"] == noise and s["backend"] == "lava"]
                if not pts:
                    continue
                n = pts[0]["samples"]
                if all("float_accuracy_on_subset" in p for p in pts):
                    curve(ax2, pts, "float_accuracy_on_subset", "float_ci95_on_subset", f"{run['name']} [float]",
                          styles["float"], xmap)
                curve(ax2, pts, "emulator_accuracy_on_subset", "emulator_ci95_on_subset",
                      f"{run['name']} [emulator]", styles["emulator"], xmap)
                curve(ax2, pts, "accuracy_mean", "ci95", f"{run['name']} [lava]", styles["lava"], xmap)
            ax2.set_title(f"{noise}: the first {n} samples (Lava subset)", fontsize=9)
    for ax in axes.flat:
        if ax not in used:
            ax.set_visible(False)
            continue
        if not ax.get_xlabel():
            ax.set_xlabel("level")
        ax.set_ylabel("accuracy (%), 95% interval")
        ax.set_ylim(0, 102)     # room for markers at 100%
        ax.grid(alpha=0.3)
    used[0].legend(fontsize=7)
    if has_lava:
        used[1].legend(fontsize=7)
    if results.get("errors"):
        fig.suptitle("ERROR: the emulator and Lava disagree (see robustness.md)", color="red")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def _fit_and_energy(quantized, profile: str, rows: list[dict]) -> dict:
    """The deployed network's fit summary and, from the clean emulator row, the energy estimate."""
    if quantized is None:
        return {"fit": None, "energy": None}
    from ..quant import load_profile
    from ..quant.fit import fit_network
    from .energy import Activity, estimate_energy

    hw = load_profile(profile)
    fit = fit_network(quantized.network, hw)
    clean = next((r for r in rows if r["backend"] == "emulator" and r["level"] == 0 and "spikes_per_layer" in r),
                 None)
    estimate = None
    if clean is not None:
        estimate = estimate_energy(quantized.network, hw, Activity(clean["input_events_per_sample"],
                                                                   clean["spikes_per_layer"],
                                                                   clean["steps_per_sample"]), fit)
    return {"fit": fit.summary(), "energy": None if estimate is None else estimate.to_dict()}


def _fit_energy_markdown(run: dict) -> list[str]:
    lines = []
    fit, est = run.get("fit"), run.get("energy")
    if fit is not None:
        t = fit["tightest"]
        verdict = "fits" if fit["fits"] else "DOES NOT FIT: " + "; ".join(fit["problems"])
        lines += ["", f"Fit on `{fit['profile']}`: {fit['cores']} cores on {fit['chips']} chip(s), {verdict}"
                  + (f"; tightest: {t['resource']} {t['used']} of {t['available']} at {t['where']}" if t else "")
                  + "."]
    if est is not None:
        lines += ["", f"Energy per clean inference (estimate from the emulator's activity, {est['time_steps']} "
                      f"steps): {est['energy_uj'][0]:.4g} to {est['energy_uj'][1]:.4g} uJ (dynamic "
                      f"{est['dynamic_energy_uj'][0]:.4g} to {est['dynamic_energy_uj'][1]:.4g} uJ); latency "
                      f"{est['latency_us'][0]:.4g} to {est['latency_us'][1]:.4g} us. A model from published "
                      f"per-operation costs (profile energy: section), not a measurement."]
    return lines


def _deployment_for(run_dir: Path, profile: str, needs_network: bool, log: Callable[[str], None]):
    """The run's deployment, or (float-only sweeps of a model that cannot be deployed) None and why."""
    from ..quant import QuantizationError
    from .deployment import load_deployment

    try:
        return load_deployment(run_dir, profile, log=log), None
    except QuantizationError as exc:
        if needs_network:
            raise
        return None, str(exc)


def evaluate_runs(runs: Sequence[Path], noise_specs: Sequence[str], repeats: int = 1, seed: int = 0,
                  samples: Optional[int] = None, report_dir: Optional[Path] = None,
                  progress: bool = True, backends: Sequence[str] = ("float",), profile: str = "loihi2",
                  lava_samples: int = 100, executor=None) -> dict:
    """Sweep every run over every noise spec on every backend; print tables, optionally write a report.

    Each run is evaluated as deployed for ``profile``
    (:func:`~neurodeploy.evaluate.deployment.load_deployment`). Raises
    :class:`~neurodeploy.evaluate.agreement.BackendDisagreement` (after
    writing the report) when the emulator and Lava disagree anywhere.
    ``executor`` (:mod:`neurodeploy.executors`; default: this process) runs
    the sweep's tasks; points whose tasks failed twice are listed under
    ``missing`` in the report, which then raises
    :class:`~neurodeploy.executors.SweepIncomplete` after it is written.
    """
    from rich.console import Console

    from ..executors import LocalExecutor, SweepIncomplete
    from ..train.checkpoint import CHECKPOINT_NAME

    if repeats < 1:
        raise NoiseSpecError(f"--repeats {repeats}: must be >= 1")
    if samples is not None and samples < 1:
        raise NoiseSpecError(f"--samples {samples}: must be >= 1")
    specs = resolve_noise_specs(noise_specs, profile) or [NoiseSpec("gaussian", (0.0,))]
    # everything that can be checked is checked before the first (long) sweep
    for run_dir in runs:
        require_regular_file(Path(run_dir) / CHECKPOINT_NAME, f"checkpoint of run folder {run_dir}")
    if report_dir is not None:
        report_dir = check_output_folder(report_dir, "--report")
    console = Console()
    results = {"seed": seed, "repeats": repeats, "backends": list(backends),
               "noises": [s.__dict__ for s in specs], "runs": [], "errors": []}
    needs_network = any(b != "float" for b in backends) or any(sp.kind in ("network", "step") for sp in specs)
    first_error = None
    missing: list = []
    executor = executor if executor is not None else LocalExecutor()
    with executor:
        for run_dir in runs:
            dep, why = _deployment_for(Path(run_dir), profile, needs_network, console.print)
            if dep is not None:
                cfg, model, quantized, network_name = dep.cfg, dep.model, dep.quantized, dep.describe()
            else:
                cfg, model, _ = load_run(run_dir)
                quantized, network_name = None, f"none (the trained float model: {why})"
            set_threads(cfg.threads)
            data = load_dataset(cfg.data.dataset, seed=cfg.seed, data_dir=cfg.data.data_dir)
            x = torch.as_tensor(data.x_test[:samples])
            y = torch.as_tensor(data.y_test[:samples])
            t0 = time.perf_counter()
            name = cfg.name if cfg.name == Path(run_dir).name else f"{cfg.name} ({Path(run_dir).name})"
            rows = sweep(model, x, y, specs, repeats, seed, backends, quantized, lava_samples, executor=executor,
                         progress=progress, console=console, missing=missing, coords={"run": name})
            for r in rows:
                if r.get("first_difference"):
                    msg = describe_difference(r["first_difference"], f"{name}, {r['noise']} level {r['level']:.4g} "
                                                                     f"repeat {r['repeat']}")
                    results["errors"].append(msg)
                    first_error = first_error or (msg, r["first_difference"])
            results["runs"].append({
                "name": name, "run_dir": str(run_dir), "dataset": cfg.data.dataset, "samples": len(x),
                "network": network_name, "rows": rows, "summary": summarize(rows),
                "seconds": time.perf_counter() - t0,
                **_fit_and_energy(quantized, profile, rows),
            })
    results["missing"] = missing
    print_summary(results, console)
    for m in missing:
        console.print(f"MISSING: {_describe_missing(m)}", style="bold red", markup=False, highlight=False)
    if report_dir is not None:
        write_text_atomic(report_dir / "robustness.json", json.dumps(results, indent=1))
        write_text_atomic(report_dir / "robustness.md", _markdown(results))
        with atomic_path(report_dir / "robustness.png") as tmp:
            _plot(results, tmp)
        console.print(f"report written to {report_dir}/robustness.{{json,md,png}}", markup=False, highlight=False)
    if first_error is not None:
        raise BackendDisagreement(*first_error)
    if missing:
        raise SweepIncomplete(f"{len(missing)} sweep task(s) failed twice; their points are missing from the "
                              f"report: {_describe_missing(missing[0])}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""), {})
    return results


def _describe_missing(m: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in m.items() if k != "error") + f" ({m['error']})"
