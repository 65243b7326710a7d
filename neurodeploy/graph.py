"""The float network description: a :class:`FloatGraph` of small typed nodes.

This is the float side's counterpart of :mod:`neurodeploy.ir` (the fixed-point
network). Everything that reads a float SNN (the quantizer, NIR and ONNX
export, fine-tuning, float-side hardware noise) reads a ``FloatGraph``; NIR
import writes one. It knows nothing of torch, NIR or files (serialization
lives in :mod:`neurodeploy.io`), in the spirit of NIR's own dataclasses.

Time and units
--------------
The graph runs in discrete steps of ``dt`` seconds (``FloatGraph.dt``; NIR's
continuous time constants are turned into per-step factors with forward
Euler, ``leak = 1 - dt / tau``, when a graph is imported). Every parameter
here is per step and dimensionless: ``leak`` and ``current_leak`` multiply
the state once per step; ``threshold`` and ``bias`` are in the units of the
membrane potential ``v`` (the units the incoming weights produce). A node's
input at step ``t`` is its predecessor's output at step ``t`` (no delay);
a :class:`Recurrent` connection delivers step ``t``'s spikes at ``t + 1``.
The recurrent input joins the feed-forward current *before* an
:class:`InputGain` in front of the neuron node: for ``[..., InputGain,
neurons, Recurrent]`` the neurons receive ``x[t] = gain[t] * (ff[t] + W
s[t-1])`` with ``s[-1] = 0`` (the DLIF layers scale the whole current).

Nodes form a chain (``FloatGraph.nodes``, input first). The neuron dynamics,
one step, for a current ``x`` arriving at the neuron node:

* :class:`LIF`: ``v = leak * v + x + bias``; spike ``s = v > threshold``;
  ``v = 0`` where ``s`` (``reset="zero"``) or ``v -= threshold``
  (``reset="subtract"``). ``leak == 1`` is an integrate-and-fire neuron.
* :class:`CubaLIF`: ``i = current_leak * i + x``; ``v = leak * v + i + bias``;
  then spike and reset as LIF (the voltage uses the *new* current, Loihi's
  order).
* :class:`LI`: a non-spiking leaky integrator, ``v = leak * v + x + bias``;
  its output is ``v``. As the last node it is the readout of a potential
  (``FloatGraph.readout``).

Shapes are per sample, without batch or time axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from .errors import NeurodeployError

__all__ = [
    "GraphError", "Input", "Affine", "Conv2d", "Flatten", "SumPool2d", "AvgPool2d", "InputGain",
    "LIF", "CubaLIF", "LI", "Recurrent", "Node", "NEURON_NODES", "SYNAPSE_NODES", "FloatGraph",
    "RESETS", "READOUTS", "fold_gains", "gain_record",
]

RESETS = ("zero", "subtract")
# "spikes": the class is the output neurons' spike count; "potential": the last
# node's v at the end; "mean": the last node's output averaged over the steps
READOUTS = ("spikes", "potential", "mean")


class GraphError(NeurodeployError, ValueError):
    """A float graph is inconsistent or uses what a consumer cannot map; the message names the node."""


def _array(value, dtype=np.float64) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class Input:
    """The graph's input: one encoded time step of shape ``shape``."""

    shape: tuple[int, ...]


@dataclass(frozen=True)
class Affine:
    """``y = weight @ x + bias`` over a vector; ``weight`` (out, in), ``bias`` (out,) or None."""

    weight: np.ndarray
    bias: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _array(self.weight))
        if self.bias is not None:
            object.__setattr__(self, "bias", _array(self.bias))


@dataclass(frozen=True)
class Conv2d:
    """2-D convolution of a ``(C, H, W)`` input; ``weight`` (out, in/groups, kh, kw), zero padding."""

    weight: np.ndarray
    bias: Optional[np.ndarray] = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _array(self.weight))
        if self.bias is not None:
            object.__setattr__(self, "bias", _array(self.bias))


@dataclass(frozen=True)
class Flatten:
    """``(C, H, W)`` (or any shape) to a vector, C-order."""


@dataclass(frozen=True)
class SumPool2d:
    """Sum over ``kernel`` windows of a ``(C, H, W)`` input (zero padding)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class AvgPool2d:
    """Mean over ``kernel`` windows of a ``(C, H, W)`` input (zero padding, counted in the mean)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class InputGain:
    """A per-step gain on the current into the next neuron node: ``x * gain[min(t, len - 1)]``.

    ``gain`` has shape ``(steps,)`` or ``(steps, neurons)`` (the DLIF neuron's
    ``p[t]``). A time-invariant gain is a scalar per neuron, shape ``(1, n)``.
    """

    gain: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "gain", _array(self.gain))

    @property
    def constant(self) -> bool:
        return bool(np.all(self.gain == self.gain.reshape(self.gain.shape[0], -1)[0]))


@dataclass(frozen=True)
class LIF:
    """Leaky integrate-and-fire neurons (current input, no synaptic state); see the module docstring."""

    leak: np.ndarray
    threshold: np.ndarray
    bias: Optional[np.ndarray] = None
    reset: str = "zero"

    def __post_init__(self) -> None:
        object.__setattr__(self, "leak", _array(self.leak))
        object.__setattr__(self, "threshold", _array(self.threshold))
        if self.bias is not None:
            object.__setattr__(self, "bias", _array(self.bias))


@dataclass(frozen=True)
class CubaLIF:
    """Current-based LIF neurons: a decaying synaptic current feeds the membrane."""

    current_leak: np.ndarray
    leak: np.ndarray
    threshold: np.ndarray
    bias: Optional[np.ndarray] = None
    reset: str = "zero"

    def __post_init__(self) -> None:
        for name in ("current_leak", "leak", "threshold"):
            object.__setattr__(self, name, _array(getattr(self, name)))
        if self.bias is not None:
            object.__setattr__(self, "bias", _array(self.bias))


@dataclass(frozen=True)
class LI:
    """Non-spiking leaky integrator; its output is its potential ``v``."""

    leak: np.ndarray
    bias: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "leak", _array(self.leak))
        if self.bias is not None:
            object.__setattr__(self, "bias", _array(self.bias))


@dataclass(frozen=True)
class Recurrent:
    """Recurrent weights of the neuron node just before it: spikes of step t add ``weight @ s`` at t + 1."""

    weight: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _array(self.weight))


Node = Union[Input, Affine, Conv2d, Flatten, SumPool2d, AvgPool2d, InputGain, LIF, CubaLIF, LI, Recurrent]
NEURON_NODES = (LIF, CubaLIF, LI)
SYNAPSE_NODES = (Affine, Conv2d)


def _conv_out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@dataclass(frozen=True)
class FloatGraph:
    """A float SNN as a chain of nodes (input first), stepped every ``dt`` seconds.

    ``time_steps``: steps per sample (None: the input's own length, e.g.
    sequences). ``readout``: how the class is read (:data:`READOUTS`).
    ``metadata``: free-form provenance (source file, tool), never semantics.
    """

    nodes: tuple[Node, ...]
    dt: float = 1.0
    time_steps: Optional[int] = None
    readout: str = "spikes"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.nodes[0].shape)

    def shapes(self) -> list[tuple[int, ...]]:
        """The output shape of every node (``shapes()[i]`` for ``nodes[i]``), checked on the way."""
        self._check_order()
        shape = tuple(int(d) for d in self.nodes[0].shape)
        out = [shape]
        for i, node in enumerate(self.nodes[1:], 1):
            where = f"node {i} ({type(node).__name__})"
            if isinstance(node, Affine):
                if node.weight.ndim != 2 or len(shape) != 1 or node.weight.shape[1] != shape[0]:
                    raise GraphError(f"{where}: weight {node.weight.shape} does not take input of shape {shape}")
                shape = (node.weight.shape[0],)
                _check_vector(node.bias, shape, where, "bias")
            elif isinstance(node, Conv2d):
                w = node.weight
                if w.ndim != 4 or len(shape) != 3 or w.shape[1] * node.groups != shape[0]:
                    raise GraphError(f"{where}: weight {w.shape} (groups {node.groups}) does not take input of "
                                     f"shape {shape}")
                h = _conv_out(shape[1], w.shape[2], node.stride[0], node.padding[0], node.dilation[0])
                wd = _conv_out(shape[2], w.shape[3], node.stride[1], node.padding[1], node.dilation[1])
                if h < 1 or wd < 1:
                    raise GraphError(f"{where}: a {w.shape[2]}x{w.shape[3]} kernel does not fit input {shape}")
                shape = (w.shape[0], h, wd)
                _check_vector(node.bias, (w.shape[0],), where, "bias")
            elif isinstance(node, Flatten):
                shape = (int(np.prod(shape)),)
            elif isinstance(node, (SumPool2d, AvgPool2d)):
                if len(shape) != 3:
                    raise GraphError(f"{where}: pooling needs a (C, H, W) input, got shape {shape}")
                h = _conv_out(shape[1], node.kernel[0], node.stride[0], node.padding[0])
                wd = _conv_out(shape[2], node.kernel[1], node.stride[1], node.padding[1])
                if h < 1 or wd < 1:
                    raise GraphError(f"{where}: kernel {node.kernel} does not fit input {shape}")
                shape = (shape[0], h, wd)
            elif isinstance(node, InputGain):
                g = node.gain
                if g.ndim not in (1, 2) or g.shape[0] < 1 or (g.ndim == 2 and g.shape[1] not in (1, int(np.prod(shape)))):
                    raise GraphError(f"{where}: gain of shape {g.shape}, expected (steps,) or (steps, "
                                     f"{int(np.prod(shape))})")
            elif isinstance(node, NEURON_NODES):
                n = int(np.prod(shape))
                for name in ("leak", "threshold", "current_leak", "bias"):
                    value = getattr(node, name, None)
                    if value is not None and value.size not in (1, n):
                        raise GraphError(f"{where}: {name} has {value.size} values for {n} neurons")
                if getattr(node, "reset", "zero") not in RESETS:
                    raise GraphError(f"{where}: reset {node.reset!r}, expected one of {RESETS}")
            elif isinstance(node, Recurrent):
                n = int(np.prod(shape))
                if node.weight.shape != (n, n):
                    raise GraphError(f"{where}: recurrent weight {node.weight.shape}, expected ({n}, {n})")
            else:  # pragma: no cover - Node is a closed union
                raise GraphError(f"{where}: unknown node type")
            out.append(shape)
        return out

    def _check_order(self) -> None:
        if not self.nodes or not isinstance(self.nodes[0], Input):
            raise GraphError("a float graph starts with an Input node")
        if self.readout not in READOUTS:
            raise GraphError(f"readout {self.readout!r}, expected one of {READOUTS}")
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise GraphError(f"dt {self.dt!r}, expected a positive number of seconds")
        for i, node in enumerate(self.nodes[1:], 1):
            if isinstance(node, Input):
                raise GraphError(f"node {i}: a second Input node")
            if isinstance(node, Recurrent) and not isinstance(self.nodes[i - 1], (LIF, CubaLIF)):
                raise GraphError(f"node {i} (Recurrent): must follow a spiking neuron node, follows "
                                 f"{type(self.nodes[i - 1]).__name__}")
            if isinstance(node, InputGain) and not (i + 1 < len(self.nodes)
                                                   and isinstance(self.nodes[i + 1], NEURON_NODES)):
                raise GraphError(f"node {i} (InputGain): must come just before a neuron node")

    def validate(self) -> "FloatGraph":
        """Check shapes and node order; return self."""
        self.shapes()
        return self


def _check_vector(value: Optional[np.ndarray], shape: tuple[int, ...], where: str, name: str) -> None:
    if value is not None and value.shape != shape:
        raise GraphError(f"{where}: {name} of shape {value.shape}, expected {shape}")


# --------------------------------------------------------------------------- gain folding


def _gain_steps(gain: np.ndarray, time_steps: Optional[int]) -> np.ndarray:
    """The gain of steps ``0 .. time_steps - 1`` (``gain[min(t, len - 1)]``); all its rows without a count."""
    if time_steps is None or gain.shape[0] == time_steps:
        return gain
    if gain.shape[0] > time_steps:
        return gain[:time_steps]
    return np.concatenate([gain, np.repeat(gain[-1:], time_steps - gain.shape[0], axis=0)])


def fold_gains(graph: FloatGraph) -> FloatGraph:
    """``graph`` with every :class:`~neurodeploy.graph.InputGain` folded into the synapse before it.

    The gain's mean over the graph's steps (per neuron for a per-neuron gain)
    multiplies that synapse's weights and bias and the neuron node's
    recurrent weights (module docstring). Exact for a time-invariant gain.
    ``metadata["folded_gains"]`` lists, per folded gain, the neuron node's
    index in the returned graph, the folded ``mean``, the relative
    ``spread`` (max |p[t] - mean| / |mean|) and the ``per_step`` values.
    A gain that does not directly follow an Affine or Conv2d, or a
    per-neuron gain that varies within a conv channel, is a
    :class:`~neurodeploy.graph.GraphError`.
    """
    if not any(isinstance(n, InputGain) for n in graph.nodes):
        return graph
    shapes = graph.shapes()
    old_where = graph.metadata.get("body_index")
    nodes: list = []
    where: list = []
    folded = list(graph.metadata.get("folded_gains", ()))
    scale_rec: dict[int, np.ndarray | float] = {}   # old neuron index -> factor for its Recurrent rows
    for i, node in enumerate(graph.nodes):
        if isinstance(node, Recurrent) and (i - 1) in scale_rec:
            f = scale_rec[i - 1]
            node = Recurrent(node.weight * f if np.ndim(f) == 0 else node.weight * np.asarray(f)[:, None])
        if not isinstance(node, InputGain):
            nodes.append(node)
            where.append(old_where[i] if old_where is not None and i < len(old_where) else None)
            continue
        prev = nodes[-1] if nodes else None
        label = f"node {i} (InputGain)"
        if not isinstance(prev, (Affine, Conv2d)):
            raise GraphError(f"{label}: follows {type(prev).__name__}; a gain folds into the Affine or Conv2d "
                             f"just before it")
        g = _gain_steps(node.gain, graph.time_steps)
        per_neuron = g.ndim == 2 and g.shape[1] > 1
        if not per_neuron:
            g1 = g.reshape(g.shape[0])
            mean = float(g1.mean())
            spread = float(np.abs(g1 - mean).max() / abs(mean)) if mean != 0 else float("inf")
            factor: np.ndarray | float = mean
            w = prev.weight * mean
            b = prev.bias * mean if prev.bias is not None else None
        else:
            mean_v = g.mean(axis=0)
            dev = np.abs(g - mean_v[None, :]).max(axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(mean_v != 0, dev / np.abs(mean_v), np.where(dev == 0, 0.0, np.inf))
            spread, mean, factor = float(rel.max()), mean_v.tolist(), mean_v
            if isinstance(prev, Affine):
                w = prev.weight * mean_v[:, None]
                b = prev.bias * mean_v if prev.bias is not None else None
            else:
                per_c = mean_v.reshape(shapes[i])
                chan = per_c.reshape(per_c.shape[0], -1)
                if not np.all(chan == chan[:, :1]):
                    raise GraphError(f"{label}: a per-neuron gain that varies within a conv channel cannot be "
                                     f"folded into the Conv2d before it")
                c = chan[:, 0]
                w = prev.weight * c[:, None, None, None]
                b = prev.bias * c if prev.bias is not None else None
        nodes[-1] = (Affine(w, b) if isinstance(prev, Affine) else
                     Conv2d(w, b, stride=prev.stride, padding=prev.padding, dilation=prev.dilation, groups=prev.groups))
        scale_rec[i + 1] = factor
        folded.append({"node": len(nodes), "mean": mean, "spread": spread,
                       "per_step": np.asarray(node.gain).tolist()})
    meta = {**graph.metadata, "folded_gains": tuple(folded)}
    if old_where is not None:
        meta["body_index"] = tuple(where)
    out = FloatGraph(tuple(nodes), dt=graph.dt, time_steps=graph.time_steps, readout=graph.readout, metadata=meta)
    out.validate()
    return out


def gain_record(graph: FloatGraph, node: int) -> Optional[dict]:
    """The :func:`fold_gains` record of neuron node ``node`` (None if no gain was folded there)."""
    for entry in graph.metadata.get("folded_gains", ()):
        if entry.get("node") == node:
            return entry
    return None
