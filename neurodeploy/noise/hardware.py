"""Network (hardware) noise: seeded transforms of the deployed network and of the float model.

One semantics, implemented once on the IR (:func:`perturb_network`), so the
emulator and Lava run the *identical* perturbed :class:`~neurodeploy.ir.Network`
(both backends reproduce Lava's ``fixed_pt`` arithmetic bit for bit), and
mirrored on the float model (:func:`perturb_float_model`) with the *same random
draws*.

Shared draw protocol
--------------------
``rng = numpy.random.default_rng(seed)``; layers are visited in IR order
(= the deployable layer order of the float model, one spiking population per
layer, then a linear readout's integrator layer) and every layer draws,
whatever the level (common random numbers: the perturbation grows smoothly
with the level and level 0 is the clean network); a potential readout's
integrator layer (the last) draws for the weight noises only (see "Linear
readout" below):

===================== ====================================================================
noise                 draws per layer, in this order
===================== ====================================================================
weight-mismatch       ``z = rng.standard_normal(weight.shape)``, then, for a recurrent
                      layer, ``z_rec = rng.standard_normal(weight_rec.shape)``
bit-flip              ``u = rng.random(weight.shape + (num_weight_bits,))`` (bit b of
                      the mantissa flips where ``u[..., b] < level``), then ``u_rec``
dead-neuron,          ``perm = rng.permutation(n_neurons)``; the chosen neurons are
stuck-neuron          ``sorted(perm[:round(level * n_neurons)])`` (nested over levels)
threshold-mismatch    ``z = rng.standard_normal()`` (one factor per population)
===================== ====================================================================

:func:`draw_network_noise` returns exactly these draws; both sides use it.

Semantics
---------
* ``weight-mismatch`` (level = relative std ``s``): device mismatch of the
  synaptic weights, fixed per chip instance (the seed). IR: the effective
  mantissas (what Lava's Dense uses after its clip/truncation) become
  ``w * (1 + s*z)``, rounded to the nearest representable mantissa (multiples
  of ``2**(8 - num_weight_bits + mixed)``; mixed 8-bit: even numbers) and
  clipped to the sign mode's range (mixed ``[-256, 255 & ~(step-1)]``,
  excitatory ``[0, ...]``, inhibitory ``[..., 0]``). Float: the weights are
  multiplied by the same factors ``1 + s*z`` (no re-quantization).
* ``bit-flip`` (level = bit error rate): each weight is stored as an
  ``num_weight_bits``-wide mantissa ``m = |w| >> k`` (excitatory/inhibitory,
  unsigned) or ``w >> k`` (mixed, two's complement), ``k = 8 - bits + mixed``;
  each bit flips independently with probability ``level``; the weight becomes
  ``m' << k`` (with the sign mode's sign), always a value Lava keeps unchanged.
  Float: a weight whose mantissa changed takes the float value of the flipped
  mantissa, ``w' * 2**(weight_exp + 6) / scale`` (divided by the folded DLIF
  gain, times the input scale for the first, graded layer; needs the
  :class:`~neurodeploy.quant.quantizer.QuantizationResult`); the others keep
  their float values.
* ``dead-neuron`` (level = fraction per layer): the chosen neurons never spike.
  IR: dense (and recurrent) layers get the neuron's incoming weight rows
  (feed-forward and recurrent) zeroed and its bias set to 0, so ``u`` and ``v``
  stay exactly 0 and ``v > vth << 6`` never holds (``vth >= 0``). Conv
  neurons share their kernel, so their weights cannot be zeroed per neuron:
  they get a bias that is *provably* enough: with ``-N <= u <= P`` bounds of
  the current (every positive / negative weight's input at its maximum at
  every step, times ``4096 / (du + 1)``; see ``_drive_bound`` for the 24-bit
  wrap case), ``bias <= -P`` keeps ``v <= 0`` at every step (decays round
  toward zero).
* ``stuck-neuron`` (level = fraction per layer): the chosen neurons spike at
  every step, the first included. Lava's order is ``v = decay(v) + u + bias``,
  spike where ``v > vth << 6``, then ``v = 0``: after a spike (and at the first
  step) ``v = u + bias``. IR: incoming rows zeroed as above (``u = 0``) and the
  smallest bias with ``bias > (vth << 6) + N`` (``N = 0`` for dense, the bound
  above for conv), so ``v > vth << 6`` at every step.

  Both: the layer keeps its bias exponent where the int16 mantissa reaches the
  bias needed; otherwise it takes the smallest larger exponent (up to 16) at
  which every other neuron keeps its bias exactly (always so for the default
  bias-free layers). A fault model needs only what Lava's fixed-point CPU
  models (and the emulator) compute exactly, int32 sums included, not the
  chip's 13-bit/3-bit bias fields. :class:`HardwareNoiseError` names the layer
  where no exponent does it. Float (every layer kind): forward hooks force the
  chosen neurons' spikes to 0 or 1 at every step, where they leave the layer
  and, for a recurrent layer, where they are fed back (from the second step
  on: the first feeds the initial zeros, as on the chip); the float model's
  parameters are untouched, so a gradient computed on the perturbed copy
  belongs to the same named parameters (straight-through training, see
  :func:`perturb_float_model`).
* ``threshold-mismatch`` (level = relative std ``s``): the threshold of each
  *population* becomes ``vth * (1 + s*z)``, rounded and clipped to
  ``[1, 2**17 - 1]`` (a threshold of 0 stays 0). Per population, not per neuron: the IR and Lava's LIF
  hold one ``vth`` per population (a ``Var`` of shape ``(1,)``); per-neuron
  thresholds need an IR and backend extension (part 2). Float: the layer's
  threshold is scaled by the same factor, ``theta * vth' / vth`` (so the float
  threshold moves exactly as the rounded fixed-point one).

Linear readout (``Network.readout == "potential"``)
---------------------------------------------------
A ``model.readout: linear`` model deploys its readout Linear as an extra,
last IR layer of non-spiking integrators (du 4095, dv 0, vth at the maximum;
the class is the argmax of its final v; :func:`readout_index`). Decision:

* ``weight-mismatch`` and ``bit-flip`` perturb its weights too: on the chip the
  readout synapses are ordinary synapses. IR: exactly as for any layer (the
  noises act on the mantissas; the layer's ``weight_exp``, possibly negative,
  is untouched). Float: the readout Linear's weights (``_readout_layer``) get
  the same factors / flipped mantissas, a mantissa unit being ``2**(weight_exp
  + 6) / scale`` with the readout layer's scale from the quantization report
  (no gain; times the input scale when it reads the graded input directly).
  The quantizer's worst-case bound on ``|v|`` holds for the clean weights; a
  perturbed readout could in principle exceed it (v clips or spikes), which the
  emulator and Lava reproduce alike (a worst case far above any real input).
* ``dead-neuron``, ``stuck-neuron``, ``threshold-mismatch`` and ``spike-drop``
  act on spiking populations only: the integrator has no spikes to kill,
  force or drop, and its threshold must stay at the maximum (a lower one would
  make it spike and reset). The last hidden layer's spikes *are* dropped on
  their way to the readout (they reach a synapse).
* ``current-noise`` and ``membrane-noise`` act on spiking populations only,
  too, in the float model, the emulator and Lava alike. Their level is a
  fraction of the population's threshold, and the integrator has none: its
  ``vth`` is the profile's maximum only to keep it from spiking, so ``level *
  vth`` would be a per-step noise of ``level`` times the whole 24-bit range of
  v (it would dwarf the readout's signal, clip v and make it spike), with no
  float counterpart. A readout noise needs its own reference amplitude (an
  extension; not modelled).

The integrator sums all ``P = T + L`` simulated steps, the float readout the
``T`` aligned ones: spikes a hidden layer sends outside its aligned window add
to v and not to the float logits (as the quantizer notes for bias-driven
spikes); notably a stuck neuron of the last hidden layer puts ``P - 1`` spikes
into v, ``T`` into the float logits. Weight mismatch clips on the chip, not in
float (as for every layer), which matters more for a readout whose mantissas
fill the range.

Step noises (drawn anew at every simulated step)
------------------------------------------------
``spike-drop``, ``current-noise`` and ``membrane-noise`` are a
:class:`StepNoise` ``(name, level, seed)`` passed to a backend
(``run_network(..., step_noise=StepNoise(...), sample_ids=...)``) or attached
to the float model (:func:`float_step_noise_model`). Draws:
:func:`step_noise_draws`, one generator per data-set sample
(``default_rng([seed, crc32(name), layer, sample])``), one row of ``n`` per
simulated step ``s = 0 .. T + latency - 1``, so batching (the emulator's
batches, Lava's one sample at a time) never changes the numbers; integers:
:func:`step_noise_integers`. Level 0 adds nothing anywhere (the clean result
exactly); spike-drop is nested over levels (dropped where ``u < level``).

Where the noise enters Lava's step order (PyLifResetModelBitAcc: receive
``a_in``; ``u = wrap24(decay(u) + (a_in << 6))``; ``v = clip24(decay(v) + u +
bias)``; spike where ``v > vth << 6``; ``v = 0`` there; send):

* ``current-noise``: integers ``rint(level * vth * z)`` join the synaptic input
  ``a_in`` of step ``s`` (the InPort's int32 sum of feed-forward, recurrent and
  noise inputs), so ``u`` gets about ``level * (vth << 6) * z``. Lava: a stock
  ``RingBuffer`` (fixed_pt) playing the integers into ``LIF.a_in``.
* ``membrane-noise``: integers ``rint(level * (vth << 6) * z)`` join the int32
  sum for ``v`` of step ``s``, ``v = clip24(decay(v) + u + bias + noise)``,
  before the threshold comparison. Lava: ``LIFResetVNoise``, whose fixed-point
  model is Lava's ``PyLifResetModelBitAcc`` with the step's noise added to the
  bias term (noise on ``v`` cannot come from outside: ``u`` carries memory).
* ``spike-drop``: a spike of population ``l`` emitted at step ``s`` is lost
  where its U[0,1) draw is below ``level`` (keep mask ``draw >= level``): it reaches no
  synapse (neither the next layer's nor the layer's own recurrent one); the
  neuron still spikes and resets, and the readout, spike counts and recorded
  spikes are the neurons' own. The readout layer's spikes are never dropped
  (only its recurrent copy, if any). Lava: ``SpikeDrop`` between ``LIF.s_out``
  and the synapses it feeds.

Timing: every noise process receives and sends within the same step (as the
LIF does), so none adds delay: the emulator and Lava keep the timing of
:mod:`neurodeploy.backends.base`, noise row ``s`` acting at simulated step
``s``. The float model's step ``t`` of layer ``l`` is simulated step
``t + l + 1`` (:func:`float_step_rows`); the float model adds ``level *
threshold * z`` to the (gain-scaled) input current of the step (box (D)LIF:
the same as adding it to ``v``; CUBA: current noise enters ``i``, membrane
noise ``v``) and multiplies the spikes leaving a layer by the same keep masks
(:class:`FloatStepNoise`). The float and fixed-point networks agree only as
far as quantization lets them; the *draws* are identical.

Every function returns a new object and never mutates its input; level 0
returns an identical copy. Noises compose (apply one after the other); the
perturbed network lists what was applied in ``metadata["noise"]``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..errors import NeurodeployError
from .. import lava_rules as lr
from ..lava_rules import BIAS_EXP_RANGE, BIAS_MANT_RANGE, VTH_MAX, effective_weights, shift, weight_grid
from ..ir import ConvLayer, DenseLayer, Network
from .specs import NETWORK_NOISE_NAMES, NOISES, STEP_NOISE_NAMES, NoiseSpecError, check_level

__all__ = [
    "HardwareNoiseError",
    "LayerDraws",
    "draw_network_noise",
    "weight_grid",
    "perturb_network",
    "perturb_float_model",
    "chosen_neurons",
    "readout_index",
    "spiking_layer_indices",
    "step_noise_draws",
    "float_step_rows",
    "step_noise_integers",
    "StepNoise",
    "step_noise_layers",
    "fixed_step_noise",
    "FloatStepNoise",
    "float_step_noise_model",
]

_U_LIM = lr.U_LIMIT     # |u| <= 2**23 (24-bit wrap), v clips to +-2**23
WEIGHT_NOISES = ("weight-mismatch", "bit-flip")   # the only network noises that reach a potential readout
_INT32_MAX = lr.INT32_MAX


class HardwareNoiseError(NeurodeployError, ValueError):
    """A network noise cannot be applied to this network; the message names layer and reason."""


# --------------------------------------------------------------------------- shared draws
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


# --------------------------------------------------------------------------- fixed point
def _mismatch_weights(w: np.ndarray, z: np.ndarray, level: float, sign_mode: str, bits: int) -> np.ndarray:
    lo, hi, step = weight_grid(sign_mode, bits)
    eff = effective_weights(w, sign_mode, bits).astype(np.float64)
    q = np.clip(step * np.rint(eff * (1.0 + level * z) / step), lo, hi)
    return q.astype(np.int64)


def _flip_weights(w: np.ndarray, u: np.ndarray, level: float, sign_mode: str, bits: int) -> np.ndarray:
    """Flip each of the ``bits`` mantissa bits where ``u < level``; unchanged weights keep their stored value."""
    mixed = sign_mode == "mixed"
    k = lr.truncated_bits(sign_mode, bits)
    eff = effective_weights(w, sign_mode, bits)
    mask = ((u < level).astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(axis=-1)
    full = (1 << bits) - 1
    if mixed:
        m = (eff >> k) & full                       # two's complement, bits wide
        m ^= mask
        m = np.where(m >= (1 << (bits - 1)), m - (1 << bits), m)  # sign-extend
        new = m << k
    else:
        mag = (np.abs(eff) >> k) ^ mask             # unsigned magnitude, bits wide
        new = (mag << k) * (-1 if sign_mode == "inhibitory" else 1)
    w = np.asarray(w).astype(np.int64)
    return np.where(mask != 0, new, w).astype(np.int64)


def _drive_bound(network: Network, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron of layer ``index``: bounds ``(N, P)`` with ``-N <= u <= P`` at every step.

    ``P`` (``N``) is the largest positive (negative) synaptic input per step,
    ``a << 6`` with every positive (negative) weight's input at its maximum,
    times ``4096 / (du + 1)`` (the decay rounds toward zero, so ``|decay(u)|
    <= (1 - (du+1)/4096) |u|``). When that can exceed ``2**23`` the 24-bit
    wrap of ``u`` may fire; Lava's wrap is one subtraction of ``2**24``, so
    then ``|u| <= 2**23 + max per-step input`` on both sides.
    """
    layer = network.layers[index]
    enc = network.input_encoding
    in_max = lr.message_max(0 if enc.kind == "spikes" else int(enc.bits)) if index == 0 else 1
    parts = [(effective_weights(layer.weight, layer.sign_mode, layer.num_weight_bits), int(layer.weight_exp), in_max)]
    if isinstance(layer, DenseLayer) and layer.weight_rec is not None:
        parts.append((effective_weights(layer.weight_rec, layer.sign_mode, layer.num_weight_bits),
                      int(layer.weight_rec_exp), 1))
    n = int(np.prod(layer.out_shape))
    pos = [0] * n
    neg = [0] * n
    for w, exp, top in parts:
        flat = w.reshape(w.shape[0], -1)
        p_sum = np.where(flat > 0, flat, 0).sum(axis=1) * top
        n_sum = np.where(flat < 0, -flat, 0).sum(axis=1) * top
        if isinstance(layer, ConvLayer):  # one kernel per output channel, every tap active at worst
            rep = n // flat.shape[0]
            p_sum, n_sum = np.repeat(p_sum, rep), np.repeat(n_sum, rep)
        for j in range(n):
            pos[j] += _shift_up(int(p_sum[j]), exp, False)
            neg[j] += _shift_up(int(n_sum[j]), exp, True)
    du = int(layer.neurons.du)
    p_out, n_out = [], []
    for p, q in zip(pos, neg):
        a_p, a_n = p << lr.ACT_SHIFT, q << lr.ACT_SHIFT
        b_p, b_n = (-(-a * lr.DECAY_UNITY // (du + lr.DU_OFFSET)) for a in (a_p, a_n))
        if max(b_p, b_n) > _U_LIM:  # the wrap may fire: bounded by 2**23 + one step's input
            # (by induction, as long as one step's input is at most 2**24; beyond, no useful bound)
            b_p = b_n = _U_LIM + max(a_p, a_n) if max(a_p, a_n) <= 2 * _U_LIM else 2**31
        p_out.append(b_p)
        n_out.append(b_n)
    return np.array(n_out, dtype=np.int64), np.array(p_out, dtype=np.int64)


def _shift_up(x: int, exp: int, negative: bool) -> int:
    """Bound of ``|shift(s, exp)|`` for ``0 <= s <= x`` (or ``-x <= s <= 0`` when ``negative``).

    Right shifts floor: a negative sum can reach ``-(x >> k) - 1``.
    """
    if exp >= 0:
        return x << exp
    return (x >> -exp) + (1 if negative and x else 0)


def _bias_value(mant: int, exp: int) -> int:
    return int(shift(np.int64(mant), int(exp)))


def _min_mant_above(target: int, exp: int) -> int:
    """Smallest mantissa m with ``shift(m, exp) > target``."""
    if exp >= 0:
        return (target >> exp) + 1
    return (target + 1) << (-exp)


def _max_mant_at_most(target: int, exp: int) -> int:
    """Largest mantissa m with ``shift(m, exp) <= target`` (shifts floor, also for negatives)."""
    if exp >= 0:
        return target >> exp
    return ((target + 1) << (-exp)) - 1


def _mantissas_at(values: np.ndarray, exp: int) -> Optional[np.ndarray]:
    """Mantissas that give exactly the bias ``values`` at exponent ``exp``, or None where one cannot."""
    values = np.asarray(values, dtype=np.int64)
    if exp >= 0:
        if np.any(values & ((1 << exp) - 1)):
            return None
        mant = values >> exp
    else:
        mant = values << (-exp)
    lo, hi = BIAS_MANT_RANGE
    return mant if mant.size == 0 or (mant.min() >= lo and mant.max() <= hi) else None


def _forced_bias(name: str, vth: int, neg_b: np.ndarray, pos_b: np.ndarray, exp: int) -> Optional[np.ndarray]:
    """Bias mantissas at ``exp`` that provably silence (dead) or saturate (stuck) neurons with ``-N <= u <= P``.

    Dead: ``bias <= -P`` keeps ``v <= 0``; the int32 sum ``decay(v) + u + bias >= -2**23 - N + bias``
    must not wrap. Stuck: ``bias > (vth << 6) + N`` puts ``v = u + bias`` above threshold at every
    step (it spikes, so ``v`` restarts from 0); ``bias + P`` must stay in int32. None where the
    int16 mantissa cannot do it at this exponent.
    """
    lo, hi = BIAS_MANT_RANGE
    out = np.empty(len(neg_b), dtype=np.int64)
    for k, (nb, pb) in enumerate(zip(neg_b.tolist(), pos_b.tolist())):
        if name == "dead-neuron":
            m = _max_mant_at_most(-pb, exp)
            ok = m >= lo and -_U_LIM - nb + _bias_value(m, exp) >= -_INT32_MAX
        else:
            m = _min_mant_above(lr.effective_vth(vth) + nb, exp)
            ok = m <= hi and _bias_value(m, exp) + pb <= _INT32_MAX
        if not ok:
            return None
        out[k] = m
    return out


def _dead_or_stuck(network: Network, net: Network, name: str, draws: list[LayerDraws], level: float) -> None:
    for i in spiking_layer_indices(net):
        layer, d = net.layers[i], draws[i]
        idx = chosen_neurons(d, level)
        if idx.size == 0:
            continue
        nrn = layer.neurons
        e = int(nrn.bias_exp)
        mant0 = np.asarray(nrn.bias_mant).astype(np.int64)
        if isinstance(layer, DenseLayer):
            # the neuron's own rows: u = 0 at every step
            w = np.asarray(layer.weight).astype(np.int64).copy()
            w[idx] = 0
            layer.weight = w
            if layer.weight_rec is not None:
                wr = np.asarray(layer.weight_rec).astype(np.int64).copy()
                wr[idx] = 0
                layer.weight_rec = wr
            if name == "dead-neuron":
                mant = mant0.copy()
                mant[idx] = 0                        # u = v = 0 forever
                nrn.bias_mant = mant
                continue
            neg_b = pos_b = np.zeros(idx.size, dtype=np.int64)
        else:
            # conv neurons share their kernel: the bias alone must outweigh every possible drive
            neg_b, pos_b = (b[idx] for b in _drive_bound(network, i))
        values = np.asarray(shift(mant0, e), dtype=np.int64)
        others = np.setdiff1d(np.arange(values.size), idx)
        # the layer's exponent, else the smallest larger one where the other neurons keep their exact
        # bias (always so for bias-free layers, the default): a fault model only needs what Lava's
        # fixed-point CPU models (and the emulator) compute exactly, not the chip's bias widths
        for exp in range(e, BIAS_EXP_RANGE[1] + 1):
            forced = _forced_bias(name, int(nrn.vth), neg_b, pos_b, exp)
            kept = mant0[others] if exp == e else _mantissas_at(values[others], exp)
            if forced is not None and kept is not None:
                mant = np.empty(values.size, dtype=np.int64)
                mant[others], mant[idx] = kept, forced
                nrn.bias_mant, nrn.bias_exp = mant, exp
                break
        else:
            where = f"{name} in layer {i}" + (f" ({layer.name})" if layer.name else "")
            need = (f"a bias <= -{int(pos_b.max())} (bound of u)" if name == "dead-neuron"
                    else f"a bias > vth << 6 + bound of -u = {(int(nrn.vth) << 6) + int(neg_b.max())}")
            shared = "conv neurons share their kernel, so " if isinstance(layer, ConvLayer) else ""
            raise HardwareNoiseError(
                f"{where}: {shared}a {name.replace('-', ' ')} needs {need}, which no bias exponent {e}.."
                f"{BIAS_EXP_RANGE[1]} reaches with an int16 mantissa (in int32 sums) while the other "
                f"neurons keep their exact bias")


def _mismatched_vth(vth: int, level: float, z: float) -> int:
    """``vth * (1 + level*z)`` rounded, clipped to ``[1, 2**17 - 1]`` (a threshold of 0 stays 0)."""
    if vth == 0:
        return 0
    return int(np.clip(np.rint(vth * (1.0 + level * z)), 1, VTH_MAX))


def _check_name_level(name: str, level: float) -> float:
    if name not in NOISES:
        raise NoiseSpecError(f"unknown noise {name!r} (known: {', '.join(NOISES)})")
    if NOISES[name].kind != "network":
        raise NoiseSpecError(f"noise {name!r} is a {NOISES[name].kind} noise, not a network noise "
                             f"(network noises: {', '.join(NETWORK_NOISE_NAMES)})")
    return check_level(name, level)


def perturb_network(network: Network, name: str, level: float, seed: int) -> Network:
    """A copy of ``network`` under network noise ``name`` at ``level`` for chip instance ``seed``.

    Pure: ``network`` is never modified; level 0 gives an equal copy; the same
    seed gives the same network; see the module docstring for each noise's
    semantics. The result passes :func:`neurodeploy.backends.check_network`.
    """
    level = _check_name_level(name, level)
    net = copy.deepcopy(network)
    if level == 0:
        return net
    draws = draw_network_noise(network, name, seed)
    if name in ("weight-mismatch", "bit-flip"):
        fn = _mismatch_weights if name == "weight-mismatch" else _flip_weights
        for layer, d in zip(net.layers, draws):
            layer.weight = fn(layer.weight, d.weight, level, layer.sign_mode, layer.num_weight_bits)
            if d.weight_rec is not None:
                layer.weight_rec = fn(layer.weight_rec, d.weight_rec, level, layer.sign_mode, layer.num_weight_bits)
    elif name in ("dead-neuron", "stuck-neuron"):
        _dead_or_stuck(network, net, name, draws, level)
    elif name == "threshold-mismatch":
        for i in spiking_layer_indices(net):
            layer = net.layers[i]
            layer.neurons.vth = _mismatched_vth(int(layer.neurons.vth), level, draws[i].factor)
    applied = list(net.metadata.get("noise", []))
    net.metadata = {**net.metadata, "noise": applied + [{"name": name, "level": level, "seed": int(seed)}]}
    return net


# --------------------------------------------------------------------------- float (torch)
class _ForceSpikes:
    """Forces the spikes of flat neuron indices ``idx`` of one layer to ``value`` (0 dead, 1 stuck).

    Registered as forward hooks, never as Parameters, so the perturbed copy
    keeps the model's parameter set:

    * :meth:`__call__` (forward hook of the layer): the output spikes at every
      step, and in the layer's recording the spikes and, zeroed, the chosen
      neurons' currents (a forced neuron's input no longer matters, so the
      regularizers see no perturbation there; no gradient reaches its weights);
      a recurrent layer's returned state carries the forced last spikes;
    * :meth:`start` / :meth:`feedback` (recurrent layers: forward pre-hooks of
      the layer and of its ``recurrent_weights``): the spikes fed back at each
      step, from the second step on when the layer starts from rest (its first
      step feeds the initial zeros, as on the chip), from the first when it
      continues from a given state.
    """

    def __init__(self, idx: np.ndarray, value: float) -> None:
        self.idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        self.value = float(value)
        self.step = 0

    def _force(self, x: torch.Tensor, dims: int, value: Optional[float] = None) -> torch.Tensor:
        """``x`` with the chosen neurons (flattened after the first ``dims`` dims) set to ``value``."""
        flat = x.reshape(*x.shape[:dims], -1).clone()
        flat[..., self.idx.to(flat.device)] = self.value if value is None else value
        return flat.reshape(x.shape)

    def __call__(self, module, inputs, output):
        spikes, state = output
        forced = self._force(spikes, 2)
        rec = getattr(module, "recording", None)
        if rec is not None and rec.spikes is not None:
            rec.spikes = forced
            rec.current = self._force(rec.current, 2, 0.0)
            rec.input_current = self._force(rec.input_current, 2, 0.0)
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], torch.Tensor):
            state = (self._force(state[0], 1), state[1])   # recurrent (z, neuron state)
        return forced, state

    def start(self, module, args, kwargs):
        given = args[1] if len(args) > 1 else kwargs.get("state")
        self.step = 0 if given is None else 1

    def feedback(self, module, args):
        z = args[0]
        self.step += 1
        return None if self.step == 1 else (self._force(z, 1),)


def _force_spikes(neurons: torch.nn.Module, idx: np.ndarray, value: float) -> None:
    """Attach a :class:`_ForceSpikes` for ``idx`` to a spiking layer (recurrent: its feedback too)."""
    from ..neurons.modules import RecurrentSpikingNeurons

    hook = _ForceSpikes(idx, value)
    neurons.register_forward_hook(hook)
    if isinstance(neurons, RecurrentSpikingNeurons):
        neurons.register_forward_pre_hook(hook.start, with_kwargs=True)
        neurons.recurrent_weights.register_forward_pre_hook(hook.feedback)


def _network_of(quantized: Any) -> Network:
    return quantized if isinstance(quantized, Network) else quantized.network


def _float_scale(quantized: Any, i: int, exp: int, recurrent: bool = False) -> float:
    """Float value of one unit of an integer weight mantissa of layer ``i`` at weight exponent ``exp``.

    Only the first layer's feed-forward weights see graded inputs (``round(x * scale)``); its
    recurrent weights, like every other layer's, see spikes.
    """
    if isinstance(quantized, Network):
        raise HardwareNoiseError("bit-flip on the float model needs the QuantizationResult (layer scales), "
                                 "not only the Network")
    rep = quantized.layers[i]
    net = quantized.network
    gain = rep.gain_mean if rep.gain_mean is not None else 1.0
    unit = 2.0 ** (exp + lr.ACT_SHIFT) / rep.scale / gain
    if i == 0 and not recurrent and net.input_encoding.kind == "graded":
        unit *= net.input_encoding.scale
    return unit


def perturb_float_model(model: torch.nn.Module, name: str, level: float, seed: int,
                        quantized: Any) -> torch.nn.Module:
    """A perturbed deep copy of float ``model`` (an ``SNNClassifier``) under network noise ``name``.

    ``quantized`` is the :class:`~neurodeploy.quant.quantizer.QuantizationResult`
    of this model (or its ``Network``, for every noise but ``bit-flip``): the
    draws are :func:`draw_network_noise` of that network, so the float model
    gets the same factors, flipped weights and neuron indices as
    :func:`perturb_network` gives the fixed-point one (module docstring).
    ``model`` is never modified; level 0 returns an unperturbed copy.

    The copy has exactly the model's named parameters, same shapes: weight
    noises change their values in place, dead/stuck neurons are forward hooks
    and threshold mismatch changes the (non-Parameter) neuron parameters. So
    the gradient of a loss of the copy, parameter by parameter, is the
    straight-through gradient for the model (noise-aware training).
    """
    level = _check_name_level(name, level)
    out = copy.deepcopy(model)
    if level == 0:
        return out
    network = _network_of(quantized)
    pairs = _float_ir_pairs(out, network, with_readout=name in WEIGHT_NOISES)
    draws = draw_network_noise(network, name, seed)
    with torch.no_grad():
        for i, fl in pairs:
            d, layer = draws[i], network.layers[i]
            w = fl["weight"]
            if tuple(w.shape) != tuple(np.shape(layer.weight)):
                raise HardwareNoiseError(f"layer {i}: float weight shape {tuple(w.shape)} differs from the "
                                         f"quantized {tuple(np.shape(layer.weight))}")
            if name == "weight-mismatch":
                w.mul_(torch.as_tensor(1.0 + level * d.weight, dtype=w.dtype))
                if d.weight_rec is not None:
                    wr = fl["weight_rec"]
                    wr.mul_(torch.as_tensor(1.0 + level * d.weight_rec, dtype=wr.dtype))
            elif name == "bit-flip":
                parts = [("weight", "weight", d.weight, int(layer.weight_exp))]
                if d.weight_rec is not None:
                    parts.append(("weight_rec", "weight_rec", d.weight_rec, int(layer.weight_rec_exp)))
                for fkey, ikey, u, exp in parts:
                    orig = np.asarray(getattr(layer, ikey)).astype(np.int64)
                    flipped = _flip_weights(orig, u, level, layer.sign_mode, layer.num_weight_bits)
                    changed = torch.as_tensor(flipped != orig)
                    unit = _float_scale(quantized, i, exp, recurrent=fkey == "weight_rec")
                    value = torch.as_tensor(flipped * unit, dtype=fl[fkey].dtype)
                    fl[fkey].copy_(torch.where(changed, value, fl[fkey]))
            elif name in ("dead-neuron", "stuck-neuron"):
                idx = chosen_neurons(d, level)
                if idx.size == 0:
                    continue
                _force_spikes(fl["neurons"], idx, 1.0 if name == "stuck-neuron" else 0.0)
            elif name == "threshold-mismatch":
                neurons = fl["neurons"]
                vth = int(layer.neurons.vth)
                ratio = _mismatched_vth(vth, level, d.factor) / vth if vth > 0 else 1.0
                neurons.p = neurons.p._replace(v_th=neurons.p.v_th * ratio)
    return out


def _float_ir_pairs(model: torch.nn.Module, network: Network, with_readout: bool) -> list[tuple[int, dict]]:
    """``(IR layer index, float layer)`` of every spiking layer and, ``with_readout``, of the linear readout.

    The float model's deployable spiking layers are the IR's spiking layers in
    order; a ``readout: linear`` model's readout Linear is the IR's integrator
    output layer (:func:`readout_index`). Raises :class:`HardwareNoiseError`
    where ``network`` is not the quantization of ``model``.
    """
    from ..quant.quantizer import _float_layers, _readout_layer

    layers = _float_layers(model)
    spiking = spiking_layer_indices(network)
    linear = getattr(model, "readout", "spikes") == "linear"
    if linear != (readout_index(network) is not None) or len(layers) != len(spiking):
        raise HardwareNoiseError(
            f"the model has {len(layers)} spiking layers and {'a linear' if linear else 'a spiking'} readout, "
            f"the quantized network {len(spiking)} spiking layers and readout {network.readout!r}; "
            f"pass the quantization of this model")
    pairs = list(zip(spiking, layers))
    if with_readout and linear:
        pairs.append((readout_index(network), _readout_layer(model)))
    return pairs


# --------------------------------------------------------------------------- step noise draws
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


def step_noise_integers(name: str, level: float, vth: int, draws: np.ndarray) -> np.ndarray:
    """Fixed-point form of step-noise draws: spike-drop keep mask (bool), or integer noise.

    ``membrane-noise``: ``rint(level * (vth << 6) * z)`` (int64, in units of
    ``v``), the level being the std as a fraction of the threshold.
    ``current-noise``: ``rint(level * vth * z)`` in units of the synaptic input
    ``a_in`` (the LIF adds ``a_in << 6`` to ``u``, so ``u`` receives about
    ``level * (vth << 6) * z``, in multiples of 64). Both are clipped to the
    int32 range (Lava's storage). The float model adds ``level * threshold * z``.
    """
    level = check_level(name, level)
    if name == "spike-drop":
        return draws >= level
    scale = lr.effective_vth(vth) if name == "membrane-noise" else int(vth)
    return np.clip(np.rint(level * scale * draws), -_INT32_MAX, _INT32_MAX).astype(np.int64)


# --------------------------------------------------------------------------- step noise (part 2)
@dataclass(frozen=True)
class StepNoise:
    """One per-step noise at one level for one seed: what the backends' ``step_noise=`` takes.

    See :func:`fixed_step_noise` for the fixed-point semantics (emulator and
    Lava) and :func:`float_step_noise_model` for the float model.
    """

    name: str
    level: float
    seed: int

    def __post_init__(self):
        if self.name not in STEP_NOISE_NAMES:
            raise NoiseSpecError(f"noise {self.name!r} is not a step noise "
                                 f"(step noises: {', '.join(STEP_NOISE_NAMES)})")
        object.__setattr__(self, "level", check_level(self.name, self.level))
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def active(self) -> bool:
        """Level 0 is the clean network exactly: the backends then add nothing to the graph."""
        return self.level > 0


def step_noise_layers(network: Network, name: str) -> list[int]:
    """Layers a step noise acts on: every spiking population for current/membrane
    noise; for spike-drop the spiking populations whose spikes reach a synapse
    (every layer but a non-recurrent spiking output layer; the readout itself is
    never masked). A potential readout's integrator output layer gets none
    (module docstring, "Linear readout")."""
    last = len(network.layers) - 1
    spiking = spiking_layer_indices(network)
    if name != "spike-drop":
        return spiking
    return [i for i in spiking if i < last or getattr(network.layers[i], "weight_rec", None) is not None]


def fixed_step_noise(network: Network, noise: Optional[StepNoise], samples) -> list:
    """Per layer, the fixed-point step noise of ``samples`` (data-set indices):
    an array ``(len(samples), T + latency, n)`` in IR neuron order (row ``s`` =
    simulated step ``s``), or None where the layer gets none (all None at level 0).

    * ``spike-drop``: bool keep mask. A spike of layer ``l`` emitted at step
      ``s`` with ``keep[s] == False`` is not delivered to any synapse (the
      next layer's feed-forward one nor the layer's own recurrent one); the
      neuron still spikes (and resets), and the readout, spike counts and
      recorded spikes are the neuron's own spikes.
    * ``current-noise``: int64, added to the synaptic input ``a_in`` of step
      ``s`` (the sum of the feed-forward and recurrent inputs, int32) before
      ``u = decay(u) + (a_in << 6)`` (with Lava's wraps).
    * ``membrane-noise``: int64, added to the voltage of step ``s`` before the
      threshold comparison: ``v = clip(decay(v) + u + bias + noise)``
      (int32 sum, then Lava's 24-bit clip), spike where ``v > vth << 6``.
    """
    L = len(network.layers)
    out: list = [None] * L
    if noise is None or not noise.active:
        return out
    samples = np.asarray(samples, dtype=np.int64).reshape(-1)
    P = int(network.time_steps) + L
    for i in step_noise_layers(network, noise.name):
        layer = network.layers[i]
        n = int(np.prod(layer.out_shape))
        draws = step_noise_draws(noise.name, noise.seed, i, samples, P, n)
        out[i] = step_noise_integers(noise.name, noise.level, int(layer.neurons.vth), draws)
    return out


class FloatStepNoise:
    """The float model's step noise: the same draws as :func:`fixed_step_noise`,
    rows :func:`float_step_rows` (float step ``t`` of layer ``l`` = simulated
    step ``t + l + 1``). Call :meth:`set_samples` with the data-set indices of
    each batch before running it (draws are per sample, so batching does not
    change them).

    * feed-forward layers (Norse ``SNN``): the activation is wrapped; current /
      membrane noise adds ``level * threshold * z`` to the (gain-scaled) input
      current of the step (box (D)LIF: ``v = leak*v + I + noise``; CUBA:
      current noise enters ``i``, membrane noise ``v``); spike-drop is a
      forward hook multiplying the layer's output spikes by the keep mask on
      their way to the next layer (the recorded activity keeps them);
    * recurrent layers: the module's ``step_noise_hook`` does the same inside
      its time loop, and masks the spikes fed back to the recurrent weights.
    """

    def __init__(self, model: torch.nn.Module, noise: StepNoise, network: Network):
        from ..neurons.modules import RecurrentSpikingNeurons

        self.noise = noise
        self.network = network
        self.model = model
        # IR index -> spiking float layer (a potential readout's integrator has none and gets no step noise)
        self.layers = {i: fl["neurons"] for i, fl in _float_ir_pairs(model, network, with_readout=False)}
        self.active_layers = step_noise_layers(network, noise.name) if noise.active else []
        self.values: dict[int, torch.Tensor] = {}
        self.T = int(network.time_steps)
        for i in self.active_layers:
            mod = self.layers[i]
            if isinstance(mod, RecurrentSpikingNeurons):
                mod.step_noise_hook = _LayerHook(self, i, mod)
            else:
                hook = _LayerHook(self, i, mod)
                if noise.name == "spike-drop":
                    mod.register_forward_hook(hook.output_hook)
                else:
                    mod.register_forward_pre_hook(hook.reset)
                    mod.activation = hook.wrap(mod.activation)

    def set_samples(self, samples) -> None:
        """Prepare the draws of the batch of data-set indices ``samples`` (float steps ``T``)."""
        samples = np.asarray(samples, dtype=np.int64).reshape(-1)
        P = self.T + len(self.network.layers)
        for i in self.active_layers:
            layer = self.network.layers[i]
            n = int(np.prod(layer.out_shape))
            d = step_noise_draws(self.noise.name, self.noise.seed, i, samples, P, n)[:, float_step_rows(i, self.T)]
            if self.noise.name == "spike-drop":
                v = (d >= self.noise.level).astype(np.float32)
            else:
                v = self.noise.level * d
            self.values[i] = torch.as_tensor(np.ascontiguousarray(v.transpose(1, 0, 2)))   # (T, B, n)


class _LayerHook:
    def __init__(self, owner: FloatStepNoise, index: int, module) -> None:
        self.owner, self.index, self.module = owner, index, module
        self.t = 0
        # spikes leaving the layer are masked unless they are the readout (the output layer)
        self.mask_output = owner.noise.name == "spike-drop" and index < len(owner.network.layers) - 1

    def _value(self, t: int, like: torch.Tensor) -> torch.Tensor:
        vals = self.owner.values.get(self.index)
        if vals is None:
            raise HardwareNoiseError("FloatStepNoise: call set_samples(indices) before running a batch")
        if t >= vals.shape[0] or vals.shape[1] != like.shape[0]:
            raise HardwareNoiseError(f"layer {self.index}: step noise prepared for {vals.shape[1]} samples x "
                                     f"{vals.shape[0]} steps, the batch has {like.shape[0]} at step {t}")
        return vals[t].to(device=like.device, dtype=like.dtype).reshape(like.shape)

    def _threshold(self) -> float:
        return float(self.module.p.v_th)

    # -- feed-forward modules
    def reset(self, module, args):
        self.t = 0

    def wrap(self, activation):
        name = self.owner.noise.name

        def noisy(input_current, state, p, dt=1.0):
            noise = self._value(self.t, input_current) * float(p.v_th)
            self.t += 1
            if name == "membrane-noise" and hasattr(state, "i"):   # CUBA: v gets it, not i
                from ..neurons.functional import spike_fn
                i = (1.0 - dt * p.tau_syn_inv) * state.i + input_current
                v = (1.0 - dt * p.tau_mem_inv) * state.v + i + noise
                z = spike_fn(v - p.v_th, p.alpha)
                return z, type(state)(v=(1.0 - z) * v + z * p.v_reset, i=i)
            return activation(input_current + noise, state, p, dt)

        return noisy

    def output_hook(self, module, inputs, output):
        spikes, state = output
        mask = torch.stack([self._value(t, spikes[t]) for t in range(spikes.shape[0])])
        return spikes * mask, state

    # -- recurrent modules (called from RecurrentSpikingNeurons.forward)
    def current(self, t: int, scaled: torch.Tensor) -> torch.Tensor:
        if self.owner.noise.name == "spike-drop":
            return scaled
        if self.owner.noise.name == "membrane-noise" and self.module.cuba:
            return scaled   # handled in membrane()
        return scaled + self._value(t, scaled) * self._threshold()

    def membrane(self, t: int, like: torch.Tensor) -> Optional[torch.Tensor]:
        if self.owner.noise.name == "membrane-noise" and self.module.cuba:
            return self._value(t, like) * self._threshold()
        return None

    def drop(self, t: int, spikes: torch.Tensor) -> torch.Tensor:
        if self.owner.noise.name != "spike-drop":
            return spikes
        return spikes * self._value(t, spikes)


def float_step_noise_model(model: torch.nn.Module, noise: StepNoise, quantized: Any):
    """``(copy, hooks)``: a deep copy of ``model`` with the step noise attached, and its
    :class:`FloatStepNoise` (call ``hooks.set_samples(indices)`` before every batch)."""
    out = copy.deepcopy(model)
    return out, FloatStepNoise(out, noise, _network_of(quantized))
