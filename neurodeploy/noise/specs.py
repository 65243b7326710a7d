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

Every level is finite and within its noise's range ``[0, upper]``, checked
when the spec or the profile is parsed (never after a sweep): probabilities
and fractions in [0, 1], L-inf budgets in [0, 1] pixels, and every std or
half-width at most :data:`MAX_STD` (10; past a few units a pixel, weight,
threshold or membrane perturbation only saturates). A spec has at most
:data:`MAX_LEVELS` levels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, Union

from ..errors import bounded
from ..quant.profile import HardwareProfile, NoiseProfileError, load_profile
from . import vocabulary as _vocabulary
from .vocabulary import (  # noqa: F401 - the vocabulary, re-exported
    INPUT_NOISE_NAMES,
    MAX_LEVELS,
    MAX_STD,
    NETWORK_NOISE_NAMES,
    NOISE_KINDS,
    NOISES,
    STEP_NOISE_NAMES,
    NoiseSpec,
    NoiseSpecError,
    NoiseType,
    _known,
    check_level,
    noise_kind,
    parse_level,
    parse_noise_spec,
)

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
    "noise_levels_from_section",
    "resolve_noise_specs",
    "MAX_STD",
    "MAX_LEVELS",
]


def noise_levels_from_section(section: Any, src: str) -> dict[str, tuple[float, ...]]:
    """Levels per noise from a profile's parsed ``noise:`` section (``None``: ``{}``); errors are
    :class:`NoiseProfileError` naming ``src`` and the key (:func:`.vocabulary.noise_levels_from_section`)."""
    return _vocabulary.noise_levels_from_section(section, src, NoiseProfileError)


def _profile_path(profile: Any) -> Path:
    if isinstance(profile, HardwareProfile):
        if not profile.source:
            raise NoiseProfileError(f"profile {bounded(profile.name)} has no source file to read its noise "
                                    f"section from")
        return Path(profile.source)
    return Path(load_profile(profile).source)  # validates the rest of the profile, noise section included


def noise_from_profile(profile: Union[str, Path, Any]) -> dict[str, tuple[float, ...]]:
    """Default levels per noise from the ``noise:`` section of a hardware profile.

    ``profile`` is a bundled name (``noisy-edge``), a YAML path or a loaded
    :class:`~neurodeploy.quant.profile.HardwareProfile`. Each entry is
    ``NAME: [levels]`` (or a single level); levels are numbers or strings like
    ``"8/255"``. No section gives ``{}``. Strict: unknown noise names and bad
    levels raise :class:`NoiseProfileError` (a ``ProfileError`` and a
    ``NoiseSpecError``) naming the file and the key (``noise.NAME``).
    """
    from ..yamlio import load_yaml

    path = _profile_path(profile)
    data = load_yaml(path, "hardware profile", error=NoiseProfileError)
    section = data.get("noise") if isinstance(data, dict) else None
    return noise_levels_from_section(section, str(path))


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
        if not isinstance(spec, str):
            raise NoiseSpecError(f"--noise {bounded(spec)}: expected NAME or NAME:LEVEL[,LEVEL...]")
        text = spec.strip()
        if ":" in text:
            out.append(parse_noise_spec(text))
        elif text == "all":
            if not defaults:
                raise NoiseSpecError(f"--noise {bounded(spec)}: no profile with a noise section to take the "
                                     f"levels from")
            out += [NoiseSpec(n, lv) for n, lv in defaults.items()]
        else:
            if text not in NOISES:
                raise NoiseSpecError(f"--noise {bounded(spec, 60)}: unknown noise (known: {_known()})")
            if text not in defaults:
                raise NoiseSpecError(f"--noise {bounded(spec)}: no levels given and the profile declares no "
                                     f"default levels for {text!r}; use {text}:L1,L2,...")
            out.append(NoiseSpec(text, defaults[text]))
    if not specs:
        out = [NoiseSpec(n, lv) for n, lv in defaults.items()]
    return out
