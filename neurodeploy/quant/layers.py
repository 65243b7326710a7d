"""The quantizer's view of a :class:`~neurodeploy.graph.FloatGraph`: one entry per Loihi layer.

A Loihi layer is one synapse (dense or conv, optionally recurrent dense) into
one neuron population. A float graph may put several stateless linear nodes
between two neuron nodes (pooling, flatten, a per-channel map, several
synapses); a chain of linear maps is one linear map, so
:func:`graph_layers` composes each chain into the single synapse Loihi
runs, exactly (in float64), or refuses it with a one-line
:class:`~neurodeploy.quant.quantizer.QuantizationError` naming the node:

* ``[Flatten] Affine`` and a lone ``Conv2d`` are taken as they are;
* a chain that ends in an ``Affine`` (pooling, convolutions, flattens and
  affine maps before it) becomes one dense matrix: the chain applied to the
  unit vectors of its input (its linear part) and to zero (its offset);
* a chain that ends in a ``Conv2d``, with only per-channel maps before it
  (``SumPool2d``, ``AvgPool2d``, a depthwise ``Conv2d`` such as the walker's
  normalisation), becomes one conv: a pool of kernel ``k`` and stride ``s``
  in front of a conv of kernel ``K``, stride ``S``, padding ``P`` and
  dilation ``D`` is a conv of kernel ``s*D*(K-1) + k``, stride ``s*S``,
  padding ``s*P + p`` (dilation 1), exact when the conv's zero padding falls
  on positions the pool read as padding too; checked on random inputs
  before it is used, otherwise refused;
* a pool with no synapse after it (netx has no pooling layer) and a general
  conv feeding another synapse without neurons between them are refused.

Biases the composition produces (a per-channel map's bias passed through a
padded conv differs at the borders) are per neuron, as Loihi's bias is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..graph import LI, Affine, AvgPool2d, Conv2d, Flatten, FloatGraph, InputGain, Recurrent, SumPool2d

__all__ = ["GraphLayer", "graph_layers"]

_LINEAR = (Flatten, SumPool2d, AvgPool2d, Affine, Conv2d)
_CHUNK = 512          # unit vectors per forward pass when a chain is expanded into a matrix


def _t(arr) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, dtype=np.float64))   # a writable float64 copy


def _label(graph: FloatGraph, i: int) -> str:
    return f"node {i} ({type(graph.nodes[i]).__name__})"


@dataclass
class GraphLayer:
    """One Loihi layer of a graph.

    ``kind``: ``"dense"``, ``"conv"`` or ``"dense_rec"``. ``weight`` float64
    (``(out, in)`` or ``(out, in/groups, kh, kw)``); ``bias`` one per output
    (dense) or per channel (conv), or None; ``neuron_bias`` one per neuron
    (flat, C-order) from the composition and the neuron node's own bias, or
    None. ``conv``: stride/padding/dilation/groups of a conv layer.
    ``in_shape``: the layer's input (the previous layer's output).
    ``node``: the neuron node's index (for a linear readout: its last node).
    ``neuron``: the neuron node (None for a linear readout).
    """

    kind: str
    node: int
    weight: np.ndarray
    bias: Optional[np.ndarray]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    neuron: object = None
    conv: Optional[Conv2d] = None
    neuron_bias: Optional[np.ndarray] = None
    weight_rec: Optional[np.ndarray] = None
    synapse_nodes: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)


def _forward(graph: FloatGraph, chain: list[int], x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
    """The stateless nodes ``chain`` on a batch ``(N, *shape)`` in float64."""
    for i in chain:
        node = graph.nodes[i]
        if isinstance(node, Flatten):
            x = x.reshape(x.shape[0], -1)
        elif isinstance(node, Affine):
            b = _t(node.bias) if (with_bias and node.bias is not None) else None
            x = F.linear(x, _t(node.weight), b)
        elif isinstance(node, Conv2d):
            b = _t(node.bias) if (with_bias and node.bias is not None) else None
            x = F.conv2d(x, _t(node.weight), b, stride=tuple(node.stride), padding=tuple(node.padding),
                         dilation=tuple(node.dilation), groups=int(node.groups))
        else:
            c = x.shape[1]
            kh, kw = (int(k) for k in node.kernel)
            ones = x.new_ones((c, 1, kh, kw))
            x = F.conv2d(x, ones, stride=tuple(node.stride), padding=tuple(node.padding), groups=c)
            if isinstance(node, AvgPool2d):
                x = x / float(kh * kw)
    return x


def _as_matrix(graph: FloatGraph, chain: list[int], in_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Weight ``(out, prod(in_shape))`` and offset ``(out,)`` of the linear chain (C-order)."""
    n = int(np.prod(in_shape))
    with torch.no_grad():
        offset = _forward(graph, chain, torch.zeros((1, *in_shape), dtype=torch.float64)).reshape(-1)
        cols = []
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            eye = torch.zeros((stop - start, n), dtype=torch.float64)
            eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            cols.append(_forward(graph, chain, eye.reshape(stop - start, *in_shape), with_bias=False)
                        .reshape(stop - start, -1))
    return torch.cat(cols).T.contiguous().numpy(), offset.numpy()


def _channelwise(node, channels: int):
    """(kernel per channel (C, kh, kw), stride, padding) of a per-channel map, or None if it mixes channels."""
    if isinstance(node, (SumPool2d, AvgPool2d)):
        kh, kw = (int(k) for k in node.kernel)
        value = 1.0 if isinstance(node, SumPool2d) else 1.0 / (kh * kw)
        return np.full((channels, kh, kw), value), tuple(node.stride), tuple(node.padding)
    if (isinstance(node, Conv2d) and node.groups == channels and node.weight.shape[0] == channels
            and node.weight.shape[1] == 1 and tuple(node.dilation) == (1, 1)):
        return np.asarray(node.weight[:, 0], dtype=np.float64), tuple(node.stride), tuple(node.padding)
    return None


def _compose_conv(graph: FloatGraph, shapes, pre: int, conv: Conv2d, conv_out: tuple, error) -> Conv2d:
    """The conv ``conv`` after the per-channel map at node ``pre`` as one conv (module docstring)."""
    a_in = tuple(shapes[pre - 1])
    a = _channelwise(graph.nodes[pre], a_in[0])
    if a is None:
        raise error(f"{_label(graph, pre)}: feeds a Conv2d without neurons between them; only pooling and "
                    f"per-channel (depthwise) maps fold into a conv")
    ka, sa, pa = a
    w = np.asarray(conv.weight)
    out_c, in_per_group = w.shape[:2]
    per_out = out_c // conv.groups
    chan = (np.arange(out_c)[:, None] // per_out) * in_per_group + np.arange(in_per_group)[None, :]
    k_for = ka[chan]                                             # (out, in/groups, kh_a, kw_a)
    kb = w.shape[2:]
    sb, pb, db = tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation)
    size = [sa[d] * db[d] * (kb[d] - 1) + ka.shape[1 + d] for d in range(2)]
    out = np.zeros((out_c, in_per_group, size[0], size[1]))
    for jh in range(kb[0]):
        for jw in range(kb[1]):
            oh, ow = sa[0] * db[0] * jh, sa[1] * db[1] * jw
            out[:, :, oh:oh + ka.shape[1], ow:ow + ka.shape[2]] += w[:, :, jh:jh + 1, jw:jw + 1] * k_for
    stride = (sa[0] * sb[0], sa[1] * sb[1])
    padding = (sa[0] * pb[0] + pa[0], sa[1] * pb[1] + pa[1])
    merged = Conv2d(weight=out, stride=stride, padding=padding, groups=conv.groups)
    where = f"{_label(graph, pre)} folded into the Conv2d after it"
    for d in range(2):
        got = (a_in[1 + d] + 2 * padding[d] - size[d]) // stride[d] + 1
        if got != conv_out[1 + d]:
            raise error(f"{where}: the composed conv would give {got} outputs along axis {d + 1}, the graph "
                        f"{conv_out[1 + d]} (the conv's zero padding is not the pool's); not exact")
    # exact only if the conv's padding lands where the pool read padding too: check on random inputs
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.standard_normal((2, *a_in)))
    with torch.no_grad():
        want = _forward(graph, [pre], x, with_bias=False)
        want = F.conv2d(want, _t(w), None, stride=sb, padding=pb, dilation=db, groups=conv.groups)
        got = F.conv2d(x, _t(out), None, stride=stride, padding=padding, groups=conv.groups)
    scale = float(want.abs().max()) or 1.0
    if got.shape != want.shape or not torch.allclose(got, want, rtol=0, atol=1e-9 * scale):
        raise error(f"{where}: not exact (the conv's zero padding {pb} reaches inputs the pool "
                    f"{tuple(graph.nodes[pre].kernel) if hasattr(graph.nodes[pre], 'kernel') else ''} summed); "
                    f"deploy the pool and conv without conv padding, or put neurons between them")
    return merged


def _compose(graph: FloatGraph, shapes, chain: list[int], target: int, dense: bool, error):
    """(kind, weight, bias, neuron_bias, conv node, synapse nodes) of the linear chain before node ``target``."""
    synapses = [i for i in chain if isinstance(graph.nodes[i], (Affine, Conv2d))]
    if not synapses:
        pools = [i for i in chain if isinstance(graph.nodes[i], (SumPool2d, AvgPool2d))]
        if pools:
            raise error(f"{_label(graph, pools[0])}: pooling must be followed by an Affine or Conv2d it folds "
                        f"into; netx cannot deploy pooling as a layer of its own")
        raise error(f"{_label(graph, target)}: neurons without a synapse (Affine or Conv2d) in front of them")
    last = synapses[-1]
    after = [i for i in chain if i > last and not isinstance(graph.nodes[i], Flatten)]
    if after:
        raise error(f"{_label(graph, after[0])}: pooling after the last synapse before {_label(graph, target)}; "
                    f"a pool folds only into a synapse after it")
    in_shape = tuple(shapes[chain[0] - 1])
    rest = [i for i in chain if i < last]
    node = graph.nodes[last]
    plain = all(isinstance(graph.nodes[i], Flatten) for i in rest)
    if plain and isinstance(node, Affine):
        return "dense", node.weight, node.bias, None, None, (last,)
    if plain and isinstance(node, Conv2d) and not rest and not dense:
        return "conv", node.weight, node.bias, None, node, (last,)
    if isinstance(node, Affine) or dense:
        w, offset = _as_matrix(graph, [i for i in chain if i <= last], in_shape)
        return "dense", w, offset, None, None, tuple(synapses)
    if any(isinstance(graph.nodes[i], Flatten) for i in rest):
        raise error(f"{_label(graph, last)}: a Conv2d after a Flatten")
    merged = node
    for pre in reversed(rest):
        merged = _compose_conv(graph, shapes, pre, merged, tuple(shapes[last]), error)
    with torch.no_grad():
        offset = _forward(graph, chain, torch.zeros((1, *in_shape), dtype=torch.float64)).reshape(-1).numpy()
    bias = None
    per_c = offset.reshape(merged.weight.shape[0], -1)
    if np.all(per_c == per_c[:, :1]):
        bias = per_c[:, 0].copy()            # the same for every position: a channel bias
        offset = None
    return "conv", merged.weight, bias, offset, merged, tuple(synapses)


def graph_layers(graph: FloatGraph, error) -> tuple[list[GraphLayer], Optional[GraphLayer]]:
    """The spiking layers of ``graph`` and its integrator readout (or None); see the module docstring.

    ``graph`` has no ``InputGain`` left (fold them first). ``error`` is the
    exception class of the messages (the quantizer's). The readout is a
    trailing synapse chain with ``graph.readout == "mean"`` or a last LI node
    with leak 1 and ``graph.readout == "potential"``; other endings that a
    spike count or an integrator cannot read are refused.
    """
    shapes = [tuple(s) for s in graph.shapes()]
    nodes = graph.nodes
    layers: list[GraphLayer] = []
    readout: Optional[GraphLayer] = None
    chain: list[int] = []
    i = 1
    while i < len(nodes):
        node = nodes[i]
        if isinstance(node, _LINEAR):
            chain.append(i)
            i += 1
            continue
        if isinstance(node, InputGain):
            raise error(f"{_label(graph, i)}: fold the gains first (fold_gains)")
        if isinstance(node, LI):
            if i != len(nodes) - 1:
                raise error(f"{_label(graph, i)}: a non-spiking integrator can only be the graph's last node "
                            f"(its readout)")
            if graph.readout != "potential":
                raise error(f"{_label(graph, i)}: an LI output is read as its potential; graph.readout is "
                            f"{graph.readout!r}, expected 'potential'")
            kind, w, b, nb, _, syn = _compose(graph, shapes, chain, i, True, error)
            readout = GraphLayer("dense", i, w, b, tuple(shapes[chain[0] - 1]), shapes[i], neuron=node,
                                 synapse_nodes=syn)
            chain = []
            i += 1
            continue
        # LIF / CubaLIF (Recurrent nodes are consumed with their neuron node)
        kind, w, b, nb, conv, syn = _compose(graph, shapes, chain, i, False, error)
        rec = None
        if i + 1 < len(nodes) and isinstance(nodes[i + 1], Recurrent):
            if kind != "dense":
                raise error(f"{_label(graph, i + 1)}: recurrent weights on a conv layer cannot be deployed "
                            f"(netx has recurrent dense layers only)")
            rec, kind = nodes[i + 1].weight, "dense_rec"
        layers.append(GraphLayer(kind, i, w, b, tuple(shapes[chain[0] - 1]), shapes[i], neuron=node, conv=conv,
                                 neuron_bias=nb, weight_rec=rec, synapse_nodes=syn))
        chain = []
        i += 2 if rec is not None else 1
    if chain:
        stateful = [j for j in chain if not isinstance(nodes[j], Flatten)]
        if not stateful:
            if graph.readout == "potential":
                raise error(f"{_label(graph, len(nodes) - 1)}: readout 'potential' needs a last LI node")
        elif graph.readout == "mean":
            kind, w, b, nb, _, syn = _compose(graph, shapes, chain, len(nodes) - 1, True, error)
            readout = GraphLayer("dense", len(nodes) - 1, w, b, tuple(shapes[chain[0] - 1]), shapes[-1],
                                 synapse_nodes=syn)
        elif graph.readout == "potential":
            raise error(f"{_label(graph, len(nodes) - 1)}: readout 'potential' reads a potential, the graph ends "
                        f"in a stateless node; end it in an LI node or use readout 'mean'")
        else:
            raise error("the graph ends in synapses without neurons; with readout 'spikes' the output layer must "
                        "spike")
    elif readout is None and graph.readout == "potential":
        raise error(f"{_label(graph, len(nodes) - 1)}: readout 'potential' needs a last LI node, the graph ends "
                    f"in spiking neurons (use readout 'spikes')")
    if not layers and readout is None:
        raise error("the graph has no layer to deploy")
    return layers, readout

