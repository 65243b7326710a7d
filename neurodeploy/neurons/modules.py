"""Sequence-level spiking layers built on Norse's ``SNN`` base module.

Every layer takes time-major input ``(T, B, *shape)`` and returns
``(spikes, state)`` so that Norse's ``SequentialState`` threads the state.
The learnable per-step input gain ``p[t]`` of the stable DLIF neuron is
applied to the whole input sequence before Norse's time loop, because the
step functions (and Norse's loop) do not know the time index.

Layers can record their input current (before the gain) and their spikes for
the perturbation regularizers and activity statistics; see
:func:`record_activity`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from norse.torch.module.snn import SNN

from ..config import NeuronConfig
from .functional import (
    LIFBoxFeedForwardState,
    LIFFeedForwardState,
    box_parameters,
    cuba_parameters,
    cuba_step,
    dlif_step,
)


class _Recording:
    """What a layer saw during one forward pass (time-major tensors)."""

    def __init__(self) -> None:
        self.current: Optional[torch.Tensor] = None  # total input current, before the gain
        self.input_current: Optional[torch.Tensor] = None  # feed-forward part only
        self.spikes: Optional[torch.Tensor] = None


class _RecordingMixin:
    recording: Optional[_Recording] = None

    def _record(self, current: torch.Tensor, input_current: torch.Tensor, spikes: torch.Tensor) -> None:
        if self.recording is not None:
            self.recording.current = current
            self.recording.input_current = input_current
            self.recording.spikes = spikes


def _make_gain(learn_gain: bool, time_steps: Optional[int]) -> Optional[torch.nn.Parameter]:
    if not learn_gain:
        return None
    if time_steps is None:
        raise ValueError("a DLIF layer needs a fixed number of time steps for its per-step gain p[t]")
    return torch.nn.Parameter(torch.ones(time_steps))


def _apply_gain(gain: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if gain is None:
        return x
    steps = x.shape[0]
    if steps > gain.shape[0]:
        raise ValueError(f"input has {steps} time steps but the DLIF gain p[t] was built for {gain.shape[0]}")
    return x * gain[:steps].view(steps, *([1] * (x.dim() - 1)))


class SpikingNeurons(_RecordingMixin, SNN):
    """A feed-forward population of LIF, DLIF or current-based (CUBA) neurons.

    Parameters:
        neuron: the neuron configuration (type, leak, threshold, surrogate width).
        time_steps: T, the length of the per-step gain of DLIF neurons.
    """

    def __init__(self, neuron: NeuronConfig, time_steps: Optional[int]) -> None:
        cuba = neuron.type.startswith("cuba")
        if cuba:
            p = cuba_parameters(neuron.leak, neuron.current_leak, neuron.threshold, neuron.gamma)
            super().__init__(activation=cuba_step, state_fallback=self._initial_cuba, p=p, dt=1.0)
        else:
            p = box_parameters(neuron.leak, neuron.threshold, neuron.gamma)
            super().__init__(activation=dlif_step, state_fallback=self._initial_box, p=p, dt=1.0)
        self.neuron_type = neuron.type
        self.gain = _make_gain(neuron.type.endswith("dlif"), time_steps)

    @staticmethod
    def _initial_box(x: torch.Tensor) -> LIFBoxFeedForwardState:
        return LIFBoxFeedForwardState(v=torch.zeros_like(x[0]))

    @staticmethod
    def _initial_cuba(x: torch.Tensor) -> LIFFeedForwardState:
        zeros = torch.zeros_like(x[0])
        return LIFFeedForwardState(v=zeros, i=zeros.clone())

    def forward(self, input_tensor: torch.Tensor, state=None):
        spikes, state = super().forward(_apply_gain(self.gain, input_tensor), state)
        self._record(input_tensor, input_tensor, spikes)
        return spikes, state


class RecurrentSpikingNeurons(_RecordingMixin, torch.nn.Module):
    """A recurrent spiking layer (SRNN): ``I[t] = W_in x[t] + W_rec s[t-1]``.

    The spikes of step t-1 enter step t, which is also what one step of Dense
    delay gives on Loihi. Our own time loop rather than Norse's
    ``SNNRecurrent``: its activation has no time index for the DLIF gain.
    Self-connections are allowed (Loihi's recurrent Dense has them).
    """

    def __init__(self, input_size: int, hidden_size: int, neuron: NeuronConfig,
                 time_steps: Optional[int], bias: bool = True) -> None:
        super().__init__()
        self.neuron_type = neuron.type
        self.cuba = neuron.type.startswith("cuba")
        self.input_weights = torch.nn.Linear(input_size, hidden_size, bias=bias)
        self.recurrent_weights = torch.nn.Linear(hidden_size, hidden_size, bias=False)
        torch.nn.init.orthogonal_(self.recurrent_weights.weight, gain=0.5)
        if self.cuba:
            self.p = cuba_parameters(neuron.leak, neuron.current_leak, neuron.threshold, neuron.gamma)
        else:
            self.p = box_parameters(neuron.leak, neuron.threshold, neuron.gamma)
        self.gain = _make_gain(neuron.type.endswith("dlif"), time_steps)

    def forward(self, input_tensor: torch.Tensor, state=None):
        ff = self.input_weights(input_tensor)  # all steps at once: one GEMM
        steps, batch = ff.shape[:2]
        if state is None:
            zeros = ff.new_zeros(ff.shape[1:])
            z = zeros
            neuron_state = LIFFeedForwardState(v=zeros, i=zeros) if self.cuba else LIFBoxFeedForwardState(v=zeros)
        else:
            z, neuron_state = state
        gain = self.gain
        if gain is not None and steps > gain.shape[0]:
            raise ValueError(f"input has {steps} time steps but the DLIF gain p[t] was built for {gain.shape[0]}")
        # per-step noise (neurodeploy.noise.hardware.FloatStepNoise), None without
        hook = getattr(self, "step_noise_hook", None)
        spikes, currents, delivered = [], [], []
        for t in range(steps):
            current = ff[t] + self.recurrent_weights(z)
            scaled = current * gain[t] if gain is not None else current
            if hook is not None:
                scaled = hook.current(t, scaled)
            v_noise = hook.membrane(t, scaled) if hook is not None else None
            if self.cuba or v_noise is not None:      # membrane noise is CUBA's: v = leak*v + i + noise
                z, neuron_state = cuba_step(scaled, neuron_state, self.p, v_noise=v_noise)
            else:
                z, neuron_state = dlif_step(scaled, neuron_state, self.p)
            spikes.append(z)
            currents.append(current)
            if hook is not None:
                z = hook.drop(t, z)      # spike-drop: lost spikes reach no synapse
                delivered.append(z)
        out = torch.stack(spikes)
        if self.recording is not None:
            self._record(torch.stack(currents), ff, out)
        if hook is not None and hook.mask_output:
            out = torch.stack(delivered)
        return out, (z, neuron_state)


SPIKING_LAYERS = (SpikingNeurons, RecurrentSpikingNeurons)


def spiking_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The spiking layers of ``model`` in forward order."""
    return [m for m in model.modules() if isinstance(m, SPIKING_LAYERS)]


@contextlib.contextmanager
def record_activity(model: torch.nn.Module) -> Iterator[list[_Recording]]:
    """Record every spiking layer's input current and spikes during the block.

    Yields one :class:`_Recording` per spiking layer, in forward order; they
    are filled by the forward passes run inside the ``with`` block (the last
    pass wins).
    """
    layers = spiking_layers(model)
    records = [_Recording() for _ in layers]
    for layer, rec in zip(layers, records):
        layer.recording = rec
    try:
        yield records
    finally:
        for layer in layers:
            layer.recording = None
