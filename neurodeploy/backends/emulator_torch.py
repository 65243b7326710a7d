"""The emulator in torch (CPU or CUDA): Lava 0.10's fixed-point semantics, bit-exact with the numpy emulator.

Same model as :mod:`neurodeploy.backends.emulator` (``PyDenseModelBitAcc``,
``PyLifModelBitAcc`` / ``PyLifResetModelBitAcc``, one step of delay per
synapse, netx's input population and staggered reset schedule, a potential
readout, spike-drop / current / membrane injections), written once in its
general form: every neuron update runs in int64 with each of Lava's int32
wraps and its 24-bit wrap of u (:func:`lif_step`, the torch twin of
:func:`neurodeploy.lava_rules.lif_step`). The compiled network (effective
weights, exponents, decays, thresholds, biases, sum bounds) comes from the
numpy emulator's own compiler, so both read a network identically.

Synaptic sums run as one GEMM over (samples x steps) for a feed-forward
layer and step by step for a recurrent synapse, in float32 / float64 where
the sum's bound proves them exact (below 2**24 / 2**53; any summation order,
so also on CUDA, where TF32 is switched off for these calls), else in int64
(CPU only: CUDA has no int64 GEMM; such a network is refused there, as is an
int64 convolution anywhere: torch has none).

``TorchEmulator(network, device="cpu" | "cuda").run(inputs, ...)`` returns the
same :class:`~neurodeploy.backends.base.RunResult` as :meth:`Emulator.run
<neurodeploy.backends.emulator.Emulator.run>`; ``simulate --backend emulator
--device cpu|cuda`` selects it. What it does not cover it refuses on one line.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import numpy as np

from .. import lava_rules as lr
from ..ir import ConvLayer, DenseLayer, Network, is_sigma_delta
from .base import (BackendError, RunResult, check_bias, check_inputs, check_network, input_max, reset_steps,
                   sample_ids_of, shaped_inputs)
from .emulator import _Neurons, _Synapse
from .injection import draw_injections, injection_layout

__all__ = ["TorchEmulator", "run_emulator_torch", "lif_step"]

DEFAULT_BATCH_SIZE = {"cpu": 512, "cuda": 8192}


def _torch():
    import torch

    return torch


def _wrap32(x):
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _decay(x, mult):
    y = x * mult
    return (y + ((y >> 63) & (lr.DECAY_UNITY - 1))) >> lr.DECAY_SHIFT


def lif_step(u, v, a_in, u_mult, v_mult, bias, vth, v_noise=None):
    """One ``PyLifModelBitAcc`` step on int64 tensors, in place on ``u``, ``v``; returns the spikes (bool)."""
    t = _wrap32(_decay(u, u_mult) + _wrap32(a_in << lr.ACT_SHIFT))
    t = t - ((t > lr.U_LIMIT).long() << lr.STATE_BITS)
    t = t + ((t <= -lr.U_LIMIT).long() << lr.STATE_BITS)
    u.copy_(t)
    total = _decay(v, v_mult) + t + bias
    if v_noise is not None:
        total = total + v_noise
    nv = _wrap32(total).clamp_(-lr.V_LIMIT, lr.V_LIMIT)
    s = nv > vth
    v.copy_(nv.masked_fill_(s, 0))
    return s


@contextmanager
def _exact_float_matmul(torch):
    """No TF32 (or reduced-precision reductions) inside: float32 GEMMs of small integers stay exact."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class _TorchSynapse:
    """A numpy-compiled :class:`~neurodeploy.backends.emulator._Synapse` on a torch device."""

    def __init__(self, syn: _Synapse, max_in: int, device, where: str):
        torch = _torch()
        self.kind, self.exp, self.graded, self.n_out = syn.kind, int(syn.exp), bool(syn.graded), int(syn.n_out)
        self.conv = syn.conv
        sum_bound = _sum_bound(syn, max_in)
        if sum_bound < (1 << 24) and device.type == "cpu":
            self.dtype = torch.float32
        elif sum_bound < (1 << 53):
            self.dtype = torch.float64
        elif syn.kind == "conv":
            raise BackendError(f"{where}: conv sums reach {sum_bound} (past 2**53, exact only in int64), and torch "
                               f"has no int64 convolution; use the numpy emulator (no --device)")
        elif device.type != "cpu":
            raise BackendError(f"{where}: sums reach {sum_bound} (past 2**53, exact only in int64), and CUDA has "
                               f"no int64 matrix product; use --device cpu")
        else:
            self.dtype = torch.int64
        w = torch.from_numpy(np.ascontiguousarray(syn.weight)).to(device)
        self.weight = w.to(self.dtype)
        self.mat = self.weight.T.contiguous() if syn.kind == "dense" else None

    def apply(self, x):
        """a_out (int64, int32 range) for input rows ``x`` (rows, n_in) of any numeric dtype."""
        torch = _torch()
        xs = x.to(self.dtype)
        if self.kind == "dense":
            s = xs @ self.mat
        else:
            layer = self.conv
            xs = xs.reshape(xs.shape[0], *layer.in_shape)
            s = torch.nn.functional.conv2d(xs, self.weight, stride=tuple(layer.stride),
                                           padding=tuple(layer.padding), dilation=tuple(layer.dilation),
                                           groups=int(layer.groups)).reshape(xs.shape[0], -1)
        s = s.to(torch.int64)
        if self.graded:                               # Lava's int32 dot
            s = _wrap32(s)
        s = s << self.exp if self.exp > 0 else s >> (-self.exp)
        return _wrap32(s)                             # the int32 a_out channel


def _sum_bound(syn: _Synapse, max_in: int) -> int:
    """Largest |sum| of ``syn`` before its exponent: the largest sum of |w| into one neuron times ``max_in``."""
    w = np.abs(np.asarray(syn.weight, dtype=np.int64))
    return int(w.reshape(w.shape[0], -1).sum(axis=1).max(initial=0)) * int(max_in)


class _TorchNeurons:
    def __init__(self, nrn: _Neurons, device):
        torch = _torch()

        def t(x):
            return torch.as_tensor(np.asarray(x, dtype=np.int64), device=device)

        self.u_mult, self.v_mult, self.vth = t(nrn.du_mult), t(nrn.dv_mult), t(nrn.vth)
        self.bias = t(nrn.bias)
        self.size = int(nrn.size)


class TorchEmulator:
    """A network compiled for the torch emulator on ``device`` ("cpu" or "cuda"); :meth:`run` takes encoded inputs."""

    def __init__(self, network: Network, device: str = "cpu"):
        torch = _torch()
        check_network(network)
        if device not in ("cpu", "cuda"):
            raise BackendError(f"device {device!r}: expected 'cpu' or 'cuda'")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("--device cuda: torch finds no CUDA device (torch.cuda.is_available() is False); "
                               "use --device cpu")
        self.device = torch.device(device)
        self.network = network
        self.max_in = input_max(network)
        source = network.metadata.get("source", "network") if isinstance(network.metadata, dict) else "network"
        graded = network.input_encoding.kind == "graded" and network.input_neurons is None
        self.input_pop = None if network.input_neurons is None else \
            _TorchNeurons(_Neurons.build(network.input_neurons), self.device)
        if is_sigma_delta(network):
            raise BackendError(f"{source}: sigma-delta (SDNN) neurons, which the torch emulator does not run; use "
                               f"the numpy emulator (the same numbers)")
        self.layers = []
        for i, layer in enumerate(network.layers):
            if not isinstance(layer, (DenseLayer, ConvLayer)):
                raise BackendError(f"{source}: layer {i} is a {type(layer).__name__}; the torch emulator runs "
                                   f"dense, recurrent dense and conv layers")
            if getattr(layer, "delay", None) is not None:
                raise BackendError(f"{source}: layer {i} has synaptic delays (DelayDense), which the torch "
                                   f"emulator does not run; use the numpy emulator (the same numbers)")
            first = i == 0
            m = self.max_in if first and self.input_pop is None else 1
            ff = _Synapse.build(layer.weight, layer.sign_mode, layer.num_weight_bits, layer.weight_exp,
                                graded and first, m, conv=layer if isinstance(layer, ConvLayer) else None)
            rec = None
            if isinstance(layer, DenseLayer) and layer.weight_rec is not None:
                rec = _Synapse.build(layer.weight_rec, layer.sign_mode, layer.num_weight_bits,
                                     layer.weight_rec_exp, False, 1)
            where = f"{source}: layer {i}"
            self.layers.append((_TorchSynapse(ff, m, self.device, where),
                                None if rec is None else _TorchSynapse(rec, 1, self.device, where + " (recurrent)"),
                                _TorchNeurons(_Neurons.build(layer.neurons), self.device)))

    def describe(self) -> list[str]:
        """One line per layer: the device and the exact type its sums run in (``simulate --verbose``)."""
        lines = [f"torch emulator on {self.device}"
                 + (f" ({_torch().cuda.get_device_name(self.device)})" if self.device.type == "cuda" else "")]
        for i, (ff, rec, nrn) in enumerate(self.layers):
            syn = f"ff {ff.kind} in {str(ff.dtype).replace('torch.', '')}"
            if rec is not None:
                syn += f"; rec in {str(rec.dtype).replace('torch.', '')}"
            lines.append(f"torch layer {i} ({nrn.size} neurons): {syn}, LIF in int64")
        return lines

    def _resets(self, block: int, P: int) -> Optional[list[bool]]:
        return reset_steps(self.network, block, P)

    def _run_batch(self, x, bias_in, inj, record_state: bool, record_spikes: bool):
        torch = _torch()
        dev = self.device
        b, T = x.shape[:2]
        L = len(self.layers)
        P = T + L
        flat = x.reshape(b, T, -1)
        if self.input_pop is not None:                # netx's Input block: a LIF fed by x, biased per sample
            pop = self.input_pop
            n = pop.size
            bias = pop.bias if bias_in is None else torch.as_tensor(lr.effective_bias(
                ((np.asarray(bias_in).reshape(b, n).astype(np.int64) + 2**15) % 2**16) - 2**15,
                self.network.input_neurons.bias_exp), device=dev)
            u = torch.zeros((b, n), dtype=torch.int64, device=dev)
            v = torch.zeros_like(u)
            zero = torch.zeros_like(u)
            S = torch.zeros((P, b, n), dtype=torch.bool, device=dev)
            resets = self._resets(0, P)
            for s in range(P):
                if resets is not None and resets[s]:
                    u.zero_()
                    v.zero_()
                S[s] = lif_step(u, v, flat[:, s].long() if s < T else zero, pop.u_mult, pop.v_mult, bias, pop.vth)
        else:
            S = None
        pop = self.input_pop is not None
        counts = torch.zeros((b, L), dtype=torch.int64, device=dev)
        us, vs, spikes = [], [], []
        out = None
        for li, (ff, rec, nrn) in enumerate(self.layers):
            n = nrn.size
            A = torch.zeros((P, b, n), dtype=torch.int64, device=dev)
            if S is None:                              # layer 0's input: step t acts at step t + 1
                rows = flat.transpose(0, 1).reshape(T * b, -1)
                A[1:T + 1] = ff.apply(rows).reshape(T, b, n)
            else:
                A[1:] = ff.apply(S[:P - 1].reshape((P - 1) * b, -1)).reshape(P - 1, b, n)
            a_add = v_add = keep = None
            if inj is not None and inj[li] is not None:
                def tm(arr):
                    return None if arr is None else torch.as_tensor(np.ascontiguousarray(np.moveaxis(arr, 1, 0)),
                                                                    device=dev)
                a_add, v_add, keep = tm(inj[li].a_in), tm(inj[li].v), tm(inj[li].keep)
            resets = self._resets(li + pop, P)
            u = torch.zeros((b, n), dtype=torch.int64, device=dev)
            v = torch.zeros_like(u)
            own = torch.zeros((P, b, n), dtype=torch.bool, device=dev)
            for s in range(P):
                if resets is not None and resets[s]:
                    u.zero_()
                    v.zero_()
                a = A[s]
                if rec is not None and s > 0:
                    prev = own[s - 1] if keep is None else own[s - 1] & (keep[s - 1] != 0)
                    a = _wrap32(a + rec.apply(prev))  # the InPort adds both in int32
                if a_add is not None:
                    a = _wrap32(a + a_add[s])
                own[s] = lif_step(u, v, a, nrn.u_mult, nrn.v_mult, nrn.bias, nrn.vth,
                                  None if v_add is None else v_add[s])
            counts[:, li] = own.sum(dim=(0, 2))
            if record_state:
                us.append(u)
                vs.append(v)
            elif li == L - 1 and self.network.readout == "potential":
                vs = [None] * (L - 1) + [v]
            if record_spikes:
                spikes.append(own.transpose(0, 1).to(torch.uint8))
            if li == L - 1:
                out = own.transpose(0, 1).to(torch.uint8)
            S = own if keep is None else own & (keep != 0)
        return out, counts, us, vs, spikes

    def run(self, inputs, *, batch_size: Optional[int] = None, record_state: bool = False,
            progress: bool = False, step_noise=None, sample_ids=None, record_spikes: bool = False,
            bias=None, threads=None) -> RunResult:
        """Run encoded ``inputs`` (samples, T, *input_shape) as :meth:`Emulator.run
        <neurodeploy.backends.emulator.Emulator.run>` does (same arguments, same result); ``threads`` is
        accepted and ignored (torch's own intra-op threads; the result does not depend on them)."""
        torch = _torch()
        net = self.network
        arr = shaped_inputs(net, inputs)
        n, T = arr.shape[:2]
        bias = check_bias(net, bias, n)
        ids = sample_ids_of(sample_ids, n)
        layout = injection_layout(net, step_noise)
        L = len(self.layers)
        bs = max(1, int(batch_size or DEFAULT_BATCH_SIZE[self.device.type]))
        outs = np.zeros((n, T + L, net.output_size), dtype=np.uint8)
        counts = np.zeros((n, L), dtype=np.int64)
        us = [np.zeros((n, nrn.size), dtype=np.int64) for _, _, nrn in self.layers] if record_state else None
        vs = [np.zeros((n, nrn.size), dtype=np.int64) for _, _, nrn in self.layers] if record_state else None
        potential = net.readout == "potential"
        out_v = np.zeros((n, net.output_size), dtype=np.int64) if potential else None
        spk = [np.zeros((n, T + L, nrn.size), dtype=np.uint8) for _, _, nrn in self.layers] \
            if record_spikes else None
        with torch.no_grad(), _exact_float_matmul(torch):
            for start in range(0, n, bs):
                stop = min(n, start + bs)
                xb = arr[start:stop]
                lo, hi = xb.min(), xb.max()
                if lo < 0 or hi > self.max_in:
                    check_inputs(net, arr)              # raises, naming the values
                    raise BackendError(f"inputs span {lo}..{hi}, expected 0..{self.max_in}")
                xb = np.ascontiguousarray(xb.view(np.uint8) if xb.dtype == np.bool_ else xb)
                if not xb.flags.writeable:              # a read-only map (simulate's input): torch wants its own
                    xb = xb.copy()
                x = torch.from_numpy(xb).to(self.device)
                inj = draw_injections(net, step_noise, ids[start:stop], layout) if any(layout) else None
                o, c, bu, bv, bsp = self._run_batch(x, None if bias is None else bias[start:stop], inj,
                                                    record_state, record_spikes)
                outs[start:stop] = o.cpu().numpy()
                counts[start:stop] = c.cpu().numpy()
                if record_state:
                    for li in range(L):
                        us[li][start:stop] = bu[li].cpu().numpy()
                        vs[li][start:stop] = bv[li].cpu().numpy()
                if record_spikes:
                    for li in range(L):
                        spk[li][start:stop] = bsp[li].cpu().numpy()
                if potential:
                    out_v[start:stop] = bv[-1].cpu().numpy()
        return RunResult(outs, counts, us, vs, latency=net.latency, time_steps=T, layer_spikes=spk,
                         readout=net.readout, output_v=out_v)


def run_emulator_torch(network: Network, inputs, *, device: str = "cpu", **kwargs) -> RunResult:
    """``TorchEmulator(network, device).run(inputs, **kwargs)``."""
    return TorchEmulator(network, device=device).run(inputs, **kwargs)
