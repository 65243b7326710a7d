"""Fold BatchNorm into the preceding convolution for deployment.

In eval mode BatchNorm is a per-channel affine map with fixed statistics,

    y = gamma * (x - mean) / sqrt(var + eps) + beta,

so ``BN(conv(x))`` equals a conv with weight ``W * s`` and bias
``(b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)`` per output channel.
Loihi (and NIR, ONNX, the quantizer) only know the plain conv, so every
deployed view of a BatchNorm model is the folded one.
"""

from __future__ import annotations

import copy

import torch
from norse.torch.module.sequential import SequentialState

from ..errors import NeurodeployError
from .builders import SNNClassifier, TimeFolded

__all__ = ["BatchNormFoldError", "fold_batchnorm", "has_batchnorm"]

_BN = torch.nn.modules.batchnorm._BatchNorm


class BatchNormFoldError(NeurodeployError, ValueError):
    """A BatchNorm layer cannot be folded; the message names the layer and why."""


def has_batchnorm(model: torch.nn.Module) -> bool:
    """Whether ``model`` contains any BatchNorm layer."""
    return any(isinstance(m, _BN) for m in model.modules())


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, TimeFolded) else module


@torch.no_grad()
def _fold_into(conv: torch.nn.Conv2d, bn: _BN, where: str) -> None:
    if bn.running_mean is None or bn.running_var is None:
        raise BatchNormFoldError(f"{where}: BatchNorm without running statistics (track_running_stats=False) "
                                 f"has no eval-mode affine map to fold")
    if bn.num_features != conv.out_channels:
        raise BatchNormFoldError(f"{where}: BatchNorm over {bn.num_features} channels after a conv with "
                                 f"{conv.out_channels} output channels")
    # float64 so folding adds no rounding beyond the final cast
    var = bn.running_var.double()
    if bool((var + bn.eps <= 0).any()):
        raise BatchNormFoldError(f"{where}: BatchNorm running_var has {int((var + bn.eps <= 0).sum())} value(s) "
                                 f"<= -eps (smallest {float(var.min()):g}); a variance cannot be negative")
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    w = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    b = (b - mean) * scale + beta
    conv.weight.copy_(w.to(conv.weight.dtype))
    if conv.bias is None:
        # BatchNorm's shift becomes a conv bias the model did not have
        conv.bias = torch.nn.Parameter(b.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(b.to(conv.bias.dtype))


def fold_batchnorm(model: SNNClassifier) -> SNNClassifier:
    """A copy of ``model`` with every BatchNorm folded into the conv before it, in eval mode.

    Uses the eval statistics (running mean and variance, affine weight and
    bias, eps); the BatchNorm modules are removed from the body, so the copy's
    body is what the quantizer and the exporters accept. The float outputs of
    the copy equal ``model``'s in eval mode up to float rounding. A model
    without BatchNorm comes back as a plain copy in eval mode. A BatchNorm not
    directly after a convolution raises :class:`BatchNormFoldError`.
    """
    out = copy.deepcopy(model)
    out.eval()
    if not has_batchnorm(out.body):
        return out
    modules = list(out.body)
    kept: list[torch.nn.Module] = []
    for i, module in enumerate(modules):
        bn = _unwrap(module)
        if not isinstance(bn, _BN):
            kept.append(module)
            continue
        prev = _unwrap(kept[-1]) if kept else None
        if not isinstance(prev, torch.nn.Conv2d) or not isinstance(bn, torch.nn.BatchNorm2d):
            got = "nothing" if prev is None else type(prev).__name__
            raise BatchNormFoldError(f"body[{i}] ({type(bn).__name__}): only a BatchNorm2d directly after a "
                                     f"Conv2d can be folded, it follows {got}")
        _fold_into(prev, bn, f"body[{i}]")
    out.body = SequentialState(*kept)
    if has_batchnorm(out):
        raise BatchNormFoldError("a BatchNorm nested inside another layer (or outside the body) cannot be folded")
    out.eval()
    return out
