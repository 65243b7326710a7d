"""NIR <-> :class:`~neurodeploy.graph.FloatGraph`: a thin mapping, apart from the graph itself.

:func:`graph_to_nir` writes a float graph as a ``nir.NIRGraph``;
:func:`nir_to_graph` reads one back (any tool's: Norse, snnTorch, Sinabs, ...);
:func:`load_nir` reads a file (``nir.read``, with a fallback for files whose
declared types do not check) and converts it.

Time: forward Euler with the step ``dt``
----------------------------------------
NIR's neurons are continuous-time ODEs; a :class:`~neurodeploy.graph.FloatGraph`
steps every ``dt`` seconds with per-step factors. One Euler step of

* ``LIF``: ``tau dv/dt = (v_leak - v) + r I`` gives ``v' = (1 - dt/tau) v +
  (r dt/tau) I + (dt/tau) v_leak``: ``leak = 1 - dt/tau``, an input gain
  ``g = r dt/tau`` and ``bias = (dt/tau) v_leak``;
* ``IF``: ``dv/dt = r I`` gives ``v' = v + (r dt) I``: ``leak = 1``, ``g = r dt``
  (Norse, snnTorch and Sinabs step an IF as ``v += r I`` whatever dt, which is
  this at ``dt = 1``: import Sinabs' discrete-time graphs with ``dt = 1``);
* ``LI``: as LIF without spikes; ``I`` (integrator): ``leak = 1``, ``g = r dt``;
* ``CubaLIF``: ``tau_syn dI/dt = -I + w_in x``, ``tau_mem dv/dt = (v_leak - v)
  + r I`` gives ``current_leak = 1 - dt/tau_syn``, ``leak = 1 - dt/tau_mem``,
  ``g = (w_in dt/tau_syn) (r dt/tau_mem)`` and ``bias = (dt/tau_mem) v_leak``,
  the current expressed in the units of v (``i = r dt/tau_mem I``). The voltage
  uses the step's *new* current (Norse's import, snnTorch's ``Synaptic`` and
  Loihi all do; a strict explicit Euler step would lag it by one step).

The input gain ``g`` is folded into the incoming synapse (rows of an
``Affine``/``Linear`` weight and its bias; the output channels of a
``Conv2d`` when ``g`` is constant per channel) and into the recurrent weights
of the same neurons; where no synapse precedes the neurons (or a conv gain
varies within a channel) it is kept as an :class:`~neurodeploy.graph.InputGain`
node of shape ``(1, n)``. A gain within float32 precision of 1 (``|g - 1| <=
2**-20``, 8 float32 ulps, e.g. snnTorch's ``w_in = tau_syn / dt``, stored in float32) is 1.
``dt/tau > 1`` (a negative leak) is refused.

Resets
------
NIR resets to ``v_reset`` and has no reset-mode field; Loihi resets to 0, so
a non-zero ``v_reset`` is a one-line error naming the node. Reset by
subtraction is not written in NIR files: the NIR paper's
``braille_noDelay_noBias_subtract.nir`` was *trained* with it in snnTorch, but
the file holds ``v_reset = 0`` and no metadata, so every importer (snnTorch's
own ``import_from_nir`` included) reads it as reset to zero, and so do we.
``nir_to_graph(..., reset="subtract")`` (CLI ``--reset subtract``) runs such a
graph as trained: the float backend honours it; quantization refuses it with
a one-line error naming the node (Loihi's LIF resets to zero).

Graph structure
---------------
Nested ``NIRGraph`` nodes are flattened (inner names ``outer.inner``; the
subgraph's own Input/Output become the edges through it). From the one
``Input`` the edges must form a chain to the one ``Output``, except a
recurrent cycle ``N -> W -> N`` with ``W`` an ``Affine``/``Linear`` that only
``N`` feeds and only ``N`` reads, ``N`` a spiking neuron (``LIF``, ``IF``,
``CubaLIF``): it becomes a :class:`~neurodeploy.graph.Recurrent` node after
``N`` (step t's spikes arrive at t + 1, as nirtorch, Norse and snnTorch's
``RSynaptic`` run such a cycle). ``W``'s bias (snnTorch writes one) enters
every step from the first on (snnTorch's ``recurrent(spk)`` with ``spk = 0``
at the start), the same as a bias on the feed-forward synapse, where it is
added. Anything else (branches, merges, other cycles, unreachable nodes) is
a one-line error naming the node.

Our own graphs (``metadata.producer == "neurodeploy"``) carry the float
graph's ``readout`` and ``time_steps`` in the graph metadata; other graphs
read as ``"spikes"`` when the last node spikes, ``"potential"`` for an LI /
integrator and ``"mean"`` otherwise. ``graph_to_nir`` follows the conventions
of :mod:`neurodeploy.io.nir_export` (``fold_r``, IF for ``leak == 1``,
subgraphs for recurrent layers, the DLIF mean gain folded with its spread in
the metadata).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import NeurodeployError, bounded
from ..graph import (fold_gains, gain_record, LI, LIF, READOUTS, RESETS, Affine, AvgPool2d, Conv2d, CubaLIF, Flatten, FloatGraph, GraphError,
                     Input, InputGain, Recurrent, SumPool2d)

__all__ = ["NIRImportError", "NIRTypeCheckWarning", "nir_to_graph", "graph_to_nir", "load_nir",
           "read_nir_unchecked"]

GAIN_ONE_TOLERANCE = 2.0 ** -20  # 8 float32 ulps at 1
SUPPORTED = "Input, Output, Affine, Linear, Conv2d, Flatten, SumPool2d, AvgPool2d, IF, LIF, CubaLIF, LI, I, NIRGraph"


class NIRExportError(NeurodeployError, ValueError):
    """The model cannot be written as an exact NIR graph; the message says which layer and why."""


class NIRImportError(GraphError):
    """A NIR graph cannot be read as a float graph; the message names the node and what is unsupported."""


class NIRTypeCheckWarning(UserWarning):
    """``nir.read`` rejected the file's declared types; it was read without type checking (the graph is sound)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return bounded(text[0] if text else type(exc).__name__, 300)


# --------------------------------------------------------------------------- reading files


def read_nir_unchecked(path: Union[str, os.PathLike]):
    """``nir.read(path, type_check=False)``, nested subgraphs included (nir only passes the flag to the top)."""
    import h5py
    import nir
    from nir.serialization import hdf2dict

    def off(d: dict) -> None:
        if d.get("type") == "NIRGraph":
            d["type_check"] = False
            for sub in d.get("nodes", {}).values():
                if isinstance(sub, dict):
                    off(sub)

    with h5py.File(str(path), "r") as f:
        data = hdf2dict(f["node"])
    off(data)
    return nir.dict2NIRNode(data)


def load_nir(path: Union[str, os.PathLike], *, dt: Optional[float] = None, time_steps: Optional[int] = None,
             reset: Optional[str] = None) -> FloatGraph:
    """Read the NIR file ``path`` as a :class:`FloatGraph` (see the module docstring).

    ``dt`` (seconds): None takes the graph's ``metadata["dt"]`` (our exports
    record it); a graph without time constants (only IF, synapses, pooling)
    then steps with ``dt = 1``; otherwise None is an error asking for it.
    A file that ``nir.read`` rejects with type checking is read without it and,
    when the graph converts (our own shape checks pass), a
    :class:`NIRTypeCheckWarning` says so; otherwise the error is one line.
    """
    import nir

    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise NIRImportError(f"{source}: no such file")
    note = None
    try:
        ng = nir.read(str(path), type_check=True)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as checked:  # nir raises ValueError, KeyError, AssertionError, OSError, ...
        try:
            ng = read_nir_unchecked(path)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:
            raise NIRImportError(f"{source}: not a readable NIR file: {_first_line(exc)}") from None
        note = _first_line(checked)
    graph = nir_to_graph(ng, dt=dt, time_steps=time_steps, source=source, reset=reset)
    if note is not None:
        warnings.warn(NIRTypeCheckWarning(f"{source}: nir.read rejected its declared types ({note}); read without "
                                          f"type checking, and the graph itself checks"), stacklevel=2)
        graph.metadata["nir_type_check"] = note
    return graph


# --------------------------------------------------------------------------- NIR -> FloatGraph


def _flatten_graph(ng, prefix: str, source: str) -> tuple[dict, list, list[str], list[str]]:
    """(nodes, edges, input names, output names) with nested NIRGraphs dissolved."""
    import nir

    where = f"subgraph '{prefix[:-1]}'" if prefix else "graph"
    names = set(ng.nodes)
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    inputs = [k for k, n in ng.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in ng.nodes.items() if isinstance(n, nir.Output)]
    subs: dict[str, tuple[dict, list, list[str], list[str]]] = {}
    for key, node in ng.nodes.items():
        if isinstance(node, nir.NIRGraph):
            sub = _flatten_graph(node, f"{prefix}{key}.", source)
            if len(sub[2]) != 1 or len(sub[3]) != 1:
                raise NIRImportError(f"{source}: subgraph '{prefix}{key}' has {len(sub[2])} Input and {len(sub[3])} "
                                     f"Output nodes; only subgraphs with one of each are supported")
            subs[key] = sub
        else:
            nodes[prefix + key] = node
    raw = [(str(a), str(b)) for a, b in ng.edges]

    def resolve(end: str, edge: tuple[str, str], as_source: bool) -> list[str]:
        key, _, port = end.partition(".")
        if end in names and end not in subs:
            return [prefix + end]
        target = end if end in subs else (key if key in subs and port else None)
        if target is None:
            raise NIRImportError(f"{source}: {where}: edge {edge} names node '{end}', which does not exist "
                                 f"(nodes: {', '.join(sorted(names))})")
        sub_nodes, sub_edges, (sub_in,), (sub_out,) = subs[target]
        if as_source:   # edges from the subgraph leave from what feeds its Output
            return [a for a, b in sub_edges if b == sub_out]
        return [b for a, b in sub_edges if a == sub_in]

    for a, b in raw:
        for src in resolve(a, (a, b), True):
            for dst in resolve(b, (a, b), False):
                edges.append((src, dst))
    for key, (sub_nodes, sub_edges, (sub_in,), (sub_out,)) in subs.items():
        nodes.update({k: v for k, v in sub_nodes.items() if k not in (sub_in, sub_out)})
        edges.extend((a, b) for a, b in sub_edges if a != sub_in and b != sub_out)
    return nodes, edges, [prefix + k for k in inputs], [prefix + k for k in outputs]


def _arr(value, name: str, where: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise NIRImportError(f"{where}: {name} is not numeric: {bounded(value)}") from None
    if not np.all(np.isfinite(a)):
        raise NIRImportError(f"{where}: {name} has non-finite values: {bounded(a)}")
    return a


def _per_neuron(a: np.ndarray, n: int, name: str, where: str) -> np.ndarray:
    if a.size == 1:
        return np.full(n, float(a.reshape(-1)[0]))
    if a.size != n:
        raise NIRImportError(f"{where}: {name} has {a.size} values for {n} neurons")
    return a.reshape(-1)


def _compact(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """A per-neuron array that holds one value as a 0-d array."""
    if a is None:
        return None
    flat = a.reshape(-1)
    return np.asarray(flat[0]) if flat.size and np.all(flat == flat[0]) else flat


def _step_factor(tau: np.ndarray, dt: float, name: str, where: str) -> np.ndarray:
    if np.any(tau <= 0):
        raise NIRImportError(f"{where}: {name} must be positive, got {bounded(tau)}")
    k = dt / tau
    if np.any(k > 1.0):
        raise NIRImportError(f"{where}: {name} = {float(tau.min()):g} s is shorter than dt = {dt:g} s: forward Euler's "
                             f"leak 1 - dt/{name} would be negative; import with a smaller --dt")
    return k


def _pair(value, name: str, where: str) -> tuple[int, int]:
    a = np.asarray(value).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2 or not np.all(a == np.round(a)) or np.any(a < 0):
        raise NIRImportError(f"{where}: {name} {bounded(value)}, expected one or two non-negative integers")
    return int(a[0]), int(a[1])


def _shape_of(types: Any, where: str) -> Optional[tuple[int, ...]]:
    if not isinstance(types, dict) or not types:
        return None
    value = next(iter(types.values()))
    if value is None:
        return None
    a = np.asarray(value).reshape(-1)
    if a.size == 0 or not np.all(a == np.round(a)) or np.any(a < 1):
        raise NIRImportError(f"{where}: shape {bounded(value)} is not a list of positive integers")
    return tuple(int(d) for d in a)


def _neuron(node, name: str, shape: tuple[int, ...], dt: float, reset: Optional[str]):
    """(graph node, per-neuron input gain or None) of one NIR neuron node."""
    import nir

    kind = type(node).__name__
    where = f"node '{name}' ({kind})"
    n = int(np.prod(shape))

    def p(attr: str, default: Optional[float] = None) -> np.ndarray:
        value = getattr(node, attr, None)
        if value is None:
            if default is None:
                raise NIRImportError(f"{where}: parameter {attr} is missing")
            value = default
        return _per_neuron(_arr(value, attr, where), n, attr, where)

    spiking = isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF))
    if spiking:
        v_reset = p("v_reset", 0.0)
        if np.any(v_reset != 0):
            raise NIRImportError(f"{where}: v_reset = {bounded(_compact(v_reset))} is not supported: Loihi resets v to 0 "
                                 f"(only v_reset = 0 maps)")
        threshold = _compact(p("v_threshold"))
    mode = reset or "zero"
    if isinstance(node, nir.IF):
        return LIF(leak=np.asarray(1.0), threshold=threshold, reset=mode), p("r") * dt
    if isinstance(node, nir.I):
        return LI(leak=np.asarray(1.0)), p("r") * dt
    if isinstance(node, (nir.LIF, nir.LI)):
        k = _step_factor(p("tau"), dt, "tau", where)
        bias = k * p("v_leak", 0.0)
        bias = None if not np.any(bias) else _compact(bias)
        if isinstance(node, nir.LI):
            return LI(leak=_compact(1.0 - k), bias=bias), p("r") * k
        return LIF(leak=_compact(1.0 - k), threshold=threshold, bias=bias, reset=mode), p("r") * k
    if isinstance(node, nir.CubaLIF):
        ks = _step_factor(p("tau_syn"), dt, "tau_syn", where)
        km = _step_factor(p("tau_mem"), dt, "tau_mem", where)
        bias = km * p("v_leak", 0.0)
        bias = None if not np.any(bias) else _compact(bias)
        gain = (p("w_in", 1.0) * ks) * (p("r") * km)
        return CubaLIF(current_leak=_compact(1.0 - ks), leak=_compact(1.0 - km), threshold=threshold, bias=bias,
                       reset=mode), gain
    raise NIRImportError(f"{where}: not supported (supported: {SUPPORTED})")  # pragma: no cover


def _scale_rows(node, g: np.ndarray, extra_bias: Optional[np.ndarray] = None):
    """``node`` (Affine / Conv2d) with its output scaled by ``g`` (per output neuron / channel)."""
    if isinstance(node, Affine):
        bias = node.bias
        if extra_bias is not None:
            bias = extra_bias if bias is None else bias + extra_bias
        w = node.weight * g[:, None]
        return Affine(w, None if bias is None else bias * g)
    w = node.weight * g[:, None, None, None]
    return Conv2d(w, None if node.bias is None else node.bias * g, node.stride, node.padding, node.dilation,
                  node.groups)


def nir_to_graph(ng, *, dt: Optional[float], time_steps: Optional[int] = None, source: str = "NIR graph",
                 reset: Optional[str] = None) -> FloatGraph:
    """Convert a ``nir.NIRGraph`` to a :class:`FloatGraph` stepped every ``dt`` seconds (module docstring).

    ``time_steps``: steps per sample (None: the graph metadata's, else None).
    ``reset``: None reads NIR's semantics (reset to ``v_reset`` = 0);
    ``"subtract"`` / ``"zero"`` sets every spiking node's reset mode.
    """
    import nir

    if reset is not None and reset not in RESETS:
        raise NIRImportError(f"{source}: reset {reset!r}, expected one of {RESETS}")
    meta = dict(getattr(ng, "metadata", None) or {})
    ours = meta.get("producer") == "neurodeploy"
    nodes, edges, inputs, outputs = _flatten_graph(ng, "", source)
    if len(inputs) != 1:
        raise NIRImportError(f"{source}: {len(inputs)} Input nodes ({', '.join(inputs) or 'none'}); exactly one is "
                             f"supported")
    if len(outputs) != 1:
        raise NIRImportError(f"{source}: {len(outputs)} Output nodes ({', '.join(outputs) or 'none'}); exactly one is "
                             f"supported")
    for name, node in nodes.items():
        if not isinstance(node, (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten,
                                 nir.SumPool2d, nir.AvgPool2d, nir.IF, nir.LIF, nir.CubaLIF, nir.LI, nir.I)):
            raise NIRImportError(f"{source}: node '{name}' ({type(node).__name__}) is not supported (supported: "
                                 f"{SUPPORTED})")
    if len(set(edges)) != len(edges):
        dup = next(e for e in edges if edges.count(e) > 1)
        raise NIRImportError(f"{source}: duplicate edge {dup}")
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    pred: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    # recurrent cycles N -> W -> N
    recurrent: dict[str, str] = {}
    for w, node in nodes.items():
        if isinstance(node, (nir.Affine, nir.Linear)) and len(pred[w]) == 1 and succ[w] == pred[w]:
            n_name = pred[w][0]
            if isinstance(nodes[n_name], (nir.LIF, nir.IF, nir.CubaLIF)):
                if n_name in recurrent:
                    raise NIRImportError(f"{source}: node '{n_name}' has two recurrent connections ('{recurrent[n_name]}',"
                                         f" '{w}'); one is supported")
                recurrent[n_name] = w
                succ[n_name].remove(w)
                pred[n_name].remove(w)
                succ[w], pred[w] = [], []
    # the chain from the input
    chain: list[str] = []
    cur = inputs[0]
    seen = {cur}
    while True:
        chain.append(cur)
        if isinstance(nodes[cur], nir.Output):
            break
        if len(succ[cur]) != 1:
            kind = type(nodes[cur]).__name__
            what = "feeds nothing" if not succ[cur] else f"feeds {len(succ[cur])} nodes ({', '.join(succ[cur])})"
            raise NIRImportError(f"{source}: node '{cur}' ({kind}) {what}; only a chain from Input to Output (plus a "
                                 f"recurrent Affine/Linear back into a spiking node) is supported")
        nxt = succ[cur][0]
        if len(pred[nxt]) != 1:
            raise NIRImportError(f"{source}: node '{nxt}' ({type(nodes[nxt]).__name__}) has {len(pred[nxt])} inputs "
                                 f"({', '.join(pred[nxt])}); only a chain (plus a recurrent Affine/Linear back into a "
                                 f"spiking node) is supported")
        if nxt in seen:
            raise NIRImportError(f"{source}: node '{nxt}' closes a cycle that is not a recurrent Affine/Linear into a "
                                 f"spiking node")
        seen.add(nxt)
        cur = nxt
    left = [k for k in nodes if k not in seen and k not in recurrent.values()]
    if left:
        raise NIRImportError(f"{source}: node '{left[0]}' ({type(nodes[left[0]]).__name__}) is not on the path from the "
                             f"Input to the Output")
    # time step
    if dt is None:
        if isinstance(meta.get("dt"), (int, float)) and not isinstance(meta.get("dt"), bool):
            dt = float(meta["dt"])
        elif any(isinstance(nodes[k], (nir.LIF, nir.CubaLIF, nir.LI)) for k in chain):
            raise NIRImportError(f"{source}: the graph has time constants but records no time step; give dt "
                                 f"(--dt SECONDS; the NIR paper's 01_lif and 03_rnn graphs use 1e-4)")
        else:
            dt = 1.0
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        raise NIRImportError(f"{source}: dt {bounded(dt)} is not a number") from None
    if not (np.isfinite(dt) and dt > 0):
        raise NIRImportError(f"{source}: dt {dt!r}, expected a positive number of seconds")
    if time_steps is None and ours and isinstance(meta.get("time_steps"), (int, np.integer)):
        time_steps = int(meta["time_steps"])
    if time_steps is not None and (isinstance(time_steps, bool) or int(time_steps) != time_steps or time_steps < 1):
        raise NIRImportError(f"{source}: time_steps {bounded(time_steps)}, expected a positive integer")
    # the nodes
    first = nodes[chain[0]]
    shape = _shape_of(getattr(first, "input_type", None), f"node '{chain[0]}' (Input)") or \
        _shape_of(getattr(first, "output_type", None), f"node '{chain[0]}' (Input)")
    if shape is None:
        raise NIRImportError(f"{source}: node '{chain[0]}' (Input) has no shape")
    out: list = [Input(shape)]
    names: list[str] = [chain[0]]
    for name in chain[1:]:
        node = nodes[name]
        kind = type(node).__name__
        where = f"{source}: node '{name}' ({kind})"
        n = int(np.prod(shape))
        if isinstance(node, nir.Output):
            want = _shape_of(getattr(node, "output_type", None), where) or _shape_of(getattr(node, "input_type", None),
                                                                                   where)
            if want is not None and int(np.prod(want)) != n:
                raise NIRImportError(f"{where}: shape {want} does not match its input {shape}")
            break
        if isinstance(node, (nir.Affine, nir.Linear)):
            w = _arr(node.weight, "weight", where)
            if w.ndim != 2 or len(shape) != 1 or w.shape[1] != shape[0]:
                raise NIRImportError(f"{where}: weight {w.shape} does not take input of shape {shape}")
            b = _arr(node.bias, "bias", where).reshape(-1) if isinstance(node, nir.Affine) and node.bias is not None \
                else None
            if b is not None and b.shape != (w.shape[0],):
                raise NIRImportError(f"{where}: bias of shape {b.shape} for {w.shape[0]} outputs")
            out.append(Affine(w, b))
        elif isinstance(node, nir.Conv2d):
            w = _arr(node.weight, "weight", where)
            if w.ndim != 4 or len(shape) != 3:
                raise NIRImportError(f"{where}: weight {w.shape} on input {shape}: only (C, H, W) inputs and "
                                     f"(out, in, kh, kw) weights are supported")
            stride = _pair(node.stride, "stride", where)
            dilation = _pair(node.dilation, "dilation", where)
            pad = node.padding
            if isinstance(pad, (str, bytes)):
                pad = pad.decode() if isinstance(pad, bytes) else pad
                if pad == "valid":
                    padding = (0, 0)
                elif pad == "same" and stride == (1, 1) and all(dilation[j] * (w.shape[2 + j] - 1) % 2 == 0
                                                                 for j in (0, 1)):
                    padding = tuple(dilation[j] * (w.shape[2 + j] - 1) // 2 for j in (0, 1))
                else:
                    raise NIRImportError(f"{where}: padding {pad!r} with stride {stride} and kernel "
                                         f"{w.shape[2:]} needs asymmetric padding, which is not supported")
            else:
                padding = _pair(pad, "padding", where)
            groups = int(node.groups)
            b = _arr(node.bias, "bias", where).reshape(-1) if node.bias is not None else None
            if b is not None and b.size == 1 and w.shape[0] != 1:
                b = np.full(w.shape[0], float(b[0]))
            out.append(Conv2d(w, b, stride, padding, dilation, groups))
        elif isinstance(node, nir.Flatten):
            declared = _shape_of(getattr(node, "output_type", None), where)
            start, end = int(node.start_dim), int(node.end_dim)
            full = (start == 0 and end in (-1, len(shape) - 1)) or (declared is not None and len(declared) == 1
                                                                     and declared[0] == n)
            if len(shape) == 1:
                continue  # a no-op on a vector
            if not full:
                raise NIRImportError(f"{where}: start_dim {start}, end_dim {end} on shape {shape}: only a flatten to "
                                     f"a vector is supported")
            out.append(Flatten())
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            if len(shape) != 3:
                raise NIRImportError(f"{where}: pooling needs a (C, H, W) input, got {shape}")
            cls = SumPool2d if isinstance(node, nir.SumPool2d) else AvgPool2d
            out.append(cls(_pair(node.kernel_size, "kernel_size", where), _pair(node.stride, "stride", where),
                           _pair(node.padding, "padding", where)))
        else:  # neurons
            neuron, gain = _neuron(node, name, shape, dt, reset)
            rec_name = recurrent.get(name)
            w_rec, b_rec = None, None
            if rec_name is not None:
                rnode = nodes[rec_name]
                rwhere = f"{source}: node '{rec_name}' ({type(rnode).__name__})"
                w_rec = _arr(rnode.weight, "weight", rwhere)
                if w_rec.shape != (n, n):
                    raise NIRImportError(f"{rwhere}: recurrent weight {w_rec.shape} for {n} neurons")
                if isinstance(rnode, nir.Affine) and rnode.bias is not None:
                    b_rec = _arr(rnode.bias, "bias", rwhere).reshape(-1)
                    b_rec = b_rec if np.any(b_rec) else None
            if np.all(np.abs(gain - 1.0) <= GAIN_ONE_TOLERANCE):
                gain = np.ones_like(gain)
            synapse = out[-1] if isinstance(out[-1], (Affine, Conv2d)) else None
            if b_rec is not None and not isinstance(synapse, Affine):
                raise NIRImportError(f"{source}: node '{rec_name}': a recurrent bias needs an Affine/Linear feeding "
                                     f"'{name}' to be added to (found {type(out[-1]).__name__})")
            foldable = synapse is not None
            if isinstance(synapse, Conv2d):
                per = gain.reshape(shape[0], -1)
                foldable = bool(np.all(per == per[:, :1]))
            if foldable:
                if np.any(gain != 1.0) or b_rec is not None:
                    g = gain if isinstance(synapse, Affine) else gain.reshape(shape[0], -1)[:, 0]
                    out[-1] = _scale_rows(synapse, g, b_rec)
                if w_rec is not None and np.any(gain != 1.0):
                    w_rec = w_rec * gain[:, None]
            elif np.any(gain != 1.0):  # kept as a scale; it multiplies the recurrent current too
                out.append(InputGain(np.asarray(_compact(gain)).reshape(1, -1)))
                names.append(name + ".gain")
            out.append(neuron)
            names.append(name)
            if w_rec is not None:
                out.append(Recurrent(w_rec))
                names.append(rec_name)
            continue
        names.append(name)
        try:
            shape = FloatGraph(tuple(out)).shapes()[-1]
        except GraphError as exc:
            raise NIRImportError(f"{where}: {exc}") from None
    last = out[-1]
    readout = meta.get("readout") if ours and meta.get("readout") in READOUTS else None
    if readout is None:
        readout = ("spikes" if isinstance(last, (LIF, CubaLIF)) or isinstance(last, Recurrent)
                   else "potential" if isinstance(last, LI) else "mean")
    graph = FloatGraph(tuple(out), dt=dt, time_steps=time_steps, readout=readout,
                       metadata={"source": source, "producer": str(meta.get("producer", "")), "node_names": names,
                                 "reset_override": reset})
    try:
        graph.validate()
    except GraphError as exc:
        raise NIRImportError(f"{source}: {exc}") from None
    return graph


# --------------------------------------------------------------------------- FloatGraph -> NIR


def _export_error(msg: str) -> Exception:
    return NIRExportError(msg)


def _gain_metadata(record: Optional[dict]) -> Optional[dict]:
    """The NIR neuron metadata of a gain :func:`~neurodeploy.graph.fold_gains` folded (None when it was constant)."""
    if record is None or record["spread"] == 0:
        return None
    per_step = np.asarray(record["per_step"], dtype=np.float32)
    mean = record["mean"]
    return {"gain_per_step": per_step, "gain_folded": float(mean) if np.ndim(mean) == 0 else
            np.asarray(mean, dtype=np.float32), "gain_spread": float(record["spread"]),
            "gain_note": "the DLIF per-step gain p[t] is time varying; its mean is folded into the "
                         "incoming weights (exact only for a constant gain)"}


def graph_to_nir(graph: FloatGraph, *, fold_r: bool = True, time_steps: Optional[int] = None):
    """The ``nir.NIRGraph`` of ``graph`` (conventions of :mod:`neurodeploy.io.nir_export`).

    ``time_steps``: steps over which a time-varying InputGain is averaged
    (default ``graph.time_steps``, else the gain's length). Raises
    :class:`~neurodeploy.io.nir_export.NIRExportError` for what NIR cannot say
    exactly (reset by subtraction, a CUBA neuron without a finite time
    constant, a gain or bias without a synapse to fold it into).
    """
    import nir

    steps = time_steps if time_steps is not None else graph.time_steps
    try:
        # NIR nodes are time invariant: every gain's mean over the steps goes into the synapse before it
        # (the one gain fold, shared with deployment); the per-step values stay in the neuron's metadata
        graph = fold_gains(dataclasses.replace(graph, time_steps=steps) if steps != graph.time_steps else graph)
    except GraphError as exc:
        raise _export_error(str(exc)) from None
    shapes = graph.validate().shapes()
    dt = float(graph.dt)
    nodes: dict = {"input": nir.Input(input_type={"input": np.array(shapes[0])})}
    edges: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    last = "input"
    pending: Optional[tuple[object, tuple[int, ...]]] = None  # (synapse node, its input shape)

    def name_of(base: str) -> str:
        k = counts.get(base, 0)
        counts[base] = k + 1
        return f"{base}{k}"

    def add(name: str, node) -> None:
        nonlocal last
        nodes[name] = node
        edges.append((last, name))
        last = name

    def synapse(node, in_shape, factor: np.ndarray, extra_bias: Optional[np.ndarray] = None,
                meta: Optional[dict] = None):
        meta = dict(meta or {})
        scalar = factor.size and np.all(factor == factor.reshape(-1)[0])
        if scalar and float(factor.reshape(-1)[0]) != 1.0:
            meta["scale_folded"] = float(factor.reshape(-1)[0])
        elif not scalar:
            meta["scale_folded"] = factor.astype(np.float32)
        if isinstance(node, Affine):
            f = np.broadcast_to(factor, (node.weight.shape[0],))
            w = node.weight * f[:, None]
            b = np.zeros(node.weight.shape[0]) if node.bias is None else node.bias
            b = (b + (0.0 if extra_bias is None else extra_bias)) * f
            return nir.Affine(weight=w.astype(np.float32), bias=b.astype(np.float32), metadata=meta)
        c = node.weight.shape[0]
        f = _per_channel(factor, c, "a per-neuron scale")
        b = np.zeros(c) if node.bias is None else node.bias
        if extra_bias is not None:
            b = b + _per_channel(extra_bias, c, "a neuron bias")
        weight = node.weight * f[:, None, None, None]
        if node.groups > 1:  # nir infers a grouped conv's input channels wrongly: the equivalent dense conv
            meta["groups_expanded"] = int(node.groups)
            weight = _ungroup(weight, int(node.groups), int(in_shape[0]))
        return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=weight.astype(np.float32),
                          stride=tuple(node.stride), padding=tuple(node.padding), dilation=tuple(node.dilation),
                          groups=1, bias=(b * f).astype(np.float32), metadata=meta)

    def flush(meta: Optional[dict] = None) -> None:
        nonlocal pending
        if pending is not None:
            node, in_shape = pending
            add(name_of("fc" if isinstance(node, Affine) else "conv"), synapse(node, in_shape, np.ones(1), None, meta))
            pending = None

    nlist = graph.nodes
    i = 1
    while i < len(nlist):
        node = nlist[i]
        in_shape = shapes[i - 1]
        if isinstance(node, (Affine, Conv2d)):
            flush()
            pending = (node, in_shape)
            i += 1
            continue
        if isinstance(node, Flatten):
            if pending is not None:
                raise _export_error("Flatten between a synapse and its neurons is not supported")
            if len(in_shape) > 1:
                add(name_of("flatten"), nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1))
            i += 1
            continue
        if isinstance(node, (SumPool2d, AvgPool2d)):
            flush()
            cls = nir.SumPool2d if isinstance(node, SumPool2d) else nir.AvgPool2d
            add(name_of("pool"), cls(kernel_size=np.array(node.kernel), stride=np.array(node.stride),
                                     padding=np.array(node.padding)))
            i += 1
            continue
        factor = None
        shape = shapes[i]
        n = int(np.prod(shape))
        gain_meta = _gain_metadata(gain_record(graph, i))
        rec = nlist[i + 1] if i + 1 < len(nlist) and isinstance(nlist[i + 1], Recurrent) else None
        factor = np.ones(n) if factor is None else factor
        nnode, extra_factor, extra_bias = _nir_neuron(nir, node, shape, dt, fold_r, i)
        if gain_meta:
            nnode.metadata.update(gain_meta)
        factor = factor * extra_factor
        if extra_bias is not None:  # the synapse adds it before its scale
            if np.any(factor == 0):
                raise _export_error(f"node {i} ({type(node).__name__}): a bias behind a zero input gain cannot be "
                                    f"folded into the synapse")
            extra_bias = extra_bias / factor
        if pending is None and (np.any(factor != 1.0) or extra_bias is not None):
            raise _export_error(f"node {i} ({type(node).__name__}): its input scale / bias needs a synapse in front to "
                                f"be folded into")
        if rec is not None:
            if pending is None:
                raise _export_error(f"node {i}: a recurrent layer without input weights cannot be exported")
            syn_node, syn_shape = pending
            pending = None
            if not isinstance(syn_node, Affine):
                raise _export_error(f"node {i}: a recurrent layer after a conv cannot be exported")
            sub_nodes = {
                "input": nir.Input(input_type={"input": np.array(syn_shape)}),
                "w_in": synapse(syn_node, syn_shape, factor, extra_bias),
                "neurons": nnode,
                "w_rec": synapse(Affine(rec.weight, None), shape, factor, None,
                                 {"recurrent": "spikes of step t-1 enter step t"}),
                "output": nir.Output(output_type={"output": np.array(shape)}),
            }
            sub_edges = [("input", "w_in"), ("w_in", "neurons"), ("neurons", "w_rec"), ("w_rec", "neurons"),
                         ("neurons", "output")]
            add(name_of("rnn"), nir.NIRGraph(nodes=sub_nodes, edges=sub_edges, type_check=True,
                                            metadata={"neurodeploy_layer": "RecurrentSpikingNeurons",
                                                      "recurrence": "I[t] = W_in x[t] + W_rec s[t-1]"}))
            i += 2
            continue
        nname = name_of("cuba" if isinstance(node, CubaLIF) else "li" if isinstance(node, LI) else "lif")
        if pending is not None:
            syn_node, syn_shape = pending
            pending = None
            add(name_of("fc" if isinstance(syn_node, Affine) else "conv"),
                synapse(syn_node, syn_shape, factor, extra_bias))
        add(nname, nnode)
        i += 1
    if pending is not None:  # linear readout: a synapse without neurons
        flush({"readout": "non-spiking linear readout, averaged over time"})
    nodes["output"] = nir.Output(output_type={"output": np.array(shapes[-1])})
    edges.append((last, "output"))
    meta = {"producer": "neurodeploy", "dt": dt, "readout": graph.readout, "fold_r": bool(fold_r),
            "input": "one encoded time step (after the encoder), per sample, no batch axis",
            "norse_import": "norse.torch.from_nir(graph, dt=1.0); run one step per call, feeding the state back"}
    if steps is not None:
        meta["time_steps"] = int(steps)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)


def _ungroup(weight: np.ndarray, groups: int, in_channels: int) -> np.ndarray:
    """A grouped conv's ``(out, in/groups, kh, kw)`` weight as the block-diagonal ``(out, in, kh, kw)`` one."""
    out_c, per_in = weight.shape[:2]
    per_out = out_c // groups
    full = np.zeros((out_c, in_channels, *weight.shape[2:]), dtype=weight.dtype)
    for g in range(groups):
        full[g * per_out:(g + 1) * per_out, g * per_in:(g + 1) * per_in] = weight[g * per_out:(g + 1) * per_out]
    return full


def _per_channel(a: np.ndarray, c: int, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size == 1:
        return np.full(c, float(a[0]))
    per = a.reshape(c, -1)
    if not np.all(per == per[:, :1]):
        raise _export_error(f"{what} that varies within a conv channel cannot be folded into the conv")
    return per[:, 0]


def _full(shape: tuple[int, ...], value) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1) if np.size(value) > 1 else
                           np.asarray(value, dtype=np.float64), (int(np.prod(shape)),)).reshape(shape).astype(np.float32)


def _nir_neuron(nir, node, shape: tuple[int, ...], dt: float, fold_r: bool, index: int):
    """(NIR node, factor for the synapse, bias to add to the synapse or None) of one neuron node."""
    where = f"node {index} ({type(node).__name__})"
    leak = np.asarray(node.leak, dtype=np.float64)
    if np.any(leak < 0) or np.any(leak > 1):
        raise _export_error(f"{where}: leak {bounded(leak)} outside [0, 1]")
    if getattr(node, "reset", "zero") != "zero":
        raise _export_error(f"{where}: reset {node.reset!r}: NIR has no reset-by-subtraction field (it resets to "
                            f"v_reset)")
    bias = None if node.bias is None or not np.any(node.bias) else np.asarray(node.bias, dtype=np.float64)
    zeros = _full(shape, 0.0)
    meta: dict = {"leak": _meta_value(leak), "dt": dt}
    if not isinstance(node, LI):
        meta["threshold"] = _meta_value(node.threshold)
        meta["discretisation"] = "forward Euler: v = leak*v + I; spike v > threshold; v reset to 0"
    if isinstance(node, CubaLIF):
        cleak = np.asarray(node.current_leak, dtype=np.float64)
        if np.any(leak >= 1.0) or np.any(cleak >= 1.0) or np.any(cleak < 0):
            raise _export_error(f"{where}: a CUBA neuron with leak {bounded(leak)} / current_leak {bounded(cleak)} "
                                f"equal to 1 has an infinite NIR time constant")
        tau_mem, tau_syn = dt / (1.0 - leak), dt / (1.0 - cleak)
        meta.update(current_leak=_meta_value(cleak),
                    discretisation="i = current_leak*i + I; v = leak*v + i (new i, Loihi's and Norse's order); "
                                   "spike v > threshold; v reset to 0")
        v_leak = zeros if bias is None else _full(shape, bias * tau_mem / dt)
        return nir.CubaLIF(tau_syn=_full(shape, tau_syn), tau_mem=_full(shape, tau_mem), r=_full(shape, tau_mem / dt),
                           v_leak=v_leak, v_threshold=_full(shape, node.threshold), v_reset=zeros,
                           w_in=_full(shape, tau_syn / dt), metadata=meta), np.ones(1), None
    if np.any(leak >= 1.0):
        if not np.all(leak >= 1.0):
            raise _export_error(f"{where}: some neurons have leak 1 and others not; NIR needs one node type per layer")
        # IF / I: v' = v + dt*r*I with r = 1: the synapse carries 1/dt; a bias joins the synapse's bias
        # (the bias returned is what the NIR current needs added: v' = v + dt*I, so bias / dt)
        extra = None if bias is None else np.broadcast_to(bias.reshape(-1), (int(np.prod(shape)),)) / dt
        if isinstance(node, LI):
            return nir.I(r=_full(shape, 1.0), metadata=meta), np.full(1, 1.0 / dt), extra
        return nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, node.threshold), v_reset=zeros, metadata=meta), \
            np.full(1, 1.0 / dt), extra
    tau = dt / (1.0 - leak)
    v_leak = zeros if bias is None else _full(shape, bias * tau / dt)
    factor = np.ones(1)
    if fold_r:
        factor = np.broadcast_to(tau / dt, (int(np.prod(shape)),)) if leak.size > 1 else np.full(1, float(tau / dt))
        meta["r_folded"] = _meta_value(tau / dt)
        meta["r_note"] = "r = tau/dt is folded into the incoming synapse (weights and bias times tau/dt), r = 1"
    r = _full(shape, 1.0) if fold_r else _full(shape, tau / dt)
    cls = nir.LI if isinstance(node, LI) else None
    if cls is not None:
        return nir.LI(tau=_full(shape, tau), r=r, v_leak=v_leak, metadata=meta), factor, None
    return nir.LIF(tau=_full(shape, tau), r=r, v_leak=v_leak, v_threshold=_full(shape, node.threshold), v_reset=zeros,
                   metadata=meta), factor, None


def _meta_value(a) -> Union[float, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    return float(a.reshape(-1)[0]) if a.size == 1 or np.all(a == a.reshape(-1)[0]) else a.astype(np.float32)
