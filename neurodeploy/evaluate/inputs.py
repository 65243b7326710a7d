"""One encoding for every backend: integer chip inputs, fed to float, emulator and Lava alike.

Samples are encoded once, from a seeded generator where the encoder is
stochastic (Poisson), into the integer tensor the chip receives. The float
model gets the very same values (divided by the input scale) through
:meth:`SNNClassifier.run_encoded`, so a float/fixed-point difference is never
a difference of inputs, and the model is never mutated to get there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..data.encoders import DirectEncoder, PoissonEncoder, TemporalEncoder
from ..errors import NeurodeployError
from ..ir import InputEncoding, Network
from ..models import SNNClassifier
from ..neurons.modules import record_activity


@dataclass
class ChipInputs:
    """Integer inputs ``values`` (samples, T, *input_shape) and how the float model reads them.

    ``repeated``: every step equals the first (direct encoding; ``values`` is
    then a read-only broadcast view). ``scale``: float input = value / scale.
    """

    values: np.ndarray
    scale: float
    repeated: bool

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __getitem__(self, idx) -> "ChipInputs":
        return ChipInputs(self.values[idx], self.scale, self.repeated)

    def nonzeros(self) -> np.ndarray:
        """Non-zero input values per sample over the T steps (each drives the first layer's synapses)."""
        v = self.values
        if self.repeated:
            return (v[:, 0] != 0).reshape(len(v), -1).sum(1) * v.shape[1]
        return (v != 0).reshape(len(v), -1).sum(1)

    def float_sequence(self, start: int, stop: int) -> torch.Tensor:
        """Time-major float input of samples ``start:stop`` (one step if ``repeated``)."""
        part = self.values[start:stop, :1] if self.repeated else self.values[start:stop]
        seq = torch.from_numpy(np.ascontiguousarray(np.moveaxis(part, 1, 0)).astype(np.float32))
        return seq / self.scale if self.scale != 1 else seq


def _compact(values: np.ndarray, max_value: int) -> np.ndarray:
    # spikes and 8-bit graded values fit uint8: a Poisson split is 8x smaller than int64
    return values.astype(np.uint8 if max_value <= 255 else np.int32, copy=False)


def encoding_generator(seed: int, stream: str = "inputs") -> torch.Generator:
    """The seeded generator that encodes evaluation inputs (Poisson spikes) for ``seed``.

    One derivation for every caller (the pipeline, sweeps, calibration), each
    ``stream`` a stream of its own; never torch's global RNG.
    """
    tag = int.from_bytes(stream.encode(), "little") % (2**31)
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0x656E63, tag]).generate_state(1)[0]))


def chip_inputs(model: SNNClassifier, network: Network, x: np.ndarray | torch.Tensor,
                generator: Optional[torch.Generator] = None) -> ChipInputs:
    """Encode samples ``x`` (in [0, 1]) once into the integer inputs of ``network``.

    Poisson spikes need ``generator`` (a seeded :class:`torch.Generator`, e.g.
    :func:`encoding_generator`): the same seed gives the same spikes, another
    seed other spikes.
    """
    return encode_inputs(model, network.input_encoding, int(network.time_steps), x, generator)


def encode_inputs(model: SNNClassifier, enc: InputEncoding, time_steps: int, x: np.ndarray | torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> ChipInputs:
    """:func:`chip_inputs` for an input encoding and step count (before there is a network)."""
    x_np = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if isinstance(model.encoder, PoissonEncoder):
        if generator is None:
            raise ValueError("Poisson-encoded inputs need a seeded generator (same seed, same spikes)")
        with torch.no_grad():
            spikes = model.encoder(model.quantize_input(torch.as_tensor(x_np)), generator)   # (T, B, ...)
        return ChipInputs(_compact(np.moveaxis(spikes.numpy(), 0, 1), 1), 1.0, False)
    top = (1 << int(enc.bits)) - 1 if enc.kind == "graded" else 1
    ints = _compact(enc.encode(x_np), top)
    scale = float(enc.scale) if enc.kind == "graded" else 1.0
    if isinstance(model.encoder, TemporalEncoder):
        return ChipInputs(ints, scale, False)
    if not isinstance(model.encoder, DirectEncoder):
        raise ValueError(f"encoder {type(model.encoder).__name__} has no chip input path")
    # a read-only view repeating the sample over T (the emulator computes repeated steps once)
    return ChipInputs(np.broadcast_to(ints[:, None], (ints.shape[0], time_steps, *ints.shape[1:])),
                      scale, True)


@torch.no_grad()
def float_run(model: SNNClassifier, inputs: ChipInputs, batch_size: int = 250,
              on_batch: Optional[Callable[[np.ndarray], None]] = None) -> dict[str, np.ndarray]:
    """The float model on chip inputs: predictions, output spike counts and per-layer spike counts.

    ``on_batch(sample_indices)`` runs before each batch (per-step noise hooks
    take their draws from it).
    """
    model.eval()
    preds, counts, layers = [], [], []
    T = int(inputs.values.shape[1])
    for i in range(0, len(inputs), batch_size):
        j = min(i + batch_size, len(inputs))
        if on_batch is not None:
            on_batch(np.arange(i, j))
        with record_activity(model) as recs:
            out = model.run_encoded(inputs.float_sequence(i, j), repeat=T if inputs.repeated else None)
        counts.append(out.sum(0).numpy())
        layers.append(torch.stack([r.spikes.flatten(2).sum((0, 2)) for r in recs], 1).numpy() if recs
                      else np.zeros((j - i, 0)))          # no spiking layer: a linear readout alone
        # the chip's answer: the argmax of output spike counts (ties -> lowest index, as numpy)
        preds.append(np.argmax(counts[-1] if model.readout == "spikes" else model.logits(out).numpy(), axis=1))
    return {"predictions": np.concatenate(preds), "output_counts": np.concatenate(counts).astype(np.int64),
            "layer_spikes": np.concatenate(layers).astype(np.int64)}
