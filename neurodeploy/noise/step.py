"""Step noises (drawn anew at every simulated step): :class:`StepNoise` and its fixed-point integers.

``spike-drop``, ``current-noise`` and ``membrane-noise`` at one level for one
seed; semantics in the docstring of :mod:`neurodeploy.noise.hardware`
("Step noises"). :func:`fixed_step_noise` gives the integers the backends
use; the float model's counterpart is
:class:`~neurodeploy.noise.torch_transforms.FloatStepNoise`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import lava_rules as lr
from ..backends.injection import LayerInjection
from ..ir import Network
from .draws import spiking_layer_indices, step_noise_draws
from .ir_transforms import check_noise_neurons
from .vocabulary import STEP_NOISE_NAMES, NoiseSpecError, check_level

__all__ = ["step_noise_integers", "StepNoise", "step_noise_layers", "fixed_step_noise", "INJECTS"]

_INT32_MAX = lr.INT32_MAX
# where each step noise enters a population (neurodeploy.backends.injection): the keep mask of the
# spikes it sends, its synaptic input a_in, its voltage v
INJECTS = {"spike-drop": "keep", "current-noise": "a_in", "membrane-noise": "v"}


def step_noise_integers(name: str, level: float, vth: int, draws: np.ndarray) -> np.ndarray:
    """Fixed-point form of step-noise draws: spike-drop keep mask (bool), or integer noise.

    ``membrane-noise``: ``rint(level * (vth << 6) * z)`` (int64, in units of
    ``v``), the level being the std as a fraction of the threshold.
    ``current-noise``: ``rint(level * vth * z)`` in units of the synaptic input
    ``a_in`` (the LIF adds ``a_in << 6`` to ``u``, so ``u`` receives about
    ``level * (vth << 6) * z``, in multiples of 64). Both are clipped to the
    int32 range (Lava's storage). The float model adds ``level * threshold * z``.
    """
    level = check_level(name, level)
    if name == "spike-drop":
        return draws >= level
    scale = lr.effective_vth(vth) if name == "membrane-noise" else int(vth)
    return np.clip(np.rint(level * scale * draws), -_INT32_MAX, _INT32_MAX).astype(np.int64)


@dataclass(frozen=True)
class StepNoise:
    """One per-step noise at one level for one seed: what the backends' ``step_noise=`` takes.

    See :func:`fixed_step_noise` for the fixed-point semantics (emulator and
    Lava) and :func:`float_step_noise_model` for the float model.
    """

    name: str
    level: float
    seed: int

    def __post_init__(self):
        if self.name not in STEP_NOISE_NAMES:
            raise NoiseSpecError(f"noise {self.name!r} is not a step noise "
                                 f"(step noises: {', '.join(STEP_NOISE_NAMES)})")
        object.__setattr__(self, "level", check_level(self.name, self.level))
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def active(self) -> bool:
        """Level 0 is the clean network exactly: the backends then add nothing to the graph."""
        return self.level > 0

    # -- the backends' step injector (neurodeploy.backends.injection.StepInjector)
    def injection_layout(self, network: Network) -> list[tuple[str, ...]]:
        """Per layer, what this noise injects there: ``(INJECTS[name],)`` in :func:`step_noise_layers`,
        else ``()`` (everywhere at level 0)."""
        layers = set(step_noise_layers(network, self.name)) if self.active else set()
        return [(INJECTS[self.name],) if i in layers else () for i in range(len(network.layers))]

    def injections(self, network: Network, samples) -> list[Optional[LayerInjection]]:
        """Per layer, :func:`fixed_step_noise` of ``samples`` as the backends' injection (None for none)."""
        kind = INJECTS[self.name]
        return [None if a is None else LayerInjection(**{kind: a}) for a in fixed_step_noise(network, self, samples)]


def step_noise_layers(network: Network, name: str) -> list[int]:
    """Layers a step noise acts on: every spiking population for current/membrane
    noise; for spike-drop the spiking populations whose spikes reach a synapse
    (every layer but a non-recurrent spiking output layer; the readout itself is
    never masked). A potential readout's integrator output layer gets none
    (module docstring, "Linear readout")."""
    last = len(network.layers) - 1
    spiking = spiking_layer_indices(network)
    if name != "spike-drop":
        return spiking
    return [i for i in spiking if i < last or getattr(network.layers[i], "weight_rec", None) is not None]


def fixed_step_noise(network: Network, noise: Optional[StepNoise], samples) -> list:
    """Per layer, the fixed-point step noise of ``samples`` (data-set indices):
    an array ``(len(samples), T + latency, n)`` in IR neuron order (row ``s`` =
    simulated step ``s``), or None where the layer gets none (all None at level 0).

    * ``spike-drop``: bool keep mask. A spike of layer ``l`` emitted at step
      ``s`` with ``keep[s] == False`` is not delivered to any synapse (the
      next layer's feed-forward one nor the layer's own recurrent one); the
      neuron still spikes (and resets), and the readout, spike counts and
      recorded spikes are the neuron's own spikes.
    * ``current-noise``: int64, added to the synaptic input ``a_in`` of step
      ``s`` (the sum of the feed-forward and recurrent inputs, int32) before
      ``u = decay(u) + (a_in << 6)`` (with Lava's wraps).
    * ``membrane-noise``: int64, added to the voltage of step ``s`` before the
      threshold comparison: ``v = clip(decay(v) + u + bias + noise)``
      (int32 sum, then Lava's 24-bit clip), spike where ``v > vth << 6``.
    """
    L = len(network.layers)
    out: list = [None] * L
    if noise is None or not noise.active:
        return out
    check_noise_neurons(network, noise.name)
    samples = np.asarray(samples, dtype=np.int64).reshape(-1)
    P = int(network.time_steps) + network.latency
    for i in step_noise_layers(network, noise.name):
        layer = network.layers[i]
        n = int(np.prod(layer.out_shape))
        draws = step_noise_draws(noise.name, noise.seed, i, samples, P, n)
        out[i] = step_noise_integers(noise.name, noise.level, int(layer.neurons.vth), draws)
    return out
