"""What every backend shares: the result type, validation, Lava's weight rules.

Timing convention (Lava 0.10, verified against the running Lava backend):
a sample of ``T`` input steps is simulated for ``T + latency`` steps
(``latency = len(network.layers)``). Input values are presented at steps
``0..T-1`` and zeros afterwards. Every synaptic layer (Dense, Conv) adds one
step of delay: layer ``l`` (0-based) sees at step ``s`` what its input layer
emitted at step ``s - 1``, so the output layer's response to input step ``t``
appears at step ``t + latency``. A layer's recurrent weights deliver its own
spikes of step ``s`` at step ``s + 1``. Neuron biases act from step 0.

A network with ``readout == "potential"`` is read from the output layer's
membrane potential ``v`` after its last step ``T + latency - 1`` (the end of
the aligned window, so every response to the T input steps is in it):
``RunResult.output_v``, always filled for such networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import NeurodeployError
from ..ir import ConvLayer, DenseLayer, Network, Neurons
from ..lava_rules import (  # noqa: F401 - Lava's rules, re-exported for the backends and their callers
    BIAS_EXP_RANGE,
    BIAS_MANT_RANGE,
    DECAY_MAX,
    DU_RANGE,
    DV_RANGE,
    LAVA_NUM_WEIGHT_BITS_RANGE,
    GRADED_BITS_RANGE,
    NUM_WEIGHT_BITS_RANGE,
    VTH_MAX,
    VTH_RANGE,
    WEIGHT_EXP_RANGE,
    WEIGHT_RANGE,
    effective_weights,
    message_max,
    shift,
    wrap32,
)

__all__ = [
    "BackendError",
    "RunResult",
    "check_network",
    "check_inputs",
    "effective_weights",
    "shift",
    "wrap32",
    "input_max",
    "BACKENDS",
]

BACKENDS = ("emulator", "lava")

# The ranges a network must respect so that Lava 0.10's fixed-point CPU models run it without silent
# overflow of their storage types (and so that the emulator, which reproduces those models, agrees with
# them) are Lava's rules: neurodeploy.lava_rules (BIAS_MANT_RANGE, BIAS_EXP_RANGE, WEIGHT_EXP_RANGE,
# WEIGHT_RANGE, NUM_WEIGHT_BITS_RANGE, GRADED_BITS_RANGE, VTH_MAX; see shared/docs/loihi-fixed-point.md).


class BackendError(NeurodeployError, RuntimeError):
    """A backend cannot run this network or these inputs; the message says why."""


@dataclass
class RunResult:
    """What a backend returns for a batch of samples.

    ``output_spikes`` holds every simulated step (``time_steps + latency``);
    :meth:`aligned_output` is the window that corresponds to the float model's
    ``T`` steps. Neuron indices follow the IR (conv layers flattened (C, H, W)).
    ``readout`` is the network's; for ``"potential"`` ``output_v`` holds the
    output layer's ``v`` after the last step, from which :meth:`predictions` reads.
    """

    output_spikes: np.ndarray            # (samples, total_steps, n_out) uint8
    spike_counts: np.ndarray             # (samples, n_layers) int64, all steps
    final_u: Optional[list]              # per layer (samples, n_neurons) int64, or None
    final_v: Optional[list]
    latency: int
    time_steps: int
    layer_spikes: Optional[list] = None  # per layer (samples, total_steps, n) uint8, when recorded
    readout: str = "spikes"
    output_v: Optional[np.ndarray] = None  # (samples, n_out) int64: output layer's final v (potential readout)
    layer_u: Optional[list] = None       # per layer (samples, total_steps, n) int64: u after every step (traces)
    layer_v: Optional[list] = None       # the same for v
    # emulator, traced layers: {"u_wrap", "v_clip"} -> (samples, n) int64, how often u wrapped at 24 bits / v clipped
    layer_events: Optional[list] = None

    @property
    def total_steps(self) -> int:
        return int(self.output_spikes.shape[1])

    def aligned_output(self) -> np.ndarray:
        """Output spikes of steps ``latency .. latency + T - 1``: (samples, T, n_out)."""
        return self.output_spikes[:, self.latency:self.latency + self.time_steps]

    def predictions(self) -> np.ndarray:
        """Class per sample (ties -> lowest index): argmax of the aligned output spike
        counts, or for a potential readout of the output layer's final ``v``."""
        if self.readout == "potential":
            if self.output_v is None:
                raise BackendError("a potential readout needs RunResult.output_v (the output layer's final v), "
                                   "which this result does not hold")
            return np.argmax(self.output_v, axis=-1)
        counts = self.aligned_output().sum(axis=1, dtype=np.int64)
        return np.argmax(counts, axis=-1)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_range(where: str, name: str, value, lo: int, hi: int) -> None:
    if not _is_int(value):
        raise BackendError(f"{where}: {name} is {value!r} ({type(value).__name__}), expected an integer")
    if not lo <= int(value) <= hi:
        raise BackendError(f"{where}: {name} is {value}, expected {lo}..{hi}")


def check_network(network: Network, source: str = "network") -> Network:
    """Validate ``network`` for execution: IR consistency (:class:`IRError`) plus
    the value ranges Lava's fixed-point models need (:class:`BackendError`).

    Runs before any backend does work, so a malformed network never starts Lava.
    """
    if not isinstance(network, Network):
        raise BackendError(f"{source}: expected a neurodeploy.ir.Network, got {type(network).__name__}")
    network.validate(source)
    for i, layer in enumerate(network.layers):
        where = f"{source}: layer {i}" + (f" ({layer.name})" if layer.name else "")
        nrn = layer.neurons
        if isinstance(nrn, Neurons):            # sigma-delta neurons: their ranges are SigmaDeltaNeurons.validate's
            _check_cuba(where, nrn)
        _check_range(where, "weight_exp", layer.weight_exp, *WEIGHT_EXP_RANGE)
        _check_range(where, "num_weight_bits", layer.num_weight_bits, *LAVA_NUM_WEIGHT_BITS_RANGE)
        names = ["weight"]
        if isinstance(layer, DenseLayer) and layer.weight_rec is not None:
            names.append("weight_rec")
            _check_range(where, "weight_rec_exp", layer.weight_rec_exp, *WEIGHT_EXP_RANGE)
        for name in names:
            w = np.asarray(getattr(layer, name))
            if w.size and (w.min() < WEIGHT_RANGE[0] or w.max() > WEIGHT_RANGE[1]):
                raise BackendError(f"{where}: {name} spans {w.min()}..{w.max()}, "
                                   f"expected {WEIGHT_RANGE[0]}..{WEIGHT_RANGE[1]} (int32)")
        if isinstance(layer, ConvLayer):
            for name in ("stride", "padding", "dilation"):
                val = tuple(getattr(layer, name))
                lo = 0 if name == "padding" else 1
                if len(val) != 2 or not all(_is_int(v) and v >= lo for v in val):
                    raise BackendError(f"{where}: conv {name} is {val}, expected two integers >= {lo}")
            if not _is_int(layer.groups) or layer.groups < 1 or layer.weight.shape[0] % layer.groups:
                raise BackendError(f"{where}: conv groups {layer.groups} must be >= 1 and divide "
                                   f"the {layer.weight.shape[0]} output channels")
    enc = network.input_encoding
    if enc.kind == "graded":
        _check_range(f"{source}: input encoding", "bits", enc.bits, *GRADED_BITS_RANGE)
    return network


def _check_cuba(where: str, nrn: Neurons) -> None:
    """The ranges Lava's LIF stores exactly: bias_mant int16, du / dv / vth, bias_exp."""
    bias = np.asarray(nrn.bias_mant)
    if not np.issubdtype(bias.dtype, np.integer):
        raise BackendError(f"{where}: bias_mant has dtype {bias.dtype}, expected integers")
    if bias.size and (bias.min() < BIAS_MANT_RANGE[0] or bias.max() > BIAS_MANT_RANGE[1]):
        raise BackendError(f"{where}: bias_mant spans {bias.min()}..{bias.max()}, "
                           f"expected {BIAS_MANT_RANGE[0]}..{BIAS_MANT_RANGE[1]} (int16)")
    for key, (lo, hi) in (("du", DU_RANGE), ("dv", DV_RANGE), ("vth", VTH_RANGE)):
        value = getattr(nrn, key)
        if isinstance(value, np.ndarray):   # per neuron; shape and dtype checked by validate
            if value.size and (int(value.min()) < lo or int(value.max()) > hi):
                raise BackendError(f"{where}: neuron {key} spans {int(value.min())}..{int(value.max())}, "
                                   f"expected {lo}..{hi}")
        else:
            _check_range(where, f"neuron {key}", value, lo, hi)
    _check_range(where, "neuron bias_exp", nrn.bias_exp, *BIAS_EXP_RANGE)


def input_max(network: Network) -> int:
    """Largest input value the first layer can receive."""
    enc = network.input_encoding
    return message_max(0 if enc.kind == "spikes" else int(enc.bits))


def check_inputs(network: Network, inputs, as_int64: bool = True) -> np.ndarray:
    """Validated inputs ``(samples, T, *input_shape)``; :class:`BackendError` naming
    expected vs got for a wrong shape, non-integer values or values out of range.

    Returns int64 values, or with ``as_int64=False`` the array in its own dtype
    (bool, integer, or float holding integers) so a caller can convert batch by
    batch; the checks run in chunks, so memory stays bounded either way.
    """
    arr = np.asarray(inputs)
    in_shape = tuple(int(s) for s in network.input_shape)
    T = int(network.time_steps)
    expected = f"(samples, {T}, {', '.join(map(str, in_shape))})"
    if arr.ndim != 2 + len(in_shape) or arr.shape[1] != T or tuple(arr.shape[2:]) != in_shape:
        raise BackendError(f"inputs have shape {arr.shape}, expected {expected} "
                           f"(samples, time_steps, *network.input_shape)")
    if arr.shape[0] < 1:
        raise BackendError(f"inputs have shape {arr.shape}: no samples")
    is_float = np.issubdtype(arr.dtype, np.floating)
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer) or is_float):
        raise BackendError(f"inputs have dtype {arr.dtype}, expected integers")
    per_sample = max(1, arr[0].size)
    chunk = max(1, (1 << 22) // per_sample)
    lo_v, hi_v = None, None
    for start in range(0, arr.shape[0], chunk):
        part = arr[start:start + chunk]
        if is_float:
            bad = ~np.isfinite(part) | (part != np.round(part))
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                idx = (idx[0] + start,) + idx[1:]
                raise BackendError(f"inputs must be integer values (encoded spikes or graded values); "
                                   f"got {arr[idx]!r} at index {idx} (dtype {arr.dtype})")
        p_lo, p_hi = part.min(), part.max()
        lo_v = p_lo if lo_v is None else min(lo_v, p_lo)
        hi_v = p_hi if hi_v is None else max(hi_v, p_hi)
    hi = input_max(network)
    lo_v, hi_v = int(lo_v), int(hi_v)
    if lo_v < 0 or hi_v > hi:
        enc = network.input_encoding
        what = "0/1 spikes" if enc.kind == "spikes" else f"graded values of {enc.bits} bits"
        raise BackendError(f"inputs span {lo_v}..{hi_v}, expected 0..{hi} ({what}, "
                           f"input_encoding {enc.kind!r})")
    return arr.astype(np.int64, copy=False) if as_int64 else arr


def shaped_inputs(network: Network, inputs) -> np.ndarray:
    """``inputs`` as an array whose shape and dtype are checked (values are left to the caller's batches,
    floats fully through :func:`check_inputs`, which also checks they are integers)."""
    arr = np.asarray(inputs)
    in_shape = tuple(int(s) for s in network.input_shape)
    ok = (arr.ndim == 2 + len(in_shape) and arr.shape[0] >= 1 and arr.shape[1] == int(network.time_steps)
          and tuple(arr.shape[2:]) == in_shape
          and (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)))
    return arr if ok else check_inputs(network, arr, as_int64=False)


def reset_steps(network: Network, block: int, steps: int) -> Optional[list]:
    """Steps before which netx's LIFReset zeroes block ``block``'s u and v (block 0: the input population if
    there is one), over ``steps`` simulated steps; None without a reset schedule."""
    I = network.reset_interval
    if I is None:
        return None
    off = (int(network.reset_offset) + 1 + block) % I
    return [(s + 1) % I == off for s in range(steps)]


def trace_layers(record_traces, n_layers: int) -> tuple:
    """The layer indices ``record_traces=`` asks for: True -> every layer, False/None -> none, or an
    iterable of layer indices (negative ones count from the end)."""
    if record_traces is None or record_traces is False:
        return ()
    if record_traces is True:
        return tuple(range(n_layers))
    try:
        picks = [int(i) for i in record_traces]
    except (TypeError, ValueError):
        raise BackendError(f"record_traces is {record_traces!r}, expected True, False or layer indices") from None
    bad = [i for i in picks if not -n_layers <= i < n_layers]
    if bad:
        raise BackendError(f"record_traces layer {bad[0]} is out of range, expected 0..{n_layers - 1}")
    return tuple(sorted({i % n_layers for i in picks}))


def check_bias(network: Network, bias, n: int) -> Optional[np.ndarray]:
    """``bias=`` of the backends: the per-sample bias mantissas (n, *input_shape) of the network's input
    population (netx's Input block), as int64; None stays None."""
    if bias is None:
        return None
    if network.input_neurons is None:
        raise BackendError("bias= sets an input population's bias, but the network has none "
                           "(network.input_neurons is None)")
    bias = np.asarray(bias)
    want = (n, *(int(d) for d in network.input_shape))
    if bias.shape != want or not (np.issubdtype(bias.dtype, np.integer)
                                  or (np.issubdtype(bias.dtype, np.floating) and np.all(np.isfinite(bias))
                                      and np.array_equal(bias, np.trunc(bias)))):
        raise BackendError(f"bias has shape {bias.shape} ({bias.dtype}), expected integers of shape "
                           f"{want} (samples, *input_shape)")
    return bias.astype(np.int64)


def sample_ids_of(sample_ids, n: int) -> np.ndarray:
    """Data-set indices of ``n`` samples (injections are drawn per sample); default ``0..n-1``."""
    if sample_ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
    if ids.size != n:
        raise BackendError(f"sample_ids has {ids.size} entries for {n} samples")
    return ids
