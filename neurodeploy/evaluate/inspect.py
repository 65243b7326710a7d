"""Where float and fixed point part ways: a layer-by-layer, step-by-step comparison of one deployment.

The deployable float model (as a :class:`~neurodeploy.graph.FloatGraph` run by
:class:`~neurodeploy.models.graph_module.GraphModule`, which reproduces the
model spike for spike) and its fixed-point network on the emulator get the
same encoded inputs. Chip layer ``l`` answers input step ``t`` at step
``t + l + 1`` (one step of delay per synaptic layer), so its spikes are
compared with the float layer's on the aligned window ``l + 1 .. l + T``.

Per layer: spike-count agreement (share of (sample, neuron) pairs with equal
counts) and correlation, the share of identical (sample, step, neuron)
spikes, the first aligned step where any spike differs, the fraction of
neurons whose rate changes by more than ``rate_threshold`` spikes per step,
and silent / saturated neurons on each side. ``first_divergence`` names the
first layer whose spikes differ, the first step and the neurons that differ
most there (``None`` when the networks agree).

``lava_samples``: the same fixed-point network on Lava for the first samples,
compared with the emulator on every layer and every simulated step
(``emulator_vs_lava``; they must be identical).

Membrane potentials: the float model's v after each step (after its reset)
in threshold units, against the fixed-point v traced by the emulator (after
Lava's reset) divided by ``vth << 6``, on the same aligned window: mean and
largest absolute error per layer and the neurons whose error is largest.
From the emulator's traces also the number of 24-bit wraps of u and clips
of v per layer, and from the network the weights Lava's clip and truncation
change (``weights_clipped``, ``weights_truncated``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .. import lava_rules as lr
from ..backends import run_network
from ..errors import NeurodeployError
from ..graph import LIF, CubaLIF
from ..models.graph_module import GraphModule
from ..models.walk import graph_from_model
from .deployment import Deployment
from .inputs import ChipInputs

__all__ = ["LayerComparison", "compare_layers", "inspect_deployment", "inspect_graph", "write_inspection"]


@dataclass
class LayerComparison:
    """Float vs fixed point spikes of one spiking layer on the aligned window."""

    layer: int
    node: int
    neurons: int
    count_agreement: float           # share of (sample, neuron) with equal spike counts
    count_correlation: Optional[float]
    spike_agreement: float           # share of identical (sample, step, neuron) spikes
    first_step: Optional[int]        # first aligned step with a differing spike (any sample)
    rate_changed: float              # share of neurons whose mean rate moves by > rate_threshold
    float_silent: float
    fixed_silent: float
    float_saturated: float
    fixed_saturated: float
    float_spikes_per_sample: float
    fixed_spikes_per_sample: float
    most_divergent: list[int]        # neurons with the largest total |count difference|
    membrane_error_mean: Optional[float] = None   # |v_float / theta - v_fixed / (vth << 6)|, aligned window
    membrane_error_max: Optional[float] = None
    membrane_most_divergent: Optional[list] = None
    u_wraps: Optional[int] = None                 # 24-bit wraps of u over all samples and simulated steps
    v_clips: Optional[int] = None                 # clips of v to +-(2**23 - 1)
    weights_clipped: Optional[int] = None         # weights Lava's clip_weights changes
    weights_truncated: Optional[int] = None       # weights its truncate_weights changes after the clip

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def compare_layers(float_spikes: list[np.ndarray], fixed_spikes: list[np.ndarray], nodes: list[int], *,
                   rate_threshold: float = 0.1, top: int = 5) -> list[LayerComparison]:
    """Compare per-layer spike trains ``(samples, T, neurons)`` (already aligned) of float and fixed point."""
    out = []
    for layer, (f, q, node) in enumerate(zip(float_spikes, fixed_spikes, nodes)):
        f = f.astype(np.int64)
        q = q.astype(np.int64)
        T = f.shape[1]
        fc, qc = f.sum(1), q.sum(1)                       # (samples, neurons)
        corr = None
        if fc.std() > 0 and qc.std() > 0:
            corr = float(np.corrcoef(fc.reshape(-1), qc.reshape(-1))[0, 1])
        differ = (f != q).any(axis=(0, 2))
        first = int(np.argmax(differ)) if differ.any() else None
        rate_f, rate_q = fc.mean(0) / T, qc.mean(0) / T  # per neuron
        diff = np.abs(fc - qc).sum(0)
        order = [int(i) for i in np.argsort(-diff, kind="stable")[:top] if diff[i] > 0]
        out.append(LayerComparison(
            layer=layer, node=int(node), neurons=int(f.shape[2]),
            count_agreement=float(np.mean(fc == qc)), count_correlation=corr,
            spike_agreement=float(np.mean(f == q)), first_step=first,
            rate_changed=float(np.mean(np.abs(rate_f - rate_q) > rate_threshold)),
            float_silent=float(np.mean(fc.sum(0) == 0)), fixed_silent=float(np.mean(qc.sum(0) == 0)),
            float_saturated=float(np.mean(fc.min(0) == T)), fixed_saturated=float(np.mean(qc.min(0) == T)),
            float_spikes_per_sample=float(fc.sum(1).mean()), fixed_spikes_per_sample=float(qc.sum(1).mean()),
            most_divergent=order))
    return out


class InspectError(NeurodeployError, ValueError):
    """A network given to ``inspect`` does not fit the run's float model."""


def _check_same_shape(ours, theirs, source: str) -> None:
    def sizes(net):
        return [int(np.prod(layer.out_shape)) if hasattr(layer, "out_shape") else int(layer.neurons.size)
                for layer in net.layers]

    if tuple(theirs.input_shape) != tuple(ours.input_shape):
        raise InspectError(f"{source}: input shape {tuple(theirs.input_shape)}, but the run's network takes "
                           f"{tuple(ours.input_shape)}; expected the same architecture")
    if sizes(theirs) != sizes(ours) or theirs.readout != ours.readout:
        raise InspectError(f"{source}: layers of {sizes(theirs)} neurons (readout {theirs.readout!r}), but the "
                           f"run's network has {sizes(ours)} (readout {ours.readout!r}); expected the same "
                           f"architecture")


def _first_divergence(layers: list[LayerComparison]) -> Optional[dict]:
    for c in layers:
        if c.first_step is not None:
            return {"layer": c.layer, "step": c.first_step, "neurons": c.most_divergent}
    return None


@torch.no_grad()
def inspect_deployment(dep: Deployment, inputs: ChipInputs, labels: Optional[np.ndarray] = None, *,
                       rate_threshold: float = 0.1, network=None, source: str = "the deployment",
                       lava_samples: int = 0) -> dict:
    """Float vs fixed point, layer by layer and step by step, on ``inputs`` (every number as JSON-able data).

    Returns ``{"samples", "time_steps", "layers": [...], "first_divergence", "predictions"}``;
    ``first_divergence`` is ``{"layer", "step", "neurons"}`` of the first fixed-point layer whose
    spikes differ from the float model's (aligned step), or None. Arrays for plots are under ``"traces"``
    (float and fixed spikes per layer; not JSON). ``network``: another fixed-point network of the same
    architecture (a modified or foreign file, named ``source`` in errors) instead of the deployment's.
    """
    T = dep.time_steps
    if network is None:
        network = dep.network
    else:
        _check_same_shape(dep.network, network, source)
    graph = graph_from_model(dep.model, T, input_shape=tuple(dep.input_shape))
    return inspect_graph(graph, network, inputs, labels, rate_threshold=rate_threshold, lava_samples=lava_samples)


@torch.no_grad()
def inspect_graph(graph, network, inputs: ChipInputs, labels: Optional[np.ndarray] = None, *,
                  rate_threshold: float = 0.1, lava_samples: int = 0) -> dict:
    """:func:`inspect_deployment` for a float :class:`~neurodeploy.graph.FloatGraph` and a fixed-point
    ``network`` of the same architecture (the graph's i-th spiking node is the network's i-th layer)."""
    T = int(graph.time_steps) if getattr(graph, "time_steps", None) else int(inputs.values.shape[1])
    spiking_nodes = [i for i, n in enumerate(graph.nodes) if isinstance(n, (LIF, CubaLIF))]
    emu = run_network(network, inputs.values, record_spikes=True, record_traces=True)
    seq = inputs.float_sequence(0, len(inputs))
    if inputs.repeated:
        seq = seq.expand(T, *seq.shape[1:])
    module = GraphModule(graph)
    out, rec = module(seq, record=True)
    float_pred = module.logits(out).argmax(1).numpy()
    # every chip layer spikes but a potential readout's
    n_spiking = len(network.layers) - (1 if network.readout == "potential" else 0)
    nodes = spiking_nodes[:n_spiking]
    float_spikes, fixed_spikes, float_v, fixed_v = [], [], [], []
    for layer, node in enumerate(nodes):
        f = rec[node]["spikes"].flatten(2).numpy().transpose(1, 0, 2)           # (samples, T, n)
        window = slice(layer + 1, layer + 1 + T)
        q = emu.layer_spikes[layer][:, window].reshape(len(inputs), T, -1)
        float_spikes.append(f)
        fixed_spikes.append(q)
        theta = np.asarray(graph.nodes[node].threshold, dtype=np.float64).reshape(-1)
        float_v.append(rec[node]["v"].flatten(2).numpy().transpose(1, 0, 2) / theta)
        vth = np.asarray(lr.effective_vth(network.layers[layer].neurons.vth), dtype=np.float64).reshape(-1)
        fixed_v.append(emu.layer_v[layer][:, window] / vth)
    layers = compare_layers(float_spikes, fixed_spikes, nodes, rate_threshold=rate_threshold)
    for c, fv, qv in zip(layers, float_v, fixed_v):
        err = np.abs(fv - qv)
        c.membrane_error_mean = float(err.mean())
        c.membrane_error_max = float(err.max())
        per = err.mean(axis=(0, 1))
        c.membrane_most_divergent = [int(i) for i in np.argsort(-per, kind="stable")[:5]]
    for c, ev, lay in zip(layers, emu.layer_events, network.layers):
        c.u_wraps, c.v_clips = int(ev["u_wrap"].sum()), int(ev["v_clip"].sum())
        c.weights_clipped, c.weights_truncated = _weight_changes(lay)
    fixed_pred = emu.predictions()
    result = {
        "samples": len(inputs), "time_steps": T,
        "layers": [c.to_dict() for c in layers],
        "first_divergence": _first_divergence(layers),
        "predictions": {"agreement": float(np.mean(float_pred == fixed_pred))},
        "traces": {"float": float_spikes, "fixed": fixed_spikes, "float_v": float_v, "fixed_v": fixed_v},
    }
    if lava_samples > 0:
        # the same network on Lava, every layer and every simulated step (no alignment needed): must be identical
        n = min(int(lava_samples), len(inputs))
        lava = run_network(network, inputs.values[:n], backend="lava", record_spikes=True)
        emu_l = [a[:n] for a in emu.layer_spikes]
        cmp = compare_layers(emu_l, list(lava.layer_spikes), list(range(len(emu_l))), rate_threshold=rate_threshold)
        result["emulator_vs_lava"] = {"samples": n, "layers": [c.to_dict() for c in cmp],
                                      "first_divergence": _first_divergence(cmp)}
    if labels is not None:
        result["predictions"].update(float_accuracy=float(np.mean(float_pred == labels)),
                                     fixed_accuracy=float(np.mean(fixed_pred == labels)))
    return result


def _weight_changes(layer) -> tuple[int, int]:
    """How many of a layer's weights Lava's clip_weights changes, and how many its truncation changes after."""
    weights = [layer.weight] + ([layer.weight_rec] if getattr(layer, "weight_rec", None) is not None else [])
    clipped = truncated = 0
    for w in weights:
        w = np.asarray(w, dtype=np.int64)
        lo, hi = lr.clip_range(layer.sign_mode)
        c = np.clip(w, lo, hi)
        clipped += int(np.sum(c != w))
        truncated += int(np.sum(lr.effective_weights(w, layer.sign_mode, layer.num_weight_bits) != c))
    return clipped, truncated


def write_inspection(result: dict, folder, title: str = "float vs fixed point") -> list:
    """``inspect.{json,md,png}`` in ``folder`` (atomically); returns the paths."""
    from pathlib import Path

    from ..fileio import atomic_path, write_text_atomic

    folder = Path(folder)
    data = {k: v for k, v in result.items() if k != "traces"}
    paths = [write_text_atomic(folder / "inspect.json", json.dumps(data, indent=2))]
    first = result["first_divergence"]
    lines = [f"# {title}", "",
             f"{result['samples']} samples, T = {result['time_steps']}; chip layer l compared on its aligned "
             f"steps l+1 .. l+T. Predictions agree on {100 * result['predictions']['agreement']:.1f}%.", "",
             ("**The networks agree spike for spike.**" if first is None else
              f"**First divergence: layer {first['layer']}, step {first['step']}, neurons {first['neurons']}** "
              f"(the neurons whose spike counts differ most there)."), "",
             "| layer | neurons | count agreement | count corr. | spike agreement | first step | rate changed | "
             "silent float / fixed | saturated float / fixed | spikes/sample float / fixed |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for c in result["layers"]:
        corr = "" if c["count_correlation"] is None else f"{c['count_correlation']:.3f}"
        step = "" if c["first_step"] is None else str(c["first_step"])
        lines.append(f"| {c['layer']} | {c['neurons']} | {100 * c['count_agreement']:.1f}% | {corr} | "
                     f"{100 * c['spike_agreement']:.2f}% | {step} | {100 * c['rate_changed']:.1f}% | "
                     f"{100 * c['float_silent']:.1f}% / {100 * c['fixed_silent']:.1f}% | "
                     f"{100 * c['float_saturated']:.1f}% / {100 * c['fixed_saturated']:.1f}% | "
                     f"{c['float_spikes_per_sample']:.1f} / {c['fixed_spikes_per_sample']:.1f} |")
    lines += ["", "## Membrane potentials and fixed-point events", "",
              "v in threshold units on the aligned window (float: after its reset; fixed point: v / (vth << 6) "
              "after Lava's reset); wraps and clips over every simulated step; weights Lava's clip and "
              "truncation change.", "",
              "| layer | mean abs error | max abs error | neurons with the largest error | u wraps | v clips | "
              "weights clipped | weights truncated |", "|---:|---:|---:|---|---:|---:|---:|---:|"]
    for c in result["layers"]:
        lines.append(f"| {c['layer']} | {c['membrane_error_mean']:.4f} | {c['membrane_error_max']:.3f} | "
                     f"{c['membrane_most_divergent']} | {c['u_wraps']} | {c['v_clips']} | {c['weights_clipped']} | "
                     f"{c['weights_truncated']} |")
    lava = result.get("emulator_vs_lava")
    if lava is not None:
        lf = lava["first_divergence"]
        lines += ["", f"## Emulator vs Lava ({lava['samples']} samples, every simulated step)", "",
                  "Identical spikes in every layer." if lf is None else
                  f"**Lava differs from the emulator: layer {lf['layer']}, step {lf['step']}, neurons "
                  f"{lf['neurons']}** (a bug of ours: please report it)."]
    paths.append(write_text_atomic(folder / "inspect.md", "\n".join(lines) + "\n"))
    with atomic_path(folder / "inspect.png") as tmp:
        _plot(result, tmp)
    paths.append(folder / "inspect.png")
    with atomic_path(folder / "inspect_membrane.png") as tmp:
        _plot_membranes(result, tmp)
    paths.append(folder / "inspect_membrane.png")
    return paths


def _plot_membranes(result: dict, path, per_layer: int = 3) -> None:
    """Float vs fixed-point v (threshold units) of each layer's most divergent neurons, in the sample where
    their error is largest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    fv, qv = result["traces"]["float_v"], result["traces"]["fixed_v"]
    fig, axes = plt.subplots(len(layers), per_layer, figsize=(3.4 * per_layer, 2.3 * len(layers)), squeeze=False)
    for row, (c, f, q) in enumerate(zip(layers, fv, qv)):
        for col in range(per_layer):
            ax = axes[row, col]
            if col >= len(c["membrane_most_divergent"]):
                ax.axis("off")
                continue
            j = c["membrane_most_divergent"][col]
            k = int(np.abs(f[:, :, j] - q[:, :, j]).sum(axis=1).argmax())
            steps = np.arange(f.shape[1])
            ax.plot(steps, f[k, :, j], "-o", ms=3, label="float")
            ax.plot(steps, q[k, :, j], "-s", ms=3, label="fixed point")
            ax.axhline(1.0, color="grey", lw=0.6, ls=":")
            ax.set_title(f"layer {c['layer']} neuron {j} (sample {k})", fontsize=8)
            ax.set_xlabel("aligned step", fontsize=7)
            if col == 0:
                ax.set_ylabel("v / threshold", fontsize=7)
                if row == 0:
                    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def _plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    fl, fx = result["traces"]["float"], result["traces"]["fixed"]
    n = len(layers)
    fig, axes = plt.subplots(n + 1, 2, figsize=(10, 2.2 * (n + 1)), squeeze=False)
    for row, (f, q, c) in enumerate(zip(fl, fx, layers)):
        for col, (arr, name) in enumerate(((f, "float"), (q, "fixed point"))):
            ax = axes[row, col]
            t, j = np.nonzero(arr[0])       # sample 0: raster of steps x neurons
            ax.scatter(t, j, s=4, marker="|", color="C0" if col == 0 else "C1")
            ax.set_title(f"layer {c['layer']} ({name}), sample 0", fontsize=9)
            ax.set_xlim(-0.5, arr.shape[1] - 0.5)
            ax.set_ylim(-0.5, arr.shape[2] - 0.5)
            ax.set_xlabel("aligned step", fontsize=8)
    ax = axes[n, 0]
    idx = np.arange(n)
    ax.bar(idx - 0.2, [c["count_agreement"] for c in layers], 0.4, label="count agreement")
    ax.bar(idx + 0.2, [c["spike_agreement"] for c in layers], 0.4, label="spike agreement")
    ax.set_xticks(idx)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer")
    ax.legend(fontsize=7)
    ax = axes[n, 1]
    ax.bar(idx, [c["rate_changed"] for c in layers], 0.5, color="C3")
    ax.set_xticks(idx)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer")
    ax.set_title("neurons whose rate changed", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
