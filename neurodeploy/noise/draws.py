"""Seeded random draws of the hardware noises, shared by the IR and the float model.

The draw protocols of :mod:`neurodeploy.noise.hardware` (its docstring has the
table): :func:`draw_network_noise` for the network noises (one generator per
chip instance, every layer drawing whatever the level), :func:`step_noise_draws`
for the step noises (one generator per data-set sample and layer, one row per
simulated step). Both sides of a comparison (the IR transforms, the float
model's hooks, the backends' injections) take their numbers from here, so they
see identical draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import NeurodeployError
from ..ir import Network
from .vocabulary import NETWORK_NOISE_NAMES, STEP_NOISE_NAMES, NoiseSpecError

__all__ = ["HardwareNoiseError", "WEIGHT_NOISES", "LayerDraws", "draw_network_noise", "readout_index",
           "spiking_layer_indices", "chosen_neurons", "step_noise_draws", "float_step_rows"]

WEIGHT_NOISES = ("weight-mismatch", "bit-flip")   # the only network noises that reach a potential readout


class HardwareNoiseError(NeurodeployError, ValueError):
    """A network noise cannot be applied to this network; the message names layer and reason."""


@dataclass
class LayerDraws:
    """The random draws of one layer for one network noise (see the module docstring)."""

    weight: Optional[np.ndarray] = None       # N(0,1) factors or U[0,1) per bit
    weight_rec: Optional[np.ndarray] = None
    neurons: Optional[np.ndarray] = None      # permutation of the neuron indices
    factor: Optional[float] = None            # N(0,1), one per population


def _layer_shapes(network: Network) -> list[dict]:
    out = []
    for layer in network.layers:
        rec = getattr(layer, "weight_rec", None)
        out.append({"weight": tuple(np.shape(layer.weight)),
                    "weight_rec": None if rec is None else tuple(np.shape(rec)),
                    "n": int(np.prod(layer.out_shape)), "bits": int(layer.num_weight_bits)})
    return out


def draw_network_noise(network: Network, name: str, seed: int) -> list[LayerDraws]:
    """Per-layer random draws of network noise ``name`` for ``seed`` (independent of the level).

    Shapes come from ``network`` (the IR), so the float side, which calls this
    with the quantized network of the same model, sees identical draws.
    """
    if name not in NETWORK_NOISE_NAMES:
        raise NoiseSpecError(f"noise {name!r} is not a network noise "
                             f"(network noises: {', '.join(NETWORK_NOISE_NAMES)})")
    rng = np.random.default_rng(seed)
    draws = []
    readout = readout_index(network)
    for i, shp in enumerate(_layer_shapes(network)):
        d = LayerDraws()
        if i == readout and name not in WEIGHT_NOISES:
            pass        # the integrator readout: only its synapses are perturbed (module docstring)
        elif name == "weight-mismatch":
            d.weight = rng.standard_normal(shp["weight"])
            if shp["weight_rec"] is not None:
                d.weight_rec = rng.standard_normal(shp["weight_rec"])
        elif name == "bit-flip":
            d.weight = rng.random(shp["weight"] + (shp["bits"],))
            if shp["weight_rec"] is not None:
                d.weight_rec = rng.random(shp["weight_rec"] + (shp["bits"],))
        elif name in ("dead-neuron", "stuck-neuron"):
            d.neurons = rng.permutation(shp["n"])
        elif name == "threshold-mismatch":
            d.factor = float(rng.standard_normal())
        draws.append(d)
    return draws


def readout_index(network: Network) -> Optional[int]:
    """Index of the non-spiking integrator output layer of a potential readout, else None."""
    return len(network.layers) - 1 if network.readout == "potential" and network.layers else None


def spiking_layer_indices(network: Network) -> list[int]:
    """Indices of the spiking populations of ``network`` (every layer but a potential readout's integrator)."""
    readout = readout_index(network)
    return [i for i in range(len(network.layers)) if i != readout]


def chosen_neurons(draws: LayerDraws, level: float) -> np.ndarray:
    """Sorted indices of the ``round(level * n)`` neurons a dead/stuck noise picks in a layer."""
    n = draws.neurons.size
    k = int(np.floor(level * n + 0.5))
    return np.sort(draws.neurons[:k])


def _name_tag(name: str) -> int:
    import zlib

    return zlib.crc32(name.encode())


def step_noise_draws(name: str, seed: int, layer: int, samples, total_steps: int, n: int) -> np.ndarray:
    """Draws of step noise ``name`` for neuron population ``layer``: ``(len(samples), total_steps, n)``.

    The draw protocol for the step noises (``spike-drop``: U[0,1);
    ``current-noise``/``membrane-noise``: N(0,1)), which the backend hooks and
    the float model share: sample ``i`` of the data set draws from its own
    generator ``default_rng([seed, crc32(name), layer, i])``, one row of ``n``
    per simulated step, in step order. So the draws do not depend on batching
    (the emulator's batches, Lava's one sample at a time: drawing row by row
    gives the same numbers), and level 0 / other levels reuse the same numbers
    (spike-drop drops where ``u < level``: nested over levels). Row ``s`` is
    simulated step ``s`` of the backends (``T + latency`` per sample); the
    float model's step ``t`` of layer ``l`` is row ``t + l + 1``
    (:func:`float_step_rows`), where the backends show layer ``l``'s response
    to input step ``t``.
    """
    if name not in STEP_NOISE_NAMES:
        raise NoiseSpecError(f"noise {name!r} is not a step noise (step noises: {', '.join(STEP_NOISE_NAMES)})")
    samples = np.asarray(samples, dtype=np.int64).reshape(-1)
    out = np.empty((samples.size, int(total_steps), int(n)))
    tag = _name_tag(name)
    for k, s in enumerate(samples):
        g = np.random.default_rng([int(seed), tag, int(layer), int(s)])
        out[k] = g.random((total_steps, n)) if name == "spike-drop" else g.standard_normal((total_steps, n))
    return out


def float_step_rows(layer: int, time_steps: int) -> slice:
    """Rows of :func:`step_noise_draws` that the float model's ``time_steps`` steps of ``layer`` use."""
    return slice(layer + 1, layer + 1 + time_steps)
