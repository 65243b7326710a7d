"""netx semantics: how lava-dl netx HDF5 fields map onto the fixed-point IR, and what netx can hold exactly.

What lava-dl 0.6.0's ``lava.lib.dl.netx.hdf5.Network`` builds from a file and
what Lava 0.10's processes then compute; the writer
(:mod:`neurodeploy.io.netx_writer`) and the reader
(:mod:`neurodeploy.io.netx_reader`) both go through these functions, so a
written file reads back as the computation it describes. Lava's own
arithmetic (Dense's clip and truncation, shifts, decays) comes from
:mod:`neurodeploy.lava_rules`; what is here is netx's part.

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
  ``refDelay`` and ``gradedSpike`` are not used (``gradedSpike: True`` still
  sends binary spikes: the reader warns); a ``messageBits`` dataset makes netx
  fail (it reads it as a ``NetDict``), so the reader refuses it. Lava stores
  ``du``, ``dv``, ``vth`` uncast: ``iDecay`` 0..4096 (du -1..4095; ``iDecay 0``
  keeps u, multiplier ``4096 - iDecay``), ``vDecay`` 0..4096, any ``vThMant``
  whose ``<< 6`` fits int32 (>= 131072: v never reaches it); each one number or
  an integer array, per neuron for dense, per channel ``(C,)`` for conv (other
  conv shapes do not broadcast against Lava's (W, H, C) state and the process
  hangs: refused); float values make Lava's shifts fail (refused). ``bias`` is
  stored as int16 by Lava's LIF (values wrap; the reader warns and keeps the
  wrapped values). A dense layer without ``neuron`` gets a built-in
  non-leaky integrator (``iDecay 0, vDecay 4096, vThMant 1 << 17``); the IR
  holds those values, but this reader does not build it yet (nor its readout
  from v), so a missing ``neuron`` is an error here.
* ``SDNN`` neurons (``Network.get_neuron_params``, ``lava/proc/sdn``): an input
  layer's becomes Lava's ``Delta`` (fed through its ``a_in``; the file's
  weight/bias are transform metadata), a neuron with a ``sigma_output`` key
  (any value) ``Sigma`` (no threshold; a ``bias`` makes netx fail), any other
  ``SigmaDelta``; all with ``vth = vThMant`` (one number: Lava's Var has shape
  (1,)), ``state_exp = 6`` and ``spike_exp`` the ``Network`` argument (default 6),
  both scaled by ``1 << (spike_exp + 6)`` in Python (``bias`` as ``int32``, so it
  wraps at 32 bits), ReLU always (the file's ``activation`` is never read:
  anything but ``relu`` is refused), no reset. They send graded messages
  (``num_message_bits = 16``), so the next synapse is graded
  (:func:`sigma_delta_from_netx`; the IR's :class:`~neurodeploy.ir.SigmaDeltaNeurons`).
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


Inexact layers
--------------
``write_netx(..., exact=False)`` writes layers netx cannot hold exactly
rescaled by ``2**k`` (:func:`_approx_values`); the reader re-derives that
approximation from the exact IR to check such a file (``netx_exact`` flags).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import lava_rules
from ..errors import NeurodeployError
from ..ir import SDNN_SPIKE_EXP, SDNN_STATE_EXP, DenseLayer, Layer, Neurons, SigmaDeltaNeurons

__all__ = ["NetxFormatError", "NetxExportError", "NetxInexactWarning", "FORMAT_VERSION", "EXTRA_GROUP",
           "NETX_BIAS_EXP", "SUPPORTED_TYPES", "NOT_IMPLEMENTED_BY_NETX", "VTH_MAX", "READOUTS",
           "IDECAY_RANGE", "VDECAY_RANGE", "NETX_SPIKE_EXP", "SPIKE_EXP_RANGE", "neuron_datasets",
           "neurons_from_netx", "sigma_delta_from_netx", "ir_dense_weights",
           "ir_conv_weights"]

FORMAT_VERSION = 1
EXTRA_GROUP = "neurodeploy"
NETX_BIAS_EXP = 6  # netx: bias_exp is always 6 (hdf5.py, get_neuron_params)
NETX_SDNN_STATE_EXP = SDNN_STATE_EXP  # netx: state_exp is always 6 for SDNN neurons
NETX_SPIKE_EXP = SDNN_SPIKE_EXP       # netx.hdf5.Network(spike_exp=6): where a graded message's point lies
SPIKE_EXP_RANGE = (0, 24)             # spike_exp + state_exp <= 30: Lava's 1 << (spike_exp + 6) stays int32
SDNN_ACTIVATIONS = ("relu",)          # netx never passes act_mode: Lava's SigmaDelta runs its RELU default
SUPPORTED_TYPES = ("input", "dense", "dense_rec", "conv", "flatten")
NOT_IMPLEMENTED_BY_NETX = ("pool", "average", "concat", "convT", "unpool")
VTH_MAX = lava_rules.VTH_MAX
READOUTS = ("spikes", "potential")
VTH_RANGE = lava_rules.VTH_RANGE
# netx's neuron fields: du = iDecay - 1 (-1..4095: iDecay 0 keeps u, netx's non-decaying current),
# dv = vDecay (0..4096); Lava 0.10's LIF runs these exactly (its multipliers are 4096 - iDecay, 4096 - vDecay)
IDECAY_RANGE = (lava_rules.DU_RANGE[0] + 1, lava_rules.DU_RANGE[1] + 1)
VDECAY_RANGE = lava_rules.DV_RANGE


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


# lava-nc determine_sign_mode (what Dense uses when no sign mode is passed, as from netx)
_lava_sign_mode = lava_rules.sign_mode_of
# lava-nc Dense fixed_pt: clip_weights(num_bits=8) then truncate_weights (ValueError beyond 8 + sign bits)
_lava_dense_transform = lava_rules.effective_weights


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
    """The IR's effective bias ``bias_mant << bias_exp`` (``>>`` for a negative exponent), int64, no wrap."""
    return lava_rules.shift(np.asarray(nrn.bias_mant, dtype=np.int64), int(nrn.bias_exp))


def _first_diff(a: np.ndarray, b: np.ndarray) -> Optional[tuple[int, ...]]:
    """Index of the first element where same-shaped ``a`` and ``b`` differ, or None."""
    diff = np.argwhere(a != b)
    return tuple(int(i) for i in diff[0]) if diff.size else None


# --------------------------------------------------------------------------- neurons: du = iDecay - 1


def neuron_datasets(nrn: Neurons, vth: int) -> dict[str, Any]:
    """The ``neuron/*`` datasets of a layer: CUBA with ``iDecay = du + 1``, ``vDecay = dv``, ``vThMant = vth``."""
    return {
        "type": np.array([b"CUBA"], dtype="S10"),
        "iDecay": np.asarray(nrn.du, dtype=np.int64) + 1,
        "vDecay": np.asarray(nrn.dv, dtype=np.int64),
        "vThMant": np.asarray(vth, dtype=np.int64),
        "refDelay": np.int64(1),
        "gradedSpike": np.bool_(False),
    }


def sigma_delta_from_netx(kind: str, vth: int, bias: np.ndarray, spike_exp: int) -> SigmaDeltaNeurons:
    """What netx's ``get_neuron_params`` gives Lava's sdn processes for an ``SDNN`` neuron: ``kind`` ``delta``
    (an input layer), ``sigma`` (a ``sigma_output`` key; no threshold, no bias) or ``sigma_delta``;
    ``vth = vThMant``, ``bias`` per neuron, netx's ``spike_exp`` and ``state_exp = 6``."""
    return SigmaDeltaNeurons(kind=kind, vth=0 if kind == "sigma" else int(vth), bias_mant=bias,
                             spike_exp=int(spike_exp), state_exp=NETX_SDNN_STATE_EXP)


def neurons_from_netx(idecay, vdecay, vth, bias: np.ndarray) -> Neurons:
    """What netx's ``get_neuron_params`` gives Lava's LIF: ``du = iDecay - 1``, ``dv = vDecay``,
    ``vth = vThMant`` (each one int or one value per neuron), ``bias_mant = bias`` with ``bias_exp = 6``."""
    return Neurons(du=idecay - 1, dv=vdecay, vth=vth, bias_mant=bias, bias_exp=NETX_BIAS_EXP)


# --------------------------------------------------------------------------- weights: netx -> IR


def ir_dense_weights(canon: list[tuple[np.ndarray, int]], rep: dict) -> tuple[list[np.ndarray], int, int, str]:
    """``(weights, weight_exp, num_weight_bits, sign_mode)`` of one IR dense layer for what netx + Lava
    compute (:func:`_netx_dense_semantics`): the plain representation (exponent 0, 8 bits) where it is
    exact, else netx's own. ``ValueError`` where weight and weight_rec need different sign modes."""
    plain = [c for c, _ in canon]
    sm = _lava_sign_mode(np.hstack(plain))
    if all(e == 0 for _, e in canon) and all(
            np.array_equal(_lava_dense_transform(p, sm, 8), p) for p in plain):
        return plain, 0, 8, sm
    ws, exp, nbits = rep["weights"], rep["weight_exp"], rep["num_weight_bits"]
    sm = _lava_sign_mode(np.hstack(ws))
    if any(_canonical(_lava_dense_transform(w, sm, nbits), exp)[1] != c[1] or
           not np.array_equal(_canonical(_lava_dense_transform(w, sm, nbits), exp)[0], c[0])
           for w, c in zip(ws, canon)):
        raise ValueError("weight and weight_rec need different Lava sign modes, which one IR layer "
                         "cannot express")
    return ws, exp, nbits, sm


def ir_conv_weights(w: np.ndarray) -> tuple[np.ndarray, int, int, str]:
    """``(weight, weight_exp, num_weight_bits, sign_mode)`` of one IR conv layer computing what Lava's Conv
    computes with the stored integers ``w`` (it uses them unchanged); ``ValueError`` (naming the values)
    where no 8-bit mantissa with an exponent holds them."""
    sm = _lava_sign_mode(w)
    if np.array_equal(_lava_dense_transform(w, sm, 8), w):
        return w, 0, 8, sm
    try:
        wo, nbits, exp, clipped = _netx_optimize(w)
    except ValueError as exc:
        raise ValueError(f"values in [{int(w.min())}, {int(w.max())}]: {exc}") from None
    sm = _lava_sign_mode(wo)
    c_eff = _canonical(_lava_dense_transform(wo, sm, nbits), exp)
    if clipped or c_eff[1] != 0 or not np.array_equal(c_eff[0], w):
        raise ValueError(f"values in [{int(w.min())}, {int(w.max())}] do not fit an 8-bit synapse "
                         f"mantissa with an exponent (the IR's and Loihi's weight format)")
    return wo, exp, nbits, sm


# --------------------------------------------------------------------------- IR -> netx: what netx holds exactly


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
            # compare on one scale: netx's synapse is got * 2**gexp (gexp <= 0, a fraction when < 0)
            idx = _first_diff(want.astype(np.int64) << -gexp, got) if got.shape == want.shape else None
            if idx is None:
                detail = "differently"
            else:
                loaded = int(got[idx]) if gexp == 0 else f"{int(got[idx])} * 2**{gexp} (a fraction)"
                detail = f"effective weight {field}{list(idx)} = {int(want[idx])} as {loaded}"
            raise NetxExportError(
                f"layer {i}: {field}: netx would load {detail} (netx clips mixed-sign weights to [-256, 254] "
                f"and Lava's Dense clips excitatory to [0, 255], inhibitory to [-255, 0], then drops low "
                f"bits); the effective weights (mantissa * 2**weight_exp) must fit 8 bits for netx",
                layer=i, field=field)


def _exact_values(i: int, layer: Layer) -> tuple[list[np.ndarray], np.ndarray, int]:
    """netx weights, netx bias (per neuron) and vThMant that reproduce ``layer`` exactly, or NetxExportError."""
    parts = [_effective_plain(i, field, w, e, layer.num_weight_bits, layer.sign_mode)
             for field, w, e in _synapses(layer)]
    _check_netx_loads(i, layer, parts)
    for (field, _, _), w in zip(_synapses(layer), parts):
        _check_float32(i, field, w)
    bias = _netx_bias(i, layer.neurons)
    _check_float32(i, "bias", bias)
    return parts, bias, layer.neurons.vth


# netx's neuron for a dense layer without a 'neuron' group (hdf5.py:348-355); 1 << 18 - 1 == 1 << 17
NETX_INTEGRATOR = {"iDecay": 0, "vDecay": 4096, "vThMant": 1 << 17}


def _never_spikes(nrn: Neurons) -> bool:
    """Every neuron's threshold ``vth << 6`` lies above v's 24-bit range: the layer is an integrator."""
    return bool(np.all(np.asarray(nrn.vth) << 6 > 2**23 - 1))


def _is_integrator(nrn: Neurons) -> bool:
    """A non-spiking integrator as lava-dl writes PilotNet's output: u = input, no leak on v, maximal threshold."""
    if nrn.per_neuron:
        return False
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
    if layer.neurons.per_neuron:
        raise NetxExportError(f"layer {i}: neuron: per-neuron du / dv / vth arrays are written exactly or not "
                              f"at all (no approximation)", layer=i, field="neuron")
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


class NetxInexactWarning(UserWarning):
    """``write_netx(..., exact=False)`` wrote layers that lava-dl will run only approximately."""
