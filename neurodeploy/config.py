"""Run configuration: typed dataclasses loaded strictly from YAML model files.

A model file in ``models/`` names the data set, the architecture, the neuron,
the training mode and the regularizers. Loading is strict: an unknown key, a
wrong type or an out-of-range value raises :class:`ConfigError` naming the file
and the dotted key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .errors import NeurodeployError


class ConfigError(NeurodeployError, ValueError):
    """A model configuration is malformed; the message names file and key."""


NEURON_TYPES = ("lif", "dlif", "cuba-lif", "cuba-dlif")
ARCHS = ("mlp", "conv", "srnn")
ENCODERS = ("direct", "poisson", "temporal")
READOUTS = ("spikes", "linear")
TRAIN_MODES = ("clean", "gaussian", "fgsm")
SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class DataConfig:
    """Which data set and how it becomes spikes."""

    dataset: str = "mnist5k"
    data_dir: Optional[str] = None
    encoder: str = "direct"
    time_steps: Optional[int] = 8  # None for temporal data: the sequence length is T


@dataclass
class NeuronConfig:
    """Spiking neuron model shared by all spiking layers.

    ``leak`` is the multiplicative membrane leak lambda; ``current_leak`` the
    synaptic-current leak of the CUBA variants; ``gamma`` the width of the
    triangle surrogate gradient.
    """

    type: str = "dlif"
    leak: float = 0.99
    threshold: float = 1.0
    current_leak: float = 0.5
    gamma: float = 1.0


@dataclass
class ModelConfig:
    """Architecture.

    mlp: ``hidden`` sizes of dense spiking layers. conv: ``channels`` of 3x3
    convolutions (``strides`` per conv; stride 2 replaces pooling, which netx
    cannot deploy), then dense ``hidden`` layers. srnn: ``hidden`` sizes of
    recurrent spiking layers.
    """

    arch: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [256])
    channels: list[int] = field(default_factory=list)
    strides: list[int] = field(default_factory=list)
    kernel_size: int = 3
    readout: str = "spikes"
    readout_scale: float = 10.0
    # surrogate width of the spiking output layer (None: the neuron's gamma). A
    # wider window keeps silent output neurons trainable: with the compact
    # triangle an output neuron whose potential stays below 0 gets no gradient
    # and its class dies.
    readout_gamma: Optional[float] = None
    # no bias by default: on the chip a bias integrates from step 0 while the
    # input reaches deeper layers one step per layer later (pipeline fill)
    bias: bool = False
    # inputs are quantized to 2**input_bits - 1 levels (straight-through) so the
    # float model sees exactly what graded spikes carry on the chip; null: off
    input_bits: Optional[int] = 8
    # data-driven init: scale each weight layer so the current into its spiking
    # layer has this std (in thresholds) on training data; null keeps torch's init
    init_current_std: Optional[float] = 0.5
    normalize_mean: Optional[list[float]] = None
    normalize_std: Optional[list[float]] = None
    # conv only: BatchNorm2d after every conv, before its neurons (the reference's
    # conv nets); folded into the conv's weight and bias at deployment
    batchnorm: bool = False
    # conv only: Kaiming-normal conv weights (fan_out, relu gain; the reference's
    # init) instead of torch's default uniform; data-driven init still rescales
    # afterwards unless init_current_std is null
    kaiming_init: bool = False
    neuron: NeuronConfig = field(default_factory=NeuronConfig)


@dataclass
class MPPDConfig:
    """MS-MPPD membrane-potential perturbation regularizer (method.md, 1)."""

    rho: float = 0.0
    layers: Union[str, list[int]] = "last"  # "last", "all" or spiking-layer indices


@dataclass
class BoundConfig:
    """Recurrent-SNN noise-bound penalty (method.md, 2; formula in regularizers.py)."""

    weight: float = 0.0
    window: int = 5
    gain_weight: float = 0.0
    gain_target: float = 10.0
    power_iterations: int = 3


@dataclass
class RegularizerConfig:
    mppd: MPPDConfig = field(default_factory=MPPDConfig)
    bound: BoundConfig = field(default_factory=BoundConfig)
    rat_beta: float = 0.0  # SNN-RAT orthogonality step after each update; 5e-4 in the paper


@dataclass
class TrainingConfig:
    mode: str = "clean"
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    kappa: float = 0.5  # weight of the clean CE term when a perturbed pass exists
    sigma: float = 8 / 255  # Gaussian-noise training std (no clamp)
    fgsm_step: float = 4 / 255
    fgsm_init_std: float = 0.001
    grad_clip: Optional[float] = None
    # random translation of training images by up to this many pixels (0: off);
    # mnist5k has only 4,000 training digits, and shifts are the classic cure
    augment_shift: int = 0
    # noise-aware training with a chip-instance noise of neurodeploy.noise.hardware
    # (e.g. weight-mismatch): every batch runs on a freshly drawn chip instance
    hardware_noise: Optional[str] = None
    hardware_noise_level: float = 0.0
    hardware_profile: str = "loihi2"  # the profile whose fixed point the noise perturbs


@dataclass
class RunConfig:
    """A whole run: everything one ``neurodeploy train`` needs."""

    name: str = "run"
    seed: int = 0
    threads: int = 2  # fixed torch thread count so results never depend on the machine
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"list of {_type_name(arg)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str, src: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is Union:
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where, src)
            except ConfigError:
                continue
        raise ConfigError(f"{src}: {where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{src}: {where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return [_coerce(v, arg, f"{where}[{i}]", src) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: {where}: expected a mapping, got {type(value).__name__} {value!r}")
        return _from_dict(tp, value, where, src)
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - all annotations above are covered
        raise TypeError(f"unsupported annotation {tp!r}")
    raise ConfigError(f"{src}: {where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _from_dict(cls: type, data: dict, prefix: str, src: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            raise ConfigError(f"{src}: unknown key '{where}' (expected one of: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], where, src)
    return cls(**kwargs)


def _check_choice(value: Any, choices: tuple, where: str, src: str) -> None:
    if value not in choices:
        raise ConfigError(f"{src}: {where}: {value!r} is not one of {', '.join(choices)}")


def _check_range(value: float, lo: float, hi: float, where: str, src: str, *, lo_open=False) -> None:
    ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        lb = "(" if lo_open else "["
        raise ConfigError(f"{src}: {where}: {value!r} is outside {lb}{lo}, {hi}]")


def validate(cfg: RunConfig, src: str = "<config>") -> RunConfig:
    """Check value ranges and cross-field consistency; return ``cfg``."""
    d, m, n, t, r = cfg.data, cfg.model, cfg.model.neuron, cfg.training, cfg.regularizer
    _check_choice(d.encoder, ENCODERS, "data.encoder", src)
    if d.time_steps is not None and d.time_steps < 1:
        raise ConfigError(f"{src}: data.time_steps: {d.time_steps} must be >= 1")
    if d.encoder != "temporal" and d.time_steps is None:
        raise ConfigError(f"{src}: data.time_steps: required for encoder {d.encoder!r}")
    _check_choice(m.arch, ARCHS, "model.arch", src)
    _check_choice(m.readout, READOUTS, "model.readout", src)
    _check_choice(n.type, NEURON_TYPES, "model.neuron.type", src)
    _check_range(n.leak, 0.0, 1.0, "model.neuron.leak", src)
    _check_range(n.current_leak, 0.0, 1.0, "model.neuron.current_leak", src)
    _check_range(n.threshold, 0.0, float("inf"), "model.neuron.threshold", src, lo_open=True)
    _check_range(n.gamma, 0.0, float("inf"), "model.neuron.gamma", src, lo_open=True)
    if m.init_current_std is not None:
        _check_range(m.init_current_std, 0.0, float("inf"), "model.init_current_std", src, lo_open=True)
    if m.input_bits is not None and not 1 <= m.input_bits <= 24:
        raise ConfigError(f"{src}: model.input_bits: {m.input_bits} is outside [1, 24]")
    if m.readout_gamma is not None:
        _check_range(m.readout_gamma, 0.0, float("inf"), "model.readout_gamma", src, lo_open=True)
    if any(h < 1 for h in m.hidden):
        raise ConfigError(f"{src}: model.hidden: sizes must be >= 1, got {m.hidden}")
    if m.arch == "conv":
        if not m.channels:
            raise ConfigError(f"{src}: model.channels: a conv model needs at least one channel count")
        if m.strides and len(m.strides) != len(m.channels):
            raise ConfigError(
                f"{src}: model.strides: {len(m.strides)} strides for {len(m.channels)} channels (need one each)"
            )
    elif m.channels:
        raise ConfigError(f"{src}: model.channels: only used by arch 'conv', not {m.arch!r}")
    for key in ("batchnorm", "kaiming_init"):
        if getattr(m, key) and m.arch != "conv":
            raise ConfigError(f"{src}: model.{key}: only used by arch 'conv', not {m.arch!r}")
    if m.arch == "srnn" and not m.hidden:
        raise ConfigError(f"{src}: model.hidden: an srnn needs at least one recurrent layer")
    if (m.normalize_mean is None) != (m.normalize_std is None):
        raise ConfigError(f"{src}: model.normalize_mean/normalize_std: give both or neither")
    if m.normalize_std is not None and any(s <= 0 for s in m.normalize_std):
        raise ConfigError(f"{src}: model.normalize_std: {m.normalize_std} must be > 0")
    _check_choice(t.mode, TRAIN_MODES, "training.mode", src)
    _check_choice(t.schedule, SCHEDULES, "training.schedule", src)
    _check_choice(t.optimizer, OPTIMIZERS, "training.optimizer", src)
    if t.epochs < 0:
        raise ConfigError(f"{src}: training.epochs: {t.epochs} must be >= 0")
    if t.batch_size < 1:
        raise ConfigError(f"{src}: training.batch_size: {t.batch_size} must be >= 1")
    _check_range(t.lr, 0.0, float("inf"), "training.lr", src, lo_open=True)
    _check_range(t.kappa, 0.0, 1.0, "training.kappa", src)
    for key in ("sigma", "fgsm_step", "fgsm_init_std", "weight_decay", "momentum"):
        if getattr(t, key) < 0:
            raise ConfigError(f"{src}: training.{key}: {getattr(t, key)} must be >= 0")
    if t.hardware_noise is not None:
        from .noise.specs import NoiseSpecError, check_level, noise_kind

        try:
            if noise_kind(t.hardware_noise) != "network":
                raise NoiseSpecError(f"{t.hardware_noise!r} is not a chip-instance noise")
            check_level(t.hardware_noise, t.hardware_noise_level)
        except NoiseSpecError as exc:
            raise ConfigError(f"{src}: training.hardware_noise: {exc}") from None
    if t.hardware_noise is not None and m.batchnorm:
        # the chip-instance step quantizes and perturbs the unfolded training
        # model, and BatchNorm's running statistics would update on the copy only
        raise ConfigError(f"{src}: training.hardware_noise: noise-aware training does not support "
                          f"model.batchnorm: true (train without BatchNorm or without hardware_noise)")
    if t.augment_shift < 0:
        raise ConfigError(f"{src}: training.augment_shift: {t.augment_shift} must be >= 0")
    if r.mppd.rho < 0:
        raise ConfigError(f"{src}: regularizer.mppd.rho: {r.mppd.rho} must be >= 0")
    if isinstance(r.mppd.layers, str) and r.mppd.layers not in ("last", "all"):
        raise ConfigError(f"{src}: regularizer.mppd.layers: {r.mppd.layers!r} is not 'last', 'all' or a list of indices")
    if (r.mppd.rho > 0 or r.bound.weight > 0) and t.mode == "clean":
        raise ConfigError(
            f"{src}: regularizer: MS-MPPD and the bound penalty compare a clean and a perturbed pass; "
            f"set training.mode to 'gaussian' or 'fgsm' (got 'clean')"
        )
    if (r.bound.weight > 0 or r.bound.gain_weight > 0) and m.arch != "srnn":
        raise ConfigError(f"{src}: regularizer.bound: the bound penalty needs recurrent layers (arch 'srnn')")
    if r.bound.window < 1:
        raise ConfigError(f"{src}: regularizer.bound.window: {r.bound.window} must be >= 1")
    if r.rat_beta < 0:
        raise ConfigError(f"{src}: regularizer.rat_beta: {r.rat_beta} must be >= 0")
    if cfg.threads < 1:
        raise ConfigError(f"{src}: threads: {cfg.threads} must be >= 1")
    return cfg


def config_from_dict(data: dict, src: str = "<config>") -> RunConfig:
    """Build and validate a :class:`RunConfig` from a plain mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: expected a mapping at the top level, got {type(data).__name__}")
    return validate(_from_dict(RunConfig, data, "", src), src)


def load_config(path: Union[str, Path], overrides: Optional[dict] = None) -> RunConfig:
    """Load a YAML model file; ``overrides`` maps dotted keys to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    data.setdefault("name", path.stem)
    return config_from_dict(data, str(path))


def dump_config(cfg: RunConfig, path: Union[str, Path]) -> None:
    """Write the fully resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
