"""Seeded input-noise corruptions in [0, 1] pixel space.

Every function draws its randomness from an explicit ``torch.Generator`` (never
the global RNG) so that a seed fixes an evaluation run, and returns a new
tensor without modifying its input.  The noise is drawn on the generator's
device (CPU by default) and then moved to ``x``'s device, so the same seed gives
the same corruption on CPU and GPU.

Used by the evaluation protocol (Gaussian test noise ``x + sigma*N(0,1)``
clamped to [0, 1]) and by Gaussian-noise training (``x + (8/255)*N(0,1)``,
no clamp), and covers the "general input noise" family (Gaussian, uniform,
salt-and-pepper) of docs/method.md.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch

__all__ = [
    "gaussian_noise",
    "uniform_noise",
    "salt_pepper_noise",
    "INPUT_NOISES",
    "apply_input_noise",
]


def _check_level(name: str, value: float, *, upper: float | None = None) -> float:
    """Validate a non-negative finite noise level; raise ValueError naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v) or v < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if upper is not None and v > upper:
        raise ValueError(f"{name} must be <= {upper}, got {value!r}")
    return v


def _check_inputs(x: torch.Tensor, generator: torch.Generator) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}"
        )


def _draw(kind: str, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw N(0,1) or U[0,1) samples shaped like ``x`` from ``generator``.

    Sampling happens on the generator's device and in float32 at least, then the
    result is cast/moved to ``x`` so results do not depend on where ``x`` lives.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    fn = torch.randn if kind == "normal" else torch.rand
    z = fn(x.shape, generator=generator, dtype=dtype, device=generator.device)
    return z.to(device=x.device)


def gaussian_noise(
    x: torch.Tensor, sigma: float, generator: torch.Generator, clamp: bool = True
) -> torch.Tensor:
    """Return ``x + sigma * N(0, 1)``, clamped to [0, 1] when ``clamp``.

    ``clamp=True`` is the evaluation protocol; Gaussian-noise *training* in the
    method uses ``clamp=False``.  ``sigma == 0`` returns a bit-identical copy.
    """
    _check_inputs(x, generator)
    sigma = _check_level("sigma", sigma)
    if sigma == 0.0:
        return x.clone()
    out = (x + sigma * _draw("normal", x, generator)).to(x.dtype)
    return out.clamp_(0.0, 1.0) if clamp else out


def uniform_noise(
    x: torch.Tensor, level: float, generator: torch.Generator, clamp: bool = True
) -> torch.Tensor:
    """Return ``x + U(-level, level)``, clamped to [0, 1] when ``clamp``.

    ``level == 0`` returns a bit-identical copy.
    """
    _check_inputs(x, generator)
    level = _check_level("level", level)
    if level == 0.0:
        return x.clone()
    u = _draw("uniform", x, generator)
    out = (x + (2.0 * u - 1.0) * level).to(x.dtype)
    return out.clamp_(0.0, 1.0) if clamp else out


def salt_pepper_noise(
    x: torch.Tensor, prob: float, generator: torch.Generator
) -> torch.Tensor:
    """Set each element independently to 0 or 1 with total probability ``prob``.

    Pepper (0) and salt (1) each have probability ``prob / 2``; the remaining
    elements are copied from ``x``.  ``prob == 0`` returns a bit-identical copy.
    """
    _check_inputs(x, generator)
    prob = _check_level("prob", prob, upper=1.0)
    if prob == 0.0:
        return x.clone()
    # One uniform draw per element decides both "hit" and "salt vs pepper", so
    # the two outcomes are exclusive and each has probability prob/2.
    u = _draw("uniform", x, generator)
    out = x.clone()
    out[u < 0.5 * prob] = 0.0
    out[(u >= 0.5 * prob) & (u < prob)] = 1.0
    return out


NoiseFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]

#: Registry of input noises by name; each is ``fn(x, level, generator)``.
INPUT_NOISES: Dict[str, NoiseFn] = {
    "gaussian": gaussian_noise,
    "uniform": uniform_noise,
    "salt-pepper": salt_pepper_noise,
}


def apply_input_noise(
    name: str, x: torch.Tensor, level: float, generator: torch.Generator
) -> torch.Tensor:
    """Apply the registered noise ``name`` at ``level`` (sigma, half-width or prob).

    Gaussian and uniform noise are clamped to [0, 1] (evaluation protocol).
    ``level == 0`` returns a bit-identical copy of ``x``.
    """
    try:
        fn = INPUT_NOISES[name]
    except KeyError:
        raise ValueError(
            f"name must be one of {sorted(INPUT_NOISES)}, got {name!r}"
        ) from None
    return fn(x, level, generator)
