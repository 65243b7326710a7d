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
* A potential readout (``network.readout == "potential"``) returns the output
  layer's final v (``RunResult.output_v``), which the prediction reads.
* Conv layers use the same synapse arithmetic as Dense (see the Lava backend,
  which maps them onto Lava processes that compute exactly this) with torch's
  Conv2d cross-correlation (stride, padding, dilation, groups) via im2col.
* Sigma-delta networks (``SigmaDeltaNeurons``, netx's SDNN) run on
  :class:`SigmaDeltaEmulator` (``run_emulator`` dispatches): Lava's sdn models
  ``Delta`` / ``SigmaDelta`` / ``Sigma`` on int32 arrays, graded messages into
  ``Dense`` (int32 dot) and ``Conv`` (raw kernel, 24-bit wrap) synapses.

How it is fast and still exact (every shortcut is taken only where a bound
proves it changes nothing; otherwise the general int64 code runs):

* Samples run in batches (``batch_size``), time-major, so memory stays bounded
  and every per-step operation works on a ``(batch, neurons)`` block.
* Input steps that repeat (direct encoding presents the same image T times)
  are detected per batch (a broadcast view with stride 0 over time needs no
  look; otherwise the steps are compared bytewise, with libc's ``memcmp``
  where ctypes finds it), and the first layer's matmul runs once per distinct
  step rather than once per step. The inputs' range check runs on those
  distinct steps only (a bad value raises the same error as
  :func:`~neurodeploy.backends.base.check_inputs`).
* Feed-forward layers are time-batched: once the layer below has run all its
  steps, a layer's synaptic input for every step that can carry spikes is one
  GEMM over (steps x samples) rows; only a recurrent synapse runs step by step.
* Integer sums of a dense synapse take the cheapest exact path per call
  (:mod:`neurodeploy.backends.accumulate`, chosen from the shape and the
  measured activity): onnxruntime's int8 x int8 -> int32 ``MatMulInteger``
  when inputs fit uint8, weights (divided by their common factor) int8 and the
  sum's bound 2**31; an event-driven gather for very sparse input; else float32
  / float64 BLAS matmuls when every partial sum is provably below 2**24 / 2**53
  (then they are exact), otherwise int64. :attr:`_Synapse.paths` counts the rows
  each path summed (``simulate --verbose`` prints them). Conv sums run on BLAS
  (im2col).
* Compiled path (the default where numba imports, :data:`COMPILED`): a batch without
  injections, traces, an input population or delays runs each layer as one exact
  GEMM over all its (sample, step) rows (the path above; sample-major, so no
  transposes) followed by the layer's LIF over every step in one compiled loop
  (:func:`neurodeploy.backends.kernels.lif_from_sums`): int64 arithmetic with every
  int32 wrap of Lava's model, so it needs no bounds; a recurrent synapse is
  gathered inside that loop from the step before's spikes. Spikes come out as
  uint8, the next layer's int8 GEMM input as they are. The numpy paths below
  remain for everything else and as the tests' reference.
* The numpy LIF step runs in float64, which holds every intermediate exactly
  (integers below 2**53: products below 2**36, multiplies by exact powers of
  two, ``trunc`` = rounding toward zero), with Lava's wraps written as float
  operations. With ``du = 4095`` (no current memory, as in the default DLIF
  network) u is a function of the step's drive alone, ``oneshot24(int32(a
  << 6))``, computed once per distinct step, for any drive. A layer whose u
  keeps state takes this path when its drive in the batch stays below
  :data:`FAST_A_LIMIT` (2**18) and its bias below 2**29: then no int32
  operation can wrap and u stays within 24 bits. Each wrap and the clip of v
  run only when the batch's bounds say they can trigger (the upper clip never
  matters: a v above the threshold resets to 0). Steps whose drive and bias
  are zero cannot spike and only decay v.
* Otherwise (large drives, ``FAST_A_LIMIT = 0`` in the tests) the general
  int64 step reproduces every int32 wrap; tests check both paths against Lava.
* Injections (``step_noise=``, a :class:`~neurodeploy.backends.injection.StepInjector`
  such as :class:`~neurodeploy.noise.step.StepNoise`): a layer with an ``a_in`` or
  ``v`` injection, or a recurrent layer with a ``keep`` mask, runs the general
  int64 step with the injection added; a ``keep`` mask of a feed-forward layer
  only masks the spikes the next layer receives, so every other layer keeps its
  fast path.

Speed: ``benchmarks/emulator_vs_lava.py`` measures the API, the CLI and Lava on the same
inputs, as ratios from one run, and records the machine, its load and the commit
(``benchmarks/results/emulator_vs_lava.md``; the README quotes it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import lava_rules as lr
from ..ir import ConvLayer, DenseLayer, Network, SigmaDeltaNeurons, is_sigma_delta
from ..lava_rules import effective_weights, shift, wrap32
from . import kernels
from .accumulate import DenseAccumulator, set_thread_budget
from .base import (BackendError, RunResult, check_bias, check_inputs, check_network, input_max, reset_steps,
                   sample_ids_of, shaped_inputs, trace_layers)
from .injection import LayerInjection, draw_injections, injection_layout

__all__ = ["run_emulator", "Emulator", "SigmaDeltaEmulator", "SigmaDeltaResult"]

_U_LIM = lr.U_LIMIT         # Lava's max_uv_val
_V_LIM = lr.V_LIMIT         # voltage clip
_ACT = float(1 << lr.ACT_SHIFT)         # a_in << 6 as a float multiply
_UNITY = float(lr.DECAY_UNITY)          # decays are multiples of 1/4096
_U_WRAP = float(1 << lr.STATE_BITS)     # u's one-shot wrap subtracts / adds 2**24
_COLS_BUDGET = 1 << 24      # elements of one im2col block
# The float64 LIF path: for layers whose u keeps state (du < 4095, or recurrent) when
# |a_in| < FAST_A_LIMIT (no int32 wrap, |u| <= 2**23) and |bias| < FAST_BIAS_LIMIT;
# for du = 4095 layers always. FAST_A_LIMIT = 0 turns it off (the tests' general path).
FAST_A_LIMIT = 1 << 18
COMPILED = True
_COUNT_LOCK = threading.Lock()
"""Run eligible batches on the compiled, fused layer kernels (:mod:`neurodeploy.backends.kernels`) when numba
is there; the tests switch it off (and set ``FAST_A_LIMIT = 0``) for the numpy reference."""
FAST_BIAS_LIMIT = 1 << 29

DEFAULT_BATCH_SIZE = 256
_MARGIN = 1.0 + 1e-9        # slack on float-computed bounds (they only decide skipped work)
_EQ_CHUNK = 1 << 18         # elements per block when comparing input steps


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
    acc: Optional[DenseAccumulator] = None   # dense: the exact sum by the cheapest path (accumulate.py)

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
            return cls("dense", w, exp, graded, dtype, mat, int(w.shape[0]), a_bound,
                       acc=DenseAccumulator(w, max_in, bound, mat))
        o, cg, kh, kw = w.shape
        g = int(conv.groups)
        mat = np.ascontiguousarray(w.reshape(g, o // g, cg * kh * kw).astype(dtype))
        return cls("conv", w, exp, graded, dtype, mat, int(np.prod(conv.out_shape)), a_bound, conv)

    @property
    def exact_float(self) -> bool:
        """Sums are exact in the float matmul type and nothing can wrap at 32 bit
        (``bound < 2**31`` bounds the sum before the shift as well as after)."""
        return self.dtype is not np.int64 and self.bound < (1 << 31)

    # -- sums ---------------------------------------------------------------
    def _dense_sum(self, x: np.ndarray, density: Optional[float] = None) -> np.ndarray:
        # exact integers in ``dtype`` (BLAS), int32 (int8 GEMM) or int32/int64 (event-driven)
        return self.acc(x, density)

    @property
    def paths(self) -> dict:
        """Input rows summed by each accumulation path so far (dense; conv: all on BLAS via im2col)."""
        return dict(self.acc.rows_by_path) if self.acc is not None else {"blas-im2col": None}

    def _conv_sum(self, x: np.ndarray) -> np.ndarray:
        layer = self.conv
        c, h, w_ = layer.in_shape
        n = x.shape[0]
        x = x.reshape(n, c, h, w_)
        o, cg, kh, kw = self.weight.shape
        _, oh, ow = layer.out_shape
        (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
        g = int(layer.groups)
        out = np.empty((n, o * oh * ow), dtype=self.dtype)
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
            out[start:start + nb] = r.reshape(nb, o * oh * ow)
        return out

    def _sum(self, x: np.ndarray, density: Optional[float] = None) -> np.ndarray:
        return self._dense_sum(x, density) if self.kind == "dense" else self._conv_sum(x)

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
        s = self._sum(xa).astype(np.int64, copy=False)
        if self.graded:                               # int32 dot, then int32 shift
            s = wrap32(s)
        s = wrap32(shift(s, self.exp))                # crossing the int32 a_out channel
        if active.all():
            return s
        out[active] = s
        return out

    def drive(self, x: np.ndarray, density: Optional[float] = None) -> np.ndarray:
        """``a_out << 6`` (the LIF's input term) for rows ``x``, as exact float64.

        With :attr:`exact_float`, straight from the exact sum (float BLAS, or
        int32 from the int8 / event paths): the shift is a multiply by a power
        of two (then ``floor`` for a right shift), exact in float. Otherwise via
        the int64 path with all its wraps. ``density``: the fraction of nonzero
        inputs if known (it picks the accumulation path; see accumulate.py)."""
        if not self.exact_float:
            out = self.apply(x).astype(np.float64)
            out *= _ACT
            return out
        if self.kind == "dense":
            r, factor = self.acc.unscaled(x, density)
            if r.dtype.kind == "i":                   # int32 / int64 sums: shift in integers, one conversion
                return _int_drive(r, factor, self.exp)
            r = r if factor == 1 else r * factor
        else:
            r = self._sum(x, density)
        if self.exp < 0:
            r = np.floor(r * (2.0 ** self.exp))       # arithmetic right shift
            out = r.astype(np.float64, copy=False)
            out *= _ACT
        else:
            out = r.astype(np.float64, copy=False)
            out *= 2.0 ** (self.exp + lr.ACT_SHIFT)
        return out


def _int_drive(r: np.ndarray, factor: int, exp: int) -> np.ndarray:
    """``shift(factor * r, exp) << 6`` as float64 for integer sums ``r`` (in place on ``r``).

    ``factor = 2**a * odd``: ``r * odd`` stays below the sum's bound (< 2**31, exact in int32), and the
    power of two joins the exponent, so ``floor(factor * r * 2**exp) = (odd * r) >> -(exp + a)`` (an
    arithmetic shift is the floor), and a non-negative total shift is an exact float multiply."""
    a = (factor & -factor).bit_length() - 1
    odd = factor >> a
    if odd != 1:
        r *= odd
    total = exp + a
    if total < 0:
        r >>= -total
        total = 0
    return np.multiply(r, 2.0 ** (total + lr.ACT_SHIFT), dtype=np.float64)


@dataclass
class _DelaySynapse:
    """Lava's ``DelayDense`` (``PyDelayDenseModelBitAcc``): one synapse per delay value d holding the
    weights of delay d (clipped and truncated on the whole matrix first); a spike of step s reaches the
    neurons at step s + 1 + d, each slot's sum shifted by ``weight_exp`` on its own, the slots added in
    the int32 buffer."""

    slots: list                  # (delay, _Synapse)
    n_out: int
    bound: int

    @classmethod
    def build(cls, layer: DenseLayer, graded: bool, max_in: int) -> "_DelaySynapse":
        w = effective_weights(layer.weight, layer.sign_mode, layer.num_weight_bits)
        delay = np.asarray(layer.delay).astype(np.int64)
        slots = []
        for d in np.unique(delay):
            part = np.where(delay == d, w, 0)
            # DelayDense sums in int64 (np.sum of the weighted inputs), graded or not: no int32 wrap of the sum
            slots.append((int(d), _Synapse.build(part, layer.sign_mode, layer.num_weight_bits, layer.weight_exp,
                                                 False, max_in)))
        bound = sum(syn.bound for _, syn in slots)
        if bound >= 1 << 31:
            raise BackendError(f"layer {layer.name or '?'}: delayed sums can reach {bound}, beyond the int32 "
                               f"buffer Lava's DelayDense adds them in; not emulated")
        return cls(slots, int(w.shape[0]), bound)

    def drives(self, x: np.ndarray, b: int, P: int) -> np.ndarray:
        """``a_out << 6`` per step (P, b, n_out) float64 for time-major inputs ``x`` (steps, b, n_in)."""
        D = np.zeros((P, b, self.n_out))
        steps = x.shape[0]
        for d, syn in self.slots:
            last = min(steps, P - 1 - d)               # inputs whose delayed arrival is still simulated
            if last <= 0:
                continue
            rows = x[:last].reshape(last * b, -1)
            if not rows.any():
                continue
            D[1 + d:1 + d + last] += syn.drive(rows).reshape(last, b, self.n_out)
        return D


@dataclass
class _Neurons:
    du_mult: "int | np.ndarray"  # 4096 - (du + 1), one value or one per neuron
    dv_mult: "int | np.ndarray"  # 4096 - dv
    bias: np.ndarray             # effective bias (int64, in int32 range)
    vth: "int | np.ndarray"      # vth << 6
    size: int

    @classmethod
    def build(cls, nrn) -> "_Neurons":
        mant = np.asarray(nrn.bias_mant).astype(np.int64)
        return cls(lr.u_multiplier(nrn.du), lr.v_multiplier(nrn.dv), lr.effective_bias(mant, nrn.bias_exp),
                   lr.effective_vth(nrn.vth), int(mant.size))

    def __post_init__(self):
        # per-neuron decays or thresholds (netx's arrays) run on the general int64 path only
        self.per_neuron = any(isinstance(x, np.ndarray) for x in (self.du_mult, self.dv_mult, self.vth))
        self.bias_bound = int(np.abs(self.bias).max(initial=0))
        self.bias_f = self.bias.astype(np.float64)

    def step(self, u: np.ndarray, v: np.ndarray, a: np.ndarray, v_noise: Optional[np.ndarray] = None,
             events: Optional[dict] = None) -> np.ndarray:
        """One Lava fixed_pt LIF step in place on int64 ``u``, ``v``; returns the spikes.

        General path: reproduces every int32 wrap of Lava's arithmetic
        (:func:`neurodeploy.lava_rules.lif_step`). ``v_noise`` (membrane noise) is
        added to the int32 sum for ``v``."""
        return lr.lif_step(u, v, a, self.du_mult, self.dv_mult, self.bias, self.vth, v_noise, events)


def _geometric(ratio: float, steps: int) -> float:
    """sum(ratio**k for k < steps), ratio in [0, 1]."""
    return float(steps) if ratio >= 1.0 else (1.0 - ratio ** steps) / (1.0 - ratio)


def _oneshot24(x: np.ndarray, tmp: np.ndarray) -> None:
    """In place on float64 integers: Lava's one-shot 24-bit wrap of u,
    ``x > 2**23 -> x - 2**24``, then ``x <= -2**23 -> x + 2**24`` (for
    |x| <= 2**31 the first cannot make the second apply, so in sequence they
    equal Lava's two ``np.where`` on the original value)."""
    np.greater(x, _U_LIM, out=tmp)
    tmp *= _U_WRAP
    x -= tmp
    np.less_equal(x, -_U_LIM, out=tmp)
    tmp *= _U_WRAP
    x += tmp


def _wrap32f(x: np.ndarray, tmp: np.ndarray) -> None:
    """In place on float64 integers (|x| < 2**52): two's complement int32 wrap."""
    np.add(x, 2.0 ** 31, out=tmp)
    tmp *= 2.0 ** -32
    np.floor(tmp, out=tmp)
    tmp *= 2.0 ** 32
    x -= tmp


def _load_memcmp():
    """libc's ``memcmp`` through ctypes (vectorised; about twice as fast as numpy's
    elementwise compare plus reduction here), or None where there is none."""
    try:
        import ctypes
        import ctypes.util

        fn = ctypes.CDLL(ctypes.util.find_library("c")).memcmp
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        probe = np.arange(8, dtype=np.uint8)
        if fn(probe.ctypes.data, probe.ctypes.data, 8) != 0 or fn(probe.ctypes.data, probe.ctypes.data + 1, 4) == 0:
            return None
        return fn
    except (ImportError, OSError, AttributeError, TypeError):
        return None


_MEMCMP = _load_memcmp()


def _all_steps_repeat(flat: np.ndarray) -> bool:
    """True if in every sample of ``flat`` (B, T, n) all T steps are identical."""
    b, T = flat.shape[:2]
    if _MEMCMP is not None and flat.flags.c_contiguous:
        # per sample, bytes [step, end) equal bytes [0, end - step): step t == step t - 1 for all t
        per, step, base = flat[0].nbytes, flat[0, 0].nbytes, flat.ctypes.data
        return all(_MEMCMP(base + i * per + step, base + i * per, per - step) == 0 for i in range(b))
    chunk = max(1, _EQ_CHUNK // flat[0, 1:].size)
    buf = np.empty((min(chunk, b),) + flat[0, 1:].shape, dtype=bool)
    for i in range(0, b, chunk):
        o = buf[:min(chunk, b - i)]
        np.equal(flat[i:i + chunk, 1:], flat[i:i + chunk, :-1], out=o)
        if not o.all():
            return False
    return True


def _repeats(flat: np.ndarray) -> list:
    """rep[t]: the first step of the run of identical input steps that step t is in
    (identical for every sample of the batch ``flat`` (B, T, n))."""
    b, T = flat.shape[:2]
    if T == 1 or flat.strides[1] == 0:               # a broadcast view: identical by construction
        return [0] * T
    cand = [t for t in range(1, T) if np.array_equal(flat[0, t], flat[0, t - 1])]   # sample 0 first
    same = [False] * T
    if len(cand) == T - 1 and _all_steps_repeat(flat):   # e.g. direct encoding
        return [0] * T
    for t in cand:
        same[t] = np.array_equal(flat[1:, t], flat[1:, t - 1])
    reps = [0]
    for t in range(1, T):
        reps.append(reps[-1] if same[t] else t)
    return reps


class Emulator:
    """A network compiled for the emulator; :meth:`run` takes encoded inputs."""

    def __init__(self, network: Network):
        check_network(network)
        if is_sigma_delta(network):
            raise BackendError("this network has sigma-delta neurons: run it with SigmaDeltaEmulator (or run_emulator)")
        self.network = network
        self.layers = []
        self.max_in = input_max(network)
        graded = network.input_encoding.kind == "graded" and network.input_neurons is None
        self.input_pop = None if network.input_neurons is None else _Neurons.build(network.input_neurons)
        for i, layer in enumerate(network.layers):
            first = i == 0
            ff = _Synapse.build(layer.weight, layer.sign_mode, layer.num_weight_bits, layer.weight_exp,
                                graded and first, self.max_in if first and self.input_pop is None else 1,
                                conv=layer if isinstance(layer, ConvLayer) else None)
            if isinstance(layer, DenseLayer) and layer.delay is not None:
                ff = _DelaySynapse.build(layer, graded and first,
                                         self.max_in if first and self.input_pop is None else 1)
            rec = None
            if isinstance(layer, DenseLayer) and layer.weight_rec is not None:
                rec = _Synapse.build(layer.weight_rec, layer.sign_mode, layer.num_weight_bits,
                                     layer.weight_rec_exp, False, 1)
            self.layers.append((ff, rec, _Neurons.build(layer.neurons)))

    def describe(self) -> list[str]:
        """One line per layer: its synapses and the input rows each accumulation path has summed so far
        (``simulate --verbose``)."""
        lines = []
        for i, (ff, rec, nrn) in enumerate(self.layers):
            parts = []
            for name, syn in (("ff", ff), ("rec", rec)):
                if syn is None:
                    continue
                used = ", ".join(f"{p} {r:,} rows" for p, r in syn.paths.items() if r) or \
                    ("blas (im2col)" if syn.kind == "conv" else "not run")
                shape = f"{syn.mat.shape[0]}->{syn.mat.shape[1]}" if syn.kind == "dense" else \
                    f"conv {tuple(syn.weight.shape)}"
                exact = np.dtype(syn.dtype).name
                parts.append(f"{name} {syn.kind} {shape} (exact BLAS type {exact}): {used}")
            runs = self.__dict__.get("_lif_batches", {})
            lif = ", ".join(f"{k} {v:,} batches" for k, v in sorted(runs.items())) or "not run"
            lines.append(f"emulator layer {i} ({nrn.size} neurons): " + "; ".join(parts) + f"; LIF: {lif}")
        return lines

    # -- one batch --------------------------------------------------------------
    def _resets(self, block: int, P: int) -> Optional[list[bool]]:
        return reset_steps(self.network, block, P)

    def _input_population(self, x: np.ndarray, bias_in: Optional[np.ndarray], P: int) -> np.ndarray:
        """netx's Input block over P steps: LIF with the per-sample bias ``bias_in`` (B, n) mantissas (int16 as
        Lava stores them) and ``x`` (B, T, n) added to a_in for the first T steps; (P, B, n) float32 spikes."""
        pop = self.input_pop
        b, T = x.shape[:2]
        n = pop.size
        flat = x.reshape(b, T, n).astype(np.int64)
        bias = pop.bias if bias_in is None else lr.effective_bias(
            ((np.asarray(bias_in).reshape(b, n).astype(np.int64) + 2**15) % 2**16) - 2**15,
            self.network.input_neurons.bias_exp)
        u = np.zeros((b, n), dtype=np.int64)
        v = np.zeros((b, n), dtype=np.int64)
        S = np.zeros((P, b, n), dtype=np.float32)
        resets = self._resets(0, P)
        zero = np.zeros((b, n), dtype=np.int64)
        for s in range(P):
            if resets is not None and resets[s]:
                u[...] = 0
                v[...] = 0
            a = flat[:, s] if s < T else zero
            S[s] = lr.lif_step(u, v, a, pop.du_mult, pop.dv_mult, bias, pop.vth)
        return S

    def run_batch(self, x: np.ndarray, record_state: bool = False, _source=None,
                  noise: Optional[list[Optional[LayerInjection]]] = None,
                  record_spikes: bool = False, bias_in: Optional[np.ndarray] = None,
                  traces: Optional[list] = None):
        """``x`` integer (B, T, *input_shape) -> (out spikes, counts, us, vs, per-layer spikes or None).

        ``traces``: a dict whose keys are the layers to trace; each receives (u, v) after every step,
        both (B, P, n) int64.

        ``us``/``vs`` hold every layer's final state with ``record_state``; without
        it ``us`` is empty and ``vs`` holds only the output layer's final v (others
        None) for a potential readout, else nothing.

        ``x`` must be validated by the caller except for its value range, which
        is checked here on the distinct steps (``_source``: the whole input, for
        :func:`check_inputs`' error message). ``noise``: per layer this batch's
        :class:`~neurodeploy.backends.injection.LayerInjection` (arrays ``(B, T + L, n)``)
        or None."""
        compiled = self._compiled_ok(noise, traces, bias_in)
        with _COUNT_LOCK:                             # for --verbose: which LIF path ran
            runs = self.__dict__.setdefault("_lif_batches", {})
            key = "compiled kernel (numba)" if compiled else "numpy"
            runs[key] = runs.get(key, 0) + 1
        if compiled:
            return self._run_batch_compiled(x, record_state, _source, record_spikes)
        injections = noise if noise is not None else [None] * len(self.layers)
        b, T = x.shape[:2]
        L = len(self.layers)
        P = T + self.network.latency                  # simulated steps per sample
        flat = x.reshape(b, T, -1)
        reps = _repeats(flat)
        distinct = sorted(set(reps))
        # the first layer's input: step s acts at step s + 1; repeated steps share one drive
        if len(distinct) == 1:
            rows = flat[:, distinct[0]]
        else:                                         # time-major rows; one copy when every step is distinct
            picked = flat if len(distinct) == T else flat[:, distinct]
            rows = np.ascontiguousarray(picked.transpose(1, 0, 2)).reshape(len(distinct) * b, -1)
        if rows.dtype == np.bool_:
            rows = rows.view(np.uint8)
        lo, hi = rows.min(), rows.max()               # every input value occurs in a distinct step
        if lo < 0 or hi > self.max_in:
            check_inputs(self.network, x if _source is None else _source)   # raises, naming the values
            raise BackendError(f"inputs span {lo}..{hi}, expected 0..{self.max_in}")
        counts = np.zeros((b, L), dtype=np.int64)
        us, vs = [], []
        spikes = [] if record_spikes else None
        S, silent = None, []                          # the previous layer's spikes, steps known silent
        prev_spikes = None                            # their number per step (picks the sum's path)
        pop = self.input_pop is not None
        if pop:                                       # netx's Input block: its spikes feed layer 0
            S = self._input_population(x, bias_in, P)
            silent = [not S[s].any() for s in range(P)]
        for li, (ff, rec, nrn) in enumerate(self.layers):
            drives = [None] * P
            if isinstance(ff, _DelaySynapse):         # every step's input, each delay slot shifted on its own
                src = flat.transpose(1, 0, 2) if li == 0 and not pop else S
                D = ff.drives(src, b, P)
                drives = list(D)
            elif li == 0 and not pop:
                density = None if ff.kind != "dense" else np.count_nonzero(rows) / max(rows.size, 1)
                D = ff.drive(rows, density).reshape(len(distinct), b, nrn.size)
                views = list(D)                       # one object per distinct step
                for t in range(T):
                    drives[t + 1] = views[distinct.index(reps[t])]
            else:
                active = [s for s in range(P - 1) if not silent[s]]
                D = None
                if active:
                    s0, s1 = active[0], active[-1] + 1
                    block = S[s0:s1].reshape((s1 - s0) * b, -1)
                    density = None if prev_spikes is None else float(prev_spikes[s0:s1].sum()) / max(block.size, 1)
                    D = ff.drive(block, density).reshape(s1 - s0, b, nrn.size)
                    views = list(D)
                    for s in active:
                        drives[s + 1] = views[s - s0]
            amax = 0.0 if D is None else max(float(D.max()), -float(D.min())) / _ACT
            a_bound = amax + (rec.bound if rec is not None else 0)
            inj = injections[li]
            if inj is not None:                       # (P, b, n), time-major like the spikes
                inj = inj.map(lambda arr: np.ascontiguousarray(np.moveaxis(arr, 1, 0)))
            a_add, v_add, drop = (None, None, None) if inj is None else (inj.a_in, inj.v, inj.keep)
            resets = self._resets(li + pop, P)
            traced = traces is not None and li in traces
            if resets is not None or traced:          # netx's staggered reset or a trace: the general step
                tr = None if not traced else (np.zeros((P, b, nrn.size), np.int64),
                                              np.zeros((P, b, nrn.size), np.int64),
                                              {k: np.zeros((b, nrn.size), np.int64) for k in ("u_wrap", "v_clip")})
                S, silent, u, v = self._lif_general(nrn, rec, drives, b, P, a_noise=a_add, v_noise=v_add,
                                                    rec_keep=drop, resets=resets, trace=tr)
                if tr is not None:
                    traces[li] = (tr[0].transpose(1, 0, 2), tr[1].transpose(1, 0, 2), tr[2])
            elif a_add is not None or v_add is not None or (drop is not None and rec is not None):
                # injected input or voltage, or masked recurrent spikes: the general int64 step
                S, silent, u, v = self._lif_general(nrn, rec, drives, b, P, a_noise=a_add, v_noise=v_add,
                                                    rec_keep=drop)
            elif FAST_A_LIMIT > 0 and not nrn.per_neuron and ((nrn.du_mult == 0 and rec is None)
                                       or (a_bound < FAST_A_LIMIT and nrn.bias_bound < FAST_BIAS_LIMIT)):
                S, silent, u, v = self._lif_fast(nrn, rec, drives, b, P, a_bound)
            else:
                S, silent, u, v = self._lif_general(nrn, rec, drives, b, P)
            flat_s = S.reshape(P * b, nrn.size)
            per_step = flat_s @ np.ones(nrn.size, dtype=np.float32)
            prev_spikes = per_step.reshape(P, b).sum(axis=1, dtype=np.float64)   # the next layer's activity
            counts[:, li] = per_step.reshape(P, b).sum(axis=0, dtype=np.float64).astype(np.int64)
            if record_state:
                us.append(u.astype(np.int64))
                vs.append(v.astype(np.int64))
            elif li == L - 1 and self.network.readout == "potential":
                vs = [None] * (L - 1) + [v.astype(np.int64)]   # the readout: the output layer's final v
            if spikes is not None:                    # the neurons' own spikes, before any drop
                spikes.append(S.transpose(1, 0, 2).astype(np.uint8))
            if li == L - 1:
                out = S.transpose(1, 0, 2).astype(np.uint8)   # the readout: the neurons' own spikes
            if drop is not None:                      # keep mask: the next layer gets the kept spikes
                S = S * drop
        return out, counts, us, vs, spikes

    # -- the compiled path ---------------------------------------------------------
    def _compiled_ok(self, noise, traces, bias_in) -> bool:
        """The fused kernels run this batch: numba is there, no injections, traces, input population,
        delays or sigma-delta layers (those keep the numpy paths)."""
        if not (COMPILED and kernels.AVAILABLE and FAST_A_LIMIT > 0):
            return False
        if traces is not None or bias_in is not None or self.input_pop is not None:
            return False
        if noise is not None and any(inj is not None for inj in noise):
            return False
        return all(isinstance(ff, _Synapse) for ff, _, _ in self.layers)

    def _kernel_params(self, li: int) -> dict:
        """Per layer, the arrays the kernels take (built once)."""
        cache = self.__dict__.setdefault("_kparams", {})
        if li not in cache:
            ff, rec, nrn = self.layers[li]
            n = nrn.size

            def per_neuron(x):
                return np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.int64), (n,)))
            p = {"du": per_neuron(nrn.du_mult), "dv": per_neuron(nrn.dv_mult), "vth": per_neuron(nrn.vth),
                 "bias": per_neuron(nrn.bias), "has_rec": rec is not None,
                 "w_rec": np.zeros((1, 1), np.int64) if rec is None else np.ascontiguousarray(rec.weight.T.astype(np.int64)),
                 "rec_exp": 0 if rec is None else int(rec.exp)}
            cache[li] = p
        return cache[li]

    def _run_batch_compiled(self, x: np.ndarray, record_state: bool, _source, record_spikes: bool):
        """:meth:`run_batch` on the fused kernels: per layer one exact GEMM over every (sample, step) row
        (accumulate.py's cheapest path), then the LIF over all steps in one compiled loop."""
        b, T = x.shape[:2]
        L = len(self.layers)
        P = T + self.network.latency
        flat = x.reshape(b, T, -1)
        if flat.dtype == np.bool_:
            flat = flat.view(np.uint8)
        reps = _repeats(flat)
        distinct = sorted(set(reps))
        # layer 0's rows, sample-major: every step, or the distinct ones (one copy)
        if len(distinct) == T:
            rows = flat.reshape(b * T, -1)
        else:
            rows = np.ascontiguousarray(flat[:, distinct]).reshape(b * len(distinct), -1)
        # every input value occurs in a distinct step
        if rows.size and rows.dtype.isnative and rows.dtype.kind in "iu":
            lo, hi, nonzeros = kernels.scan_rows(rows)
        else:                                   # numba takes native integers only (the CLI reads any .npy)
            lo, hi = (rows.min(), rows.max()) if rows.size else (0, 0)
            nonzeros = np.count_nonzero(rows)
        if lo < 0 or hi > self.max_in:
            check_inputs(self.network, x if _source is None else _source)   # raises, naming the values
            raise BackendError(f"inputs span {lo}..{hi}, expected 0..{self.max_in}")
        # layer 0's step s + 1 takes input step s; its repeats share one row
        src0 = np.full(P, -1, np.int64)
        for t in range(T):
            src0[t + 1] = distinct.index(reps[t])
        counts = np.zeros((b, L), dtype=np.int64)
        us, vs = [], []
        spikes = [] if record_spikes else None
        out = S_in = None
        for li, (ff, rec, nrn) in enumerate(self.layers):
            p = self._kernel_params(li)
            resets = self._resets(li, P)
            resets = np.zeros(P, np.bool_) if resets is None else np.asarray(resets, np.bool_)
            n = nrn.size
            S = np.empty((b, P, n), np.uint8)
            u = np.empty((b, n), np.int64)
            v = np.empty((b, n), np.int64)
            step_counts = np.zeros((b, P), np.int32)
            if li == 0:
                src, R_rows = src0, rows
                density = int(nonzeros) / max(rows.size, 1)
            else:
                src = np.arange(-1, P - 1, dtype=np.int64)       # step s takes the spikes of s - 1
                R_rows = S_in.reshape(b * P, -1)
            if ff.kind == "dense":
                R, factor = ff.acc.unscaled(R_rows, density)
            else:
                R, factor = ff._conv_sum(R_rows), 1
            kernels.lif_from_sums(R.reshape(b, -1, n), src, int(factor), ff.graded, ff.exp, p["w_rec"],
                                  p["rec_exp"], p["has_rec"], p["du"], p["dv"], p["bias"], p["vth"], resets,
                                  S, u, v, step_counts)
            counts[:, li] = step_counts.sum(axis=1)
            density = float(step_counts.sum()) / max(S.size, 1)
            if record_state:
                us.append(u)
                vs.append(v)
            elif li == L - 1 and self.network.readout == "potential":
                vs = [None] * (L - 1) + [v]
            if spikes is not None:
                spikes.append(S)
            out = S_in = S
        return out, counts, us, vs, spikes

    @staticmethod
    def _lif_fast(nrn: _Neurons, rec: Optional[_Synapse], drives: list, b: int, P: int, a_bound: float):
        """LIF over P steps in float64 (see the module doc for why it is exact).

        ``drives[s]``: ``a_in << 6`` of step s from the feed-forward synapse
        (float64 (b, n), shared between repeated steps) or None for zero;
        ``a_bound`` bounds ``|a_in|`` (feed-forward in this batch + recurrent)."""
        n = nrn.size
        S = np.empty((P, b, n), dtype=np.float32)    # every step is written
        silent = [False] * P
        v = np.zeros((b, n))
        keep = np.empty((b, n))
        cu, cv = nrn.du_mult / _UNITY, nrn.dv_mult / _UNITY
        stateless = nrn.du_mult == 0 and rec is None  # u = f(a_in) alone: once per distinct drive
        if stateless:                                 # any int32 drive
            a64_bound = _ACT * a_bound * _MARGIN
            u_wrap32 = a64_bound >= 2.0 ** 31         # a << 6 wraps at 32 bit
            u_bound = 2.0 ** 31 if u_wrap32 else a64_bound   # the one-shot wrap never grows |u| past this
        else:                                         # a_bound < FAST_A_LIMIT: |u| stays <= 2**23
            u_wrap32 = False
            u_bound = _ACT * a_bound * _geometric(cu, P) * _MARGIN
        wrap = u_bound >= _U_LIM                      # else u never leaves (-2**23, 2**23)
        u_bound = min(u_bound, 2.0 ** 31) if stateless else min(u_bound, _U_LIM)
        v_wrap32 = _V_LIM + u_bound + nrn.bias_bound >= 2.0 ** 31   # Lava's int32 sum for v can wrap
        v_bound = (u_bound + nrn.bias_bound) * _geometric(cv, P) * _MARGIN
        clip = v_wrap32 or v_bound >= _V_LIM          # only the lower clip can matter
        bias = nrn.bias_f if nrn.bias_bound else None
        vth = float(nrn.vth)
        if stateless:
            done = set()
            for d in drives:
                if d is not None and id(d) not in done:
                    done.add(id(d))
                    if u_wrap32:
                        _wrap32f(d, keep)
                    if wrap:
                        _oneshot24(d, keep)
            u = None
        else:
            u = np.zeros((b, n))
        for s in range(P):
            d = drives[s]
            if rec is not None and s > 0 and not silent[s - 1]:
                r = rec.drive(S[s - 1])
                d = r if d is None else np.add(r, d, out=r)   # the InPort's sum (no wrap here)
            if stateless:
                u = d
            else:
                if cu != 0.0:
                    np.multiply(u, cu, out=u)
                    np.trunc(u, out=u)
                else:
                    u.fill(0.0)
                if d is not None:
                    u += d
                if wrap:
                    _oneshot24(u, keep)
            if cv != 1.0:
                np.multiply(v, cv, out=v)
                np.trunc(v, out=v)
            if u is not None:
                v += u
            if bias is not None:
                v += bias
            elif u is None:                           # v only decays: it cannot pass vth
                silent[s] = True
                S[s] = 0.0
                continue
            if v_wrap32:
                _wrap32f(v, keep)
            if clip:
                np.maximum(v, -_V_LIM, out=v)
            np.less_equal(v, vth, out=keep)
            v *= keep                                 # reset to 0 where it spiked
            np.subtract(1.0, keep, out=S[s])          # the spikes, as float32 for the next matmul
        if u is None:
            u = np.zeros((b, n))
        return S, silent, u, v

    @staticmethod
    def _lif_general(nrn: _Neurons, rec: Optional[_Synapse], drives: list, b: int, P: int,
                     a_noise: Optional[np.ndarray] = None, v_noise: Optional[np.ndarray] = None,
                     rec_keep: Optional[np.ndarray] = None, resets: Optional[list[bool]] = None,
                     trace: Optional[tuple] = None):
        """LIF over P steps in int64 with every int32 wrap of Lava's arithmetic.

        Injections (``(P, b, n)``): ``a_noise`` joins the int32 sum of the
        synaptic inputs, ``v_noise`` the int32 sum for v, ``rec_keep`` masks
        the spikes the recurrent synapse receives. ``trace``: two (P, b, n)
        arrays that receive u and v after every step (what Lava's Vars hold then), and a dict that
        receives the per-(sample, neuron) counts of u wraps and v clips (``"u_wrap"``, ``"v_clip"``)."""
        n = nrn.size
        S = np.zeros((P, b, n), dtype=np.float32)
        u = np.zeros((b, n), dtype=np.int64)
        v = np.zeros((b, n), dtype=np.int64)
        events = None if trace is None else trace[2]
        for s in range(P):
            if resets is not None and resets[s]:      # LIFReset: before the step's update
                u[...] = 0
                v[...] = 0
            d = drives[s]
            a = np.zeros((b, n), dtype=np.int64) if d is None else (d * (1.0 / _ACT)).astype(np.int64)
            if rec is not None and s > 0:
                prev = S[s - 1] if rec_keep is None else S[s - 1] * rec_keep[s - 1]
                a = wrap32(a + rec.apply(prev))       # the InPort adds both in int32
            if a_noise is not None:
                a = wrap32(a + a_noise[s])            # one more input of the InPort's int32 sum
            S[s] = nrn.step(u, v, a, None if v_noise is None else v_noise[s], events)
            if trace is not None:
                trace[0][s] = u
                trace[1][s] = v
        return S, [False] * P, u, v

    # -- many samples -------------------------------------------------------------
    def _validated(self, inputs) -> np.ndarray:
        """``inputs`` as an array; shape and dtype checked here, values per batch in
        :meth:`run_batch` (floats: fully by :func:`check_inputs`, which also checks they are integers)."""
        return shaped_inputs(self.network, inputs)

    def run(self, inputs, *, batch_size: int = DEFAULT_BATCH_SIZE, record_state: bool = False,
            progress: bool = False, threads: Optional[int] = None, step_noise=None,
            sample_ids=None, record_spikes: bool = False, bias=None,
            record_traces=False) -> RunResult:
        """Run encoded ``inputs`` (samples, T, *input_shape) in batches of ``batch_size``.

        ``record_traces`` (True, or layer indices) keeps those layers' u and v after every step
        (``RunResult.layer_u`` / ``layer_v``: per layer (samples, T + latency, n) int64 in IR order, None
        for a layer not traced; traced layers run the general int64 step), as the Lava backend reads
        them from Lava's Vars.

        ``bias`` (samples, *input_shape), integers in the input's (C, H, W) order: the bias mantissas of a
        network's input population (``network.input_neurons``, netx's Input block), held for the whole run
        of each sample (how lava-dl's tinynet and pilotnet_lif tests feed images); None: its own bias.

        ``threads`` batches run at once (numpy, onnxruntime and the compiled kernels release the GIL;
        ``None``, the default: one per usable CPU). With more than one, BLAS and the int8 GEMMs run
        single-threaded meanwhile so the threads do not oversubscribe the cores; the compiled LIF
        kernels are single-threaded, so batches in parallel are what uses every core
        (``benchmarks/emulator_vs_lava.py`` measures both). Results do not depend on either setting
        (integer arithmetic throughout).

        ``step_noise``: a :class:`~neurodeploy.backends.injection.StepInjector`
        (e.g. :class:`~neurodeploy.noise.step.StepNoise`: spike-drop, current-noise,
        membrane-noise), its injections drawn per sample from ``sample_ids``
        (data-set indices of the inputs; default ``0..n-1``), so batching does not
        change the numbers; a layer with an ``a_in`` or ``v`` injection runs the
        general int64 step (a ``keep`` mask of a feed-forward layer only masks what
        the next layer receives). Semantics: :mod:`neurodeploy.backends.injection`.

        ``record_spikes`` keeps every layer's spikes at every step
        (``RunResult.layer_spikes``), e.g. to find where two backends part ways."""
        net = self.network
        x = self._validated(inputs)
        n, T = x.shape[:2]
        bias = check_bias(net, bias, n)
        ids = sample_ids_of(sample_ids, n)
        layout = injection_layout(net, step_noise)
        noisy = any(layout)
        L = len(self.layers)
        P = T + net.latency
        outs = np.zeros((n, P, net.output_size), dtype=np.uint8)
        counts = np.zeros((n, L), dtype=np.int64)
        us = [np.zeros((n, nrn.size), dtype=np.int64) for _, _, nrn in self.layers] if record_state else None
        vs = [np.zeros((n, nrn.size), dtype=np.int64) for _, _, nrn in self.layers] if record_state else None
        potential = net.readout == "potential"
        out_v = np.zeros((n, net.output_size), dtype=np.int64) if potential else None
        spk = [np.zeros((n, P, nrn.size), dtype=np.uint8) for _, _, nrn in self.layers] \
            if record_spikes else None
        traced = trace_layers(record_traces, L)
        tr_u = [np.zeros((n, P, nrn.size), dtype=np.int64) if li in traced else None
                for li, (_, _, nrn) in enumerate(self.layers)] if traced else None
        tr_v = [None if a is None else np.zeros_like(a) for a in tr_u] if traced else None
        events = [None if li not in traced else {k: np.zeros((n, nrn.size), np.int64) for k in ("u_wrap", "v_clip")}
                  for li, (_, _, nrn) in enumerate(self.layers)] if traced else None
        batch_size = max(1, int(batch_size))
        starts = list(range(0, n, batch_size))
        threads = min(len(starts), _usable_cpus() if threads is None else max(1, int(threads)))
        bar = None
        if progress:
            from rich.progress import Progress
            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task("emulator", total=n)

        def batch_noise(start):
            if not noisy:
                return None
            return draw_injections(net, step_noise, ids[start:start + batch_size], layout)

        def one_batch(start):
            tr = dict.fromkeys(traced) if traced else None
            res = self.run_batch(x[start:start + batch_size], record_state, x, batch_noise(start),
                                 record_spikes, None if bias is None else bias[start:start + batch_size], tr)
            return (*res, tr)

        def store(start, result):
            stop = min(n, start + batch_size)
            o, c, bu, bv, bs, tr = result
            if tr:
                for li, (bu_t, bv_t, ev) in tr.items():
                    tr_u[li][start:stop] = bu_t
                    tr_v[li][start:stop] = bv_t
                    for k, arr in ev.items():
                        events[li][k][start:stop] = arr
            outs[start:stop] = o
            counts[start:stop] = c
            if record_state:
                for li in range(L):
                    us[li][start:stop] = bu[li]
                    vs[li][start:stop] = bv[li]
            if record_spikes:
                for li in range(L):
                    spk[li][start:stop] = bs[li]
            if potential:
                out_v[start:stop] = bv[-1]
            if bar is not None:
                bar.update(task, advance=stop - start)

        try:
            if threads <= 1:
                for start in starts:
                    store(start, one_batch(start))
            else:
                from collections import deque
                from concurrent.futures import ThreadPoolExecutor

                with _blas_threads(1), ThreadPoolExecutor(threads, thread_name_prefix="emulator",
                                                           initializer=set_thread_budget, initargs=(1,)) as pool:
                    pending = deque()                 # at most 2 batches per thread in flight
                    try:
                        for start in starts:
                            pending.append((start, pool.submit(one_batch, start)))
                            if len(pending) >= 2 * threads:
                                store(*_result(pending.popleft()))
                        while pending:
                            store(*_result(pending.popleft()))
                    finally:
                        for _, fut in pending:
                            fut.cancel()
        finally:
            if bar is not None:
                bar.stop()
        return RunResult(outs, counts, us, vs, latency=net.latency, time_steps=T, layer_spikes=spk,
                         readout=net.readout, output_v=out_v, layer_u=tr_u, layer_v=tr_v, layer_events=events)


def _result(item):
    start, fut = item
    return start, fut.result()


def _usable_cpus() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _blas_threads(limit: int):
    """Context limiting BLAS to ``limit`` threads (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        from contextlib import nullcontext
        return nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")


def run_emulator(network: Network, inputs, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 record_state: bool = False, progress: bool = False,
                 threads: Optional[int] = None, step_noise=None, sample_ids=None,
                 record_spikes: bool = False, bias=None, record_traces=False) -> RunResult:
    """Run encoded ``inputs`` (samples, T, *input_shape) through ``network``; see module doc
    and :meth:`Emulator.run` (``step_noise``, ``sample_ids``, ``record_spikes``, ``bias``,
    ``record_traces``); a sigma-delta network runs on :class:`SigmaDeltaEmulator`."""
    if isinstance(network, Network) and is_sigma_delta(network):
        return SigmaDeltaEmulator(network).run(inputs, batch_size=batch_size, record_state=record_state,
                                               record_spikes=record_spikes, step_noise=step_noise, bias=bias,
                                               record_traces=record_traces)
    return Emulator(network).run(inputs, batch_size=batch_size, record_state=record_state,
                                 progress=progress, threads=threads, step_noise=step_noise,
                                 sample_ids=sample_ids, record_spikes=record_spikes, bias=bias,
                                 record_traces=record_traces)


# --------------------------------------------------------------------------- sigma-delta (SDNN) networks
# Lava 0.10's lava.proc.sdn fixed_pt models (PyDeltaModelFixed, PySigmaDeltaModelFixed, PySigmaModelFixed) with
# the synapses netx builds for them: every state and message is an int32 numpy array, so the arithmetic below
# runs on int32 arrays with the same operations (wrapping exactly where Lava's do).

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_CONV_BITS = 24             # PyConvModelFixed: signed_clamp(a_buf, 24)


def _wrap24(x: np.ndarray) -> np.ndarray:
    """Lava's ``conv.utils.signed_clamp(x, 24)``: two's complement wrap to 24 bits."""
    half = 1 << (_CONV_BITS - 1)
    return ((x + half) % (1 << _CONV_BITS)) - half


def sigma_delta_conv_weights(index: int, layer: ConvLayer) -> np.ndarray:
    """The integer kernel Lava's Conv uses for an IR conv layer of a sigma-delta network (netx hands it the file's
    weights unchanged): the effective weights times ``2**weight_exp``, which must be integers in int32."""
    eff = effective_weights(layer.weight, layer.sign_mode, layer.num_weight_bits)
    exp = int(layer.weight_exp)
    if exp < 0 and np.any(eff % (1 << -exp)):
        raise BackendError(f"layer {index} ({layer.name or 'conv'}): effective weights times 2**{exp} are not "
                           f"integers; Lava's Conv (what netx builds) takes integer weights and no exponent")
    plain = eff << exp if exp >= 0 else eff >> -exp
    if plain.size and int(np.abs(plain).max()) > INT32_MAX:
        raise BackendError(f"layer {index} ({layer.name or 'conv'}): conv weights up to "
                           f"{int(np.abs(plain).max())} do not fit Lava's int32 kernel")
    return plain


class _SigmaDeltaSynapse:
    """The synapse into one sigma-delta layer, as Lava computes it: ``Dense`` (``PyDenseModelBitAcc``: int32 dot
    of graded messages, then the exponent's int32 shift; binary input: the int64 sum of the active weights) or
    ``Conv`` (``PyConvModelFixed``: the float64 correlation of the raw kernel, cast to int32, wrapped to 24 bits).
    One step of delay, as every Lava synapse."""

    def __init__(self, index: int, layer, graded: bool, max_in: int):
        self.index, self.graded = index, graded
        if isinstance(layer, DenseLayer):
            self.conv = None
            self.syn = _Synapse.build(layer.weight, layer.sign_mode, layer.num_weight_bits, layer.weight_exp,
                                      graded, max_in)
            return
        plain = sigma_delta_conv_weights(index, layer)
        o, cg, kh, kw = plain.shape
        bound = int(np.abs(plain).reshape(o, -1).sum(axis=1).max(initial=0)) * max_in
        dtype = np.float64 if bound < (1 << 53) else np.int64     # float64: every partial sum exact
        g = int(layer.groups)
        mat = np.ascontiguousarray(plain.reshape(g, o // g, cg * kh * kw).astype(dtype))
        self.conv = layer
        self.syn = _Synapse("conv", plain, 0, graded, dtype, mat, int(np.prod(layer.out_shape)), bound, layer)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """a_out (int32, (b, n_out)) for the messages ``x`` (int32, (b, n_in))."""
        if not self.graded:
            x = (x != 0).astype(np.int32)        # Lava: s_in.astype(bool)
        if self.conv is None:
            return self.syn.apply(x).astype(np.int32)
        s = self.syn._sum(x).astype(np.int64)
        if s.size and (int(s.max()) > INT32_MAX or int(s.min()) < INT32_MIN):
            raise BackendError(f"layer {self.index} ({self.conv.name or 'conv'}): a conv sum reaches "
                               f"{int(np.abs(s).max())}, beyond int32, where Lava's Conv casts its float64 sum to "
                               f"int32 (undefined); the sigma-delta messages into it are too large")
        return _wrap24(s).astype(np.int32)


class _SigmaDeltaPopulation:
    """One population's Delta / SigmaDelta / Sigma dynamics on int32 states (``(b, n)``; see
    :class:`~neurodeploy.ir.SigmaDeltaNeurons`)."""

    def __init__(self, nrn: SigmaDeltaNeurons, b: int):
        k = nrn.scale
        self.kind = nrn.kind
        self.shift_in = np.int32(int(nrn.spike_exp) + int(nrn.state_exp))
        self.state_exp = np.int32(nrn.state_exp)
        self.vth = np.int32(int(nrn.vth) * k)                        # Python int product, stored as int32
        self.bias = wrap32(np.asarray(nrn.bias_mant, dtype=np.int64) * k).astype(np.int32)   # int32 multiply
        n = nrn.size
        self.sigma = np.zeros((b, n), dtype=np.int32)
        self.act = np.zeros((b, n), dtype=np.int32)
        self.residue = np.zeros((b, n), dtype=np.int32)

    def step(self, a_in: np.ndarray) -> np.ndarray:
        """One step for int32 ``a_in`` (b, n); returns the int32 message sent."""
        if self.kind == "sigma":
            self.sigma = a_in + self.sigma
            return self.sigma.copy()
        if self.kind == "delta":
            act = np.left_shift(a_in, self.shift_in)
        else:
            self.sigma = a_in + self.sigma
            act = np.maximum(self.sigma + self.bias, 0)               # ReLU
        delta = act - self.act + self.residue
        s = np.where(np.abs(delta) >= self.vth, delta, np.int32(0))  # np.abs(INT32_MIN) stays negative, as in Lava
        self.residue = delta - s
        self.act = act
        return np.right_shift(s, self.state_exp)


@dataclass
class SigmaDeltaResult(RunResult):
    """A :class:`~neurodeploy.backends.base.RunResult` of a sigma-delta network.

    ``output_spikes`` and ``layer_spikes`` hold graded messages (int64: what each
    population sends per step; a ``sigma`` output sends its value); ``spike_counts``
    counts the nonzero ones. ``final_u`` / ``final_v`` (``record_state``) are each
    layer's ``sigma`` / ``act`` after the last step (a ``sigma`` layer: its value
    twice). ``input_messages`` (``record_spikes``, an input population): the Delta
    encoder's messages per step; ``layer_sigma`` (``record_state``, emulator only):
    each layer's ``sigma`` after every step, (samples, steps, n)."""

    input_messages: Optional[np.ndarray] = None
    layer_sigma: Optional[list] = None


def check_sigma_delta_inputs(network: Network, inputs) -> np.ndarray:
    """Validated int64 inputs (samples, T, *input_shape) of a sigma-delta network: with a Delta input population
    any int32 values (added to its a_in), otherwise what :func:`check_inputs` allows; one-line BackendError."""
    if network.input_neurons is None:
        return check_inputs(network, inputs)
    arr = np.asarray(inputs)
    in_shape = tuple(int(s) for s in network.input_shape)
    T = int(network.time_steps)
    if arr.ndim != 2 + len(in_shape) or arr.shape[1] != T or tuple(arr.shape[2:]) != in_shape or arr.shape[0] < 1:
        raise BackendError(f"inputs have shape {arr.shape}, expected (samples, {T}, {', '.join(map(str, in_shape))}) "
                           f"(samples, time_steps, *network.input_shape)")
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise BackendError(f"inputs have dtype {arr.dtype}, expected integers")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise BackendError(f"inputs must be integer values; got {arr[idx]!r} at index {idx} (dtype {arr.dtype})")
    if arr.size and (arr.min() < INT32_MIN or arr.max() > INT32_MAX):
        raise BackendError(f"inputs span {arr.min()}..{arr.max()}, expected int32 values (the a_in of the "
                           f"sigma-delta input population)")
    return arr.astype(np.int64)


def sigma_delta_first_synapse(network: Network) -> tuple[bool, int]:
    """(graded, largest |value|) of what the first synapse of a sigma-delta network receives: the input
    population's int32 messages, or the network's input encoding."""
    if network.input_neurons is not None:
        return True, 1 << 31
    return network.input_encoding.kind == "graded", input_max(network)


class SigmaDeltaEmulator:
    """A sigma-delta network (:func:`~neurodeploy.ir.is_sigma_delta`) compiled for the emulator.

    Same time base as :class:`Emulator`: ``T + latency`` steps, inputs at steps
    ``0..T-1`` and zeros after; an input population (Delta) gets them added to its
    ``a_in`` at the same step, otherwise the first synapse receives them (binary or
    graded by the input encoding). Bit-exact with Lava's sdn, Dense and Conv
    fixed_pt models (``SigmaDeltaResult``)."""

    def __init__(self, network: Network):
        check_network(network)
        if not is_sigma_delta(network):
            raise BackendError("SigmaDeltaEmulator runs sigma-delta networks; this one has CUBA neurons (use Emulator)")
        self.network = network
        graded0, max0 = sigma_delta_first_synapse(network)
        self.synapses = [_SigmaDeltaSynapse(i, layer, graded0 if i == 0 else True, max0 if i == 0 else 1 << 31)
                         for i, layer in enumerate(network.layers)]

    def run(self, inputs, *, batch_size: int = DEFAULT_BATCH_SIZE, record_state: bool = False,
            record_spikes: bool = False, progress: bool = False, threads: Optional[int] = 1, step_noise=None,
            sample_ids=None, bias=None, record_traces=False) -> SigmaDeltaResult:
        """Run ``inputs`` (samples, T, *input_shape) in batches; ``threads``, ``progress`` and ``sample_ids`` are
        accepted for call compatibility (one thread; no injections to draw). ``record_traces`` (True or layer
        indices): those layers' ``sigma`` (``layer_u``) and ``act`` (``layer_v``; a Sigma layer: its value)
        after every step."""
        net = self.network
        if step_noise is not None:
            raise BackendError("step noise injections (spike drop, current / membrane noise) act on CUBA neurons; "
                               "this network has sigma-delta neurons")
        if bias is not None:
            raise BackendError("bias= sets a CUBA input population's bias; this network's input population is a "
                               "sigma-delta Delta encoder: pass the image as inputs (added to its a_in)")
        x = check_sigma_delta_inputs(net, inputs)
        n, T = x.shape[:2]
        L = len(net.layers)
        P = T + L
        sizes = [int(np.prod(layer.out_shape)) for layer in net.layers]
        spk = [np.zeros((n, P, s), dtype=np.int64) for s in sizes]
        counts = np.zeros((n, L), dtype=np.int64)
        fin_u = [np.zeros((n, s), dtype=np.int64) for s in sizes] if record_state else None
        fin_v = [np.zeros((n, s), dtype=np.int64) for s in sizes] if record_state else None
        traced = trace_layers(record_traces, L)
        sig = [np.zeros((n, P, s), dtype=np.int64) if record_state or li in traced else None
               for li, s in enumerate(sizes)]
        acts = [np.zeros((n, P, s), dtype=np.int64) if li in traced else None for li, s in enumerate(sizes)]
        pop_msgs = np.zeros((n, P, int(np.prod(net.input_shape))), dtype=np.int64) \
            if record_spikes and net.input_neurons is not None else None
        for start in range(0, n, max(1, int(batch_size))):
            xb = x[start:start + max(1, int(batch_size))]
            b = xb.shape[0]
            flat = xb.reshape(b, T, -1)
            pop = None if net.input_neurons is None else _SigmaDeltaPopulation(net.input_neurons, b)
            pops = [_SigmaDeltaPopulation(layer.neurons, b) for layer in net.layers]
            bufs = [np.zeros((b, s), dtype=np.int32) for s in sizes]       # each synapse's a_buff
            zero_in = np.zeros((b, flat.shape[2]), dtype=np.int64)
            for t in range(P):
                src = flat[:, t] if t < T else zero_in
                msg = pop.step(src.astype(np.int32)) if pop is not None else src
                if pop_msgs is not None:
                    pop_msgs[start:start + b, t] = msg
                for li, (syn, p) in enumerate(zip(self.synapses, pops)):
                    a_in = bufs[li]                     # sent first: what the synapse summed last step
                    bufs[li] = syn(msg) if np.any(msg) else np.zeros_like(a_in)
                    msg = p.step(a_in)
                    spk[li][start:start + b, t] = msg
                    if sig[li] is not None:
                        sig[li][start:start + b, t] = p.sigma
                    if acts[li] is not None:
                        acts[li][start:start + b, t] = p.sigma if p.kind == "sigma" else p.act
            for li, p in enumerate(pops):
                counts[start:start + b, li] = np.count_nonzero(spk[li][start:start + b], axis=(1, 2))
                if record_state:
                    fin_u[li][start:start + b] = p.sigma
                    fin_v[li][start:start + b] = p.sigma if p.kind == "sigma" else p.act
        out_v = spk[-1][:, -1].copy() if net.readout == "potential" else None
        layer_u = [sig[li] if li in traced else None for li in range(L)] if traced else None
        layer_v = acts if traced else None
        return SigmaDeltaResult(spk[-1].copy(), counts, fin_u, fin_v, latency=net.latency, time_steps=T,
                                layer_spikes=spk if record_spikes else None, readout=net.readout, output_v=out_v,
                                layer_u=layer_u, layer_v=layer_v, input_messages=pop_msgs,
                                layer_sigma=sig if record_state else None)
