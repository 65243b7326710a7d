"""Norse-based spiking neurons: LIF, the stable DLIF, and current-based variants."""

from .functional import cuba_step, dlif_step, spike_fn
from .modules import RecurrentSpikingNeurons, SpikingNeurons, record_activity, spiking_layers

__all__ = [
    "cuba_step",
    "dlif_step",
    "spike_fn",
    "SpikingNeurons",
    "RecurrentSpikingNeurons",
    "record_activity",
    "spiking_layers",
]
