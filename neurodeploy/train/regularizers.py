"""Perturbation regularizers: MS-MPPD, the recurrent-SNN bound penalty and SNN-RAT.

All penalties compare a clean and a perturbed forward pass of the same batch,
using the input currents each spiking layer recorded (see
:func:`neurodeploy.neurons.record_activity`). The clean currents are detached,
so gradient flows only through the perturbed pass (method.md, 1).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from ..neurons.modules import RecurrentSpikingNeurons


def _leaks(layer: torch.nn.Module) -> tuple[float, float | None]:
    """(membrane leak, current leak or None) of a spiking layer, with dt = 1."""
    p = layer.p
    leak = float(1.0 - p.tau_mem_inv)
    current_leak = float(1.0 - p.tau_syn_inv) if hasattr(p, "tau_syn_inv") else None
    return leak, current_leak


def perturbation_dynamics(d_current: torch.Tensor, leak: float, current_leak: float | None = None) -> torch.Tensor:
    """Membrane-potential perturbation of the simplified (reset-free) dynamics.

    ``eps[0] = 0;  eps[t] = leak * eps[t-1] + dI[t]`` for t = 1..T, returned for
    the T steps as ``(T, ...)``. For current-based neurons the perturbation
    first passes the current filter: ``e_i[t] = current_leak*e_i[t-1] + dI[t]``
    and ``eps[t] = leak*eps[t-1] + e_i[t]`` (the same linearisation).
    """
    if current_leak is not None:
        d_current = perturbation_dynamics(d_current, current_leak)
    eps = torch.zeros_like(d_current[0])
    out = []
    for t in range(d_current.shape[0]):
        eps = leak * eps + d_current[t]
        out.append(eps)
    return torch.stack(out)


def select_layers(layers: Sequence[torch.nn.Module], which: Union[str, Sequence[int]],
                  readout_spiking: bool) -> list[int]:
    """Indices of the spiking layers a regularizer acts on.

    ``"last"`` is the last *hidden* spiking layer, the one feeding the readout
    (the reference implementation's choice; with a spiking readout the output
    layer itself is excluded). ``"all"`` is every hidden spiking layer.
    """
    hidden = list(range(len(layers) - 1 if readout_spiking else len(layers)))
    if not hidden:
        raise ValueError("the model has no hidden spiking layer to regularize")
    if which == "last":
        return [hidden[-1]]
    if which == "all":
        return hidden
    chosen = list(which)
    for i in chosen:
        if not -len(layers) <= i < len(layers):
            raise ValueError(f"regularizer.mppd.layers: index {i} out of range for {len(layers)} spiking layers")
    return [i % len(layers) for i in chosen]


def mppd_penalty(clean: Sequence, perturbed: Sequence, layers: Sequence[torch.nn.Module],
                 indices: Sequence[int], after_gain: bool = False) -> torch.Tensor:
    """MS-MPPD: mean over (t, batch, neurons) of eps[t]^2, averaged over ``indices``.

    ``clean`` and ``perturbed`` are the recordings of the two passes; the clean
    current is detached. The reference measures the current before the DLIF
    gain p[t]; ``after_gain`` measures ``p[t] * dI[t]`` instead, what the
    membrane really integrates (a diagnostic: does p undo the penalty?).
    """
    terms = []
    for i in indices:
        d_current = clean[i].current.detach() - perturbed[i].current
        gain = getattr(layers[i], "gain", None)
        if after_gain and gain is not None:
            steps = d_current.shape[0]
            d_current = d_current * gain[:steps].view(steps, *([1] * (d_current.dim() - 1)))
        eps = perturbation_dynamics(d_current, *_leaks(layers[i]))
        terms.append(eps.pow(2).mean())
    return torch.stack(terms).mean()


def _spectral_norm(weight: torch.Tensor, iterations: int) -> torch.Tensor:
    """Largest singular value by power iteration (differentiable in the last product)."""
    w = weight.flatten(1)
    v = torch.ones(w.shape[1], dtype=w.dtype) / w.shape[1] ** 0.5
    with torch.no_grad():
        for _ in range(max(iterations, 1)):
            u = torch.nn.functional.normalize(w @ v, dim=0)
            v = torch.nn.functional.normalize(w.t() @ u, dim=0)
    return u @ w @ v


def gain_bound(layer: RecurrentSpikingNeurons, iterations: int = 3) -> torch.Tensor:
    """Input-output L2 gain bound of a recurrent layer's simplified dynamics.

    ``sqrt(1/(1-lambda)) * max_t |p[t]| * (||W_in||_2 + ||W_rec||_2)``.
    """
    leak, _ = _leaks(layer)
    bound = (1.0 / max(1.0 - leak, 1e-6)) ** 0.5 * (
        _spectral_norm(layer.input_weights.weight, iterations)
        + _spectral_norm(layer.recurrent_weights.weight, iterations)
    )
    if layer.gain is not None:
        bound = bound * layer.gain.abs().max()
    return bound


def bound_penalty(clean: Sequence, perturbed: Sequence, layers: Sequence[torch.nn.Module],
                  window: int, delta: float = 1e-2) -> torch.Tensor:
    """Recurrent noise-amplification penalty for recurrent spiking layers (our formula).

    For every recurrent layer let ``eps`` be the membrane perturbation of the
    simplified dynamics driven by the total current difference (feed-forward
    plus recurrent), and ``eps_in`` the one driven by the feed-forward input
    current difference ``dI_in`` alone (what the layer would see without
    recurrence). Over windows of ``window`` steps,

        ratio = (||eps||_{2,window} + delta) / (||eps_in||_{2,window} + delta)
        R     = mean over samples and windows of relu(log ratio)^2

    i.e. the membrane-potential change per unit of input-current perturbation
    within a window, normalised by the leaky integration every neuron does
    anyway, so only amplification by the recurrent loop is penalised (the
    feed-forward path is MS-MPPD's job). The log keeps the gradient bounded
    when the input perturbation in a window is tiny. Averaged over recurrent
    layers.
    """
    terms = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, RecurrentSpikingNeurons):
            continue
        leaks = _leaks(layer)
        eps = perturbation_dynamics(clean[i].current.detach() - perturbed[i].current, *leaks)
        eps_in = perturbation_dynamics(clean[i].input_current.detach() - perturbed[i].input_current, *leaks)
        ratios = []
        for start in range(0, eps.shape[0], window):
            num = eps[start:start + window].pow(2).sum((0, 2)).add(1e-12).sqrt() + delta
            den = eps_in[start:start + window].pow(2).sum((0, 2)).add(1e-12).sqrt() + delta
            ratios.append(torch.relu(torch.log(num / den)).pow(2))
        terms.append(torch.stack(ratios).mean())
    if not terms:
        raise ValueError("the bound penalty needs at least one recurrent spiking layer")
    return torch.stack(terms).mean()


def gain_penalty(layers: Sequence[torch.nn.Module], target: float, iterations: int = 3) -> torch.Tensor:
    """``mean over recurrent layers of relu(G / target - 1)^2``, G from :func:`gain_bound`."""
    terms = [torch.relu(gain_bound(layer, iterations) / target - 1.0).pow(2)
             for layer in layers if isinstance(layer, RecurrentSpikingNeurons)]
    if not terms:
        raise ValueError("the gain penalty needs at least one recurrent spiking layer")
    return torch.stack(terms).mean()


@torch.no_grad()
def snn_rat_step(model: torch.nn.Module, beta: float) -> None:
    """SNN-RAT orthogonality step after an optimizer step: ``W <- (1+b)W - b W W^T W``.

    Applied to every dense, convolutional and recurrent weight (convolutions
    flattened to (out, in*k*k)).
    """
    if beta <= 0:
        return
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            w = module.weight.flatten(1)
            w_new = (1 + beta) * w - beta * (w @ w.t() @ w)
            module.weight.copy_(w_new.view_as(module.weight))


__all__ = [
    "perturbation_dynamics",
    "select_layers",
    "mppd_penalty",
    "gain_bound",
    "bound_penalty",
    "gain_penalty",
    "snn_rat_step",
]
