"""Quantization-aware fine-tuning with straight-through rounding.

When post-training quantization loses accuracy, ``neurodeploy quantize RUN
--finetune N`` first trains the float model for N more epochs with:

* every DLIF gain frozen at its mean over time (what the chip can express);
* every synaptic weight replaced in the forward pass by its fixed-point value
  (mantissa rounded to the multiples Lava keeps, clipped, at the layer's
  current scale), with the identity as gradient (straight-through);

so the network learns around the rounding. The fine-tuned checkpoint is
written to ``RUN/<profile>/finetuned.pt`` and quantized from there.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.utils.parametrize as parametrize

from ..data import load_dataset
from ..fileio import inside
from ..models.builders import RoundSTE
from ..models.folding import has_batchnorm
from ..models.walk import model_layers
from ..train.checkpoint import save_checkpoint
from ..train.loop import _optimizer, epoch_generator, random_shift, set_threads, training_loss
from ..train.loop import RunError, load_run, predict, accuracy
from .profile import HardwareProfile, load_profile
from ..graph import GraphError
from .quantizer import QuantizationError, _choose_exp_and_scale, _recurrent_exp, input_encoding_for


class FakeQuant(torch.nn.Module):
    """Weight -> its fixed-point value at the layer's scale (straight-through)."""

    def __init__(self, profile: HardwareProfile, theta: float, gain: float, input_scale: float,
                 recurrent_of: "FakeQuant | None" = None) -> None:
        super().__init__()
        self.profile, self.theta, self.gain, self.input_scale = profile, theta, gain, input_scale
        self.recurrent_of = recurrent_of  # recurrent weights use the input weights' scale
        self.scale = 1.0

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        p = self.profile
        eff = w * self.gain / self.input_scale
        eff_np = eff.detach().double().numpy()
        shift = p.neuron.activation_shift
        if self.recurrent_of is None:
            exp, scale, _ = _choose_exp_and_scale(eff_np, self.theta, p, p.vth_max)
            self.scale = scale
        else:
            scale = self.recurrent_of.scale
            exp = _recurrent_exp(eff_np, scale, p)
        unit = 2.0 ** (exp + shift) / scale
        lo, hi = p.weight_range
        step = p.weight_step
        q = torch.clamp(RoundSTE.apply(eff / (unit * step)) * step, lo, hi)
        return q * unit * self.input_scale / self.gain


def attach_fake_quant(model, profile: HardwareProfile) -> None:
    """Freeze DLIF gains at their mean and fake-quantize every synaptic weight."""
    encoding = input_encoding_for(model, profile)
    if has_batchnorm(model):
        raise QuantizationError("fine-tuning a model with BatchNorm is not supported (the deployed conv weights "
                                "are the BatchNorm-scaled ones, which fake quantization of the conv alone would "
                                "miss); quantize it without --finetune")
    try:
        layers = model_layers(model).layers      # the walker's per-layer view: the torch modules themselves
    except GraphError as exc:
        raise QuantizationError(f"fine-tuning: {exc}") from None
    for i, layer in enumerate(layers):
        neurons = layer.neurons
        theta = float(neurons.p.v_th)
        gain = 1.0
        if neurons.gain is not None:
            with torch.no_grad():
                gain = float(neurons.gain.mean())
                neurons.gain.fill_(gain)
            neurons.gain.requires_grad_(False)
        input_scale = encoding.scale if (i == 0 and encoding.kind == "graded") else 1.0
        fq = FakeQuant(profile, theta, gain, input_scale)
        parametrize.register_parametrization(layer.synapse, "weight", fq)
        if layer.recurrent is not None:
            parametrize.register_parametrization(layer.recurrent, "weight", FakeQuant(profile, theta, gain, 1.0, fq))


def finetune_quantized(run: Path, profile_name: str, epochs: int, *, progress: bool = True,
                       lr_factor: float = 0.1):
    """Fine-tune a run's model with fake quantization; return the plain (baked) float model."""
    cfg, model, ckpt = load_run(run)
    set_threads(cfg.threads)
    profile = load_profile(profile_name)
    data = load_dataset(cfg.data.dataset, seed=cfg.seed, data_dir=cfg.data.data_dir)
    attach_fake_quant(model, profile)
    cfg.training.lr *= lr_factor
    opt = _optimizer(model, cfg)
    x_train, y_train = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    steps = math.ceil(len(x_train) / cfg.training.batch_size)
    total = max(epochs * steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    for epoch in range(epochs):
        g = epoch_generator(cfg.seed, 10_000 + epoch)  # a stream of its own, apart from training's
        model.train()
        perm = torch.randperm(len(x_train), generator=g)
        for b in range(steps):
            idx = perm[b * cfg.training.batch_size:(b + 1) * cfg.training.batch_size]
            xb = random_shift(x_train[idx], cfg.training.augment_shift, g)
            loss, _ = training_loss(model, cfg, xb, y_train[idx], g)
            if not torch.isfinite(loss):
                raise RunError(f"{run}: fine-tuning loss became {float(loss)} at epoch {epoch + 1}, batch {b + 1}; "
                               f"nothing was saved (use fewer --finetune epochs or quantize without fine-tuning)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(predict(model, data.x_test), data.y_test)
        if progress:
            print(f"fine-tune epoch {epoch + 1}/{epochs}: test accuracy with fixed-point weights {acc:.4f}")
    # bake the fixed-point weights into plain parameters
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    model.eval()
    out = inside(run, profile.name, what=f"{getattr(profile, 'source', '') or 'hardware profile'}: name")
    save_checkpoint(out / "finetuned.pt", {**{k: v for k, v in ckpt.items() if k not in ("format", "version")},
                                           "model": model.state_dict(), "finetune_epochs": epochs})
    return model


__all__ = ["FakeQuant", "attach_fake_quant", "finetune_quantized"]
