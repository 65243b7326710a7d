"""Run a :class:`~neurodeploy.graph.FloatGraph` in torch, exactly as :mod:`neurodeploy.graph` defines it.

:class:`GraphModule` takes time-major input ``(T, B, *input_shape)`` (one
encoded step per ``t``, the graph's ``Input`` shape per sample) and returns
the last node's output sequence ``(T, B, ...)``: spikes of a spiking neuron
node, ``v`` of an :class:`~neurodeploy.graph.LI` node, or the values of a
synapse / pooling / flatten node. :meth:`GraphModule.logits` turns that into
``(B, ...)`` per ``graph.readout``.

Semantics (see :mod:`neurodeploy.graph`): a node's input at step ``t`` is its
predecessor's output at step ``t``; a :class:`~neurodeploy.graph.Recurrent`
node after a spiking node adds ``weight @ s[t-1]`` to that node's input at
step ``t`` (``s[-1] = 0``), joining the feed-forward current *before* an
:class:`~neurodeploy.graph.InputGain` in front of the neuron node (the gain
multiplies the whole current, as the DLIF layers do). Stateless nodes run on
all steps at once (time folded into the batch); neuron nodes step through
time.

Spikes use the project's surrogate (:func:`~neurodeploy.neurons.functional.spike_fn`:
strict ``v > threshold`` forward, Norse's triangle backward, width
``gamma``), so the module is differentiable for attacks and
quantization-aware use; the reset is not detached, as in the neuron modules.
Sum pooling is a grouped convolution with a kernel of ones (exact sums of
spikes, no divide-and-multiply rounding).

Recording (for calibration and checks): ``forward(x, record=True)`` also
returns, per neuron node index, ``"spikes"`` (spiking nodes) and ``"v"``
(the potential after the step's reset) and, for CUBA nodes, ``"i"``;
``currents=True`` adds ``"current"``: the current ``x`` arriving at the
neuron node at each step, recurrent part and any InputGain included, before
the neuron's own leak and bias. All recorded tensors are ``(T, B, *shape)``.
"""

from __future__ import annotations

from typing import Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..graph import (LIF, NEURON_NODES, Affine, AvgPool2d, Conv2d, CubaLIF, Flatten, FloatGraph, GraphError,
                     InputGain, Recurrent, SumPool2d)
from ..neurons.functional import spike_fn

__all__ = ["GraphModule", "neuron_indices"]

Records = dict[int, dict[str, torch.Tensor]]


class GraphModule(torch.nn.Module):
    """A torch module that runs ``graph`` (see the module docstring).

    Parameters:
        graph: the float graph; validated here (a bad graph raises
            :class:`~neurodeploy.graph.GraphError`).
        gamma: surrogate width. ``None``: each spiking node uses its mean
            threshold (the gradient then does not depend on the units of v);
            a float: every node; a mapping node index -> width.
        dtype: parameter and state dtype (``torch.float64`` for exact
            comparisons with references).
        trainable: the graph's arrays become trainable ``Parameter`` s;
            otherwise they are parameters with ``requires_grad=False``
            (gradients flow to the input only).
    """

    def __init__(self, graph: FloatGraph, *, gamma: Union[None, float, Mapping[int, float]] = None,
                 dtype: torch.dtype = torch.float32, trainable: bool = False) -> None:
        super().__init__()
        self.graph = graph
        self.shapes = [tuple(s) for s in graph.validate().shapes()]
        self.dtype = dtype
        self._tensors: dict[tuple[int, str], str] = {}
        last = graph.nodes[-1]
        if graph.readout == "potential" and isinstance(last, (LIF, CubaLIF)):
            raise GraphError(f"node {len(graph.nodes) - 1} ({type(last).__name__}): readout 'potential' needs a "
                             f"non-spiking last node (LI or a synapse) whose output is its value")
        for i, node in enumerate(graph.nodes):
            for name in ("weight", "bias", "leak", "current_leak", "threshold", "gain"):
                value = getattr(node, name, None)
                if value is None:
                    continue
                arr = np.array(value, dtype=np.float64)  # a writable copy
                if isinstance(node, NEURON_NODES):
                    shape = self.shapes[i]
                    arr = arr.reshape(()) if arr.size == 1 else arr.reshape(shape)
                attr = f"n{i}_{name}"
                self.register_parameter(attr, torch.nn.Parameter(torch.as_tensor(arr, dtype=dtype),
                                                                 requires_grad=trainable))
                self._tensors[(i, name)] = attr
        self._gamma: dict[int, float] = {}
        for i, node in enumerate(graph.nodes):
            if isinstance(node, (LIF, CubaLIF)):
                if gamma is None:
                    g = float(np.mean(np.abs(node.threshold)))
                    self._gamma[i] = g if g > 0 else 1.0
                elif isinstance(gamma, Mapping):
                    self._gamma[i] = float(gamma.get(i, 1.0))
                else:
                    self._gamma[i] = float(gamma)

    def _p(self, i: int, name: str) -> Optional[torch.Tensor]:
        attr = self._tensors.get((i, name))
        return None if attr is None else getattr(self, attr)

    # ------------------------------------------------------------------ running

    def forward(self, x: torch.Tensor, record: bool = False, currents: bool = False):
        """``(T, B, *input_shape)`` -> the last node's output ``(T, B, ...)``.

        With ``record`` or ``currents``: ``(output, records)``, ``records``
        a dict node index -> dict of ``(T, B, *shape)`` tensors (module docstring).
        """
        want = self.shapes[0]
        if x.dim() != len(want) + 2 or tuple(x.shape[2:]) != want:
            raise GraphError(f"input of shape {tuple(x.shape)}, expected (T, B, {', '.join(map(str, want))})")
        x = x.to(self.dtype)
        steps, batch = x.shape[:2]
        records: Records = {}
        nodes = self.graph.nodes
        i = 1
        while i < len(nodes):
            node = nodes[i]
            if isinstance(node, InputGain):
                gain_index = i
                i += 1
                node = nodes[i]
            else:
                gain_index = None
            if isinstance(node, NEURON_NODES):
                rec_index = i + 1 if i + 1 < len(nodes) and isinstance(nodes[i + 1], Recurrent) else None
                x = self._neurons(i, x, gain_index, rec_index, records if (record or currents) else None,
                                  record, currents)
                i = (rec_index if rec_index is not None else i) + 1
                continue
            x = self._stateless(i, node, x, steps, batch)
            i += 1
        if record or currents:
            return x, records
        return x

    def _stateless(self, i: int, node, x: torch.Tensor, steps: int, batch: int) -> torch.Tensor:
        if isinstance(node, Affine):
            return F.linear(x, self._p(i, "weight"), self._p(i, "bias"))
        if isinstance(node, Flatten):
            return x.reshape(steps, batch, -1)
        flat = x.reshape(steps * batch, *x.shape[2:])
        if isinstance(node, Conv2d):
            y = F.conv2d(flat, self._p(i, "weight"), self._p(i, "bias"), stride=tuple(node.stride),
                         padding=tuple(node.padding), dilation=tuple(node.dilation), groups=int(node.groups))
        elif isinstance(node, (SumPool2d, AvgPool2d)):
            c = flat.shape[1]
            kh, kw = (int(k) for k in node.kernel)
            ones = flat.new_ones((c, 1, kh, kw))
            y = F.conv2d(flat, ones, stride=tuple(node.stride), padding=tuple(node.padding), groups=c)
            if isinstance(node, AvgPool2d):
                y = y / float(kh * kw)
        else:  # pragma: no cover - validate() admits no other node here
            raise GraphError(f"node {i} ({type(node).__name__}): not runnable here")
        return y.reshape(steps, batch, *y.shape[1:])

    def _gain_at(self, gain_index: int, t: int, shape: tuple[int, ...]) -> torch.Tensor:
        g = self._p(gain_index, "gain")
        row = g[min(t, g.shape[0] - 1)]
        if row.dim() == 0 or row.numel() == 1:
            return row.reshape(())
        return row.reshape(shape)

    def _neurons(self, i: int, x: torch.Tensor, gain_index: Optional[int], rec_index: Optional[int],
                 records: Optional[Records], record: bool, currents: bool) -> torch.Tensor:
        node = self.graph.nodes[i]
        shape = self.shapes[i]
        steps, batch = x.shape[:2]
        leak, bias = self._p(i, "leak"), self._p(i, "bias")
        spiking = isinstance(node, (LIF, CubaLIF))
        theta = self._p(i, "threshold") if spiking else None
        cleak = self._p(i, "current_leak") if isinstance(node, CubaLIF) else None
        w_rec = self._p(rec_index, "weight") if rec_index is not None else None
        gamma = self._gamma.get(i, 1.0)
        subtract = spiking and node.reset == "subtract"
        if gain_index is not None and w_rec is None:  # no feedback: the gain applies to all steps at once
            g = self._p(gain_index, "gain")
            idx = torch.clamp(torch.arange(steps, device=g.device), max=g.shape[0] - 1)
            rows = g[idx]
            x = x * (rows.reshape(steps, *([1] * (x.dim() - 1))) if g.dim() == 1 or rows[0].numel() == 1
                     else rows.reshape(steps, 1, *shape))
            gain_index = None
        v = x.new_zeros((batch, *shape))
        cur = x.new_zeros((batch, *shape)) if cleak is not None else None
        s = x.new_zeros((batch, *shape))
        outs, vs, cs, inputs = [], [], [], []
        for t in range(steps):
            xt = x[t]
            if w_rec is not None:
                xt = xt + F.linear(s.reshape(batch, -1), w_rec).reshape(batch, *shape)
            if gain_index is not None:
                xt = xt * self._gain_at(gain_index, t, shape)
            if cur is not None:
                cur = cleak * cur + xt
                v = leak * v + cur
            else:
                v = leak * v + xt
            if bias is not None:
                v = v + bias
            if spiking:
                s = spike_fn(v - theta, gamma)
                v = v - s * theta if subtract else (1.0 - s) * v
                outs.append(s)
            else:
                outs.append(v)
            if records is not None:
                vs.append(v)
                if cur is not None:
                    cs.append(cur)
                if currents:
                    inputs.append(xt)
        out = torch.stack(outs)
        if records is not None:
            entry: dict[str, torch.Tensor] = {}
            if record:
                entry["v"] = torch.stack(vs)
                if spiking:
                    entry["spikes"] = out
                if cur is not None:
                    entry["i"] = torch.stack(cs)
            if currents:
                entry["current"] = torch.stack(inputs)
            records[i] = entry
        return out

    # ------------------------------------------------------------------ readout

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` from the output sequence, per ``graph.readout``.

        ``"spikes"``: spike counts (sum over time); ``"potential"``: the last
        step's value (an LI node's v); ``"mean"``: the mean over time.
        """
        readout = self.graph.readout
        if readout == "spikes":
            return out.sum(0)
        if readout == "potential":
            return out[-1]
        return out.mean(0)

    def extra_repr(self) -> str:
        kinds = " -> ".join(type(n).__name__ for n in self.graph.nodes)
        return f"{kinds}, dt={self.graph.dt}, readout={self.graph.readout!r}"


def neuron_indices(graph: FloatGraph) -> list[int]:
    """Indices of the neuron nodes of ``graph`` (the keys :class:`GraphModule` records under)."""
    return [i for i, n in enumerate(graph.nodes) if isinstance(n, NEURON_NODES)]

