"""Export a float :class:`~neurodeploy.models.builders.SNNClassifier` as a NIR graph.

The graph describes one *encoded* time step per evaluation (the encoder stays
outside, as in the ONNX export): its ``Input`` has the per-step shape
(``(C, H, W)``, ``(F,)``) without a batch axis, as NIR types are per sample.

Mapping
-------
* ``torch.nn.Linear`` -> ``nir.Affine`` (a zero bias when the layer has none);
* ``TimeFolded(Conv2d)`` -> ``nir.Conv2d`` (zero padding only); a BatchNorm
  after it is folded into its weight and bias first (eval statistics,
  :func:`~neurodeploy.models.folding.fold_batchnorm`);
* ``torch.nn.Flatten`` -> ``nir.Flatten(start_dim=0)`` over the per-sample
  type (omitted when the input already is a vector);
* LIF / DLIF neurons -> ``nir.LIF`` (``nir.IF`` when ``leak == 1``);
* CUBA neurons -> ``nir.CubaLIF``;
* a recurrent layer -> a ``nir.NIRGraph`` subgraph
  ``input -> w_in (Affine) -> neurons -> output`` plus the recurrent edge
  ``neurons -> w_rec (Affine) -> neurons``: the recurrent input of step t is
  the spikes of step t-1 (how nirtorch's executor and Norse evaluate a cycle).

Neuron parameters (``dt = 1``, forward Euler, as Norse's ``from_nir(..., dt=1)``)
-------------------------------------------------------------------------------
Our DLIF/LIF step is ``v = leak*v + I; s = v > theta; v = 0 where s``. NIR's
LIF is ``tau dv/dt = (v_leak - v) + r I``; one Euler step of length 1 gives
``v' = (1 - 1/tau) v + (r/tau) I + v_leak/tau``. Hence

    tau = 1 / (1 - leak),   r = tau,   v_leak = 0,   v_threshold = theta,   v_reset = 0.

Norse 1.1.0's importer ignores ``r`` for ``LIF`` (it integrates
``v += dt/tau (v_leak - v + I)``), so by default (``fold_r=True``) ``r`` is
folded into the incoming synapse instead: the ``Affine``/``Conv2d`` weights
and bias are multiplied by ``tau`` and ``r = 1``. ``r * (W x)`` and
``(tau W) x`` with ``r = 1`` are the same ODE, so the graph means the same to
every NIR consumer, and Norse reproduces our model. ``fold_r=False`` keeps the
raw weights and ``r = tau`` (then Norse's import is off by the factor
``1 - leak`` on the input; other tools that honour ``r`` are not). ``leak ==
1`` (no leak, ``tau`` infinite) is written as ``nir.IF`` with ``r = 1``:
``dv/dt = I``, ``v' = v + I``.

Our CUBA step is ``i = cleak*i + I; v = leak*v + i`` (the voltage uses the
*new* current, Loihi's order, which is also the order of Norse's CubaLIF
import: synapse first, then membrane). With NIR's
``tau_syn dI/dt = -I + w_in S`` and ``tau_mem dv/dt = (v_leak - v) + r I``:

    tau_syn = 1/(1 - cleak), w_in = tau_syn, tau_mem = 1/(1 - leak), r = tau_mem, v_leak = 0.

Norse honours ``w_in`` and ``r`` for CubaLIF, so nothing is folded there.
``leak == 1`` or ``current_leak == 1`` has no finite time constant and raises.
A strict explicit Euler scheme for CubaLIF would update ``v`` with the old
current (one step of lag); the metadata records the order we mean.

DLIF gain
---------
The per-step gain ``p[t]`` multiplies the input current and varies with the
time step; NIR nodes are time invariant. Its mean over the first
``time_steps`` steps is folded into the incoming weights (and bias; for a
recurrent layer into both ``w_in`` and ``w_rec``). The per-step values, the
folded mean and the relative spread are recorded in the neuron node's
metadata (``gain_per_step``, ``gain_folded``, ``gain_spread``). The exported
graph is exact when the gain is constant (e.g. plain LIF).

Input normalisation (``model.normalize``) is folded into the first synapse
(exact for a dense first layer and for a conv without padding; a padded conv
raises).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..errors import NeurodeployError
from ..fileio import atomic_path
from ..models.builders import SNNClassifier, TimeFolded
from ..models.folding import fold_batchnorm, has_batchnorm
from ..neurons.modules import RecurrentSpikingNeurons, SpikingNeurons

__all__ = ["NIRExportError", "export_nir", "build_nir_graph"]


class NIRExportError(NeurodeployError, ValueError):
    """The model cannot be written as an exact NIR graph; the message says which layer and why."""


def _np(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().cpu().double().numpy()


def _neuron_params(layer) -> dict:
    p = layer.p
    out = {"leak": float(1.0 - float(p.tau_mem_inv)), "threshold": float(p.v_th), "v_reset": float(p.v_reset)}
    if hasattr(p, "tau_syn_inv"):
        out["current_leak"] = float(1.0 - float(p.tau_syn_inv))
    return out


def _gain(layer, time_steps: int) -> tuple[float, Optional[np.ndarray]]:
    if layer.gain is None:
        return 1.0, None
    g = layer.gain.detach().cpu().double().numpy()
    if time_steps > g.shape[0]:
        raise NIRExportError(f"time_steps={time_steps} but the DLIF gain p[t] has {g.shape[0]} steps")
    g = g[:time_steps]
    return float(g.mean()), g


def _full(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _neuron_node(nir, name: str, layer, shape: tuple[int, ...], fold_r: bool, time_steps: int):
    """(NIR node, factor for the incoming synapse weights and bias) of one spiking population."""
    prm = _neuron_params(layer)
    gmean, gain = _gain(layer, time_steps)
    leak, theta = prm["leak"], prm["threshold"]
    meta = {"neurodeploy_neuron": str(layer.neuron_type), "leak": leak, "threshold": theta, "dt": 1.0,
            "discretisation": "forward Euler, dt=1: v = leak*v + I; spike v > threshold; v reset to 0"}
    factor = gmean
    if gain is not None:
        meta.update(gain_per_step=gain.astype(np.float32), gain_folded=gmean,
                    gain_spread=float(np.abs(gain - gmean).max() / abs(gmean)) if gmean != 0 else float("inf"),
                    gain_note="the DLIF per-step gain p[t] is time varying; its mean is folded into the "
                              "incoming weights (exact only for a constant gain)")
    if not 0.0 <= leak <= 1.0:
        raise NIRExportError(f"{name}: leak {leak} outside [0, 1]")
    zeros = _full(shape, 0.0)
    if "current_leak" in prm:
        cleak = prm["current_leak"]
        if leak >= 1.0 or cleak >= 1.0:
            raise NIRExportError(f"{name}: a CUBA neuron with leak {leak} / current_leak {cleak} equal to 1 has an "
                                 f"infinite NIR time constant")
        tau_mem, tau_syn = 1.0 / (1.0 - leak), 1.0 / (1.0 - cleak)
        meta.update(current_leak=cleak, discretisation="dt=1: i = current_leak*i + I; v = leak*v + i (new i, "
                                                        "Loihi's and Norse's order); spike v > threshold; v reset to 0")
        node = nir.CubaLIF(tau_syn=_full(shape, tau_syn), tau_mem=_full(shape, tau_mem), r=_full(shape, tau_mem),
                           v_leak=zeros, v_threshold=_full(shape, theta), v_reset=_full(shape, prm["v_reset"]),
                           w_in=_full(shape, tau_syn), metadata=meta)
        return node, factor
    if leak >= 1.0:
        node = nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, theta), v_reset=_full(shape, prm["v_reset"]),
                      metadata=meta)
        return node, factor
    tau = 1.0 / (1.0 - leak)
    if fold_r:
        factor *= tau
        meta["r_folded"] = tau
        meta["r_note"] = "r = tau is folded into the incoming synapse (weights and bias times tau), r = 1"
    node = nir.LIF(tau=_full(shape, tau), r=_full(shape, 1.0 if fold_r else tau), v_leak=zeros,
                   v_threshold=_full(shape, theta), v_reset=_full(shape, prm["v_reset"]), metadata=meta)
    return node, factor


def _synapse_node(nir, syn: dict, factor: float, meta_extra: Optional[dict] = None):
    meta = {"scale_folded": float(factor)} if factor != 1.0 else {}
    if meta_extra:
        meta.update(meta_extra)
    w = (syn["weight"] * factor).astype(np.float32)
    b = (syn["bias"] * factor).astype(np.float32)
    if syn["kind"] == "dense":
        return nir.Affine(weight=w, bias=b, metadata=meta)
    return nir.Conv2d(input_shape=tuple(syn["in_shape"][1:]), weight=w, stride=syn["stride"], padding=syn["padding"],
                      dilation=syn["dilation"], groups=syn["groups"], bias=b, metadata=meta)


def _fold_normalize(syn: dict, mean: np.ndarray, std: np.ndarray, in_shape: tuple[int, ...]) -> None:
    """``W ((x - m)/s) + b`` as ``W' x + b'``.

    ``in_shape`` is the per-step input shape; the channel is its axis 0 (for a
    dense first layer after a flatten, the flattened (C, H, W) order).
    """
    c = in_shape[0]
    if mean.size not in (1, c) or std.size not in (1, c):
        raise NIRExportError(f"normalize has {mean.size} means / {std.size} stds for {c} input channels")
    mean = np.broadcast_to(mean, (c,)).astype(np.float64)
    std = np.broadcast_to(std, (c,)).astype(np.float64)
    if syn["kind"] == "dense":
        per = int(np.prod(in_shape[1:])) if len(in_shape) > 1 else 1
        s = np.repeat(std, per)
        m = np.repeat(mean, per)
        syn["bias"] = syn["bias"] - syn["weight"] @ (m / s)
        syn["weight"] = syn["weight"] / s[None, :]
    else:
        if any(p != 0 for p in syn["padding"]):
            raise NIRExportError("normalize before a zero-padded first conv cannot be folded exactly (the padding "
                                 "is zero after normalisation); fold it into the model or train without it")
        if syn["groups"] != 1:
            raise NIRExportError("normalize before a grouped first conv is not supported")
        syn["bias"] = syn["bias"] - np.einsum("ocij,c->o", syn["weight"], mean / std)
        syn["weight"] = syn["weight"] / std[None, :, None, None]


def build_nir_graph(model: SNNClassifier, *, input_shape: tuple[int, ...], time_steps: int, fold_r: bool = True):
    """The NIR graph of ``model`` (see the module docstring); ``input_shape`` is one sample's shape."""
    import nir

    from ..data.encoders import TemporalEncoder

    if has_batchnorm(model):
        model = fold_batchnorm(model)  # no BatchNorm node: export the deployed, folded conv
    shape = tuple(int(s) for s in input_shape)
    if isinstance(model.encoder, TemporalEncoder) and len(shape) == 2:
        shape = shape[1:]  # (T, F) sample -> (F,) per step
    if time_steps < 1:
        raise NIRExportError(f"time_steps must be >= 1, got {time_steps}")
    nodes: dict = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges: list[tuple[str, str]] = []
    last = "input"
    counts: dict[str, int] = {}
    pending: Optional[dict] = None
    first_synapse = True

    def name_of(base: str) -> str:
        k = counts.get(base, 0)
        counts[base] = k + 1
        return f"{base}{k}"

    def add(name: str, node) -> None:
        nonlocal last
        nodes[name] = node
        edges.append((last, name))
        last = name

    norm = None
    if model.normalize is not None:
        norm = (model.normalize.mean.detach().cpu().double().numpy(), model.normalize.std.detach().cpu().double().numpy())

    step_shape = shape

    def take_synapse(syn: dict) -> dict:
        nonlocal first_synapse
        if first_synapse and norm is not None:
            _fold_normalize(syn, norm[0], norm[1], step_shape)
        first_synapse = False
        return syn

    for module in model.body:
        if isinstance(module, torch.nn.Flatten):
            if pending is not None:
                raise NIRExportError("Flatten between a synapse and its neurons is not supported")
            if len(shape) > 1:
                node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
                add(name_of("flatten"), node)
                shape = (int(np.prod(shape)),)
        elif isinstance(module, torch.nn.Linear):
            if pending is not None:
                raise NIRExportError("two synapse layers in a row cannot be exported")
            if len(shape) != 1 or shape[0] != module.in_features:
                raise NIRExportError(f"Linear({module.in_features}, {module.out_features}) after shape {shape}")
            w = _np(module.weight)
            pending = take_synapse({"kind": "dense", "weight": w, "in_shape": shape,
                                    "bias": _np(module.bias) if module.bias is not None else np.zeros(w.shape[0])})
            shape = (module.out_features,)
        elif isinstance(module, TimeFolded):
            conv = module.module
            if pending is not None:
                raise NIRExportError("two synapse layers in a row cannot be exported")
            if not isinstance(conv, torch.nn.Conv2d):
                raise NIRExportError(f"unsupported time-folded module {type(conv).__name__}")
            if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                raise NIRExportError(f"conv padding {conv.padding!r} / mode {conv.padding_mode!r}: only explicit zero "
                                     f"padding is supported")
            if len(shape) != 3:
                raise NIRExportError(f"Conv2d after shape {shape}, expected (C, H, W)")
            w = _np(conv.weight)
            syn = take_synapse({"kind": "conv", "weight": w, "in_shape": shape, "stride": tuple(conv.stride),
                                "padding": tuple(conv.padding), "dilation": tuple(conv.dilation),
                                "groups": int(conv.groups),
                                "bias": _np(conv.bias) if conv.bias is not None else np.zeros(w.shape[0])})
            pending = syn
            oh = (shape[1] + 2 * conv.padding[0] - conv.dilation[0] * (w.shape[2] - 1) - 1) // conv.stride[0] + 1
            ow = (shape[2] + 2 * conv.padding[1] - conv.dilation[1] * (w.shape[3] - 1) - 1) // conv.stride[1] + 1
            shape = (int(w.shape[0]), int(oh), int(ow))
        elif isinstance(module, SpikingNeurons):
            if pending is None:
                raise NIRExportError("spiking neurons without a synapse layer in front cannot be exported")
            base = "cuba" if module.neuron_type.startswith("cuba") else "lif"
            nname = name_of(base)
            node, factor = _neuron_node(nir, nname, module, shape, fold_r, time_steps)
            add(name_of("fc" if pending["kind"] == "dense" else "conv"), _synapse_node(nir, pending, factor))
            add(nname, node)
            pending = None
        elif isinstance(module, RecurrentSpikingNeurons):
            if pending is not None:
                raise NIRExportError("a synapse layer directly before a recurrent layer cannot be exported")
            if len(shape) != 1:
                raise NIRExportError(f"recurrent layer after shape {shape}, expected a vector")
            hidden = module.recurrent_weights.out_features
            w_in = _np(module.input_weights.weight)
            syn_in = take_synapse({"kind": "dense", "weight": w_in, "in_shape": shape,
                                   "bias": _np(module.input_weights.bias) if module.input_weights.bias is not None
                                   else np.zeros(hidden)})
            syn_rec = {"kind": "dense", "weight": _np(module.recurrent_weights.weight), "bias": np.zeros(hidden)}
            node, factor = _neuron_node(nir, "neurons", module, (hidden,), fold_r, time_steps)
            sub_nodes = {
                "input": nir.Input(input_type={"input": np.array(shape)}),
                "w_in": _synapse_node(nir, syn_in, factor),
                "neurons": node,
                "w_rec": _synapse_node(nir, syn_rec, factor, {"recurrent": "spikes of step t-1 enter step t"}),
                "output": nir.Output(output_type={"output": np.array((hidden,))}),
            }
            sub_edges = [("input", "w_in"), ("w_in", "neurons"), ("neurons", "w_rec"), ("w_rec", "neurons"),
                         ("neurons", "output")]
            sub = nir.NIRGraph(nodes=sub_nodes, edges=sub_edges, type_check=True,
                               metadata={"neurodeploy_layer": "RecurrentSpikingNeurons",
                                         "recurrence": "I[t] = W_in x[t] + W_rec s[t-1]"})
            add(name_of("rnn"), sub)
            shape = (hidden,)
        else:
            raise NIRExportError(f"layer {type(module).__name__} has no NIR mapping "
                                 f"(supported: Linear, Conv2d, Flatten, spiking neurons)")
    if pending is not None:  # linear readout: a synapse without neurons
        add(name_of("fc" if pending["kind"] == "dense" else "conv"),
            _synapse_node(nir, pending, 1.0, {"readout": "non-spiking linear readout, averaged over time"}))
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((last, "output"))
    meta = {"producer": "neurodeploy", "time_steps": int(time_steps), "dt": 1.0,
            "input": "one encoded time step (after the encoder), per sample, no batch axis",
            "readout": str(model.readout), "fold_r": bool(fold_r),
            "norse_import": "norse.torch.from_nir(graph, dt=1.0); run one step per call, feeding the state back"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)


def export_nir(model: SNNClassifier, path: Union[str, os.PathLike], *, input_shape: tuple[int, ...],
               time_steps: int, fold_r: bool = True) -> Path:
    """Write ``model`` as a NIR graph (``nir.write``) at ``path``; return the path.

    ``input_shape`` is one sample's shape as the model takes it (``(C, H, W)``,
    ``(F,)``; for sequence data ``(T, F)`` or ``(F,)``); ``time_steps`` the
    number of steps over which the DLIF gain is averaged. The file reads back
    with ``nir.read(path)`` (type checking on) and imports with Norse 1.1.0's
    ``norse.torch.from_nir(graph, dt=1.0)``. Written to a temporary file and
    renamed, so a failure never leaves a partial file.
    """
    import nir

    graph = build_nir_graph(model, input_shape=input_shape, time_steps=time_steps, fold_r=fold_r)
    path = Path(path)
    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)
    return path

