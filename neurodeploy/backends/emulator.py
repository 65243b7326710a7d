"""A vectorised numpy emulator of Lava 0.10's fixed-point models, bit-exact.

It reproduces, operation by operation and including the integer widths that
numpy gives the operations inside Lava's process models:

* ``PyDenseModelBitAcc`` (``lava/proc/dense/models.py``): weights clipped by
  sign mode and low bits truncated on the first step
  (:func:`~neurodeploy.backends.base.effective_weights`); the sum of the
  weights of the active inputs, shifted by ``weight_exp`` after the sum
  (arithmetic right shift for a negative exponent). Graded input
  (``num_message_bits > 0``) goes through an int32 ``dot`` (wraps at 32 bit),
  binary input through an int64 ``sum``; either way the result crosses an
  int32 channel. One step of delay: the sum of step s is sent at step s + 1.
* ``PyLifModelBitAcc`` / ``PyLifResetModelBitAcc`` (``lava/proc/lif/models.py``):
  ``u = trunc(u * (4096 - (du + 1)) / 4096) + (a_in << 6)`` with int32
  arithmetic and Lava's one-shot 24-bit wrap (``u > 2**23 -> u - 2**24``,
  ``u <= -2**23 -> u + 2**24``); ``v = trunc(v * (4096 - dv) / 4096) + u +
  bias`` clipped to +-(2**23 - 1); spike where ``v > vth << 6``; ``v = 0`` there.
  Several synapses into one population are summed in int32 (the InPort adds them).
* Conv layers use the same synapse arithmetic as Dense (see the Lava backend,
  which maps them onto Lava processes that compute exactly this) with torch's
  Conv2d cross-correlation (stride, padding, dilation, groups) via im2col.

Integer sums run as float32/float64 BLAS matmuls whenever every partial sum is
provably below 2**24 / 2**53 (then the result is exact), otherwise as int64.
A layer whose inputs stay below 2**17 in a batch (the normal case) runs a
leaner in-place LIF step that provably needs none of the int32 wraps; otherwise
the general step reproduces them all (tests check both against Lava).
Samples are processed in batches (``batch_size``) so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..ir import ConvLayer, DenseLayer, Network
from .base import (
    RunResult,
    check_inputs,
    check_network,
    effective_weights,
    input_max,
    shift,
    wrap32,
)

__all__ = ["run_emulator", "Emulator"]

_U_LIM = 1 << 23            # Lava's max_uv_val
_V_LIM = (1 << 23) - 1      # voltage clip
_COLS_BUDGET = 1 << 24      # elements of one im2col block


def _matmul_dtype(bound: int):
    """Smallest float type in which all partial sums up to ``bound`` are exact."""
    if bound < (1 << 24):
        return np.float32
    if bound < (1 << 53):
        return np.float64
    return np.int64


@dataclass
class _Synapse:
    """A compiled Dense / Conv synapse (one weight matrix)."""

    kind: str                    # "dense" | "conv"
    weight: np.ndarray           # effective weights (int64); dense (out, in), conv (O, I/g, kH, kW)
    exp: int
    graded: bool                 # Lava's int32 dot path (num_message_bits > 0)
    dtype: type
    mat: np.ndarray              # dense: (in, out) ; conv: (g, O/g, I/g*kH*kW), in ``dtype``
    n_out: int
    bound: int                   # largest |a_out| possible (2**31: may wrap)
    conv: Optional[ConvLayer] = None

    @classmethod
    def build(cls, weight: np.ndarray, sign_mode: str, num_weight_bits: int, exp: int,
              graded: bool, max_in: int, conv: Optional[ConvLayer] = None) -> "_Synapse":
        w = effective_weights(weight, sign_mode, num_weight_bits)
        bound = int(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max(initial=0)) * max_in
        dtype = _matmul_dtype(bound)
        exp = int(exp)
        a_bound = bound << exp if exp > 0 else (bound + (1 << -exp) - 1) >> -exp
        a_bound = min(a_bound, 1 << 31) if bound < (1 << 31) else 1 << 31
        if conv is None:
            mat = np.ascontiguousarray(w.T.astype(dtype))
            return cls("dense", w, exp, graded, dtype, mat, int(w.shape[0]), a_bound)
        o, cg, kh, kw = w.shape
        g = int(conv.groups)
        mat = np.ascontiguousarray(w.reshape(g, o // g, cg * kh * kw).astype(dtype))
        return cls("conv", w, exp, graded, dtype, mat, int(np.prod(conv.out_shape)), a_bound, conv)

    # -- sums ---------------------------------------------------------------
    def _dense_sum(self, x: np.ndarray) -> np.ndarray:
        r = x.astype(self.dtype, copy=False) @ self.mat
        return r.astype(np.int64)

    def _conv_sum(self, x: np.ndarray) -> np.ndarray:
        layer = self.conv
        c, h, w_ = layer.in_shape
        n = x.shape[0]
        x = x.reshape(n, c, h, w_)
        o, cg, kh, kw = self.weight.shape
        _, oh, ow = layer.out_shape
        (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
        g = int(layer.groups)
        out = np.empty((n, o * oh * ow), dtype=np.int64)
        per_row = c * kh * kw * oh * ow
        chunk = max(1, _COLS_BUDGET // max(per_row, 1))
        for start in range(0, n, chunk):
            xb = x[start:start + chunk].astype(self.dtype, copy=False)
            if ph or pw:
                xb = np.pad(xb, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
            nb = xb.shape[0]
            cols = np.empty((nb, c, kh, kw, oh, ow), dtype=self.dtype)
            for i in range(kh):
                for j in range(kw):
                    h0, w0 = i * dh, j * dw
                    cols[:, :, i, j] = xb[:, :, h0:h0 + sh * (oh - 1) + 1:sh, w0:w0 + sw * (ow - 1) + 1:sw]
            cols = cols.reshape(nb, g, cg * kh * kw, oh * ow)
            r = np.matmul(self.mat[None], cols)          # (nb, g, O/g, oh*ow)
            out[start:start + nb] = r.reshape(nb, o * oh * ow).astype(np.int64)
        return out

    def apply(self, x: np.ndarray) -> np.ndarray:
        """a_out for input rows ``x`` (rows, n_in) -> (rows, n_out) int64 in int32 range."""
        rows = x.shape[0]
        out = np.zeros((rows, self.n_out), dtype=np.int64)
        if rows == 0:
            return out
        active = x.reshape(rows, -1).any(axis=1)      # zero input -> zero output
        if not active.any():
            return out
        xa = x[active] if not active.all() else x
        s = self._dense_sum(xa) if self.kind == "dense" else self._conv_sum(xa)
        if self.graded:                               # int32 dot, then int32 shift
            s = wrap32(s)
        s = wrap32(shift(s, self.exp))                # crossing the int32 a_out channel
        if active.all():
            return s
        out[active] = s
        return out


@dataclass
class _Neurons:
    du_mult: int
    dv_mult: int
    bias: np.ndarray             # effective bias (int64, in int32 range)
    vth: int                     # vth << 6
    size: int

    @classmethod
    def build(cls, nrn) -> "_Neurons":
        mant = np.asarray(nrn.bias_mant).astype(np.int64)
        bias = wrap32(shift(mant, int(nrn.bias_exp)))
        return cls(4096 - (int(nrn.du) + 1), 4096 - int(nrn.dv), bias, int(nrn.vth) << 6, int(mant.size))

    @property
    def bias_bound(self) -> int:
        return int(np.abs(self.bias).max(initial=0))

    def step(self, u: np.ndarray, v: np.ndarray, a: np.ndarray) -> np.ndarray:
        """One Lava fixed_pt LIF step in place on ``u``, ``v``; returns the spikes.

        General path: reproduces every int32 wrap of Lava's arithmetic."""
        x = u * self.du_mult
        dec = (x + ((x >> 63) & 4095)) >> 12          # sign(x) * (|x| >> 12)
        t = wrap32(dec + wrap32(a << 6))
        t -= (t > _U_LIM).astype(np.int64) << 24     # Lava's one-shot 24-bit wrap
        t += (t <= -_U_LIM).astype(np.int64) << 24
        u[...] = t
        y = v * self.dv_mult
        decv = (y + ((y >> 63) & 4095)) >> 12
        nv = wrap32(decv + t + self.bias)
        np.clip(nv, -_V_LIM, _V_LIM, out=nv)
        s = nv > self.vth
        nv[s] = 0
        v[...] = nv
        return s

    def step_fast(self, u: np.ndarray, v: np.ndarray, a: np.ndarray, t1: np.ndarray,
                  t2: np.ndarray) -> np.ndarray:
        """The same step when ``|a| < 2**17`` and ``|bias| < 2**29`` (see :data:`FAST_A_LIMIT`):
        then ``|u| <= 2**23`` holds at every step, no int32 operation can wrap and
        the one-shot wrap is a plain wrap into (-2**23, 2**23]. In place, with
        scratch buffers ``t1``, ``t2`` (same shape), to keep memory traffic low."""
        np.multiply(u, self.du_mult, out=t1)
        np.right_shift(t1, 63, out=t2)
        np.bitwise_and(t2, 4095, out=t2)
        t1 += t2
        t1 >>= 12                                     # decayed u, rounded toward zero
        np.left_shift(a, 6, out=t2)
        t1 += t2                                      # |t1| < 2**24 here
        t1 += _U_LIM - 1                              # one-shot wrap == wrap into (-2**23, 2**23]
        t1 &= (1 << 24) - 1
        t1 -= _U_LIM - 1
        u[...] = t1
        np.multiply(v, self.dv_mult, out=t1)
        np.right_shift(t1, 63, out=t2)
        np.bitwise_and(t2, 4095, out=t2)
        t1 += t2
        t1 >>= 12
        t1 += u
        t1 += self.bias
        np.clip(t1, -_V_LIM, _V_LIM, out=v)
        s = v > self.vth
        v[s] = 0
        return s


FAST_A_LIMIT = 1 << 17      # |a_in| below this keeps |u| <= 2**23 (a << 6 < 2**23)
FAST_BIAS_LIMIT = 1 << 29


class Emulator:
    """A network compiled for the emulator; :meth:`run` takes encoded inputs."""

    def __init__(self, network: Network):
        check_network(network)
        self.network = network
        self.layers = []
        max_in = input_max(network)
        graded = network.input_encoding.kind == "graded"
        for i, layer in enumerate(network.layers):
            first = i == 0
            ff = _Synapse.build(layer.weight, layer.sign_mode, layer.num_weight_bits, layer.weight_exp,
                                graded and first, max_in if first else 1,
                                conv=layer if isinstance(layer, ConvLayer) else None)
            rec = None
            if isinstance(layer, DenseLayer) and layer.weight_rec is not None:
                rec = _Synapse.build(layer.weight_rec, layer.sign_mode, layer.num_weight_bits,
                                     layer.weight_rec_exp, False, 1)
            self.layers.append((ff, rec, _Neurons.build(layer.neurons)))

    def run_batch(self, x: np.ndarray, record_state: bool = False):
        """``x`` validated int64 (B, T, *input_shape) -> (out spikes, counts, us, vs)."""
        b, T = x.shape[:2]
        L = len(self.layers)
        P = T + L
        counts = np.zeros((b, L), dtype=np.int64)
        us, vs = [], []
        prev = x.reshape(b, T, -1)                    # layer input, steps 0..rows-1
        for li, (ff, rec, nrn) in enumerate(self.layers):
            steps_in = min(prev.shape[1], P - 1)      # input of step s acts at step s + 1
            A = np.zeros((b, P, nrn.size), dtype=np.int64)
            if steps_in:
                flat = prev[:, :steps_in].reshape(b * steps_in, -1)
                A[:, 1:steps_in + 1] = ff.apply(flat).reshape(b, steps_in, nrn.size)
            u = np.zeros((b, nrn.size), dtype=np.int64)
            v = np.zeros((b, nrn.size), dtype=np.int64)
            S = np.zeros((b, P, nrn.size), dtype=np.uint8)
            # fast path when this batch's inputs (plus worst-case recurrence) stay small
            a_bound = min(ff.bound, int(np.abs(A).max(initial=0))) + (rec.bound if rec is not None else 0)
            fast = a_bound < FAST_A_LIMIT and nrn.bias_bound < FAST_BIAS_LIMIT
            if fast:
                t1, t2 = np.empty_like(u), np.empty_like(u)
            s_prev = None
            for s in range(P):
                a = A[:, s]
                if rec is not None and s_prev is not None:
                    a = wrap32(a + rec.apply(s_prev))  # the InPort adds both in int32
                spk = nrn.step_fast(u, v, a, t1, t2) if fast else nrn.step(u, v, a)
                S[:, s] = spk
                s_prev = spk
            counts[:, li] = S.sum(axis=(1, 2), dtype=np.int64)
            if record_state:
                us.append(u)
                vs.append(v)
            prev = S
        return prev, counts, us, vs

    def run(self, inputs, *, batch_size: int = 128, record_state: bool = False,
            progress: bool = False) -> RunResult:
        net = self.network
        x = check_inputs(net, inputs, as_int64=False)   # converted batch by batch
        n, T = x.shape[:2]
        L = len(self.layers)
        outs = np.zeros((n, T + L, net.output_size), dtype=np.uint8)
        counts = np.zeros((n, L), dtype=np.int64)
        us = [np.zeros((n, nrn.size), dtype=np.int64) for _, _, nrn in self.layers] if record_state else None
        vs = [np.zeros((n, nrn.size), dtype=np.int64) for _, _, nrn in self.layers] if record_state else None
        batch_size = max(1, int(batch_size))
        starts = range(0, n, batch_size)
        bar = None
        if progress:
            from rich.progress import Progress
            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task("emulator", total=n)
        try:
            for start in starts:
                stop = min(n, start + batch_size)
                o, c, bu, bv = self.run_batch(x[start:stop].astype(np.int64, copy=False), record_state)
                outs[start:stop] = o
                counts[start:stop] = c
                if record_state:
                    for li in range(L):
                        us[li][start:stop] = bu[li]
                        vs[li][start:stop] = bv[li]
                if bar is not None:
                    bar.update(task, advance=stop - start)
        finally:
            if bar is not None:
                bar.stop()
        return RunResult(outs, counts, us, vs, latency=net.latency, time_steps=T)


def run_emulator(network: Network, inputs, *, batch_size: int = 128, record_state: bool = False,
                 progress: bool = False) -> RunResult:
    """Run encoded ``inputs`` (samples, T, *input_shape) through ``network``; see module doc."""
    return Emulator(network).run(inputs, batch_size=batch_size, record_state=record_state,
                                 progress=progress)
