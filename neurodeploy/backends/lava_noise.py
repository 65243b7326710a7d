"""Lava injection processes for the per-step injections (fixed-point models).

They sit in the converted process graph (:mod:`neurodeploy.backends.lava`)
and play pre-generated integers, one column per global time step, exactly like
``lava.proc.io.source.RingBuffer`` plays the input (column
``(time_step - 1) % length``; sample ``k``'s step ``s`` is column
``k * (T + latency) + s``). Semantics: :mod:`neurodeploy.backends.injection`
(the step noises that produce them: :func:`neurodeploy.noise.step.fixed_step_noise`).

* ``a_in`` (current noise): a stock ``RingBuffer`` (fixed_pt, int32) holding
  the integers, connected to the population's ``a_in``: the InPort sums it
  with the synaptic inputs (int32), so it enters ``u = decay(u) + (a_in << 6)``.
* ``keep`` (spike-drop): :class:`SpikeDrop` between ``LIF.s_out`` and every
  synapse the population feeds (next layer's feed-forward, own recurrent);
  each step it receives the spikes and forwards them masked by its keep mask.
  It receives and sends in the same time step, so it adds no delay (like the
  LIF, which also receives ``a_in`` and sends its spikes in one step).
* ``v`` (membrane noise): :class:`LIFResetVNoise`, ``LIFReset`` whose
  fixed-point model (``PyLifResetModelBitAcc`` plus one line) adds the step's
  integers to the bias term of the voltage update, ``v = clip(decay(v) + u +
  bias + noise)`` (int32 sum, 24-bit clip), before the threshold comparison.
  Voltage noise cannot come from outside the neuron: ``u`` carries memory.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import PyLifResetModelBitAcc
from lava.proc.lif.process import LIFReset

__all__ = ["SpikeDrop", "PySpikeDropModelFixed", "LIFResetVNoise", "PyLifResetVNoiseModelBitAcc",
           "PROC_MODELS"]


class SpikeDrop(AbstractProcess):
    """Forwards the spikes of ``s_in`` to ``s_out`` where ``keep[..., column]`` is nonzero.

    ``keep``: (*shape, length) 0/1, one column per time step, played cyclically.
    """

    def __init__(self, *, shape: tuple, keep: np.ndarray, **kwargs) -> None:
        super().__init__(shape=shape, **kwargs)
        keep = np.asarray(keep).astype(np.int32)
        if keep.shape[:-1] != tuple(shape):
            raise ValueError(f"SpikeDrop: keep has shape {keep.shape}, expected {tuple(shape)} + (steps,)")
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.keep = Var(shape=keep.shape, init=keep)


@implements(proc=SpikeDrop, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeDropModelFixed(PyLoihiProcessModel):
    """Receive the step's spikes, send the kept ones (same step: no delay)."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, bool, precision=1)        # as Dense's s_in
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)  # as LIF's s_out
    keep: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=1)

    def run_spk(self) -> None:
        spikes = self.s_in.recv()
        col = (self.time_step - 1) % self.keep.shape[-1]
        self.s_out.send(np.logical_and(spikes != 0, self.keep[..., col] != 0))


class LIFResetVNoise(LIFReset):
    """``LIFReset`` plus ``v_noise`` (*shape, length) int32: added to v at each step (column per step)."""

    def __init__(self, *, v_noise: np.ndarray, **kwargs) -> None:
        super().__init__(**kwargs)
        v_noise = np.asarray(v_noise).astype(np.int32)
        self.v_noise = Var(shape=v_noise.shape, init=v_noise)


@implements(proc=LIFResetVNoise, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLifResetVNoiseModelBitAcc(PyLifResetModelBitAcc):
    """``PyLifResetModelBitAcc`` with the step's voltage noise in the bias term."""

    # (class attributes the decorators set: reset them, so the parent model's stay untouched)
    implements_process = None
    tags: list = []

    v_noise: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)

    def scale_bias(self):
        super().scale_bias()             # called every step, right before subthr_dynamics
        col = (self.time_step - 1) % self.v_noise.shape[-1]
        bias = np.asarray(self.effective_bias).astype(np.int32)
        self.effective_bias = bias + self.v_noise[..., col]     # int32 (wraps like the v sum)


PROC_MODELS = {SpikeDrop: PySpikeDropModelFixed, LIFResetVNoise: PyLifResetVNoiseModelBitAcc}
