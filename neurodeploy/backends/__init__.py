"""Execute an IR :class:`~neurodeploy.ir.Network`: the numpy emulator or real Lava.

``run_network(network, inputs, backend="emulator" | "lava")`` returns a
:class:`RunResult`; both backends implement Lava 0.10's ``fixed_pt`` semantics
bit for bit (see :mod:`neurodeploy.backends.base` for the timing convention;
the arithmetic itself is :mod:`neurodeploy.lava_rules`). Perturbations enter
as noise-agnostic injections (:mod:`neurodeploy.backends.injection`). The
Lava backend is imported lazily (importing Lava takes a while).
"""

from . import emulator as _emulator
from .base import BACKENDS, BackendError, RunResult, check_inputs, check_network
from .emulator import Emulator, run_emulator
from .injection import LayerInjection, StepInjector


def run_lava(*args, **kwargs):
    """See :func:`neurodeploy.backends.lava.run_lava`."""
    from .lava import run_lava as _run_lava
    return _run_lava(*args, **kwargs)


def run_network(network, inputs, backend: str = "emulator", **kwargs) -> RunResult:
    """Run ``inputs`` (samples, T, *input_shape) through ``network`` on ``backend``.

    ``backend``: ``"emulator"`` (numpy, bit-exact with Lava's fixed_pt models,
    batched) or ``"lava"`` (real Lava 0.10 processes, ``Loihi2SimCfg(select_tag=
    "fixed_pt")``). Keyword arguments go to the backend (``record_state``,
    ``progress``, ``record_spikes``, ``record_traces`` (every layer's u and v after every step),
    ``bias`` (an input population's per-sample bias); emulator: ``batch_size``; both: ``step_noise`` (a
    :class:`~neurodeploy.backends.injection.StepInjector` such as
    :class:`~neurodeploy.noise.step.StepNoise`: spike-drop, current-noise,
    membrane-noise, identical in both backends) and ``sample_ids`` (the
    data-set indices its per-sample draws follow; default ``0..n-1``)).
    """
    if backend == "emulator":
        return _emulator.run_emulator(network, inputs, **kwargs)   # looked up per call, as run_lava
    if backend == "lava":
        return run_lava(network, inputs, **kwargs)
    raise BackendError(f"unknown backend {backend!r}, expected one of {BACKENDS}")


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
    "LayerInjection",
    "StepInjector",
]
