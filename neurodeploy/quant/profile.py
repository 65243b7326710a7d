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

``resources:`` holds what a core and a chip hold (:class:`Resources`; four keys required, the fit limits of
:mod:`neurodeploy.quant.fit` optional, each with its public source under ``resources.sources``); the optional
``energy:`` section holds per-operation costs as ``[low, high]`` ranges with their sources
(:class:`EnergyCosts`, used by :mod:`neurodeploy.evaluate.energy`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

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


SYNAPSE_ENCODINGS = ("dense", "sparse", "conv_shared")


@dataclass(frozen=True)
class Resources:
    """What one core and one chip hold (the limits :mod:`neurodeploy.quant.fit` maps a network onto).

    The first four are required; the others are optional (``None``: the profile declares no such limit).
    ``synapse_encodings`` are the synaptic-memory formats the chip offers (the mapper picks the cheapest
    per core): ``dense`` (a weight for every input axon x neuron of the core), ``sparse`` (each non-zero
    weight with the index of its target neuron) and ``conv_shared`` (a convolution's kernel stored once
    per output channel of the core). ``sources`` names, per field, where the number comes from.
    """

    neurons_per_core: int
    synapses_per_core: int
    cores_per_chip: int
    max_fan_in: int
    synaptic_memory_bits_per_core: Optional[int] = None
    fan_in_axons_per_core: Optional[int] = None
    fan_out_axons_per_core: Optional[int] = None
    neurons_per_chip: Optional[int] = None
    synapses_per_chip: Optional[int] = None
    chips: int = 1
    synapse_encodings: tuple = ("dense", "sparse")
    sources: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def index_bits(self) -> int:
        """Bits of a target-neuron index in the sparse encoding: enough for ``neurons_per_core`` neurons."""
        return max(1, math.ceil(math.log2(self.neurons_per_core))) if self.neurons_per_core > 1 else 1


# (low, high) per-operation costs; every one a range, never a single number (neurodeploy.evaluate.energy)
ENERGY_FIELDS = ("synaptic_op_pj", "neuron_update_pj", "spike_pj", "hop_pj", "hops_per_spike",
                 "synaptic_op_ns", "neuron_update_ns", "barrier_ns", "speedup", "static_power_w")


@dataclass(frozen=True)
class EnergyCosts:
    """Per-operation energy and time of a chip, each a ``(low, high)`` range with its ``sources``.

    Energy per inference = synaptic ops x ``synaptic_op_pj`` + neuron updates x ``neuron_update_pj`` +
    spikes x (``spike_pj`` + ``hops_per_spike`` x ``hop_pj``) + ``static_power_w`` x latency. Time per
    step = (the busiest core's synaptic ops x ``synaptic_op_ns`` + its neuron updates x
    ``neuron_update_ns``) / ``speedup`` + ``barrier_ns``.
    """

    synaptic_op_pj: tuple
    neuron_update_pj: tuple
    spike_pj: tuple
    hop_pj: tuple
    hops_per_spike: tuple
    synaptic_op_ns: tuple
    neuron_update_ns: tuple
    barrier_ns: tuple
    speedup: tuple
    static_power_w: tuple
    sources: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class HardwareProfile:
    """A target chip: weight, neuron and input limits plus resources."""

    name: str
    weights: WeightLimits
    neuron: NeuronLimits
    input: InputLimits
    resources: Resources
    energy: Optional[EnergyCosts] = None
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
_OPTIONAL_SECTIONS = ("energy",)

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
    "resources.synaptic_memory_bits_per_core": (1, 2**40, ""),
    "resources.fan_in_axons_per_core": (1, 2**24, ""),
    "resources.fan_out_axons_per_core": (1, 2**24, ""),
    "resources.neurons_per_chip": (1, 2**40, ""),
    "resources.synapses_per_chip": (1, 2**50, ""),
    "resources.chips": (1, 2**20, ""),
}
# (lowest, highest) of every energy/time range bound
ENERGY_BOUNDS: dict[str, tuple[float, float]] = {
    "synaptic_op_pj": (0.0, 1e6), "neuron_update_pj": (0.0, 1e6), "spike_pj": (0.0, 1e6), "hop_pj": (0.0, 1e6),
    "hops_per_spike": (0.0, 1e4), "synaptic_op_ns": (0.0, 1e6), "neuron_update_ns": (0.0, 1e6),
    "barrier_ns": (0.0, 1e9), "speedup": (1e-6, 1e6), "static_power_w": (0.0, 1e4),
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


def _int_field(value: Any, where: str, src: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProfileError(f"{src}: {where}: expected an integer, got {type(value).__name__} {bounded(value)}")
    lo, hi, why = FIELD_BOUNDS[where]
    if not lo <= value <= hi:
        want = f"{lo}" if lo == hi else f"{lo}..{hi}"
        raise ProfileError(f"{src}: {where}: {bounded(value)}, expected {want}" + (f" ({why})" if why else ""))
    return value


def _sources(data: Any, where: str, known: list, src: str) -> dict:
    """``sources:``: a mapping of known field names to non-empty strings (where each number comes from)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProfileError(f"{src}: {where}: expected a mapping of field -> source text, got "
                           f"{type(data).__name__} {bounded(data)}")
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ProfileError(f"{src}: unknown key(s) {_keys(unknown, where + '.')} (expected: {', '.join(known)})")
    for k, v in data.items():
        if not isinstance(v, str) or not v.strip():
            raise ProfileError(f"{src}: {where}.{k}: {bounded(v)}, expected a non-empty string naming the source")
    return dict(data)


def _resources_section(data: Any, src: str) -> Resources:
    """``resources:``: four required limits, optional fit limits, encodings and sources (one-line errors)."""
    name = "resources"
    if not isinstance(data, dict):
        raise ProfileError(f"{src}: {name}: expected a mapping, got {type(data).__name__} {bounded(data)}")
    declared = [f for f in fields(Resources)]
    expected = [f.name for f in declared]
    unknown = [k for k in data if k not in expected]
    if unknown:
        raise ProfileError(f"{src}: unknown key(s) {_keys(unknown, name + '.')} (expected: {', '.join(expected)})")
    required = ("neurons_per_core", "synapses_per_core", "cores_per_chip", "max_fan_in")
    missing = [k for k in required if k not in data]
    if missing:
        raise ProfileError(f"{src}: missing key(s) {', '.join(f'{name}.{k}' for k in missing)}")
    values: dict = {}
    for key in expected:
        if key not in data or (data[key] is None and key not in required and key != "chips"):
            continue
        value, where = data[key], f"{name}.{key}"
        if key == "synapse_encodings":
            if not isinstance(value, (list, tuple)) or not value:
                raise ProfileError(f"{src}: {where}: {bounded(value)}, expected a non-empty list of "
                                   f"{', '.join(SYNAPSE_ENCODINGS)}")
            bad = [v for v in value if not isinstance(v, str) or v not in SYNAPSE_ENCODINGS]
            if bad:
                raise ProfileError(f"{src}: {where}: {bounded(bad[0])}, expected one of {', '.join(SYNAPSE_ENCODINGS)}")
            values[key] = tuple(dict.fromkeys(value))
        elif key == "sources":
            values[key] = _sources(value, where, [k for k in expected if k != "sources"], src)
        else:
            values[key] = _int_field(value, where, src)
    return Resources(**values)


def _range(value: Any, where: str, lo: float, hi: float, src: str) -> tuple:
    """A ``[low, high]`` pair of finite numbers with ``lo <= low <= high <= hi``."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok:
        raise ProfileError(f"{src}: {where}: {bounded(value)}, expected [low, high], two finite numbers "
                           f"(a range, never one number)")
    a, b = float(value[0]), float(value[1])
    if not lo <= a <= b <= hi:
        raise ProfileError(f"{src}: {where}: {bounded(list(value))}, expected {lo:g} <= low <= high <= {hi:g}")
    return (a, b)


def _energy_section(data: Any, src: str) -> EnergyCosts:
    name = "energy"
    if not isinstance(data, dict):
        raise ProfileError(f"{src}: {name}: expected a mapping, got {type(data).__name__} {bounded(data)}")
    expected = [*ENERGY_FIELDS, "sources"]
    unknown = [k for k in data if k not in expected]
    if unknown:
        raise ProfileError(f"{src}: unknown key(s) {_keys(unknown, name + '.')} (expected: {', '.join(expected)})")
    missing = [k for k in ENERGY_FIELDS if k not in data]
    if missing:
        raise ProfileError(f"{src}: missing key(s) {', '.join(f'{name}.{k}' for k in missing)}")
    values = {k: _range(data[k], f"{name}.{k}", *ENERGY_BOUNDS[k], src) for k in ENERGY_FIELDS}
    values["sources"] = _sources(data.get("sources"), f"{name}.sources", list(ENERGY_FIELDS), src)
    return EnergyCosts(**values)


def profile_from_dict(data: Any, src: str = "<profile>") -> HardwareProfile:
    """Build and check a profile from a mapping (the parsed YAML), its ``noise:`` section included."""
    from ..fileio import check_name

    if not isinstance(data, dict):
        raise ProfileError(f"{src}: expected a mapping at the top level, got {type(data).__name__} {bounded(data)}")
    allowed = {"name", "noise", *_SECTIONS, *_OPTIONAL_SECTIONS}
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ProfileError(f"{src}: unknown key(s) {_keys(unknown)} (expected: {', '.join(sorted(allowed))})")
    missing = [k for k in ("name", *_SECTIONS) if k not in data]
    if missing:
        raise ProfileError(f"{src}: missing key(s) {', '.join(missing)}")
    name = check_name(data["name"], "name", src, ProfileError)
    sections = {k: _section(cls, data[k], k, src) for k, cls in _SECTIONS.items() if k != "resources"}
    sections["resources"] = _resources_section(data["resources"], src)
    if data.get("energy") is not None:
        sections["energy"] = _energy_section(data["energy"], src)
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
