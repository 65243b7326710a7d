"""White-box L-inf attacks (FGSM, PGD) and an accuracy helper.

Why our own code rather than torchattacks: the method needs FGSM with a
*Gaussian* random start for FGSM adversarial training; every random draw must
come from a passed ``torch.Generator`` so one seed fixes a whole run
(torchattacks uses the global RNG); and the model's train/eval flags must be
restored after crafting (the method crafts in eval mode inside a training
loop).  The code is small enough that owning it is cheaper than patching.

All attacks act in [0, 1] pixel space on any ``model(x) -> logits (B, C)``;
the SNN does its encoding and normalisation internally.  SNNs use surrogate
gradients, which can be exactly zero for some inputs: ``sign(0) = 0`` simply
leaves those pixels unchanged, and a model whose output has no gradient path
to the input at all yields a zero gradient instead of an error.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import NeurodeployError

__all__ = [
    "EVAL_EPS",
    "FGSM_AT_STEP",
    "FGSM_AT_RANDOM_START_STD",
    "PGD_PRESETS",
    "AttackUnavailable",
    "apgd_ce",
    "fgsm",
    "pgd",
    "evaluate_accuracy",
]

#: Attack budget of the evaluation protocol (docs/method.md).
EVAL_EPS: float = 8 / 255
#: FGSM adversarial training: signed step size and Gaussian random-start std.
FGSM_AT_STEP: float = 4 / 255
FGSM_AT_RANDOM_START_STD: float = 0.001

#: PGD presets at eps = 8/255: name -> (steps, alpha) (docs/method.md).
PGD_PRESETS: Dict[str, Tuple[int, float]] = {
    "pgd7": (7, 2.55 / 255),
    "pgd10": (10, 2 / 255),
    "pgd20": (20, 1 / 255),
    "pgd40": (40, 0.5 / 255),
}

Clamp = Optional[Tuple[float, float]]


def _check_nonneg(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode, restoring every submodule's flag on exit.

    Flags are saved per submodule (not just the root) so a model with, e.g.,
    frozen BatchNorm layers in eval inside a training model comes back intact.
    """
    saved = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. ``x`` only.

    ``torch.autograd.grad`` with ``inputs=[x]`` never writes ``.grad`` of the
    model parameters.  The loss is summed (not averaged) so per-sample
    gradients are not shrunk by 1/B, which could underflow to zero and
    silently turn ``sign`` into a no-op.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        if not loss.requires_grad:
            # No gradient path to the input (e.g. a hard threshold without a
            # surrogate): treat as a zero gradient rather than failing.
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(loss, [x], allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.detach()


def _clamp(x: torch.Tensor, clamp: Clamp) -> torch.Tensor:
    return x if clamp is None else x.clamp(clamp[0], clamp[1])


def _randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Draw on the generator's device so a seed gives the same noise on CPU/GPU.
    z = torch.randn(x.shape, generator=generator, device=generator.device,
                    dtype=torch.promote_types(x.dtype, torch.float32))
    return z.to(device=x.device, dtype=x.dtype)


def _rand_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(x.shape, generator=generator, device=generator.device,
                   dtype=torch.promote_types(x.dtype, torch.float32))
    return u.to(device=x.device, dtype=x.dtype)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    random_start_std: float = 0.0,
    generator: Optional[torch.Generator] = None,
    clamp: Clamp = (0.0, 1.0),
) -> torch.Tensor:
    """Fast Gradient Sign Method with an optional Gaussian random start.

    ``x0 = x + random_start_std * N(0, 1)`` (drawn from ``generator``), then
    ``x_adv = clamp(x0 + eps * sign(grad_x CE(model(x0), y)))``.  As in the
    method there is no projection back to the eps ball, so
    ``|x_adv - x|_inf <= eps + |start noise|_inf``.  FGSM adversarial training
    uses ``eps=FGSM_AT_STEP`` (4/255) and ``random_start_std=0.001``.

    The model is crafted on in eval mode and its train/eval flags are restored
    afterwards (also on exceptions); model ``.grad`` fields are not touched.
    ``eps == 0`` without random start returns a copy of ``x`` unchanged.

    Args:
        model: ``model(x) -> logits (B, C)``, inputs in [0, 1].
        x: input batch ``(B, ...)``.
        y: integer class labels ``(B,)``.
        eps: signed-step size (L-inf budget), >= 0.
        random_start_std: std of the Gaussian random start (0 disables it).
        generator: source of the random start; required when it is enabled.
        clamp: ``(lo, hi)`` valid pixel range, or ``None`` for no clamping.

    Returns:
        A detached adversarial batch with ``x``'s shape, dtype and device.
    """
    eps = _check_nonneg("eps", eps)
    std = _check_nonneg("random_start_std", random_start_std)
    x = x.detach()
    if eps == 0.0 and std == 0.0:
        return x.clone()
    x0 = x
    if std > 0.0:
        if generator is None:
            raise ValueError("generator must be given when random_start_std > 0")
        x0 = x + std * _randn_like(x, generator)
    with _eval_mode(model):
        grad = _input_grad(model, x0, y)
    return _clamp(x0 + eps * grad.sign(), clamp).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    *,
    generator: Optional[torch.Generator],
    random_start: bool = True,
    clamp: Clamp = (0.0, 1.0),
) -> torch.Tensor:
    """L-inf Projected Gradient Descent with a uniform random start.

    Start at ``x + U(-eps, eps)`` (drawn from ``generator``; skipped when
    ``random_start`` is False), then ``steps`` times: step ``alpha * sign(grad)``
    on the cross-entropy loss, project onto the L-inf ball of radius ``eps``
    around ``x`` and onto ``clamp``.  See ``PGD_PRESETS`` for the protocol's
    (steps, alpha) pairs at ``eps = 8/255``.

    The model is crafted on in eval mode and its flags are restored afterwards
    (also on exceptions); model ``.grad`` fields are not touched.  ``eps == 0``
    returns a copy of ``x`` unchanged.

    Args:
        model: ``model(x) -> logits (B, C)``, inputs in [0, 1].
        x: input batch ``(B, ...)``.
        y: integer class labels ``(B,)``.
        eps: L-inf radius, >= 0.
        alpha: step size per iteration, >= 0.
        steps: number of iterations, >= 0.
        generator: source of the random start (may be None only when
            ``random_start`` is False).
        random_start: whether to start from a uniform point in the eps ball.
        clamp: ``(lo, hi)`` valid pixel range, or ``None`` for no clamping.

    Returns:
        A detached adversarial batch with ``x``'s shape, dtype and device.
    """
    eps = _check_nonneg("eps", eps)
    alpha = _check_nonneg("alpha", alpha)
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    x = x.detach()
    if eps == 0.0:
        return x.clone()
    lo, hi = x - eps, x + eps
    x_adv = x.clone()
    if random_start:
        if generator is None:
            raise ValueError("generator must be given when random_start is True")
        x_adv = _clamp(x + (2.0 * _rand_like(x, generator) - 1.0) * eps, clamp)
    with _eval_mode(model):
        for _ in range(int(steps)):
            grad = _input_grad(model, x_adv, y)
            x_adv = x_adv + alpha * grad.sign()
            x_adv = _clamp(torch.max(torch.min(x_adv, hi), lo), clamp)
    return x_adv.detach()


class AttackUnavailable(NeurodeployError, RuntimeError):
    """An attack needs a library that is not installed."""


def apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
            generator: torch.Generator, steps: int = 10) -> torch.Tensor:
    """APGD-CE (Croce & Hein 2020), L-inf budget ``eps``, from torchattacks (a maintained implementation).

    Runs on the model's surrogate gradient like our own attacks. torchattacks
    seeds torch's global RNG itself, so its seed is drawn from ``generator``
    and the global RNG state is restored afterwards.
    """
    eps = _check_nonneg("eps", eps)
    x = x.detach()
    if eps == 0.0:
        return x.clone()
    try:
        import torchattacks
    except ImportError:  # pragma: no cover - installed by scripts/env.sh
        raise AttackUnavailable("APGD-CE needs torchattacks (scripts/env.sh installs it)") from None
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    # torchattacks takes a 3-d tensor for one image: hand it every sample as a (1, 1, N) "image"
    shape = x.shape[1:]
    flat = _Reshaped(model, shape)
    with torch.random.fork_rng(devices=[]), _eval_mode(model):
        attack = torchattacks.APGD(flat, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed)
        return attack(x.reshape(len(x), 1, 1, -1), y).detach().reshape(len(x), *shape)


class _Reshaped(nn.Module):
    def __init__(self, model: nn.Module, shape) -> None:
        super().__init__()
        self.model, self.shape = model, tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(len(x), *self.shape))


def evaluate_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 256,
    perturb: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, in [0, 1].

    Runs in eval mode (flags restored afterwards) and under ``torch.no_grad``
    for the scoring forward pass.  ``perturb(xb, yb) -> xb'`` is applied to each
    batch first, outside ``no_grad`` so gradient-based attacks work, e.g.
    ``perturb=lambda xb, yb: pgd(model, xb, yb, 8/255, 2/255, 10, generator=g)``.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    n = x.shape[0]
    if n == 0:
        raise ValueError("x must contain at least one sample, got an empty batch")
    if y.shape[0] != n:
        raise ValueError(f"x and y must have the same length, got {n} and {y.shape[0]}")
    correct = 0
    with _eval_mode(model):
        for i in range(0, n, int(batch_size)):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            if perturb is not None:
                xb = perturb(xb, yb)
            with torch.no_grad():
                pred = model(xb).argmax(dim=1)
            correct += int((pred == yb.to(pred.device)).sum().item())
    return correct / n
