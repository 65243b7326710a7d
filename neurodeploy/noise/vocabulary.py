"""The noise vocabulary: every noise type, what its level means, its valid range, its kind (no profile).

The lowest noise module (it imports only :mod:`neurodeploy.errors`), so the
hardware profile loader (:mod:`neurodeploy.quant.profile`) and the config
checks can read noise names and levels without the profile or the noise
models. :mod:`neurodeploy.noise.specs` adds what needs a profile (its
defaults: :func:`~neurodeploy.noise.specs.noise_from_profile`,
:func:`~neurodeploy.noise.specs.resolve_noise_specs`) and documents the
vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import NeurodeployError, bounded

__all__ = [
    "NOISE_KINDS",
    "NoiseType",
    "NOISES",
    "INPUT_NOISE_NAMES",
    "NETWORK_NOISE_NAMES",
    "STEP_NOISE_NAMES",
    "NoiseSpec",
    "NoiseSpecError",
    "noise_kind",
    "check_level",
    "parse_level",
    "parse_noise_spec",
    "noise_levels_from_section",
    "MAX_STD",
    "MAX_LEVELS",
]

NOISE_KINDS = ("input", "network", "step")


@dataclass(frozen=True)
class NoiseType:
    """One noise model: its kind, what its level means and the level's range ``[0, upper]``."""

    name: str
    kind: str
    meaning: str
    upper: float = 10.0  # every entry of NOISES gives its own
    unit: str = ""

    def describe(self) -> str:
        return f"{self.name} ({self.kind}): {self.meaning}; 0 <= level <= {self.upper:g}"


_P = 1.0  # probabilities, fractions, bit error rates and L-inf pixel budgets live in [0, 1]
MAX_STD = 10.0  # stds and half-widths (pixels, relative weight/threshold, fractions of the threshold)
MAX_LEVELS = 1_000  # levels of one spec (each is a full evaluation)

NOISES: dict[str, NoiseType] = {t.name: t for t in (
    # input noise (samples in [0, 1] pixel space)
    NoiseType("gaussian", "input", "std of N(0, std^2) added to pixels, clamped to [0,1]", MAX_STD, "pixel"),
    NoiseType("uniform", "input", "half-width w of U(-w, w) added to pixels, clamped to [0,1]", MAX_STD, "pixel"),
    NoiseType("salt-pepper", "input", "probability that a pixel becomes 0 or 1", _P, "probability"),
    NoiseType("fgsm", "input", "L-inf budget eps of one signed-gradient step (crafted on the float model)",
              _P, "pixel"),
    NoiseType("pgd", "input", "L-inf budget eps of PGD-7, alpha = eps * 2.55/8 (crafted on the float model)",
              _P, "pixel"),
    NoiseType("pgd10", "input", "L-inf budget eps of PGD-10, alpha = eps * 2/8 (crafted on the float model)",
              _P, "pixel"),
    NoiseType("pgd20", "input", "L-inf budget eps of PGD-20, alpha = eps * 1/8 (crafted on the float model)",
              _P, "pixel"),
    NoiseType("apgd-ce", "input", "L-inf budget eps of APGD-CE (torchattacks, 10 steps; crafted on the float "
              "model)", _P, "pixel"),
    # network noise (fixed per simulated chip instance = seed)
    NoiseType("weight-mismatch", "network",
              "std s of the multiplicative Gaussian w' = w * (1 + s*N(0,1)) on every synaptic weight, "
              "re-quantized to representable mantissas", MAX_STD, "relative std"),
    NoiseType("bit-flip", "network",
              "bit error rate: each bit of each stored weight mantissa flips with this probability",
              _P, "probability"),
    NoiseType("dead-neuron", "network", "fraction of the neurons of every layer that never spike",
              _P, "fraction"),
    NoiseType("stuck-neuron", "network", "fraction of the neurons of every layer that spike at every step",
              _P, "fraction"),
    NoiseType("threshold-mismatch", "network",
              "std s of the multiplicative Gaussian vth' = vth * (1 + s*N(0,1)) on the thresholds "
              "(one factor per neuron population: Lava's LIF holds one vth per population)",
              MAX_STD, "relative std"),
    # step noise (drawn anew every time step; needs backend hooks)
    NoiseType("spike-drop", "step", "probability that each spike is lost on its way to the next layer",
              _P, "probability"),
    NoiseType("current-noise", "step",
              "std of the integer Gaussian noise added to the current u every step, "
              "as a fraction of the layer's threshold (integers round(s * (vth << 6) * N(0,1)) on the chip)",
              MAX_STD, "fraction of threshold"),
    NoiseType("membrane-noise", "step",
              "std of the integer Gaussian noise added to the voltage v every step, "
              "as a fraction of the layer's threshold (integers round(s * (vth << 6) * N(0,1)) on the chip)",
              MAX_STD, "fraction of threshold"),
)}

INPUT_NOISE_NAMES = tuple(n for n, t in NOISES.items() if t.kind == "input")
NETWORK_NOISE_NAMES = tuple(n for n, t in NOISES.items() if t.kind == "network")
STEP_NOISE_NAMES = tuple(n for n, t in NOISES.items() if t.kind == "step")


class NoiseSpecError(NeurodeployError, ValueError):
    """A noise spec (``NAME:LEVELS``) or level is malformed; the message names the spec."""


@dataclass(frozen=True)
class NoiseSpec:
    """One noise and the levels to sweep it over."""

    name: str
    levels: tuple[float, ...]

    @property
    def kind(self) -> str:
        return NOISES[self.name].kind


def _known() -> str:
    return ", ".join(NOISES)


def noise_kind(name: str) -> str:
    """``input``, ``network`` or ``step``; :class:`NoiseSpecError` for an unknown name."""
    if not isinstance(name, str) or name not in NOISES:
        raise NoiseSpecError(f"unknown noise {bounded(name)} (known: {_known()})")
    return NOISES[name].kind


def check_level(name: str, level: float, where: Optional[str] = None) -> float:
    """Validate one level of noise ``name``; :class:`NoiseSpecError` naming ``where`` (default the noise)."""
    where = where or f"noise {bounded(name)}"
    if not isinstance(name, str) or name not in NOISES:
        raise NoiseSpecError(f"{where}: unknown noise {bounded(name)} (known: {_known()})")
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        try:
            level = float(level)  # numpy scalars
        except (TypeError, ValueError, OverflowError):
            raise NoiseSpecError(f"{where}: level {bounded(level)} is not a number") from None
    try:
        level = float(level)
    except OverflowError:  # an int beyond float's range
        raise NoiseSpecError(f"{where}: level {bounded(level)} is not finite") from None
    if not math.isfinite(level):
        raise NoiseSpecError(f"{where}: level {level} is not finite")
    noise = NOISES[name]
    if level < 0:
        raise NoiseSpecError(f"{where}: level {level:g} is negative; levels must be >= 0")
    if level > noise.upper:
        raise NoiseSpecError(f"{where}: level {level:g} is above {noise.upper:g}; expected 0 <= level <= "
                             f"{noise.upper:g} ({name}: {noise.unit or 'level'})")
    return level


def parse_level(text: Any, where: str) -> float:
    """A number from ``0.1``, ``8/255`` or a YAML number; :class:`NoiseSpecError` naming ``where``."""
    if isinstance(text, bool):
        raise NoiseSpecError(f"{where}: level {bounded(text)} is not a number (use e.g. 0.1 or 8/255)")
    if isinstance(text, (int, float)):
        try:
            value = float(text)
        except OverflowError:
            raise NoiseSpecError(f"{where}: level {bounded(text)} is not finite") from None
    elif isinstance(text, str):
        s = text.strip()
        if len(s) > 100:
            raise NoiseSpecError(f"{where}: level {bounded(s)} is not a number (use e.g. 0.1 or 8/255)")
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(s)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise NoiseSpecError(f"{where}: level {bounded(s)} is not a number (use e.g. 0.1 or 8/255)") from None
    else:
        raise NoiseSpecError(f"{where}: level {bounded(text)} is not a number (use e.g. 0.1 or 8/255)")
    if not math.isfinite(value):
        raise NoiseSpecError(f"{where}: level {bounded(text)} is not finite")
    return value


def parse_noise_spec(spec: str) -> NoiseSpec:
    """Parse ``NAME:L1,L2,...`` (levels may be fractions like ``8/255``).

    Errors (:class:`NoiseSpecError`) name the spec: unknown noise, missing or
    malformed level, negative level, level above the noise's range.
    """
    where = f"--noise {bounded(spec, 60)}"
    if not isinstance(spec, str) or ":" not in spec:
        raise NoiseSpecError(f"{where}: expected NAME:LEVEL[,LEVEL...], e.g. gaussian:0,0.1")
    name, levels_text = spec.split(":", 1)
    name = name.strip()
    if name not in NOISES:
        shown = bounded(name, 30) if len(spec) <= 40 else "name"  # a long spec: where shows its start
        raise NoiseSpecError(f"{where}: unknown noise {shown} (known: {_known()})")
    if not levels_text.strip():
        raise NoiseSpecError(f"{where}: no levels given")
    parts = levels_text.split(",")
    if len(parts) > MAX_LEVELS:
        raise NoiseSpecError(f"{where}: {len(parts)} levels, expected at most {MAX_LEVELS}")
    if any(not p.strip() for p in parts):
        raise NoiseSpecError(f"{where}: empty level in {bounded(levels_text)}")
    levels = tuple(check_level(name, parse_level(p, where), where) for p in parts)
    return NoiseSpec(name, levels)


def noise_levels_from_section(section: Any, src: str,
                              error: type = NoiseSpecError) -> dict[str, tuple[float, ...]]:
    """Levels per noise from a profile's parsed ``noise:`` section (``None``: ``{}``).

    Each entry is ``NAME: [levels]`` (or a single level); levels are numbers
    or strings like ``"8/255"``. Errors are ``error`` (a :class:`NoiseSpecError`;
    the profile loader passes ``neurodeploy.quant.profile.NoiseProfileError``)
    naming ``src`` and the key (``noise.NAME``).
    """
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise error(f"{src}: noise: expected a mapping NAME: [levels], got {type(section).__name__} "
                                f"{bounded(section)}")
    out: dict[str, tuple[float, ...]] = {}
    for name, value in section.items():
        key = name if isinstance(name, str) and len(name) <= 40 and name.isprintable() else bounded(name, 40)
        where = f"{src}: noise.{key}"
        if not isinstance(name, str) or name not in NOISES:
            raise error(f"{where}: unknown noise (known: {_known()})")
        items = value if isinstance(value, list) else [value]
        if not items:
            raise error(f"{where}: no levels given")
        if len(items) > MAX_LEVELS:
            raise error(f"{where}: {len(items)} levels, expected at most {MAX_LEVELS}")
        try:
            out[name] = tuple(check_level(name, parse_level(v, where), where) for v in items)
        except NoiseSpecError as exc:
            if isinstance(exc, error):
                raise
            raise error(str(exc)) from None
    return out
