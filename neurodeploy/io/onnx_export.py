"""Export one time step of a float :class:`~neurodeploy.models.builders.SNNClassifier` as ONNX.

The graph computes a single step of the spiking network with the neuron state
as explicit inputs and outputs, so any ONNX runtime can run the model step by
step in its own loop (``run_onnx`` does exactly that with onnxruntime):

Inputs
    ``x``      ``(B, *step_shape)`` float32: the encoded input of one step,
               i.e. the encoder's output at step t (``encode_input(model, x)[t]``:
               the model's input quantisation, if any, then its encoder);
               normalisation (``model.normalize``) is inside the graph (folded
               into the first synapse).
    ``t``      ``()`` int64: the step index, 0-based. The DLIF gains ``p[t]``
               are stored in the graph as constant tables and looked up with
               ``Gather``: the caller never handles them, and a step index past
               the trained ``T`` fails loudly (out-of-range Gather) instead of
               silently reusing a gain. Models without DLIF gains ignore ``t``
               (it stays an input, so the interface does not depend on the
               neuron type).
    state      one tensor per state variable, float32, batch first, zeros at
               t = 0, in layer order: ``v<k>`` (membrane potential) for every
               spiking layer ``k``, ``i<k>`` (synaptic current) for CUBA layers,
               ``z<k>`` (the layer's spikes of the previous step) for recurrent
               layers.
Outputs
    ``out``    ``(B, n_out)``: the last layer's output of this step (spikes for
               a spiking readout, the linear output for a linear readout); the
               logits are the mean over steps (times ``readout_scale`` for
               spikes), as in ``SNNClassifier.forward``.
    ``<name>_next`` for every state input: the state to feed into the next step.

The interface (names, per-sample shapes, time steps) is stored as JSON in the
model's ``metadata_props`` under ``neurodeploy.step_interface``; read it with
:func:`step_interface`.

The step graph is built from the walker's :class:`~neurodeploy.graph.FloatGraph`
(:func:`~neurodeploy.models.walk.graph_from_model` with ``fold=False``): BatchNorm
folded into the conv (eval statistics), input normalisation folded into the
first synapse (``x`` is the encoded input *before* normalisation, as it was
when the graph normalised it itself; the outputs agree to float32 rounding),
DLIF gains kept as per-step tables. The neuron step is the graph's
(:mod:`neurodeploy.graph`: ``v = leak*v + I``; ``i = current_leak*i + I``
first for CUBA) with the spike as its forward pass, the Heaviside
``v - threshold > 0`` (the surrogate gradient only matters for training);
weights are the model's float32 values, so the graph computes what the
model computes. The legacy TorchScript exporter (``dynamo=False``) is used:
it needs no extra packages and handles the graph.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NeurodeployError
from ..fileio import atomic_path
from ..graph import (LI, NEURON_NODES, Affine, AvgPool2d, Conv2d, CubaLIF, Flatten, FloatGraph, GraphError,
                     InputGain, Recurrent, SumPool2d)
from ..models.builders import SNNClassifier
from ..models.walk import graph_from_model

__all__ = ["ONNXExportError", "export_onnx", "run_onnx", "step_interface", "encode_input", "StepModule",
           "model_step_graph", "INTERFACE_KEY"]

INTERFACE_KEY = "neurodeploy.step_interface"
OPSET = 17


class ONNXExportError(NeurodeployError, ValueError):
    """The model cannot be exported as an ONNX step graph; the message says why."""


def encode_input(model: SNNClassifier, x: torch.Tensor) -> torch.Tensor:
    """The time-major encoded input ``(T, B, *step_shape)`` the exported step graph takes, for samples ``x``.

    Exactly what the model feeds its body: its input quantisation (if it has
    one; active in eval mode) and its encoder. Normalisation is not applied: it
    is part of the step graph.
    """
    quantize = getattr(model, "quantize_input", None)
    if quantize is not None:
        x = quantize(x)
    return model.encoder(x)


class StepModule(torch.nn.Module):
    """One time step of a :class:`~neurodeploy.graph.FloatGraph` with explicit state: ``forward(x, t, *state)``.

    Built from the walker's graph of a model (:func:`~neurodeploy.models.walk.graph_from_model`
    with ``fold=False``: BatchNorm and normalisation folded, DLIF gains kept
    per step) or from a graph directly. ``state_spec`` lists ``(name,
    per-sample shape)`` of the state tensors in input order; ``forward``
    returns ``(out, *next_state)``. State names carry the body index of the
    layer (``graph.metadata["body_index"]``; the node index without it).
    """

    def __init__(self, model_or_graph: Union[SNNClassifier, FloatGraph],
                 step_shape: Optional[tuple[int, ...]] = None) -> None:
        super().__init__()
        graph = (model_or_graph if isinstance(model_or_graph, FloatGraph)
                 else model_step_graph(model_or_graph, step_shape))
        shapes = graph.shapes()
        where = graph.metadata.get("body_index") or tuple(range(len(graph.nodes)))
        self.step_shape = tuple(int(s) for s in graph.input_shape)
        self.state_spec: list[tuple[str, tuple[int, ...]]] = []
        self._plan: list[tuple] = []   # (kind, node index, state slots, extra)
        self.graph = graph
        nodes = graph.nodes
        i = 1
        while i < len(nodes):
            node = nodes[i]
            if isinstance(node, InputGain):
                self._const(i, "gain", node.gain)
                i += 1
                continue
            if isinstance(node, NEURON_NODES):
                shape = tuple(int(s) for s in shapes[i])
                k = where[i] if where[i] is not None else i
                rec = i + 1 < len(nodes) and isinstance(nodes[i + 1], Recurrent)
                gain = i - 1 if isinstance(nodes[i - 1], InputGain) else None
                z_slot = self._slot(f"z{k}", shape) if rec else None
                if rec:
                    self._const(i + 1, "weight", nodes[i + 1].weight)
                slots = [self._slot(f"v{k}", shape)]
                if isinstance(node, CubaLIF):
                    slots.append(self._slot(f"i{k}", shape))
                    self._const(i, "current_leak", node.current_leak, shape)
                self._const(i, "leak", node.leak, shape)
                if not isinstance(node, LI):
                    self._const(i, "threshold", node.threshold, shape)
                if node.bias is not None:
                    self._const(i, "bias", node.bias, shape)
                self._plan.append(("neurons", i, slots, (gain, i + 1 if rec else None, z_slot)))
                i += 2 if rec else 1
                continue
            for name in ("weight", "bias"):
                if getattr(node, name, None) is not None:
                    self._const(i, name, getattr(node, name))
            self._plan.append(("stateless", i, [], None))
            i += 1
        self.out_shape = tuple(int(s) for s in shapes[-1])

    def _const(self, i: int, name: str, value, shape: Optional[tuple[int, ...]] = None) -> None:
        arr = np.array(value, dtype=np.float64)     # a writable copy
        if shape is not None:
            arr = arr.reshape(()) if arr.size == 1 else arr.reshape(shape)
        self.register_buffer(f"n{i}_{name}", torch.as_tensor(arr, dtype=torch.float32))

    def _c(self, i: int, name: str) -> Optional[torch.Tensor]:
        return getattr(self, f"n{i}_{name}", None)

    def _slot(self, name: str, shape: tuple[int, ...]) -> int:
        self.state_spec.append((name, tuple(int(s) for s in shape)))
        return len(self.state_spec) - 1

    def _stateless(self, i: int, h: torch.Tensor) -> torch.Tensor:
        node = self.graph.nodes[i]
        if isinstance(node, Flatten):
            return torch.flatten(h, 1, -1)
        if isinstance(node, Affine):
            return F.linear(h, self._c(i, "weight"), self._c(i, "bias"))
        if isinstance(node, Conv2d):
            return F.conv2d(h, self._c(i, "weight"), self._c(i, "bias"), stride=tuple(node.stride),
                            padding=tuple(node.padding), dilation=tuple(node.dilation), groups=int(node.groups))
        if isinstance(node, (SumPool2d, AvgPool2d)):
            c = h.shape[1]
            kh, kw = (int(k) for k in node.kernel)
            y = F.conv2d(h, h.new_ones((c, 1, kh, kw)), stride=tuple(node.stride), padding=tuple(node.padding),
                         groups=c)
            return y / float(kh * kw) if isinstance(node, AvgPool2d) else y
        raise ONNXExportError(f"node {i} ({type(node).__name__}) has no step export")

    def _gain(self, gain: Optional[int], current: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if gain is None:
            return current
        table = self._c(gain, "gain")
        g = torch.index_select(table, 0, t.reshape(1).to(torch.int64))
        if table.dim() == 1 or table.shape[1] == 1:
            return current * g.reshape([1] * current.dim())
        return current * g.reshape(1, *current.shape[1:])

    def forward(self, x: torch.Tensor, t: torch.Tensor, *state: torch.Tensor):
        h = x
        new_state: list[Optional[torch.Tensor]] = [None] * len(state)
        for kind, i, slots, extra in self._plan:
            if kind == "stateless":
                h = self._stateless(i, h)
                continue
            node = self.graph.nodes[i]
            gain, rec, z_slot = extra
            current = h
            if rec is not None:
                z_prev = state[z_slot]
                current = current + F.linear(z_prev.flatten(1), self._c(rec, "weight")).reshape(z_prev.shape)
            current = self._gain(gain, current, t)
            v = state[slots[0]]
            if isinstance(node, CubaLIF):
                cur = self._c(i, "current_leak") * state[slots[1]] + current
                new_state[slots[1]] = cur
                v = self._c(i, "leak") * v + cur
            else:
                v = self._c(i, "leak") * v + current
            bias = self._c(i, "bias")
            if bias is not None:
                v = v + bias
            if isinstance(node, LI):
                out = v
            else:
                theta = self._c(i, "threshold")
                out = (v - theta > 0).to(v.dtype)        # the Heaviside forward of the surrogate spike
                v = v - out * theta if node.reset == "subtract" else (1.0 - out) * v + out * 0.0
            new_state[slots[0]] = v
            if rec is not None:
                new_state[z_slot] = out
            h = out
        return (h, *new_state)


def model_step_graph(model: SNNClassifier, input_shape: Optional[tuple[int, ...]] = None) -> FloatGraph:
    """The graph the step export runs: the walker's graph with the DLIF gains per step (``fold=False``) over
    the encoder's steps (sequences: each gain's own length). A :class:`ONNXExportError` says what has no
    graph."""
    try:
        return graph_from_model(model, getattr(model.encoder, "time_steps", None), fold=False,
                                input_shape=input_shape)
    except GraphError as exc:
        raise ONNXExportError(str(exc)) from None


def _time_steps(model: SNNClassifier, graph: FloatGraph) -> Optional[int]:
    """Steps per sample: the encoder's, or (sequences) the shortest DLIF gain table's, or None."""
    steps = getattr(model.encoder, "time_steps", None)
    if steps is not None:
        return int(steps)
    gains = [n.gain.shape[0] for n in graph.nodes if isinstance(n, InputGain)]
    return int(min(gains)) if gains else None


def export_onnx(model: SNNClassifier, path: Union[str, os.PathLike], *,
                input_shape: Optional[tuple[int, ...]] = None) -> Path:
    """Write one time step of ``model`` as an ONNX graph at ``path`` (see the module docstring).

    ``input_shape`` is one sample's shape (for sequence data ``(T, F)`` or
    ``(F,)``); it can be left out when the first layer is dense or recurrent
    (a flat input of its ``in_features``) but is required for a conv model.
    The graph passes ``onnx.checker.check_model(full_check=True)``; the file is
    written atomically.
    """
    import onnx

    graph = model_step_graph(model, input_shape)   # BatchNorm folded (eval statistics): the deployed conv
    step_shape = graph.input_shape
    try:
        step = StepModule(graph)
        batch = 2
        x = torch.zeros(batch, *step_shape)
        t = torch.tensor(0, dtype=torch.int64)
        state = [torch.zeros(batch, *shape) for _, shape in step.state_spec]
        names = [n for n, _ in step.state_spec]
        input_names = ["x", "t", *names]
        output_names = ["out", *[f"{n}_next" for n in names]]
        dynamic = {n: {0: "batch"} for n in ["x", *names, "out", *[f"{n}_next" for n in names]]}
        buf = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            torch.onnx.export(step, (x, t, *state), buf, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, **kwargs)
    except GraphError as exc:
        raise ONNXExportError(str(exc)) from None
    proto = onnx.load_from_string(buf.getvalue())
    graph_inputs = [i.name for i in proto.graph.input]
    if "t" not in graph_inputs:
        # Without DLIF gains t is unused and the exporter drops it; keep it (an unused
        # graph input is valid ONNX) so the interface does not depend on the neuron type.
        t_info = onnx.helper.make_tensor_value_info("t", onnx.TensorProto.INT64, [])
        proto.graph.input.insert(1, t_info)
        graph_inputs.insert(1, "t")
    if graph_inputs != input_names:
        raise ONNXExportError(f"the exported graph has inputs {graph_inputs}, expected {input_names}")
    interface = {
        "inputs": {"x": list(step_shape), "t": []},
        "state": [{"name": n, "shape": list(s), "init": 0.0} for n, s in step.state_spec],
        "outputs": {"out": list(step.out_shape)},
        "next_state_suffix": "_next",
        "time_steps": _time_steps(model, graph),
        "readout": model.readout,
        "readout_scale": float(model.readout_scale),
        "dlif_gains": "constant tables in the graph, looked up with the step index t",
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = INTERFACE_KEY, json.dumps(interface)
    proto.producer_name = "neurodeploy"
    proto.doc_string = ("One time step of a spiking classifier. Feed x (the encoded input of step t), t and the "
                        "state (zeros at t=0); feed the *_next outputs back as the state of step t+1. "
                        f"Interface: metadata_props['{INTERFACE_KEY}'].")
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return path


def step_interface(path_or_model) -> dict:
    """The step interface JSON stored in an exported file (or ``onnx.ModelProto``)."""
    import onnx

    proto = path_or_model if isinstance(path_or_model, onnx.ModelProto) else onnx.load(str(path_or_model))
    for entry in proto.metadata_props:
        if entry.key == INTERFACE_KEY:
            return json.loads(entry.value)
    raise ONNXExportError(f"{path_or_model}: no '{INTERFACE_KEY}' metadata: not exported by neurodeploy")


def run_onnx(path: Union[str, os.PathLike], sequence: np.ndarray, *, session=None) -> np.ndarray:
    """Run an exported step graph with onnxruntime over an encoded sequence ``(T, B, *step_shape)``.

    Starts from zero state, feeds each step's ``*_next`` outputs back, and
    returns the outputs ``(T, B, *out_shape)``.
    """
    import onnxruntime as ort

    spec = step_interface(path)
    if session is None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    seq = np.asarray(sequence, dtype=np.float32)
    batch = seq.shape[1]
    state = {s["name"]: np.full((batch, *s["shape"]), s["init"], dtype=np.float32) for s in spec["state"]}
    names = [s["name"] for s in spec["state"]]
    outputs = ["out", *[n + spec["next_state_suffix"] for n in names]]
    result = []
    for t in range(seq.shape[0]):
        feed = {"x": seq[t], "t": np.array(t, dtype=np.int64), **state}
        out, *nxt = session.run(outputs, feed)
        state = dict(zip(names, nxt))
        result.append(out)
    return np.stack(result)
