"""The end-to-end job: train (or reuse), deploy, export, run every rung on the same inputs, compare.

``neurodeploy pipeline --config models/X.yaml`` leaves in ``runs/X/``:

* the trained run (``checkpoint.pt``, ``metrics.jsonl``, ``config.yaml``);
* ``<profile>/``: the deployment (:mod:`neurodeploy.evaluate.deployment`):
  ``network.net`` (lava-dl netx HDF5), ``model.nir`` and ``model_step.onnx``,
  all three of the one deployable float model and its quantization, plus the
  quantization report and ``deployment.json``;
* ``<profile>/report.{json,md,png}``: the *loss ladder*: trained float ->
  deployable float (DLIF gain folded, fine-tuned if asked) -> fixed point
  (emulator, whole split) -> Lava (a subset), with accuracy, a 95% interval
  and the per-sample agreement with the rung before. The Lava subset is shown
  with every rung on those same samples.

Every rung gets the same integer inputs, encoded once from the run's seed
(:mod:`neurodeploy.evaluate.inputs`). The emulator must agree with Lava on
every layer's spikes; where it does not, the report says so at the top and
the pipeline fails (:class:`~neurodeploy.evaluate.agreement.BackendDisagreement`).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..backends import run_network
from ..config import RunConfig, load_config
from ..data import load_dataset
from ..fileio import atomic_path, inside, write_text_atomic
from ..ir import ConvLayer, Network
from ..quant.report import print_report, report_dict, write_report
from ..train.checkpoint import CHECKPOINT_NAME
from ..train.loop import RunError, load_run_checkpoint, set_threads, train
from ..executors import Executor, LocalExecutor
from .agreement import BackendDisagreement, describe_difference, wilson_interval
from .deployment import deploy_folder, prepare_deployment
from .energy import activity_of, energy_markdown, estimate_energy
from .inputs import encoding_generator, float_run
from .lava_subset import emulator_slice, lava_range_tasks, merge_lava_ranges

# float and fixed point disagreeing on more than this fraction of samples points the report to `inspect`
INSPECT_DISAGREEMENT = 0.01


def inspect_hint(run_dir, profile: str, agreement: float) -> Optional[dict]:
    """Where to look when float and fixed point disagree on more than 1% of samples (None otherwise)."""
    disagreement = round(1.0 - float(agreement), 12)     # a fraction of samples: no float residue at 1%
    if disagreement <= INSPECT_DISAGREEMENT:
        return None
    return {"disagreement": disagreement, "command": f"neurodeploy inspect {run_dir} --profile {profile}"}


def fan_out(network: Network) -> list[float]:
    """Synapses each spike of layer l-1 (l = 0: each non-zero input) drives in layer l."""
    out = []
    for layer in network.layers:
        if isinstance(layer, ConvLayer):
            c_out, _, kh, kw = layer.weight.shape
            out.append(c_out / layer.groups * kh * kw / (layer.stride[0] * layer.stride[1]))
        else:
            out.append(float(layer.weight.shape[0]))
    return out


def synaptic_ops(network: Network, input_nonzeros: np.ndarray, layer_spikes: np.ndarray) -> np.ndarray:
    """Synaptic operations per sample: each spike times the synapses it drives."""
    fo = fan_out(network)
    ops = input_nonzeros * fo[0]
    for i, layer in enumerate(network.layers):
        if i + 1 < len(network.layers):
            ops = ops + layer_spikes[:, i] * fo[i + 1]
        if getattr(layer, "weight_rec", None) is not None:
            ops = ops + layer_spikes[:, i] * layer.weight_rec.shape[0]
    return ops



def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, wanted: dict) -> dict[str, tuple]:
    """Dotted keys whose values differ between two config dicts: ``{key: (saved, wanted)}``."""
    a, b = _flat(saved), _flat(wanted)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def ensure_run(cfg: RunConfig, run_dir: Path, *, force: bool = False, progress: bool = True,
               log: Callable[[str], None] = print, data=None) -> str:
    """Train ``cfg`` into ``run_dir`` unless a run there already is (or can become) that run.

    A finished run of the same config is reused; one that stopped early, or
    whose config differs only by a larger ``training.epochs``, is resumed
    (extended). Any other difference is a :class:`RunError` naming the keys,
    unless ``force`` (retrain from scratch). ``data`` (a DatasetSplit) replaces
    the config's data set, e.g. a subset for a quick check. Returns what was done:
    ``"trained"``, ``"resumed"``, ``"reused"`` or ``"retrained"``.
    """
    ckpt_path = run_dir / CHECKPOINT_NAME
    if not ckpt_path.is_file():
        train(cfg, run_dir, progress=progress, log=log, data=data)
        return "trained"
    # checked (safe load, structure, config.yaml record) before deciding to reuse, resume or retrain;
    # read through the config loader: keys added since the run was trained take their defaults
    saved_cfg, saved = load_run_checkpoint(run_dir)
    stored = saved_cfg.to_dict()
    diff = config_differences(stored, cfg.to_dict())
    epochs_only = set(diff) == {"training.epochs"} and diff["training.epochs"][1] > diff["training.epochs"][0]
    if diff and not epochs_only:
        if not force:
            keys = ", ".join(f"{k} ({a!r} there, {b!r} asked)" for k, (a, b) in diff.items())
            raise RunError(f"{run_dir} holds a run of another config: {keys}; use --out for a new run folder "
                           f"or --force to retrain it")
        log(f"{run_dir} holds a run of another config; retraining (--force)")
        train(cfg, run_dir, force=True, progress=progress, log=log, data=data)
        return "retrained"
    if saved["epoch"] < cfg.training.epochs:
        log(f"resuming {run_dir} from epoch {saved['epoch']} to {cfg.training.epochs}")
        train(cfg, run_dir, resume=True, progress=progress, log=log, extend_to=cfg.training.epochs, data=data)
        return "resumed"
    log(f"reusing the trained run in {run_dir}")
    return "reused"


def _rung(name: str, backend: str, pred: np.ndarray, y: np.ndarray, previous: Optional[np.ndarray],
          **extra) -> dict:
    correct = int(np.sum(pred == y))
    lo, hi = wilson_interval(correct, len(y))
    return {"rung": name, "backend": backend, "samples": int(len(y)), "correct": correct,
            "accuracy": correct / len(y), "ci95": [lo, hi],
            "agreement_with_previous": None if previous is None else float(np.mean(pred == previous)),
            **extra}


def _activity(network: Network, nonzeros: np.ndarray, layer_spikes: np.ndarray) -> dict:
    return {"spikes_per_sample": float(layer_spikes.sum(1).mean()),
            "spikes_per_layer": layer_spikes.mean(0).tolist(),
            "synops_per_sample": float(synaptic_ops(network, nonzeros, layer_spikes).mean())}


def run_pipeline(config: Path, *, run_dir: Optional[Path] = None, profile: str = "loihi2",
                 lava_samples: int = 200, test_samples: Optional[int] = None, epochs: Optional[int] = None,
                 seed: Optional[int] = None, finetune: int = 2, force: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print, executor: Optional[Executor] = None) -> dict:
    """Run the whole job for one model config; return the report dict.

    ``executor`` (:mod:`neurodeploy.executors`; default: this process) runs
    the Lava subset as sample ranges, one per worker.

    ``finetune`` epochs of quantization-aware fine-tuning (frozen mean DLIF
    gain, straight-through rounded weights) precede quantization; 0 gives
    plain post-training quantization. Raises
    :class:`~neurodeploy.evaluate.agreement.BackendDisagreement` after
    writing the report when the emulator and Lava disagree.
    """
    from ..io import NetxInexactWarning, export_nir, export_onnx, write_netx

    t_start = time.perf_counter()
    overrides = {}
    if epochs is not None:
        overrides["training.epochs"] = epochs
    if seed is not None:
        overrides["seed"] = seed
    from ..quant import load_profile

    cfg = load_config(config, overrides)
    run_dir = Path(run_dir) if run_dir is not None else inside(Path("runs"), Path(config).stem,
                                                               what=f"{config}: file name")
    deploy_folder(run_dir, load_profile(profile))    # a bad profile fails before training, not after
    training = ensure_run(cfg, run_dir, force=force, progress=progress, log=log)
    dep = prepare_deployment(run_dir, profile, finetune, progress=progress, log=log)
    cfg = dep.cfg
    set_threads(cfg.threads)
    network, out = dep.network, dep.folder
    out.mkdir(parents=True, exist_ok=True)
    _, quant_md = write_report(dep.quantized, out)
    if progress:
        print_report(dep.quantized, details=quant_md)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NetxInexactWarning)
        write_netx(network, out / "network.net", exact=False)
    netx_notes = [str(w.message) for w in caught if issubclass(w.category, NetxInexactWarning)]
    for note in netx_notes:
        log(f"note: {note}")
    # the float views of the deploy folder are of the model that was quantized
    export_nir(dep.model, out / "model.nir", input_shape=dep.input_shape, time_steps=dep.time_steps)
    export_onnx(dep.model, out / "model_step.onnx", input_shape=dep.input_shape)
    log(f"exported {out}/network.net, model.nir, model_step.onnx ({dep.describe()})")

    data = load_dataset(cfg.data.dataset, seed=cfg.seed, data_dir=cfg.data.data_dir)
    x, y = data.x_test[:test_samples], data.y_test[:test_samples]
    inputs = dep.inputs(x, encoding_generator(cfg.seed))      # encoded once, fed to every rung
    nz = inputs.nonzeros()
    trained = float_run(dep.trained, inputs)
    t0 = time.perf_counter()
    deploy = float_run(dep.model, inputs)
    float_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    emu = run_network(network, inputs.values, backend="emulator", progress=progress)
    emu_seconds = time.perf_counter() - t0
    n_lava = min(lava_samples, len(x))
    lava, lava_seconds, difference = None, 0.0, None
    if n_lava > 0:
        # the subset as sample ranges, one task each (one per worker); merged in sample order, the
        # numbers are those of one Lava run over the whole subset
        t0 = time.perf_counter()
        ex = executor if executor is not None else LocalExecutor()
        with ex:
            tasks = lava_range_tasks(inputs.values, emulator_slice(emu, 0, n_lava), n_lava, ex.workers)
            done = ex.run(tasks, {"network": network}, description="lava", progress=progress, log=log)
        done.raise_if_incomplete("the pipeline's Lava subset")
        lava = merge_lava_ranges([r for _, r in done.ordered()])
        lava_seconds = time.perf_counter() - t0
        difference = lava["difference"]

    emu_pred = emu.predictions()
    emu_counts = emu.aligned_output().sum(1, dtype=np.int64)
    ladder = [
        _rung("trained float", "float", trained["predictions"], y, None,
              **_activity(network, nz, trained["layer_spikes"])),
        _rung("deployable float", "float", deploy["predictions"], y, trained["predictions"],
              **_activity(network, nz, deploy["layer_spikes"]), seconds=float_seconds),
        _rung("fixed point", "emulator", emu_pred, y, deploy["predictions"],
              **_activity(network, nz, emu.spike_counts), seconds=emu_seconds,
              samples_per_second=len(x) / emu_seconds if emu_seconds > 0 else None),
    ]
    report = {
        "config": str(config), "run_dir": str(run_dir), "profile": dep.profile.name, "dataset": cfg.data.dataset,
        "encoder": cfg.data.encoder, "seed": cfg.seed, "training": training,
        "deployment": {"finetune_epochs": dep.finetune_epochs, "description": dep.describe()},
        "finetune_epochs": dep.finetune_epochs,
        "test_samples": int(len(x)), "time_steps": int(dep.time_steps), "latency": int(network.latency),
        "ladder": ladder,
        "float": ladder[1], "trained_float": ladder[0], "fixed_point": ladder[2],
        "agreement": {
            "prediction_float_vs_fixed": float(np.mean(deploy["predictions"] == emu_pred)),
            "output_counts_identical": float(np.mean(np.all(deploy["output_counts"] == emu_counts, axis=1))),
            "output_counts_mean_abs_diff": float(np.mean(np.abs(deploy["output_counts"] - emu_counts))),
        },
        "accuracy_drop": ladder[1]["accuracy"] - ladder[2]["accuracy"],
        "accuracy_drop_from_trained": ladder[0]["accuracy"] - ladder[2]["accuracy"],
        "quantization": report_dict(dep.quantized),
        "netx_export": {"exact": not netx_notes, "notes": netx_notes},
    }
    from ..quant.fit import fit_network

    fit = fit_network(network, dep.profile)
    report["fit"] = fit.summary()
    estimate = estimate_energy(network, dep.profile, activity_of(emu, nz), fit)
    report["energy"] = None if estimate is None else estimate.to_dict()
    report["inspect"] = inspect_hint(run_dir, profile, report["agreement"]["prediction_float_vs_fixed"])
    if lava is not None:
        ys = y[:n_lava]
        lava_pred = lava["predictions"]
        sub = [_rung(r["rung"], r["backend"], p[:n_lava], ys, None if q is None else q[:n_lava])
               for r, p, q in zip(ladder, (trained["predictions"], deploy["predictions"], emu_pred),
                                  (None, trained["predictions"], deploy["predictions"]))]
        sub.append(_rung("Lava", "lava", lava_pred, ys, emu_pred[:n_lava], seconds=lava_seconds,
                         samples_per_second=n_lava / lava_seconds if lava_seconds > 0 else None))
        same_out, same_counts = lava["same_output"], lava["same_counts"]
        report["lava_subset"] = {"samples": n_lava, "ladder": sub}
        report["lava"] = {
            **sub[-1],
            "float_accuracy_on_subset": sub[1]["accuracy"],
            "emulator_accuracy_on_subset": sub[2]["accuracy"],
            "emulator_agreement_predictions": float(np.mean(lava_pred == emu_pred[:n_lava])),
            "emulator_identical_output_spikes": float(np.mean(same_out)),
            "emulator_identical_spike_counts": float(np.mean(same_counts)),
        }
        report["emulator_vs_lava"] = {"identical": difference is None, "compared": "every layer's spike counts and "
                                      "the output spike trains of every sample", "first_difference": difference}
    report["seconds"] = time.perf_counter() - t_start
    message = describe_difference(difference, "the pipeline's Lava subset") if difference else None
    report["error"] = message
    write_text_atomic(out / "report.json", json.dumps(report, indent=1))
    write_text_atomic(out / "report.md", _markdown(report, fit, estimate))
    with atomic_path(out / "report.png") as tmp:
        _plot(report, deploy, emu_counts, tmp)
    if progress:
        print_ladder(report)
    log(f"report written to {out}/report.{{json,md,png}}")
    if message:
        raise BackendDisagreement(message, difference)
    return report


def _pct(a: float) -> str:
    return f"{100 * a:.2f}%"


def _ci(r: dict) -> str:
    return f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}"


def _agree(r: dict) -> str:
    return "" if r["agreement_with_previous"] is None else _pct(r["agreement_with_previous"])


def ladder_rows(report: dict) -> list[tuple[str, list[dict]]]:
    """(title, rungs) of the report's ladders: the whole split, then the Lava subset."""
    out = [(f"all {report['test_samples']} test samples", report["ladder"])]
    if "lava_subset" in report:
        out.append((f"the first {report['lava_subset']['samples']} test samples (the Lava subset)",
                    report["lava_subset"]["ladder"]))
    return out


def print_ladder(report: dict, console=None) -> None:
    """The loss ladder on the terminal (rich tables, readable in 80 columns)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if report.get("error"):
        console.print(f"ERROR: {report['error']}", style="bold red", markup=False, highlight=False)
    for title, rungs in ladder_rows(report):
        table = Table(title=f"loss ladder on {title}")
        for col in ("rung", "backend", "accuracy", "95% interval", "same prediction as rung above"):
            table.add_column(col, justify="left" if col in ("rung", "backend") else "right", overflow="fold")
        for r in rungs:
            table.add_row(r["rung"], r["backend"], _pct(r["accuracy"]), _ci(r), _agree(r))
        console.print(table)


def _markdown(r: dict, fit=None, estimate=None) -> str:
    f, q, a = r["float"], r["fixed_point"], r["agreement"]
    lines = []
    if r.get("error"):
        lines += [f"> **ERROR: {r['error']}.** The numbers below are not a valid comparison.", ""]
    lines += [
        f"# {Path(r['config']).stem}: from float to the chip ({r['profile']})", "",
        f"{r['test_samples']} test samples of {r['dataset']} ({r['encoder']} encoding, seed {r['seed']}), "
        f"T = {r['time_steps']} (the fixed-point network answers {r['latency']} steps later: one step per "
        f"synaptic layer). Deployable float model: {r['deployment']['description']}. Every rung gets the same "
        f"integer inputs, encoded once.", "",
    ]
    for title, rungs in ladder_rows(r):
        lines += [f"## Loss ladder on {title}", "",
                  "| rung | backend | accuracy | 95% interval | same prediction as the rung above |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {x['rung']} | {x['backend']} | {_pct(x['accuracy'])} | {_ci(x)} | {_agree(x)} |"
                  for x in rungs]
        lines.append("")
    lines += [
        "## Deployable float vs fixed point (all samples)", "",
        "| | deployable float (torch) | fixed point (emulator) |", "|---|---:|---:|",
        f"| spikes / sample | {f['spikes_per_sample']:.1f} | {q['spikes_per_sample']:.1f} |",
        f"| synaptic ops / sample | {f['synops_per_sample']:.0f} | {q['synops_per_sample']:.0f} |",
        f"| seconds | {f['seconds']:.2f} | {q['seconds']:.2f} |", "",
        f"- accuracy drop deployable float -> fixed point: {100 * r['accuracy_drop']:.2f} points "
        f"(from the trained float model: {100 * r['accuracy_drop_from_trained']:.2f})",
        f"- same prediction: {100 * a['prediction_float_vs_fixed']:.2f}% of samples",
        f"- identical output spike counts: {100 * a['output_counts_identical']:.2f}% of samples "
        f"(mean |difference| {a['output_counts_mean_abs_diff']:.3f} spikes per class)",
    ]
    if r.get("inspect"):
        lines.append(f"- float and fixed point disagree on {100 * r['inspect']['disagreement']:.2f}% of samples "
                     f"(more than {100 * INSPECT_DISAGREEMENT:.0f}%): see where they part ways with "
                     f"`{r['inspect']['command']}`")
    if "lava" in r:
        lv, ev = r["lava"], r["emulator_vs_lava"]
        verdict = ("identical spikes in every layer at every step" if ev["identical"]
                   else "DIFFERENT spikes (see the error at the top)")
        lines.append(f"- Lava (`Loihi2SimCfg(select_tag='fixed_pt')`) on the first {lv['samples']} samples: "
                     f"{verdict}; {lv['samples_per_second']:.1f} samples/s vs the emulator's "
                     f"{q['samples_per_second']:.0f}.")
    if fit is not None:
        from ..quant.fit import fit_markdown

        lines += ["", f"## Does it fit ({r['profile']})", "", fit_markdown(fit).rstrip()]
    if estimate is not None:
        lines += ["", "## What it costs (estimate, fixed point on the emulator)", "", energy_markdown(estimate).rstrip()]
    lines += ["", "## Quantization", ""]
    from ..quant.report import COLUMNS

    lines.append("| " + " | ".join(c for c, _ in COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for layer in r["quantization"]["layers"]:
        ns = type("L", (), layer)
        lines.append("| " + " | ".join(fn(ns) for _, fn in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _ladder_bars(ax, rungs: list[dict], title: str) -> None:
    colors = {"trained float": "#8c8c8c", "deployable float": "#4c72b0", "fixed point": "#dd8452",
              "Lava": "#55a868"}
    accs = np.array([100 * x["accuracy"] for x in rungs])
    lo = np.array([100 * x["ci95"][0] for x in rungs])
    hi = np.array([100 * x["ci95"][1] for x in rungs])
    labels = [x["rung"].replace(" ", "\n") for x in rungs]
    yerr = np.clip(np.vstack([accs - lo, hi - accs]), 0, None)     # (2, N), never negative
    ax.bar(labels, accs, yerr=yerr, capsize=4, color=[colors[x["rung"]] for x in rungs])
    ax.set_ylim(max(0.0, float(lo.min()) - 5), 100)
    ax.set_ylabel("test accuracy (%), 95% interval")
    ax.set_title(title, fontsize=9)
    for i, a in enumerate(accs):
        ax.text(i, a, f"{a:.1f}", ha="center", va="bottom", fontsize=8)


def _plot(r: dict, flt: dict, emu_counts: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ladders = ladder_rows(r)
    fig, axes = plt.subplots(1, 2 + len(ladders), figsize=(5 * (2 + len(ladders)), 4))
    for ax, (title, rungs) in zip(axes, ladders):
        _ladder_bars(ax, rungs, title)
    ax_l, ax_h = axes[len(ladders)], axes[len(ladders) + 1]
    # a linear readout has no spiking layer in float but an (always silent) integrator layer in fixed point
    n = min(len(r["float"]["spikes_per_layer"]), len(r["fixed_point"]["spikes_per_layer"]))
    idx = np.arange(n)
    ax_l.bar(idx - 0.2, r["float"]["spikes_per_layer"][:n], 0.4, label="deployable float")
    ax_l.bar(idx + 0.2, r["fixed_point"]["spikes_per_layer"][:n], 0.4, label="fixed point")
    ax_l.set_xlabel("layer")
    ax_l.set_ylabel("spikes / sample")
    ax_l.set_xticks(idx)
    ax_l.legend()
    fc, qc = flt["output_counts"].ravel(), emu_counts.ravel()
    top = max(int(fc.max(initial=0)), int(qc.max(initial=0))) + 1
    hist, _, _ = np.histogram2d(fc, qc, bins=[np.arange(top + 1) - 0.5] * 2)
    ax_h.imshow(np.log1p(hist.T), origin="lower", cmap="viridis")
    ax_h.set_xlabel("deployable float output spike count")
    ax_h.set_ylabel("fixed-point output spike count")
    ax_h.set_title("per sample and class (log density)", fontsize=9)
    title = f"{Path(r['config']).stem} on {r['profile']}"
    if r.get("error"):
        title = "ERROR: emulator and Lava disagree - " + title
    fig.suptitle(title, color="red" if r.get("error") else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
