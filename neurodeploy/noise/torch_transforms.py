"""Float-side (torch) mirrors of the hardware noises, with the same draws as the fixed-point side.

:func:`perturb_float_model` (network noises: weights scaled or flipped in
place, dead/stuck neurons as forward hooks, thresholds scaled) and
:func:`float_step_noise_model` / :class:`FloatStepNoise` (step noises as hooks
on the spiking layers); semantics in the docstring of
:mod:`neurodeploy.noise.hardware`. The float layers come from the
quantizer's walker (``_float_layers``, ``_readout_layer``), so the float
layers pair with the IR layers exactly as the quantizer made them.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import numpy as np
import torch

from .. import lava_rules as lr
from ..ir import Network
from ..neurons.functional import cuba_step
from .draws import (
    WEIGHT_NOISES,
    HardwareNoiseError,
    chosen_neurons,
    draw_network_noise,
    float_step_rows,
    readout_index,
    spiking_layer_indices,
    step_noise_draws,
)
from .ir_transforms import _check_name_level, _flip_weights, _mismatched_vth
from .step import StepNoise, step_noise_layers

__all__ = ["perturb_float_model", "FloatStepNoise", "float_step_noise_model"]


class _ForceSpikes:
    """Forces the spikes of flat neuron indices ``idx`` of one layer to ``value`` (0 dead, 1 stuck).

    Registered as forward hooks, never as Parameters, so the perturbed copy
    keeps the model's parameter set:

    * :meth:`__call__` (forward hook of the layer): the output spikes at every
      step, and in the layer's recording the spikes and, zeroed, the chosen
      neurons' currents (a forced neuron's input no longer matters, so the
      regularizers see no perturbation there; no gradient reaches its weights);
      a recurrent layer's returned state carries the forced last spikes;
    * :meth:`start` / :meth:`feedback` (recurrent layers: forward pre-hooks of
      the layer and of its ``recurrent_weights``): the spikes fed back at each
      step, from the second step on when the layer starts from rest (its first
      step feeds the initial zeros, as on the chip), from the first when it
      continues from a given state.
    """

    def __init__(self, idx: np.ndarray, value: float) -> None:
        self.idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        self.value = float(value)
        self.step = 0

    def _force(self, x: torch.Tensor, dims: int, value: Optional[float] = None) -> torch.Tensor:
        """``x`` with the chosen neurons (flattened after the first ``dims`` dims) set to ``value``."""
        flat = x.reshape(*x.shape[:dims], -1).clone()
        flat[..., self.idx.to(flat.device)] = self.value if value is None else value
        return flat.reshape(x.shape)

    def __call__(self, module, inputs, output):
        spikes, state = output
        forced = self._force(spikes, 2)
        rec = getattr(module, "recording", None)
        if rec is not None and rec.spikes is not None:
            rec.spikes = forced
            rec.current = self._force(rec.current, 2, 0.0)
            rec.input_current = self._force(rec.input_current, 2, 0.0)
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], torch.Tensor):
            state = (self._force(state[0], 1), state[1])   # recurrent (z, neuron state)
        return forced, state

    def start(self, module, args, kwargs):
        given = args[1] if len(args) > 1 else kwargs.get("state")
        self.step = 0 if given is None else 1

    def feedback(self, module, args):
        z = args[0]
        self.step += 1
        return None if self.step == 1 else (self._force(z, 1),)


def _force_spikes(neurons: torch.nn.Module, idx: np.ndarray, value: float) -> None:
    """Attach a :class:`_ForceSpikes` for ``idx`` to a spiking layer (recurrent: its feedback too)."""
    from ..neurons.modules import RecurrentSpikingNeurons

    hook = _ForceSpikes(idx, value)
    neurons.register_forward_hook(hook)
    if isinstance(neurons, RecurrentSpikingNeurons):
        neurons.register_forward_pre_hook(hook.start, with_kwargs=True)
        neurons.recurrent_weights.register_forward_pre_hook(hook.feedback)


def _network_of(quantized: Any) -> Network:
    return quantized if isinstance(quantized, Network) else quantized.network


def _float_scale(quantized: Any, i: int, exp: int, recurrent: bool = False) -> float:
    """Float value of one unit of an integer weight mantissa of layer ``i`` at weight exponent ``exp``.

    Only the first layer's feed-forward weights see graded inputs (``round(x * scale)``); its
    recurrent weights, like every other layer's, see spikes.
    """
    if isinstance(quantized, Network):
        raise HardwareNoiseError("bit-flip on the float model needs the QuantizationResult (layer scales), "
                                 "not only the Network")
    rep = quantized.layers[i]
    net = quantized.network
    gain = rep.gain_mean if rep.gain_mean is not None else 1.0
    unit = 2.0 ** (exp + lr.ACT_SHIFT) / rep.scale / gain
    if i == 0 and not recurrent and net.input_encoding.kind == "graded":
        unit *= net.input_encoding.scale
    return unit


def perturb_float_model(model: torch.nn.Module, name: str, level: float, seed: int,
                        quantized: Any) -> torch.nn.Module:
    """A perturbed deep copy of float ``model`` (an ``SNNClassifier``) under network noise ``name``.

    ``quantized`` is the :class:`~neurodeploy.quant.quantizer.QuantizationResult`
    of this model (or its ``Network``, for every noise but ``bit-flip``): the
    draws are :func:`draw_network_noise` of that network, so the float model
    gets the same factors, flipped weights and neuron indices as
    :func:`perturb_network` gives the fixed-point one (module docstring).
    ``model`` is never modified; level 0 returns an unperturbed copy.

    The copy has exactly the model's named parameters, same shapes: weight
    noises change their values in place, dead/stuck neurons are forward hooks
    and threshold mismatch changes the (non-Parameter) neuron parameters. So
    the gradient of a loss of the copy, parameter by parameter, is the
    straight-through gradient for the model (noise-aware training).
    """
    level = _check_name_level(name, level)
    out = copy.deepcopy(model)
    if level == 0:
        return out
    network = _network_of(quantized)
    pairs = _float_ir_pairs(out, network, with_readout=name in WEIGHT_NOISES)
    draws = draw_network_noise(network, name, seed)
    with torch.no_grad():
        for i, fl in pairs:
            d, layer = draws[i], network.layers[i]
            w = fl["weight"]
            if tuple(w.shape) != tuple(np.shape(layer.weight)):
                raise HardwareNoiseError(f"layer {i}: float weight shape {tuple(w.shape)} differs from the "
                                         f"quantized {tuple(np.shape(layer.weight))}")
            if name == "weight-mismatch":
                w.mul_(torch.as_tensor(1.0 + level * d.weight, dtype=w.dtype))
                if d.weight_rec is not None:
                    wr = fl["weight_rec"]
                    wr.mul_(torch.as_tensor(1.0 + level * d.weight_rec, dtype=wr.dtype))
            elif name == "bit-flip":
                parts = [("weight", "weight", d.weight, int(layer.weight_exp))]
                if d.weight_rec is not None:
                    parts.append(("weight_rec", "weight_rec", d.weight_rec, int(layer.weight_rec_exp)))
                for fkey, ikey, u, exp in parts:
                    orig = np.asarray(getattr(layer, ikey)).astype(np.int64)
                    flipped = _flip_weights(orig, u, level, layer.sign_mode, layer.num_weight_bits)
                    changed = torch.as_tensor(flipped != orig)
                    unit = _float_scale(quantized, i, exp, recurrent=fkey == "weight_rec")
                    value = torch.as_tensor(flipped * unit, dtype=fl[fkey].dtype)
                    fl[fkey].copy_(torch.where(changed, value, fl[fkey]))
            elif name in ("dead-neuron", "stuck-neuron"):
                idx = chosen_neurons(d, level)
                if idx.size == 0:
                    continue
                _force_spikes(fl["neurons"], idx, 1.0 if name == "stuck-neuron" else 0.0)
            elif name == "threshold-mismatch":
                neurons = fl["neurons"]
                vth = int(layer.neurons.vth)
                ratio = _mismatched_vth(vth, level, d.factor) / vth if vth > 0 else 1.0
                neurons.p = neurons.p._replace(v_th=neurons.p.v_th * ratio)
    return out


def _float_ir_pairs(model: torch.nn.Module, network: Network, with_readout: bool) -> list[tuple[int, dict]]:
    """``(IR layer index, float layer)`` of every spiking layer and, ``with_readout``, of the linear readout.

    The float model's deployable spiking layers are the IR's spiking layers in
    order; a ``readout: linear`` model's readout Linear is the IR's integrator
    output layer (:func:`readout_index`). Raises :class:`HardwareNoiseError`
    where ``network`` is not the quantization of ``model``.
    """
    from ..quant.quantizer import _float_layers, _readout_layer

    layers = _float_layers(model)
    spiking = spiking_layer_indices(network)
    linear = getattr(model, "readout", "spikes") == "linear"
    if linear != (readout_index(network) is not None) or len(layers) != len(spiking):
        raise HardwareNoiseError(
            f"the model has {len(layers)} spiking layers and {'a linear' if linear else 'a spiking'} readout, "
            f"the quantized network {len(spiking)} spiking layers and readout {network.readout!r}; "
            f"pass the quantization of this model")
    pairs = list(zip(spiking, layers))
    if with_readout and linear:
        pairs.append((readout_index(network), _readout_layer(model)))
    return pairs


class FloatStepNoise:
    """The float model's step noise: the same draws as :func:`fixed_step_noise`,
    rows :func:`float_step_rows` (float step ``t`` of layer ``l`` = simulated
    step ``t + l + 1``). Call :meth:`set_samples` with the data-set indices of
    each batch before running it (draws are per sample, so batching does not
    change them).

    * feed-forward layers (Norse ``SNN``): the activation is wrapped; current /
      membrane noise adds ``level * threshold * z`` to the (gain-scaled) input
      current of the step (box (D)LIF: ``v = leak*v + I + noise``; CUBA:
      current noise enters ``i``, membrane noise ``v``); spike-drop is a
      forward hook multiplying the layer's output spikes by the keep mask on
      their way to the next layer (the recorded activity keeps them);
    * recurrent layers: the module's ``step_noise_hook`` does the same inside
      its time loop, and masks the spikes fed back to the recurrent weights.
    """

    def __init__(self, model: torch.nn.Module, noise: StepNoise, network: Network):
        from ..neurons.modules import RecurrentSpikingNeurons

        self.noise = noise
        self.network = network
        self.model = model
        # IR index -> spiking float layer (a potential readout's integrator has none and gets no step noise)
        self.layers = {i: fl["neurons"] for i, fl in _float_ir_pairs(model, network, with_readout=False)}
        self.active_layers = step_noise_layers(network, noise.name) if noise.active else []
        self.values: dict[int, torch.Tensor] = {}
        self.T = int(network.time_steps)
        for i in self.active_layers:
            mod = self.layers[i]
            if isinstance(mod, RecurrentSpikingNeurons):
                mod.step_noise_hook = _LayerHook(self, i, mod)
            else:
                hook = _LayerHook(self, i, mod)
                if noise.name == "spike-drop":
                    mod.register_forward_hook(hook.output_hook)
                else:
                    mod.register_forward_pre_hook(hook.reset)
                    mod.activation = hook.wrap(mod.activation)

    def set_samples(self, samples) -> None:
        """Prepare the draws of the batch of data-set indices ``samples`` (float steps ``T``)."""
        samples = np.asarray(samples, dtype=np.int64).reshape(-1)
        P = self.T + len(self.network.layers)
        for i in self.active_layers:
            layer = self.network.layers[i]
            n = int(np.prod(layer.out_shape))
            d = step_noise_draws(self.noise.name, self.noise.seed, i, samples, P, n)[:, float_step_rows(i, self.T)]
            if self.noise.name == "spike-drop":
                v = (d >= self.noise.level).astype(np.float32)
            else:
                v = self.noise.level * d
            self.values[i] = torch.as_tensor(np.ascontiguousarray(v.transpose(1, 0, 2)))   # (T, B, n)


class _LayerHook:
    def __init__(self, owner: FloatStepNoise, index: int, module) -> None:
        self.owner, self.index, self.module = owner, index, module
        self.t = 0
        # spikes leaving the layer are masked unless they are the readout (the output layer)
        self.mask_output = owner.noise.name == "spike-drop" and index < len(owner.network.layers) - 1

    def _value(self, t: int, like: torch.Tensor) -> torch.Tensor:
        vals = self.owner.values.get(self.index)
        if vals is None:
            raise HardwareNoiseError("FloatStepNoise: call set_samples(indices) before running a batch")
        if t >= vals.shape[0] or vals.shape[1] != like.shape[0]:
            raise HardwareNoiseError(f"layer {self.index}: step noise prepared for {vals.shape[1]} samples x "
                                     f"{vals.shape[0]} steps, the batch has {like.shape[0]} at step {t}")
        return vals[t].to(device=like.device, dtype=like.dtype).reshape(like.shape)

    def _threshold(self) -> float:
        return float(self.module.p.v_th)

    # -- feed-forward modules
    def reset(self, module, args):
        self.t = 0

    def wrap(self, activation):
        name = self.owner.noise.name

        def noisy(input_current, state, p, dt=1.0):
            noise = self._value(self.t, input_current) * float(p.v_th)
            self.t += 1
            if name == "membrane-noise" and hasattr(state, "i"):   # CUBA: v gets it, not i
                return cuba_step(input_current, state, p, dt, v_noise=noise)
            return activation(input_current + noise, state, p, dt)

        return noisy

    def output_hook(self, module, inputs, output):
        spikes, state = output
        mask = torch.stack([self._value(t, spikes[t]) for t in range(spikes.shape[0])])
        return spikes * mask, state

    # -- recurrent modules (called from RecurrentSpikingNeurons.forward)
    def current(self, t: int, scaled: torch.Tensor) -> torch.Tensor:
        if self.owner.noise.name == "spike-drop":
            return scaled
        if self.owner.noise.name == "membrane-noise" and self.module.cuba:
            return scaled   # handled in membrane()
        return scaled + self._value(t, scaled) * self._threshold()

    def membrane(self, t: int, like: torch.Tensor) -> Optional[torch.Tensor]:
        if self.owner.noise.name == "membrane-noise" and self.module.cuba:
            return self._value(t, like) * self._threshold()
        return None

    def drop(self, t: int, spikes: torch.Tensor) -> torch.Tensor:
        if self.owner.noise.name != "spike-drop":
            return spikes
        return spikes * self._value(t, spikes)


def float_step_noise_model(model: torch.nn.Module, noise: StepNoise, quantized: Any):
    """``(copy, hooks)``: a deep copy of ``model`` with the step noise attached, and its
    :class:`FloatStepNoise` (call ``hooks.set_samples(indices)`` before every batch)."""
    out = copy.deepcopy(model)
    return out, FloatStepNoise(out, noise, _network_of(quantized))
