"""The deployed-network description: a small, typed, framework-free IR.

One :class:`Network` sits between every part of the toolchain: the quantizer
produces it, exporters and importers serialize it (netx HDF5, NIR), and
backends execute it (the fixed-point emulator, Lava processes). It holds
integers exactly as Lava's fixed-point ``Dense``/``Conv`` and ``LIF`` process
models receive them, so a backend never rescales anything.

Semantics (Lava 0.10 ``fixed_pt``, see shared/docs/loihi-fixed-point.md):

* a synaptic layer sums ``weight @ spikes`` (graded inputs: ``weight @ values``)
  and shifts the sum by ``weight_exp``; every synaptic layer adds one step of
  delay, which is also how a layer's recurrent weights see last step's spikes;
* the neurons are Loihi CUBA LIF: ``u = u*(4096-(du+1))/4096 + (a_in << 6)``
  (rounded toward zero, 24-bit wrap), ``v = v*(4096-dv)/4096 + u + bias``
  (clipped to 24 bits), spike where ``v > vth << 6``, then ``v = 0``;
  ``bias = bias_mant << bias_exp`` per neuron.

Readout (``Network.readout``): ``"spikes"``, the class is the argmax of the
output layer's spike counts over the aligned window (steps ``latency ..
latency + T - 1``); ``"potential"``, the output layer is read as an integrator
(the way lava-dl writes PilotNet's last layer: ``du = 4095`` so ``u`` is the
step's input, ``dv = 0``, ``vth`` at its maximum so it never spikes) and the
class is the argmax of its membrane potential ``v`` after the last simulated
step ``T + latency - 1``, the end of the aligned window. ``v`` accumulates
from step 0 (every layer starts each sample at zero), so the bias enters
``T + latency`` times; the quantizer scales the bias by ``T / (T + latency)``
so that it totals what the float model's ``T`` steps add.

Shapes follow torch: images are ``(C, H, W)``; conv weights ``(out, in, kH, kW)``;
a dense layer after a conv layer reads the conv output flattened in ``(C, H, W)``
order. Backends and formats with other layouts (Lava's conv is ``(W, H, C)``)
convert at their boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from .errors import NeurodeployError, bounded
from .lava_rules import DU_RANGE, DV_RANGE, LAVA_NUM_WEIGHT_BITS_RANGE, SIGN_MODES, VTH_MAX, VTH_RANGE  # noqa: F401

READOUTS = ("spikes", "potential")
MAX_DELAY = 62                              # netx clips delays to 0..62 (Lava's DelayDense max_delay)
IR_INT_RANGE = (-(2**31), 2**31 - 1)        # weights and bias mantissas: 32-bit integers
IR_EXP_RANGE = (-32, 32)                    # weight/bias exponents: shifts of 32-bit values stay in int64


class IRError(NeurodeployError, ValueError):
    """A network description is inconsistent; the message names layer and field."""


@dataclass
class Neurons:
    """A population of Loihi CUBA LIF neurons in fixed point.

    ``du``/``dv`` are Lava's decays (``du`` -1..4095: u keeps ``4096 - (du + 1)``
    / 4096 per step, so -1 never decays it (netx ``iDecay 0``); ``dv`` 0..4096);
    ``vth`` the threshold mantissa (effective threshold ``vth << 6``; above
    131071 v never reaches it); ``bias_mant`` one integer per neuron. ``du``,
    ``dv`` and ``vth`` are one integer for the population or an integer array
    with one value per neuron (in the layer's flattened (C, H, W) order), as
    netx's per-neuron decay arrays give Lava's LIF.
    """

    du: "int | np.ndarray"
    dv: "int | np.ndarray"
    vth: "int | np.ndarray"
    bias_mant: np.ndarray
    bias_exp: int = 0

    @property
    def size(self) -> int:
        return int(self.bias_mant.size)

    @property
    def per_neuron(self) -> bool:
        """Whether any of du, dv, vth is an array (one value per neuron)."""
        return any(isinstance(getattr(self, k), np.ndarray) for k in ("du", "dv", "vth"))


SDNN_KINDS = ("delta", "sigma_delta", "sigma")
SDNN_STATE_EXP = 6          # netx hard-codes state_exp 6 for every sigma-delta process
SDNN_SPIKE_EXP = 6          # netx.hdf5.Network's default spike_exp
SDNN_EXP_SUM_MAX = 30       # 1 << (spike_exp + state_exp) must stay an int32, so Lava's scaling stays int32


@dataclass
class SigmaDeltaNeurons:
    """A population of sigma-delta neurons as Lava 0.10's ``lava.proc.sdn`` fixed_pt models run them.

    netx's ``SDNN`` neuron type (ReLU activation, ``cum_error`` off); every state is
    an int32 array and wraps at 32 bits; ``k = 1 << (spike_exp + state_exp)``:

    * ``kind="delta"`` (``Delta``, netx's input layer with an SDNN neuron; only as
      ``Network.input_neurons``): ``a = a_in << log2(k)``, ``delta = a - act + residue``,
      ``s = delta where |delta| >= vth*k else 0``, ``residue = delta - s``, ``act = a``,
      sends ``s >> state_exp``;
    * ``kind="sigma_delta"`` (``SigmaDelta``, a hidden SDNN layer): ``sigma += a_in``,
      ``act = max(sigma + bias, 0)`` with ``bias = int32(bias_mant * k)``, then the
      delta encoding above (``act`` in place of ``a``);
    * ``kind="sigma"`` (``Sigma``, an SDNN layer with ``sigma_output``): ``sigma +=
      a_in``, sends ``sigma``; it has no threshold and no bias (``vth`` and
      ``bias_mant`` must be 0).

    Messages are graded (netx's ``num_message_bits = 16``; values are not clipped),
    so the next synapse takes graded input. ``vth`` is netx's ``vThMant`` (one
    integer: Lava's Var holds one value); ``bias_mant`` one integer per neuron (in
    the layer's flattened (C, H, W) order).
    """

    kind: str
    vth: int
    bias_mant: np.ndarray
    spike_exp: int = SDNN_SPIKE_EXP
    state_exp: int = SDNN_STATE_EXP

    @property
    def size(self) -> int:
        return int(self.bias_mant.size)

    @property
    def scale(self) -> int:
        """``k = 1 << (spike_exp + state_exp)``: what Lava multiplies ``vth`` and ``bias`` by."""
        return 1 << (int(self.spike_exp) + int(self.state_exp))

    def validate(self, where: str, n: int, input_population: bool) -> None:
        """Raise :class:`IRError` (one line naming ``where`` and the field) unless this is a population of ``n``
        sigma-delta neurons Lava runs exactly (a ``delta`` one only as the input population)."""
        if not isinstance(self.kind, str) or self.kind not in SDNN_KINDS:
            raise IRError(f"{where}: sigma-delta kind {bounded(self.kind)}, expected one of {SDNN_KINDS}")
        if input_population != (self.kind == "delta"):
            raise IRError(f"{where}: sigma-delta kind {self.kind!r}, expected "
                          + ("'delta' (an input population is a Delta encoder)" if input_population
                             else "'sigma_delta' or 'sigma' ('delta' is only an input population)"))
        _check_int(where, "spike_exp", self.spike_exp, 0, SDNN_EXP_SUM_MAX)
        _check_int(where, "state_exp", self.state_exp, 0, SDNN_EXP_SUM_MAX)
        if int(self.spike_exp) + int(self.state_exp) > SDNN_EXP_SUM_MAX:
            raise IRError(f"{where}: spike_exp + state_exp is {int(self.spike_exp) + int(self.state_exp)}, expected "
                          f"at most {SDNN_EXP_SUM_MAX} (Lava scales vth and bias by 1 << (spike_exp + state_exp) "
                          f"in int32)")
        if isinstance(self.vth, np.ndarray):
            raise IRError(f"{where}: sigma-delta vth is an array of shape {self.vth.shape}, expected one integer "
                          f"(Lava's Delta / SigmaDelta hold one threshold)")
        _check_int(where, "sigma-delta vth", self.vth, 0, (2**31 - 1) // self.scale)
        _check_int_array(where, "bias_mant", self.bias_mant)
        if self.bias_mant.shape != (n,):
            raise IRError(f"{where}: bias has shape {self.bias_mant.shape}, expected ({n},)")
        if self.kind != "sigma_delta" and np.any(self.bias_mant):
            raise IRError(f"{where}: a {self.kind!r} population has a nonzero bias, expected none (Lava's "
                          f"{'Delta' if self.kind == 'delta' else 'Sigma'} takes no bias)")
        if self.kind == "sigma" and int(self.vth) != 0:
            raise IRError(f"{where}: a 'sigma' population has vth {int(self.vth)}, expected 0 (Lava's Sigma has "
                          f"no threshold)")


def is_sigma_delta(network: "Network") -> bool:
    """Whether ``network`` holds sigma-delta neurons (its input population or any layer)."""
    return isinstance(network.input_neurons, SigmaDeltaNeurons) or any(
        isinstance(getattr(layer, "neurons", None), SigmaDeltaNeurons) for layer in network.layers)


@dataclass
class DenseLayer:
    """All-to-all synapses into a neuron population, optionally recurrent.

    ``weight`` is ``(out, in)``; ``weight_rec`` ``(out, out)`` connects the
    population to itself (spikes of step t arrive at step t+1). ``delay``
    (``(out, in)`` integers 0..``MAX_DELAY``, feed-forward only): Lava's
    ``DelayDense``, a spike of step t over synapse (i, j) arrives at step
    ``t + 1 + delay[i, j]``; None: no delays (Lava's ``Dense``).
    """

    weight: np.ndarray
    neurons: Neurons
    weight_exp: int = 0
    num_weight_bits: int = 8
    sign_mode: str = "mixed"
    weight_rec: Optional[np.ndarray] = None
    weight_rec_exp: int = 0
    name: str = ""
    delay: Optional[np.ndarray] = None

    @property
    def kind(self) -> str:
        return "dense_rec" if self.weight_rec is not None else "dense"

    @property
    def max_delay(self) -> int:
        """The longest synaptic delay (0 without delays)."""
        return 0 if self.delay is None or self.delay.size == 0 else int(self.delay.max())

    @property
    def in_size(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (int(self.weight.shape[0]),)


@dataclass
class ConvLayer:
    """A 2-D convolution into a neuron population of shape ``out_shape`` (C, H, W)."""

    weight: np.ndarray
    neurons: Neurons
    in_shape: tuple[int, int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    weight_exp: int = 0
    num_weight_bits: int = 8
    sign_mode: str = "mixed"
    name: str = ""

    kind = "conv"

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return conv_out_shape(self.in_shape, self.weight.shape, self.stride, self.padding, self.dilation)


def conv_out_shape(in_shape, weight_shape, stride, padding, dilation) -> tuple[int, int, int]:
    """Output (C, H, W) of a 2-D convolution, as torch computes it."""
    c_out, _, kh, kw = weight_shape
    _, h, w = in_shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return (int(c_out), int(oh), int(ow))


Layer = Union[DenseLayer, ConvLayer]


@dataclass
class InputEncoding:
    """How samples in [0, 1] become the integer input of the first layer.

    ``graded``: every step the first layer receives ``round(x * scale)`` as a
    graded spike (``bits`` wide), i.e. direct encoding in fixed point.
    ``spikes``: the input already is 0/1 spikes (Poisson encoding).
    """

    kind: str = "graded"
    bits: int = 8
    scale: float = 255.0

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Integer input values for samples ``x`` (any shape), as int64."""
        if self.kind == "spikes":
            return (np.asarray(x) > 0).astype(np.int64)
        q = np.rint(np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * self.scale)
        return q.astype(np.int64)


@dataclass
class Network:
    """A deployed spiking network: input description plus layers in order.

    ``time_steps`` is T, the number of input steps of one sample. ``readout``
    says how the class is read from the last layer (see the module doc):
    ``"spikes"`` (argmax of its spike counts) or ``"potential"`` (argmax of its
    membrane potential ``v`` at the end of the run). ``profile`` names the
    hardware profile the network was quantized for; ``metadata`` is free-form
    provenance.
    """

    input_shape: tuple[int, ...]
    layers: list[Layer]
    time_steps: int
    input_encoding: InputEncoding = field(default_factory=InputEncoding)
    profile: str = ""
    metadata: dict = field(default_factory=dict)
    readout: str = "spikes"
    # netx's Input block: a LIF population of ``input_shape`` with no synapse before layer 0, driven by a
    # per-sample bias (``bias=`` of the emulator, (samples, *input_shape)) and the inputs added to its a_in;
    # its binary spikes feed layer 0 in the same step (it adds no latency). None: the inputs feed layer 0.
    input_neurons: Optional[Union[Neurons, "SigmaDeltaNeurons"]] = None
    # netx's reset schedule (LIFReset): block k's u and v are zeroed before step n when
    # (n + 1) % reset_interval == (reset_offset + 1 + k) % reset_interval (block 0: the input population
    # when there is one, else layer 0). None: no reset.
    reset_interval: Optional[int] = None
    reset_offset: int = 0

    @property
    def output_size(self) -> int:
        return int(np.prod(self.layers[-1].out_shape))

    @property
    def latency(self) -> int:
        """Steps from an input to the output layer: one per synaptic layer, plus each layer's longest delay."""
        return sum(1 + getattr(layer, "max_delay", 0) for layer in self.layers)

    def layer_shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer."""
        return [layer.out_shape for layer in self.layers]

    def validate(self, source: str = "network") -> "Network":
        """Check types, shapes and value ranges; raise :class:`IRError` naming the layer and field.

        Robust to any field value (a float where an integer belongs, a bytes
        or object array, a complex or bool dtype): every problem is an
        :class:`IRError`, never another exception. The ranges are what the
        IR's integer arithmetic represents safely (``IR_INT_RANGE``,
        ``IR_EXP_RANGE``, 1..9 weight bits (9 mixed-sign only), ``du`` -1..4095,
        ``dv`` 0..4096, ``vth`` up to ``(2**31 - 1) >> 6``: what Lava 0.10's CPU
        models run exactly); the backends check the tighter limits Lava needs.
        """
        if not isinstance(self.layers, list) or not self.layers:
            raise IRError(f"{source}: the network has no layers")
        _check_int(source, "time_steps", self.time_steps, 1, None)
        if not isinstance(self.readout, str) or self.readout not in READOUTS:
            raise IRError(f"{source}: readout {bounded(self.readout)}, expected one of {READOUTS}")
        enc = self.input_encoding
        if not isinstance(enc, InputEncoding):
            raise IRError(f"{source}: input_encoding is a {type(enc).__name__}, expected an InputEncoding")
        if not isinstance(enc.kind, str) or enc.kind not in ("graded", "spikes"):
            raise IRError(f"{source}: input encoding {bounded(enc.kind)}, expected 'graded' or 'spikes'")
        _check_int(source, "input encoding bits", enc.bits, 1, 32)
        if not _is_real(enc.scale) or not 0 < enc.scale <= 2**53:  # NaN fails too
            raise IRError(f"{source}: input encoding scale is {bounded(enc.scale)}, expected a finite number > 0 "
                          f"(at most 2**53)")
        if not isinstance(self.profile, str):
            raise IRError(f"{source}: profile is {bounded(self.profile)}, expected a string")
        if not isinstance(self.metadata, dict):
            raise IRError(f"{source}: metadata is a {type(self.metadata).__name__}, expected a dict")
        if not isinstance(self.input_shape, (tuple, list)) or not self.input_shape \
                or not all(_is_int(s) and s >= 1 for s in self.input_shape):
            raise IRError(f"{source}: input_shape is {bounded(self.input_shape)}, expected a tuple of positive "
                          f"integers")
        shape: tuple[int, ...] = tuple(int(s) for s in self.input_shape)
        if self.reset_interval is not None:
            _check_int(source, "reset_interval", self.reset_interval, 1, None)
        _check_int(source, "reset_offset", self.reset_offset, 0, None)
        if is_sigma_delta(self):
            self._validate_sigma_delta_mix(source)
        if isinstance(self.input_neurons, SigmaDeltaNeurons):
            self.input_neurons.validate(f"{source}: input population", math.prod(shape), True)
        elif self.input_neurons is not None:
            nrn = self.input_neurons
            where = f"{source}: input population"
            if not isinstance(nrn, Neurons):
                raise IRError(f"{where}: input_neurons is a {type(nrn).__name__}, expected Neurons")
            n_in = math.prod(shape)
            _check_int_array(where, "bias_mant", nrn.bias_mant)
            if nrn.bias_mant.shape != (n_in,):
                raise IRError(f"{where}: bias has shape {nrn.bias_mant.shape}, expected ({n_in},)")
            for key, lo, hi in (("du", *DU_RANGE), ("dv", *DV_RANGE), ("vth", *VTH_RANGE)):
                value = getattr(nrn, key)
                if isinstance(value, np.ndarray):
                    _check_per_neuron(where, f"neuron {key}", value, n_in, lo, hi)
                else:
                    _check_int(where, f"neuron {key}", value, lo, hi)
            _check_int(where, "neuron bias_exp", nrn.bias_exp, *IR_EXP_RANGE)
        for i, layer in enumerate(self.layers):
            where = f"{source}: layer {i}"
            if not isinstance(layer, (DenseLayer, ConvLayer)):
                raise IRError(f"{where}: unsupported layer type {type(layer).__name__}")
            if not isinstance(layer.name, str):
                raise IRError(f"{where}: name is {bounded(layer.name)}, expected a string")
            for name in ("weight", "weight_rec"):
                w = getattr(layer, name, None)
                if w is not None:
                    _check_int_array(where, name, w)
            if not isinstance(layer.sign_mode, str) or layer.sign_mode not in SIGN_MODES:
                raise IRError(f"{where}: sign_mode {bounded(layer.sign_mode)}, expected one of {SIGN_MODES}")
            _check_int(where, "weight_exp", layer.weight_exp, *IR_EXP_RANGE)
            _check_int(where, "num_weight_bits", layer.num_weight_bits, *LAVA_NUM_WEIGHT_BITS_RANGE)
            if int(layer.num_weight_bits) > 8 and layer.sign_mode != "mixed":
                raise IRError(f"{where}: num_weight_bits is {int(layer.num_weight_bits)} with sign_mode "
                              f"{layer.sign_mode!r}, expected 1..8 (9 bits only for mixed-sign weights)")
            if isinstance(layer, DenseLayer):
                _check_int(where, "weight_rec_exp", layer.weight_rec_exp, *IR_EXP_RANGE)
                if layer.weight.ndim != 2:
                    raise IRError(f"{where}: dense weight has shape {layer.weight.shape}, expected (out, in)")
                n_in = math.prod(shape)
                if layer.weight.shape[1] != n_in:
                    raise IRError(f"{where}: dense weight has {layer.weight.shape[1]} inputs, "
                                  f"but the previous layer has {n_in} outputs (shape {shape})")
                out = layer.weight.shape[0]
                if layer.weight_rec is not None and layer.weight_rec.shape != (out, out):
                    raise IRError(f"{where}: weight_rec has shape {layer.weight_rec.shape}, expected {(out, out)}")
                if layer.delay is not None:
                    _check_int_array(where, "delay", layer.delay)
                    if layer.delay.shape != layer.weight.shape:
                        raise IRError(f"{where}: delay has shape {layer.delay.shape}, expected {layer.weight.shape} "
                                      f"(one per synapse)")
                    if layer.delay.size and (int(layer.delay.min()) < 0 or int(layer.delay.max()) > MAX_DELAY):
                        raise IRError(f"{where}: delay spans {int(layer.delay.min())}..{int(layer.delay.max())}, "
                                      f"expected 0..{MAX_DELAY} (Lava's DelayDense max_delay)")
                    if layer.weight_rec is not None:
                        raise IRError(f"{where}: delays on a recurrent layer are not supported (netx builds "
                                      f"them without the weight exponent)")
            else:
                if layer.weight.ndim != 4 or min(layer.weight.shape) < 1:
                    raise IRError(f"{where}: conv weight has shape {layer.weight.shape}, expected (out, in, kH, kW) "
                                  f"with positive sizes")
                _check_int_tuple(where, "in_shape", layer.in_shape, 3, 1)
                _check_int_tuple(where, "stride", layer.stride, 2, 1)
                _check_int_tuple(where, "padding", layer.padding, 2, 0)
                _check_int_tuple(where, "dilation", layer.dilation, 2, 1)
                _check_int(where, "groups", layer.groups, 1, None)
                if tuple(int(s) for s in layer.in_shape) != shape:
                    raise IRError(f"{where}: conv expects input {tuple(layer.in_shape)}, previous layer gives {shape}")
                if layer.weight.shape[1] * layer.groups != shape[0]:
                    raise IRError(f"{where}: conv weight has {layer.weight.shape[1]} input channels x "
                                  f"{layer.groups} groups, input has {shape[0]} channels")
                if layer.weight.shape[0] % layer.groups:
                    raise IRError(f"{where}: conv groups {layer.groups} do not divide the "
                                  f"{layer.weight.shape[0]} output channels")
                if min(layer.out_shape) < 1:
                    raise IRError(f"{where}: conv output shape {layer.out_shape} is empty")
            n_out = math.prod(layer.out_shape)
            if n_out < 1:
                raise IRError(f"{where}: the layer has no neurons (output shape {layer.out_shape})")
            nrn = layer.neurons
            if isinstance(nrn, SigmaDeltaNeurons):
                nrn.validate(where, n_out, False)
                shape = tuple(int(s) for s in layer.out_shape)
                continue
            if not isinstance(nrn, Neurons):
                raise IRError(f"{where}: neurons is a {type(nrn).__name__}, expected Neurons")
            _check_int_array(where, "bias_mant", nrn.bias_mant)
            if nrn.bias_mant.shape != (n_out,):
                raise IRError(f"{where}: bias has shape {nrn.bias_mant.shape}, expected ({n_out},)")
            for key, lo, hi in (("du", *DU_RANGE), ("dv", *DV_RANGE), ("vth", *VTH_RANGE)):
                value = getattr(nrn, key)
                if isinstance(value, np.ndarray):
                    _check_per_neuron(where, f"neuron {key}", value, n_out, lo, hi)
                else:
                    _check_int(where, f"neuron {key}", value, lo, hi)
            _check_int(where, "neuron bias_exp", nrn.bias_exp, *IR_EXP_RANGE)
            shape = tuple(int(s) for s in layer.out_shape)
        return self

    def _validate_sigma_delta_mix(self, source: str) -> None:
        """A sigma-delta network is sigma-delta throughout (the backends do not mix CUBA and sigma-delta layers)
        and has no recurrent weights or reset schedule (netx ignores reset for sigma-delta neurons)."""
        if self.input_neurons is not None and not isinstance(self.input_neurons, SigmaDeltaNeurons):
            raise IRError(f"{source}: input population: CUBA neurons in a sigma-delta network, expected "
                          f"SigmaDeltaNeurons (kind 'delta') or none")
        for i, layer in enumerate(self.layers):
            nrn = getattr(layer, "neurons", None)
            if not isinstance(nrn, SigmaDeltaNeurons):
                raise IRError(f"{source}: layer {i}: neurons is a {type(nrn).__name__} in a sigma-delta network, "
                              f"expected SigmaDeltaNeurons (CUBA and sigma-delta layers do not mix)")
            if isinstance(layer, DenseLayer) and layer.weight_rec is not None:
                raise IRError(f"{source}: layer {i}: weight_rec on a sigma-delta layer, expected none")
            if getattr(layer, "delay", None) is not None:
                raise IRError(f"{source}: layer {i}: synaptic delays on a sigma-delta layer are not supported, "
                              f"expected none")
        if self.reset_interval is not None:
            raise IRError(f"{source}: reset_interval {bounded(self.reset_interval)} on a sigma-delta network, "
                          f"expected None (netx ignores reset for sigma-delta neurons)")



def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_int(where: str, name: str, value: object, lo: Optional[int], hi: Optional[int]) -> None:
    if not _is_int(value):
        raise IRError(f"{where}: {name} is {bounded(value)} ({type(value).__name__}), expected an integer")
    v = int(value)  # type: ignore[call-overload]
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise IRError(f"{where}: {name} is {bounded(v)}, expected {rng}")


def _check_per_neuron(where: str, name: str, value: np.ndarray, n: int, lo: int, hi: int) -> None:
    """An integer array with one value per neuron, each in ``lo..hi``."""
    if value.dtype.kind not in "iu":
        raise IRError(f"{where}: {name} has dtype {value.dtype}, expected integers")
    if value.shape != (n,):
        raise IRError(f"{where}: {name} has shape {value.shape}, expected one integer or ({n},) per neuron")
    if value.size and (int(value.min()) < lo or int(value.max()) > hi):
        raise IRError(f"{where}: {name} spans {int(value.min())}..{int(value.max())}, expected {lo}..{hi}")


def _check_int_tuple(where: str, name: str, value: object, n: int, lo: int) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != n or not all(_is_int(v) and v >= lo for v in value):
        raise IRError(f"{where}: {name} is {bounded(value)}, expected {n} integers >= {lo}")


def _check_int_array(where: str, name: str, value: object) -> None:
    """An integer numpy array (not bool, bytes, object, float or complex) with values in ``IR_INT_RANGE``."""
    if not isinstance(value, np.ndarray):
        raise IRError(f"{where}: {name} is a {type(value).__name__} ({bounded(value)}), expected an integer "
                      f"numpy array")
    if value.dtype.kind not in "iu":
        raise IRError(f"{where}: {name} has dtype {value.dtype}, expected integers")
    if value.size:
        lo, hi = int(value.min()), int(value.max())
        if lo < IR_INT_RANGE[0] or hi > IR_INT_RANGE[1]:
            raise IRError(f"{where}: {name} spans {lo}..{hi}, expected {IR_INT_RANGE[0]}..{IR_INT_RANGE[1]} "
                          f"(32-bit integers)")
