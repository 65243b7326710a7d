"""Build spiking classifiers from a :class:`~neurodeploy.config.RunConfig`.

A classifier is ``encoder -> Norse SequentialState body -> readout``. Inputs
are samples in [0, 1] (images ``(B, C, H, W)`` or sequences ``(B, T, F)``), so
attacks and input noise act in pixel space; optional normalisation happens
inside the model, after encoding. Only layers that Loihi (and lava-dl netx)
can deploy are used: dense, strided convolution (no pooling), flatten and
recurrent dense.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional, Sequence

import torch
from norse.torch.module.sequential import SequentialState

from ..config import ModelConfig, RunConfig
from ..errors import NeurodeployError, bounded
from ..ir import conv_out_shape
from ..data.encoders import DirectEncoder, make_encoder
from ..neurons.modules import RecurrentSpikingNeurons, SpikingNeurons, record_activity, spiking_layers


class ModelBuildError(NeurodeployError, ValueError):
    """A config cannot be built for the data's sample shape (arch and data disagree, a size below 1)."""


class TimeFolded(torch.nn.Module):
    """Apply a per-step module to all time steps at once by folding T into the batch.

    Norse's ``Lift`` loops over time; one call on ``(T*B, ...)`` is one GEMM or
    one convolution instead of T.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, batch = x.shape[:2]
        y = self.module(x.reshape(steps * batch, *x.shape[2:]))
        return y.reshape(steps, batch, *y.shape[1:])


class Normalize(torch.nn.Module):
    """Per-channel ``(x - mean) / std`` on time-major input ``(T, B, C, ...)``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1, 1, -1] + [1] * (x.dim() - 3)
        return (x - self.mean.view(shape)) / self.std.view(shape)


class RoundSTE(torch.autograd.Function):
    """Round in the forward pass, identity gradient (attacks still see the input)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


class SNNClassifier(torch.nn.Module):
    """Encoder, spiking body and readout; ``forward(x)`` returns logits ``(B, classes)``.

    Readout ``spikes``: the last layer is spiking and the logits are its spike
    rate times ``readout_scale`` (so the prediction is the argmax of output spike
    counts, as on the chip). Readout ``linear``: a non-spiking dense layer whose
    output is averaged over time (the reference paper's setting).
    """

    def __init__(self, encoder: torch.nn.Module, body: SequentialState, readout: str,
                 readout_scale: float, normalize: Optional[Normalize] = None,
                 input_levels: Optional[int] = None) -> None:
        super().__init__()
        self.input_levels = input_levels
        self.encoder = encoder
        self.normalize = normalize
        self.body = body
        self.readout = readout
        self.readout_scale = readout_scale

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs on the chip's grid in eval mode: ``round(clamp(x) * levels) / levels``.

        Only evaluation inputs go to the chip. Training perturbations (method.md's
        unclamped Gaussian noise) stay as they are: clamping them makes the noise
        on black background pixels one-sided, and MS-MPPD then diverged in tests.
        """
        if self.input_levels is None or self.training:
            return x
        return RoundSTE.apply(x.clamp(0.0, 1.0) * self.input_levels) / self.input_levels

    def output_sequence(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Time-major output of the last layer, ``(T, B, classes)``.

        ``generator`` seeds a stochastic (Poisson) encoder for this call only.
        """
        x = self.quantize_input(x)
        if isinstance(self.encoder, DirectEncoder):
            return self.run_encoded(x.unsqueeze(0), repeat=self.encoder.time_steps)
        return self.run_encoded(self.encoder(x, generator))

    def run_encoded(self, seq: torch.Tensor, repeat: Optional[int] = None) -> torch.Tensor:
        """The body on an already encoded time-major input ``(T, B, *shape)``: ``(T, B, classes)``.

        This is what the chip receives (its integer inputs divided by the input
        scale), so float and fixed point can be fed identical values.
        ``repeat``: ``seq`` holds one step that repeats ``repeat`` times (direct
        encoding); the stateless layers before the first neurons (normalise,
        flatten, first dense/conv) then run once and are broadcast over T:
        identical values, T times less work. A body without neurons (``hidden:
        []`` with a linear readout) is stateless throughout: it runs once.
        """
        if repeat is not None:
            if seq.shape[0] != 1:
                raise ValueError(f"run_encoded(repeat={repeat}) takes one step, got {seq.shape[0]}")
            if self.normalize is not None:
                seq = self.normalize(seq)
            state: list = [None] * len(self.body)
            modules = list(self.body)
            stateful = list(self.body.stateful_layers)
            first = stateful.index(True) if True in stateful else len(modules)
            for module in modules[:first]:
                seq = module(seq)
            seq = seq.expand(repeat, *seq.shape[1:])
            for i, module in enumerate(modules[first:], first):
                if stateful[i]:
                    seq, state[i] = module(seq, state[i])
                else:
                    seq = module(seq)
            return seq
        if self.normalize is not None:
            seq = self.normalize(seq)
        out, _ = self.body(seq)
        return out

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes)`` from the time-major output ``(T, B, classes)``."""
        out = out.mean(0)
        return out * self.readout_scale if self.readout == "spikes" else out

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.logits(self.output_sequence(x, generator))

    def spiking_layers(self) -> list[torch.nn.Module]:
        return spiking_layers(self)

    @torch.no_grad()
    def activity(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
        """Logits plus mean spikes per sample of every spiking layer."""
        with record_activity(self) as recs:
            logits = self(x, generator)
        counts = torch.stack([r.spikes.flatten(2).sum((0, 2)) for r in recs], 1)
        return {"logits": logits, "spikes_per_layer": counts}


def _check_sizes(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> None:
    """Sizes the config loader does not bound but torch needs positive (a checkpoint's config is untrusted)."""
    def positive(v: object) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1

    if not input_shape or not all(positive(d) for d in input_shape):
        raise ModelBuildError(f"sample shape {bounded(tuple(input_shape))}: expected positive integers")
    if not positive(n_classes):
        raise ModelBuildError(f"{bounded(n_classes)} classes: expected a positive integer")
    for key in ("hidden", "channels", "strides"):
        values = getattr(cfg, key)
        if not all(positive(v) for v in values):
            raise ModelBuildError(f"model.{key}: {bounded(values)}: every size must be >= 1")
    if cfg.arch == "conv" and cfg.kernel_size < 1:
        raise ModelBuildError(f"model.kernel_size: {cfg.kernel_size} must be >= 1")


def _body(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int, time_steps: Optional[int]) -> SequentialState:
    neuron = cfg.neuron
    layers: list[torch.nn.Module] = []
    _check_sizes(cfg, input_shape, n_classes)
    if cfg.arch == "srnn":
        if len(input_shape) != 2:
            raise ModelBuildError(f"arch 'srnn' needs sequence data (steps, features), got sample shape {input_shape}")
        size = input_shape[1]
        for h in cfg.hidden:
            layers.append(RecurrentSpikingNeurons(size, h, neuron, time_steps, bias=cfg.bias))
            size = h
    else:
        if cfg.arch == "conv":
            if len(input_shape) != 3:
                raise ModelBuildError(f"arch 'conv' needs image data (C, H, W), got sample shape {input_shape}")
            c, h, w = input_shape
            strides = cfg.strides or [1] * len(cfg.channels)
            pad = cfg.kernel_size // 2
            for out_c, stride in zip(cfg.channels, strides):
                conv = torch.nn.Conv2d(c, out_c, cfg.kernel_size, stride=stride, padding=pad, bias=cfg.bias)
                if cfg.kaiming_init:
                    # the reference's init (torchvision VGG/ResNet style)
                    torch.nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                    if conv.bias is not None:
                        torch.nn.init.zeros_(conv.bias)
                layers.append(TimeFolded(conv))
                if cfg.batchnorm:
                    # over (T*B, C, H, W): one set of batch statistics per forward pass,
                    # so the clean and the perturbed pass each normalise with their own
                    layers.append(TimeFolded(torch.nn.BatchNorm2d(out_c)))
                layers.append(SpikingNeurons(neuron, time_steps))
                c, h, w = conv_out_shape((c, h, w), conv.weight.shape, conv.stride, conv.padding, conv.dilation)
            size = c * h * w
        else:
            size = 1
            for d in input_shape:
                size *= d
        layers.append(torch.nn.Flatten(start_dim=2))
        for h in cfg.hidden:
            layers += [torch.nn.Linear(size, h, bias=cfg.bias), SpikingNeurons(neuron, time_steps)]
            size = h
    layers.append(torch.nn.Linear(size, n_classes, bias=cfg.bias))
    if cfg.readout == "spikes":
        out_neuron = neuron if cfg.readout_gamma is None else dataclasses.replace(neuron, gamma=cfg.readout_gamma)
        layers.append(SpikingNeurons(out_neuron, time_steps))
    return SequentialState(*layers)


def build_model(cfg: RunConfig, input_shape: tuple[int, ...], n_classes: int) -> SNNClassifier:
    """Build the classifier a run config describes for data of ``input_shape``."""
    time_steps = cfg.data.time_steps
    if cfg.data.encoder == "temporal":
        if len(input_shape) != 2:
            raise ModelBuildError(f"encoder 'temporal' needs sequence data (steps, features), got sample shape {input_shape}")
        if time_steps is not None and time_steps != input_shape[0]:
            raise ModelBuildError(f"data.time_steps={time_steps} but the sequences have {input_shape[0]} steps")
        time_steps = input_shape[0]
    encoder = make_encoder(cfg.data.encoder, time_steps if cfg.data.encoder != "temporal" else None)
    m = cfg.model
    normalize = Normalize(m.normalize_mean, m.normalize_std) if m.normalize_mean is not None else None
    body = _body(m, input_shape, n_classes, time_steps)
    levels = None if m.input_bits is None else 2**m.input_bits - 1
    return SNNClassifier(encoder, body, m.readout, m.readout_scale, normalize, levels)


def _synapse_of(body: SequentialState, layer: torch.nn.Module) -> torch.nn.Module:
    """The layer whose weight and bias scale a spiking layer's input current.

    Its Linear, Conv2d or input weights; with BatchNorm after the conv, the
    BatchNorm (its affine scale, since scaling the conv is normalised away).
    """
    if isinstance(layer, RecurrentSpikingNeurons):
        return layer.input_weights
    modules = list(body)
    for m in reversed(modules[:modules.index(layer)]):
        if isinstance(m, TimeFolded):
            if isinstance(m.module, torch.nn.modules.batchnorm._BatchNorm) and not m.module.affine:
                raise ValueError("data-driven init needs an affine BatchNorm to scale")
            return m.module
        if isinstance(m, torch.nn.Linear):
            return m
    raise ValueError("spiking layer without a preceding weight layer")


@torch.no_grad()
def data_driven_init(model: SNNClassifier, x: torch.Tensor, target_std: float) -> list[float]:
    """Scale each weight layer so its spiking layer's input current has std ``target_std * threshold``.

    Layer by layer, in forward order, on a batch of training data (LSUV-style).
    PyTorch's default initialisation lets spiking activity die out within a
    few layers (a deep net starts silent and never trains); this keeps every
    layer firing at the start. Returns the scale factors applied.
    """
    scales = []
    for layer in model.spiking_layers():
        synapse = _synapse_of(model.body, layer)
        with record_activity(model) as recs:
            model(x)
        rec = recs[model.spiking_layers().index(layer)]
        std = float(rec.input_current.std())
        threshold = float(layer.p.v_th)
        factor = target_std * threshold / std if std > 0 else 1.0
        synapse.weight.mul_(factor)
        if synapse.bias is not None:
            synapse.bias.mul_(factor)
        scales.append(factor)
    return scales
