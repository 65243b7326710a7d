"""Run configuration: typed dataclasses loaded strictly from YAML model files.

A model file in ``models/`` names the data set, the architecture, the neuron,
the training mode and the regularizers. Loading is strict: an unknown key, a
wrong type or an out-of-range value raises :class:`ConfigError` naming the file
and the dotted key, so a typo never silently falls back to a default.

Validation is complete at load time: every number finite and within a
documented bound (module constants ``MAX_*``), names usable as folder names,
``regularizer.mppd.layers`` within the model's spiking layers, and the
encoder and architecture fit for the data set the config names
(:data:`DATASET_INFO`, checked without loading any data). YAML is read by
:mod:`neurodeploy.yamlio` (no aliases, size and nesting caps, one-line errors).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from .errors import NeurodeployError, bounded
from .fileio import NAME_PATTERN, check_name  # noqa: F401 - re-exported: names become path parts
from .yamlio import load_yaml, parse_scalar


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


# --------------------------------------------------------------------------- bounds
#
# Every number is finite, and every size is bounded so that a typo (an extra
# zero, a pasted 5,000-digit integer) is an error at load time instead of an
# out-of-memory crash or a week-long run later.

MAX_SEED = 2**32 - 1            # numpy's and torch's seed range
MAX_THREADS = 256
MAX_TIME_STEPS = 100_000
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_WIDTH = 1_000_000           # neurons of a dense/recurrent layer, channels of a conv layer
MAX_LAYERS = 64                 # entries of model.hidden / model.channels
MAX_KERNEL_SIZE = 31
MAX_STRIDE = 16
MAX_AUGMENT_SHIFT = 64          # and less than the image's side
MAX_POWER_ITERATIONS = 1_000
MAX_LIST_ITEMS = 1_024          # any list in a config
MAX_PATH_CHARS = 4_096
BIG = 1e6                       # upper bound of scales, thresholds and penalty weights

# What each data set of neurodeploy.data.datasets is, without loading it: the
# kind (image or sequence) and the per-sample shape ((C, H, W) or (T, F)).
DATASET_INFO: dict[str, tuple[str, tuple[int, ...]]] = {
    "mnist5k": ("image", (1, 28, 28)),
    "digits": ("image", (1, 8, 8)),
    "vowels": ("sequence", (25, 12)),
    "fashion-mnist": ("image", (1, 28, 28)),
    "cifar10": ("image", (3, 32, 32)),
}
_IMAGE_ARCHS, _IMAGE_ENCODERS = ("mlp", "conv"), ("direct", "poisson")


def _v(value: Any) -> str:
    return bounded(value)


def _key_text(key: Any) -> str:
    """A mapping key as it appears in a dotted path, bounded."""
    if isinstance(key, str) and len(key) <= 40 and key.isprintable():
        return key
    return bounded(key, 40)


def _expected_keys(cls: type, key: Any) -> str:
    """``did you mean ...?`` and the section's keys, at most ~150 characters."""
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1) if isinstance(key, str) and len(key) <= 100 else []
    listed, text = [], ""
    for n in names:
        if len(text) + len(n) > 120:
            listed.append(f"... ({len(names)} keys)")
            break
        listed.append(n)
        text = ", ".join(listed)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"({hint}expected one of: {', '.join(listed)})"


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
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _got(value: Any) -> str:
    return f"got {type(value).__name__} {_v(value)}"


def _coerce(value: Any, tp: Any, where: str, src: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is Union:
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where, src)
            except ConfigError:
                continue
        raise ConfigError(f"{src}: {where}: expected {_type_name(tp)}, {_got(value)}")
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{src}: {where}: expected {_type_name(tp)}, {_got(value)}")
        if len(value) > MAX_LIST_ITEMS:
            raise ConfigError(f"{src}: {where}: a list of {len(value)} items, expected at most {MAX_LIST_ITEMS}")
        return [_coerce(v, arg, f"{where}[{i}]", src) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: {where}: expected a mapping (a section), {_got(value)}")
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
            try:
                return float(value)
            except OverflowError:  # an int beyond float's range
                raise ConfigError(f"{src}: {where}: {_v(value)} is too large; expected a finite float") from None
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - all annotations above are covered
        raise TypeError(f"unsupported annotation {tp!r}")
    raise ConfigError(f"{src}: {where}: expected {_type_name(tp)}, {_got(value)}")


def _from_dict(cls: type, data: dict, prefix: str, src: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{_key_text(key)}" if prefix else _key_text(key)
        if not isinstance(key, str) or key not in hints:
            raise ConfigError(f"{src}: unknown key {where!r} {_expected_keys(cls, key)}")
        kwargs[key] = _coerce(value, hints[key], where, src)
    return cls(**kwargs)


# --------------------------------------------------------------------------- validation


def _check_choice(value: Any, choices: tuple, where: str, src: str) -> None:
    if value not in choices:
        raise ConfigError(f"{src}: {where}: {_v(value)} is not one of {', '.join(choices)}")


def _check_range(value: float, lo: float, hi: float, where: str, src: str, *, lo_open: bool = False,
                 hi_open: bool = False) -> None:
    """``value`` finite and in the interval; the message names key, value and interval."""
    ok = (math.isfinite(value) and (value > lo if lo_open else value >= lo)
          and (value < hi if hi_open else value <= hi))
    if not ok:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        what = "is not finite" if not math.isfinite(value) else "is outside"
        raise ConfigError(f"{src}: {where}: {_v(value)} {what}; expected a number in {lb}{lo:g}, {hi:g}{rb}")


def _check_int(value: int, lo: int, hi: int, where: str, src: str, note: str = "") -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{src}: {where}: {_v(value)} is outside [{lo}, {hi}]{note}")


def _check_text(value: str, where: str, src: str) -> None:
    if "\0" in value or len(value) > MAX_PATH_CHARS:
        raise ConfigError(f"{src}: {where}: {_v(value)} is not a usable path (NUL byte or over "
                          f"{MAX_PATH_CHARS} characters)")


def spiking_layer_count(m: ModelConfig) -> tuple[int, int]:
    """(spiking layers, hidden spiking layers) of the model ``m`` describes, as the builder makes them."""
    hidden = len(m.hidden) + (len(m.channels) if m.arch == "conv" else 0)
    return hidden + (1 if m.readout == "spikes" else 0), hidden


def _check_model(m: ModelConfig, src: str) -> None:
    n = m.neuron
    _check_choice(m.arch, ARCHS, "model.arch", src)
    _check_choice(m.readout, READOUTS, "model.readout", src)
    _check_choice(n.type, NEURON_TYPES, "model.neuron.type", src)
    _check_range(n.leak, 0.0, 1.0, "model.neuron.leak", src)
    _check_range(n.current_leak, 0.0, 1.0, "model.neuron.current_leak", src)
    _check_range(n.threshold, 0.0, BIG, "model.neuron.threshold", src, lo_open=True)
    _check_range(n.gamma, 0.0, BIG, "model.neuron.gamma", src, lo_open=True)
    _check_range(m.readout_scale, 0.0, BIG, "model.readout_scale", src, lo_open=True)
    if m.init_current_std is not None:
        _check_range(m.init_current_std, 0.0, BIG, "model.init_current_std", src, lo_open=True)
    if m.input_bits is not None:
        _check_int(m.input_bits, 1, 24, "model.input_bits", src, " (graded spikes carry at most 24 bits)")
    if m.readout_gamma is not None:
        _check_range(m.readout_gamma, 0.0, BIG, "model.readout_gamma", src, lo_open=True)
    for key in ("hidden", "channels", "strides"):
        if len(getattr(m, key)) > MAX_LAYERS:
            raise ConfigError(f"{src}: model.{key}: {len(getattr(m, key))} entries, expected at most {MAX_LAYERS}")
    for i, h in enumerate(m.hidden):
        _check_int(h, 1, MAX_WIDTH, f"model.hidden[{i}]", src, " (neurons of a layer)")
    for i, c in enumerate(m.channels):
        _check_int(c, 1, MAX_WIDTH, f"model.channels[{i}]", src, " (channels of a conv layer)")
    for i, s in enumerate(m.strides):
        _check_int(s, 1, MAX_STRIDE, f"model.strides[{i}]", src)
    _check_int(m.kernel_size, 1, MAX_KERNEL_SIZE, "model.kernel_size", src)
    if m.arch == "conv":
        if not m.channels:
            raise ConfigError(f"{src}: model.channels: a conv model needs at least one channel count, got []")
        if m.strides and len(m.strides) != len(m.channels):
            raise ConfigError(
                f"{src}: model.strides: {len(m.strides)} strides for {len(m.channels)} channels (need one each)"
            )
    else:
        for key in ("channels", "strides"):
            if getattr(m, key):
                raise ConfigError(f"{src}: model.{key}: only used by arch 'conv', not {_v(m.arch)}")
    for key in ("batchnorm", "kaiming_init"):
        if getattr(m, key) and m.arch != "conv":
            raise ConfigError(f"{src}: model.{key}: only used by arch 'conv', not {_v(m.arch)}")
    if m.arch == "srnn" and not m.hidden:
        raise ConfigError(f"{src}: model.hidden: an srnn needs at least one recurrent layer, got []")
    if (m.normalize_mean is None) != (m.normalize_std is None):
        raise ConfigError(f"{src}: model.normalize_mean/normalize_std: give both or neither")
    if m.normalize_mean is not None and m.normalize_std is not None:
        if len(m.normalize_mean) != len(m.normalize_std) or not m.normalize_mean:
            raise ConfigError(f"{src}: model.normalize_mean/normalize_std: {len(m.normalize_mean)} means and "
                              f"{len(m.normalize_std)} stds; expected the same number (>= 1) of each")
        for i, v in enumerate(m.normalize_mean):
            _check_range(v, -BIG, BIG, f"model.normalize_mean[{i}]", src)
        for i, v in enumerate(m.normalize_std):
            _check_range(v, 0.0, BIG, f"model.normalize_std[{i}]", src, lo_open=True)


def _check_training(t: TrainingConfig, m: ModelConfig, src: str) -> None:
    _check_choice(t.mode, TRAIN_MODES, "training.mode", src)
    _check_choice(t.schedule, SCHEDULES, "training.schedule", src)
    _check_choice(t.optimizer, OPTIMIZERS, "training.optimizer", src)
    _check_int(t.epochs, 0, MAX_EPOCHS, "training.epochs", src)
    _check_int(t.batch_size, 1, MAX_BATCH_SIZE, "training.batch_size", src)
    _check_int(t.augment_shift, 0, MAX_AUGMENT_SHIFT, "training.augment_shift", src, " (pixels)")
    _check_range(t.lr, 0.0, 10.0, "training.lr", src, lo_open=True)
    _check_range(t.momentum, 0.0, 1.0, "training.momentum", src, hi_open=True)
    _check_range(t.weight_decay, 0.0, 1.0, "training.weight_decay", src)
    _check_range(t.kappa, 0.0, 1.0, "training.kappa", src)
    _check_range(t.sigma, 0.0, 10.0, "training.sigma", src)              # pixels live in [0, 1]
    _check_range(t.fgsm_step, 0.0, 1.0, "training.fgsm_step", src)       # an L-inf budget in pixels
    _check_range(t.fgsm_init_std, 0.0, 1.0, "training.fgsm_init_std", src)
    if t.grad_clip is not None:
        _check_range(t.grad_clip, 0.0, BIG, "training.grad_clip", src, lo_open=True)
    _check_range(t.hardware_noise_level, 0.0, BIG, "training.hardware_noise_level", src)
    _check_text(t.hardware_profile, "training.hardware_profile", src)
    if t.hardware_noise is not None:
        from .noise.vocabulary import NETWORK_NOISE_NAMES, NoiseSpecError, check_level, noise_kind

        try:
            kind = noise_kind(t.hardware_noise)
        except NoiseSpecError as exc:
            raise ConfigError(f"{src}: training.hardware_noise: {exc}") from None
        if kind != "network":
            article = "an" if kind == "input" else "a"
            raise ConfigError(f"{src}: training.hardware_noise: {_v(t.hardware_noise)} is {article} {kind} noise; "
                              f"expected a chip-instance noise ({', '.join(NETWORK_NOISE_NAMES)})")
        try:
            check_level(t.hardware_noise, t.hardware_noise_level, "training.hardware_noise_level")
        except NoiseSpecError as exc:
            raise ConfigError(f"{src}: {exc}") from None
        if m.batchnorm:
            # the chip-instance step quantizes and perturbs the unfolded training
            # model, and BatchNorm's running statistics would update on the copy only
            raise ConfigError(f"{src}: training.hardware_noise: noise-aware training does not support "
                              f"model.batchnorm: true (train without BatchNorm or without hardware_noise)")
    elif t.hardware_noise_level != 0:
        raise ConfigError(f"{src}: training.hardware_noise_level: {_v(t.hardware_noise_level)} without "
                          f"training.hardware_noise; name the noise or set the level to 0")


def _check_regularizer(cfg: RunConfig, src: str) -> None:
    m, t, r = cfg.model, cfg.training, cfg.regularizer
    _check_range(r.mppd.rho, 0.0, BIG, "regularizer.mppd.rho", src)
    n_spiking, n_hidden = spiking_layer_count(m)
    layers = r.mppd.layers
    if isinstance(layers, str):
        if layers not in ("last", "all"):
            raise ConfigError(f"{src}: regularizer.mppd.layers: {_v(layers)} is not 'last', 'all' or a list "
                              f"of spiking-layer indices")
    else:
        if not layers:
            raise ConfigError(f"{src}: regularizer.mppd.layers: [] selects no layer; expected 'last', 'all' or "
                              f"indices in [-{n_spiking}, {n_spiking - 1}]")
        seen: dict[int, int] = {}
        for i, idx in enumerate(layers):
            where = f"regularizer.mppd.layers[{i}]"
            if not -n_spiking <= idx < n_spiking:
                raise ConfigError(f"{src}: {where}: {_v(idx)} is outside [-{n_spiking}, {n_spiking - 1}] "
                                  f"(the model has {n_spiking} spiking layers)")
            if idx % n_spiking in seen:
                raise ConfigError(f"{src}: {where}: {_v(idx)} names the same spiking layer as entry "
                                  f"{seen[idx % n_spiking]}")
            seen[idx % n_spiking] = i
    if t.mode != "clean" and n_hidden == 0:
        # MS-MPPD is measured on a hidden spiking layer whenever a perturbed pass exists
        raise ConfigError(f"{src}: training.mode: {_v(t.mode)} measures MS-MPPD on a hidden spiking layer, "
                          f"but the model has none (model.hidden is empty); add one or use mode 'clean'")
    if (r.mppd.rho > 0 or r.bound.weight > 0) and t.mode == "clean":
        raise ConfigError(
            f"{src}: regularizer: MS-MPPD and the bound penalty compare a clean and a perturbed pass; "
            f"set training.mode to 'gaussian' or 'fgsm' (got 'clean')"
        )
    _check_range(r.bound.weight, 0.0, BIG, "regularizer.bound.weight", src)
    _check_range(r.bound.gain_weight, 0.0, BIG, "regularizer.bound.gain_weight", src)
    _check_range(r.bound.gain_target, 0.0, BIG, "regularizer.bound.gain_target", src, lo_open=True)
    _check_int(r.bound.window, 1, MAX_TIME_STEPS, "regularizer.bound.window", src)
    _check_int(r.bound.power_iterations, 1, MAX_POWER_ITERATIONS, "regularizer.bound.power_iterations", src)
    if (r.bound.weight > 0 or r.bound.gain_weight > 0) and m.arch != "srnn":
        raise ConfigError(f"{src}: regularizer.bound: the bound penalty needs recurrent layers (arch 'srnn'), "
                          f"not {_v(m.arch)}")
    _check_range(r.rat_beta, 0.0, 1.0, "regularizer.rat_beta", src)


def _dataset_key(name: str) -> str:
    """The data set name as neurodeploy.data.load_dataset looks it up (case and spaces ignored)."""
    return name.strip().lower()


def _check_data_fit(cfg: RunConfig, src: str) -> None:
    """The encoder, architecture and sizes against the data set's kind and shape (no data is loaded)."""
    d, m, t = cfg.data, cfg.model, cfg.training
    kind, shape = DATASET_INFO[_dataset_key(d.dataset)]
    name = _v(d.dataset)
    if kind == "image":
        if d.encoder not in _IMAGE_ENCODERS:
            raise ConfigError(f"{src}: data.encoder: {_v(d.encoder)} needs sequence data, but {name} holds "
                              f"images {shape}; expected {' or '.join(_IMAGE_ENCODERS)}")
        if m.arch not in _IMAGE_ARCHS:
            raise ConfigError(f"{src}: model.arch: {_v(m.arch)} needs sequence data, but {name} holds "
                              f"images {shape}; expected {' or '.join(_IMAGE_ARCHS)}")
        side = min(shape[1:])
        if t.augment_shift >= side:
            raise ConfigError(f"{src}: training.augment_shift: {_v(t.augment_shift)} pixels shifts {name}'s "
                              f"{shape[1]}x{shape[2]} images out of view; expected < {side}")
        channels = shape[0]
    else:
        if d.encoder != "temporal":
            raise ConfigError(f"{src}: data.encoder: {_v(d.encoder)} encodes images, but {name} holds "
                              f"sequences (steps, features) {shape}; expected 'temporal'")
        if m.arch != "srnn":
            raise ConfigError(f"{src}: model.arch: {_v(m.arch)} needs image data, but {name} holds "
                              f"sequences (steps, features) {shape}; expected 'srnn'")
        if d.time_steps is not None and d.time_steps != shape[0]:
            raise ConfigError(f"{src}: data.time_steps: {_v(d.time_steps)}, but {name}'s sequences have "
                              f"{shape[0]} steps; expected {shape[0]} or null")
        if t.augment_shift:
            raise ConfigError(f"{src}: training.augment_shift: {_v(t.augment_shift)}; shifts apply to images "
                              f"only and {name} holds sequences; expected 0")
        channels = shape[1]
    if m.normalize_mean is not None and len(m.normalize_mean) not in (1, channels):
        raise ConfigError(f"{src}: model.normalize_mean: {len(m.normalize_mean)} values, but {name} has "
                          f"{channels} {'channels' if kind == 'image' else 'features'}; expected 1 or {channels}")


def validate(cfg: RunConfig, src: str = "<config>", *, check_data: bool = True) -> RunConfig:
    """Check every value's range and the cross-field consistency; return ``cfg``.

    ``check_data`` also checks the encoder, architecture and sizes against
    the data set ``data.dataset`` names (its kind and shape, from
    :data:`DATASET_INFO`; nothing is loaded).
    """
    d = cfg.data
    check_name(cfg.name, "name", src, ConfigError)
    _check_int(cfg.seed, 0, MAX_SEED, "seed", src)
    _check_int(cfg.threads, 1, MAX_THREADS, "threads", src)
    _check_choice(_dataset_key(d.dataset), tuple(DATASET_INFO), "data.dataset", src)
    if d.data_dir is not None:
        _check_text(d.data_dir, "data.data_dir", src)
    _check_choice(d.encoder, ENCODERS, "data.encoder", src)
    if d.time_steps is not None:
        _check_int(d.time_steps, 1, MAX_TIME_STEPS, "data.time_steps", src)
    elif d.encoder != "temporal":
        raise ConfigError(f"{src}: data.time_steps: null, but encoder {_v(d.encoder)} needs a step count "
                          f"in [1, {MAX_TIME_STEPS}]")
    _check_model(cfg.model, src)
    _check_training(cfg.training, cfg.model, src)
    _check_regularizer(cfg, src)
    if check_data:
        _check_data_fit(cfg, src)
    return cfg


def config_from_dict(data: Any, src: str = "<config>", *, check_data: Optional[bool] = None) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a plain mapping (parsed YAML, a checkpoint's config).

    The mapping must have a ``model`` section. ``check_data`` (see
    :func:`validate`) defaults to whether the mapping names ``data.dataset``:
    a mapping that names none is a model description only (tests build
    models for arbitrary shapes that way); :func:`load_config` always checks.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{src}: expected a mapping at the top level, {_got(data)}")
    cfg = _from_dict(RunConfig, data, "", src)  # unknown keys and wrong types first: they name what was written
    if "model" not in data:
        raise ConfigError(f"{src}: missing section 'model' (the architecture); a config must say what it trains")
    if check_data is None:
        section = data.get("data")
        check_data = isinstance(section, dict) and "dataset" in section
    return validate(cfg, src, check_data=check_data)


def parse_set_items(items: Sequence[str]) -> dict[str, Any]:
    """The ``--set KEY=VALUE`` pairs of the command line as ``{dotted key: value}``.

    Values are YAML (``0.05``, ``[64, 32]``, ``null``) read with the
    protections of :func:`neurodeploy.yamlio.parse_scalar`; keys must be
    dotted names (``training.lr``). Every problem is a one-line
    :class:`ConfigError`. Whether a key exists is checked when the overrides
    are applied (:func:`load_config`).
    """
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"--set {bounded(item)}: expected KEY=VALUE, e.g. training.lr=0.05")
        key, value = item.split("=", 1)
        key = key.strip()
        if not _DOTTED.match(key):
            raise ConfigError(f"--set {bounded(item)}: {bounded(key)} is not a dotted key like training.lr")
        out[key] = parse_scalar(value, f"--set {key}", error=ConfigError)
    return out


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,59}(?:\.[A-Za-z_][A-Za-z0-9_]{0,59}){0,7}$")


def apply_overrides(data: dict, overrides: dict, src: str) -> dict:
    """Set ``{dotted key: value}`` in the parsed mapping ``data`` (in place; returned).

    Each key is checked against the config's schema: an unknown key or a
    subkey of a value (``seed.x``) is a :class:`ConfigError`.
    """
    for dotted, value in overrides.items():
        parts = dotted.split(".") if isinstance(dotted, str) else []
        if not parts or not all(parts):
            raise ConfigError(f"{src}: --set {bounded(dotted)}: expected a dotted key like training.lr")
        node, cls, path = data, RunConfig, []
        for i, part in enumerate(parts):
            hints = typing.get_type_hints(cls)
            path.append(part)
            where = ".".join(path)
            if part not in hints:
                raise ConfigError(f"{src}: --set {bounded(dotted)}: unknown key {bounded(where)} "
                                  f"{_expected_keys(cls, part)}")
            if i == len(parts) - 1:
                node[part] = value
                break
            if not dataclasses.is_dataclass(hints[part]):
                raise ConfigError(f"{src}: --set {bounded(dotted)}: {where} is a value "
                                  f"({_type_name(hints[part])}), not a section with keys")
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{src}: --set {bounded(dotted)}: {where} in the file is {_got(child)}, "
                                  f"not a section")
            node, cls = child, hints[part]
    return data


def _default_name(path: Path) -> str:
    """A valid run name from a file name (``my model.yaml`` -> ``my-model``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem)[:100].lstrip("-_.")
    return name if NAME_PATTERN.match(name) else "run"


def load_config(path: Union[str, Path], overrides: Optional[dict] = None) -> RunConfig:
    """Load a YAML model file; ``overrides`` maps dotted keys to values (``--set``).

    The file must be a regular UTF-8 file of at most 1 MiB holding a mapping
    with a ``model`` section (an empty or comment-only file is an error, not
    all defaults); see :mod:`neurodeploy.yamlio` for what the YAML may hold.
    """
    path = Path(path)
    data = load_yaml(path, "config file", error=ConfigError)
    if data is None:
        raise ConfigError(f"{path}: the config file is empty (or only comments); expected a mapping with at "
                          f"least a 'model' section (see models/*.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, {_got(data)}")
    apply_overrides(data, dict(overrides or {}), str(path))
    data.setdefault("name", _default_name(path))
    return config_from_dict(data, str(path), check_data=True)


def dump_config(cfg: RunConfig, path: Union[str, Path]) -> None:
    """Write the fully resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
