"""The end-to-end job: train (or reuse), quantize, export, run float and fixed point, compare.

``neurodeploy pipeline --config models/X.yaml`` leaves in ``runs/X/``:

* the trained run (``checkpoint.pt``, ``metrics.jsonl``, ``config.yaml``);
* ``<profile>/network.net`` (lava-dl netx HDF5), ``<profile>/model.nir``,
  ``<profile>/model_step.onnx`` and the quantization report;
* ``<profile>/report.{json,md,png}``: float vs fixed-point accuracy,
  per-sample prediction agreement, output spike-count agreement, spikes and
  synaptic operations per sample, emulator vs Lava agreement on a subset.

The emulator runs the whole test split; Lava runs the first ``lava_samples``
samples (it is ~100x slower), and the emulator must agree with it exactly.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..backends import run_network
from ..config import load_config
from ..data import load_dataset
from ..data.encoders import PoissonEncoder, TemporalEncoder
from ..ir import ConvLayer, Network
from ..models import SNNClassifier
from ..neurons.modules import record_activity
from ..quant import load_profile, quantize_model
from ..quant.report import print_report, report_dict, write_report
from ..train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ..train.loop import epoch_generator, load_run, set_threads, train


def network_inputs(model: SNNClassifier, network: Network, x: np.ndarray,
                   generator: Optional[torch.Generator] = None) -> np.ndarray:
    """Integer per-step inputs ``(samples, T, *input_shape)`` for ``network`` from samples ``x``."""
    if isinstance(model.encoder, TemporalEncoder):
        return network.input_encoding.encode(x)
    if isinstance(model.encoder, PoissonEncoder):
        model.encoder.generator = generator
        with torch.no_grad():
            spikes = model.encoder(torch.as_tensor(x)).numpy()  # (T, B, ...)
        return np.moveaxis(spikes, 0, 1).astype(np.int64)
    enc = network.input_encoding.encode(x)
    # a read-only view repeating the sample over T (the emulator computes repeated steps once)
    return np.broadcast_to(enc[:, None], (enc.shape[0], network.time_steps, *enc.shape[1:]))


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


@torch.no_grad()
def float_outputs(model: SNNClassifier, x: np.ndarray, batch_size: int = 250) -> dict[str, np.ndarray]:
    """Float model predictions, output spike counts and per-layer spike counts per sample."""
    model.eval()
    counts, layers, preds = [], [], []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i:i + batch_size])
        with record_activity(model) as recs:
            out = model.output_sequence(xb)
        counts.append(out.sum(0).numpy())
        layers.append(torch.stack([r.spikes.flatten(2).sum((0, 2)) for r in recs], 1).numpy())
        preds.append(out.sum(0).argmax(1).numpy())
    return {"predictions": np.concatenate(preds), "output_counts": np.concatenate(counts).astype(np.int64),
            "layer_spikes": np.concatenate(layers)}


def _ensure_run(config: Path, run_dir: Path, epochs: Optional[int], seed: Optional[int], progress: bool,
                log: Callable[[str], None]) -> None:
    overrides = {}
    if epochs is not None:
        overrides["training.epochs"] = epochs
    if seed is not None:
        overrides["seed"] = seed
    cfg = load_config(config, overrides)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if ckpt_path.is_file():
        saved = load_checkpoint(ckpt_path)
        if saved["config"] != cfg.to_dict():
            log(f"{run_dir} holds a run of a different config; retraining")
            train(cfg, run_dir, force=True, progress=progress, log=log)
        elif saved["epoch"] < cfg.training.epochs:
            log(f"resuming {run_dir} from epoch {saved['epoch']}")
            train(cfg, run_dir, resume=True, progress=progress, log=log)
        else:
            log(f"reusing the trained run in {run_dir}")
        return
    train(cfg, run_dir, progress=progress, log=log)


def run_pipeline(config: Path, *, run_dir: Optional[Path] = None, profile: str = "loihi2",
                 lava_samples: int = 200, test_samples: Optional[int] = None, epochs: Optional[int] = None,
                 seed: Optional[int] = None, finetune: int = 2, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    """Run the whole job for one model config; return the report dict.

    ``finetune`` epochs of quantization-aware fine-tuning (frozen mean DLIF
    gain, straight-through rounded weights) precede quantization; 0 gives
    plain post-training quantization. The float side of the comparison is
    always the trained model itself.
    """
    from ..io import NetxInexactWarning, export_nir, export_onnx, write_netx

    t_start = time.perf_counter()
    run_dir = run_dir or Path("runs") / Path(config).stem
    _ensure_run(Path(config), run_dir, epochs, seed, progress, log)
    cfg, model, ckpt = load_run(run_dir)
    set_threads(cfg.threads)
    hw = load_profile(profile)
    input_shape = tuple(ckpt["input_shape"])
    time_steps = cfg.data.time_steps or input_shape[0]
    deploy_model = model
    if finetune > 0:
        from ..quant.finetune import finetune_quantized

        log(f"quantization-aware fine-tuning for {finetune} epoch(s)")
        deploy_model = finetune_quantized(run_dir, profile, finetune, progress=progress)
    quant = quantize_model(deploy_model, input_shape, hw, time_steps=time_steps, name=cfg.name)
    network = quant.network
    out = run_dir / hw.name
    out.mkdir(parents=True, exist_ok=True)
    write_report(quant, out)
    if progress:
        print_report(quant)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NetxInexactWarning)
        write_netx(network, out / "network.net", exact=False)
    netx_notes = [str(w.message) for w in caught if issubclass(w.category, NetxInexactWarning)]
    for note in netx_notes:
        log(f"note: {note}")
    export_nir(model, out / "model.nir", input_shape=input_shape, time_steps=time_steps)
    export_onnx(model, out / "model_step.onnx")
    log(f"exported {out}/network.net, model.nir, model_step.onnx")

    data = load_dataset(cfg.data.dataset, seed=cfg.seed, data_dir=cfg.data.data_dir)
    x, y = data.x_test[:test_samples], data.y_test[:test_samples]
    t0 = time.perf_counter()
    flt = float_outputs(model, x)
    float_seconds = time.perf_counter() - t0
    inputs = network_inputs(model, network, x, epoch_generator(cfg.seed, -1))
    t0 = time.perf_counter()
    emu = run_network(network, inputs, backend="emulator", progress=progress)
    emu_seconds = time.perf_counter() - t0
    n_lava = min(lava_samples, len(x))
    lava = None
    lava_seconds = 0.0
    if n_lava > 0:
        t0 = time.perf_counter()
        lava = run_network(network, inputs[:n_lava], backend="lava", progress=progress)
        lava_seconds = time.perf_counter() - t0

    emu_pred = emu.predictions()
    emu_counts = emu.aligned_output().sum(1, dtype=np.int64)
    nz = (inputs != 0).reshape(len(x), -1).sum(1)
    report = {
        "config": str(config), "run_dir": str(run_dir), "profile": hw.name, "dataset": cfg.data.dataset,
        "finetune_epochs": finetune,
        "test_samples": int(len(x)), "time_steps": int(time_steps), "latency": int(network.latency),
        "float": {
            "accuracy": float(np.mean(flt["predictions"] == y)),
            "spikes_per_sample": float(flt["layer_spikes"].sum(1).mean()),
            "spikes_per_layer": flt["layer_spikes"].mean(0).tolist(),
            "synops_per_sample": float(synaptic_ops(network, nz, flt["layer_spikes"]).mean()),
            "seconds": float_seconds,
        },
        "fixed_point": {
            "backend": "emulator",
            "accuracy": float(np.mean(emu_pred == y)),
            "spikes_per_sample": float(emu.spike_counts.sum(1).mean()),
            "spikes_per_layer": emu.spike_counts.mean(0).tolist(),
            "synops_per_sample": float(synaptic_ops(network, nz, emu.spike_counts).mean()),
            "seconds": emu_seconds,
            "samples_per_second": len(x) / emu_seconds if emu_seconds > 0 else None,
        },
        "agreement": {
            "prediction_float_vs_fixed": float(np.mean(flt["predictions"] == emu_pred)),
            "output_counts_identical": float(np.mean(np.all(flt["output_counts"] == emu_counts, axis=1))),
            "output_counts_mean_abs_diff": float(np.mean(np.abs(flt["output_counts"] - emu_counts))),
        },
        "quantization": report_dict(quant),
        "netx_export": {"exact": not netx_notes, "notes": netx_notes},
    }
    report["accuracy_drop"] = report["float"]["accuracy"] - report["fixed_point"]["accuracy"]
    if lava is not None:
        same_spikes = np.all(lava.output_spikes == emu.output_spikes[:n_lava], axis=(1, 2))
        report["lava"] = {
            "samples": n_lava,
            "accuracy": float(np.mean(lava.predictions() == y[:n_lava])),
            "float_accuracy_on_subset": float(np.mean(flt["predictions"][:n_lava] == y[:n_lava])),
            "emulator_agreement_predictions": float(np.mean(lava.predictions() == emu_pred[:n_lava])),
            "emulator_identical_output_spikes": float(np.mean(same_spikes)),
            "emulator_identical_spike_counts": float(np.mean(np.all(lava.spike_counts == emu.spike_counts[:n_lava],
                                                                     axis=1))),
            "seconds": lava_seconds,
            "samples_per_second": n_lava / lava_seconds if lava_seconds > 0 else None,
        }
        if report["lava"]["emulator_identical_output_spikes"] < 1.0:
            log("WARNING: the emulator and Lava disagree on some samples; this is a bug, please report it")
    report["seconds"] = time.perf_counter() - t_start
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(_markdown(report))
    _plot(report, flt, emu_counts, out / "report.png")
    log(f"report written to {out}/report.{{json,md,png}}")
    return report


def _markdown(r: dict) -> str:
    f, q, a = r["float"], r["fixed_point"], r["agreement"]
    lines = [
        f"# {Path(r['config']).stem}: float vs fixed point ({r['profile']})", "",
        f"{r['test_samples']} test samples of {r['dataset']}, T = {r['time_steps']} "
        f"(the fixed-point network answers {r['latency']} steps later: one step per synaptic layer). "
        + (f"Quantized after {r['finetune_epochs']} epoch(s) of quantization-aware fine-tuning."
           if r["finetune_epochs"] else "Post-training quantization (no fine-tuning)."), "",
        "| | float (torch) | fixed point (emulator) |", "|---|---:|---:|",
        f"| accuracy | {100 * f['accuracy']:.2f}% | {100 * q['accuracy']:.2f}% |",
        f"| spikes / sample | {f['spikes_per_sample']:.1f} | {q['spikes_per_sample']:.1f} |",
        f"| synaptic ops / sample | {f['synops_per_sample']:.0f} | {q['synops_per_sample']:.0f} |",
        f"| seconds | {f['seconds']:.2f} | {q['seconds']:.2f} |", "",
        f"- accuracy drop float -> fixed point: {100 * r['accuracy_drop']:.2f} points",
        f"- same prediction float vs fixed point: {100 * a['prediction_float_vs_fixed']:.2f}% of samples",
        f"- identical output spike counts: {100 * a['output_counts_identical']:.2f}% of samples "
        f"(mean |difference| {a['output_counts_mean_abs_diff']:.3f} spikes per class)",
    ]
    if "lava" in r:
        lv = r["lava"]
        lines += [
            f"- Lava (`Loihi2SimCfg(select_tag='fixed_pt')`) on the first {lv['samples']} samples: accuracy "
            f"{100 * lv['accuracy']:.2f}% (float on the same samples {100 * lv['float_accuracy_on_subset']:.2f}%); "
            f"emulator identical output spike trains on {100 * lv['emulator_identical_output_spikes']:.2f}% "
            f"and identical predictions on {100 * lv['emulator_agreement_predictions']:.2f}% of them; "
            f"{lv['samples_per_second']:.1f} samples/s vs the emulator's {q['samples_per_second']:.0f}.",
        ]
    lines += ["", "## Quantization", ""]
    from ..quant.report import COLUMNS

    lines.append("| " + " | ".join(c for c, _ in COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for layer in r["quantization"]["layers"]:
        ns = type("L", (), layer)
        lines.append("| " + " | ".join(fn(ns) for _, fn in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _plot(r: dict, flt: dict, emu_counts: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    labels = ["float", "fixed (emulator)"] + ([f"Lava (first {r['lava']['samples']})"] if "lava" in r else [])
    accs = [r["float"]["accuracy"], r["fixed_point"]["accuracy"]] + ([r["lava"]["accuracy"]] if "lava" in r else [])
    axes[0].bar(labels, [100 * a for a in accs], color=["#4c72b0", "#dd8452", "#55a868"][:len(accs)])
    lo = max(0.0, 100 * min(accs) - 10)
    axes[0].set_ylim(lo, 100)
    axes[0].set_ylabel("test accuracy (%)")
    for i, a in enumerate(accs):
        axes[0].text(i, 100 * a, f"{100 * a:.1f}", ha="center", va="bottom")
    n = len(r["float"]["spikes_per_layer"])
    idx = np.arange(n)
    axes[1].bar(idx - 0.2, r["float"]["spikes_per_layer"], 0.4, label="float")
    axes[1].bar(idx + 0.2, r["fixed_point"]["spikes_per_layer"], 0.4, label="fixed point")
    axes[1].set_xlabel("layer")
    axes[1].set_ylabel("spikes / sample")
    axes[1].set_xticks(idx)
    axes[1].legend()
    fc, qc = flt["output_counts"].ravel(), emu_counts.ravel()
    top = max(int(fc.max(initial=0)), int(qc.max(initial=0))) + 1
    hist, _, _ = np.histogram2d(fc, qc, bins=[np.arange(top + 1) - 0.5] * 2)
    axes[2].imshow(np.log1p(hist.T), origin="lower", cmap="viridis")
    axes[2].set_xlabel("float output spike count")
    axes[2].set_ylabel("fixed-point output spike count")
    axes[2].set_title("per sample and class (log density)")
    fig.suptitle(f"{Path(r['config']).stem} on {r['profile']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
