"""Compiled inner loops of the emulator: a layer's CUBA LIF dynamics over every step, fused with its sums.

Numba compiles these (``nogil``, cached on disk) because the numpy path spends most of its time in
the LIF's elementwise passes over (samples, neurons) arrays, one pass per operation and step; here
each neuron's u and v stay in registers for all steps, in exact int64 arithmetic with every int32 wrap
of Lava's ``PyLifModelBitAcc`` (:func:`neurodeploy.lava_rules.lif_step`), so no bounds are needed
for exactness. A layer's feed-forward input comes from precomputed exact sums (one GEMM over every
(sample, step) row: int8, BLAS, im2col, or accumulate.py's event gather; :func:`lif_from_sums`);
recurrent input (the layer's own spikes of the step before) is gathered here, step by step. A
gather of the feed-forward input inside this loop was tried and lost to the int8 GEMM at every
activity from 1% to 50% on the default shapes (it scans every input), so it is not offered.

Layout: sample-major. A layer's input ``X`` is (samples, steps_in, k); its step ``s`` receives the
input of step ``s - 1`` (one step of synaptic delay). Spikes come out as (samples, P, n) uint8, the
next layer's input as it is. Every sample is independent, so the result does not depend on how the
samples are split over threads or batches.

Without numba (:data:`AVAILABLE` False) the emulator keeps its numpy paths.
"""

from __future__ import annotations

import numpy as np

from .. import lava_rules as lr

try:
    import numba
    AVAILABLE = True
except ImportError:             # the numpy paths remain
    numba = None
    AVAILABLE = False

__all__ = ["AVAILABLE", "lif_from_sums", "scan_rows"]

_ACT_SHIFT = lr.ACT_SHIFT
_DECAY_SHIFT = lr.DECAY_SHIFT
_DECAY_ROUND = lr.DECAY_UNITY - 1
_U_LIMIT = lr.U_LIMIT
_U_WRAP = 1 << lr.STATE_BITS
_V_LIMIT = lr.V_LIMIT
_TWO31 = 1 << 31
_MASK32 = (1 << 32) - 1


def _jit(fn):
    return numba.njit(nogil=True, cache=True, fastmath=False, boundscheck=False)(fn) if AVAILABLE else fn


@_jit
def _wrap32(x):
    return ((x + _TWO31) & _MASK32) - _TWO31


@_jit
def _decay(x, mult):
    y = x * mult
    return (y + ((y >> 63) & _DECAY_ROUND)) >> _DECAY_SHIFT


@_jit
def _shift(x, exp):
    return x << exp if exp > 0 else x >> (-exp)


@_jit
def _a_out(s, graded, exp):
    """A Dense's a_out for the exact sum ``s``: int32 dot when graded, the int32 shift."""
    if graded:
        s = _wrap32(s)
    return _wrap32(_shift(s, exp))


@_jit
def _lif_update(u, v, a, du, dv, bias, vth):
    """One neuron's LIF step from its (already reset) u and v and its InPort sum ``a``: (new u, v after
    the reset of a spike, spike), in Lava's order with every wrap. Branch-free, so the loops that call it
    (inlined) vectorize."""
    t = _wrap32(_decay(u, du) + _wrap32(a << _ACT_SHIFT))
    t -= (t > _U_LIMIT) * _U_WRAP          # Lava's one-shot 24-bit wrap of u, in its order
    t += (t <= -_U_LIMIT) * _U_WRAP
    nv = _wrap32(_decay(v, dv) + t + bias)
    nv = min(max(nv, -_V_LIMIT), _V_LIMIT)
    spike = nv > vth
    return t, nv * (1 - spike), spike      # v reset to 0 where it spiked


@_jit
def _neurons(i, s, a, u, v, du, dv, bias, vth, reset, S, counts):
    """One LIF step of sample ``i`` at step ``s``: ``a`` (n,) int64 the InPort's sum; u, v (b, n) int64
    in place; spikes into S[i, s], their number into counts[i, s]."""
    n = a.shape[0]
    keep = 0 if reset else 1              # LIFReset: u and v zeroed before the step's update
    c = 0
    for j in range(n):
        u[i, j], v[i, j], spike = _lif_update(u[i, j] * keep, v[i, j] * keep, a[j], du[j], dv[j], bias[j], vth[j])
        S[i, s, j] = spike
        c += spike
    counts[i, s] = c


@_jit
def _add_recurrent(i, s, a, S, w_rec, rec_exp, acc):
    """a += the recurrent Dense's a_out for sample ``i``'s spikes of step ``s - 1`` (the InPort's int32 sum)."""
    n = a.shape[0]
    for j in range(n):
        acc[j] = 0
    any_spike = False
    for k in range(S.shape[2]):
        if S[i, s - 1, k]:
            any_spike = True
            for j in range(n):
                acc[j] += w_rec[k, j]
    if any_spike:
        for j in range(n):
            a[j] = _wrap32(a[j] + _a_out(acc[j], False, rec_exp))


@_jit
def scan_rows(X):
    """(min, max, number of nonzeros) of a 2-D integer array in one pass (the input check and the
    activity a path choice needs, instead of three numpy passes)."""
    lo = X[0, 0]
    hi = X[0, 0]
    nz = 0
    for r in range(X.shape[0]):
        for k in range(X.shape[1]):
            x = X[r, k]
            lo = min(lo, x)
            hi = max(hi, x)
            nz += x != 0
    return lo, hi, nz


@_jit
def _lif_feed_forward(R, step_src, factor, graded, exp, du, dv, bias, vth, resets, S, u, v, counts):
    """:func:`lif_from_sums` without a recurrent synapse: the a_out of each sum computed inside the neuron
    loop (no intermediate array; ~20% faster than the two loops on the default shapes), u and v in
    per-layer scratch rows."""
    b = S.shape[0]
    P = S.shape[1]
    n = S.shape[2]
    uu = np.zeros(n, dtype=np.int64)
    vv = np.zeros(n, dtype=np.int64)
    for i in range(b):
        for j in range(n):
            uu[j] = 0
            vv[j] = 0
        for s in range(P):
            d = step_src[s]
            has_in = 1 if d >= 0 else 0             # no input this step: a = 0 (LLVM unswitches the loop)
            row = max(d, 0)
            keep = 0 if resets[s] else 1
            c = 0
            for j in range(n):
                a = _a_out(np.int64(R[i, row, j]) * factor, graded, exp) * has_in
                uu[j], vv[j], spike = _lif_update(uu[j] * keep, vv[j] * keep, a, du[j], dv[j], bias[j], vth[j])
                S[i, s, j] = spike
                c += spike
            counts[i, s] = c
        for j in range(n):
            u[i, j] = uu[j]
            v[i, j] = vv[j]


@_jit
def lif_from_sums(R, step_src, factor, graded, exp, w_rec, rec_exp, has_rec,
                  du, dv, bias, vth, resets, S, u, v, counts):
    """The layer over P = S.shape[1] steps from precomputed feed-forward sums.

    ``R`` (b, D, n) integer-valued (any dtype): ``factor * R[i, d]`` the exact sums of sample ``i``'s
    ``d``-th distinct input row; ``step_src`` (P,): the row of each step, -1 for no input. ``w_rec``
    (n, n) int64 (k -> j), used when ``has_rec``. ``du, dv, vth, bias`` (n,) int64 (decay multipliers,
    ``vth << 6``, effective bias); ``resets`` (P,) bool (netx's LIFReset schedule). Writes S (b, P, n)
    uint8, the final u, v (b, n) int64 and counts (b, P) spikes per step."""
    if not has_rec:
        _lif_feed_forward(R, step_src, factor, graded, exp, du, dv, bias, vth, resets, S, u, v, counts)
        return
    b = S.shape[0]
    P = S.shape[1]
    n = S.shape[2]
    a = np.zeros(n, dtype=np.int64)
    acc = np.zeros(n, dtype=np.int64)
    for i in range(b):
        for j in range(n):
            u[i, j] = 0
            v[i, j] = 0
        for s in range(P):
            d = step_src[s]
            if d >= 0:
                for j in range(n):
                    a[j] = _a_out(np.int64(R[i, d, j]) * factor, graded, exp)
            else:
                for j in range(n):
                    a[j] = 0
            if has_rec and s > 0:
                _add_recurrent(i, s, a, S, w_rec, rec_exp, acc)
            _neurons(i, s, a, u, v, du, dv, bias, vth, resets[s], S, counts)
