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

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from .errors import NeurodeployError

SIGN_MODES = ("mixed", "excitatory", "inhibitory")
READOUTS = ("spikes", "potential")


class IRError(NeurodeployError, ValueError):
    """A network description is inconsistent; the message names layer and field."""


@dataclass
class Neurons:
    """A population of Loihi CUBA LIF neurons in fixed point.

    ``du``/``dv`` are Lava's decays (0..4095); ``vth`` the threshold mantissa
    (effective threshold ``vth << 6``); ``bias_mant`` one integer per neuron.
    """

    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray
    bias_exp: int = 0

    @property
    def size(self) -> int:
        return int(self.bias_mant.size)


@dataclass
class DenseLayer:
    """All-to-all synapses into a neuron population, optionally recurrent.

    ``weight`` is ``(out, in)``; ``weight_rec`` ``(out, out)`` connects the
    population to itself (spikes of step t arrive at step t+1).
    """

    weight: np.ndarray
    neurons: Neurons
    weight_exp: int = 0
    num_weight_bits: int = 8
    sign_mode: str = "mixed"
    weight_rec: Optional[np.ndarray] = None
    weight_rec_exp: int = 0
    name: str = ""

    @property
    def kind(self) -> str:
        return "dense_rec" if self.weight_rec is not None else "dense"

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

    @property
    def output_size(self) -> int:
        return int(np.prod(self.layers[-1].out_shape))

    @property
    def latency(self) -> int:
        """Steps from an input to the output layer: one per synaptic layer."""
        return len(self.layers)

    def layer_shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer."""
        return [layer.out_shape for layer in self.layers]

    def validate(self, source: str = "network") -> "Network":
        """Check shapes and integer types; raise :class:`IRError` naming the problem."""
        if not self.layers:
            raise IRError(f"{source}: the network has no layers")
        if self.time_steps < 1:
            raise IRError(f"{source}: time_steps is {self.time_steps}, expected >= 1")
        if self.readout not in READOUTS:
            raise IRError(f"{source}: readout {self.readout!r}, expected one of {READOUTS}")
        if self.input_encoding.kind not in ("graded", "spikes"):
            raise IRError(f"{source}: input encoding {self.input_encoding.kind!r}, expected 'graded' or 'spikes'")
        shape: tuple[int, ...] = tuple(int(s) for s in self.input_shape)
        for i, layer in enumerate(self.layers):
            where = f"{source}: layer {i}"
            for name in ("weight", "weight_rec"):
                w = getattr(layer, name, None)
                if w is None:
                    continue
                if not np.issubdtype(np.asarray(w).dtype, np.integer):
                    raise IRError(f"{where}: {name} has dtype {np.asarray(w).dtype}, expected integers")
            if layer.sign_mode not in SIGN_MODES:
                raise IRError(f"{where}: sign_mode {layer.sign_mode!r}, expected one of {SIGN_MODES}")
            if isinstance(layer, DenseLayer):
                if layer.weight.ndim != 2:
                    raise IRError(f"{where}: dense weight has shape {layer.weight.shape}, expected (out, in)")
                n_in = int(np.prod(shape))
                if layer.weight.shape[1] != n_in:
                    raise IRError(f"{where}: dense weight has {layer.weight.shape[1]} inputs, "
                                  f"but the previous layer has {n_in} outputs (shape {shape})")
                out = layer.weight.shape[0]
                if layer.weight_rec is not None and layer.weight_rec.shape != (out, out):
                    raise IRError(f"{where}: weight_rec has shape {layer.weight_rec.shape}, expected {(out, out)}")
            elif isinstance(layer, ConvLayer):
                if layer.weight.ndim != 4:
                    raise IRError(f"{where}: conv weight has shape {layer.weight.shape}, expected (out, in, kH, kW)")
                if tuple(layer.in_shape) != shape:
                    raise IRError(f"{where}: conv expects input {tuple(layer.in_shape)}, previous layer gives {shape}")
                if layer.weight.shape[1] * layer.groups != shape[0]:
                    raise IRError(f"{where}: conv weight has {layer.weight.shape[1]} input channels x "
                                  f"{layer.groups} groups, input has {shape[0]} channels")
                if min(layer.out_shape) < 1:
                    raise IRError(f"{where}: conv output shape {layer.out_shape} is empty")
            else:
                raise IRError(f"{where}: unsupported layer type {type(layer).__name__}")
            n_out = int(np.prod(layer.out_shape))
            nrn = layer.neurons
            if nrn.bias_mant.shape != (n_out,):
                raise IRError(f"{where}: bias has shape {nrn.bias_mant.shape}, expected ({n_out},)")
            for key, lo, hi in (("du", 0, 4095), ("dv", 0, 4095)):
                val = getattr(nrn, key)
                if not lo <= val <= hi:
                    raise IRError(f"{where}: neuron {key} is {val}, expected {lo}..{hi}")
            if nrn.vth < 0:
                raise IRError(f"{where}: neuron vth is {nrn.vth}, expected >= 0")
            shape = tuple(int(s) for s in layer.out_shape)
        return self
