"""Run an IR network on real Lava 0.10 processes (``Loihi2SimCfg(select_tag="fixed_pt")``).

Process graph (compiled once, all samples run through it):

* the input: a :class:`~neurodeploy.backends.lava_source.StreamSource` that
  this process feeds one block of ``T + latency`` steps per sample
  (:class:`LavaSession`: one compiled graph for any number of calls, what a
  sweep worker keeps; :func:`run_lava` runs on one), or, with step noise or
  traces, ``lava.proc.io.source.RingBuffer`` (fixed_pt, int32) holding every
  sample's steps back to back. Both play column ``(t - 1) % len`` of their
  data at global step t, so running exactly ``T + latency`` steps per sample
  keeps samples aligned.
* per layer: ``lava.proc.dense.Dense`` (``weight_exp``, ``num_weight_bits``,
  ``sign_mode`` from the IR, ``num_message_bits = input_encoding.bits`` for
  graded input into the first layer), or for conv layers ``lava.proc.conv.Conv``
  (Lava layout (W, H, C); see below) or, where Lava's Conv model cannot
  compute the IR's arithmetic, ``lava.proc.sparse.Sparse`` holding the unrolled
  convolution; a recurrent ``Dense`` from the population to itself; and the
  neurons as ``lava.proc.lif.LIFReset`` (``PyLifResetModelBitAcc``: the same
  arithmetic as ``LIF``'s ``PyLifModelBitAcc``, plus a reset of u and v at the
  first step of every sample, inside the process, at no messaging cost).
* for a potential readout (``network.readout == "potential"``) the output
  population's ``v`` Var is read after every sample (one ``Var.get``, one
  value per output neuron): ``RunResult.output_v``, the prediction's source.
* every population's ``s_out`` is also flagged as an external pipe (the
  mechanism ``lava.proc.io.extractor.Extractor`` is built on, without the extra
  OS process per population, which cost ~40% of the step rate): its spikes of
  every step stream back to this process (output spikes, per-layer counts).

With ``step_noise`` (a :class:`~neurodeploy.backends.injection.StepInjector`)
the graph also holds the injection processes of
:mod:`neurodeploy.backends.lava_noise` (a ``RingBuffer`` into ``a_in`` for an
``a_in`` injection, ``SpikeDrop`` on the spike path for a ``keep`` mask,
``LIFResetVNoise`` for a ``v`` injection), loaded with the per-sample
injections of every step; none adds delay.

Between samples the synapses fed by neurons (every synapse but the first
layer's feed-forward one, whose input is zero in the last step) would send one
step of stale activation into the next sample; their ``a_buff`` is zeroed with
``Var.set`` (small vectors) or by a ``lava.proc.io.reset.Reset`` process
writing it at the last step of each sample (large ones).

Lava's ``PyConvModelFixed`` ignores ``weight_exp``, ``num_weight_bits`` and the
sign mode and wraps its sums to 24 bits. Conv layers therefore get their
weights clipped and truncated with Lava's own ``weightutils`` (what Dense does
internally) and a non-negative ``weight_exp`` folded into the weights; that is
exact when no sum can reach 2**23. Otherwise (negative ``weight_exp``, possible
24-bit overflow, parameters beyond Conv's int8 fields) the layer runs as a
``Sparse`` synapse, whose model has Dense's arithmetic.

Sigma-delta networks (``SigmaDeltaNeurons``, netx's SDNN) get the processes
netx builds: ``lava.proc.sdn`` ``Delta`` (the input population, the source on
its ``a_in``), ``SigmaDelta`` (ReLU) and ``Sigma`` behind ``Dense`` / ``Conv``
with graded messages; their states have no in-process reset, so each sample
runs in a graph of its own (:func:`_run_lava_sigma_delta`).

Processes and interrupts (:mod:`neurodeploy.processes`): Lava forks every
process (``fork`` start method); inside :func:`~neurodeploy.processes.guarded_children`
each child gets ``PR_SET_PDEATHSIG = SIGKILL`` (it dies with this process, also
on ``kill -9``), ignores SIGINT (Ctrl-C reaches the whole process group; only
this process handles it) and takes SIGTERM's default action. A finished run
stops the runtime with Lava's ``stop()``; any other exit (an error, Ctrl-C,
SIGTERM, which the CLI turns into KeyboardInterrupt, or a ``stop()`` that fails
or hangs) SIGKILLs and reaps this run's processes and unlinks its shared memory
segments by name, in well under a second. After a ``kill -9`` of this process
the children die (pdeathsig) and the ``multiprocessing`` resource tracker, which
they all share, unlinks the segments; a ``/dev/shm/neurodeploy-lava-*`` record
lets a later run unlink them if the tracker was killed too. Before anything
starts, a graph needing more than ``MAX_PROCESSES`` processes
(``NEURODEPLOY_LAVA_MAX_PROCESSES``) or more memory than is available is
refused (:func:`check_resources`).

Cost: ~0.5-1 s to compile and start, then ~300-1,200 steps/s on a 2-core machine
(inter-process messaging; it varies with the layers and with the machine's
load); the RingBuffer graph holds the input stream of all samples (samples x
(T + latency) x inputs, int32), a session one sample's.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..ir import ConvLayer, DenseLayer, Network, is_sigma_delta
from ..processes import (
    SegmentRecord,
    available_memory_mib,
    clean_stale_segments,
    deferred_signals,
    guarded_children,
    kill_and_reap,
    unlink_segments,
)
from ..lava_rules import U_LIMIT, effective_weights
from .base import (BackendError, RunResult, check_bias, check_inputs, check_network, input_max, sample_ids_of,
                   trace_layers)
from .injection import LayerInjection, draw_injections, injection_layout

__all__ = ["run_lava", "LavaSession", "plan_network", "LavaPlan", "estimate_processes", "check_resources", "MAX_PROCESSES",
           "MAX_PROCESSES_ENV"]

# a_buff vectors up to this size are zeroed with Var.set between samples
# (~40 us per element); larger ones get a Reset process (a constant per-step cost).
VAR_SET_MAX = 128
STOP_TIMEOUT_S = 30.0
# one Lava run may start at most this many OS processes (the env var overrides it);
# each is a forked Python (~10-16 MiB measured; PROCESS_MIB leaves room for copy-on-write growth)
MAX_PROCESSES = 64
MAX_PROCESSES_ENV = "NEURODEPLOY_LAVA_MAX_PROCESSES"
PROCESS_MIB = 32
MEMORY_FRACTION = 0.8            # of MemAvailable
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM}
_CONV_SUM_LIMIT = U_LIMIT        # Lava's Conv wraps a_buf to 24 bits
_INT8_MAX = 127                  # Conv stores kernel/stride/padding/dilation/groups as int8


def _chw_to_whc_order(chw) -> np.ndarray:
    """order[k] = IR (C, H, W) flat index of Lava (W, H, C) flat position k."""
    c, h, w = (int(s) for s in chw)
    return np.arange(c * h * w).reshape(c, h, w).transpose(2, 1, 0).ravel()


def _unrolled_conv(layer: ConvLayer):
    """The convolution as a (n_out, n_in) sparse matrix in IR (C, H, W) order, raw weights."""
    from scipy.sparse import coo_matrix

    w = np.asarray(layer.weight).astype(np.int64)
    o, cg, kh, kw = w.shape
    c, h, wi = layer.in_shape
    _, oh, ow = layer.out_shape
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    og = o // layer.groups
    O, CI, I, J, Y, X = np.meshgrid(np.arange(o), np.arange(cg), np.arange(kh), np.arange(kw),
                                    np.arange(oh), np.arange(ow), indexing="ij")
    iy = Y * sh - ph + I * dh
    ix = X * sw - pw + J * dw
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wi)
    in_c = (O // og) * cg + CI
    rows = (O * oh * ow + Y * ow + X)[ok]
    cols = (in_c * h * wi + iy * wi + ix)[ok]
    vals = w[O, CI, I, J][ok]
    return coo_matrix((vals, (rows, cols)), shape=(o * oh * ow, c * h * wi)).tocsr()


@dataclass
class LayerPlan:
    """How one IR layer maps onto Lava processes (pure numpy; no Lava yet)."""

    kind: str                     # "dense" | "delay" (DelayDense) | "conv" | "sparse"
    shape: tuple                  # LIF shape in Lava
    order: np.ndarray             # order[k] = IR index of Lava flat position k
    params: dict = field(default_factory=dict)   # synapse process kwargs
    rec_params: Optional[dict] = None
    neuron: dict = field(default_factory=dict)
    reset_ff: bool = False        # feed-forward a_buff needs zeroing between samples


@dataclass
class LavaPlan:
    src_shape: tuple              # RingBuffer shape (without time)
    src_order: np.ndarray         # order of the input values in it (see LayerPlan.order)
    layers: list
    input_neuron: Optional[dict] = None      # LIF kwargs of netx's Input block (source -> its a_in)
    reset_interval: Optional[int] = None     # netx's LIFReset schedule (None: reset at each sample's start)
    reset_offset: int = 0

    def populations(self) -> list:
        """LIF kwargs of every population in order: the input block's (if any), then each layer's."""
        return ([] if self.input_neuron is None else [self.input_neuron]) + [lp.neuron for lp in self.layers]

    def steps_per_sample(self, steps: int, samples: int) -> int:
        """Global Lava steps per sample: ``steps``, or with netx's schedule and several samples padded (zero
        input, spikes not read) to a multiple of ``reset_interval``, so the schedule (global ``time_step``)
        has the same phase in every sample."""
        I = self.reset_interval
        if I is None or samples <= 1:
            return steps
        return -(-steps // I) * I


def _conv_path(layer: ConvLayer, max_in: int) -> str:
    w_eff = effective_weights(layer.weight, layer.sign_mode, layer.num_weight_bits)
    if layer.weight_exp < 0:
        return "sparse"
    bound = int(np.abs(w_eff).reshape(w_eff.shape[0], -1).sum(axis=1).max(initial=0)) * max_in
    if (bound << int(layer.weight_exp)) >= _CONV_SUM_LIMIT:
        return "sparse"
    ints = [*layer.weight.shape[2:], *layer.stride, *layer.padding, *layer.dilation, layer.groups]
    if max(int(v) for v in ints) > _INT8_MAX:
        return "sparse"
    return "conv"


def _lif_param(value, order: np.ndarray, shape: tuple):
    """A LIF du / dv / vth as Lava's LIF takes it (stored uncast, broadcast against the state): a Python int,
    or a per-neuron array in the layer's Lava layout (a (W, H, C) conv population gets the full array, which
    broadcasts; netx's own 1-D C*H*W arrays would not)."""
    if isinstance(value, np.ndarray):
        return np.asarray(value).astype(np.int64)[order].reshape(shape)
    return int(value)


def plan_network(network: Network) -> LavaPlan:
    """Validate ``network`` and work out every Lava process's parameters.

    Raises before any Lava process exists, so malformed networks never start Lava.
    """
    from lava.utils.weightutils import SignMode

    check_network(network)
    layers = network.layers
    pop = network.input_neurons is not None      # netx's Input block: binary spikes into layer 0
    max_in = 1 if pop else input_max(network)
    graded = network.input_encoding.kind == "graded" and not pop
    paths = []
    for i, layer in enumerate(layers):
        if isinstance(layer, ConvLayer):
            paths.append(_conv_path(layer, max_in if i == 0 else 1))
        else:
            paths.append("dense")

    def lava_shape(i: int):
        """Lava shape/order of layer i's output (i = -1: the input source)."""
        ir_shape = tuple(network.input_shape) if i < 0 else tuple(layers[i].out_shape)
        needs3d = (i >= 0 and paths[i] == "conv") or (i + 1 < len(layers) and paths[i + 1] == "conv")
        n = int(np.prod(ir_shape))
        if not needs3d:
            return (n,), np.arange(n)
        chw = ir_shape if len(ir_shape) == 3 else tuple(layers[i + 1].in_shape)
        return (int(chw[2]), int(chw[1]), int(chw[0])), _chw_to_whc_order(chw)

    src_shape, src_order = lava_shape(-1)
    prev_shape, prev_order = src_shape, src_order
    input_neuron = None if not pop else _lif_kwargs(network.input_neurons, src_order, src_shape)
    plans = []
    for i, layer in enumerate(layers):
        shape, order = lava_shape(i)
        mode = SignMode[layer.sign_mode.upper()]
        nmb = int(network.input_encoding.bits) if (i == 0 and graded) else 0
        neuron = _lif_kwargs(layer.neurons, order, shape)
        kind = paths[i]
        rec = None
        if kind == "dense":
            w = np.asarray(layer.weight).astype(np.int64)[order][:, prev_order]
            params = dict(weights=w.astype(np.int32), weight_exp=int(layer.weight_exp),
                          num_weight_bits=int(layer.num_weight_bits), sign_mode=mode,
                          num_message_bits=nmb)
            if isinstance(layer, DenseLayer) and layer.delay is not None:    # Lava's DelayDense
                kind = "delay"
                params["delays"] = np.asarray(layer.delay).astype(int)[order][:, prev_order]   # DelayDense wants dtype int
                params["max_delay"] = max(layer.max_delay, 1)   # 0 would mean "take it from the delays"
            if isinstance(layer, DenseLayer) and layer.weight_rec is not None:
                wr = np.asarray(layer.weight_rec).astype(np.int64)[order][:, order]
                rec = dict(weights=wr.astype(np.int32), weight_exp=int(layer.weight_rec_exp),
                           num_weight_bits=int(layer.num_weight_bits), sign_mode=mode,
                           num_message_bits=0)
        elif kind == "sparse":
            m = _unrolled_conv(layer)[order][:, prev_order].tocsr().astype(np.int32)
            params = dict(weights=m, weight_exp=int(layer.weight_exp),
                          num_weight_bits=int(layer.num_weight_bits), sign_mode=mode,
                          num_message_bits=nmb)
        else:  # Lava Conv: pre-apply Dense's weight rules (clip_weights + truncate_weights), fold weight_exp >= 0
            w = effective_weights(layer.weight, layer.sign_mode, layer.num_weight_bits) << int(layer.weight_exp)
            w = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)).astype(np.int32)
            (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
            params = dict(weight=w, input_shape=tuple(prev_shape), padding=(int(pw), int(ph)),
                          stride=(int(sw), int(sh)), dilation=(int(dw), int(dh)),
                          groups=int(layer.groups), num_message_bits=nmb)
            c, h, wd = layer.out_shape
            if (wd, h, c) != shape:
                raise BackendError(f"layer {i}: internal shape mismatch {shape} vs {(wd, h, c)}")
        plans.append(LayerPlan(kind=kind, shape=shape, order=order, params=params, rec_params=rec,
                               neuron=neuron, reset_ff=i > 0 or pop))
        prev_shape, prev_order = shape, order
    return LavaPlan(src_shape=src_shape, src_order=src_order, layers=plans, input_neuron=input_neuron,
                    reset_interval=network.reset_interval, reset_offset=int(network.reset_offset))


def _lif_kwargs(nrn, order: np.ndarray, shape: tuple) -> dict:
    """LIF / LIFReset kwargs of IR neurons ``nrn`` in a population of Lava ``shape`` (``order``: see LayerPlan).
    Bias mantissas go in wrapped to int16, as Lava stores them."""
    bias = _int16(np.asarray(nrn.bias_mant).astype(np.int64)[order].reshape(shape))
    return dict(shape=shape, bias_mant=bias, bias_exp=int(nrn.bias_exp),
                **{k: _lif_param(getattr(nrn, k), order, shape) for k in ("du", "dv", "vth")})


def _int16(x: np.ndarray) -> np.ndarray:
    """Integers wrapped to int16 (what Lava's LIF stores its bias_mant as), kept as int64."""
    return ((np.asarray(x, dtype=np.int64) + 2**15) % 2**16) - 2**15


def _port(port, shape):
    """``port`` reshaped to ``shape`` when the sizes agree and the shapes differ."""
    return port if tuple(port.shape) == tuple(shape) else port.reshape(tuple(shape))


class _Graph:
    """The Lava processes of one run (built from a plan and the input data)."""

    def __init__(self, plan: LavaPlan, data: Optional[np.ndarray], steps: int,
                 injections: Optional[list[Optional[LayerInjection]]] = None, samples: int = 1,
                 traces: tuple = ()):
        """``injections``: None or per layer a :class:`~neurodeploy.backends.injection.LayerInjection`
        (or None) whose arrays are streams ``(*lava shape, samples * steps)`` (:func:`_noise_stream`)."""
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import DelayDense, Dense
        from lava.proc.io.reset import Reset
        from lava.proc.io.source import RingBuffer
        from lava.proc.lif.process import LIFReset
        from lava.proc.sparse.process import Sparse

        from .lava_noise import LIFResetVNoise, SpikeDrop

        from .lava_source import StreamSource

        injections = injections if injections is not None else [None] * len(plan.layers)
        # data None: the input arrives one sample's block at a time (a LavaSession's graph, reused across runs)
        self.source = (StreamSource(shape=plan.src_shape, steps=steps) if data is None
                       else RingBuffer(data=data))
        self.lifs, self.var_resets = [], []
        self.reset_procs = []
        self.noise_procs = []
        self.input_lif = None
        I = plan.reset_interval

        def schedule(block: int) -> dict:
            """LIFReset's reset: netx's staggered schedule (block k at time_step % I == reset_offset + 1 + k),
            else at the first step of every sample."""
            if I is None:
                return dict(reset_interval=steps, reset_offset=1 % steps)
            return dict(reset_interval=I, reset_offset=(plan.reset_offset + 1 + block) % I)

        def zero_between_samples(var) -> None:
            """``var`` is zeroed after each sample's last step: Var.set between runs if small, else a Reset."""
            if var.size <= VAR_SET_MAX:
                self.var_resets.append(var)
            else:   # zero it in the post-management phase of each sample's last step
                rst = Reset(reset_value=0, interval=steps, offset=steps - 1)
                rst.connect_var(var)
                self.reset_procs.append(rst)

        prev_port = self.source.s_out
        block = 0
        if plan.input_neuron is not None:         # netx's Input block: the source drives its a_in
            self.input_lif = LIFReset(**plan.input_neuron, **schedule(0))
            _port(prev_port, self.input_lif.a_in.shape).connect(self.input_lif.a_in)
            prev_port = self.input_lif.s_out
            block = 1
        pops = [self.input_lif] if self.input_lif is not None else []
        for lp, inj in zip(plan.layers, injections):
            inj = inj if inj is not None else LayerInjection()
            if lp.kind == "dense":
                syn = Dense(**lp.params)
            elif lp.kind == "delay":
                syn = DelayDense(**lp.params)
            elif lp.kind == "sparse":
                syn = Sparse(**lp.params)
            else:
                syn = Conv(**lp.params)
            if inj.v is not None:                 # added to the sum for v, inside the neuron
                lif = LIFResetVNoise(**lp.neuron, **schedule(block), v_noise=inj.v)
            else:
                lif = LIFReset(**lp.neuron, **schedule(block))
            block += 1
            _port(prev_port, syn.s_in.shape).connect(syn.s_in)
            _port(syn.a_out, lif.a_in.shape).connect(lif.a_in)
            if inj.a_in is not None:              # a source summed into a_in
                src = RingBuffer(data=inj.a_in)
                _port(src.s_out, lif.a_in.shape).connect(lif.a_in)
                self.noise_procs.append(src)
            out_port = lif.s_out                  # what the synapses fed by this population receive
            if inj.keep is not None:              # only the kept spikes reach the synapses
                drop = SpikeDrop(shape=lp.shape, keep=inj.keep)
                _port(lif.s_out, drop.s_in.shape).connect(drop.s_in)
                out_port = drop.s_out
                self.noise_procs.append(drop)
            buffers = []
            if lp.reset_ff:
                buffers.append(syn.a_buf if lp.kind == "conv" else syn.a_buff)
            if lp.rec_params is not None:
                rec = Dense(**lp.rec_params)
                _port(out_port, rec.s_in.shape).connect(rec.s_in)
                _port(rec.a_out, lif.a_in.shape).connect(lif.a_in)
                buffers.append(rec.a_buff)
            for var in buffers:
                zero_between_samples(var)
            # the population's spikes also go straight to this (the main) process
            lif.s_out.flag_external_pipe(buffer_size=steps)
            self.lifs.append(lif)
            pops.append(lif)
            prev_port = out_port
        if I is not None and samples > 1:         # the schedule does not start each sample from zero
            for lif in pops:
                zero_between_samples(lif.u)
                zero_between_samples(lif.v)
        # traces: Lava's own Monitor (one probe each: its model declares one port) reads every layer's u and v
        # in the post-management phase of every step, i.e. the state after the step
        self.monitors = {}
        if traces:
            from lava.proc.monitor.process import Monitor

            for li in traces:
                lif = self.lifs[li]
                pair = (Monitor(), Monitor())
                pair[0].probe(lif.u, samples * steps)
                pair[1].probe(lif.v, samples * steps)
                self.monitors[li] = pair

    def traces(self, plan: LavaPlan, samples: int, steps: int, keep: int) -> tuple:
        """The Monitors' u and v per layer as (samples, keep, n) int64 in IR order (the first ``keep`` of each
        sample's ``steps``; None for a layer not traced)."""
        us, vs = [None] * len(self.lifs), [None] * len(self.lifs)
        for li, (mu, mv) in self.monitors.items():
            lif, lp = self.lifs[li], plan.layers[li]
            got = []
            for mon, var in ((mu, lif.u), (mv, lif.v)):
                arr = np.asarray(mon.get_data()[lif.name][var.name])
                arr = np.rint(arr).astype(np.int64).reshape(samples, steps, -1)[:, :keep]
                got.append(_to_ir(arr, lp.order))
            us[li], vs[li] = got
        return us, vs


# --------------------------------------------------------------------------- processes and limits
def _network_name(network: Network) -> str:
    """The file the network came from (``metadata["source"]``) and its depth, for messages."""
    src = network.metadata.get("source") if isinstance(network.metadata, dict) else None
    depth = f"{len(network.layers)}-layer network"
    return f"{src} ({depth})" if src else f"the {depth}"


def estimate_processes(plan: LavaPlan, layout: Optional[list] = None, samples: int = 1,
                       traces: int = 0) -> int:
    """The OS processes Lava starts for ``plan``: one per Lava process of the graph
    (:class:`_Graph`: the input RingBuffer; per layer the synapse, the LIF, a recurrent
    Dense, a Reset per synapse buffer above ``VAR_SET_MAX``, and per the injection
    ``layout`` (:func:`~neurodeploy.backends.injection.injection_layout`) a RingBuffer for
    ``a_in`` and a SpikeDrop for ``keep``; ``v`` replaces the LIF; netx's Input block's LIF;
    with netx's reset schedule and several ``samples`` a Reset per large population for its u
    and one for its v; two Monitors for each of ``traces`` traced layers), plus Lava's runtime service and its
    shared-memory manager."""
    n = 1 + 1 + 1
    layout = layout if layout is not None else [()] * len(plan.layers)
    for i, lp in enumerate(plan.layers):
        big = int(np.prod(lp.shape)) > VAR_SET_MAX
        n += 2
        n += int(lp.reset_ff and big)
        if lp.rec_params is not None:
            n += 1 + int(big)
        n += int("a_in" in layout[i]) + int("keep" in layout[i])
    n += int(plan.input_neuron is not None)
    n += 2 * int(traces)
    if plan.reset_interval is not None and samples > 1:
        n += 2 * sum(int(np.prod(p["shape"])) > VAR_SET_MAX for p in plan.populations())
    return n


def process_limit() -> int:
    """The cap on Lava's processes: ``NEURODEPLOY_LAVA_MAX_PROCESSES`` or ``MAX_PROCESSES``."""
    raw = os.environ.get(MAX_PROCESSES_ENV, "").strip()
    if not raw:
        return MAX_PROCESSES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise BackendError(f"{MAX_PROCESSES_ENV}={raw[:40]!r}: expected a positive integer "
                           f"(the most OS processes one Lava run may start; default {MAX_PROCESSES})")
    return value


def check_resources(network: Network, plan: LavaPlan, layout: Optional[list] = None, data_bytes: int = 0,
                    samples: int = 1, traces: int = 0) -> tuple:
    """Refuse (BackendError, one line) a graph whose processes exceed the cap or the free memory.

    Memory: ``PROCESS_MIB`` per process (measured: each forked Lava process takes
    ~10-16 MiB of MemAvailable on a 2-core Linux machine; doubled for copy-on-write
    growth) plus the data streams (the source process holds its own copy), against
    ``MEMORY_FRACTION`` of ``/proc/meminfo``'s MemAvailable. Returns (processes, MiB)."""
    procs = estimate_processes(plan, layout, samples, traces)
    mib = procs * PROCESS_MIB + int(data_bytes) // (1 << 20)
    cap = process_limit()
    avail = available_memory_mib()
    budget = None if avail is None else int(avail * MEMORY_FRACTION)
    if procs > cap or (budget is not None and mib > budget):
        mem = "" if avail is None else f" and {avail} MiB of available memory (room for ~{budget // PROCESS_MIB})"
        raise BackendError(
            f"{_network_name(network)} needs {procs} Lava processes (~{mib} MiB); the limit is {cap} processes "
            f"({MAX_PROCESSES_ENV}, default {MAX_PROCESSES}){mem}; run it on the emulator (bit-exact, "
            f"one process) or raise {MAX_PROCESSES_ENV}")
    return procs, mib


def _stop_runtime(runtime, timeout: float) -> tuple:
    """``runtime.stop()`` in a helper thread: (finished within ``timeout``, its exception or None)."""
    errors = []

    def stop():
        try:
            runtime.stop()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    t = threading.Thread(target=stop, name="lava-stop", daemon=True)
    t.start()
    t.join(timeout)
    return (not t.is_alive()), (errors[0] if errors else None)


def _lava_internals(runtime) -> tuple:
    """(actor processes, shared-memory manager's server process, segment names) of a Lava 0.10 runtime.

    Read defensively: a runtime interrupted while it initialized has only some of them."""
    mi = getattr(runtime, "_messaging_infrastructure", None)
    actors = list(getattr(mi, "_actors", None) or [])
    smm = getattr(mi, "_smm", None)
    manager = getattr(smm, "_manager", None)
    server = getattr(manager, "_process", None)
    names = [getattr(h, "name", None) for h in (getattr(smm, "_shared_memory_handles", None) or [])]
    return actors, server, [n for n in names if n]


def _noop(*args, **kwargs) -> None:
    return None


def _force_cleanup(runtime, before: set, names) -> None:
    """SIGKILL and reap every process of this run, unlink its segments, and leave the
    runtime unable to touch them again (Lava's ``__del__`` hooks call ``stop()``)."""
    actors, server, more = _lava_internals(runtime)
    procs = [*actors, *([server] if server is not None else []),
             *(p for p in multiprocessing.active_children() if p not in before)]
    alive = kill_and_reap(procs)
    unlink_segments({*names, *more})
    if runtime is not None:
        runtime._is_started = False
        runtime._is_running = False
        smm = getattr(getattr(runtime, "_messaging_infrastructure", None), "_smm", None)
        if smm is not None:
            smm._shared_memory_handles = []
            smm._manager = None          # its server is dead; nothing to shut down
        runtime.stop = _noop             # the processes' __del__ calls runtime.stop()
    if alive:
        warnings.warn(f"{len(alive)} Lava processes did not exit after SIGKILL (pids "
                      f"{', '.join(str(p.pid) for p in alive[:8])})", RuntimeWarning, stacklevel=3)


def _shutdown(runtime, before: set, *, graceful: bool, timeout: float):
    """End this run's processes and shared memory on every exit path.

    ``graceful`` (the run finished): Lava's own ``stop()`` (bounded by ``timeout``);
    otherwise, or when that fails, hangs or is interrupted: :func:`_force_cleanup`.
    Returns the exception ``stop()`` raised (None if it did not)."""
    _, _, names = _lava_internals(runtime)      # stop() forgets them
    error = None
    if runtime is not None and graceful and getattr(runtime, "_is_started", False):
        try:
            finished, error = _stop_runtime(runtime, timeout)
        except KeyboardInterrupt:
            with deferred_signals() as pending:
                _force_cleanup(runtime, before, names)
                pending.clear()
            raise
        left = [p for p in multiprocessing.active_children() if p not in before]
        if finished and error is None and not left:
            unlink_segments(names)     # normally already gone (the manager unlinks them)
            return None
        if not finished:
            warnings.warn(f"the Lava runtime did not stop within {timeout:.0f} s; its processes were killed",
                          RuntimeWarning, stacklevel=3)
        elif error is None:
            warnings.warn(f"Lava's stop() left {len(left)} of its processes running; they were killed",
                          RuntimeWarning, stacklevel=3)
    with deferred_signals() as pending:
        _force_cleanup(runtime, before, names)
        if not graceful:
            pending.clear()            # already unwinding from an error or an interrupt
    return error


def _result_buffers(network: Network, plan: LavaPlan, n: int, P: int, record_state: bool,
                    record_spikes: bool) -> tuple:
    """(output spikes, per-layer counts, u, v, per-layer spikes, output v) arrays for ``n`` samples of ``P``
    steps, filled by :func:`_read_sample` (None for what is not recorded)."""
    sizes = [int(np.prod(lp.shape)) for lp in plan.layers]
    out = np.zeros((n, P, network.output_size), dtype=np.uint8)
    counts = np.zeros((n, len(network.layers)), dtype=np.int64)
    us = [np.zeros((n, s), dtype=np.int64) for s in sizes] if record_state else None
    vs = [np.zeros((n, s), dtype=np.int64) for s in sizes] if record_state else None
    spk = [np.zeros((n, P, s), dtype=np.uint8) for s in sizes] if record_spikes else None
    out_v = np.zeros((n, network.output_size), dtype=np.int64) if network.readout == "potential" else None
    return out, counts, us, vs, spk, out_v


def _run_sample(graph: "_Graph", plan: LavaPlan, k: int, G: int, P: int, out, counts, us, vs, spk, out_v) -> None:
    """Run sample ``k``'s ``G`` global steps (its input in place), read its ``P`` steps of spikes (and
    states) into the buffers of :func:`_result_buffers`, and zero the Vars that would carry over."""
    from lava.magma.core.run_conditions import RunSteps

    graph.source.run(condition=RunSteps(num_steps=G, blocking=True))
    _read_sample(graph, plan, k, out, counts, us, vs, P, spk, out_v, received=G)
    for var in graph.var_resets:
        var.set(np.zeros(var.shape))


def _run_config():
    from lava.magma.core.run_configs import Loihi2SimCfg

    from .lava_noise import PROC_MODELS as NOISE_MODELS
    from .lava_source import PROC_MODELS as SOURCE_MODELS

    return Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={**NOISE_MODELS, **SOURCE_MODELS})


def _start(graph: _Graph, network: Network, plan: LavaPlan, layout, samples: int, traces: int) -> None:
    """Compile ``graph`` and start its OS processes (a refusal by the system is a BackendError)."""
    with warnings.catch_warnings():
        # Lava's model search also tries to import this package's other modules by file path
        # (our noise processes' directory); their models come from exception_proc_model_map
        warnings.filterwarnings("ignore", message="Cannot import module .* when searching ProcessModels",
                                category=UserWarning)
        try:
            with guarded_children():
                graph.source.create_runtime(run_cfg=_run_config())    # compiles once, starts the OS processes
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS:
                raise
            procs = estimate_processes(plan, layout, samples, traces)
            raise BackendError(f"{_network_name(network)}: the system refused to start Lava's {procs} "
                               f"processes: {exc} (free memory or /dev/shm space, or raise the "
                               f"process/open-file limits)") from exc


class LavaSession:
    """One network compiled on Lava once, then run on any number of calls (:meth:`run`).

    The graph is :func:`run_lava`'s, except that the input comes from a
    :class:`~neurodeploy.backends.lava_source.StreamSource` fed one sample at a
    time, so new samples need no new graph: a sweep worker keeps one session per
    network for all its sample ranges (:func:`neurodeploy.executors.worker_resource`)
    instead of compiling and starting ~1 s of Lava processes per range. Every
    sample runs ``T + latency`` steps (netx's reset schedule: padded to it) and
    its states are zeroed after it, so a sample's result does not depend on which
    call, or which position in a call, it ran in: a session's results are
    :func:`run_lava`'s, bit for bit (``run_lava`` itself runs on a session when
    there is no step noise and no traces).

    Compiles on the first :meth:`run` (for that run's ``T``; a later run with
    another ``T`` is refused). :meth:`close` (or leaving the ``with`` block)
    stops Lava's processes; a run that raises (or is interrupted) kills them at
    once and closes the session. Sigma-delta networks, step noise and traces
    are not supported (they run through :func:`run_lava`, one graph per call).
    """

    def __init__(self, network: Network, *, stop_timeout: float = STOP_TIMEOUT_S) -> None:
        if isinstance(network, Network) and is_sigma_delta(network):
            raise BackendError(f"{_network_name(network)}: a sigma-delta network runs one Lava graph per sample; "
                               f"use run_lava")
        self.network = network
        self.plan = plan_network(network)            # raises before Lava starts
        self.stop_timeout = stop_timeout
        self.time_steps: Optional[int] = None
        self.runs = 0
        self._graph: Optional[_Graph] = None
        self._before: set = set()
        self._record: Optional[SegmentRecord] = None
        self._closed = False
        self._default_bias = None if self.plan.input_neuron is None else self.plan.input_neuron.get("bias_mant")
        self._bias_set = False

    def __enter__(self) -> "LavaSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close(graceful=exc[0] is None)

    @property
    def started(self) -> bool:
        """True once the graph is compiled and its processes run."""
        return self._graph is not None

    def _compile(self, T: int, first_bias=None) -> None:
        """Build and start the graph for ``T`` steps per sample; ``first_bias``: the first sample's Input-block
        bias (Lava layout), built in (``Var.set`` needs a runtime that has run)."""
        network, plan = self.network, self.plan
        if first_bias is not None:
            plan.input_neuron = {**plan.input_neuron, "bias_mant": first_bias}
            self._bias_set = True
        P = T + network.latency
        G = plan.steps_per_sample(P, 2)              # as for several samples: the schedule's padding
        check_resources(network, plan, None, data_bytes=4 * G * int(np.prod(plan.src_shape)), samples=2)
        clean_stale_segments()           # of earlier runs killed together with their resource tracker
        self._before = set(multiprocessing.active_children())
        self._record = SegmentRecord()
        try:
            graph = _Graph(plan, None, G, None, samples=2)
            self._graph = graph
            _start(graph, network, plan, None, 2, 0)
            self._record.write(_lava_internals(graph.source.runtime)[2])
        except BaseException:
            self.close(graceful=False)
            raise
        self.time_steps = T

    def run(self, inputs, *, record_state: bool = False, record_spikes: bool = False, bias=None,
            progress: bool = False) -> RunResult:
        """Encoded ``inputs`` (samples, T, *input_shape) through the compiled graph; arguments and
        result as :func:`run_lava`'s."""
        if self._closed:
            raise RuntimeError("this LavaSession is closed")
        network, plan = self.network, self.plan
        x = check_inputs(network, inputs, as_int64=False)
        n, T = x.shape[:2]
        bias = check_bias(network, bias, n)
        bias_lava = None
        if bias is not None:
            bias_lava = _int16(bias.reshape(n, -1)[:, plan.src_order]).reshape(n, *plan.src_shape)
        built_in = self._graph is None and bias_lava is not None     # sample 0's bias goes in at construction
        if self._graph is None:
            self._compile(T, None if bias_lava is None else bias_lava[0])
        elif T != self.time_steps:
            raise BackendError(f"{_network_name(network)}: this Lava session was compiled for {self.time_steps} "
                               f"time steps per sample; got inputs of {T} (start another session)")
        graph = self._graph
        P = T + network.latency
        G = plan.steps_per_sample(P, 2)
        out, counts, us, vs, spk, out_v = _result_buffers(network, plan, n, P, record_state, record_spikes)
        frame = np.zeros((G, int(np.prod(plan.src_shape))), dtype=np.int32)     # one sample's steps
        bar = None
        try:
            if progress:
                from rich.progress import Progress
                bar = Progress(transient=True)
                bar.start()
                task = bar.add_task("lava", total=n)
            for k in range(n):
                if bias_lava is not None:                    # the Input block's bias for this sample
                    if not (built_in and k == 0):
                        graph.input_lif.bias_mant.set(bias_lava[k])
                    self._bias_set = True
                elif self._bias_set:                         # an earlier run's: back to the network's
                    graph.input_lif.bias_mant.set(np.asarray(self._default_bias) * np.ones(plan.src_shape))
                    self._bias_set = False
                frame[:T] = x[k].reshape(T, -1)[:, plan.src_order]
                graph.source.send(np.moveaxis(frame.reshape(G, *plan.src_shape), 0, -1))
                _run_sample(graph, plan, k, G, P, out, counts, us, vs, spk, out_v)
                if bar is not None:
                    bar.update(task, advance=1)
        except BaseException:
            self.close(graceful=False)
            raise
        finally:
            if bar is not None:
                bar.stop()
        self.runs += 1
        return RunResult(out, counts, us, vs, latency=network.latency, time_steps=T, layer_spikes=spk,
                         readout=network.readout, output_v=out_v)

    def close(self, graceful: bool = True) -> None:
        """Stop Lava's processes (``graceful``: Lava's own stop, bounded; else, or if that fails, kill them)
        and remove the session's shared memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        runtime = None if self._graph is None else self._graph.source.runtime
        try:
            if self._graph is not None:
                error = _shutdown(runtime, self._before, graceful=graceful, timeout=self.stop_timeout)
                if error is not None and graceful:
                    raise error      # Lava could not stop a run that succeeded: a bug, not the user's
        finally:
            if self._record is not None:
                self._record.remove()
            self._graph = None


def run_lava(network: Network, inputs, *, record_state: bool = False, progress: bool = False,
             stop_timeout: float = STOP_TIMEOUT_S, batch_size: Optional[int] = None,
             step_noise=None, sample_ids=None, record_spikes: bool = False, bias=None,
             record_traces=False) -> RunResult:
    """Run encoded ``inputs`` (samples, T, *input_shape) through ``network`` on Lava.

    ``bias`` (samples, *input_shape): the bias mantissas of the network's input population
    (``network.input_neurons``, netx's Input block, a LIFReset between the source and layer 0), set with
    ``Var.set`` before each sample. With netx's reset schedule (``network.reset_interval``) every population
    is a LIFReset with netx's staggered offsets; several samples then run ``reset_interval``-aligned
    (zero-padded) so the schedule's phase is the same in each, and their u and v are zeroed in between.
    A sigma-delta network (``SigmaDeltaNeurons``) runs on Lava's own sdn processes, one graph per sample
    (:func:`_run_lava_sigma_delta`; a :class:`~neurodeploy.backends.emulator.SigmaDeltaResult` comes back).

    Compiles the process graph once and runs every sample for ``T + latency``
    steps; neuron states (in-process, LIFReset) and synapse buffers are zeroed
    between samples, so a sample's result does not depend on the ones before.
    ``record_state`` reads every population's u and v after each sample (slow:
    Lava moves Var values one element at a time). ``batch_size`` is accepted
    for call compatibility with the emulator and ignored (Lava runs one sample
    at a time). ``record_spikes`` keeps every population's spikes at every
    step (``RunResult.layer_spikes``, IR neuron order; they are received anyway).

    ``record_traces`` (True, or layer indices) reads those layers' u and v after every step with Lava's own
    ``Monitor`` processes (two per layer; ``RunResult.layer_u`` / ``layer_v``, per layer (samples,
    T + latency, n) int64 in IR order, None for a layer not traced).

    ``step_noise`` (a :class:`~neurodeploy.backends.injection.StepInjector`, e.g.
    :class:`~neurodeploy.noise.step.StepNoise`) adds injection processes to the graph
    (:mod:`neurodeploy.backends.lava_noise`) loaded with the injections of
    ``sample_ids`` (data-set indices; default ``0..n-1``), the same integers the
    emulator uses, so both agree bit for bit.

    Before anything starts, a graph needing more processes or memory than
    :func:`check_resources` allows is refused (``BackendError``). Errors of the
    run itself (Lava's, or ours) propagate unchanged; only a refusal by the
    system to start the processes (no memory, no processes or file handles left,
    ``/dev/shm`` full) becomes a ``BackendError``.
    """
    if isinstance(network, Network) and is_sigma_delta(network):   # Lava's sdn processes, one graph per sample
        return _run_lava_sigma_delta(network, inputs, record_state=record_state, record_spikes=record_spikes,
                                     progress=progress, stop_timeout=stop_timeout, step_noise=step_noise, bias=bias,
                                     record_traces=record_traces)
    traced = trace_layers(record_traces, len(network.layers))
    layout = injection_layout(network, step_noise)
    if not any(layout) and not traced:               # the input streams in (the session checks it all)
        with LavaSession(network, stop_timeout=stop_timeout) as session:
            return session.run(inputs, record_state=record_state, record_spikes=record_spikes, bias=bias,
                               progress=progress)
    plan = plan_network(network)                     # raises before Lava starts
    x = check_inputs(network, inputs, as_int64=False)
    n, T = x.shape[:2]
    bias = check_bias(network, bias, n)
    P = T + network.latency
    G = plan.steps_per_sample(P, n)                 # global steps per sample (P, or padded for the schedule)
    if any(layout) and G != P:
        raise BackendError(f"{_network_name(network)}: step noise with netx's reset schedule (reset_interval "
                           f"{network.reset_interval}) on several samples is not supported; run one sample "
                           f"per call or use the emulator")
    per_step = sum(int(np.prod(lp.shape)) * len(kinds) for lp, kinds in zip(plan.layers, layout))
    check_resources(network, plan, layout, data_bytes=4 * n * G * (x[0, 0].size + per_step), samples=n,
                    traces=len(traced))
    injections = None
    if any(layout):
        ids = sample_ids_of(sample_ids, n)
        injections = [None if inj is None else inj.map(lambda arr, lp=lp: _noise_stream(arr, lp))
                      for inj, lp in zip(draw_injections(network, step_noise, ids, layout), plan.layers)]
    # the whole input stream: sample k occupies global steps k*G+1 .. k*G+G
    flat = np.zeros((n, G, x[0, 0].size), dtype=np.int32)
    flat[:, :T] = x.reshape(n, T, -1)
    flat = flat[:, :, plan.src_order].reshape(n * G, *plan.src_shape)
    data = np.ascontiguousarray(np.moveaxis(flat, 0, -1))
    bias_lava = None
    if bias is not None:     # sample 0's goes in at construction (Var.set needs a started runtime)
        bias_lava = _int16(bias.reshape(n, -1)[:, plan.src_order]).reshape(n, *plan.src_shape)
        plan.input_neuron = {**plan.input_neuron, "bias_mant": bias_lava[0]}

    out, counts, us, vs, spk, out_v = _result_buffers(network, plan, n, P, record_state, record_spikes)
    tr_u = tr_v = None

    clean_stale_segments()           # of earlier runs killed together with their resource tracker
    before = set(multiprocessing.active_children())
    graph = None
    record = SegmentRecord()
    bar = None
    failed = True
    try:
        graph = _Graph(plan, data, G, injections, samples=n, traces=traced)
        _start(graph, network, plan, layout, n, len(traced))
        record.write(_lava_internals(graph.source.runtime)[2])
        if progress:
            from rich.progress import Progress
            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task("lava", total=n)
        for k in range(n):
            if bias_lava is not None and k > 0:       # the Input block's bias for this sample
                graph.input_lif.bias_mant.set(bias_lava[k])
            _run_sample(graph, plan, k, G, P, out, counts, us, vs, spk, out_v)
            if bar is not None:
                bar.update(task, advance=1)
        if traced:
            tr_u, tr_v = graph.traces(plan, n, G, P)
        failed = False
    finally:
        if bar is not None:
            bar.stop()
        runtime = None if graph is None else graph.source.runtime
        error = _shutdown(runtime, before, graceful=not failed, timeout=stop_timeout)
        record.remove()
    if error is not None:        # the run succeeded but Lava could not stop it: a bug, not the user's
        raise error
    return RunResult(out, counts, us, vs, latency=network.latency, time_steps=T, layer_spikes=spk, readout=network.readout,
                     output_v=out_v, layer_u=tr_u, layer_v=tr_v)


def _noise_stream(arr: np.ndarray, lp: LayerPlan) -> np.ndarray:
    """(samples, P, n) IR-order injection -> (*Lava shape, samples * P) int32, one column per global step."""
    n, P = arr.shape[:2]
    flat = arr.reshape(n * P, -1)[:, lp.order].astype(np.int32)
    return np.ascontiguousarray(np.moveaxis(flat.reshape(n * P, *lp.shape), 0, -1))


def _to_ir(lava_flat: np.ndarray, order: np.ndarray) -> np.ndarray:
    ir = np.empty_like(lava_flat)
    ir[..., order] = lava_flat
    return ir


def _read_sample(graph: _Graph, plan: LavaPlan, k: int, out, counts, us, vs, steps: int, spk=None,
                 out_v=None, received: Optional[int] = None) -> None:
    """Collect sample k's spikes (every step, every population) and, if asked, u and v;
    ``out_v`` (potential readout): the output population's v, read from its Lava Var. ``received``
    steps arrive per population (default ``steps``); the first ``steps`` are the sample's."""
    last = len(plan.layers) - 1
    for li, (lp, lif) in enumerate(zip(plan.layers, graph.lifs)):
        pipe = lif.s_out.external_pipe_csp_recv_port
        spikes = np.stack([pipe.recv().reshape(-1) for _ in range(steps if received is None else received)])
        spikes = spikes[:steps]
        counts[k, li] = int(spikes.sum(dtype=np.int64))
        if li == last:
            out[k] = _to_ir(spikes.astype(np.uint8), lp.order)
        if spk is not None:
            spk[li][k] = _to_ir(spikes.astype(np.uint8), lp.order)
        if us is not None:
            lif = graph.lifs[li]
            us[li][k] = _to_ir(np.rint(lif.u.get()).astype(np.int64).reshape(-1), lp.order)
            vs[li][k] = _to_ir(np.rint(lif.v.get()).astype(np.int64).reshape(-1), lp.order)
        if out_v is not None and li == last:
            # the state after the sample's last step (the next run's first step resets it, inside LIFReset)
            out_v[k] = vs[li][k] if vs is not None else \
                _to_ir(np.rint(lif.v.get()).astype(np.int64).reshape(-1), lp.order)


# --------------------------------------------------------------------------- sigma-delta (SDNN) networks
# The processes netx builds for SDNN neurons: lava.proc.sdn Delta (the input population, fed through its a_in),
# SigmaDelta (ReLU) and Sigma, behind Dense / Conv synapses with graded input. Their states have no in-process
# reset, so every sample runs in a graph of its own (compile, run T + latency steps, stop).


def _sigma_delta_plan(network: Network) -> list[dict]:
    """Per layer the Lava synapse and neuron parameters of a sigma-delta network (numpy only; raises before Lava
    starts). Conv layers and their inputs are (W, H, C) in Lava, dense layers flat."""
    from lava.utils.weightutils import SignMode

    from .emulator import sigma_delta_conv_weights

    layers = network.layers
    enc_bits = int(network.input_encoding.bits) if network.input_encoding.kind == "graded" else 0
    nmb0 = 16 if network.input_neurons is not None else enc_bits

    def lava_shape(i: int):
        ir_shape = tuple(network.input_shape) if i < 0 else tuple(layers[i].out_shape)
        needs3d = (i >= 0 and isinstance(layers[i], ConvLayer)) or \
            (i + 1 < len(layers) and isinstance(layers[i + 1], ConvLayer))
        n = int(np.prod(ir_shape))
        if not needs3d:
            return (n,), np.arange(n)
        chw = ir_shape if len(ir_shape) == 3 else tuple(layers[i + 1].in_shape)
        return (int(chw[2]), int(chw[1]), int(chw[0])), _chw_to_whc_order(chw)

    plans = [dict(shape=lava_shape(-1)[0], order=lava_shape(-1)[1])]
    prev_shape, prev_order = plans[0]["shape"], plans[0]["order"]
    for i, layer in enumerate(layers):
        shape, order = lava_shape(i)
        nmb = nmb0 if i == 0 else 16          # netx: 16 message bits after a sigma-delta block
        nrn = layer.neurons
        if isinstance(layer, ConvLayer):
            plain = sigma_delta_conv_weights(i, layer)
            ints = [*layer.weight.shape[2:], *layer.stride, *layer.padding, *layer.dilation, layer.groups]
            if max(int(v) for v in ints) > _INT8_MAX:
                raise BackendError(f"layer {i} ({layer.name or 'conv'}): kernel, stride, padding, dilation or "
                                   f"groups above {_INT8_MAX}: Lava's Conv stores them as int8")
            w = np.ascontiguousarray(plain[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)).astype(np.int32)
            (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
            syn = ("conv", dict(weight=w, input_shape=tuple(prev_shape), padding=(int(pw), int(ph)),
                                stride=(int(sw), int(sh)), dilation=(int(dw), int(dh)), groups=int(layer.groups),
                                num_message_bits=nmb))
        else:
            w = np.asarray(layer.weight).astype(np.int64)[order][:, prev_order]
            syn = ("dense", dict(weights=w.astype(np.int32), weight_exp=int(layer.weight_exp),
                                 num_weight_bits=int(layer.num_weight_bits),
                                 sign_mode=SignMode[layer.sign_mode.upper()], num_message_bits=nmb))
        bias = np.asarray(nrn.bias_mant).astype(np.int64)[order].reshape(shape).astype(np.int32)
        plans.append(dict(shape=shape, order=order, syn=syn, kind=nrn.kind,
                          neuron=dict(shape=shape) if nrn.kind == "sigma" else
                          dict(shape=shape, vth=int(nrn.vth), bias=bias, spike_exp=int(nrn.spike_exp),
                               state_exp=int(nrn.state_exp))))
        prev_shape, prev_order = shape, order
    return plans


class _SigmaDeltaGraph:
    """The Lava processes of one sample of a sigma-delta network (``data``: (*Lava input shape, steps))."""

    def __init__(self, network: Network, plans: list[dict], data: np.ndarray, steps: int):
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense
        from lava.proc.io.source import RingBuffer
        from lava.proc.sdn.process import ActivationMode, Delta, Sigma, SigmaDelta

        self.source = RingBuffer(data=data)
        prev = self.source.s_out
        self.delta = None
        if network.input_neurons is not None:
            pop = network.input_neurons
            self.delta = Delta(shape=plans[0]["shape"], vth=int(pop.vth), spike_exp=int(pop.spike_exp),
                               state_exp=int(pop.state_exp))
            _port(prev, self.delta.a_in.shape).connect(self.delta.a_in)
            self.delta.s_out.flag_external_pipe(buffer_size=steps)
            prev = self.delta.s_out
        self.neurons = []
        for lp in plans[1:]:
            kind, params = lp["syn"]
            syn = Conv(**params) if kind == "conv" else Dense(**params)
            nrn = Sigma(**lp["neuron"]) if lp["kind"] == "sigma" else \
                SigmaDelta(**lp["neuron"], act_mode=ActivationMode.RELU)
            _port(prev, syn.s_in.shape).connect(syn.s_in)
            _port(syn.a_out, nrn.a_in.shape).connect(nrn.a_in)
            nrn.s_out.flag_external_pipe(buffer_size=steps)
            self.neurons.append(nrn)
            prev = nrn.s_out


def _run_lava_sigma_delta(network: Network, inputs, *, record_state: bool, record_spikes: bool,
                          progress: bool, stop_timeout: float, step_noise, bias, record_traces=False):
    """:func:`run_lava` for a sigma-delta network: Lava's own sdn processes, one graph per sample."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from .emulator import SigmaDeltaResult, check_sigma_delta_inputs

    if step_noise is not None or bias is not None:
        what = "step noise injections" if step_noise is not None else "a per-sample input bias (bias=)"
        raise BackendError(f"{what} act on CUBA neurons; this network has sigma-delta neurons")
    check_network(network)
    plans = _sigma_delta_plan(network)               # raises before Lava starts
    x = check_sigma_delta_inputs(network, inputs)
    n, T = x.shape[:2]
    L = len(network.layers)
    P = T + L
    procs = 1 + int(network.input_neurons is not None) + 2 * L + 2
    if procs > process_limit():
        raise BackendError(f"{_network_name(network)} needs {procs} Lava processes; the limit is {process_limit()} "
                           f"({MAX_PROCESSES_ENV}); run it on the emulator or raise {MAX_PROCESSES_ENV}")
    sizes = [int(np.prod(lp["shape"])) for lp in plans[1:]]
    spk = [np.zeros((n, P, s), dtype=np.int64) for s in sizes]
    counts = np.zeros((n, L), dtype=np.int64)
    fin_u = [np.zeros((n, s), dtype=np.int64) for s in sizes] if record_state else None
    fin_v = [np.zeros((n, s), dtype=np.int64) for s in sizes] if record_state else None
    pop_msgs = np.zeros((n, P, int(np.prod(network.input_shape))), dtype=np.int64) \
        if record_spikes and network.input_neurons is not None else None
    traced = trace_layers(record_traces, L)      # sigma (layer_u) and act (layer_v) per step, by Lava's Monitors
    layer_u = [np.zeros((n, P, s), dtype=np.int64) if li in traced else None for li, s in enumerate(sizes)]
    layer_v = [np.zeros((n, P, s), dtype=np.int64) if li in traced else None for li, s in enumerate(sizes)]
    src_shape, src_order = plans[0]["shape"], plans[0]["order"]
    bar = None
    if progress:
        from rich.progress import Progress
        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("lava", total=n)
    try:
        for k in range(n):
            stream = np.zeros((P, x[0, 0].size), dtype=np.int32)
            stream[:T] = x[k].reshape(T, -1)
            data = np.ascontiguousarray(np.moveaxis(stream[:, src_order].reshape(P, *src_shape), 0, -1))
            _run_sigma_delta_sample(network, plans, data, P, k, spk, fin_u, fin_v, pop_msgs, stop_timeout,
                                    RunSteps, Loihi2SimCfg, traced, layer_u, layer_v)
            if bar is not None:
                bar.update(task, advance=1)
    finally:
        if bar is not None:
            bar.stop()
    for li in range(L):
        counts[:, li] = np.count_nonzero(spk[li], axis=(1, 2))
    out_v = spk[-1][:, -1].copy() if network.readout == "potential" else None
    return SigmaDeltaResult(spk[-1].copy(), counts, fin_u, fin_v, latency=L, time_steps=T,
                            layer_spikes=spk if record_spikes else None, readout=network.readout, output_v=out_v,
                            layer_u=layer_u if traced else None, layer_v=layer_v if traced else None,
                            input_messages=pop_msgs)


def _run_sigma_delta_sample(network, plans, data, P, k, spk, fin_u, fin_v, pop_msgs, stop_timeout,
                            RunSteps, Loihi2SimCfg, traced=(), layer_u=None, layer_v=None) -> None:
    """Build, run and stop the graph of sample ``k``; its messages (IR order) go into ``spk`` / ``pop_msgs``."""
    clean_stale_segments()
    before = set(multiprocessing.active_children())
    graph = None
    record = SegmentRecord()
    failed = True
    try:
        graph = _SigmaDeltaGraph(network, plans, data, P)
        monitors = {}
        if traced:
            from lava.proc.monitor.process import Monitor

            for li in traced:                    # the state after every step (post-management phase)
                nrn = graph.neurons[li]
                mons = [(Monitor(), nrn.sigma)] + ([] if plans[li + 1]["kind"] == "sigma" else [(Monitor(), nrn.act)])
                for mon, var in mons:
                    mon.probe(var, P)
                monitors[li] = mons
        cfg = Loihi2SimCfg(select_tag="fixed_pt")
        try:
            with guarded_children():
                graph.source.create_runtime(run_cfg=cfg)
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS:
                raise
            raise BackendError(f"{_network_name(network)}: the system refused to start Lava's processes: {exc} "
                               f"(free memory or /dev/shm space, or raise the process/open-file limits)") from exc
        record.write(_lava_internals(graph.source.runtime)[2])
        graph.source.run(condition=RunSteps(num_steps=P, blocking=True))
        for li, (lp, nrn) in enumerate(zip(plans[1:], graph.neurons)):
            pipe = nrn.s_out.external_pipe_csp_recv_port
            msgs = np.stack([np.asarray(pipe.recv()).reshape(-1) for _ in range(P)]).astype(np.int64)
            spk[li][k] = _to_ir(msgs, lp["order"])
            if fin_u is not None:
                sigma = _to_ir(np.rint(nrn.sigma.get()).astype(np.int64).reshape(-1), lp["order"])
                fin_u[li][k] = sigma
                fin_v[li][k] = sigma if lp["kind"] == "sigma" else \
                    _to_ir(np.rint(nrn.act.get()).astype(np.int64).reshape(-1), lp["order"])
        for li, mons in monitors.items():
            nrn, order = graph.neurons[li], plans[li + 1]["order"]
            got = [_to_ir(np.rint(np.asarray(mon.get_data()[nrn.name][var.name])).astype(np.int64).reshape(P, -1),
                          order) for mon, var in mons]
            layer_u[li][k] = got[0]
            layer_v[li][k] = got[-1]              # a Sigma layer: its value (sigma) in both
        if graph.delta is not None:
            pipe = graph.delta.s_out.external_pipe_csp_recv_port
            msgs = np.stack([np.asarray(pipe.recv()).reshape(-1) for _ in range(P)]).astype(np.int64)
            if pop_msgs is not None:
                pop_msgs[k] = _to_ir(msgs, plans[0]["order"])
        failed = False
    finally:
        runtime = None if graph is None else graph.source.runtime
        error = _shutdown(runtime, before, graceful=not failed, timeout=stop_timeout)
        record.remove()
    if error is not None:
        raise error
