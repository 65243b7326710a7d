"""lava-dl netx HDF5 network description: write and read the fixed-point IR.

``write_netx(network, path)`` writes the layout that lava-dl 0.6.0's
``lava.lib.dl.netx.hdf5.Network`` loads, with values chosen so that the Lava
processes netx builds compute exactly what our :class:`~neurodeploy.ir.Network`
describes. ``read_netx(path)`` reads such files, also ones written by other
tools (slayer's ``export_hdf5``, hand-made files), and returns the IR of what
netx would run.

Conventions, read from lava-dl 0.6.0 and lava-nc 0.10.0 source
------------------------------------------------------------------
* Layout (``netx/utils.py: NetDict``, ``netx/hdf5.py: Network._create``):
  everything is a *dataset* under ``layer/<i>/`` with ``i = 0 .. N-1``
  (netx indexes ``layer[i]`` for ``i in range(len(layer))``, so no other
  children may live under ``layer/``). ``type`` is read as ``value[0]`` or
  ``value[()]`` and ASCII-decoded; we write it as slayer does, a ``(1,)``
  ``S10`` array.
* ``input`` (``Network._create``): without a ``neuron`` entry only ``shape``
  is used, reversed to Lava's (W, H, C) order; with one, netx builds an extra
  input LIF population (``create_input``), which the IR has no place for.
* ``dense``/``dense_rec`` (``Network.create_dense``): output size
  ``prod(shape)``; ``weight`` (out, in) (1-D is reshaped), ``weight_rec``
  (out, out), both cast with ``astype(int)`` (truncation). The weights (for
  ``dense_rec`` the concatenation ``[weight, weight_rec]``) go through netx's
  ``utils.optimize_weight_bits``: mixed-sign weights outside [-256, 254] are
  clipped (with a printed warning), then the matrix is shifted left by
  ``scale_bits`` so that it fills 8 bits and ``weight_exponent =
  -scale_bits``; ``num_weight_bits = 8 - scale_bits - n`` from the common
  power-of-two factor. Lava's ``Dense`` (``proc/dense/models.py``,
  ``PyDenseModelBitAcc``) then derives the sign mode itself (netx does not
  pass it; ``utils/weightutils.py: determine_sign_mode``), clips and drops
  ``8 - num_weight_bits + mixed`` low bits, sums and shifts the sum right by
  ``scale_bits``. The net effect is ``a = W @ s`` with the stored integers
  ``W``, provided they lie in netx's range: **netx only ever scales weights
  up**, so a netx file holds *plain integer effective weights*; there is no
  way to write a fractional weight (our ``weight_exp < 0`` with mantissas
  that are not multiples of ``2**-weight_exp``) or one beyond 8 bits (our
  ``weight_exp > 0`` with large mantissas). Those raise
  :class:`NetxExportError`. An all-zero matrix also cannot be loaded
  (``optimize_weight_bits`` divides by its maximum).
* ``conv`` (``Network.create_conv``): ``shape`` (C, H, W) reversed;
  ``weight`` (out, in, kH, kW) (a trailing slayer time axis of 1 is
  dropped), flipped spatially and transposed to Lava's (out, kW, kH, in);
  Lava's ``conv/utils.py: conv`` flips it back and calls torch's
  ``conv2d`` (a correlation), so the stored kernel is the torch kernel.
  ``stride``/``padding``/``dilation`` are (H, W) pairs or scalars (netx
  reverses pairs), ``groups`` a scalar. netx passes neither ``weight_exp``
  nor ``num_weight_bits`` to Lava's ``Conv`` and its CPU model applies no
  clipping or truncation: the stored integers are the effective weights.
* ``flatten`` (``Network._create``): the next dense layer reads the previous
  layer's (W, H, C) output transposed to (C, H, W) and flattened, i.e. the
  torch/IR order.
* ``neuron`` (``Network.get_neuron_params``): ``type`` ``CUBA`` (or
  ``LOIHI``) becomes Lava's ``LIF`` with ``du = iDecay - 1``, ``dv =
  vDecay``, ``vth = vThMant``, ``bias_exp = 6`` and ``bias_mant = bias``;
  ``refDelay`` and ``gradedSpike`` are not used; ``messageBits`` > 0 would
  make the output graded. A dense layer without ``neuron`` gets a built-in
  non-leaky integrator (``iDecay 0, vDecay 4096``) that the IR cannot
  represent, so a missing ``neuron`` is an error here.
* ``bias`` (``blocks/process.py: AbstractBlock._neuron``): dense: one value
  per neuron (or a scalar); conv: per channel ``(C,)`` or per neuron in
  Lava's (W, H, C) layout. Effective bias ``bias << 6``.
* Graded input: netx's ``Network(..., input_message_bits=0)`` default treats
  the input as binary spikes; for our ``graded`` input encoding pass
  ``input_message_bits=network.input_encoding.bits`` (stored in the file as
  the attribute ``neurodeploy.netx_input_message_bits``).

What the IR means (``neurodeploy/ir.py``)
-----------------------------------------
For every synaptic layer (dense and conv alike) the effective integer
weights are Lava's ``Dense`` transform of the IR mantissas: clip by
``sign_mode`` to 8 bits, drop ``8 - num_weight_bits + mixed`` low bits, then
the *sum* is shifted by ``weight_exp``. (The quantizer emits mantissas on
which clip and truncation are no-ops, so for its output this is simply
``mantissa * 2**weight_exp``.) Neurons: ``du``, ``dv``, ``vth`` as Lava's LIF,
effective bias ``bias_mant << bias_exp`` (``>>`` for negative exponents).
netx fixes ``bias_exp = 6``, so the effective bias must be a multiple of 64.

Round trip
----------
Besides the netx datasets the writer stores the exact IR (mantissas,
exponents, bit widths, sign modes, names, time steps, input encoding,
profile, metadata) under a root group ``neurodeploy`` that netx never looks
at (it reads only ``layer``). The reader returns that IR after checking that
it still describes the same computation as the netx datasets (a file edited
by another tool raises :class:`NetxFormatError`). Files without the group are
read from the netx datasets alone, with ``bias_exp = 6`` and the simplest
exact weight representation (``weight_exp 0``, 8 bits, when that is exact,
otherwise netx's own scaled representation).

``write_netx(..., exact=False)`` also writes networks netx cannot hold
exactly (e.g. the quantizer's non-zero ``weight_exp``): those layers are
rescaled for lava-dl (weights, threshold and bias times ``2**k``, rounded) with
a :class:`NetxInexactWarning`, while the ``neurodeploy`` group keeps the exact
IR for :func:`read_netx`.

Potential readout
-----------------
A network with ``readout == "potential"`` (a linear readout, see
``neurodeploy/quant/quantizer.py``) ends in an integrator layer written the way
lava-dl writes PilotNet's last layer (``tests/lava/lib/dl/netx/gts/pilotnet_lif``):
a ``dense`` layer whose ``neuron`` is ``CUBA`` with ``iDecay 4096`` (u is the
step's input), ``vDecay 0`` (v sums) and ``vThMant 131071`` (the largest
threshold; the quantizer keeps v below it). lava-dl users read the class as
the argmax of that population's ``v`` after ``T + latency`` steps, every layer
reset at the start of each sample (netx's ``reset_interval = T + latency``,
``reset_offset = 1``). The readout kind is stored in the ``neurodeploy`` group
(attribute ``readout``); a file without the group reads as ``"potential"`` when
its last layer is such an integrator (``du 4095, dv 0, vth 131071``), else
``"spikes"``.

Writing is atomic: a temporary file next to the target, renamed over it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import NeurodeployError
from ..ir import ConvLayer, DenseLayer, InputEncoding, IRError, Layer, Network, Neurons

__all__ = ["NetxFormatError", "NetxExportError", "NetxInexactWarning", "write_netx", "read_netx", "FORMAT_VERSION",
           "EXTRA_GROUP"]

FORMAT_VERSION = 1
EXTRA_GROUP = "neurodeploy"
NETX_BIAS_EXP = 6  # netx: bias_exp is always 6 (hdf5.py, get_neuron_params)
SUPPORTED_TYPES = ("input", "dense", "dense_rec", "conv", "flatten")
NOT_IMPLEMENTED_BY_NETX = ("pool", "average", "concat", "convT", "unpool")
VTH_MAX = 2**17 - 1
READOUTS = ("spikes", "potential")

PathLike = Union[str, os.PathLike]


class NetxFormatError(NeurodeployError, ValueError):
    """A netx HDF5 file cannot be read; the message names file, layer, field, value and expectation."""

    def __init__(self, message: str, *, path: Optional[str] = None, layer: Optional[int] = None,
                 field: Optional[str] = None) -> None:
        super().__init__(message)
        self.path, self.layer, self.field = path, layer, field


class NetxExportError(NeurodeployError, ValueError):
    """A network cannot be written as a netx file that reproduces it exactly; names layer and field."""

    def __init__(self, message: str, *, layer: Optional[int] = None, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.layer, self.field = layer, field


# --------------------------------------------------------------------------- fixed-point weight semantics
# Mirrors of lava-nc 0.10 utils/weightutils.py and lava-dl 0.6.0 netx/utils.py, on int64.


def _lava_sign_mode(w: np.ndarray) -> str:
    """lava-nc ``determine_sign_mode`` (what Dense uses when no sign mode is passed, as from netx)."""
    if w.size == 0 or np.min(w) >= 0:
        return "excitatory"
    if np.max(w) <= 0:
        return "inhibitory"
    return "mixed"


def _lava_dense_transform(w: np.ndarray, sign_mode: str, num_weight_bits: int) -> np.ndarray:
    """lava-nc Dense fixed_pt: ``clip_weights(num_bits=8)`` then ``truncate_weights``."""
    w = np.asarray(w, dtype=np.int64)
    mixed = int(sign_mode == "mixed")
    inhib = sign_mode == "inhibitory"
    x = -w if inhib else w
    x = np.clip(x, -(2**8) * mixed, 2**8 - 1)
    drop = 8 - int(num_weight_bits) + mixed
    if drop < 0:
        raise ValueError(f"num_weight_bits={num_weight_bits} is more than Lava's 8 (+1 sign) bits")
    x = (x >> drop) << drop
    return -x if inhib else x


def _canonical(wt: np.ndarray, exp: int) -> tuple[np.ndarray, int]:
    """The synapse ``a = shift(wt @ s, exp)`` in a unique form ``(weights, exp <= 0)``.

    ``exp >= 0`` becomes plain weights ``wt << exp``; for a negative exponent the
    mantissas are divided by two while all are even. ``exp == 0`` in the result
    means the synapse is a plain integer matrix; ``exp < 0`` that it floors a
    fraction (not representable by netx).
    """
    wt = np.asarray(wt, dtype=np.int64)
    exp = int(exp)
    if exp >= 0:
        return wt << exp, 0
    while exp < 0 and np.all(wt % 2 == 0):
        wt = wt // 2
        exp += 1
    return wt, exp


def _netx_optimize(w: np.ndarray) -> tuple[np.ndarray, int, int, bool]:
    """lava-dl 0.6.0 ``netx.utils.optimize_weight_bits`` on integers: (weights, bits, exponent, clipped).

    Raises ``ValueError`` where netx itself would fail or silently zero the
    weights (all-zero matrix; excitatory above 255 or inhibitory below -256,
    where netx shifts by a negative amount).
    """
    w = np.asarray(w, dtype=np.int64)
    if w.size == 0 or not np.any(w):
        raise ValueError("an all-zero weight matrix makes netx's optimize_weight_bits divide by zero")
    clipped = False
    wmax, wmin = int(w.max()), int(w.min())
    if (wmax > 254 and wmin < 0) or (wmin < -256 and wmax > 0):
        w = np.clip(w, -256, 254)
        clipped = True
        wmax, wmin = int(w.max()), int(w.min())
    if wmax < 0:
        signed, scale = 0, -256 / wmin
    elif wmin >= 0:
        signed, scale = 0, 255 / wmax
    else:
        signed = 1
        scale = min(127 / wmax if wmax > 0 else np.inf, -128 / wmin)
    scale_bits = int(np.floor(np.log2(scale))) + signed
    if scale_bits < 0:
        raise ValueError(f"weights in [{wmin}, {wmax}] make netx's optimize_weight_bits shift by "
                         f"{scale_bits} (netx would zero them); single-sign weights must lie in [-256, 255]")
    n = 8
    while n > 0 and np.any(w % (2**n)):
        n -= 1
    n -= signed
    return w << scale_bits, 8 - scale_bits - n, -scale_bits, clipped


def _netx_dense_semantics(parts: list[np.ndarray]) -> tuple[list[tuple[np.ndarray, int]], dict]:
    """What netx + Lava compute from stored integer dense weights (``[weight]`` or ``[weight, weight_rec]``).

    Returns the canonical synapse of each part and netx's representation
    (the weights it hands to Lava, their bit width and exponent).
    """
    widths = [p.shape[1] for p in parts]
    w_opt, nbits, wexp, clipped = _netx_optimize(np.hstack(parts))
    split = np.split(w_opt, np.cumsum(widths)[:-1], axis=1)
    canon = [_canonical(_lava_dense_transform(p, _lava_sign_mode(p), nbits), wexp) for p in split]
    return canon, {"weights": split, "num_weight_bits": nbits, "weight_exp": wexp, "clipped": clipped}


def _ir_synapse(w: np.ndarray, exp: int, nbits: int, sign_mode: str) -> tuple[np.ndarray, int]:
    return _canonical(_lava_dense_transform(w, sign_mode, nbits), exp)


def _ir_bias(nrn: Neurons) -> np.ndarray:
    b = np.asarray(nrn.bias_mant, dtype=np.int64)
    e = int(nrn.bias_exp)
    return b << e if e >= 0 else b >> -e


def _first_diff(a: np.ndarray, b: np.ndarray) -> tuple[tuple[int, ...], Any, Any]:
    idx = tuple(int(i) for i in np.argwhere(a != b)[0])
    return idx, a[idx].item(), b[idx].item()


# --------------------------------------------------------------------------- writing


def _effective_plain(layer_index: int, field: str, w: np.ndarray, exp: int, nbits: int,
                     sign_mode: str) -> np.ndarray:
    """Plain integer effective weights of an IR synapse, or NetxExportError naming why not."""
    try:
        eff, rexp = _ir_synapse(w, exp, nbits, sign_mode)
    except ValueError as exc:
        raise NetxExportError(f"layer {layer_index}: {field}: {exc}", layer=layer_index, field=field) from None
    if rexp != 0:
        odd = np.argwhere(eff % 2 != 0)[0]
        idx = tuple(int(i) for i in odd)
        raise NetxExportError(
            f"layer {layer_index}: {field}: weight exponent {exp} gives fractional effective weights "
            f"(e.g. {field}{list(idx)} = {int(eff[idx])} * 2**{rexp}); netx stores plain integer weights "
            f"(its optimize_weight_bits only scales up), so this layer cannot be written exactly. "
            f"Quantize with weight_exp >= 0 or mantissas that are multiples of 2**{-exp}.",
            layer=layer_index, field=field)
    return eff


def _neuron_datasets(nrn: Neurons, vth: int) -> dict[str, Any]:
    return {
        "type": np.array([b"CUBA"], dtype="S10"),
        "iDecay": np.int64(nrn.du + 1),
        "vDecay": np.int64(nrn.dv),
        "vThMant": np.int64(vth),
        "refDelay": np.int64(1),
        "gradedSpike": np.bool_(False),
    }


def _netx_bias(i: int, nrn: Neurons) -> np.ndarray:
    b = _ir_bias(nrn)
    if np.any(b % (1 << NETX_BIAS_EXP)):
        idx = int(np.argwhere(b % (1 << NETX_BIAS_EXP) != 0)[0][0])
        raise NetxExportError(
            f"layer {i}: bias: effective bias of neuron {idx} is {int(nrn.bias_mant[idx])} << "
            f"{nrn.bias_exp} = {int(b[idx])}, not a multiple of 2**{NETX_BIAS_EXP}; netx fixes bias_exp = "
            f"{NETX_BIAS_EXP}, so bias_mant with bias_exp={nrn.bias_exp} cannot be written exactly "
            f"(quantize biases with bias_exp >= {NETX_BIAS_EXP} or mantissas divisible by "
            f"2**{NETX_BIAS_EXP - int(nrn.bias_exp)})", layer=i, field="bias")
    return b >> NETX_BIAS_EXP


def _check_float32(i: int, field: str, w: np.ndarray) -> None:
    if w.size and np.abs(w).max() >= 2**24:
        raise NetxExportError(f"layer {i}: {field}: |value| up to {int(np.abs(w).max())} is not exact in "
                              f"netx's float32 datasets (< 2**24)", layer=i, field=field)


def _synapses(layer: Layer) -> list[tuple[str, np.ndarray, int]]:
    out = [("weight", layer.weight, layer.weight_exp)]
    if isinstance(layer, DenseLayer) and layer.weight_rec is not None:
        out.append(("weight_rec", layer.weight_rec, layer.weight_rec_exp))
    return out


def _check_netx_loads(i: int, layer: Layer, parts: list[np.ndarray]) -> None:
    """Dense: netx's optimize_weight_bits + Lava's Dense must give back exactly ``parts``."""
    if not isinstance(layer, DenseLayer):
        return  # netx hands conv weights to Lava's Conv unchanged
    try:
        canon, _ = _netx_dense_semantics(parts)
    except ValueError as exc:
        raise NetxExportError(f"layer {i}: weight: {exc}; netx cannot load this layer",
                              layer=i, field="weight") from None
    for (field, _, _), want, (got, gexp) in zip(_synapses(layer), parts, canon):
        if gexp != 0 or not np.array_equal(got, want):
            idx, a, b = _first_diff(want, got if gexp == 0 else got >> -gexp)
            raise NetxExportError(
                f"layer {i}: {field}: netx would load effective weight {field}{list(idx)} = {a} as "
                f"{b} (netx clips mixed-sign weights to [-256, 254] and Lava's Dense clips "
                f"excitatory to [0, 255], inhibitory to [-255, 0]); the effective weights "
                f"(mantissa * 2**weight_exp) must fit 8 bits for netx", layer=i, field=field)


def _exact_values(i: int, layer: Layer) -> tuple[list[np.ndarray], np.ndarray, int]:
    """netx weights, netx bias (per neuron) and vThMant that reproduce ``layer`` exactly, or NetxExportError."""
    parts = [_effective_plain(i, field, w, e, layer.num_weight_bits, layer.sign_mode)
             for field, w, e in _synapses(layer)]
    _check_netx_loads(i, layer, parts)
    for (field, _, _), w in zip(_synapses(layer), parts):
        _check_float32(i, field, w)
    bias = _netx_bias(i, layer.neurons)
    _check_float32(i, "bias", bias)
    return parts, bias, int(layer.neurons.vth)


def _is_integrator(nrn: Neurons) -> bool:
    """A non-spiking integrator as lava-dl writes PilotNet's output: u = input, no leak on v, maximal threshold."""
    return int(nrn.du) == 4095 and int(nrn.dv) == 0 and int(nrn.vth) == VTH_MAX


def _approx_values(i: int, layer: Layer) -> tuple[list[np.ndarray], np.ndarray, int, dict]:
    """The layer rescaled by ``2**k`` to netx's plain 8-bit weights (``exact=False``).

    Weights, threshold and bias are all multiplied by ``2**k`` and rounded,
    ``k`` the largest shift that keeps the effective weights within
    [-254, 254] and does not raise the threshold above ``max(vth, 2**15)``
    (the quantizer's 24-bit state headroom); ``u`` and ``v`` then run ``2**k``
    times larger, so spiking matches up to rounding (of weights, threshold and
    bias, and of the decays).
    """
    reals = []
    for field, w, e in _synapses(layer):
        try:
            c, ce = _ir_synapse(w, e, layer.num_weight_bits, layer.sign_mode)
        except ValueError as exc:
            raise NetxExportError(f"layer {i}: {field}: {exc}", layer=i, field=field) from None
        reals.append(c.astype(np.float64) * 2.0**ce)
    wmax = max(float(np.abs(r).max(initial=0.0)) for r in reals)
    if wmax == 0.0:
        raise NetxExportError(f"layer {i}: weight: all effective weights are zero; netx's optimize_weight_bits "
                              f"cannot load an all-zero layer", layer=i, field="weight")
    k = int(np.floor(np.log2(254.0 / wmax)))
    vth = int(layer.neurons.vth)
    if vth > 0:  # scale up no further than a 2**15 threshold (2 bits of 24-bit state headroom), 17-bit vth
        k = min(k, int(np.floor(np.log2(max(2.0**15, vth) / vth))))
    # an integrator keeps its scale (k = 0 here: vth is at the maximum) and rounds toward zero,
    # so the quantizer's bound on |v| still holds
    rnd = np.fix if _is_integrator(layer.neurons) else np.rint
    parts = [rnd(r * 2.0**k).astype(np.int64) for r in reals]
    bias = rnd(_ir_bias(layer.neurons).astype(np.float64) * 2.0**k / (1 << NETX_BIAS_EXP)).astype(np.int64)
    _check_netx_loads(i, layer, parts)
    for (field, _, _), w in zip(_synapses(layer), parts):
        _check_float32(i, field, w)
    _check_float32(i, "bias", bias)
    errs = [float(np.abs(p * 2.0**-k - r).max() / max(float(np.abs(r).max(initial=0.0)), 1e-300))
            for p, r in zip(parts, reals)]
    info = {"layer": i, "shift": k, "weight_error": max(errs),
            "threshold": (vth, int(round(vth * 2.0**k)))}
    return parts, bias, int(round(vth * 2.0**k)), info


def _netx_plan(network: Network, exact: bool = True) -> tuple[list[tuple[str, dict[str, Any]]], list[dict]]:
    """The netx ``layer/<i>`` entries (type, {dataset path: value}) in order, and the approximated layers."""
    plan: list[tuple[str, dict[str, Any]]] = [("input", {"shape": np.asarray(network.input_shape, dtype=np.int64)})]
    approximated: list[dict] = []
    prev_conv = len(network.input_shape) > 1
    for i, layer in enumerate(network.layers):
        try:
            parts, bias, vth = _exact_values(i, layer)
        except NetxExportError:
            if exact:
                raise
            parts, bias, vth, info = _approx_values(i, layer)
            approximated.append(info)
        entry: dict[str, Any] = {"shape": np.asarray(layer.out_shape, dtype=np.int64)}
        if isinstance(layer, DenseLayer):
            if prev_conv:
                plan.append(("flatten", {"shape": np.asarray([layer.in_size], dtype=np.int64)}))
            entry["inFeatures"] = np.int64(layer.in_size)
            entry["outFeatures"] = np.int64(layer.out_shape[0])
            entry["weight"] = parts[0].astype(np.float32)
            if layer.weight_rec is not None:
                entry["weight_rec"] = parts[1].astype(np.float32)
            entry["bias"] = bias.astype(np.float32)
            prev_conv = False
        else:
            c, h, w = layer.out_shape
            entry["inChannels"] = np.int64(layer.in_shape[0])
            entry["outChannels"] = np.int64(c)
            entry["kernelSize"] = np.asarray(layer.weight.shape[2:], dtype=np.int64)
            entry["stride"] = np.asarray(layer.stride, dtype=np.int64)
            entry["padding"] = np.asarray(layer.padding, dtype=np.int64)
            entry["dilation"] = np.asarray(layer.dilation, dtype=np.int64)
            entry["groups"] = np.int64(layer.groups)
            entry["weight"] = parts[0].astype(np.float32)
            b = bias.reshape(c, h, w)
            if np.all(b == b[:, :1, :1]):
                entry["bias"] = b[:, 0, 0].astype(np.float32)  # per channel, as slayer writes it
            else:
                entry["bias"] = b.transpose(2, 1, 0).astype(np.float32)  # per neuron, Lava's (W, H, C)
            prev_conv = True
        for key, value in _neuron_datasets(layer.neurons, vth).items():
            entry[f"neuron/{key}"] = value
        plan.append((layer.kind, entry))
    return plan, approximated


def _metadata_json(network: Network) -> str:
    try:
        return json.dumps(network.metadata)
    except (TypeError, ValueError) as exc:
        raise NetxExportError(f"network metadata is not JSON-serialisable: {exc}", field="metadata") from None


def _write_extras(f, network: Network, meta: str, approximated: list[dict]) -> None:
    g = f.create_group(EXTRA_GROUP)
    a = g.attrs
    a["format_version"] = FORMAT_VERSION
    a["netx_exact"] = not approximated
    shifts = {info["layer"]: info["shift"] for info in approximated}
    a["time_steps"] = int(network.time_steps)
    a["input_shape"] = np.asarray(network.input_shape, dtype=np.int64)
    a["profile"] = network.profile
    a["input_encoding"] = json.dumps({"kind": network.input_encoding.kind, "bits": network.input_encoding.bits,
                                      "scale": network.input_encoding.scale})
    a["metadata"] = meta
    a["netx_input_message_bits"] = int(network.input_encoding.bits) if network.input_encoding.kind == "graded" else 0
    a["readout"] = network.readout
    layers = g.create_group("layers")
    for i, layer in enumerate(network.layers):
        lg = layers.create_group(str(i))
        la = lg.attrs
        la["kind"] = layer.kind
        la["name"] = layer.name
        la["netx_exact"] = i not in shifts
        la["netx_shift"] = int(shifts.get(i, 0))
        la["weight_exp"] = int(layer.weight_exp)
        la["num_weight_bits"] = int(layer.num_weight_bits)
        la["sign_mode"] = layer.sign_mode
        lg.create_dataset("weight", data=np.asarray(layer.weight))
        if isinstance(layer, DenseLayer):
            la["weight_rec_exp"] = int(layer.weight_rec_exp)
            if layer.weight_rec is not None:
                lg.create_dataset("weight_rec", data=np.asarray(layer.weight_rec))
        else:
            la["in_shape"] = np.asarray(layer.in_shape, dtype=np.int64)
            la["stride"] = np.asarray(layer.stride, dtype=np.int64)
            la["padding"] = np.asarray(layer.padding, dtype=np.int64)
            la["dilation"] = np.asarray(layer.dilation, dtype=np.int64)
            la["groups"] = int(layer.groups)
        nrn = layer.neurons
        ng = lg.create_group("neurons")
        for key in ("du", "dv", "vth", "bias_exp"):
            ng.attrs[key] = int(getattr(nrn, key))
        ng.create_dataset("bias_mant", data=np.asarray(nrn.bias_mant))


class NetxInexactWarning(UserWarning):
    """``write_netx(..., exact=False)`` wrote layers that lava-dl will run only approximately."""


def write_netx(network: Network, path: PathLike, *, exact: bool = True) -> Path:
    """Write ``network`` as a lava-dl netx HDF5 file at ``path`` (atomically); return the path.

    A lava-dl user loads it with ``netx.hdf5.Network(path)`` (pass
    ``input_message_bits=network.input_encoding.bits`` for graded input) and
    gets Lava processes that compute exactly this network. Raises
    :class:`~neurodeploy.ir.IRError` for an inconsistent network and
    :class:`NetxExportError` (naming layer and field) for one that netx cannot
    represent exactly; nothing is written then.

    ``exact=False`` writes such networks anyway: each layer netx cannot hold
    exactly is rescaled to netx's plain 8-bit weights (weights, threshold and
    bias times ``2**k``, rounded; see ``_approx_values``) and a
    :class:`NetxInexactWarning` says which layers and how far. The exact IR is
    still stored in the ``neurodeploy`` group, so :func:`read_netx` returns it
    unchanged; only lava-dl users get the approximation (the file says so:
    attribute ``neurodeploy.netx_exact`` and per layer ``netx_exact`` /
    ``netx_shift``).
    """
    import h5py

    path = Path(path)
    network.validate(str(path))
    plan, approximated = _netx_plan(network, exact)  # every check happens before the file is touched
    meta = _metadata_json(network)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            layers = f.create_group("layer")
            for i, (kind, entry) in enumerate(plan):
                g = layers.create_group(str(i))
                g.create_dataset("type", (1,), "S10", [kind.encode("ascii")])
                for key, value in entry.items():
                    g.create_dataset(key, data=value)
            _write_extras(f, network, meta, approximated)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if approximated:
        detail = "; ".join(f"layer {a['layer']}: scale 2**{a['shift']}, weight error up to "
                           f"{a['weight_error']:.1%} of the largest weight of a matrix, vth {a['threshold'][0]} -> "
                           f"{a['threshold'][1]}" for a in approximated)
        warnings.warn(f"{path}: lava-dl netx will run {len(approximated)} layer(s) only approximately (netx holds "
                      f"plain 8-bit integer weights and bias_exp 6): {detail}. read_netx returns the exact "
                      f"network.", NetxInexactWarning, stacklevel=2)
    return path


# --------------------------------------------------------------------------- reading


class _Reader:
    """Reads one file; every problem becomes a NetxFormatError naming file, layer and field."""

    def __init__(self, path: Path, f) -> None:
        self.path = path
        self.f = f

    def error(self, message: str, layer: Optional[int] = None, field: Optional[str] = None,
              kind: Optional[str] = None) -> NetxFormatError:
        where = str(self.path)
        if layer is not None:
            where += f": layer {layer}" + (f" ({kind})" if kind else "")
        if field is not None:
            where += f": field '{field}'"
        return NetxFormatError(f"{where}: {message}", path=str(self.path), layer=layer, field=field)

    def dataset(self, group, key: str, layer: Optional[int], kind: Optional[str] = None, required: bool = True,
                field: Optional[str] = None):
        import h5py

        field = field or key
        if key not in group:
            if key in group.attrs:
                raise self.error(f"'{key}' is an HDF5 attribute, but netx reads datasets only", layer, field, kind)
            if required:
                raise self.error("missing (netx needs this dataset)", layer, field, kind)
            return None
        item = group[key]
        if not isinstance(item, h5py.Dataset):
            raise self.error(f"expected a dataset, found a {type(item).__name__}", layer, field, kind)
        try:
            return item[()]
        except Exception as exc:  # pragma: no cover - corrupt dataset
            raise self.error(f"cannot be read: {exc}", layer, field, kind) from None

    def string(self, group, key: str, layer: Optional[int], kind: Optional[str] = None,
               field: Optional[str] = None) -> str:
        key_field = field or key
        value = self.dataset(group, key, layer, kind, field=key_field)
        if isinstance(value, np.ndarray):
            if value.size < 1:
                raise self.error("empty string array", layer, key_field, kind)
            value = value.reshape(-1)[0]
        if isinstance(value, (bytes, np.bytes_)):
            try:
                return bytes(value).decode("ascii")
            except UnicodeDecodeError:
                raise self.error(f"value {value!r} is not ASCII", layer, key_field, kind) from None
        if isinstance(value, str):
            return value
        raise self.error(f"value {value!r} is not a string (expected bytes such as b'dense')", layer, key_field, kind)

    def integer(self, group, key: str, layer: int, kind: str, lo: Optional[int] = None, hi: Optional[int] = None,
                expected: str = "", field: Optional[str] = None) -> int:
        field = field or key
        value = self.dataset(group, key, layer, kind, field=field)
        arr = np.asarray(value)
        if arr.size != 1:
            raise self.error(f"value {value!r} has shape {arr.shape}, expected one number", layer, field, kind)
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise self.error(f"value {value!r} is not a finite number", layer, field, kind)
        x = float(arr.reshape(-1)[0])
        if x != int(x):
            raise self.error(f"value {x!r} is not an integer", layer, field, kind)
        x = int(x)
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            rng = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
            raise self.error(f"value {x} is out of range, expected {expected or rng}", layer, field, kind)
        return x

    def int_pair(self, group, key: str, layer: int, kind: str, default: Optional[int] = None) -> tuple[int, int]:
        value = self.dataset(group, key, layer, kind, required=default is None)
        if value is None:
            return (default, default)  # type: ignore[return-value]
        arr = np.asarray(value)
        if arr.size == 1:
            arr = np.repeat(arr.reshape(-1), 2)
        if arr.shape != (2,) or not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all() \
                or np.any(arr != np.round(arr)) or np.any(arr < 0):
            raise self.error(f"value {value!r}, expected a non-negative integer or an (H, W) pair", layer, key, kind)
        return int(arr[0]), int(arr[1])

    def shape(self, group, layer: int, kind: str, ndim: Optional[int] = None) -> tuple[int, ...]:
        value = self.dataset(group, "shape", layer, kind)
        arr = np.atleast_1d(np.asarray(value))
        if arr.ndim != 1 or arr.size < 1 or not np.issubdtype(arr.dtype, np.number) or np.any(arr < 1) \
                or np.any(arr != np.round(arr)):
            raise self.error(f"value {value!r}, expected positive integers", layer, "shape", kind)
        if ndim is not None and arr.size != ndim:
            raise self.error(f"value {arr.tolist()} has {arr.size} entries, expected {ndim} (C, H, W)",
                             layer, "shape", kind)
        return tuple(int(s) for s in arr)

    def int_array(self, group, key: str, layer: int, kind: str, required: bool = True) -> Optional[np.ndarray]:
        """A numeric dataset cast as netx does (``astype(int)``, truncation), NaN/inf rejected."""
        value = self.dataset(group, key, layer, kind, required=required)
        if value is None:
            return None
        arr = np.asarray(value)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise self.error(f"dtype {arr.dtype}, expected numbers", layer, key, kind)
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0]) if arr.ndim else ()
            raise self.error(f"value {arr[bad] if arr.ndim else arr!r} at index {list(bad)} is not finite "
                             f"(expected finite numbers)", layer, key, kind)
        if np.issubdtype(arr.dtype, np.floating) and arr.size and np.abs(arr).max() >= 2**31:
            raise self.error(f"values up to {float(np.abs(arr).max())!r} overflow netx's int cast", layer, key, kind)
        return arr.astype(np.int64)

    # ---------------------------------------------------------------- layers

    def neurons(self, g, layer: int, kind: str, bias: np.ndarray) -> Neurons:
        import h5py

        if "neuron" not in g:
            raise self.error("missing: without a neuron description netx builds a non-leaky integrator "
                             "(iDecay 0, vDecay 4096) that the IR cannot represent; expected a 'neuron' group "
                             "with type CUBA, iDecay, vDecay, vThMant", layer, "neuron", kind)
        ng = g["neuron"]
        if not isinstance(ng, h5py.Group):
            raise self.error(f"expected a group, found a {type(ng).__name__}", layer, "neuron", kind)
        ntype = self.string(ng, "type", layer, kind, field="neuron/type")
        if ntype not in ("CUBA", "LOIHI"):
            raise self.error(f"value {ntype!r} is not supported, expected 'CUBA' (or 'LOIHI'), Loihi's "
                             f"current-based LIF", layer, "neuron/type", kind)
        if "messageBits" in ng:
            bits = self.integer(ng, "messageBits", layer, kind, field="neuron/messageBits")
            if bits != 0:
                raise self.error(f"value {bits}: graded output spikes are not supported, expected 0",
                                 layer, "neuron/messageBits", kind)
        idecay = self.integer(ng, "iDecay", layer, kind, 1, 4096, "1..4096 (du = iDecay - 1 in 0..4095; "
                              "iDecay 0, a non-decaying current, has no IR equivalent)", field="neuron/iDecay")
        vdecay = self.integer(ng, "vDecay", layer, kind, 0, 4095, "0..4095 (dv = vDecay)", field="neuron/vDecay")
        vth = self.integer(ng, "vThMant", layer, kind, 0, 2**17 - 1, "0..131071 (17-bit vth)",
                           field="neuron/vThMant")
        return Neurons(du=idecay - 1, dv=vdecay, vth=vth, bias_mant=bias, bias_exp=NETX_BIAS_EXP)

    def dense(self, g, layer: int, kind: str, in_shape: tuple[int, ...]) -> DenseLayer:
        out = int(np.prod(self.shape(g, layer, kind)))
        n_in = int(np.prod(in_shape))
        import h5py

        if "weight" in g and not isinstance(g["weight"], h5py.Dataset):
            raise self.error("complex (weight/real, weight/imag) synapses are not supported, expected a real "
                             "weight dataset", layer, "weight", kind)
        parts = []
        for key, cols in (("weight", n_in), ("weight_rec", out)) if kind == "dense_rec" else (("weight", n_in),):
            w = self.int_array(g, key, layer, kind)
            if w.ndim == 1 and w.size == out * cols:
                w = w.reshape(out, cols)  # netx reshapes 1-D weights to (out, -1)
            if w.shape != (out, cols):
                raise self.error(f"shape {tuple(w.shape)}, expected {(out, cols)} (out, in) for {out} neurons and "
                                 f"{cols} inputs", layer, key, kind)
            parts.append(w)
        if "delay" in g:
            delay = self.int_array(g, "delay", layer, kind)
            if np.any(delay != 0):
                raise self.error(f"axonal delays (max {int(delay.max())}) are not supported, expected none or 0",
                                 layer, "delay", kind)
        bias = self.bias(g, layer, kind, (out,))
        nrn = self.neurons(g, layer, kind, bias)
        try:
            canon, rep = _netx_dense_semantics(parts)
        except ValueError as exc:
            raise self.error(f"values in [{min(int(p.min()) for p in parts)}, {max(int(p.max()) for p in parts)}]: "
                             f"{exc}", layer, "weight", kind) from None
        if rep["clipped"]:
            warnings.warn(f"{self.path}: layer {layer}: netx clips mixed-sign weights to [-256, 254]; "
                          f"the IR holds the clipped weights", stacklevel=3)
        # Prefer the plain representation (exponent 0, 8 bits) where it is exact, else netx's own.
        plain = [c for c, _ in canon]
        sm = _lava_sign_mode(np.hstack(plain))
        if all(e == 0 for _, e in canon) and all(
                np.array_equal(_lava_dense_transform(p, sm, 8), p) for p in plain):
            ws, exp, nbits = plain, 0, 8
        else:
            ws, exp, nbits = rep["weights"], rep["weight_exp"], rep["num_weight_bits"]
            sm = _lava_sign_mode(np.hstack(ws))
            if any(_canonical(_lava_dense_transform(w, sm, nbits), exp)[1] != c[1] or
                   not np.array_equal(_canonical(_lava_dense_transform(w, sm, nbits), exp)[0], c[0])
                   for w, c in zip(ws, canon)):
                raise self.error("weight and weight_rec need different Lava sign modes, which one IR layer "
                                 "cannot express", layer, "weight_rec", kind)
        return DenseLayer(weight=ws[0], neurons=nrn, weight_exp=exp, num_weight_bits=nbits, sign_mode=sm,
                          weight_rec=ws[1] if len(ws) > 1 else None, weight_rec_exp=exp,
                          name=f"layer/{layer}")

    def conv(self, g, layer: int, kind: str, in_shape: tuple[int, ...]) -> ConvLayer:
        if len(in_shape) != 3:
            raise self.error(f"the input of a conv layer has shape {in_shape}, expected (C, H, W); give the file "
                             f"an 'input' layer 0 with a 3-entry shape", layer, "shape", kind)
        out_shape = self.shape(g, layer, kind, ndim=3)
        w = self.int_array(g, "weight", layer, kind)
        if w.ndim == 5 and w.shape[4] == 1:
            w = w[..., 0]  # slayer's trailing time axis
        groups = self.integer(g, "groups", layer, kind, 1, None, ">= 1")
        if w.ndim != 4 or w.shape[0] != out_shape[0] or w.shape[1] * groups != in_shape[0]:
            raise self.error(f"shape {tuple(w.shape)}, expected ({out_shape[0]}, {in_shape[0] // max(groups, 1)}, "
                             f"kH, kW) (out channels, in channels / groups, kernel H, W)", layer, "weight", kind)
        stride = self.int_pair(g, "stride", layer, kind)
        padding = self.int_pair(g, "padding", layer, kind)
        dilation = self.int_pair(g, "dilation", layer, kind)
        if min(stride) < 1 or min(dilation) < 1:
            raise self.error(f"stride {stride} / dilation {dilation} must be >= 1", layer, "stride", kind)
        c, h, wd = out_shape
        bias = self.bias(g, layer, kind, out_shape)
        nrn = self.neurons(g, layer, kind, bias)
        # Lava's Conv uses the stored integers as they are; find an exact IR representation.
        sm = _lava_sign_mode(w)
        if np.array_equal(_lava_dense_transform(w, sm, 8), w):
            weight, exp, nbits = w, 0, 8
        else:
            try:
                wo, nbits, exp, clipped = _netx_optimize(w)
            except ValueError as exc:
                raise self.error(f"values in [{int(w.min())}, {int(w.max())}]: {exc}", layer, "weight", kind) from None
            sm = _lava_sign_mode(wo)
            c_eff = _canonical(_lava_dense_transform(wo, sm, nbits), exp)
            if clipped or c_eff[1] != 0 or not np.array_equal(c_eff[0], w):
                raise self.error(f"values in [{int(w.min())}, {int(w.max())}] do not fit an 8-bit synapse "
                                 f"mantissa with an exponent (the IR's and Loihi's weight format)",
                                 layer, "weight", kind)
            weight = wo
        layer_ir = ConvLayer(weight=weight, neurons=nrn, in_shape=tuple(in_shape), stride=stride, padding=padding,
                             dilation=dilation, groups=groups, weight_exp=exp, num_weight_bits=nbits, sign_mode=sm,
                             name=f"layer/{layer}")
        if tuple(layer_ir.out_shape) != tuple(out_shape):
            raise self.error(f"value {list(out_shape)}, but a {w.shape[2]}x{w.shape[3]} kernel with stride {stride}, "
                             f"padding {padding}, dilation {dilation} on input {list(in_shape)} gives "
                             f"{list(layer_ir.out_shape)}", layer, "shape", kind)
        return layer_ir

    def bias(self, g, layer: int, kind: str, out_shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(out_shape))
        b = self.int_array(g, "bias", layer, kind, required=False)
        if b is None:
            return np.zeros(n, dtype=np.int64)
        if len(out_shape) == 1:
            if b.size == 1:
                return np.full(n, int(b.reshape(-1)[0]), dtype=np.int64)
            if b.shape == (n,):
                return b
            raise self.error(f"shape {tuple(b.shape)}, expected ({n},) or a scalar", layer, "bias", kind)
        c, h, w = out_shape
        if b.shape == (w, h, c):  # per neuron, Lava's (W, H, C) layout
            return b.transpose(2, 1, 0).reshape(-1)
        if b.ndim >= 1 and b.shape[0] == c and b.size == c:  # per channel
            return np.repeat(b.reshape(c), h * w)
        raise self.error(f"shape {tuple(b.shape)}, expected ({c},) per channel or {(w, h, c)} per neuron "
                         f"(Lava's W, H, C order)", layer, "bias", kind)

    # ---------------------------------------------------------------- network

    def netx_network(self) -> tuple[tuple[int, ...], list[Layer], list[int]]:
        """The layers netx would build; returns input shape, IR layers and their netx indices."""
        import h5py

        if "layer" not in self.f or not isinstance(self.f["layer"], h5py.Group):
            raise self.error("missing 'layer' group: not a netx network description", field="layer")
        lg = self.f["layer"]
        keys = list(lg.keys())
        expected = [str(i) for i in range(len(keys))]
        if sorted(keys, key=lambda k: (len(k), k)) != expected:
            raise self.error(f"layer entries {sorted(keys)}, expected consecutive indices 0..{len(keys) - 1} "
                             f"(netx reads layer[i] for i in range(len(layer)))", field="layer")
        if not keys:
            raise self.error("no layers", field="layer")
        in_shape: Optional[tuple[int, ...]] = None
        layers: list[Layer] = []
        indices: list[int] = []
        flatten_next = False
        prev_kind = None
        for i in range(len(keys)):
            g = lg[str(i)]
            if not isinstance(g, h5py.Group):
                raise self.error(f"expected a group, found a {type(g).__name__}", i)
            kind = self.string(g, "type", i)
            if kind in NOT_IMPLEMENTED_BY_NETX or kind not in SUPPORTED_TYPES:
                why = "netx 0.6.0 raises NotImplementedError for it" if kind in NOT_IMPLEMENTED_BY_NETX \
                    else "unknown layer type"
                raise self.error(f"value {kind!r} is not supported ({why}); expected one of "
                                 f"{', '.join(SUPPORTED_TYPES)}", i, "type", kind)
            if kind == "input":
                if i != 0:
                    raise self.error("an input layer must be layer 0", i, "type", kind)
                if "neuron" in g:
                    raise self.error("an input layer with a neuron (netx builds an input LIF population driven "
                                     "by its bias) has no IR equivalent; expected only 'shape'", i, "neuron", kind)
                in_shape = self.shape(g, i, kind)
            elif kind == "flatten":
                flatten_next = True
            else:
                cur: Optional[tuple[int, ...]] = layers[-1].out_shape if layers else in_shape
                if kind == "conv":
                    if flatten_next:
                        raise self.error("a flatten layer must be followed by a dense layer", i, "type", kind)
                    if cur is None:
                        raise self.error("the input shape is unknown: a conv first layer needs an 'input' layer 0 "
                                         "with shape (C, H, W)", i, "shape", kind)
                    layer = self.conv(g, i, kind, cur)
                else:
                    if cur is None:
                        w = self.dataset(g, "weight", i, kind)
                        arr = np.asarray(w)
                        if arr.ndim != 2:
                            raise self.error(f"shape {arr.shape}: the input size of a first dense layer without an "
                                             f"input layer comes from a 2-D (out, in) weight", i, "weight", kind)
                        cur = (int(arr.shape[1]),)
                        in_shape = cur
                    if prev_kind == "conv" and not flatten_next:
                        raise self.error("a dense layer after a conv layer needs a 'flatten' layer between them "
                                         "(netx connects (W, H, C) to a vector only through flatten)", i, "type", kind)
                    layer = self.dense(g, i, kind, cur)
                    flatten_next = False
                layers.append(layer)
                indices.append(i)
                prev_kind = kind
        if not layers:
            raise self.error("no dense or conv layers", field="layer")
        assert in_shape is not None
        return in_shape, layers, indices

    def extras(self, in_shape: tuple[int, ...], netx_layers: list[Layer], indices: list[int]) -> Optional[Network]:
        if EXTRA_GROUP not in self.f:
            return None
        g = self.f[EXTRA_GROUP]
        src = f"group '{EXTRA_GROUP}'"
        try:
            version = int(g.attrs["format_version"])
            if version != FORMAT_VERSION:
                raise self.error(f"format_version {version}, expected {FORMAT_VERSION} (written by a newer "
                                 f"neurodeploy?)", field=f"{EXTRA_GROUP}/format_version")
            enc = json.loads(_as_str(g.attrs["input_encoding"]))
            encoding = InputEncoding(kind=str(enc["kind"]), bits=int(enc["bits"]), scale=float(enc["scale"]))
            readout = _as_str(g.attrs.get("readout", "spikes"))   # files before the attribute: spikes
            if readout not in READOUTS:
                raise self.error(f"readout {readout!r}, expected one of {READOUTS}", field=f"{EXTRA_GROUP}/readout")
            network = Network(
                input_shape=tuple(int(s) for s in np.asarray(g.attrs["input_shape"]).reshape(-1)),
                layers=[], time_steps=int(g.attrs["time_steps"]), input_encoding=encoding,
                profile=_as_str(g.attrs["profile"]), metadata=json.loads(_as_str(g.attrs["metadata"])),
                readout=readout)
            lg = g["layers"]
            exact_flags = [bool(lg[str(k)].attrs.get("netx_exact", True)) for k in range(len(lg))]
            if len(lg) != len(netx_layers):
                raise self.error(f"{len(lg)} layers, but the netx part has {len(netx_layers)}",
                                 field=f"{EXTRA_GROUP}/layers")
            for k in range(len(lg)):
                e = lg[str(k)]
                a = e.attrs
                na = e["neurons"].attrs
                nrn = Neurons(du=int(na["du"]), dv=int(na["dv"]), vth=int(na["vth"]),
                              bias_mant=e["neurons"]["bias_mant"][()], bias_exp=int(na["bias_exp"]))
                kind = _as_str(a["kind"])
                if kind in ("dense", "dense_rec"):
                    layer: Layer = DenseLayer(
                        weight=e["weight"][()], neurons=nrn, weight_exp=int(a["weight_exp"]),
                        num_weight_bits=int(a["num_weight_bits"]), sign_mode=_as_str(a["sign_mode"]),
                        weight_rec=e["weight_rec"][()] if "weight_rec" in e else None,
                        weight_rec_exp=int(a["weight_rec_exp"]), name=_as_str(a["name"]))
                elif kind == "conv":
                    layer = ConvLayer(
                        weight=e["weight"][()], neurons=nrn,
                        in_shape=tuple(int(s) for s in a["in_shape"]),
                        stride=tuple(int(s) for s in a["stride"]), padding=tuple(int(s) for s in a["padding"]),
                        dilation=tuple(int(s) for s in a["dilation"]), groups=int(a["groups"]),
                        weight_exp=int(a["weight_exp"]), num_weight_bits=int(a["num_weight_bits"]),
                        sign_mode=_as_str(a["sign_mode"]), name=_as_str(a["name"]))
                else:
                    raise self.error(f"layer kind {kind!r}, expected dense, dense_rec or conv",
                                     field=f"{EXTRA_GROUP}/layers/{k}/kind")
                network.layers.append(layer)
        except NetxFormatError:
            raise
        except (KeyError, ValueError, TypeError, OSError, json.JSONDecodeError) as exc:
            raise self.error(f"{src} is malformed ({type(exc).__name__}: {exc}); delete it to read the netx "
                             f"datasets alone", field=EXTRA_GROUP) from None
        try:
            network.validate(f"{self.path}: {src}")
        except IRError as exc:
            raise self.error(f"{exc}", field=EXTRA_GROUP) from None
        self.check_same(network, in_shape, netx_layers, indices, exact_flags)
        return network

    def check_same(self, network: Network, in_shape, netx_layers: list[Layer], indices: list[int],
                   exact_flags: list[bool]) -> None:
        """The extras must describe the computation the netx datasets describe (or, for layers written
        with ``exact=False``, the approximation ``write_netx`` derives from them)."""
        def mismatch(k: int, field: str, detail: str) -> NetxFormatError:
            return self.error(f"the '{EXTRA_GROUP}' group disagrees with the netx datasets ({detail}); the file "
                              f"was changed by another tool: delete the '{EXTRA_GROUP}' group to read the netx "
                              f"datasets alone", indices[k], field, netx_layers[k].kind)

        if int(np.prod(network.input_shape)) != int(np.prod(in_shape)):
            raise self.error(f"input shape {network.input_shape} in '{EXTRA_GROUP}' vs {in_shape} in layer 0",
                             0, "shape", "input")
        for k, (ours, theirs) in enumerate(zip(network.layers, netx_layers)):
            if ours.kind != theirs.kind or tuple(ours.out_shape) != tuple(theirs.out_shape):
                raise mismatch(k, "type", f"{ours.kind} {ours.out_shape} vs {theirs.kind} {theirs.out_shape}")
            if isinstance(ours, ConvLayer):
                for attr in ("stride", "padding", "dilation", "groups"):
                    if tuple(np.atleast_1d(getattr(ours, attr))) != tuple(np.atleast_1d(getattr(theirs, attr))):
                        raise mismatch(k, attr, f"{getattr(ours, attr)} vs {getattr(theirs, attr)}")
            if not exact_flags[k]:
                try:
                    parts, bias, vth, _ = _approx_values(k, ours)
                except NetxExportError as exc:
                    raise mismatch(k, exc.field or "weight", str(exc)) from None
                for (field, w2, e2), want in zip(_synapses(theirs), parts):
                    got = _ir_synapse(w2, e2, theirs.num_weight_bits, theirs.sign_mode)
                    if got[1] != 0 or got[0].shape != want.shape or not np.array_equal(got[0], want):
                        raise mismatch(k, field, "weights differ from the approximation of the exact ones")
                if theirs.neurons.vth != vth:
                    raise mismatch(k, "neuron/vThMant", f"vth {theirs.neurons.vth} vs {vth}")
                if not np.array_equal(_ir_bias(theirs.neurons), bias << NETX_BIAS_EXP):
                    raise mismatch(k, "bias", "biases differ from the approximation of the exact ones")
                for attr, src in (("du", "neuron/iDecay"), ("dv", "neuron/vDecay")):
                    if getattr(ours.neurons, attr) != getattr(theirs.neurons, attr):
                        raise mismatch(k, src, f"{attr} {getattr(ours.neurons, attr)} vs "
                                               f"{getattr(theirs.neurons, attr)}")
                continue
            pairs = [("weight", ours.weight, ours.weight_exp, theirs.weight, theirs.weight_exp)]
            if isinstance(ours, DenseLayer) and ours.weight_rec is not None:
                pairs.append(("weight_rec", ours.weight_rec, ours.weight_rec_exp, theirs.weight_rec,
                              theirs.weight_rec_exp))
            for field, w1, e1, w2, e2 in pairs:
                a = _ir_synapse(w1, e1, ours.num_weight_bits, ours.sign_mode)
                b = _ir_synapse(w2, e2, theirs.num_weight_bits, theirs.sign_mode)
                if a[1] != b[1] or a[0].shape != b[0].shape or not np.array_equal(a[0], b[0]):
                    raise mismatch(k, field, "different effective weights")
            n1, n2 = ours.neurons, theirs.neurons
            for attr, src in (("du", "neuron/iDecay"), ("dv", "neuron/vDecay"), ("vth", "neuron/vThMant")):
                if getattr(n1, attr) != getattr(n2, attr):
                    raise mismatch(k, src, f"{attr} {getattr(n1, attr)} vs {getattr(n2, attr)}")
            if not np.array_equal(_ir_bias(n1), _ir_bias(n2)):
                raise mismatch(k, "bias", "different effective biases")


def _as_str(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf8")
    return str(value)


def read_netx(path: PathLike, *, time_steps: Optional[int] = None, readout: Optional[str] = None) -> Network:
    """Read a lava-dl netx HDF5 file into a :class:`~neurodeploy.ir.Network`.

    Files written by :func:`write_netx` come back exactly (every field).
    Other netx files give the IR of what netx would run, with the input
    encoding ``spikes`` (netx's unary default), ``time_steps`` (default 1,
    netx files do not record it) and ``readout`` ``"potential"`` when the
    last layer is a PilotNet-style integrator (``du 4095, dv 0, vth 131071``),
    else ``"spikes"``. ``readout`` given here overrides what the file says.
    Any problem raises :class:`NetxFormatError` naming the file, the layer
    index, the field, the value and what was expected.
    """
    import h5py

    if readout is not None and readout not in READOUTS:
        raise NetxFormatError(f"{path}: readout {readout!r}, expected one of {READOUTS}", path=str(path))

    path = Path(path)
    if not path.exists():
        raise NetxFormatError(f"{path}: no such file", path=str(path))
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise NetxFormatError(f"{path}: not an HDF5 file (h5py: {exc})", path=str(path)) from None
    with f:
        reader = _Reader(path, f)
        try:
            in_shape, layers, indices = reader.netx_network()
            network = reader.extras(in_shape, layers, indices)
        except NetxFormatError:
            raise
        except (OSError, KeyError, TypeError, ValueError) as exc:  # pragma: no cover - defensive
            raise NetxFormatError(f"{path}: cannot be read as a netx network: {type(exc).__name__}: {exc}",
                                  path=str(path)) from None
    if network is None:
        kind = readout or ("potential" if _is_integrator(layers[-1].neurons) else "spikes")
        network = Network(input_shape=in_shape, layers=layers, time_steps=int(time_steps or 1),
                          input_encoding=InputEncoding(kind="spikes", bits=1, scale=1.0),
                          metadata={"source": str(path), "format": "lava-dl netx hdf5"}, readout=kind)
        try:
            network.validate(str(path))
        except IRError as exc:
            raise NetxFormatError(f"{exc}", path=str(path)) from None
    else:
        if time_steps is not None:
            network.time_steps = int(time_steps)
        if readout is not None:
            network.readout = readout
    return network
