"""Lava 0.10's fixed-point arithmetic rules, in one place (numpy only, no Lava import).

Everything here is read from lava-nc 0.10.0 and mirrors it operation by
operation, on int64 (``tests/test_lava_rules.py`` checks each rule against
Lava's own code):

Weights (``lava/utils/weightutils.py``; ``PyDenseModelBitAcc`` in
``lava/proc/dense/models.py``):

* Dense clips the stored weights to 8 bits by sign mode
  (``clip_weights(num_bits=8)``: mixed ``[-256, 255]``, excitatory ``[0,
  255]``, inhibitory ``[-255, 0]``), then drops ``8 - num_weight_bits +
  mixed`` low bits (``truncate_weights``): floor for mixed and excitatory,
  toward zero for inhibitory (Lava negates, floors the magnitude, negates
  back). :func:`effective_weights`; the values it keeps unchanged:
  :func:`weight_grid`.
* The sum of the weights of the active inputs is shifted by ``weight_exp``
  (``left_shift`` for ``weight_exp > 0``, else an arithmetic ``right_shift``):
  :func:`shift`. :func:`optimize_weight_bits` is Lava's
  ``optimize_weight_bits`` (the ``weight_exp`` / ``num_weight_bits`` that
  represent a weight matrix best).

Neurons (``AbstractPyLifModelFixed`` / ``PyLifModelBitAcc`` in
``lava/proc/lif/models.py``):

* ``u = trunc(u * (4096 - (du + 1)) / 4096) + (a_in << 6)``, then Lava's
  one-shot 24-bit wrap (``u > 2**23 -> u - 2**24``, ``u <= -2**23 -> u +
  2**24``); ``v = trunc(v * (4096 - dv) / 4096) + u + bias``, clipped to
  ``+-(2**23 - 1)``; a spike where ``v > vth << 6``, and ``v = 0`` there.
  ``du``, ``dv`` are 12-bit (0..4095) on the chip; the hidden ``+1`` on ``du``
  (Loihi's ``ds_offset``) lets u forget everything at ``du = 4095``. Lava's CPU
  models store them uncast, so foreign netx files also run ``du = -1`` (u never
  decays), ``dv = 4096`` and per-neuron arrays exactly (``DU_RANGE``,
  ``DV_RANGE``, ``VTH_RANGE``, ``LAVA_NUM_WEIGHT_BITS_RANGE``).
* ``bias = bias_mant << bias_exp`` (``>>`` for a negative exponent), in
  int32 (:func:`effective_bias`).
* :func:`lif_step` is the whole step with every int32 wrap of Lava's
  arithmetic (the emulator's general path).

The ranges (``*_RANGE``) are what Lava 0.10's CPU models run without silent
overflow of their storage types; hardware widths the CPU models do not
enforce (bias_mant 13 bit, bias_exp 3 bit) are the profile's business.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = [
    "SIGN_MODES", "MAX_WEIGHT_BITS", "NUM_WEIGHT_BITS_RANGE", "WEIGHT_EXP_RANGE", "WEIGHT_RANGE",
    "ACT_SHIFT", "VTH_SHIFT", "VTH_BITS", "VTH_MAX", "DECAY_BITS", "DECAY_SHIFT", "DECAY_UNITY", "DECAY_MAX",
    "DU_OFFSET", "DV_OFFSET", "STATE_BITS", "U_LIMIT", "V_LIMIT", "BIAS_MANT_RANGE", "BIAS_EXP_RANGE",
    "GRADED_BITS_RANGE", "INT32_MAX", "LAVA_NUM_WEIGHT_BITS_RANGE", "DU_RANGE", "DV_RANGE", "VTH_RANGE",
    "sign_mode_of", "truncated_bits", "weight_step", "clip_range", "weight_grid", "effective_weights",
    "optimize_weight_bits", "shift", "wrap32", "effective_bias", "message_max",
    "u_multiplier", "v_multiplier", "decay", "wrap_u", "clip_v", "effective_vth", "lif_step",
    "dv_for_leak", "du_for_leak", "leak_of_dv", "leak_of_du",
]

SIGN_MODES = ("mixed", "excitatory", "inhibitory")

# --------------------------------------------------------------------------- widths and ranges
MAX_WEIGHT_BITS = 8                    # Dense clips to 8 bits (+ sign in mixed mode) before truncating
NUM_WEIGHT_BITS_RANGE = (1, 8)
WEIGHT_EXP_RANGE = (-16, 16)           # sum << weight_exp in int32/int64 numpy shifts
WEIGHT_RANGE = (-(2**31 - 1), 2**31 - 1)   # weights are converted to int32 by Lava
ACT_SHIFT = 6                          # the LIF adds a_in << 6 to u (act_shift)
VTH_SHIFT = 6                          # and compares v with vth << 6 (vth_shift)
VTH_BITS = 17
VTH_MAX = 2**VTH_BITS - 1              # vth << 6 stays within the 24-bit state
DECAY_BITS = 12
DECAY_SHIFT = 12                       # decays are MSB-aligned to 12 bits
DECAY_UNITY = 1 << DECAY_SHIFT         # 4096
DECAY_MAX = 2**DECAY_BITS - 1          # du, dv: unsigned 12 bit, 0..4095
DU_OFFSET = 1                          # Lava's ds_offset: u decays by (du + 1) / 4096
DV_OFFSET = 0                          # Lava's dm_offset
STATE_BITS = 24                        # u and v
U_LIMIT = 1 << (STATE_BITS - 1)        # Lava's max_uv_val: u wraps by 2**24 past it
V_LIMIT = U_LIMIT - 1                  # v clips to +-(2**23 - 1)
BIAS_MANT_RANGE = (-(2**15), 2**15 - 1)    # stored as int16 by PyLifModelBitAcc
BIAS_EXP_RANGE = (-16, 16)             # bias_mant << bias_exp must fit int32
GRADED_BITS_RANGE = (1, 24)            # Loihi graded spikes carry at most 24 bits
INT32_MAX = 2**31 - 1
# What Lava 0.10's CPU LIF / Dense run exactly beyond the hardware-style ranges above (foreign netx files use
# them; checked against Lava): du = -1 (netx iDecay 0: u multiplier 4096, u never decays), dv = 4096 (v keeps
# nothing), a threshold that v can never pass (vth << 6 > 2**23 - 1, netx's integrators: 1 << 17) up to
# what keeps vth << 6 in int32, and 9 weight bits for mixed-sign weights (nothing truncated: odd values in
# [-256, 255]; excitatory / inhibitory weights have at most 8).
LAVA_NUM_WEIGHT_BITS_RANGE = (1, 9)
DU_RANGE = (-1, DECAY_MAX)
DV_RANGE = (0, DECAY_UNITY)
VTH_RANGE = (0, INT32_MAX >> VTH_SHIFT)


# --------------------------------------------------------------------------- weights
def sign_mode_of(weight: np.ndarray) -> str:
    """Lava's ``determine_sign_mode`` (what Dense uses when no sign mode is passed); an empty matrix is
    excitatory."""
    w = np.asarray(weight)
    if w.size == 0 or np.min(w) >= 0:
        return "excitatory"
    if np.max(w) <= 0:
        return "inhibitory"
    return "mixed"


def truncated_bits(sign_mode: str, num_weight_bits: int) -> int:
    """The low bits Dense drops: ``8 - num_weight_bits + is_mixed`` (``truncate_weights``).

    ``ValueError`` for more bits than Lava's 8 (+1 sign), where the count would be negative."""
    k = MAX_WEIGHT_BITS - int(num_weight_bits) + int(sign_mode == "mixed")
    if k < 0:
        raise ValueError(f"num_weight_bits={num_weight_bits} is more than Lava's 8 (+1 sign) bits"
                         + ("" if sign_mode == "mixed" else f" for {sign_mode} weights (9 only for mixed-sign)"))
    return k


def weight_step(sign_mode: str, num_weight_bits: int) -> int:
    """Granularity of the weights Dense keeps: ``2**truncated_bits`` (mixed 8-bit: 2)."""
    return 1 << truncated_bits(sign_mode, num_weight_bits)


def clip_range(sign_mode: str, num_bits: int = MAX_WEIGHT_BITS) -> tuple[int, int]:
    """``clip_weights``' range: mixed ``[-2**n, 2**n - 1]``, excitatory ``[0, 2**n - 1]``,
    inhibitory ``[-(2**n - 1), 0]``."""
    top = 2**int(num_bits) - 1
    if sign_mode == "mixed":
        return -(2**int(num_bits)), top
    if sign_mode == "excitatory":
        return 0, top
    return -top, 0


def weight_grid(sign_mode: str, num_weight_bits: int) -> tuple[int, int, int]:
    """``(lo, hi, step)``: the weights Dense keeps unchanged are the multiples of ``step`` in ``[lo, hi]``.

    Mixed: ``[-256, 256 - step]``; excitatory ``[0, top]``; inhibitory ``[-top, 0]``, ``top`` the
    largest multiple of ``step`` up to 255 (inhibitory 7-bit: -254, not -256)."""
    step = weight_step(sign_mode, num_weight_bits)
    top = (255 // step) * step
    if sign_mode == "mixed":
        return -256, top, step
    if sign_mode == "excitatory":
        return 0, top, step
    return -top, 0, step


def effective_weights(weight: np.ndarray, sign_mode: str, num_weight_bits: int) -> np.ndarray:
    """The weights Lava's fixed-point Dense actually uses (int64): ``clip_weights(num_bits=8)``
    then ``truncate_weights`` (floor for mixed/excitatory, toward zero for inhibitory: -3 -> -2
    with one bit dropped)."""
    w = np.asarray(weight).astype(np.int64)
    k = truncated_bits(sign_mode, num_weight_bits)
    inhibitory = sign_mode == "inhibitory"
    if inhibitory:
        w = -w
    w = np.clip(w, -256 if sign_mode == "mixed" else 0, 255)
    w = (w >> k) << k
    if inhibitory:
        w = -w
    return w


def _exact_log2_floor(x: float) -> int:
    return int(np.floor(np.log2(x)))


def optimize_weight_bits(weight: np.ndarray, sign_mode: str, loihi2: bool = False) -> tuple[np.ndarray, int, int]:
    """Lava's ``optimize_weight_bits``: ``(weights, num_weight_bits, weight_exp)`` (int64 weights).

    The weights must lie in the sign mode's 8-bit range (mixed ``[-256, 255]``, excitatory
    ``[0, 255]``, inhibitory ``[-255, 0]``; ``ValueError`` otherwise, as Lava's check)."""
    w = np.asarray(weight).astype(np.int64)
    mixed, inhibitory = sign_mode == "mixed", sign_mode == "inhibitory"
    lo = -256 * int(mixed or inhibitory) + int(inhibitory)
    hi = 255 * int(mixed or sign_mode == "excitatory")
    if w.size and (w.max() > hi or w.min() < lo):
        raise ValueError(f"weights have to be between {lo} and {hi} for sign_mode={sign_mode}. "
                         f"Got weights between {w.min()} and {w.max()}.")
    wmax, wmin = (int(w.max()), int(w.min())) if w.size else (0, 0)
    if wmax == wmin == 0:
        exp = 0
    else:
        if mixed:
            scale = min(127 / wmax if wmax > 0 else np.inf, -128 / wmin if wmin < 0 else np.inf)
        elif inhibitory:
            scale = -255 / wmin
        else:
            scale = 255 / wmax
        exp = -(_exact_log2_floor(scale) + int(mixed))
    n = 8
    while n > 0 and np.sum(np.abs(w / 2**n - np.round(w / 2**n))) != 0:
        n -= 1
    if mixed:
        n -= 1
    bits = 8 + exp - n
    w = w << int(-exp)
    if loihi2:
        w = (w / (1 << (8 - bits))).astype(np.int64)        # astype(int32) truncates toward zero
        if mixed:
            w = (w / 2).astype(np.int64)
    return w, bits, exp


def shift(x, exp: int):
    """Lava's ``left_shift(x, e) if e > 0 else right_shift(x, -e)`` (arithmetic): the weight exponent on
    a synaptic sum, the bias exponent on a bias mantissa (Lava writes ``e >= 0`` there: the same)."""
    return x << exp if exp > 0 else x >> (-exp)


def wrap32(x: np.ndarray) -> np.ndarray:
    """int64 values as int32 two's complement would hold them (numpy's C casts wrap)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def effective_bias(bias_mant: np.ndarray, bias_exp: int) -> np.ndarray:
    """``bias_mant << bias_exp`` as Lava's LIF computes it (int32 shifts; int64 result)."""
    return wrap32(shift(np.asarray(bias_mant).astype(np.int64), int(bias_exp)))


def message_max(num_message_bits: int) -> int:
    """Largest value a spike carries: 1 for binary spikes (0 bits), ``2**bits - 1`` for graded ones."""
    return 1 if int(num_message_bits) == 0 else (1 << int(num_message_bits)) - 1


# --------------------------------------------------------------------------- neurons
def _int_or_array(x):
    """A scalar as a Python int, an array (per-neuron values) as int64."""
    a = np.asarray(x)
    return int(a) if a.ndim == 0 else a.astype(np.int64)


def u_multiplier(du):
    """u keeps ``u * u_multiplier(du) / 4096`` per step: ``4096 - (du + 1)`` (per neuron for an array; du = -1:
    4096, u never decays)."""
    return DECAY_UNITY - (_int_or_array(du) + DU_OFFSET)


def v_multiplier(dv):
    """v keeps ``v * v_multiplier(dv) / 4096`` per step: ``4096 - dv`` (per neuron for an array)."""
    return DECAY_UNITY - (_int_or_array(dv) + DV_OFFSET)


def decay(x: np.ndarray, multiplier) -> np.ndarray:
    """``sign(x * m) * (|x * m| >> 12)`` on int64: the product rounded toward zero (``m`` a scalar or one
    value per neuron, broadcast over the last axis)."""
    y = np.asarray(x, dtype=np.int64) * _int_or_array(multiplier)
    return (y + ((y >> 63) & (DECAY_UNITY - 1))) >> DECAY_SHIFT


def wrap_u(x: np.ndarray) -> np.ndarray:
    """Lava's one-shot 24-bit wrap of u: ``x > 2**23 -> x - 2**24``, then ``x <= -2**23 -> x + 2**24``."""
    x = np.asarray(x, dtype=np.int64)
    x = x - ((x > U_LIMIT).astype(np.int64) << STATE_BITS)
    return x + ((x <= -U_LIMIT).astype(np.int64) << STATE_BITS)


def clip_v(x: np.ndarray) -> np.ndarray:
    """v clipped to ``+-(2**23 - 1)``."""
    return np.clip(x, -V_LIMIT, V_LIMIT)


def effective_vth(vth):
    """The threshold v is compared with: ``vth << 6`` (per neuron for an array)."""
    return _int_or_array(vth) << VTH_SHIFT


def lif_step(u: np.ndarray, v: np.ndarray, a_in: np.ndarray, u_mult: int, v_mult: int, bias: np.ndarray,
             vth_eff: int, v_noise: Optional[np.ndarray] = None, events: Optional[dict] = None) -> np.ndarray:
    """One ``PyLifModelBitAcc`` step in place on int64 ``u``, ``v`` (every int32 wrap of Lava's arithmetic);
    returns the spikes (bool).

    ``a_in``: the step's synaptic input (int32 values); ``bias``: :func:`effective_bias`;
    ``vth_eff``: :func:`effective_vth`; ``v_noise`` (optional, int32 values) joins the int32 sum for v
    (membrane noise, ``LIFResetVNoise``). ``events`` (optional): a dict whose ``"u_wrap"`` and ``"v_clip"``
    arrays (the shape of u) are incremented where this step wrapped u at 24 bits / clipped v."""
    pre = wrap32(decay(u, u_mult) + wrap32(a_in << ACT_SHIFT))
    t = wrap_u(pre)
    u[...] = t
    total = decay(v, v_mult) + t + bias
    if v_noise is not None:
        total = total + v_noise
    nv = wrap32(total)
    if events is not None:
        events["u_wrap"] += t != pre
        events["v_clip"] += np.abs(nv) > V_LIMIT
    np.clip(nv, -V_LIMIT, V_LIMIT, out=nv)
    s = nv > vth_eff
    nv[s] = 0
    v[...] = nv
    return s


# --------------------------------------------------------------------------- decays from leaks
def dv_for_leak(leak: float, dv_max: int = DECAY_MAX) -> int:
    """``dv`` whose decay keeps ``leak`` of v per step: ``round(4096 * (1 - leak))`` in ``0..dv_max``."""
    return int(min(max(round(DECAY_UNITY * (1 - leak)) - DV_OFFSET, 0), dv_max))


def du_for_leak(current_leak: float, du_max: int = DECAY_MAX) -> int:
    """``du`` whose decay keeps ``current_leak`` of u per step: ``round(4096 * (1 - leak)) - 1``
    (Lava adds the 1 back) in ``0..du_max``."""
    return int(min(max(round(DECAY_UNITY * (1 - current_leak)) - DU_OFFSET, 0), du_max))


def leak_of_dv(dv: int) -> float:
    """The fraction of v that ``dv`` keeps per step (before rounding toward zero): ``1 - dv / 4096``."""
    return 1 - (int(dv) + DV_OFFSET) / DECAY_UNITY


def leak_of_du(du: int) -> float:
    """The fraction of u that ``du`` keeps per step: ``1 - (du + 1) / 4096``."""
    return 1 - (int(du) + DU_OFFSET) / DECAY_UNITY
