"""The one walk over a trained :class:`~neurodeploy.models.builders.SNNClassifier`'s body.

Two views come out of it, and nothing else in the toolchain walks
``model.body``:

* :func:`model_layers`: the body's layers with references to their torch
  modules (synapse, neurons, recurrent weights), for code that changes the
  torch model itself (fine-tuning's fake quantization, the float-side
  hardware noise);
* :func:`graph_from_model`: the :class:`~neurodeploy.graph.FloatGraph` the
  quantizer, NIR and ONNX export consume.

What the graph holds
--------------------
The graph describes one *encoded* step per ``t`` (the encoder and the model's
input quantisation stay outside, as the chip receives encoded inputs):

* ``Flatten`` -> :class:`~neurodeploy.graph.Flatten`; ``Linear`` ->
  :class:`~neurodeploy.graph.Affine`; ``TimeFolded(Conv2d)`` ->
  :class:`~neurodeploy.graph.Conv2d` (zero padding only);
* BatchNorm after a conv is folded into the conv first (eval statistics,
  :func:`~neurodeploy.models.folding.fold_batchnorm`: the float32 weights the
  deployed model has);
* LIF / DLIF neurons -> :class:`~neurodeploy.graph.LIF` (``leak = 1 -
  tau_mem_inv``, reset to zero); CUBA neurons ->
  :class:`~neurodeploy.graph.CubaLIF`; a recurrent layer -> ``Affine`` (its
  input weights), the neuron node, then :class:`~neurodeploy.graph.Recurrent`
  (its recurrent weights: spikes of step t arrive at t + 1);
* the DLIF gain ``p[t]`` -> an :class:`~neurodeploy.graph.InputGain` just
  before the neuron node, holding ``p[0 .. time_steps - 1]``; it multiplies
  the whole current, recurrent part included, as the DLIF layers do;
* ``readout: linear`` -> the last node is the readout ``Affine`` and
  ``graph.readout`` is ``"mean"`` (logits = its output averaged over the
  steps); ``readout: spikes`` -> ``"spikes"``.

``dt`` is 1 (the model's steps are the graph's steps). The model's
``readout_scale`` (a factor on the logits, no effect on the class) and the
body index each node came from (``body_index``, ``None`` for the input and
for nodes the walk adds) are in ``graph.metadata``.

Input normalisation
-------------------
``model.normalize`` (``(x - mean) / std`` per channel, channel = axis 0 of
the per-step input) is folded into the first synapse, exactly:
``W' = W / std`` and ``b' = b - W (mean / std)``. The input is then the raw
encoded input, and ``b'`` is an ordinary synapse bias: on the chip it is the
neurons' bias (``bias_mant << bias_exp``, added every step, rounded like any
trained bias). The fold is exact for a dense first synapse and for a conv
without padding (or with zero means). A zero-padded first conv pads the
*normalised* input with zeros, i.e. the raw input with ``mean``, which a
per-channel bias cannot express at the borders; there the normalisation is
kept as an explicit per-channel affine map, a 1x1 depthwise ``Conv2d``
(weight ``1/std``, bias ``-mean/std``) in front of the conv, and consumers
compose the two linear maps (the quantizer does so exactly, with a bias per
neuron). ``graph.metadata["normalisation"]`` records the fold (the node it
starts at, mean, std).

Like every bias on Loihi, the folded one acts on every simulated step: from
step 0, one step before the first input arrives through the layer's synapse
(one step of delay), and on the steps after the last input. With a large
mean the folded bias is large (``W (mean / std)``), so the fixed-point first
layer then differs from the float one on those steps, as it does for any
large trained bias; in between it computes what the float layer computes.

DLIF gain folding
-----------------
Loihi weights do not vary over time, so deployment folds the mean gain into
the weights: :func:`fold_gains` (``graph_from_model(..., fold=True)``) is the
one implementation. Each ``InputGain`` is removed and its mean over the steps
multiplies the synapse just before it (weights and bias) and the neuron
node's ``Recurrent`` weights; exact when the gain is constant over time.
What was folded (per neuron node: mean, relative spread, the per-step values)
is recorded in ``graph.metadata["folded_gains"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..graph import (LIF, Affine, Conv2d, CubaLIF, Flatten, FloatGraph, GraphError, Input, InputGain, Recurrent,
                     fold_gains, gain_record)
from ..neurons.modules import RecurrentSpikingNeurons, SpikingNeurons
from .builders import SNNClassifier, TimeFolded
from .folding import fold_batchnorm, has_batchnorm

__all__ = ["ModelLayer", "ModelBody", "model_layers", "graph_from_model", "fold_gains", "gain_record",
           "step_shape_of"]

_BN = torch.nn.modules.batchnorm._BatchNorm


@dataclass
class ModelLayer:
    """One deployable layer of a model body, by reference to its torch modules.

    ``kind``: ``"dense"``, ``"conv"`` or ``"dense_rec"`` (a recurrent layer);
    the linear readout is a ``"dense"`` layer without ``neurons``.
    ``synapse``: the ``Linear`` / ``Conv2d`` (a recurrent layer's
    ``input_weights``); ``recurrent``: its ``recurrent_weights``.
    ``flatten``: a ``Flatten`` (body index ``flatten_index``) comes between the previous layer and this one.
    ``index`` / ``neurons_index``: body indices of the synapse and the neurons
    (a recurrent layer is one module: both are its index).
    """

    kind: str
    synapse: torch.nn.Module
    neurons: Optional[torch.nn.Module]
    index: int
    neurons_index: Optional[int] = None
    recurrent: Optional[torch.nn.Linear] = None
    flatten_index: Optional[int] = None    # body index of the Flatten before this layer, if any

    @property
    def flatten(self) -> bool:
        return self.flatten_index is not None

    def as_dict(self) -> dict:
        """The quantizer's former per-layer dict (``kind``, ``weight``, ``bias``, ``conv``, ``neurons``,
        ``weight_rec``), for code that still reads it."""
        out: dict = {"kind": self.kind, "weight": self.synapse.weight, "bias": self.synapse.bias}
        if self.kind == "conv":
            out["conv"] = self.synapse
        if self.neurons is not None:
            out["neurons"] = self.neurons
        if self.recurrent is not None:
            out["weight_rec"] = self.recurrent.weight
        return out


@dataclass
class ModelBody:
    """A model body as layers: the spiking ``layers`` in order and the linear ``readout`` (or None)."""

    layers: list[ModelLayer]
    readout: Optional[ModelLayer] = None
    trailing_flatten: Optional[int] = None   # body index of a Flatten after the last layer


def _check_flatten(module: torch.nn.Flatten, index: int) -> None:
    # time-major (T, B, ...): start_dim 2 flattens each sample, nothing else is a per-sample flatten
    if module.start_dim != 2 or module.end_dim not in (-1,):
        raise GraphError(f"body[{index}] (Flatten(start_dim={module.start_dim}, end_dim={module.end_dim})): only "
                         f"Flatten(start_dim=2) (each sample of the time-major input) maps to the graph")


def model_layers(model: SNNClassifier) -> ModelBody:
    """The body of ``model`` as :class:`ModelLayer` s (see the module docstring).

    BatchNorm must be folded first (:func:`~neurodeploy.models.folding.fold_batchnorm`;
    :func:`graph_from_model` does it). Anything the toolchain cannot deploy is
    a :class:`~neurodeploy.graph.GraphError` naming the body index.
    """
    if model.readout not in ("spikes", "linear"):
        raise GraphError(f"model.readout is {model.readout!r}, expected 'spikes' or 'linear'")
    layers: list[ModelLayer] = []
    pending: Optional[ModelLayer] = None
    flatten: Optional[int] = None
    for k, module in enumerate(model.body):
        where = f"body[{k}] ({type(module).__name__})"
        if isinstance(module, torch.nn.Flatten):
            _check_flatten(module, k)
            if pending is not None:
                raise GraphError(f"{where}: a Flatten between a synapse and its neurons cannot be deployed")
            flatten = k
        elif isinstance(module, (torch.nn.Linear, TimeFolded)):
            if isinstance(module, TimeFolded) and isinstance(module.module, _BN):
                raise GraphError(f"{where}: a {type(module.module).__name__} must be folded into the conv before "
                                 f"it first (models.folding.fold_batchnorm; graph_from_model does)")
            if pending is not None:
                raise GraphError(f"{where}: two synapse layers in a row (body[{pending.index}] and this one) "
                                 f"without neurons between them cannot be deployed")
            if isinstance(module, TimeFolded):
                conv = module.module
                if not isinstance(conv, torch.nn.Conv2d):
                    raise GraphError(f"{where}: unsupported time-folded layer {type(conv).__name__}")
                if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                    raise GraphError(f"{where}: conv padding {conv.padding!r} / padding_mode "
                                     f"{conv.padding_mode!r}: Loihi supports explicit zero padding only")
                pending = ModelLayer("conv", conv, None, k, flatten_index=flatten)
            else:
                pending = ModelLayer("dense", module, None, k, flatten_index=flatten)
            flatten = None
        elif isinstance(module, SpikingNeurons):
            if pending is None:
                raise GraphError(f"{where}: a spiking layer without synapses in front of it cannot be deployed")
            pending.neurons, pending.neurons_index = module, k
            layers.append(pending)
            pending = None
        elif isinstance(module, RecurrentSpikingNeurons):
            if pending is not None:
                raise GraphError(f"{where}: a synapse layer directly before a recurrent layer cannot be deployed")
            layers.append(ModelLayer("dense_rec", module.input_weights, module, k, k, module.recurrent_weights,
                                     flatten_index=flatten))
            flatten = None
        else:
            raise GraphError(f"{where}: layer {type(module).__name__} cannot be deployed to Loihi "
                             f"(supported: Linear, Conv2d, Flatten, spiking neurons)")
    readout = None
    if model.readout == "linear":
        if pending is None or pending.kind != "dense" or flatten is not None:
            raise GraphError("model.readout is 'linear' but the model does not end in a Linear layer without "
                             "neurons; expected ... -> Linear as the last module")
        readout = pending
    elif pending is not None:
        raise GraphError("the model ends in synapses without neurons; with model.readout 'spikes' the output "
                         "layer must spike")
    return ModelBody(layers, readout, trailing_flatten=flatten)


def step_shape_of(model: SNNClassifier, input_shape: Optional[tuple[int, ...]] = None) -> tuple[int, ...]:
    """The per-step input shape: ``input_shape`` (one sample; ``(T, F)`` sequences lose T), or, without it,
    the first dense or recurrent layer's ``in_features``."""
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
            return (int(m.in_features),)
        if isinstance(m, RecurrentSpikingNeurons):
            return (int(m.input_weights.in_features),)
        break
    raise GraphError("input_shape is required for this model (its first layer is a convolution): pass the "
                     "shape of one sample, e.g. input_shape=(1, 28, 28)")


def _np(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().cpu().double().numpy()


def _scalar_or_array(value) -> np.ndarray:
    arr = torch.as_tensor(value).detach().cpu().double().numpy()
    return arr.reshape(()) if arr.size == 1 else arr.reshape(-1)


def _neuron_node(module, index: int):
    p = module.p
    where = f"body[{index}] ({type(module).__name__})"
    # the same float32 arithmetic the step functions use: leak = 1 - tau_mem_inv (dt = 1)
    leak = _scalar_or_array(1.0 - torch.as_tensor(p.tau_mem_inv))
    threshold = _scalar_or_array(p.v_th)
    v_reset = _scalar_or_array(p.v_reset)
    if np.any(v_reset != 0):
        raise GraphError(f"{where}: v_reset {float(v_reset.reshape(-1)[0]):g}: only a reset to 0 maps to the graph")
    if hasattr(p, "tau_syn_inv"):
        return CubaLIF(current_leak=_scalar_or_array(1.0 - torch.as_tensor(p.tau_syn_inv)), leak=leak,
                       threshold=threshold)
    return LIF(leak=leak, threshold=threshold)


def _gain_node(neurons, time_steps: Optional[int], index: int) -> Optional[InputGain]:
    gain = getattr(neurons, "gain", None)
    if gain is None:
        return None
    g = _np(gain)
    if time_steps is not None:
        if time_steps > g.shape[0]:
            raise GraphError(f"body[{index}] ({type(neurons).__name__}): time_steps={time_steps} but the DLIF gain "
                             f"p[t] has {g.shape[0]} steps")
        g = g[:time_steps]
    return InputGain(g)


def _normalisation(model: SNNClassifier, step_shape: tuple[int, ...]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Per-channel (mean, std) of the model's input normalisation, broadcast to the channels (axis 0)."""
    if model.normalize is None:
        return None
    mean, std = _np(model.normalize.mean).reshape(-1), _np(model.normalize.std).reshape(-1)
    c = int(step_shape[0])
    if mean.size not in (1, c) or std.size not in (1, c):
        raise GraphError(f"normalize has {mean.size} means / {std.size} stds for {c} input channels "
                         f"(axis 0 of the per-step input {step_shape})")
    if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)) or np.any(std == 0):
        raise GraphError(f"normalize: mean {mean.tolist()} / std {std.tolist()}: expected finite values and "
                         f"non-zero stds")
    return np.broadcast_to(mean, (c,)).copy(), np.broadcast_to(std, (c,)).copy()


def _fold_normalisation(node, norm: tuple[np.ndarray, np.ndarray], step_shape: tuple[int, ...]) -> list:
    """The first synapse with ``(x - mean) / std`` folded in (see the module docstring)."""
    mean, std = norm
    if isinstance(node, Affine):
        per = int(np.prod(step_shape[1:])) if len(step_shape) > 1 else 1
        m, s = np.repeat(mean, per), np.repeat(std, per)
        if m.size != node.weight.shape[1]:
            raise GraphError(f"normalize over input of shape {step_shape}, first Affine takes "
                             f"{node.weight.shape[1]} inputs")
        bias = node.bias if node.bias is not None else np.zeros(node.weight.shape[0])
        return [Affine(node.weight / s[None, :], bias - node.weight @ (m / s))]
    c = mean.size
    if any(p != 0 for p in node.padding) and np.any(mean != 0):
        # padded with zeros after normalisation: keep it as a per-channel affine map in front (exact)
        pre = Conv2d(weight=(1.0 / std).reshape(c, 1, 1, 1), bias=-mean / std, groups=c)
        return [pre, node]
    w = node.weight
    out_c, in_per_group = w.shape[0], w.shape[1]
    per_group_out = out_c // node.groups
    # input channel of weight[o, j]: (o // per_group_out) * in_per_group + j
    chan = (np.arange(out_c)[:, None] // per_group_out) * in_per_group + np.arange(in_per_group)[None, :]
    s, m = std[chan][:, :, None, None], mean[chan][:, :, None, None]
    bias = node.bias if node.bias is not None else np.zeros(out_c)
    return [Conv2d(weight=w / s, bias=bias - (w * (m / s)).sum(axis=(1, 2, 3)), stride=node.stride,
                   padding=node.padding, dilation=node.dilation, groups=node.groups)]


def _synapse_node(layer: ModelLayer):
    mod = layer.synapse
    if layer.kind == "conv":
        return Conv2d(weight=_np(mod.weight), bias=_np(mod.bias), stride=tuple(int(s) for s in mod.stride),
                      padding=tuple(int(p) for p in mod.padding), dilation=tuple(int(d) for d in mod.dilation),
                      groups=int(mod.groups))
    return Affine(weight=_np(mod.weight), bias=_np(mod.bias))


def graph_from_model(model: SNNClassifier, time_steps: Optional[int], *, fold: bool = True,
                     input_shape: Optional[tuple[int, ...]] = None) -> FloatGraph:
    """The :class:`~neurodeploy.graph.FloatGraph` of ``model`` (see the module docstring).

    ``time_steps``: steps per sample; the DLIF gains keep their first
    ``time_steps`` values (None: all of them). ``fold``: fold the gains'
    means into the weights (:func:`fold_gains`, what is deployed); False
    keeps them as per-step ``InputGain`` nodes (the trained float model).
    ``input_shape``: one sample's shape (``(C, H, W)``, ``(F,)``; sequences
    ``(T, F)`` or ``(F,)``); needed when the first layer is a convolution.
    The model is not changed. A :class:`~neurodeploy.graph.GraphError`
    names the body index of anything that has no graph node.
    """
    if time_steps is not None and (not isinstance(time_steps, (int, np.integer)) or time_steps < 1):
        raise GraphError(f"time_steps must be a positive integer, got {time_steps!r}")
    if has_batchnorm(model):
        model = fold_batchnorm(model)   # a BatchNormFoldError names the layer
    body = model_layers(model)
    shape = step_shape_of(model, input_shape)
    norm = _normalisation(model, shape)
    nodes: list = [Input(shape)]
    where: list = [None]

    def add(node, index) -> None:
        nodes.append(node)
        where.append(index)

    first = True
    norm_node = None
    for layer in body.layers + ([body.readout] if body.readout is not None else []):
        if layer.flatten:
            add(Flatten(), layer.flatten_index)
        syn = [_synapse_node(layer)]
        if first and norm is not None:
            syn = _fold_normalisation(syn[0], norm, shape)
            norm_node = len(nodes)
        first = False
        for j, node in enumerate(syn):
            add(node, layer.index if j == len(syn) - 1 else None)
        if layer.neurons is None:
            continue
        gain = _gain_node(layer.neurons, time_steps, layer.neurons_index)
        if gain is not None:
            add(gain, layer.neurons_index)
        add(_neuron_node(layer.neurons, layer.neurons_index), layer.neurons_index)
        if layer.recurrent is not None:
            add(Recurrent(_np(layer.recurrent.weight)), layer.neurons_index)
    if body.trailing_flatten is not None:
        add(Flatten(), body.trailing_flatten)
    meta = {"producer": "neurodeploy.models.walk.graph_from_model", "model_readout": model.readout,
            "readout_scale": float(model.readout_scale), "encoder": type(model.encoder).__name__,
            "body_index": tuple(where)}
    if norm_node is not None:
        meta["normalisation"] = {"node": norm_node, "mean": norm[0].tolist(), "std": norm[1].tolist()}
    graph = FloatGraph(tuple(nodes), dt=1.0, time_steps=None if time_steps is None else int(time_steps),
                       readout="mean" if model.readout == "linear" else "spikes", metadata=meta)
    graph.validate()
    return fold_gains(graph) if fold else graph
