"""Export one time step of a float :class:`~neurodeploy.models.builders.SNNClassifier` as ONNX.

The graph computes a single step of the spiking network with the neuron state
as explicit inputs and outputs, so any ONNX runtime can run the model step by
step in its own loop (``run_onnx`` does exactly that with onnxruntime):

Inputs
    ``x``      ``(B, *step_shape)`` float32: the encoded input of one step,
               i.e. the encoder's output at step t (``encode_input(model, x)[t]``:
               the model's input quantisation, if any, then its encoder);
               normalisation (``model.normalize``) is inside the graph.
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

The step is traced from our own step functions
(:func:`~neurodeploy.neurons.functional.dlif_step`,
:func:`~neurodeploy.neurons.functional.cuba_step`) with the spike function
replaced by its forward pass, the Heaviside ``x > 0`` (the surrogate gradient
only matters for training). The legacy TorchScript exporter
(``dynamo=False``) is used: it needs no extra packages and handles the graph.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch

from ..errors import NeurodeployError
from ..fileio import atomic_path
from ..models.builders import SNNClassifier, TimeFolded
from ..models.folding import fold_batchnorm, has_batchnorm
from ..neurons import functional as F_
from ..neurons.modules import RecurrentSpikingNeurons, SpikingNeurons

__all__ = ["ONNXExportError", "export_onnx", "run_onnx", "step_interface", "encode_input", "StepModule",
           "INTERFACE_KEY"]

INTERFACE_KEY = "neurodeploy.step_interface"
OPSET = 17


class ONNXExportError(NeurodeployError, ValueError):
    """The model cannot be exported as an ONNX step graph; the message says why."""


@contextlib.contextmanager
def _heaviside_spikes() -> Iterator[None]:
    """Make the step functions use the plain Heaviside forward (no surrogate autograd function)."""
    original = F_.spike_fn

    def heaviside(x: torch.Tensor, gamma: float) -> torch.Tensor:
        return (x > 0).to(x.dtype)

    F_.spike_fn = heaviside
    try:
        yield
    finally:
        F_.spike_fn = original


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
    """One time step of an :class:`SNNClassifier` with explicit state: ``forward(x, t, *state)``.

    ``state_spec`` lists ``(name, per-sample shape)`` of the state tensors in
    input order; ``forward`` returns ``(out, *next_state)``.
    """

    def __init__(self, model: SNNClassifier, step_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.normalize = model.normalize
        self.layers = torch.nn.ModuleList(list(model.body))
        self.step_shape = tuple(int(s) for s in step_shape)
        self.state_spec: list[tuple[str, tuple[int, ...]]] = []
        self._plan: list[tuple[str, list[int]]] = []  # per module: kind and its state slots
        params = list(model.parameters())
        dtype = params[0].dtype if params else torch.float32
        h = torch.zeros(1, *self.step_shape, dtype=dtype)
        for k, m in enumerate(self.layers):
            if isinstance(m, SpikingNeurons):
                shape = tuple(h.shape[1:])
                slots = [self._slot(f"v{k}", shape)]
                if m.neuron_type.startswith("cuba"):
                    slots.append(self._slot(f"i{k}", shape))
                self._plan.append(("neurons", slots))
            elif isinstance(m, RecurrentSpikingNeurons):
                shape = (m.recurrent_weights.out_features,)
                slots = [self._slot(f"z{k}", shape), self._slot(f"v{k}", shape)]
                if m.cuba:
                    slots.append(self._slot(f"i{k}", shape))
                self._plan.append(("recurrent", slots))
                h = torch.zeros(1, *shape, dtype=dtype)
                continue
            elif isinstance(m, torch.nn.Flatten):
                self._plan.append(("flatten", []))
            elif isinstance(m, (torch.nn.Linear, TimeFolded)):
                self._plan.append(("synapse", []))
            else:
                raise ONNXExportError(f"layer {type(m).__name__} has no step export "
                                      f"(supported: Linear, TimeFolded(Conv2d), Flatten, spiking neurons)")
            with torch.no_grad():
                h = self._stateless(m, h) if self._plan[-1][0] in ("flatten", "synapse") else h
        self.out_shape = tuple(int(s) for s in h.shape[1:])

    def _slot(self, name: str, shape: tuple[int, ...]) -> int:
        self.state_spec.append((name, tuple(int(s) for s in shape)))
        return len(self.state_spec) - 1

    @staticmethod
    def _stateless(m: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
        if isinstance(m, torch.nn.Flatten):
            start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim
            end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
            if start < 1 and m.start_dim >= 0:
                raise ONNXExportError(f"Flatten(start_dim={m.start_dim}) would merge the time or batch axis")
            return torch.flatten(h, start, end)
        if isinstance(m, TimeFolded):
            return m.module(h)
        return m(h)

    @staticmethod
    def _gain(m, current: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if m.gain is None:
            return current
        g = torch.index_select(m.gain, 0, t.reshape(1).to(torch.int64))
        return current * g.reshape([1] * current.dim())

    def forward(self, x: torch.Tensor, t: torch.Tensor, *state: torch.Tensor):
        h = x
        if self.normalize is not None:
            h = self.normalize(h.unsqueeze(0))[0]
        new_state: list[Optional[torch.Tensor]] = [None] * len(state)
        for m, (kind, slots) in zip(self.layers, self._plan):
            if kind in ("flatten", "synapse"):
                h = self._stateless(m, h)
            elif kind == "neurons":
                current = self._gain(m, h, t)
                if len(slots) == 2:
                    z, st = F_.cuba_step(current, F_.LIFFeedForwardState(v=state[slots[0]], i=state[slots[1]]), m.p)
                    new_state[slots[0]], new_state[slots[1]] = st.v, st.i
                else:
                    z, st = F_.dlif_step(current, F_.LIFBoxFeedForwardState(v=state[slots[0]]), m.p)
                    new_state[slots[0]] = st.v
                h = z
            else:  # recurrent
                z_prev = state[slots[0]]
                current = self._gain(m, m.input_weights(h) + m.recurrent_weights(z_prev), t)
                if len(slots) == 3:
                    z, st = F_.cuba_step(current, F_.LIFFeedForwardState(v=state[slots[1]], i=state[slots[2]]), m.p)
                    new_state[slots[2]] = st.i
                else:
                    z, st = F_.dlif_step(current, F_.LIFBoxFeedForwardState(v=state[slots[1]]), m.p)
                new_state[slots[0]], new_state[slots[1]] = z, st.v
                h = z
        return (h, *new_state)


def _step_shape(model: SNNClassifier, input_shape: Optional[tuple[int, ...]]) -> tuple[int, ...]:
    from ..data.encoders import TemporalEncoder

    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if isinstance(model.encoder, TemporalEncoder) and len(shape) == 2:
            shape = shape[1:]  # (T, F) sample -> (F,) per step
        return shape
    for m in model.body:
        if isinstance(m, torch.nn.Flatten):
            continue
        if isinstance(m, torch.nn.Linear):
            return (m.in_features,)
        if isinstance(m, RecurrentSpikingNeurons):
            return (m.input_weights.in_features,)
        break
    raise ONNXExportError("input_shape is required for this model (its first layer is a convolution): pass the "
                          "shape of one sample, e.g. input_shape=(1, 28, 28)")


def _time_steps(model: SNNClassifier) -> Optional[int]:
    steps = getattr(model.encoder, "time_steps", None)
    gains = [m.gain.shape[0] for m in model.modules()
             if isinstance(m, (SpikingNeurons, RecurrentSpikingNeurons)) and m.gain is not None]
    return int(steps) if steps is not None else (int(min(gains)) if gains else None)


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

    if has_batchnorm(model):
        model = fold_batchnorm(model)  # the step graph is the deployed (eval-mode, folded) model
    step_shape = _step_shape(model, input_shape)
    was_training = model.training
    model.eval()
    try:
        step = StepModule(model, step_shape)
        batch = 2
        x = torch.zeros(batch, *step_shape)
        t = torch.tensor(0, dtype=torch.int64)
        state = [torch.zeros(batch, *shape) for _, shape in step.state_spec]
        names = [n for n, _ in step.state_spec]
        input_names = ["x", "t", *names]
        output_names = ["out", *[f"{n}_next" for n in names]]
        dynamic = {n: {0: "batch"} for n in ["x", *names, "out", *[f"{n}_next" for n in names]]}
        buf = io.BytesIO()
        with _heaviside_spikes(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            torch.onnx.export(step, (x, t, *state), buf, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, **kwargs)
    finally:
        model.train(was_training)
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
        "time_steps": _time_steps(model),
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
