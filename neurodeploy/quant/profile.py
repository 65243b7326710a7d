"""Hardware profiles: the fixed-point limits and resources of a target chip.

Profiles are YAML data files in ``hw_profiles/``; every limit the quantizer
uses comes from one, none is hard-coded. Loading is strict: unknown and
missing keys are errors that name them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Union

import yaml

from ..errors import NeurodeployError

PROFILE_DIR = Path(__file__).resolve().parents[2] / "hw_profiles"


class ProfileError(NeurodeployError, ValueError):
    """A hardware profile file is malformed; the message names file and key."""


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
        """Granularity of weight mantissas: Lava drops ``8 - bits + is_mixed`` low bits."""
        return 2 ** (8 - self.weights.bits + (self.weights.sign_mode == "mixed"))

    @property
    def weight_range(self) -> tuple[int, int]:
        """Smallest and largest weight mantissa Lava's Dense keeps (mixed 8-bit: -256..254)."""
        step = self.weight_step
        hi = 0 if self.weights.sign_mode == "inhibitory" else 256 - step
        lo = 0 if self.weights.sign_mode == "excitatory" else (-256 if self.weights.sign_mode == "mixed"
                                                               else (-255 // step) * step)
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


def _section(cls: type, data: Any, name: str, src: str) -> Any:
    if not isinstance(data, dict):
        raise ProfileError(f"{src}: {name}: expected a mapping, got {type(data).__name__}")
    expected = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(data) - set(expected))
    if unknown:
        raise ProfileError(f"{src}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)} "
                           f"(expected: {', '.join(expected)})")
    missing = [k for k in expected if k not in data]
    if missing:
        raise ProfileError(f"{src}: missing key(s) {', '.join(f'{name}.{k}' for k in missing)}")
    values = {}
    for key, tp in expected.items():
        value = data[key]
        want = int if tp in (int, "int") else str
        if want is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ProfileError(f"{src}: {name}.{key}: expected an integer, got {value!r}")
        if want is str and not isinstance(value, str):
            raise ProfileError(f"{src}: {name}.{key}: expected a string, got {value!r}")
        values[key] = value
    return cls(**values)


def profile_from_dict(data: Any, src: str = "<profile>") -> HardwareProfile:
    """Build and check a profile from a mapping (the parsed YAML)."""
    if not isinstance(data, dict):
        raise ProfileError(f"{src}: expected a mapping at the top level")
    allowed = {"name", "noise", *_SECTIONS}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ProfileError(f"{src}: unknown key(s) {', '.join(unknown)} (expected: {', '.join(sorted(allowed))})")
    missing = [k for k in ("name", *_SECTIONS) if k not in data]
    if missing:
        raise ProfileError(f"{src}: missing key(s) {', '.join(missing)}")
    sections = {k: _section(cls, data[k], k, src) for k, cls in _SECTIONS.items()}
    profile = HardwareProfile(name=str(data["name"]), source=src, **sections)
    w, n = profile.weights, profile.neuron
    if w.sign_mode not in ("mixed", "excitatory", "inhibitory"):
        raise ProfileError(f"{src}: weights.sign_mode: {w.sign_mode!r}, expected mixed, excitatory or inhibitory")
    if not 1 <= w.bits <= 8:
        raise ProfileError(f"{src}: weights.bits: {w.bits}, expected 1..8 (Lava Dense holds 8-bit weights)")
    if w.exp_min > w.exp_max:
        raise ProfileError(f"{src}: weights.exp_min {w.exp_min} > weights.exp_max {w.exp_max}")
    for key in ("du_bits", "dv_bits"):
        if not 1 <= getattr(n, key) <= 12:
            raise ProfileError(f"{src}: neuron.{key}: {getattr(n, key)}, expected 1..12")
    for key in ("vth_bits", "bias_mant_bits", "bias_exp_bits", "state_bits"):
        if getattr(n, key) < 1:
            raise ProfileError(f"{src}: neuron.{key}: {getattr(n, key)}, expected >= 1")
    for key, value in vars(profile.resources).items():
        if value < 1:
            raise ProfileError(f"{src}: resources.{key}: {value}, expected >= 1")
    return profile


def load_profile(name_or_path: Union[str, Path]) -> HardwareProfile:
    """Load ``hw_profiles/<name>.yaml`` or a profile file path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise ProfileError(f"{name_or_path}: no such hardware profile (bundled: {known})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    return profile_from_dict(data, str(path))
