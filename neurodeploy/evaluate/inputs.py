"""One encoding for every backend: integer chip inputs, fed to float, emulator and Lava alike.

Samples are encoded once, from a seeded generator where the encoder is
stochastic (Poisson), into the integer tensor the chip receives. The float
model gets the very same values (divided by the input scale) through
:meth:`SNNClassifier.run_encoded`, so a float/fixed-point difference is never
a difference of inputs, and the model is never mutated to get there.
"""

from __future__ import annotations

import os
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from ..data.encoders import DirectEncoder, PoissonEncoder, TemporalEncoder
from ..errors import NeurodeployError
from ..fileio import require_regular_file
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


# --------------------------------------------------------------------------- input arrays from files

MAX_STEPS = 100_000
"""Most time steps per sample an input may have (``--steps`` and ``.npy`` inputs alike)."""


class InputFileError(NeurodeployError, ValueError):
    """An input array file (``simulate --input``) is not a usable ``.npy`` array; the message says why."""


def memory_available() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def _read_npy_header(path: Path, what: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) from a ``.npy`` header, without reading the data."""
    from numpy.lib import format as npy

    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
            if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
                raise InputFileError(f"{what} {path}: a zip archive (.npz?); expected a single array saved "
                                     f"with np.save (.npy)")
            if head != b"\x93NUMPY":
                raise InputFileError(f"{what} {path}: not a .npy file (starts with {head!r}); expected an "
                                     f"array saved with np.save")
            fh.seek(0)
            version = npy.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(fh)
            else:
                raise InputFileError(f"{what} {path}: .npy format version {version[0]}.{version[1]} holds "
                                     f"structured data; expected a plain integer array (version 1.0 or 2.0)")
            offset = fh.tell()
    except InputFileError:
        raise
    except OSError as exc:
        raise InputFileError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, TypeError, SyntaxError, OverflowError, EOFError, RecursionError, MemoryError,
            tokenize.TokenError) as exc:  # what numpy's header parser raises for a damaged header
        text = " ".join(str(exc).split())[:160]
        raise InputFileError(f"{what} {path}: not a readable .npy header ({text})") from None
    return tuple(int(d) for d in shape), np.dtype(dtype), bool(fortran), offset


def load_input_npy(path: Union[str, os.PathLike], input_shape: Sequence[int], max_value: int, *,
                   what: str = "--input", max_steps: int = MAX_STEPS) -> np.ndarray:
    """The ``(samples, steps, *input_shape)`` integer array in ``.npy`` file ``path``, fully checked.

    Everything that does not need the data is checked from the header first
    (file type, dtype, shape against the network's ``input_shape``, the
    file's size against the shape, the memory the run needs against what is
    available), then the values in bounded chunks through a read-only memory
    map: finite, integer-valued, within ``0..max_value``. Any problem is an
    :class:`InputFileError` naming ``what``, the file, what was found and
    what was expected; the returned array is an in-memory copy.
    """
    path = require_regular_file(path, f"{what} file")
    in_shape = tuple(int(s) for s in input_shape)
    expected = f"(samples, steps, {', '.join(map(str, in_shape))})"
    shape, dtype, _, offset = _read_npy_header(path, what)
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
        raise InputFileError(f"{what} {path}: dtype {dtype} ({dtype.kind!r}); expected integer (or bool, or "
                             f"float holding integers) spike or graded values")
    if len(shape) != 2 + len(in_shape) or tuple(shape[2:]) != in_shape:
        raise InputFileError(f"{what} {path}: shape {shape}, expected {expected} for the network's input "
                             f"shape {in_shape}")
    n, steps = shape[0], shape[1]
    if n < 1:
        raise InputFileError(f"{what} {path}: shape {shape} holds no samples; expected {expected} with "
                             f"samples >= 1")
    if not 1 <= steps <= max_steps:
        raise InputFileError(f"{what} {path}: shape {shape} has {steps} steps per sample; expected 1..{max_steps}")
    count = 1
    for d in shape:
        count *= d
    need = count * dtype.itemsize
    have = path.stat().st_size - offset
    if have != need:
        raise InputFileError(f"{what} {path}: the header says shape {shape} ({dtype}, {need} bytes of data) but "
                             f"the file holds {have} bytes (truncated or corrupt)")
    # the array itself, an int64 working copy and the recorded outputs (of a similar size)
    working = count * (dtype.itemsize + 8) + n * steps * 8
    avail = memory_available()
    if avail is not None and working > avail:
        raise InputFileError(f"{what} {path}: shape {shape} needs about {_gib(working)} of memory to run, "
                             f"{_gib(avail)} is available; pass fewer samples")
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        text = " ".join(str(exc).split())[:160]
        raise InputFileError(f"{what} {path}: cannot map the array ({text})") from None
    per_sample = max(1, count // n)
    chunk = max(1, (1 << 22) // per_sample)
    is_float = dtype.kind == "f"
    for start in range(0, n, chunk):
        part = np.asarray(mapped[start:start + chunk])
        if is_float:
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(part) | (part != np.round(part))
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                idx = (idx[0] + start,) + idx[1:]
                raise InputFileError(f"{what} {path}: value {float(part[(idx[0] - start,) + idx[1:]])!r} at index "
                                     f"{idx} ({dtype}); expected integer values 0..{max_value}")
        if part.size:
            lo, hi = part.min(), part.max()
            if lo < 0 or hi > max_value:
                bad = np.argwhere((part < 0) | (part > max_value))[0]
                idx = (int(bad[0]) + start,) + tuple(int(i) for i in bad[1:])
                value = part[tuple(bad)]
                shown = int(value) if dtype.kind in "biu" else float(value)
                raise InputFileError(f"{what} {path}: value {shown} at index {idx}; expected 0..{max_value} "
                                     f"({'0/1 spikes' if max_value == 1 else f'graded values up to {max_value}'})")
    return np.array(mapped)
