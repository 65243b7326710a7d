"""Pure step functions of the spiking neurons (Norse style: ``step(input, state, p, dt)``).

State and parameter types are Norse's own (``LIFBoxFeedForwardState``,
``LIFBoxState``, ``LIFBoxParameters``, ``LIFFeedForwardState``,
``LIFParameters``) and the spike non-linearity is Norse's triangle surrogate.
The update equations are ours where Norse's differ from what Loihi executes:

* Norse's ``lif_box_feed_forward_step`` scales the input by ``dt*tau_mem_inv``
  and leaks towards ``v_leak``; method.md and Loihi add the input current
  unscaled to a multiplicatively decayed potential: ``v = lambda*v + I``.
* Norse's ``lif_feed_forward_step`` updates ``v`` with the *old* current and
  adds the input to ``i`` after the spike (one step of lag); Loihi updates the
  current first and then the voltage with the new current. Matching Loihi's
  order here is what lets quantization lose little.

Time constants are expressed with ``dt = 1``: the retention factor per step is
``lambda = 1 - tau_mem_inv`` (and ``1 - tau_syn_inv`` for the current).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from norse.torch.functional.lif import LIFFeedForwardState, LIFParameters
from norse.torch.functional.lif_box import LIFBoxFeedForwardState, LIFBoxParameters, LIFBoxState
from norse.torch.functional.threshold import threshold

__all__ = [
    "LIFBoxFeedForwardState",
    "LIFBoxParameters",
    "LIFBoxState",
    "LIFFeedForwardState",
    "LIFParameters",
    "spike_fn",
    "box_parameters",
    "cuba_parameters",
    "dlif_step",
    "cuba_step",
]


def spike_fn(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """Heaviside ``H(x)`` (strict, ``x > 0`` as Loihi) with the triangle surrogate.

    Norse's triangle has width 1 and height ``alpha``; scaling the argument by
    ``1/gamma`` gives ``dH/dx = max(gamma - |x|, 0) / gamma**2`` (method.md).
    """
    return threshold(x / gamma, "triangle", 1.0)


def box_parameters(leak: float, threshold_: float, gamma: float) -> LIFBoxParameters:
    """Parameters of a current-free (LIF / DLIF) neuron; ``alpha`` carries gamma."""
    return LIFBoxParameters(
        tau_mem_inv=torch.as_tensor(1.0 - leak),
        v_leak=torch.as_tensor(0.0),
        v_th=torch.as_tensor(threshold_),
        v_reset=torch.as_tensor(0.0),
        method="triangle",
        alpha=float(gamma),
    )


def cuba_parameters(leak: float, current_leak: float, threshold_: float, gamma: float) -> LIFParameters:
    """Parameters of a current-based neuron; ``alpha`` carries gamma."""
    return LIFParameters(
        tau_syn_inv=torch.as_tensor(1.0 - current_leak),
        tau_mem_inv=torch.as_tensor(1.0 - leak),
        v_leak=torch.as_tensor(0.0),
        v_th=torch.as_tensor(threshold_),
        v_reset=torch.as_tensor(0.0),
        method="triangle",
        alpha=float(gamma),
    )


def dlif_step(
    input_current: torch.Tensor,
    state: LIFBoxFeedForwardState,
    p: LIFBoxParameters,
    dt: float = 1.0,
) -> Tuple[torch.Tensor, LIFBoxFeedForwardState]:
    """One step of the (D)LIF neuron of method.md, gain already applied to the input.

    ``v = lambda*v_hat + I;  s = H(v - theta);  v_hat = (1 - s)*v + s*v_reset``.
    The reset is not detached (the reference implementation keeps its gradient).
    """
    leak = 1.0 - dt * p.tau_mem_inv
    v = leak * state.v + input_current
    z = spike_fn(v - p.v_th, p.alpha)
    v_new = (1.0 - z) * v + z * p.v_reset
    return z, LIFBoxFeedForwardState(v=v_new)


def cuba_step(
    input_current: torch.Tensor,
    state: LIFFeedForwardState,
    p: LIFParameters,
    dt: float = 1.0,
    v_noise: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, LIFFeedForwardState]:
    """One step of the current-based neuron in Loihi's order: the one CUBA update of the package.

    ``i = (1 - tau_syn_inv)*i + I;  v = (1 - tau_mem_inv)*v + i;  s = H(v - theta)``,
    then ``v`` resets to ``v_reset`` where it spiked; ``i`` is not reset (as Loihi).
    ``v_noise`` (membrane noise, :mod:`neurodeploy.noise.torch_transforms`) joins the
    voltage update, ``v = (1 - tau_mem_inv)*v + i + v_noise``, as on the chip (the
    current stays noise-free).
    """
    i = (1.0 - dt * p.tau_syn_inv) * state.i + input_current
    v = (1.0 - dt * p.tau_mem_inv) * state.v + i
    if v_noise is not None:
        v = v + v_noise
    z = spike_fn(v - p.v_th, p.alpha)
    v_new = (1.0 - z) * v + z * p.v_reset
    return z, LIFFeedForwardState(v=v_new, i=i)
