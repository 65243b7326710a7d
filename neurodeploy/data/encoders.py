"""Spike encoders: a batch of samples -> a time-major sequence ``(T, B, *shape)``.

They sit at the front of the model, so inputs stay in [0, 1] pixel/feature
space and attacks and input noise act there. All are differentiable with
respect to the input (the Poisson encoder through a straight-through
estimator), so gradient-based attacks can backpropagate through them.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["ENCODERS", "DirectEncoder", "Encoder", "PoissonEncoder", "TemporalEncoder", "make_encoder"]

ENCODERS: tuple[str, ...] = ("direct", "poisson", "temporal")


def _check_steps(time_steps: object, allow_none: bool, who: str) -> Optional[int]:
    if time_steps is None and allow_none:
        return None
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        need = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"{who}: time_steps must be {need}, got {time_steps!r}")
    return time_steps


class Encoder(torch.nn.Module):
    """Base class: ``forward(x, generator=None)`` maps ``(B, *shape)`` to ``(T, B, *shape)``.

    ``time_steps`` is the sequence length T it produces (``None`` for the
    temporal encoder when T comes from the data). ``generator`` seeds
    stochastic encoders for this call only; deterministic ones ignore it.
    """

    time_steps: Optional[int]

    def __init__(self, time_steps: Optional[int]) -> None:
        super().__init__()
        self.time_steps = time_steps

    def forward(self, x: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"time_steps={self.time_steps}"


class DirectEncoder(Encoder):
    """Constant-current encoding: the analog input repeated for ``time_steps`` steps."""

    def __init__(self, time_steps: int) -> None:
        super().__init__(_check_steps(time_steps, False, "DirectEncoder"))

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``(B, *shape)`` -> ``(T, B, *shape)``, every step equal to ``x``."""
        # repeat (a real copy) rather than expand (a view) so downstream in-place ops are safe.
        return x.unsqueeze(0).repeat(self.time_steps, *([1] * x.dim()))


class _StraightThroughBernoulli(torch.autograd.Function):
    """Forward: the given 0/1 spikes; backward: gradient passed to the rates unchanged."""

    @staticmethod
    def forward(ctx, rates: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return spikes

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


class PoissonEncoder(Encoder):
    """Rate coding: at each step a Bernoulli spike with probability ``clamp(x, 0, 1)``.

    The ``generator`` passed to :meth:`forward` makes the spikes reproducible;
    without one the ``generator`` attribute (training sets it per epoch) is
    used, and without that torch's global RNG. Evaluation always passes one,
    so the float model and the chip see the same spikes. The backward pass is
    straight-through: d spike / d x = 1 at every step, so attacks see a
    useful gradient (the sum over steps of the upstream gradient).
    """

    def __init__(self, time_steps: int, generator: Optional[torch.Generator] = None) -> None:
        super().__init__(_check_steps(time_steps, False, "PoissonEncoder"))
        self.generator = generator

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``(B, *shape)`` -> 0/1 spikes ``(T, B, *shape)`` in ``x``'s (floating) dtype."""
        if not torch.is_floating_point(x):
            x = x.float()
        shape = (self.time_steps, *x.shape)
        gen = generator if generator is not None else self.generator
        # Draw on the generator's device so a given seed gives the same spikes wherever x lives.
        device = gen.device if gen is not None else x.device
        u = torch.rand(shape, generator=gen, device=device, dtype=torch.float32).to(x.device)
        spikes = (u < x.detach().clamp(0.0, 1.0).float()).to(x.dtype)
        rates = x.unsqueeze(0).expand(shape)
        return _StraightThroughBernoulli.apply(rates, spikes)


class TemporalEncoder(Encoder):
    """For sequence data: ``(B, T, F)`` -> ``(T, B, F)``, values unchanged.

    ``time_steps`` is ``None`` (take T from the data) or must equal the
    data's T.
    """

    def __init__(self, time_steps: Optional[int] = None) -> None:
        super().__init__(_check_steps(time_steps, True, "TemporalEncoder"))

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Move the time axis first: ``(B, T, F)`` -> ``(T, B, F)``."""
        if x.dim() != 3:
            raise ValueError(f"TemporalEncoder expects sequences (B, T, F), got shape {tuple(x.shape)}")
        if self.time_steps is not None and x.shape[1] != self.time_steps:
            raise ValueError(f"TemporalEncoder: time_steps={self.time_steps} but the data has "
                             f"T={x.shape[1]} steps (shape {tuple(x.shape)})")
        return x.transpose(0, 1).contiguous()


def make_encoder(name: str, time_steps: Optional[int]) -> Encoder:
    """Build the encoder called ``name`` (one of :data:`ENCODERS`) producing ``time_steps`` steps."""
    if name == "direct":
        return DirectEncoder(time_steps)  # type: ignore[arg-type]
    if name == "poisson":
        return PoissonEncoder(time_steps)  # type: ignore[arg-type]
    if name == "temporal":
        return TemporalEncoder(time_steps)
    raise ValueError(f"unknown encoder {name!r}; known encoders: {', '.join(ENCODERS)}")
