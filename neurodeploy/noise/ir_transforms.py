"""Network noises on the IR: :func:`perturb_network`, a seeded transform of the deployed network.

One semantics (the docstring of :mod:`neurodeploy.noise.hardware`),
implemented once on the fixed-point :class:`~neurodeploy.ir.Network`, so the
emulator and Lava run the identical perturbed network. Every result holds
only what Lava's fixed-point models keep unchanged (weights on the sign
mode's grid, :func:`neurodeploy.lava_rules.weight_grid`; biases in int16
mantissas whose int32 sums cannot wrap), and passes
:func:`neurodeploy.backends.check_network`.
"""

from __future__ import annotations

import copy
from typing import Optional

import numpy as np

from .. import lava_rules as lr
from ..ir import ConvLayer, DenseLayer, Network
from ..lava_rules import BIAS_EXP_RANGE, BIAS_MANT_RANGE, VTH_MAX, effective_weights, shift, weight_grid
from .draws import HardwareNoiseError, LayerDraws, chosen_neurons, draw_network_noise, spiking_layer_indices
from .vocabulary import NETWORK_NOISE_NAMES, NOISES, NoiseSpecError, check_level

__all__ = ["perturb_network", "weight_grid"]

_U_LIM = lr.U_LIMIT     # |u| <= 2**23 (24-bit wrap), v clips to +-2**23
_INT32_MAX = lr.INT32_MAX


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
                    else f"a bias > vth << 6 + bound of -u = {lr.effective_vth(nrn.vth) + int(neg_b.max())}")
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


def check_noise_neurons(network: Network, name: str) -> None:
    """The noise models take one du / dv / vth per layer with a decaying current (du >= 0): a network read
    from a foreign netx file with per-neuron arrays or du = -1 (iDecay 0) is refused, naming the layer."""
    for i, layer in enumerate(network.layers):
        nrn = layer.neurons
        if nrn.per_neuron or int(nrn.du) < 0:
            what = "per-neuron du / dv / vth arrays" if nrn.per_neuron else "du = -1 (a current that never decays)"
            raise NoiseSpecError(f"noise {name!r}: layer {i} ({layer.name or layer.kind}) has {what}, which the "
                                 f"noise models do not support yet (they take one du >= 0, dv, vth per layer)")


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
    check_noise_neurons(network, name)
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
