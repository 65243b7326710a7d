"""A Lava input process fed from this process one sample at a time, so one compiled graph serves many runs.

``lava.proc.io.source.RingBuffer`` holds its data from construction: every new
set of samples would need a new graph (compile and start: ~1 s and a dozen OS
processes), and ``Var.set`` moves values one element at a time (~40 us each).
:class:`StreamSource` instead receives one message per sample, holding its
``T + latency`` input steps, through an external pipe (the mechanism
``lava.proc.io.injector.Injector`` uses), sent before running that many steps,
and plays it step by step as int32, like ``RingBuffer``'s fixed-point model:
what arrives at the synapses is what a ``RingBuffer`` would have played.
``Injector`` itself is not used: its only model sends float64 and is untagged,
so ``select_tag="fixed_pt"`` would not pick it next to the int32 ports of the
fixed-point graph.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

__all__ = ["StreamSource", "PyStreamSourceModelFixed", "PROC_MODELS"]


class StreamSource(AbstractProcess):
    """Plays, step by step, blocks of ``steps`` input steps that this process gives :meth:`send`.

    One block (``(*shape, steps)``, int32, one column per step) per sample: at each global step ``t``
    it sends column ``(t - 1) % steps`` of the current block and takes the next block at the first
    step of each ``steps``-long run, as ``RingBuffer`` plays its columns. One message per sample
    (a message per step made Lava ~20% slower: each costs ~0.1-0.3 ms of inter-process messaging)."""

    def __init__(self, *, shape: tuple, steps: int, **kwargs) -> None:
        super().__init__(shape=shape, steps=steps, **kwargs)
        self.frames = InPort(shape=(*shape, steps))
        self.frames.flag_external_pipe(buffer_size=1)
        self.s_out = OutPort(shape=shape)

    def send(self, block: np.ndarray) -> None:
        """Queue the next sample's ``(*shape, steps)`` block (blocks while the previous one waits unplayed)."""
        self.frames.external_pipe_csp_send_port.send(np.ascontiguousarray(block, dtype=np.int32))


@implements(proc=StreamSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyStreamSourceModelFixed(PyLoihiProcessModel):
    """At a block's first step receive it (waiting for it); every step send its column (int32, as
    ``RingBuffer``'s fixed-point model)."""

    frames: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        self._steps = int(proc_params["steps"])
        self._block = None

    def run_spk(self) -> None:
        col = (self.time_step - 1) % self._steps
        if col == 0 or self._block is None:
            self._block = self.frames.recv()
        self.s_out.send(self._block[..., col])


PROC_MODELS = {StreamSource: PyStreamSourceModelFixed}
