"""The noise vocabulary: every noise type, what its level means, its valid range, its kind.

Three kinds of noise:

* ``input``: applied to the samples before encoding (``gaussian``, ``uniform``,
  ``salt-pepper``; the adversarial ``fgsm`` and ``pgd`` are crafted on the float
  model and transferred);
* ``network``: a seeded transform of the deployed network (IR) and of the float
  weights, fixed per simulated chip instance: ``weight-mismatch``, ``bit-flip``,
  ``dead-neuron``, ``stuck-neuron``, ``threshold-mismatch``
  (:mod:`neurodeploy.noise.hardware`);
* ``step``: drawn anew at every time step during execution: ``spike-drop``,
  ``current-noise``, ``membrane-noise`` (:class:`neurodeploy.noise.hardware.StepNoise`:
  noise-injection processes in the Lava graph, the same draws in the emulator
  and in torch).

A spec on the command line is ``NAME:L1,L2,...``; levels may be fractions
(``8/255``). Hardware profiles declare default levels in a top-level
``noise:`` mapping (``hw_profiles/noisy-edge.yaml``), read strictly by
:func:`noise_from_profile`; :func:`resolve_noise_specs` merges both (the
command line wins; a bare ``NAME`` takes the profile's levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from ..errors import NeurodeployError

__all__ = [
    "NOISE_KINDS",
    "NoiseType",
    "NOISES",
    "INPUT_NOISE_NAMES",
    "NETWORK_NOISE_NAMES",
    "STEP_NOISE_NAMES",
    "NoiseSpec",
    "NoiseSpecError",
    "NoiseProfileError",
    "noise_kind",
    "check_level",
    "parse_level",
    "parse_noise_spec",
    "noise_from_profile",
    "resolve_noise_specs",
]

NOISE_KINDS = ("input", "network", "step")


@dataclass(frozen=True)
class NoiseType:
    """One noise model: its kind, what its level means and the level's range ``[0, upper]``."""

    name: str
    kind: str
    meaning: str
    upper: float = math.inf
    unit: str = ""

    def describe(self) -> str:
        bound = "level >= 0" if math.isinf(self.upper) else f"0 <= level <= {self.upper:g}"
        return f"{self.name} ({self.kind}): {self.meaning}; {bound}"


_P = 1.0  # probabilities, fractions and bit error rates live in [0, 1]

NOISES: dict[str, NoiseType] = {t.name: t for t in (
    # input noise (samples in [0, 1] pixel space)
    NoiseType("gaussian", "input", "std of N(0, std^2) added to pixels, clamped to [0,1]", unit="pixel"),
    NoiseType("uniform", "input", "half-width w of U(-w, w) added to pixels, clamped to [0,1]", unit="pixel"),
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
              "re-quantized to representable mantissas", unit="relative std"),
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
              unit="relative std"),
    # step noise (drawn anew every time step; needs backend hooks)
    NoiseType("spike-drop", "step", "probability that each spike is lost on its way to the next layer",
              _P, "probability"),
    NoiseType("current-noise", "step",
              "std of the integer Gaussian noise added to the current u every step, "
              "as a fraction of the layer's threshold (integers round(s * (vth << 6) * N(0,1)) on the chip)",
              unit="fraction of threshold"),
    NoiseType("membrane-noise", "step",
              "std of the integer Gaussian noise added to the voltage v every step, "
              "as a fraction of the layer's threshold (integers round(s * (vth << 6) * N(0,1)) on the chip)",
              unit="fraction of threshold"),
)}

INPUT_NOISE_NAMES = tuple(n for n, t in NOISES.items() if t.kind == "input")
NETWORK_NOISE_NAMES = tuple(n for n, t in NOISES.items() if t.kind == "network")
STEP_NOISE_NAMES = tuple(n for n, t in NOISES.items() if t.kind == "step")


class NoiseSpecError(NeurodeployError, ValueError):
    """A noise spec (``NAME:LEVELS``) or level is malformed; the message names the spec."""


try:  # a profile's noise section is both a profile error and a noise-spec error
    from ..quant.profile import ProfileError as _ProfileError
except Exception:  # pragma: no cover - the profile module always exists in the package
    _ProfileError = ValueError  # type: ignore[misc,assignment]


class NoiseProfileError(_ProfileError, NoiseSpecError):  # type: ignore[misc,valid-type]
    """The ``noise:`` section of a hardware profile is malformed; the message names file and key."""


@dataclass(frozen=True)
class NoiseSpec:
    """One noise and the levels to sweep it over."""

    name: str
    levels: tuple[float, ...]

    @property
    def kind(self) -> str:
        return NOISES[self.name].kind


def noise_kind(name: str) -> str:
    """``input``, ``network`` or ``step``; :class:`NoiseSpecError` for an unknown name."""
    if name not in NOISES:
        raise NoiseSpecError(f"unknown noise {name!r} (known: {', '.join(NOISES)})")
    return NOISES[name].kind


def check_level(name: str, level: float, where: Optional[str] = None) -> float:
    """Validate one level of noise ``name``; :class:`NoiseSpecError` naming ``where`` (default the noise)."""
    where = where or f"noise {name!r}"
    if name not in NOISES:
        raise NoiseSpecError(f"{where}: unknown noise {name!r} (known: {', '.join(NOISES)})")
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        try:
            level = float(level)  # numpy scalars
        except (TypeError, ValueError):
            raise NoiseSpecError(f"{where}: level {level!r} is not a number") from None
    level = float(level)
    if not math.isfinite(level):
        raise NoiseSpecError(f"{where}: level {level} is not finite")
    meaning, upper = NOISES[name].meaning, NOISES[name].upper
    if level < 0:
        raise NoiseSpecError(f"{where}: level {level:g} is negative; levels must be >= 0")
    if level > upper:
        what = "a probability" if upper == 1.0 else "a level"
        raise NoiseSpecError(f"{where}: level {level:g} is above {upper:g} ({name} level is {what}: {meaning})")
    return level


def parse_level(text: Any, where: str) -> float:
    """A number from ``0.1``, ``8/255`` or a YAML number; :class:`NoiseSpecError` naming ``where``."""
    if isinstance(text, bool):
        raise NoiseSpecError(f"{where}: level {text!r} is not a number (use e.g. 0.1 or 8/255)")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(s)
        except (ValueError, ZeroDivisionError):
            raise NoiseSpecError(f"{where}: level {s!r} is not a number (use e.g. 0.1 or 8/255)") from None
    if not math.isfinite(value):
        raise NoiseSpecError(f"{where}: level {text!r} is not finite")
    return value


def parse_noise_spec(spec: str) -> NoiseSpec:
    """Parse ``NAME:L1,L2,...`` (levels may be fractions like ``8/255``).

    Errors (:class:`NoiseSpecError`) name the spec: unknown noise, missing or
    malformed level, negative level, probability above 1.
    """
    where = f"--noise {spec!r}"
    if not isinstance(spec, str) or ":" not in spec:
        raise NoiseSpecError(f"{where}: expected NAME:LEVEL[,LEVEL...], e.g. gaussian:0,0.1")
    name, levels_text = spec.split(":", 1)
    name = name.strip()
    if name not in NOISES:
        raise NoiseSpecError(f"{where}: unknown noise {name!r} (known: {', '.join(NOISES)})")
    if not levels_text.strip():
        raise NoiseSpecError(f"{where}: no levels given")
    parts = levels_text.split(",")
    if any(not p.strip() for p in parts):
        raise NoiseSpecError(f"{where}: empty level in {levels_text!r}")
    levels = tuple(check_level(name, parse_level(p, where), where) for p in parts)
    return NoiseSpec(name, levels)


def _profile_path(profile: Any) -> Path:
    from ..quant.profile import HardwareProfile, load_profile

    if isinstance(profile, HardwareProfile):
        if not profile.source:
            raise NoiseProfileError(f"profile {profile.name!r} has no source file to read its noise section from")
        return Path(profile.source)
    return Path(load_profile(profile).source)  # validates the rest of the profile


def noise_from_profile(profile: Union[str, Path, Any]) -> dict[str, tuple[float, ...]]:
    """Default levels per noise from the ``noise:`` section of a hardware profile.

    ``profile`` is a bundled name (``noisy-edge``), a YAML path or a loaded
    :class:`~neurodeploy.quant.profile.HardwareProfile`. Each entry is
    ``NAME: [levels]`` (or a single level); levels are numbers or strings like
    ``"8/255"``. No section gives ``{}``. Strict: unknown noise names and bad
    levels raise :class:`NoiseProfileError` (a ``ProfileError`` and a
    ``NoiseSpecError``) naming the file and the key (``noise.NAME``).
    """
    path = _profile_path(profile)
    data = yaml.safe_load(path.read_text())
    section = data.get("noise") if isinstance(data, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise NoiseProfileError(f"{path}: noise: expected a mapping NAME: [levels], got {type(section).__name__}")
    out: dict[str, tuple[float, ...]] = {}
    for name, value in section.items():
        where = f"{path}: noise.{name}"
        if name not in NOISES:
            raise NoiseProfileError(f"{where}: unknown noise {name!r} (known: {', '.join(NOISES)})")
        items = value if isinstance(value, list) else [value]
        if not items:
            raise NoiseProfileError(f"{where}: no levels given")
        try:
            out[name] = tuple(check_level(name, parse_level(v, where), where) for v in items)
        except NoiseSpecError as exc:
            raise NoiseProfileError(str(exc)) from None
    return out


def resolve_noise_specs(specs: Sequence[str], profile: Union[str, Path, Any, None] = None) -> list[NoiseSpec]:
    """Noise specs from the command line over a profile's defaults.

    ``NAME:LEVELS`` is taken as given (it overrides the profile); a bare
    ``NAME`` takes the profile's default levels; ``all`` expands to every noise
    the profile declares. Without command-line specs, the profile's noises are
    returned in the profile's order.
    """
    defaults = noise_from_profile(profile) if profile is not None else {}
    out: list[NoiseSpec] = []
    for spec in specs:
        text = spec.strip()
        if ":" in text:
            out.append(parse_noise_spec(text))
        elif text == "all":
            if not defaults:
                raise NoiseSpecError(f"--noise {spec!r}: no profile with a noise section to take the levels from")
            out += [NoiseSpec(n, lv) for n, lv in defaults.items()]
        else:
            if text not in NOISES:
                raise NoiseSpecError(f"--noise {spec!r}: unknown noise {text!r} (known: {', '.join(NOISES)})")
            if text not in defaults:
                raise NoiseSpecError(f"--noise {spec!r}: no levels given and the profile declares no default "
                                     f"levels for {text!r}; use {text}:L1,L2,...")
            out.append(NoiseSpec(text, defaults[text]))
    if not specs:
        out = [NoiseSpec(n, lv) for n, lv in defaults.items()]
    return out
