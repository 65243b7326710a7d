"""Hardware profiles: the fixed-point limits and resources of a target chip.

Profiles are YAML data files in ``hw_profiles/``; every limit the quantizer
uses comes from one, none is hard-coded. Loading is strict: unknown and
missing keys are errors that name them, and every integer must lie in the
range the hardware and our backends can mean (:data:`FIELD_BOUNDS`):
``neuron.activation_shift`` 6, ``neuron.state_bits`` 24 and
``neuron.vth_shift`` 6 are the only values Lava 0.10's CPU models and the
emulator implement, so any other value is refused instead of silently
ignored. The ``noise:`` section is checked at load time too
(:func:`neurodeploy.noise.vocabulary.noise_levels_from_section`). The profile's
``name`` becomes a folder name (``RUN/<name>/``), so it must be a plain name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Union

from .. import lava_rules
from ..errors import NeurodeployError, bounded
from ..noise.vocabulary import NoiseSpecError, noise_levels_from_section
from ..yamlio import load_yaml

PROFILE_DIR = Path(__file__).resolve().parents[2] / "hw_profiles"


class ProfileError(NeurodeployError, ValueError):
    """A hardware profile file is malformed; the message names file and key."""


class NoiseProfileError(ProfileError, NoiseSpecError):
    """The ``noise:`` section of a hardware profile is malformed; the message names file and key.

    Both a profile error and a noise-spec error (also importable as
    ``neurodeploy.noise.specs.NoiseProfileError``)."""


@dataclass(frozen=True)
class WeightLimits:
    bits: int
    exp_min: int
    exp_max: int
    sign_mode: str


@dataclass(frozen=True)
class NeuronLimits:
    du_bits: int
    dv_bits: int
    vth_bits: int
    vth_shift: int
    bias_mant_bits: int
    bias_exp_bits: int
    state_bits: int
    activation_shift: int


@dataclass(frozen=True)
class InputLimits:
    graded_bits: int


@dataclass(frozen=True)
class Resources:
    neurons_per_core: int
    synapses_per_core: int
    cores_per_chip: int
    max_fan_in: int


@dataclass(frozen=True)
class HardwareProfile:
    """A target chip: weight, neuron and input limits plus resources."""

    name: str
    weights: WeightLimits
    neuron: NeuronLimits
    input: InputLimits
    resources: Resources
    source: str = ""

    @property
    def weight_step(self) -> int:
        """Granularity of weight mantissas: Lava drops ``8 - bits + is_mixed`` low bits
        (:func:`neurodeploy.lava_rules.weight_step`)."""
        return lava_rules.weight_step(self.weights.sign_mode, self.weights.bits)

    @property
    def weight_range(self) -> tuple[int, int]:
        """Smallest and largest weight mantissa Lava's Dense keeps (mixed 8-bit: -256..254; inhibitory
        7-bit: -254..0; :func:`neurodeploy.lava_rules.weight_grid`)."""
        lo, hi, _ = lava_rules.weight_grid(self.weights.sign_mode, self.weights.bits)
        return lo, hi

    @property
    def weight_max(self) -> int:
        """Largest weight magnitude usable on both signs (for scaling)."""
        lo, hi = self.weight_range
        return max(hi, -lo - (self.weight_step if self.weights.sign_mode == "mixed" else 0))

    @property
    def vth_max(self) -> int:
        return 2 ** self.neuron.vth_bits - 1

    @property
    def bias_mant_max(self) -> int:
        return 2 ** (self.neuron.bias_mant_bits - 1) - 1

    @property
    def bias_exp_max(self) -> int:
        return 2 ** self.neuron.bias_exp_bits - 1

    @property
    def decay_max(self) -> int:
        return 2 ** self.neuron.dv_bits - 1

    @property
    def state_max(self) -> int:
        return 2 ** (self.neuron.state_bits - 1) - 1


_SECTIONS = {"weights": WeightLimits, "neuron": NeuronLimits, "input": InputLimits, "resources": Resources}

SIGN_MODES = lava_rules.SIGN_MODES

# (lowest, highest, why) of every integer field: the widths Lava 0.10's CPU models and the emulator run
# (neurodeploy.lava_rules holds them).
_LR = lava_rules
FIELD_BOUNDS: dict[str, tuple[int, int, str]] = {
    "weights.bits": (*_LR.NUM_WEIGHT_BITS_RANGE, "Lava's Dense holds 8-bit weight mantissas"),
    "weights.exp_min": (*_LR.WEIGHT_EXP_RANGE, "a weight exponent the backends shift by "
                                               "(lava_rules.WEIGHT_EXP_RANGE)"),
    "weights.exp_max": (*_LR.WEIGHT_EXP_RANGE, "a weight exponent the backends shift by "
                                               "(lava_rules.WEIGHT_EXP_RANGE)"),
    "neuron.du_bits": (1, _LR.DECAY_BITS, "Lava's decays are 12-bit (0..4095)"),
    "neuron.dv_bits": (1, _LR.DECAY_BITS, "Lava's decays are 12-bit (0..4095)"),
    "neuron.vth_bits": (1, _LR.VTH_BITS, "vth << 6 must fit the 24-bit state"),
    "neuron.vth_shift": (_LR.VTH_SHIFT, _LR.VTH_SHIFT,
                         "the emulator and Lava 0.10 compare v with vth << 6, no other shift"),
    "neuron.bias_mant_bits": (1, 16, "Lava's LIF stores bias_mant as int16"),
    "neuron.bias_exp_bits": (1, 4, "bias_mant << bias_exp must fit int32 (exponents up to 15)"),
    "neuron.state_bits": (_LR.STATE_BITS, _LR.STATE_BITS,
                          "Lava 0.10's CPU models and the emulator implement 24-bit u and v only"),
    "neuron.activation_shift": (_LR.ACT_SHIFT, _LR.ACT_SHIFT,
                                "Lava 0.10's CPU models and the emulator shift Dense output by 6 only"),
    "input.graded_bits": (*_LR.GRADED_BITS_RANGE, "graded spikes carry at most 24 bits"),
    "resources.neurons_per_core": (1, 2**20, ""),
    "resources.synapses_per_core": (1, 2**24, ""),
    "resources.cores_per_chip": (1, 2**16, ""),
    "resources.max_fan_in": (1, 2**24, ""),
}


def _keys(keys: Any, prefix: str = "") -> str:
    """Keys of a mapping for a message: each bounded, at most 8, any key type."""
    texts = sorted(k if isinstance(k, str) and len(k) <= 40 and k.isprintable() else bounded(k, 40) for k in keys)
    more = f" (+{len(texts) - 8} more)" if len(texts) > 8 else ""
    return ", ".join(f"{prefix}{t}" for t in texts[:8]) + more


def _section(cls: type, data: Any, name: str, src: str) -> Any:
    if not isinstance(data, dict):
        raise ProfileError(f"{src}: {name}: expected a mapping, got {type(data).__name__} {bounded(data)}")
    expected = {f.name: f.type for f in fields(cls)}
    unknown = [k for k in data if k not in expected]
    if unknown:
        raise ProfileError(f"{src}: unknown key(s) {_keys(unknown, name + '.')} (expected: {', '.join(expected)})")
    missing = [k for k in expected if k not in data]
    if missing:
        raise ProfileError(f"{src}: missing key(s) {', '.join(f'{name}.{k}' for k in missing)}")
    values = {}
    for key, tp in expected.items():
        value, where = data[key], f"{name}.{key}"
        if tp in (int, "int"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ProfileError(f"{src}: {where}: expected an integer, got {type(value).__name__} "
                                   f"{bounded(value)}")
            lo, hi, why = FIELD_BOUNDS[where]
            if not lo <= value <= hi:
                want = f"{lo}" if lo == hi else f"{lo}..{hi}"
                raise ProfileError(f"{src}: {where}: {bounded(value)}, expected {want}" + (f" ({why})" if why else ""))
        elif not isinstance(value, str):
            raise ProfileError(f"{src}: {where}: expected a string, got {type(value).__name__} {bounded(value)}")
        values[key] = value
    return cls(**values)


def profile_from_dict(data: Any, src: str = "<profile>") -> HardwareProfile:
    """Build and check a profile from a mapping (the parsed YAML), its ``noise:`` section included."""
    from ..fileio import check_name

    if not isinstance(data, dict):
        raise ProfileError(f"{src}: expected a mapping at the top level, got {type(data).__name__} {bounded(data)}")
    allowed = {"name", "noise", *_SECTIONS}
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ProfileError(f"{src}: unknown key(s) {_keys(unknown)} (expected: {', '.join(sorted(allowed))})")
    missing = [k for k in ("name", *_SECTIONS) if k not in data]
    if missing:
        raise ProfileError(f"{src}: missing key(s) {', '.join(missing)}")
    name = check_name(data["name"], "name", src, ProfileError)
    sections = {k: _section(cls, data[k], k, src) for k, cls in _SECTIONS.items()}
    profile = HardwareProfile(name=name, source=src, **sections)
    w = profile.weights
    if w.sign_mode not in SIGN_MODES:
        raise ProfileError(f"{src}: weights.sign_mode: {bounded(w.sign_mode)}, expected {', '.join(SIGN_MODES)}")
    if w.exp_min > w.exp_max:
        raise ProfileError(f"{src}: weights.exp_min: {w.exp_min} > weights.exp_max {w.exp_max}, expected "
                           f"exp_min <= exp_max")
    if data.get("noise") is not None:
        noise_levels_from_section(data["noise"], src, NoiseProfileError)
    return profile


def _there(path: Path) -> bool:
    """Whether anything (a file, a pipe, a dangling link) is at ``path``; False for an impossible path."""
    try:
        os.lstat(path)
    except (OSError, ValueError):  # missing, name too long, NUL byte
        return False
    return True


def load_profile(name_or_path: Union[str, Path]) -> HardwareProfile:
    """Load ``hw_profiles/<name>.yaml`` or a profile file path.

    Read with :func:`neurodeploy.yamlio.load_yaml` (regular UTF-8 files of at
    most 1 MiB, no YAML aliases); every problem is a one-line :class:`ProfileError`.
    """
    if not isinstance(name_or_path, (str, Path)):
        raise ProfileError(f"hardware profile: expected a name or a path, got {type(name_or_path).__name__} "
                           f"{bounded(name_or_path)}")
    path = Path(name_or_path)
    if not _there(path):
        bundled = PROFILE_DIR / f"{name_or_path}.yaml"
        if path.suffix or not _there(bundled):
            known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
            raise ProfileError(f"{bounded(str(name_or_path), 200)[1:-1]}: no such hardware profile "
                               f"(bundled: {known})")
        path = bundled
    data = load_yaml(path, "hardware profile", error=ProfileError)
    if data is None:
        raise ProfileError(f"{path}: the hardware profile is empty (or only comments); expected a mapping with "
                           f"name, {', '.join(_SECTIONS)} (see hw_profiles/loihi2.yaml)")
    return profile_from_dict(data, str(path))
