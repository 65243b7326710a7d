"""A Lava input process fed from this process one step at a time, so one compiled graph serves many runs.

``lava.proc.io.source.RingBuffer`` holds its data from construction: every new
set of samples would need a new graph (compile and start: ~1 s and a dozen OS
processes), and ``Var.set`` moves values one element at a time (~40 us each).
:class:`StreamSource` instead receives each step's input through an external
pipe (the mechanism ``lava.proc.io.injector.Injector`` uses) and forwards it as
int32, like ``RingBuffer``'s fixed-point model sends. Its model waits for the
step's frame, so the caller sends a sample's ``T + latency`` frames before
running that many steps (the pipe's buffer holds them all); what arrives at the
synapses is what a ``RingBuffer`` would have played. ``Injector`` itself is not
used: its only model sends float64 and is untagged, so ``select_tag="fixed_pt"``
would not pick it next to the int32 ports of the fixed-point graph.
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
    """Sends, at each time step, the next frame this process gave :meth:`send` (``shape``, int32).

    ``buffer_size``: how many frames may wait in the pipe (a run of that many steps can be queued
    at once)."""

    def __init__(self, *, shape: tuple, buffer_size: int, **kwargs) -> None:
        super().__init__(shape=shape, **kwargs)
        self.frames = InPort(shape=shape)
        self.frames.flag_external_pipe(buffer_size=buffer_size)
        self.s_out = OutPort(shape=shape)

    def send(self, frame: np.ndarray) -> None:
        """Queue one step's input (blocks when ``buffer_size`` frames already wait)."""
        self.frames.external_pipe_csp_send_port.send(np.ascontiguousarray(frame, dtype=np.int32))


@implements(proc=StreamSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyStreamSourceModelFixed(PyLoihiProcessModel):
    """Receive the step's frame (waiting for it), send it on (int32, as ``RingBuffer``'s fixed model)."""

    frames: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32)

    def run_spk(self) -> None:
        self.s_out.send(self.frames.recv())


PROC_MODELS = {StreamSource: PyStreamSourceModelFixed}
