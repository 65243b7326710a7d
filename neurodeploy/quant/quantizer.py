"""Post-training quantization of a float SNN (a :class:`~neurodeploy.graph.FloatGraph`) to the fixed-point IR.

:func:`quantize_graph` maps any float graph; :func:`quantize_model` is the
walker's graph of a trained model (:func:`~neurodeploy.models.walk.graph_from_model`)
through it. The DLIF gains are folded first
(:func:`~neurodeploy.models.walk.fold_gains`), and the stateless nodes
between two neuron nodes (flatten, pooling, a per-channel map, synapses) are
composed into the one synapse of a Loihi layer
(:mod:`neurodeploy.quant.layers`). What Loihi's LIF cannot do exactly is a
one-line :class:`QuantizationError` naming the graph node and the parameter:
a reset by subtraction, leaks that differ between the neurons of a layer, a
leak outside [0, 1] or a threshold <= 0, a non-spiking LI node anywhere but
last or with a leak other than 1 (the readout integrates), pooling with no
synapse after it to fold into, pooling into a conv where the conv's padding
is not the pool's, recurrent weights on a conv layer. Per-neuron thresholds
are normalised into the rows of the weights (exact); per-neuron biases are
Loihi's own.

Each spiking layer (its synapses plus its neurons) is scaled on its own: the
layers talk in binary spikes, so a layer's membrane scale ``S`` (integer
voltage units per float unit) only has to agree with its own weights, bias
and threshold. For a layer with effective float weights ``W`` (DLIF gain
folded in), threshold ``theta`` and bias ``b``:

* ``w_int = round(S * W / 2**(weight_exp + 6))``: Lava adds ``(W s) << 6``
  shifted by ``weight_exp`` to the current; mixed-sign 8-bit Dense keeps only
  even mantissas in [-256, 254], so rounding is to even integers;
* ``vth = round(S * theta / 2**6)`` (Lava compares ``v > vth << 6``);
* ``bias_mant << bias_exp = round(S * b)``;
* ``dv = round(4096 * (1 - leak))``; ``du = 4095`` for current-free neurons
  (then ``u`` is exactly this step's input) and ``round(4096*(1-current_leak)) - 1``
  for CUBA (Lava adds a hidden +1 to du).

``weight_exp`` is the largest exponent whose full-range scale keeps the
threshold at most ``vth_target`` (headroom in the 24-bit state for inputs
above threshold); where even that is impossible the weights clip (reported).
The DLIF gain ``p[t]`` varies over time but Loihi weights do not: the mean gain
is folded in and its spread is reported (fine-tune with a frozen gain when it
matters). A layer whose biases would clip at that scale gets a lower threshold
scale instead, one at which its largest bias fits ``bias_mant << bias_exp``
(reported). The synapse bias of a CUBA layer feeds the current in float but
``v`` on Loihi (its bias is a neuron bias); that approximation is noted in
the layer's report.

Direct-encoded inputs use graded spikes carrying ``round(255 * x)``; the
float model sees the same 8-bit input (``SNNClassifier`` quantizes it).
With ``netx_exact=True`` (the deployment commands) a graded-input dense layer
that would need ``weight_exp < -1`` gets integer effective weights instead
(``weight_exp -1`` with even mantissas, threshold up to the calibrated state
bound): lava-dl netx files hold only integer effective weights, never the
floor of ``(W_mant x) >> k``, so this is what makes the exported file run in
netx with our spikes (:func:`_netx_exact_graded`; it costs resolution: the
default mnist5k model loses 0.5 points).

Linear readout (``model.readout: linear``; logits = the readout Linear's output
averaged over T) becomes an output layer of non-spiking integrators, the way
lava-dl writes PilotNet's last layer, and the network's ``readout`` is
``"potential"`` (class = argmax of the final v):

* ``du = 4095`` (u is this step's input), ``dv = 0`` (v sums), ``vth`` at the
  profile's maximum; v after the run's ``P = T + L`` steps is
  ``sum_s (W_int s_{s-1}) << (weight_exp + 6) + P * bias``;
* the per-step bias is ``round(S * b * T / P)``, so the run adds what the
  float model's T steps add (``T * b``) and ``v / (S * T)`` estimates the float
  logits; what still differs: weight/bias rounding, and any spikes the last
  hidden layer sends before its aligned window (bias-driven, steps
  ``< L - 1``; none without biases), which v also sums;
* the scale ``S`` is the largest (weights filling the mantissa range at
  ``weight_exp`` 0 at most) for which the worst case, on all ``P - 1`` steps
  that can reach the layer every input of one sign active at its maximum,
  plus P biases, ``max_i |(P - 1) * (sum_j+ w_ij * in_max << (weight_exp + 6))
  + P * bias_i|`` (and the same for the negative weights), stays at or below
  ``vth << 6``: v can neither spike nor clip, nor can u wrap. Exponent 0 is kept (netx-exact) while the mantissas keep at least
  half their range; otherwise a negative ``weight_exp`` lets the mantissas
  fill the range and the sum's floor shift does the scaling. The bound and
  its margin are in the layer's report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..errors import NeurodeployError, bounded
from .. import lava_rules
from ..graph import CubaLIF, FloatGraph, GraphError, LIF
from ..ir import ConvLayer, DenseLayer, InputEncoding, Layer, Network, Neurons, conv_out_shape
from ..models.builders import SNNClassifier
from ..models.folding import fold_batchnorm, has_batchnorm
from ..models.graph_module import GraphModule
from ..models.walk import fold_gains, gain_record, graph_from_model, model_layers
from ..data.encoders import DirectEncoder, PoissonEncoder, TemporalEncoder
from ..neurons.modules import RecurrentSpikingNeurons, SpikingNeurons, record_activity
from .layers import graph_layers
from .profile import HardwareProfile


class QuantizationError(NeurodeployError, ValueError):
    """The model cannot be mapped to the profile; the message says why, with numbers."""


@dataclass
class LayerReport:
    """How one layer was quantized and what it cost."""

    index: int
    kind: str
    shape: list[int]
    scale: float
    weight_exp: int
    vth: int
    bias_exp: int
    du: int
    dv: int
    weight_clip_fraction: float
    weight_rel_error: float
    weight_levels_used: int
    threshold_rel_error: float
    leak_float: float
    leak_fixed: float
    gain_mean: Optional[float] = None
    gain_spread: Optional[float] = None
    recurrent_weight_exp: Optional[int] = None
    recurrent_rel_error: Optional[float] = None
    bias_clip_fraction: float = 0.0
    max_input_per_step: int = 0
    peak_current: Optional[float] = None   # largest |input current| / threshold on the calibration inputs
    notes: list[str] = field(default_factory=list)
    readout: Optional[str] = None        # "potential" for the integrator output layer of a linear readout
    v_bound: Optional[int] = None        # worst-case |v| over the run (potential readout)
    v_limit: Optional[int] = None        # what v must stay within: vth << 6 (never spikes, never clips)
    node: Optional[int] = None           # the float graph's node of this layer (its neuron node)


@dataclass
class QuantizationResult:
    network: Network
    layers: list[LayerReport]
    resources: dict


def _model_body(model: SNNClassifier):
    try:
        return model_layers(model)
    except GraphError as exc:
        raise QuantizationError(str(exc)) from None


def _float_layers(model: SNNClassifier) -> list[dict]:
    """The deployable spiking layers of a float model as dicts (``kind``, ``weight``, ``bias``, ``conv``,
    ``neurons``, ``weight_rec``): :func:`~neurodeploy.models.walk.model_layers`, for code that still reads
    the dicts (the float-side hardware noise). A linear readout is not among them; see :func:`_readout_layer`.
    """
    return [layer.as_dict() for layer in _model_body(model).layers]


def _readout_layer(model: SNNClassifier) -> Optional[dict]:
    """The linear readout of a ``readout: linear`` model (kind, weight, bias), else None."""
    readout = _model_body(model).readout
    return readout.as_dict() if readout is not None else None


def _quantize_weights(w: np.ndarray, scale: float, exp: int, profile: HardwareProfile) -> tuple[np.ndarray, float, float]:
    """Integer mantissas, clip fraction and relative RMS error for weights ``w`` at ``scale``.

    Mantissas are rounded to the multiples Lava keeps (mixed 8-bit: even
    numbers) and clipped to the sign mode's range.
    """
    lo, hi = profile.weight_range
    step = profile.weight_step
    target = w * scale / 2.0 ** (exp + profile.neuron.activation_shift)
    q = np.clip(step * np.rint(target / step), lo, hi)
    clip = float(np.mean((target > hi + step / 2) | (target < lo - step / 2))) if target.size else 0.0
    back = q * 2.0 ** (exp + profile.neuron.activation_shift) / scale
    norm = float(np.linalg.norm(w))
    err = float(np.linalg.norm(back - w) / norm) if norm > 0 else 0.0
    return q.astype(np.int64), clip, err


def _full_range(w: np.ndarray, profile: HardwareProfile) -> float:
    """Largest factor that maps ``w`` into the mantissa range (both signs respected)."""
    lo, hi = profile.weight_range
    factors = []
    if w.size and w.max() > 0:
        factors.append(hi / float(w.max()) if hi > 0 else 0.0)
    if w.size and w.min() < 0:
        factors.append(-lo / float(-w.min()) if lo < 0 else 0.0)
    factors = [f for f in factors if f > 0]
    return min(factors) if factors else 0.0


def _choose_exp_and_scale(w: np.ndarray, theta: float, profile: HardwareProfile,
                          vth_target: int) -> tuple[int, float, list[str]]:
    """Pick the weight exponent and membrane scale of a layer (see module docstring)."""
    shift = profile.neuron.activation_shift
    notes = []
    fill = _full_range(w, profile)
    if fill == 0:
        # all-zero weights (or none representable in this sign mode): put the threshold at the target
        note = "all weights are zero" if not np.any(w) else "no weight has the sign this profile allows"
        return profile.weights.exp_min, vth_target * 2.0**shift / theta, [note]
    chosen = None
    if profile.weights.exp_min <= 0 <= profile.weights.exp_max:
        # Exponent 0 first: the effective weights are then plain 8-bit integers,
        # which lava-dl netx files hold exactly (netx has no weight exponent).
        scale = fill * 2.0**shift
        if 2.0 ** max(profile.weights.bits - 2, 1) <= theta * scale / 2.0**shift <= vth_target:
            return 0, scale, notes
    for exp in range(profile.weights.exp_max, profile.weights.exp_min - 1, -1):
        scale = fill * 2.0 ** (exp + shift)
        if theta * scale / 2.0**shift <= vth_target:
            chosen = (exp, scale)
            break
    if chosen is None:
        # weights tiny next to the threshold: cap the threshold, weights use part of the range
        exp = profile.weights.exp_min
        scale = vth_target * 2.0**shift / theta
        notes.append("weights are small next to the threshold even at the smallest weight exponent; "
                     "they use only part of the mantissa range")
        chosen = (exp, scale)
    exp, scale = chosen
    vth = theta * scale / 2.0**shift
    min_vth = 2.0 ** max(profile.weights.bits - 2, 1)
    if vth < min_vth:
        # weights huge next to the threshold: keep threshold resolution, clip the largest weights
        scale = min_vth * 2.0**shift / theta
        notes.append(f"weights are huge next to the threshold; the threshold is kept at {int(min_vth)} "
                     f"and the largest weights clip")
    return exp, scale, notes


def _netx_integer_exp(profile: HardwareProfile) -> int:
    """The most negative weight exponent whose effective weights are still integers on the mantissa grid:
    ``-log2(weight_step)`` (mixed 8-bit: -1, even mantissas halved exactly by the sum's floor shift)."""
    return -(int(profile.weight_step).bit_length() - 1)


def _netx_exact_graded(w: np.ndarray, theta: float, profile: HardwareProfile, exp: int, scale: float,
                       vth_target: int) -> tuple[int, float, str]:
    """A graded-input dense layer with integer effective weights, the only synapses lava-dl netx holds exactly.

    netx has no weight exponent of its own: it re-derives one from the stored
    integers (``optimize_weight_bits``), so a netx file computes ``W @ x`` with
    plain integer ``W``. A graded first layer at ``weight_exp < 0`` with
    arbitrary mantissas floors ``(W_mant @ x) >> k`` instead, which no netx
    file can express. Here such a layer gets the exponent
    ``_netx_integer_exp`` (mantissas on the grid halved exactly) and the
    largest scale at which full-range weights keep ``vth <= vth_target``;
    the effective weights are then integers (coarser than the floored
    mantissas: that is the price of a file lava-dl runs exactly).
    Layers at an exponent >= it are returned unchanged.
    """
    exp_int = _netx_integer_exp(profile)
    if exp >= exp_int or not profile.weights.exp_min <= exp_int <= profile.weights.exp_max:
        return exp, scale, ""
    shift = profile.neuron.activation_shift
    fill = _full_range(w, profile)
    top = vth_target * 2.0**shift / theta
    new_scale = min(top, fill * 2.0 ** (exp_int + shift)) if fill > 0 else top
    return exp_int, new_scale, (f"weight exponent {exp_int} instead of {exp}: integer effective weights, which "
                                f"lava-dl netx holds exactly (its files have no weight exponent)")


def _recurrent_exp(w: np.ndarray, scale: float, profile: HardwareProfile) -> int:
    """Smallest weight exponent at which recurrent weights at ``scale`` do not clip."""
    fill = _full_range(w, profile)
    if fill == 0:
        return profile.weights.exp_min
    exp = math.ceil(math.log2(scale / (fill * 2.0**profile.neuron.activation_shift)))
    return int(min(max(exp, profile.weights.exp_min), profile.weights.exp_max))


def _bias(b: np.ndarray, scale: float, profile: HardwareProfile) -> tuple[np.ndarray, int, float]:
    """Bias mantissa and exponent; exponent 6 first (lava-dl netx's fixed convention)."""
    total = b * scale
    mmax = profile.bias_mant_max
    exps = range(profile.bias_exp_max + 1)
    best = None
    for e in sorted(exps, key=lambda e: (e != 6, e)):  # 6 first, then the smallest that fits
        mant = np.rint(total / 2.0**e)
        if np.all(np.abs(mant) <= mmax):
            best = (mant, e)
            break
    clip = 0.0
    if best is None:
        e = profile.bias_exp_max
        mant = np.rint(total / 2.0**e)
        clip = float(np.mean(np.abs(mant) > mmax))
        best = (np.clip(mant, -mmax, mmax), e)
    mant, e = best
    return mant.astype(np.int64), int(e), clip


def _bias_cap(b: np.ndarray, theta: float, profile: HardwareProfile) -> int:
    """The largest vth at which every bias ``b`` (float, per step) fits ``bias_mant << bias_exp_max``."""
    peak = float(np.abs(b).max(initial=0.0))
    if peak == 0:
        return profile.vth_max
    scale = (profile.bias_mant_max << profile.bias_exp_max) / peak * (1 - 1e-9)
    return max(1, int(theta * scale / 2.0**profile.neuron.activation_shift))


def _check_scale(scale: float, where: str, theta: Optional[float]) -> None:
    """A membrane scale must be a positive finite number (extreme thresholds or weights can make it inf or 0)."""
    if not (math.isfinite(scale) and scale > 0):
        cause = f"threshold {theta:g} and its weights" if theta is not None else "its weights and biases"
        raise QuantizationError(f"{where}: {cause} give a membrane scale of {scale:g}; the layer's values are "
                                f"too extreme for fixed point (expected a positive finite scale)")


def _readout_bound(w_int: np.ndarray, exp: int, bias_eff: np.ndarray, in_max: int, steps: int,
                   profile: HardwareProfile) -> int:
    """Worst-case |v| of an integrator layer (du 4095, dv 0) over a run of ``steps`` steps.

    Per neuron and sign: every input whose weight has that sign at ``in_max``
    on each of the ``steps - 1`` steps that can reach the layer (one step of
    synaptic delay), plus ``steps`` biases. Reachable when inputs are free.
    """
    w = w_int.reshape(w_int.shape[0], -1).astype(np.int64)
    pos = np.clip(w, 0, None).sum(1) * int(in_max)
    neg = np.clip(-w, 0, None).sum(1) * int(in_max)
    # Lava shifts the sum: a right shift floors (a negative sum's magnitude rounds up)
    up = pos << exp if exp >= 0 else pos >> -exp
    down = neg << exp if exp >= 0 else -((-neg) >> -exp)
    sh = profile.neuron.activation_shift
    b = steps * np.asarray(bias_eff, dtype=np.int64)
    hi = (steps - 1) * (up << sh) + b
    lo = -(steps - 1) * (down << sh) + b
    return int(max(np.abs(hi).max(initial=0), np.abs(lo).max(initial=0)))


def _quantize_readout(w: np.ndarray, b: Optional[np.ndarray], index: int, encoding: InputEncoding,
                      profile: HardwareProfile, time_steps: int, latency: int) -> tuple[DenseLayer, LayerReport]:
    """The linear readout (float64 weights ``(out, in)``, bias or None) as an integrator output layer (see
    the module docstring)."""
    shift = profile.neuron.activation_shift
    graded_in = index == 0 and encoding.kind == "graded"
    if graded_in:
        w = w / encoding.scale
    in_max = (2**encoding.bits - 1) if graded_in else 1
    b = b if b is not None else np.zeros(w.shape[0])
    T, P = int(time_steps), int(time_steps) + int(latency)
    b_step = b * T / P                      # P per-step biases add up to the float model's T
    v_limit = int(min(profile.vth_max << profile.neuron.vth_shift, profile.state_max))
    notes: list[str] = []
    # |v| per unit scale in the worst case (float weights): (P - 1) steps of every input of one sign plus P biases
    pos, neg = np.clip(w, 0, None).sum(1) * in_max, np.clip(-w, 0, None).sum(1) * in_max
    per_unit = float(np.maximum(np.abs((P - 1) * pos + P * b_step),
                                np.abs((P - 1) * neg - P * b_step)).max(initial=0.0))
    s_lim = v_limit / per_unit if per_unit > 0 else float("inf")
    fill = _full_range(w, profile)
    exp = 0
    if fill == 0:
        scale = s_lim if np.isfinite(s_lim) else 2.0**shift
        notes.append("all weights are zero" if not np.any(w) else "no weight has the sign this profile allows")
    elif fill * 2.0**shift <= s_lim:
        scale = fill * 2.0**shift                        # full range at exponent 0 fits the bound
    elif s_lim >= fill * 2.0**shift / 2:
        scale = s_lim                                    # exponent 0 (netx-exact), at least half the range
    else:
        exp = int(math.floor(math.log2(s_lim / (fill * 2.0**shift))))
        if exp < profile.weights.exp_min:
            exp, scale = profile.weights.exp_min, s_lim
            notes.append("the readout's worst case needs a weight exponent below the profile's minimum; "
                         "the weights use only part of the mantissa range")
        else:
            scale = min(s_lim, fill * 2.0 ** (exp + shift))
    _check_scale(scale, f"layer {index} (linear readout)", None)
    for _ in range(8):                                   # rounding can push the bound over: shrink and redo
        w_int, clip, err = _quantize_weights(w, scale, exp, profile)
        bias_mant, bias_exp, bias_clip = _bias(b_step, scale, profile)
        bias_eff = bias_mant << bias_exp
        v_bound = _readout_bound(w_int, exp, bias_eff, in_max, P, profile)
        if v_bound <= v_limit:
            break
        scale *= v_limit / v_bound * (1 - 1e-6)
    else:
        notes.append(f"could not keep the worst-case |v| {v_bound} within {v_limit}: v can clip or spike")
    vth = profile.vth_max
    nrn = Neurons(du=profile.decay_max, dv=0, vth=vth, bias_mant=bias_mant.reshape(-1), bias_exp=bias_exp)
    layer = DenseLayer(weight=w_int.reshape(w.shape[0], -1), neurons=nrn, weight_exp=exp,
                       num_weight_bits=profile.weights.bits, sign_mode=profile.weights.sign_mode,
                       name=f"layer{index}")
    notes.append(f"integrator readout (du {profile.decay_max}, dv 0, never spikes): worst-case |v| over the "
                 f"{P}-step run is {v_bound} = {100 * v_bound / v_limit:.0f}% of vth << "
                 f"{profile.neuron.vth_shift} = {v_limit}; per-step bias = bias * T/(T+L) = bias * {T}/{P}")
    if exp != 0:
        notes.append(f"weight exponent {exp} keeps the weights' resolution under the bound; netx holds plain "
                     f"integer weights, so lava-dl gets this layer only approximately")
    if bias_clip > 0:
        notes.append(f"{100 * bias_clip:.1f}% of the readout biases clip")
    report = LayerReport(
        index=index, kind="dense", shape=list(layer.out_shape), scale=scale, weight_exp=exp, vth=vth,
        bias_exp=bias_exp, du=nrn.du, dv=0, weight_clip_fraction=clip, weight_rel_error=err,
        weight_levels_used=int(np.unique(w_int).size), threshold_rel_error=0.0, leak_float=1.0, leak_fixed=1.0,
        bias_clip_fraction=bias_clip, notes=notes, readout="potential", v_bound=v_bound, v_limit=v_limit)
    report.max_input_per_step = int(np.abs(w_int).reshape(w_int.shape[0], -1).sum(1).max() * in_max
                                    * 2.0 ** (exp + shift)) if w_int.size else 0
    return layer, report


def input_encoding_for(model: SNNClassifier, profile: HardwareProfile) -> InputEncoding:
    """The fixed-point input path of a model's encoder."""
    if isinstance(model.encoder, PoissonEncoder):
        return InputEncoding(kind="spikes", bits=1, scale=1.0)
    bits = profile.input.graded_bits
    return InputEncoding(kind="graded", bits=bits, scale=float(2**bits - 1))


def peak_currents(model: SNNClassifier, calibration: torch.Tensor, repeat: Optional[int] = None) -> list[float]:
    """Per spiking layer, the largest ``|p * I|`` (gain times input current, recurrent part included)
    over the calibration inputs, in thresholds.

    ``calibration`` is an encoded time-major input as the chip receives it
    (:meth:`SNNClassifier.run_encoded`; ``repeat`` for direct encoding).
    """
    peaks = []
    with torch.no_grad(), record_activity(model) as recs:
        model.eval()
        model.run_encoded(calibration, repeat=repeat)
    for layer, rec in zip(model.spiking_layers(), recs):
        gain = float(layer.gain.detach().abs().max()) if layer.gain is not None else 1.0
        peaks.append(float(rec.current.abs().max()) * gain / float(layer.p.v_th))
    return peaks


def _state_cap(profile: HardwareProfile, peak: float, margin: float = 1.25) -> int:
    """Largest vth for which ``v <= (vth << 6) * (1 + margin * peak)`` stays inside the signed state.

    v passes the threshold by at most one step's input u before it resets, and
    u is ``peak`` thresholds at most on the calibration inputs (``margin`` for
    stronger unseen ones); past the state u wraps and v clips, and the
    network no longer computes what the float model does.
    """
    limit = 2 ** (profile.neuron.state_bits - 1) - 1
    return max(1, int(limit / (2.0**profile.neuron.activation_shift * (1 + margin * peak))))


def require_finite(model: torch.nn.Module, when: str = "") -> None:
    """Refuse (:class:`QuantizationError`, naming the tensor) a model with a NaN or infinite value anywhere.

    Weights, biases, DLIF gains, BatchNorm statistics and every other floating
    parameter or buffer, and the neurons' threshold and leaks: NaN compares
    false with everything, so a non-finite model would otherwise quantize to
    some integers and export and run as if nothing were wrong.
    """
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in tensors:
        if tensor.is_floating_point():
            bad = ~torch.isfinite(tensor.detach())
            if bool(bad.any()):
                first = float(tensor.detach()[bad].reshape(-1)[0])
                raise QuantizationError(f"{name}{when}: {int(bad.sum())} of {tensor.numel()} values are NaN or "
                                        f"infinite (e.g. {first}); a model with non-finite weights cannot be "
                                        f"quantized (retrain it, or quantize a checkpoint from before it diverged)")
    for i, layer in enumerate(m for m in model.modules() if isinstance(m, (SpikingNeurons, RecurrentSpikingNeurons))):
        p = layer.p
        for field_name in ("v_th", "tau_mem_inv", "tau_syn_inv"):
            value = getattr(p, field_name, None)
            if value is not None and not bool(torch.isfinite(torch.as_tensor(value, dtype=torch.float64)).all()):
                raise QuantizationError(f"spiking layer {i}: neuron parameter {field_name} is {bounded(value)}; "
                                        f"expected a finite number")


def _node_scalar(graph: FloatGraph, index: int, name: str, value: Optional[np.ndarray]) -> Optional[float]:
    """A neuron parameter that Loihi holds once per layer: its single value (refused if it varies)."""
    if value is None:
        return None
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    if flat.size > 1 and not np.all(flat == flat[0]):
        raise QuantizationError(f"node {index} ({type(graph.nodes[index]).__name__}): {name} has "
                                f"{np.unique(flat).size} different values over the neurons; Loihi's "
                                f"{'decays are' if 'leak' in name else 'value is'} one per layer")
    return float(flat[0])


def _require_finite_graph(graph: FloatGraph) -> None:
    """Refuse a graph with a NaN or infinite array, naming the node and parameter."""
    for i, node in enumerate(graph.nodes):
        for name in ("weight", "bias", "gain", "leak", "current_leak", "threshold"):
            value = getattr(node, name, None)
            if value is None:
                continue
            bad = ~np.isfinite(np.asarray(value, dtype=np.float64))
            if bad.any():
                raise QuantizationError(f"node {i} ({type(node).__name__}): {name} has {int(bad.sum())} of "
                                        f"{bad.size} values NaN or infinite; a graph with non-finite values cannot "
                                        f"be quantized")


def _encoding(kind, profile: HardwareProfile) -> InputEncoding:
    if isinstance(kind, InputEncoding):
        return kind
    if kind == "spikes":
        return InputEncoding(kind="spikes", bits=1, scale=1.0)
    if kind == "graded":
        bits = profile.input.graded_bits
        return InputEncoding(kind="graded", bits=bits, scale=float(2**bits - 1))
    raise QuantizationError(f"input encoding {kind!r}, expected 'spikes', 'graded' or an InputEncoding")


def _neuron_checks(graph: FloatGraph, layer) -> tuple[float, Optional[float], np.ndarray]:
    """(leak, current_leak, thresholds) of a layer's neuron node; refuses what Loihi's LIF cannot do."""
    node, i = layer.neuron, layer.node
    label = f"node {i} ({type(node).__name__})"
    if getattr(node, "reset", "zero") != "zero":
        raise QuantizationError(f"{label}: reset {node.reset!r}: Loihi's LIF resets v to 0 (reset 'zero'); a "
                                f"reset by subtraction has no fixed-point mapping here")
    leak = _node_scalar(graph, i, "leak", node.leak)
    current_leak = _node_scalar(graph, i, "current_leak", getattr(node, "current_leak", None))
    for name, value in (("leak", leak), ("current_leak", current_leak)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise QuantizationError(f"{label}: {name} {value:g} outside [0, 1]: Loihi's decays cannot grow a state")
    theta = np.asarray(node.threshold, dtype=np.float64).reshape(-1)
    if np.any(theta <= 0):
        raise QuantizationError(f"{label}: threshold {float(theta.min()):g}: Loihi's threshold must be positive")
    return leak, current_leak, theta


def _normalise_thresholds(layer, theta: np.ndarray) -> tuple[float, list[str]]:
    """One threshold per layer: rows of a layer with per-neuron thresholds are scaled to the largest (exact:
    v_i > theta_i  <=>  v_i * theta_max / theta_i > theta_max, and the reset is to zero)."""
    if theta.size == 1 or np.all(theta == theta[0]):
        return float(theta[0]), []
    ref = float(theta.max())
    r = ref / theta
    if layer.kind == "conv":
        per_c = r.reshape(layer.out_shape[0], -1)
        if not np.all(per_c == per_c[:, :1]):
            raise QuantizationError(f"node {layer.node} ({type(layer.neuron).__name__}): thresholds that vary "
                                    f"within a conv channel cannot be deployed (one conv kernel per channel)")
        layer.weight = layer.weight * per_c[:, 0][:, None, None, None]
        if layer.bias is not None:
            layer.bias = layer.bias * per_c[:, 0]
    else:
        layer.weight = layer.weight * r[:, None]
        if layer.bias is not None:
            layer.bias = layer.bias * r
        if layer.weight_rec is not None:
            layer.weight_rec = layer.weight_rec * r[:, None]
    if layer.neuron_bias is not None:
        layer.neuron_bias = layer.neuron_bias * r
    return ref, [f"per-neuron thresholds ({theta.min():g} .. {ref:g}) normalised to {ref:g}: each neuron's "
                 f"weights and bias are scaled by {ref:g} / its threshold (exact)"]


def graph_peak_currents(graph: FloatGraph, calibration, repeat: Optional[int] = None) -> list[float]:
    """Per spiking neuron node of ``graph`` (gains folded), the largest ``|current| / threshold`` over the
    calibration inputs (time-major ``(T, B, *input_shape)``; ``repeat``: one step repeated), run with
    :class:`~neurodeploy.models.graph_module.GraphModule` in float64."""
    x = torch.as_tensor(np.asarray(calibration, dtype=np.float64) if not isinstance(calibration, torch.Tensor)
                        else calibration).double()
    if repeat is not None:
        if x.shape[0] != 1:
            raise QuantizationError(f"calibration with repeat={repeat} takes one step, got {x.shape[0]}")
        x = x.expand(repeat, *x.shape[1:])
    module = GraphModule(graph, dtype=torch.float64)
    with torch.no_grad():
        _, records = module(x, currents=True)
    shapes = graph.shapes()
    peaks = []
    for i, node in enumerate(graph.nodes):
        if isinstance(node, (LIF, CubaLIF)):
            theta = torch.as_tensor(np.array(node.threshold, dtype=np.float64))
            theta = theta.reshape(()) if theta.numel() == 1 else theta.reshape(shapes[i])
            peaks.append(float((records[i]["current"].abs() / theta).max()))
    return peaks


def quantize_model(model: SNNClassifier, input_shape: tuple[int, ...], profile: HardwareProfile, *,
                   time_steps: int, vth_target: Optional[int] = None, name: str = "",
                   calibration: Optional[torch.Tensor] = None,
                   calibration_repeat: Optional[int] = None, cuba_bias: str = "refuse",
                   netx_exact: bool = False) -> QuantizationResult:
    """Map a trained float model to a fixed-point :class:`Network` for ``profile``.

    The model's :class:`~neurodeploy.graph.FloatGraph`
    (:func:`~neurodeploy.models.walk.graph_from_model`: BatchNorm folded into
    the convs with eval statistics, input normalisation into the first
    synapse, DLIF gains kept per step) goes through :func:`quantize_graph`,
    which folds the mean gains. With ``calibration`` (encoded inputs, see
    :func:`peak_currents`), a layer whose input current reaches many
    thresholds gets a lower threshold scale so its u and v cannot leave the
    24-bit state (a strongly driven recurrent layer otherwise wraps u and
    loses most of its accuracy); the peaks are measured on the model itself.
    """
    require_finite(model)
    if has_batchnorm(model):
        model = fold_batchnorm(model)   # a BatchNormFoldError names the layer
        require_finite(model, " (after folding BatchNorm into the convs)")
    if not isinstance(model.encoder, (DirectEncoder, PoissonEncoder, TemporalEncoder)):
        raise QuantizationError(f"encoder {type(model.encoder).__name__} has no fixed-point input path")
    encoding = input_encoding_for(model, profile)
    if encoding.kind == "graded" and model.input_levels != encoding.scale:
        raise QuantizationError(
            f"the model was trained on inputs quantized to {model.input_levels} levels (model.input_bits) but "
            f"profile {profile.name!r} sends {profile.input.graded_bits}-bit graded spikes "
            f"({int(encoding.scale)} levels); set model.input_bits to {profile.input.graded_bits}")
    try:
        graph = graph_from_model(model, time_steps, fold=False, input_shape=tuple(input_shape))
    except GraphError as exc:
        raise QuantizationError(str(exc)) from None
    peaks = peak_currents(model, calibration, calibration_repeat) if calibration is not None else None
    return quantize_graph(graph, profile, time_steps=time_steps, input_encoding=encoding, vth_target=vth_target,
                          name=name, peaks=peaks, cuba_bias=cuba_bias, netx_exact=netx_exact)


def quantize_graph(graph: FloatGraph, profile: HardwareProfile, *, time_steps: Optional[int] = None,
                   input_encoding="spikes", vth_target: Optional[int] = None, name: str = "",
                   calibration=None, calibration_repeat: Optional[int] = None,
                   peaks: Optional[list[float]] = None, cuba_bias: str = "refuse",
                   netx_exact: bool = False) -> QuantizationResult:
    """Map a float graph to a fixed-point :class:`Network` for ``profile`` (see the module docstring).

    ``time_steps``: steps per sample (default ``graph.time_steps``).
    ``input_encoding``: what the first layer receives, ``"spikes"`` (0/1),
    ``"graded"`` (values in [0, 1] sent as ``round(x * (2**bits - 1))``) or
    an :class:`~neurodeploy.ir.InputEncoding`. The DLIF gains are folded to
    their means first (:func:`~neurodeploy.models.walk.fold_gains`), linear
    chains between neuron nodes are composed into one synapse
    (:mod:`neurodeploy.quant.layers`). ``calibration``: encoded inputs
    ``(T, B, *input_shape)`` (``calibration_repeat`` for a repeated step)
    whose peak currents (:func:`graph_peak_currents`) cap each layer's
    threshold scale; ``peaks`` gives those peaks directly (one per spiking
    layer). What Loihi cannot do exactly (reset by subtraction, per-neuron
    leaks, a leaky integrator readout, pooling without a synapse after it)
    is a :class:`QuantizationError` naming the node; so is the synapse bias
    of a CUBA layer (it enters the current in float, v on Loihi) unless
    ``cuba_bias="approximate"`` (then it goes to v and the report says so).
    ``netx_exact=True`` (what the deployment commands use): a graded-input
    layer gets integer effective weights (:func:`_netx_exact_graded`; its
    threshold up to the calibrated state bound where ``peaks`` are known), so
    lava-dl netx runs the exported file exactly; the default keeps the finer
    floored mantissas of a negative weight exponent, which netx gets only
    approximately (the writer says so per layer).
    """
    if cuba_bias not in ("refuse", "approximate"):
        raise ValueError(f"cuba_bias {cuba_bias!r}: expected 'refuse' or 'approximate'")
    graph.validate()
    _require_finite_graph(graph)
    T = time_steps if time_steps is not None else graph.time_steps
    if T is None or not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
        raise QuantizationError(f"time_steps {T!r}: quantizing a graph needs a positive number of steps per "
                                f"sample (pass time_steps=, or set graph.time_steps)")
    T = int(T)
    encoding = _encoding(input_encoding, profile)
    if graph.time_steps != T:
        graph = FloatGraph(graph.nodes, dt=graph.dt, time_steps=T, readout=graph.readout, metadata=graph.metadata)
    graph = fold_gains(graph)
    float_layers, readout = graph_layers(graph, QuantizationError)
    if peaks is None and calibration is not None:
        peaks = graph_peak_currents(graph, calibration, calibration_repeat)
    if peaks is not None and len(peaks) != len(float_layers):
        raise QuantizationError(f"{len(peaks)} calibration peaks for {len(float_layers)} spiking layers")
    # vth << 6 at most 1/16 of the 24-bit state: a strongly driven first layer
    # (graded 8-bit pixels) reached 4x its threshold in one step and wrapped u
    state_headroom = profile.neuron.state_bits - 1 - profile.neuron.activation_shift - 4
    vth_target = int(vth_target or min(profile.vth_max, 2**state_headroom))
    shape: tuple[int, ...] = tuple(graph.input_shape)
    ir_layers: list[Layer] = []
    reports: list[LayerReport] = []
    for i, fl in enumerate(float_layers):
        leak, current_leak, thetas = _neuron_checks(graph, fl)
        theta, theta_notes = _normalise_thresholds(fl, thetas)
        w = fl.weight
        if i == 0 and encoding.kind == "graded":
            w = w / encoding.scale  # the first layer receives round(x * scale)
        b = fl.bias if fl.bias is not None else np.zeros(w.shape[0])
        joint = w
        graded_in = i == 0 and encoding.kind == "graded"
        if fl.kind == "dense_rec":
            w_rec = fl.weight_rec
            if not graded_in:
                # spike inputs: one scale for both matrices keeps exponent 0 for both (netx's dense_rec);
                # graded inputs carry a 1/255 factor, so sharing would crush the input weights
                joint = np.concatenate([w.reshape(w.shape[0], -1), w_rec], axis=1)
        if fl.kind == "conv":
            # one bias per channel in torch, one per neuron (C, H, W order) on the chip
            conv = fl.conv
            _, h, w_out = conv_out_shape(shape, w.shape, conv.stride, conv.padding, conv.dilation)
            b = np.repeat(b, h * w_out)
        extra = fl.neuron_bias
        if fl.neuron.bias is not None:
            nb = np.broadcast_to(np.asarray(fl.neuron.bias, dtype=np.float64).reshape(-1), b.shape)
            extra = nb if extra is None else extra + nb
        if extra is not None:
            b = b + extra
        target = vth_target if peaks is None else min(vth_target, _state_cap(profile, peaks[i]))
        exp, scale, notes = _choose_exp_and_scale(joint, theta, profile, target)
        cap = _bias_cap(b, theta, profile)
        if _bias(b, scale, profile)[2] > 0 and cap < target:
            # the biases would clip at this scale: lower the threshold scale until the largest fits
            # (only for layers whose biases clip; every other layer keeps its numbers)
            exp, scale, notes = _choose_exp_and_scale(joint, theta, profile, cap)
            notes.append(f"the largest bias ({float(np.abs(b).max() / theta):.2g} thresholds per step) does not "
                         f"fit the {profile.neuron.bias_mant_bits}-bit bias mantissa at the weights' scale: "
                         f"threshold scale capped at vth {cap}")
        # dense only. A recurrent layer: netx optimizes [weight, weight_rec] into one 8-bit matrix, and
        # graded-input weights (1/255 per level) next to spike-driven recurrent ones need ~16 bits. A conv:
        # its few inputs per neuron (a 3x3 kernel) do not average out integer rounding (digits BN conv:
        # first-layer spikes 95% like the float model's instead of 99%). Both keep the floored mantissas
        # and the export names them as inexact for netx.
        if graded_in and netx_exact and fl.kind == "dense":
            # resolution now grows with the threshold: use the calibrated state bound (u, v stay in the
            # 24-bit state up to 1.25x the calibration peak) rather than the blanket 2**13 where it is known
            netx_target = vth_target if peaks is None else min(profile.vth_max, _state_cap(profile, peaks[i]))
            netx_target = min(netx_target, cap)   # and every bias still fits its mantissa (the bias cap)
            exp, scale, netx_note = _netx_exact_graded(joint, theta, profile, exp, scale, netx_target)
            if netx_note:
                notes.append(netx_note)
        notes = theta_notes + notes
        _check_scale(scale, f"layer {i}", theta)
        if target < vth_target:
            notes.append(f"input current reaches {peaks[i]:.1f} thresholds on the calibration inputs: "
                         f"threshold scale capped at vth {target} so u and v stay in the "
                         f"{profile.neuron.state_bits}-bit state")
        w_int, clip, err = _quantize_weights(w, scale, exp, profile)
        vth = int(min(round(theta * scale / 2.0**profile.neuron.activation_shift), profile.vth_max))
        vth_back = vth * 2.0**profile.neuron.activation_shift / scale
        norm = graph.metadata.get("normalisation")
        if norm is not None and norm.get("node") in fl.synapse_nodes:
            notes.append("the bias includes the folded input normalisation (- W mean/std); like any bias it acts "
                         "from step 0, one step before the first input reaches the layer, and after the last")
        if (current_leak is not None and current_leak != 0 and fl.bias is not None and np.any(fl.bias != 0)):
            if cuba_bias != "approximate":
                raise QuantizationError(
                    f"node {fl.node} ({type(fl.neuron).__name__}) parameter bias: a CUBA layer's synapse bias enters the current "
                    f"(i = {current_leak:g} i + W x + b) in float but v on Loihi, which cannot add a bias to u: "
                    f"not exact; train without it (model.bias: false) or allow the approximation (steady "
                    f"state off by {1 / (1 - current_leak):.3g}x; cuba_bias='approximate', CLI "
                    f"--approximate-cuba-bias)")
            notes.append(f"the synapse bias of this CUBA layer enters the current (i = {current_leak:g} i + W x + b) "
                         f"in float but v on Loihi (v = dv v + u + bias): the float model's bias settles "
                         f"{1 / (1 - current_leak):.3g}x larger; fixed point approximates it")
        bias_mant, bias_exp, bias_clip = _bias(b, scale, profile)
        dv = lava_rules.dv_for_leak(leak, profile.decay_max)
        du = profile.decay_max if current_leak is None else lava_rules.du_for_leak(current_leak, profile.decay_max)
        nrn = Neurons(du=du, dv=dv, vth=vth, bias_mant=bias_mant.reshape(-1), bias_exp=bias_exp)
        report = LayerReport(
            index=i, kind=fl.kind, shape=[], scale=scale, weight_exp=exp, vth=vth, bias_exp=bias_exp,
            du=du, dv=dv, weight_clip_fraction=clip, weight_rel_error=err,
            weight_levels_used=int(np.unique(w_int).size), threshold_rel_error=abs(vth_back - theta) / theta,
            leak_float=leak, leak_fixed=lava_rules.leak_of_dv(dv), bias_clip_fraction=bias_clip, notes=notes, node=fl.node,
        )
        report.peak_current = peaks[i] if peaks is not None else None
        gain = gain_record(graph, fl.node)
        if gain is not None:
            g = gain["mean"]
            report.gain_mean = g if np.ndim(g) == 0 else float(np.mean(g))
            report.gain_spread = gain["spread"]
        if fl.kind == "conv":
            conv = fl.conv
            if len(shape) != 3:
                raise QuantizationError(f"layer {i}: conv needs (C, H, W) input, got shape {shape}")
            layer: Layer = ConvLayer(
                weight=w_int, neurons=nrn, in_shape=tuple(shape), stride=tuple(conv.stride),
                padding=tuple(conv.padding), dilation=tuple(conv.dilation), groups=conv.groups,
                weight_exp=exp, num_weight_bits=profile.weights.bits, sign_mode=profile.weights.sign_mode,
                name=f"layer{i}")
        else:
            layer = DenseLayer(weight=w_int.reshape(w.shape[0], -1), neurons=nrn, weight_exp=exp,
                               num_weight_bits=profile.weights.bits, sign_mode=profile.weights.sign_mode,
                               name=f"layer{i}")
            if fl.kind == "dense_rec":
                rexp = exp if (exp == 0 and not graded_in) else _recurrent_exp(w_rec, scale, profile)
                w_rec_int, rclip, rerr = _quantize_weights(w_rec, scale, rexp, profile)
                layer.weight_rec, layer.weight_rec_exp = w_rec_int, rexp
                report.recurrent_weight_exp, report.recurrent_rel_error = rexp, rerr
        in_max = (2**encoding.bits - 1) if (i == 0 and encoding.kind == "graded") else 1
        report.max_input_per_step = int(np.abs(w_int).reshape(w_int.shape[0], -1).sum(1).max() * in_max
                                        * 2.0 ** (exp + profile.neuron.activation_shift)) if w_int.size else 0
        if report.max_input_per_step > profile.state_max:
            report.notes.append(f"worst-case input per step {report.max_input_per_step} exceeds the "
                                f"{profile.neuron.state_bits}-bit state: u can wrap if nearly all inputs fire together")
        report.shape = list(layer.out_shape)
        ir_layers.append(layer)
        reports.append(report)
        shape = layer.out_shape
    if readout is not None:
        n_in = int(np.prod(shape))
        if readout.weight.shape[1] != n_in:
            raise QuantizationError(f"the readout has {readout.weight.shape[1]} inputs, the layer before it "
                                    f"{n_in} outputs")
        b = readout.bias
        if readout.neuron is not None:                     # a last LI node (leak 1): v sums like the integrator
            leak = _node_scalar(graph, readout.node, "leak", readout.neuron.leak)
            if leak != 1.0:
                raise QuantizationError(f"node {readout.node} (LI): leak {leak:g}: the integrator readout sums "
                                        f"(leak 1); a leaky readout has no fixed-point mapping here")
            if readout.neuron.bias is not None:
                nb = np.broadcast_to(np.asarray(readout.neuron.bias, dtype=np.float64).reshape(-1),
                                     (readout.weight.shape[0],))
                b = nb.copy() if b is None else b + nb
        layer, report = _quantize_readout(readout.weight, b, len(ir_layers), encoding, profile, T,
                                          latency=len(ir_layers) + 1)
        report.node = readout.node
        ir_layers.append(layer)
        reports.append(report)
    network = Network(input_shape=tuple(graph.input_shape), layers=ir_layers, time_steps=T,
                      input_encoding=encoding, profile=profile.name, metadata={"source": name},
                      readout="potential" if readout is not None else "spikes")
    network.validate(name or "quantized network")
    resources = check_resources(network, profile)
    return QuantizationResult(network, reports, resources)


def check_resources(network: Network, profile: HardwareProfile) -> dict:
    """Cores, synapses and fan-in the network needs; raise :class:`QuantizationError` if it does not fit.

    One source of truth: the core mapping of :func:`neurodeploy.quant.fit.fit_network` (neurons, synaptic
    memory, fan-in and fan-out axons per core, cores and chips). Returns the per-layer cores, the total and
    the cores available (``cores_available``), plus the fit summary (``fit``)."""
    from .fit import fit_network

    report = fit_network(network, profile)
    if not report.fits:
        raise QuantizationError(f"the network does not fit profile {profile.name!r}: " + "; ".join(report.problems))
    layers = [{"layer": i, "name": x.name, "neurons": x.neurons, "synapses": x.synapses, "fan_in": x.max_fan_in,
               "cores": x.cores} for i, x in enumerate(lf for lf in report.layers if lf.kind != "input")]
    return {"layers": layers, "cores": report.total_cores,
            "cores_available": profile.resources.cores_per_chip * profile.resources.chips,
            "chips": report.chips_needed, "fit": report.summary()}
