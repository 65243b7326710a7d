"""What the backends inject into a running network, per population and step: noise-agnostic.

A step noise (or anything else that perturbs a run) is handed to a backend
as a :class:`StepInjector`: it says which populations get which kinds of
injection (:meth:`~StepInjector.injection_layout`, known before anything is
drawn, so the Lava backend can size its process graph) and produces the
integers of a batch of samples (:meth:`~StepInjector.injections`). The
backends only know the three kinds, where each enters Lava's step order
(``PyLifResetModelBitAcc``: receive ``a_in``; ``u = wrap24(decay(u) + (a_in
<< 6))``; ``v = clip24(decay(v) + u + bias)``; spike where ``v > vth << 6``;
``v = 0`` there; send):

* ``a_in`` (int): added to the population's synaptic input of the step, one
  more term of the InPort's int32 sum of feed-forward and recurrent inputs.
  Lava: a ``RingBuffer`` playing the integers into ``LIF.a_in``.
* ``v`` (int): added to the int32 sum for ``v`` of the step, before the clip
  and the threshold comparison. Lava: ``LIFResetVNoise``
  (:mod:`neurodeploy.backends.lava_noise`).
* ``keep`` (bool): a spike emitted where ``keep`` is False reaches no synapse
  (neither the next layer's nor the population's own recurrent one); the
  neuron still spikes and resets, and the readout, spike counts and recorded
  spikes are the neurons' own. Lava: ``SpikeDrop`` between ``LIF.s_out`` and
  the synapses it feeds.

Arrays are ``(samples, T + latency, n)`` in IR neuron order, row ``s`` acting
at simulated step ``s``; none adds delay. :class:`~neurodeploy.noise.step.StepNoise`
is the step noises' injector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from .base import BackendError

__all__ = ["INJECTION_KINDS", "LayerInjection", "StepInjector", "injection_layout", "draw_injections"]

INJECTION_KINDS = ("a_in", "v", "keep")


@dataclass(frozen=True)
class LayerInjection:
    """One population's injections for a batch of samples: each ``(samples, T + latency, n)`` or None."""

    a_in: Optional[np.ndarray] = None    # int64, joins the synaptic input a_in
    v: Optional[np.ndarray] = None       # int64, joins the sum for v
    keep: Optional[np.ndarray] = None    # bool, False: the spike reaches no synapse

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in INJECTION_KINDS if getattr(self, k) is not None)

    def map(self, fn) -> "LayerInjection":
        """The same injection with ``fn`` applied to every array present."""
        return LayerInjection(**{k: None if getattr(self, k) is None else fn(getattr(self, k))
                                 for k in INJECTION_KINDS})


@runtime_checkable
class StepInjector(Protocol):
    """What a backend's ``step_noise=`` takes (e.g. :class:`~neurodeploy.noise.step.StepNoise`)."""

    def injection_layout(self, network) -> list[tuple[str, ...]]:
        """Per layer, the kinds (of :data:`INJECTION_KINDS`) it injects; ``()`` for none."""

    def injections(self, network, samples) -> list[Optional[LayerInjection]]:
        """Per layer, the injections of the data-set indices ``samples`` (None for none)."""


def _injector(step_noise, where: str) -> Optional[StepInjector]:
    if step_noise is None:
        return None
    if not isinstance(step_noise, StepInjector):
        raise BackendError(f"{where}: step_noise is a {type(step_noise).__name__}, expected a step injector "
                           f"(e.g. neurodeploy.noise.StepNoise) with injection_layout() and injections()")
    return step_noise


def injection_layout(network, step_noise, where: str = "step_noise") -> list[tuple[str, ...]]:
    """Per layer the injection kinds of ``step_noise`` (all ``()`` for None or an inactive noise)."""
    inj = _injector(step_noise, where)
    L = len(network.layers)
    if inj is None:
        return [()] * L
    layout = [tuple(k) for k in inj.injection_layout(network)]
    if len(layout) != L or any(k not in INJECTION_KINDS for kinds in layout for k in kinds):
        raise BackendError(f"{where}: injection layout {layout!r}, expected {L} tuples of {INJECTION_KINDS}")
    return layout


def draw_injections(network, step_noise, samples: Sequence[int], layout: list) -> list[Optional[LayerInjection]]:
    """The injections of ``samples``, checked against ``layout`` (shapes, kinds)."""
    if not any(layout):
        return [None] * len(network.layers)
    out = list(step_noise.injections(network, np.asarray(samples, dtype=np.int64)))
    P = int(network.time_steps) + network.latency
    for i, (inj, kinds, layer) in enumerate(zip(out, layout, network.layers)):
        got = () if inj is None else inj.kinds
        if tuple(got) != tuple(k for k in INJECTION_KINDS if k in kinds):
            raise BackendError(f"step_noise: layer {i} injects {got}, its layout says {kinds}")
        want = (len(samples), P, int(np.prod(layer.out_shape)))
        for k in got:
            arr = getattr(inj, k)
            if tuple(arr.shape) != want:
                raise BackendError(f"step_noise: layer {i} {k} injection has shape {arr.shape}, expected {want}")
    return out
