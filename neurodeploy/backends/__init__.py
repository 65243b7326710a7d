"""Execute an IR :class:`~neurodeploy.ir.Network`: the numpy emulator or real Lava.

``run_network(network, inputs, backend="emulator" | "lava")`` returns a
:class:`RunResult`; both backends implement Lava 0.10's ``fixed_pt`` semantics
bit for bit (see :mod:`neurodeploy.backends.base` for the timing convention).
The Lava backend is imported lazily (importing Lava takes a while).
"""

from .base import BACKENDS, BackendError, RunResult, check_inputs, check_network, run_network
from .emulator import Emulator, run_emulator


def run_lava(*args, **kwargs):
    """See :func:`neurodeploy.backends.lava.run_lava`."""
    from .lava import run_lava as _run_lava
    return _run_lava(*args, **kwargs)


__all__ = [
    "BACKENDS",
    "BackendError",
    "RunResult",
    "check_inputs",
    "check_network",
    "run_network",
    "Emulator",
    "run_emulator",
    "run_lava",
]
